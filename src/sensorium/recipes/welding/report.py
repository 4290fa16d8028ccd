"""Welding sections of the report: k-NN results, confusion matrix, a 2-D t-SNE projection of the TEST
embeddings coloured by class, the per-modality ablation and the fusion's attention share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sensorium.report.figures import pyplot, confusion_matrix_figure, figure_png
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
    modalities = Section("Modalities")
    modalities.table(["modality", "k-NN accuracy alone", "fusion attention share"],
                     [[m, report["ablation"][m], report["attention_share"][m]] for m in report["ablation"]]
                     + [["all four", report["accuracy"], 1.0]])
    modalities.image(_modality_bars(report))
    out = [result, modalities]
    embeddings = run_dir / "eval" / "embeddings.npz"
    if embeddings.is_file():
        with np.load(embeddings) as data:
            out.append(Section("TEST embeddings (t-SNE to 2-D)").image(_projection(data["embedding"], data["label"], names)))
    return out


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
