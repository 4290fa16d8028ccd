"""Welding recipe: four-modal fusion trained with supervised contrastive loss (+ optional
cross-entropy), evaluated by weighted k-NN on the embeddings.

Validation each epoch: k-NN of the validation split (carved from TRAIN) against the training
embeddings; `val/knn_accuracy` picks best.ckpt and drives early stopping. Test: the embeddings of
all of TRAIN and of TEST, with all modalities and with each modality alone, gathered here and
measured by `metrics` (k-NN of TEST against TRAIN), written to RUN/eval/knn.json (+ confusion
matrix PNG and the TEST embeddings for the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.config import as_config
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError
from sensorium.eval.knn import Metric, Votes, classification_report, knn_predict_ks
from sensorium.losses.contrastive import supcon_loss
from sensorium.recipes.welding.metrics import knn_test_report, write_test_eval
from sensorium.recipes.welding.model import WeldingNet, WeldingNetConfig
from sensorium.recipes.welding.reader import MODALITIES, WELDING_LABELS
from sensorium.recipes.welding.transforms import WeldingAugment, WeldingAugmentConfig


@dataclass
class WeldingLossConfig:
    supcon_weight: float = 1.0
    ce_weight: float = 0.0
    """Weight of the cross-entropy head on the fused features; 0 disables the head."""
    unimodal_weight: float = 0.0
    """Weight of auxiliary per-modality supervised contrastive terms (their mean): each encoder's
    mean-pooled tokens go through a linear head of their own and are clustered by class. Without
    them the fused network fits the training set through whichever modalities fit it first and
    leaves the others half-learned (the imbalance Gradient-Blending, Wang et al. 2020, measures);
    0 disables the heads."""
    temperature: float = 0.07
    base_temperature: float = 0.07


@dataclass
class KnnConfig:
    """The k-NN that measures the embeddings (`sensorium.eval.knn`): validation picks best.ckpt by
    its accuracy at `k`; TEST reports it (RUN/eval/knn.json)."""

    k: int = 20
    temperature: float = 0.07
    votes: Votes = "weighted"
    """weighted: exp(score / temperature) per neighbour (DINO); uniform: a majority vote (the
    design note's scikit-learn classifier, k=5)."""
    metric: Metric = "cosine"
    """cosine, or euclidean distance between the embeddings. The network's embeddings are
    L2-normalised, so both find the same neighbours; they differ only in the weighted votes."""
    ks: list[int] = field(default_factory=list)
    """Further k measured beside `k` from the same neighbour search: logged as
    `val/knn_accuracy_k<k>` and reported in knn.json's `by_k`. Only `k` picks best.ckpt."""


def drop_modalities(present: torch.Tensor, p: float) -> torch.Tensor:
    """Modality dropout: hide each present modality with probability p, keeping at least one per
    sample (a random present one), so the fusion learns to embed any subset. present: (B, M) bool."""
    if p <= 0:
        return present
    keep = present & (torch.rand(present.shape, device=present.device) >= p)
    emptied = ~keep.any(dim=1) & present.any(dim=1)  # (B,)
    rescue = F.one_hot((torch.rand(present.shape, device=present.device) * present).argmax(dim=1),
                       present.shape[1]).bool()  # (B, M): one random present modality
    return keep | (rescue & emptied[:, None])


class WeldingTask(SensoriumTask):
    recipe = "welding"
    monitor = "val/knn_accuracy"
    monitor_mode = "max"
    contrastive = True

    def __init__(self, net: WeldingNetConfig | dict | None = None, loss: WeldingLossConfig | dict | None = None,
                 knn: KnnConfig | dict | None = None, modality_dropout: float = 0.0,
                 augment: WeldingAugmentConfig | dict | None = None, optim: OptimConfig | dict | None = None):
        """modality_dropout: probability of hiding each modality of a training sample (at least one
        stays), reached at the end of training (see `current_modality_dropout`), so that a sample
        lacking a modality at inference embeds closer to its class. It
        costs accuracy with all modalities present: by design no single modality separates the
        classes, so the loss then pulls together samples the model cannot tell apart."""
        super().__init__(optim)
        self.net_config = as_config(WeldingNetConfig, net)
        self.loss_config = as_config(WeldingLossConfig, loss)
        self.knn = as_config(KnnConfig, knn)
        self.modality_dropout = modality_dropout
        self.augment_config = as_config(WeldingAugmentConfig, augment)
        self.save_config(net=self.net_config, loss=self.loss_config, knn=self.knn,
                         modality_dropout=modality_dropout, augment=self.augment_config, optim=self.optim)
        self.net = WeldingNet(self.net_config)
        self.augment = WeldingAugment(self.augment_config)
        self.classifier = (nn.Linear(self.net_config.embed_dim, len(WELDING_LABELS))
                           if self.loss_config.ce_weight > 0 else None)
        self.unimodal_heads = (nn.ModuleDict({m: nn.Linear(self.net.encoders[m].out_dim, self.net_config.embed_dim)
                                              for m in MODALITIES})
                               if self.loss_config.unimodal_weight > 0 else None)
        self._eval_parts: dict[int, list[dict[str, torch.Tensor]]] = {}

    def forward(self, batch: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings (B, embed_dim); `present` (B, 4) overrides the batch's mask."""
        return self.net(batch, present).embedding

    def export_config(self) -> dict:
        return {**super().export_config(), "modalities": list(MODALITIES), "classes": list(WELDING_LABELS)}

    # --- frozen features (data.feature_cache) ----------------------------------------------------
    def feature_encoders(self) -> dict[str, nn.Module]:
        """The pretrained encoders built frozen, by modality (the engine keeps those that no
        `optim.unfreeze` stage names; the datamodule then serves their tokens as `<modality>_tokens`)."""
        return self.net.frozen_encoders()

    def configure_features(self, stage: str, cached: tuple[str, ...]) -> None:
        clash = [m for m in cached if m in self.augment.raw_modalities()]
        if stage == "fit" and clash:
            raise ConfigError("model.augment", f"augments the raw {', '.join(clash)}, which data.feature_cache replaces "
                                               "with the frozen encoders' cached tokens: augmentations that act on raw "
                                               "inputs cannot be used with the cache. Turn model.augment.enabled off "
                                               "(or zero those modalities' transforms), or drop data.feature_cache")

    # --- training -------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = self.augment(batch)
        present = drop_modalities(batch["present"], self.current_modality_dropout())
        tokens = self.net.encode(batch)
        out = self.net.fuse(tokens, present)
        # The loss sees every rank's embeddings (gathered with gradients) and runs in fp32: bf16
        # logits at temperature 0.07 lose the small differences the loss is made of.
        features = self.gather(out.embedding.float(), sync_grads=True)  # (world*B, D)
        labels = self.gather(batch["label"])  # (world*B,)
        cfg = self.loss_config
        terms = {"supcon": cfg.supcon_weight * supcon_loss(features[:, None], labels, cfg.temperature,
                                                           cfg.base_temperature)}
        if self.classifier is not None:
            logits = self.classifier(out.features).float()
            terms["ce"] = cfg.ce_weight * F.cross_entropy(logits, batch["label"])
        if self.unimodal_heads is not None:
            terms["unimodal"] = cfg.unimodal_weight * self.unimodal_loss(tokens, batch["present"], labels)
        return terms

    def current_modality_dropout(self) -> float:
        """`modality_dropout` ramped up linearly over training, from 0 at the first step.

        At initialisation every sample embeds almost alike, so a sample that lacks a modality is an
        outlier whose gradient dominates the batch: one dropped modality among 48 samples tripled the
        gradient norm, clipping then shrank the class signal, and dropout of 0.05 from the first step
        kept the SupCon loss near its initial value for 10 epochs. Ramping lets the class structure
        form first; subsets are then learned around it."""
        trainer = self._trainer
        if trainer is None or not self.modality_dropout:
            return self.modality_dropout
        total = float(trainer.estimated_stepping_batches)
        if not math.isfinite(total):  # open-ended training (max_epochs -1): no end to ramp towards
            return self.modality_dropout
        return self.modality_dropout * min(1.0, self.global_step / max(1.0, total))

    def unimodal_loss(self, tokens: dict[str, torch.Tensor], present: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Mean over modalities of SupCon on each encoder's own pooled embedding. A sample lacking a
        modality (in the data, not by dropout: every encoder is trained on every sample it has) is
        left out of that modality's term. `labels` are the gathered labels of all ranks."""
        cfg, losses = self.loss_config, []
        for i, modality in enumerate(MODALITIES):
            pooled = self.unimodal_heads[modality](tokens[modality].mean(dim=1))  # (B, D)
            embedding = self.gather(F.normalize(pooled.float(), dim=-1), sync_grads=True)  # (world*B, D)
            has = self.gather(present[:, i])
            losses.append(supcon_loss(embedding[has][:, None], labels[has], cfg.temperature, cfg.base_temperature))
        return torch.stack(losses).mean()

    # --- validation: k-NN of the val split against the training embeddings ----------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_parts = {}

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "label" not in batch:  # every sample of the batch was skipped as bad
            return
        self._eval_parts.setdefault(dataloader_idx, []).append(
            {"embedding": self(batch).float(), "label": batch["label"]})

    def on_validation_epoch_end(self) -> None:
        bank = self.gather_eval(self._eval_parts.get(0, []))
        query = self.gather_eval(self._eval_parts.get(1, []))
        self._eval_parts = {}
        if not bank or not query:
            return
        knn = self.knn
        preds = knn_predict_ks(bank["embedding"], bank["label"], query["embedding"], [knn.k, *knn.ks],
                               knn.temperature, len(WELDING_LABELS), votes=knn.votes, metric=knn.metric)
        report = classification_report(query["label"], preds[knn.k], list(WELDING_LABELS))
        self.log("val/knn_accuracy", report["accuracy"], prog_bar=True, sync_dist=True)
        self.log("val/f1_macro", report["f1_macro"], sync_dist=True)
        for k in knn.ks:
            self.log(f"val/knn_accuracy_k{k}", (preds[k] == query["label"]).float().mean(), sync_dist=True)

    # --- test: k-NN of TEST against TRAIN, all modalities and each alone --------------------------
    def on_test_epoch_start(self) -> None:
        self._eval_parts = {}

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "label" not in batch:
            return
        tokens = self.net.encode(batch)  # encoders run once; fusion once per modality subset
        present = batch["present"]
        part = {"label": batch["label"], "present": present}
        out = self.net.fuse(tokens, present)
        part["embedding/all"] = out.embedding.float()
        part["modality_weights"] = out.modality_weights.float().mean(dim=1)  # (B, M) averaged over tokens
        for i, modality in enumerate(MODALITIES):
            only = torch.zeros_like(present)
            only[:, i] = present[:, i]
            part[f"embedding/{modality}"] = self.net.fuse(tokens, only).embedding.float()
        self._eval_parts.setdefault(dataloader_idx, []).append(part)

    def on_test_epoch_end(self) -> None:
        bank = self.gather_eval(self._eval_parts.get(0, []))
        test = self.gather_eval(self._eval_parts.get(1, []))
        self._eval_parts = {}
        if not bank or not test:
            return
        knn = self.knn
        report = knn_test_report(bank, test, knn.k, knn.temperature, votes=knn.votes, metric=knn.metric, ks=knn.ks)
        self.log("test/knn_accuracy", report["accuracy"], sync_dist=True)
        self.log("test/f1_macro", report["f1_macro"], sync_dist=True)
        for modality, accuracy in report["ablation"].items():
            self.log(f"test/ablation_{modality}", accuracy, sync_dist=True)
        if self.trainer.is_global_zero:
            write_test_eval(self.run_dir / "eval", report, test)
