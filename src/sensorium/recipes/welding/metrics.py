"""The welding recipe's TEST evaluation, from the embeddings the task's test hooks gather: weighted
k-NN of TEST against all of TRAIN with every modality, and with each modality alone (the
ablation), the fusion's attention share per modality, the field's metrics from the k-NN's vote
shares (`field_metrics`), and the files of RUN/eval/.

The field's metrics, so a run can be compared with published systems on the Intel Robotic Welding
data (Stemmer et al., 2024, report good-vs-defect AUROC per defect type; the challenge on the same
data scores 0.6 x binary F1 + 0.4 x macro F1 - 0.05 x ECE). All come from the weighted k-NN's vote
shares with every modality (`sensorium.eval.knn.knn_votes_ks`: each class's share of the k votes):

- `auroc` {defect: AUROC}: among TEST samples whose true class is Good or that defect, how well
  the defect score 1 - share(Good) (the vote NOT on Good) ranks the defect above Good;
  torchmetrics' `binary_auroc` (ties count half). One score for every defect type, as an anomaly
  detector's is, rather than share(defect), which would also credit the right defect type. A
  defect without TEST samples (or a TEST split without Good) has no AUROC and is left out.
- `auroc_mean`: their mean over the defects that have one.
- `binary_f1`: good vs defect, defect the positive class, predicted defect when the k-NN's class
  is not Good; torchmetrics' `binary_f1_score` (0 when nothing is predicted or true defect).
  `binary_f1_always_defect` beside it is the F1 of calling every sample a defect, 2p / (1 + p)
  for a defect fraction p: 0.957 on a class-balanced TEST split of the 12 classes, so a binary F1
  near it says little.
- `f1_macro`: the classification report's (scikit-learn, every class of WELDING_LABELS).
- `ece`: expected calibration error of the vote shares (confidence = the largest share, correct
  when its class is the true one), 15 equal-width bins, L1; torchmetrics'
  `multiclass_calibration_error`. torchmetrics bins [i/15, (i+1)/15) and gives a confidence of
  exactly 1 (a unanimous vote: common for a k-NN) a bin of its own; `reliability` keeps those
  16 bins, so the ECE is exactly their count-weighted |accuracy - confidence|. On an exact vote
  tie, the largest share's class is the first tied one (torchmetrics' argmax), which may differ
  from the k-NN's own tie rule (nearest neighbour); weighted votes practically never tie.
- `challenge_score`: 0.6 x binary_f1 + 0.4 x f1_macro - 0.05 x ece.

The linear-probe variant the issue mentions needs a probe in the welding evaluation, which has
none: these metrics are the k-NN's only.

It sits below the task because the task's test hooks call it, so `sensorium test` and `sensorium
eval knn` (evaluate.py, the entry) write the same files; validation uses `sensorium.eval.knn`
directly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sensorium.engine.checkpoint import atomic_save_npz, atomic_write_json
from sensorium.eval.knn import Metric, Votes, classification_report, knn_predict_ks, knn_votes_ks
from sensorium.recipes.welding.reader import MODALITIES, WELDING_LABELS

GOOD = WELDING_LABELS.index("Good")
ECE_BINS = 15
CHALLENGE_WEIGHTS = {"binary_f1": 0.6, "f1_macro": 0.4, "ece": -0.05}
"""The challenge's combined score: sum of weight x metric."""

log = logging.getLogger(__name__)


def knn_test_report(bank: dict[str, torch.Tensor], test: dict[str, torch.Tensor], k: int,
                    temperature: float, votes: Votes = "weighted", metric: Metric = "cosine",
                    ks: Sequence[int] = ()) -> dict:
    """RUN/eval/knn.json's content.

    Args:
        bank, test: gathered per-sample results of all of TRAIN (the k-NN bank) and of TEST:
            `embedding/all` and `embedding/<modality>` (N, D) L2-normalised, `label` (N,),
            `present` (N, M) bool; test also `modality_weights` (N, M), the fusion's attention per
            modality averaged over its tokens.
        k, temperature, votes, metric: of the k-NN (`sensorium.eval.knn.knn_predict`); `k` gives
            the report's headline numbers, the field metrics (`field_metrics`) and the ablation.
        ks: further k, measured with every modality from the same neighbour search; `by_k` holds
            accuracy and macro F1 at `k` and at each of them.
    """
    def predict(mode: str, at: Sequence[int] = (k,)) -> dict[int, torch.Tensor]:
        return knn_predict_ks(bank[f"embedding/{mode}"], bank["label"], test[f"embedding/{mode}"], at, temperature,
                              len(WELDING_LABELS), votes=votes, metric=metric)

    labels = test["label"]
    every_k = list(dict.fromkeys([k, *ks]))
    votes_all = knn_votes_ks(bank["embedding/all"], bank["label"], test["embedding/all"], every_k, temperature,
                             len(WELDING_LABELS), votes=votes, metric=metric)
    preds = {kk: v.prediction for kk, v in votes_all.items()}
    report = classification_report(labels, preds[k], list(WELDING_LABELS))
    report.update(field_metrics(labels, preds[k], votes_all[k].shares, report["f1_macro"]))
    by_k = {kk: classification_report(labels, preds[kk], list(WELDING_LABELS)) for kk in every_k}
    report["by_k"] = {str(kk): {"accuracy": r["accuracy"], "f1_macro": r["f1_macro"]} for kk, r in by_k.items()}
    report["ablation"] = {m: float((predict(m)[k] == labels).float().mean()) for m in MODALITIES}
    weights = test["modality_weights"]
    report["attention_share"] = {m: float(weights[:, i].mean()) for i, m in enumerate(MODALITIES)}
    missing = (~test["present"]).sum(dim=0)
    report["missing_modalities"] = {m: int(missing[i]) for i, m in enumerate(MODALITIES)}
    report["knn"] = {"k": k, "temperature": temperature, "votes": votes, "metric": metric, "ks": list(ks),
                     "bank_size": int(len(bank["label"])),
                     "bank": "TRAIN (train + val)", "query": "TEST"}
    if any(report["missing_modalities"].values()):
        log.info(f"[welding] TEST samples lacking a modality (masked out of the fusion): "
                 f"{report['missing_modalities']}")
    return report


