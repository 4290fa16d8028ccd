"""Welding sections of the report: k-NN results, confusion matrix, the field's metrics (good-vs-defect
AUROC per defect, binary F1, ECE, the challenge score) with a reliability diagram of the vote
shares, a 2-D t-SNE projection of the TEST embeddings coloured by class, the per-modality ablation
and the fusion's attention share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sensorium.report.figures import confusion_matrix_figure, figure_png, pyplot
from sensorium.report.html import Section


def sections(run_dir: Path) -> list[Section]:
    knn_path = run_dir / "eval" / "knn.json"
    if not knn_path.is_file():
        return [Section("k-NN evaluation").text("no eval/knn.json yet: run `sensorium eval knn --ckpt "
                                                f"{run_dir}/checkpoints/best.ckpt`", muted=True)]
    report = json.loads(knn_path.read_text())
    names = report["class_names"]
    result = Section("k-NN evaluation on TEST")
    result.table(["metric", "value"], [[k, report[k]] for k in (
        "accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "num_samples")])
    result.text(f"k-NN: k={report['knn']['k']}, T={report['knn']['temperature']}, bank {report['knn']['bank']} "
                f"({report['knn']['bank_size']} samples)", muted=True)
    result.table(["class", "precision", "recall", "f1", "support"],
                 [[n, c["precision"], c["recall"], c["f1"], c["support"]] for n, c in report["per_class"].items()])
    result.image(figure_png(confusion_matrix_figure(np.asarray(report["confusion_matrix"]), names,
                                                    f"accuracy {report['accuracy']:.3f}")))
    field = _field_section(report)
    modalities = Section("Modalities")
    modalities.table(["modality", "k-NN accuracy alone", "fusion attention share"],
                     [[m, report["ablation"][m], report["attention_share"][m]] for m in report["ablation"]]
                     + [["all four", report["accuracy"], 1.0]])
    modalities.image(_modality_bars(report))
    out = [result, *field, modalities]
    embeddings = run_dir / "eval" / "embeddings.npz"
    if embeddings.is_file():
        with np.load(embeddings) as data:
            out.append(Section("TEST embeddings (t-SNE to 2-D)").image(_projection(data["embedding"], data["label"], names)))
    return out


def _field_section(report: dict) -> list[Section]:
    """The field's metrics (`metrics.field_metrics`); none for a knn.json written before them."""
    if "ece" not in report:
        return []
    section = Section("Field metrics on TEST (from the k-NN vote shares)")
    section.table(["metric", "value"], [
        ["mean good-vs-defect AUROC", "n/a" if report["auroc_mean"] is None else report["auroc_mean"]],
        ["binary F1 (good vs defect)", report["binary_f1"]],
        ["binary F1 of calling every sample a defect", report["binary_f1_always_defect"]],
        ["macro F1", report["f1_macro"]],
        ["ECE (15 bins)", report["ece"]],
        ["challenge score", report["challenge_score"]]])
    section.text("AUROC of defect d: TEST samples of class Good or d, scored by the vote share not on Good "
                 "(torchmetrics binary_auroc). Binary F1: defect positive, predicted defect when the k-NN's "
                 "class is not Good. ECE: confidence = largest vote share, 15 equal-width bins (torchmetrics "
                 "multiclass_calibration_error, L1). Challenge score = 0.6 binary F1 + 0.4 macro F1 - 0.05 ECE.",
                 muted=True)
    section.table(["defect", "AUROC vs Good", "TEST samples"],
                  [[name, auroc, report["per_class"][name]["support"]] for name, auroc in report["auroc"].items()])
    section.image(_reliability_diagram(report["reliability"], report["ece"]), alt="reliability diagram")
    return [section]


def _reliability_diagram(bins: dict, ece: float) -> bytes:
    """Accuracy against mean confidence per bin (the 15 equal-width bins, and the unanimous votes,
    confidence exactly 1, that torchmetrics bins apart), with the count per bin below."""
    plt = pyplot()
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    count, accuracy, confidence = (np.asarray(bins[key], dtype=float) for key in ("count", "accuracy", "confidence"))
    ranged, unanimous = slice(0, -1), -1  # the equal-width bins; the confidence-1 bin
    width, centre = upper[ranged] - lower[ranged], (upper[ranged] + lower[ranged]) / 2
    filled = count[ranged] > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    top.bar(centre[filled], accuracy[ranged][filled], width=width[filled], color="#47a", edgecolor="white",
            label="accuracy per bin")
    # The gap each bin adds to the ECE: from the bar's top to its mean confidence.
    top.hlines(confidence[ranged][filled], lower[ranged][filled], upper[ranged][filled], color="#c22", linewidth=2,
               label="mean confidence per bin")
    if count[unanimous]:
        top.scatter([1.0], [accuracy[unanimous]], s=60, color="#e80", zorder=3, edgecolor="black",
                    label=f"unanimous votes (share 1): {int(count[unanimous])}")
    top.set_xlim(0, 1.02)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability of the k-NN vote shares on TEST: ECE {ece:.3f}")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centre, count[ranged], width=width, color="#888", edgecolor="white")
    if count[unanimous]:
        bottom.bar([1.0], [count[unanimous]], width=0.012, color="#e80")
    bottom.set_xlabel("confidence (largest vote share)")
    bottom.set_ylabel("samples")
    return figure_png(fig)


def _modality_bars(report: dict) -> bytes:
    plt = pyplot()
    names = list(report["ablation"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    a.bar(names + ["all"], [report["ablation"][m] for m in names] + [report["accuracy"]], color="#4a7")
    a.set_ylim(0, 1)
    a.set_title("k-NN accuracy with one modality")
    b.bar(names, [report["attention_share"][m] for m in names], color="#47a")
    b.set_title("fusion attention share")
    return figure_png(fig)


def _projection(embedding: np.ndarray, labels: np.ndarray, names: list[str]) -> bytes:
    from sklearn.manifold import TSNE

    perplexity = float(max(2, min(30, (len(embedding) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(embedding)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cmap = plt.get_cmap("tab20")
    for c in np.unique(labels):
        chosen = labels == c
        ax.scatter(points[chosen, 0], points[chosen, 1], s=14, color=cmap(int(c) % 20), label=names[int(c)])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_title("TEST embeddings, t-SNE (cosine-normalised features)")
    return figure_png(fig)
