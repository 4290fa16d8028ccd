"""The welding recipe's TEST evaluation, from the embeddings the task's test hooks gather: weighted
k-NN of TEST against all of TRAIN with every modality, and with each modality alone (the
ablation), the fusion's attention share per modality, and the files of RUN/eval/.

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
from sensorium.eval.knn import Metric, Votes, classification_report, knn_predict_ks
from sensorium.recipes.welding.reader import MODALITIES, WELDING_LABELS

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
            the report's headline numbers and the ablation.
        ks: further k, measured with every modality from the same neighbour search; `by_k` holds
            accuracy and macro F1 at `k` and at each of them.
    """
    def predict(mode: str, at: Sequence[int] = (k,)) -> dict[int, torch.Tensor]:
        return knn_predict_ks(bank[f"embedding/{mode}"], bank["label"], test[f"embedding/{mode}"], at, temperature,
                              len(WELDING_LABELS), votes=votes, metric=metric)

    labels = test["label"]
    every_k = list(dict.fromkeys([k, *ks]))
    preds = predict("all", every_k)
    report = classification_report(labels, preds[k], list(WELDING_LABELS))
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
    log.info(f"[welding] TEST k-NN accuracy {report['accuracy']:.4f}, macro F1 {report['f1_macro']:.4f}; "
             f"single-modality: " + ", ".join(f"{m} {a:.3f}" for m, a in report["ablation"].items())
             + f"; wrote {eval_dir / 'knn.json'}")