def write_test_eval(eval_dir: Path, report: dict, test: dict[str, torch.Tensor]) -> None:
    """knn.json, the TEST embeddings for the report's projection (embeddings.npz) and
    confusion_matrix.png into eval_dir."""
    from sensorium.report.figures import confusion_matrix_png

    atomic_write_json(eval_dir / "knn.json", report)
    atomic_save_npz(eval_dir / "embeddings.npz", embedding=test["embedding/all"].numpy(),
                    label=test["label"].numpy(), modality_weights=test["modality_weights"].numpy())
    confusion_matrix_png(np.asarray(report["confusion_matrix"]), list(WELDING_LABELS),
                         eval_dir / "confusion_matrix.png", title=f"k-NN on TEST: accuracy {report['accuracy']:.3f}")
    auroc_mean = "n/a" if report["auroc_mean"] is None else f"{report['auroc_mean']:.4f}"
    log.info(f"[welding] TEST k-NN accuracy {report['accuracy']:.4f}, macro F1 {report['f1_macro']:.4f}, "
             f"mean good-vs-defect AUROC {auroc_mean}, binary F1 {report['binary_f1']:.4f}, "
             f"ECE {report['ece']:.4f}, challenge score {report['challenge_score']:.4f}; "
             f"single-modality: " + ", ".join(f"{m} {a:.3f}" for m, a in report["ablation"].items())
             + f"; wrote {eval_dir / 'knn.json'}")


def field_metrics(labels: torch.Tensor, prediction: torch.Tensor, shares: torch.Tensor, f1_macro: float) -> dict:
    """The field's metrics (the module docstring defines each) as JSON-able values: `auroc`
    {defect name: AUROC}, `auroc_mean`, `binary_f1` (and `binary_f1_always_defect`, its trivial
    reference), `ece`, `challenge_score`, and `reliability` (the ECE's bins, for the report's
    reliability diagram).

    Args:
        labels: (N,) true classes, indices into WELDING_LABELS.
        prediction: (N,) the k-NN's classes.
        shares: (N, C) the k-NN's vote shares (rows sum to 1).
        f1_macro: the classification report's macro F1, the challenge score's second term.
    """
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_f1_score,
        multiclass_calibration_error,
    )

    labels, prediction, shares = labels.long().cpu(), prediction.long().cpu(), shares.float().cpu()
    defect_score = 1.0 - shares[:, GOOD]  # (N,): the vote share not on Good
    is_good = labels == GOOD
    auroc = {}
    for c, name in enumerate(WELDING_LABELS):
        chosen = is_good | (labels == c)
        if c == GOOD or not is_good.any() or not (labels == c).any():
            continue  # no AUROC without both classes
        auroc[name] = float(binary_auroc(defect_score[chosen], (labels[chosen] == c).long()))
    binary_f1 = float(binary_f1_score((prediction != GOOD).long(), (~is_good).long()))
    always_defect = float(binary_f1_score(torch.ones_like(labels), (~is_good).long()))
    ece = float(multiclass_calibration_error(shares, labels, len(WELDING_LABELS), n_bins=ECE_BINS, norm="l1"))
    terms = {"binary_f1": binary_f1, "f1_macro": f1_macro, "ece": ece}
    return {"auroc": auroc, "auroc_mean": float(np.mean(list(auroc.values()))) if auroc else None,
            "binary_f1": binary_f1, "binary_f1_always_defect": always_defect, "ece": ece,
            "challenge_score": sum(w * terms[name] for name, w in CHALLENGE_WEIGHTS.items()),
            "reliability": reliability_bins(shares, labels, ECE_BINS)}


def reliability_bins(shares: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict:
    """The bins of torchmetrics' calibration error on (N, C) class shares: confidence = the largest
    share, correct when its class (the first on a tie) is the label. Bins [i/n, (i+1)/n) for
    i < n and a last one holding confidence exactly 1, as torchmetrics bins them. Returns
    {"lower", "upper": the n + 1 bins' edges, "count", "confidence": mean confidence (0 when
    empty), "accuracy": fraction correct (0 when empty)}, lists of n + 1 plain numbers."""
    confidence, predicted = shares.float().max(dim=1)  # (N,), (N,)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = torch.bucketize(confidence, edges, right=True) - 1  # (N,) in 0..n_bins; confidence 1 -> n_bins
    count = torch.zeros(n_bins + 1).scatter_add_(0, index, torch.ones_like(confidence))
    mean_confidence = torch.zeros(n_bins + 1).scatter_add_(0, index, confidence) / count.clamp_min(1)
    accuracy = torch.zeros(n_bins + 1).scatter_add_(0, index, correct) / count.clamp_min(1)
    return {"lower": edges.tolist(), "upper": edges[1:].tolist() + [1.0], "count": count.long().tolist(),
            "confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist()}
