"""Tactile recipe: MAE pretraining with a static and a dynamic task (AnyTouch stage 1), trained in
one of the PhysioTouch note's modes:

- `joint`: every batch runs both tasks; loss = alpha * loss_static + beta * loss_dynamic with fixed
  weights (0.5 / 0.5, 0.75 / 0.25), or with `balance: true` weights recomputed every step from
  running averages of the two losses so that the static task contributes `target_share` of the
  weighted total (`balance_weights`);
- `alternating`: each batch runs ONE task; within an epoch the static batches are an exact shuffled
  permutation holding `static_ratio` of the batches (`alternating_schedule`), not a coin flip.

loss_dynamic = loss_recon (masked patches of frames 1-3) + loss_pred (all patches of frame 4), as in
the note. Every step logs the note's metrics (train/loss_total, loss_static, loss_dynamic,
loss_recon, loss_pred, loss_ratio, weighted_*, *_contribution, alpha, beta, grad_norm), per step
and per epoch. In joint mode the note's rules for reading a run (异常检测) are the doctor's checks
(`TactileReadingConfig` -> `reading_rules`), and every `grad_cosine_every` batches the cosine
between the two tasks' gradients on the shared encoder is logged (`train/grad_cosine`): the
measurement behind the note's "more stable gradients". Validation: frame-4 prediction against
copying frame 3 (`val/pred_mse_ratio`, which picks best.ckpt), masked PSNR and k-NN on the val
objects, measured by `sensorium.recipes.tactile.metrics`. Test: the same on TEST objects plus
probes (indenter class; force, contact centre and slip where frame labels exist) and picture grids,
written to eval/ (run by `sensorium eval tactile`, `sensorium.recipes.tactile.evaluate`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from sensorium.config import as_config
from sensorium.engine.checkpoint import atomic_write_json
from sensorium.engine.doctor import Band, ReadingRules
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError
from sensorium.eval.probes import knn_accuracy, probe_report, standardize
from sensorium.layers.patch_embed import patchify
from sensorium.losses.masked import mae_loss
from sensorium.recipes.tactile.metrics import (
    contact_probes,
    encode,
    evaluate_batch,
    grid_images,
    ratio_by_motion,
    save_grid,
    summarize,
)
from sensorium.recipes.tactile.model import TactileMAE, TactileModelConfig, contact_space, static_norm_pix_or
from sensorium.recipes.tactile.reader import SENSORS, STATIC_FRAME, WINDOW
from sensorium.recipes.tactile.transforms import AugmentConfig, TactileAugment

log = logging.getLogger(__name__)


# --- the two rules of the training modes (pure, tested) ---------------------------------------------------
def balance_weights(static_avg: float, dynamic_avg: float, target_share: float = 0.5) -> tuple[float, float]:
    """(alpha, beta) with alpha + beta = 1 such that alpha * S / (alpha * S + beta * D) = target_share
    for average losses S (static) and D (dynamic): alpha = s D / (s D + (1 - s) S). Summing to 1
    keeps the total on the scale of the fixed-weight modes."""
    if not 0.0 < target_share < 1.0:
        raise ConfigError("loss.target_share", f"must be in (0, 1), got {target_share}")
    if static_avg <= 0 or dynamic_avg <= 0:
        return 1.0 - target_share, target_share  # nothing measured yet: no evidence to reweight
    alpha = target_share * dynamic_avg / (target_share * dynamic_avg + (1.0 - target_share) * static_avg)
    return alpha, 1.0 - alpha


def alternating_schedule(num_batches: int, static_ratio: float, seed: int = 0) -> torch.Tensor:
    """(num_batches,) bool, True = static batch: exactly round(static_ratio * num_batches) static
    batches in a random order (a permutation, so every epoch holds the stated ratio)."""
    if not 0.0 <= static_ratio <= 1.0:
        raise ConfigError("loss.static_ratio", f"must be in [0, 1], got {static_ratio}")
    num_static = round(static_ratio * num_batches)
    order = torch.randperm(num_batches, generator=torch.Generator().manual_seed(seed))
    return order < num_static  # positions whose rank in the permutation falls in the first num_static


def gradient_cosine(loss_a: torch.Tensor, loss_b: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """Cosine (0-d tensor) between the gradients of two scalar losses w.r.t. `params`, all of them as
    one vector (a parameter one loss does not reach counts as a zero gradient there); NaN when
    either gradient is zero. The graph is kept (`retain_graph`) for the training backward."""
    grads_a = torch.autograd.grad(loss_a, params, retain_graph=True, allow_unused=True)
    grads_b = torch.autograd.grad(loss_b, params, retain_graph=True, allow_unused=True)
    zero = loss_a.new_zeros((), dtype=torch.float32)
    dot = sum(((a.float() * b.float()).sum() for a, b in zip(grads_a, grads_b) if a is not None and b is not None),
              zero)
    norm_a = sum((a.float().pow(2).sum() for a in grads_a if a is not None), zero).sqrt()
    norm_b = sum((b.float().pow(2).sum() for b in grads_b if b is not None), zero).sqrt()
    scale = norm_a * norm_b
    return torch.where(scale > 0, dot / scale.clamp_min(1e-30), torch.full_like(scale, float("nan")))


class LossBalancer(nn.Module):
    """Bias-corrected exponential running averages of the static and dynamic losses (buffers, so
    a resumed run continues them) and the weights `balance_weights` derives from them."""

    def __init__(self, target_share: float = 0.5, momentum: float = 0.98):
        super().__init__()
        self.target_share, self.momentum = target_share, momentum
        self.register_buffer("average", torch.zeros(2))  # (static, dynamic), biased towards 0
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, static: torch.Tensor, dynamic: torch.Tensor) -> tuple[float, float]:
        self.average.mul_(self.momentum).add_((1 - self.momentum) * torch.stack([static, dynamic]).float())
        self.steps += 1
        unbiased = self.average / (1 - self.momentum ** int(self.steps))  # Adam's bias correction
        return balance_weights(float(unbiased[0]), float(unbiased[1]), self.target_share)


# --- configs ------------------------------------------------------------------------------------------------
@dataclass
class TactileLossConfig:
    mode: Literal["joint", "alternating"] = "joint"
    alpha: float = 0.5
    """Static weight in joint mode with fixed weights."""
    beta: float = 0.5
    """Dynamic weight in joint mode with fixed weights."""
    balance: bool = False
    """Joint mode: derive alpha, beta each step from running loss averages (alpha + beta = 1)."""
    target_share: float = 0.5
    """Static task's share of the weighted total that balancing aims at."""
    balance_momentum: float = 0.98
    static_ratio: float = 0.5
    """Alternating mode: exact fraction of static batches in every epoch."""
    schedule_seed: int = 0
    norm_pix: bool = True
    """MAE's per-patch normalised target (frame-4 prediction is scored in the same space)."""
    static_norm_pix: bool | None = None
    """The static task's own target space (None: norm_pix). Off, a flat patch is not blown up to unit
    variance, so the reconstruction loss stays on what changes most (the contact), and the encoder
    keeps each patch's brightness; the dynamic task and the frame-4 ratio keep norm_pix."""

    static_target: Literal["frame", "contact", "both"] = "frame"
    """What the static task predicts at its masked patches: frame t itself (MAE, AnyTouch); its
    contact, frame t minus the recording's reference frame (the same gel, lighting and markers
    before contact; needs data.training_references), through a head of its own; or both, the
    static loss then the mean of the two. A frame's own appearance (gel texture, printed markers,
    lighting) is not part of the contact: predicting the contact spends the encoder on the imprint
    and what it moved. The change is standardised over each image (`model.contact_space`), not per
    patch: per-patch normalisation would blow the noise of the difference where nothing touches up
    to unit variance."""

    @property
    def static_space(self) -> bool:
        """The static task's frame target per-patch standardised (norm_pix) or not (a contact target
        is always in `contact_space`)."""
        return static_norm_pix_or(self.norm_pix, self.static_norm_pix)


@dataclass
class TactileEvalConfig:
    pool: Literal["mean", "cls"] = "mean"
    """Frozen features for the probes: mean of the patch tokens (MAE's choice) or CLS."""
    standardize: Literal["none", "bank", "sensor"] = "sensor"
    """Feature standardisation before the probes, fitted on the bank only: "bank" per dimension
    (MAE's linear-probe BatchNorm without affine), "sensor" the same with each sensor's own
    statistics (per-domain BatchNorm, AdaBN). Features cluster by sensor first (a k-NN on the
    sensor id is 100% accurate, trained or not), so inside a cluster cosine similarity is dominated
    by the sensor's mean vector unless it is removed. The sensor id is a model input already."""
    reference: bool = False
    """Probe features relative to the recording's reference frame (before contact): frame t's
    features minus the reference frame's, with the same pooling; needs data.reference_frames."""
    knn_k: int = 20
    knn_temperature: float = 0.07
    choose_on_val: bool = False
    """The test pass chooses the probes' protocol (pooling, reference, standardisation, k among
    `candidate_k`) by k-NN accuracy of the val windows against the training windows, before any
    test number is computed, and reports TEST under it (every probe: k-NN, linear, contact). An
    untrained encoder evaluated with the same settings chooses its own."""
    candidate_k: tuple[int, ...] = (10, 20, 50)
    probe_c: float = 1.0
    val_knn: bool = True
    """k-NN of the val objects against the training windows at every validation."""
    grid_samples: int = 4
    """Windows per sensor in the test pictures."""
    mask_seed: int = 0


@dataclass
class TactileReadingConfig:
    """Joint mode only: the PhysioTouch note's rules for reading a run (异常检测) as doctor checks,
    one message each, and the gradient measurement behind its "more stable gradients" claim."""

    grad_cosine_every: int = 50
    """Every this many training batches, log `train/grad_cosine`: the cosine between the static and
    dynamic losses' gradients on the shared encoder (two extra backward passes; 0: off)."""
    rules: bool = True
    """Apply the rules below (the note's thresholds by default)."""
    loss_jump: float = 2.0
    """Stop when the loss rises by more than this factor (window mean against the window before)."""
    jump_window: int = 5
    """Steps per window of the jump rule (1: step to step)."""
    loss_ratio: tuple[float, float] = (0.5, 1.5)
    """Warn when loss_static / loss_dynamic leaves this band (running average)."""
    contribution: tuple[float, float] = (0.35, 0.65)
    """Warn when a task's share of the weighted total leaves this band (running average)."""
    no_progress_epochs: int = 20
    """Warn when val/pred_mse_ratio has not improved for this many epochs (0: off)."""

    def reading_rules(self) -> ReadingRules:
        note = "the PhysioTouch note's reading rules"
        return ReadingRules(
            loss_jump=self.loss_jump, jump_window=self.jump_window,
            ranges={"loss_ratio": Band(*self.loss_ratio, "The note: over the band the dynamic task is too easy (raise "
                                                          "beta), under it the static task (raise alpha).")},
            share_range=Band(*self.contribution, "The note: adjust alpha / beta (loss.balance: true holds "
                                                 "loss.target_share)."),
            no_progress_epochs=self.no_progress_epochs, source=note)


# --- the task -------------------------------------------------------------------------------------------------
class TactileTask(SensoriumTask):
    recipe = "tactile"
    monitor = "val/pred_mse_ratio"
    monitor_mode = "min"

    def __init__(self, model: TactileModelConfig | dict | None = None, loss: TactileLossConfig | dict | None = None,
                 augment: AugmentConfig | dict | None = None, evaluation: TactileEvalConfig | dict | None = None,
                 optim: OptimConfig | dict | None = None, reading: TactileReadingConfig | dict | None = None):
        super().__init__(optim)
        self.model_config = as_config(TactileModelConfig, model)
        self.loss_config = as_config(TactileLossConfig, loss)
        self.augment_config = as_config(AugmentConfig, augment)
        self.eval_config = as_config(TactileEvalConfig, evaluation)
        self.reading_config = as_config(TactileReadingConfig, reading)
        if self.reading_config.grad_cosine_every < 0:
            raise ConfigError("reading.grad_cosine_every", f"must be >= 0, got {self.reading_config.grad_cosine_every}")
        self.save_config(model=self.model_config, loss=self.loss_config, augment=self.augment_config,
                         evaluation=self.eval_config, optim=self.optim, reading=self.reading_config)
        # Read by the doctor: its checks for a joint run, and the values they watch (set every step).
        joint = self.loss_config.mode == "joint"
        self.reading_rules = self.reading_config.reading_rules() if joint and self.reading_config.rules else None
        self.doctor_values: dict[str, torch.Tensor] = {}
        self._train_batches = 0
        self.net = TactileMAE(**asdict(self.model_config), num_frames=WINDOW, num_sensors=len(SENSORS),
                              contact_head=self.loss_config.static_target != "frame")
        a = self.augment_config
        self.augment = TactileAugment(self.model_config.img_size, a.crop_scale, hflip=a.hflip, vflip=a.vflip,
                                      jitter=a.jitter, jitter_p=a.jitter_p, mean=a.mean, std=a.std)
        self.balancer = LossBalancer(self.loss_config.target_share, self.loss_config.balance_momentum)
        self._schedule = torch.ones(0, dtype=torch.bool)
        self._batch_idx = 0
        self._parts: dict[int, list[dict[str, torch.Tensor]]] = {}
        self._generators: dict[int, torch.Generator] = {}  # fixed masks per evaluation loader
        self._grid: dict[int, dict[str, torch.Tensor]] = {}

    def export_config(self) -> dict:
        return {**super().export_config(), "sensors": list(SENSORS), "static_frame": STATIC_FRAME}

    # --- inputs -------------------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training) and normalise the frames (B, 4, 3, S, S) on the batch's device. A
        reference frame (B, 3, S, S) goes through the same draw as its window's frames (one crop,
        flip and jitter per sequence), so frame t minus it is the contact, not the augmentation."""
        if "frames" in batch:
            training = self._trainer is not None and self.trainer.training and self.augment_config.enabled
            self.augment.train(training)
            if "reference" in batch:
                sequence = self.augment(torch.cat([batch["frames"], batch["reference"][:, None]], dim=1))
                batch["frames"], batch["reference"] = sequence[:, :-1], sequence[:, -1]
            else:
                batch["frames"] = self.augment(batch["frames"])
        return batch  # a batch without frames (every sample skipped as bad) carries no reference either

    def to_pixels(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches of the normalised input (..., L, p*p*3) -> [0, 1] pixels, same shape."""
        channels = patches.float().unflatten(-1, (-1, 3))  # (..., L, p*p, 3): MAE's (p, p, C) order
        return (channels * self.augment.std.view(3) + self.augment.mean.view(3)).flatten(-2)

    # --- training -------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        if self.loss_config.mode != "joint" and self.reading_config.grad_cosine_every and self.trainer.is_global_zero:
            log.info("[tactile] train/grad_cosine is not measured in alternating mode: each batch runs one task, "
                     "so no batch has two gradients to compare")

    def on_train_epoch_start(self) -> None:
        cfg = self.loss_config
        if cfg.mode == "alternating":  # the same seed on every rank: all ranks run the same task
            self._schedule = alternating_schedule(int(self.trainer.num_training_batches), cfg.static_ratio,
                                                  cfg.schedule_seed * 100_003 + self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self._batch_idx = batch_idx
        out = super().training_step(batch, batch_idx)
        self._train_batches += 1
        return out

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.loss_config
        frames, sensor = batch["frames"], batch["sensor"]
        run_static = run_dynamic = True
        if cfg.mode == "alternating":
            run_static = bool(self._schedule[self._batch_idx % len(self._schedule)])
            run_dynamic = not run_static
        logs: dict[str, torch.Tensor] = {}
        if run_static:
            out = self.net.forward_static(frames[:, STATIC_FRAME], sensor)
            reference = self._static_reference(batch)
            if cfg.static_target != "contact":
                logs["loss_static_frame"] = mae_loss(out.pred, out.target, out.mask, cfg.static_space)
            if reference is not None:
                logs["loss_static_contact"] = mae_loss(out.contact_pred, contact_space(out.target, reference),
                                                       out.mask, norm_pix=False)
            parts = [logs[key] for key in ("loss_static_frame", "loss_static_contact") if key in logs]
            logs["loss_static"] = sum(parts) / len(parts)
        if run_dynamic:
            out = self.net.forward_dynamic(frames, sensor)
            logs["loss_recon"] = mae_loss(out.recon_pred, out.recon_target, out.recon_mask, cfg.norm_pix)
            logs["loss_pred"] = mae_loss(out.predict_future(cfg.norm_pix), out.future_target, out.future_mask,
                                         cfg.norm_pix)
            logs["loss_dynamic"] = logs["loss_recon"] + logs["loss_pred"]
        if cfg.mode == "alternating":
            terms = {"static": logs["loss_static"]} if run_static else {"dynamic": logs["loss_dynamic"]}
        else:
            alpha, beta = self._weights(logs["loss_static"].detach(), logs["loss_dynamic"].detach())
            terms = {"static": alpha * logs["loss_static"], "dynamic": beta * logs["loss_dynamic"]}
            total = terms["static"].detach() + terms["dynamic"].detach()
            # The note's loss_ratio compares the frame reconstructions; a contact loss sits near 1 by
            # construction (the standardised change is mostly unpredictable where masked), so it is left
            # out of the ratio, and a contact-only run has no ratio for the note's band.
            frame_static = logs.get("loss_static_frame", logs["loss_static"])
            logs |= {"alpha": torch.tensor(alpha), "beta": torch.tensor(beta),
                     "loss_ratio": frame_static / logs["loss_dynamic"].clamp_min(1e-12),
                     "weighted_static": terms["static"], "weighted_dynamic": terms["dynamic"],
                     "static_contribution": terms["static"].detach() / total.clamp_min(1e-12),
                     "dynamic_contribution": terms["dynamic"].detach() / total.clamp_min(1e-12)}
            self.doctor_values = ({} if cfg.static_target == "contact"
                                  else {"loss_ratio": logs["loss_ratio"].detach()})
            self._log_grad_cosine(logs["loss_static"], logs["loss_dynamic"])
        logs["loss_total"] = sum(terms.values())
        self.log_step_and_epoch({f"train/{k}": v.detach().float() for k, v in logs.items()}, frames.shape[0])
        return terms

    def _static_reference(self, batch: dict) -> torch.Tensor | None:
        """Patches (B, L, P) of the batch's reference frames when the static task predicts the
        contact (`loss.static_target`: contact or both); None when it predicts the frame only."""
        if self.loss_config.static_target == "frame":
            return None
        if "reference" not in batch:
            raise ConfigError("model.init_args.loss.static_target",
                              "contact needs each window's reference frame in every batch: set "
                              "data.init_args.reference_frames: true and data.init_args.training_references: true")
        return patchify(batch["reference"], self.net.patch_size)

    def _recon_reference(self, batch: dict) -> torch.Tensor | None:
        """The reference patches the evaluation reconstructs frame t from (reference + predicted
        contact) when the static task predicts the contact only; None: from the predicted frame."""
        return self._static_reference(batch) if self.loss_config.static_target == "contact" else None

    def _weights(self, static: torch.Tensor, dynamic: torch.Tensor) -> tuple[float, float]:
        cfg = self.loss_config
        if not cfg.balance:
            return cfg.alpha, cfg.beta
        if self._trainer is not None and self.trainer.world_size > 1:  # one running average for all ranks
            static, dynamic = self.trainer.strategy.reduce(torch.stack([static, dynamic]), reduce_op="mean")
        return self.balancer.update(static, dynamic)

    def _log_grad_cosine(self, static: torch.Tensor, dynamic: torch.Tensor) -> None:
        """`train/grad_cosine` every `grad_cosine_every` training batches (rank zero only: the
        gradients are this rank's batch's), written to the loggers at once: Lightning's `log` keeps
        only the values of its own logging steps."""
        every = self.reading_config.grad_cosine_every
        if (every <= 0 or self._train_batches % every or self._trainer is None or not self.trainer.training
                or not self.trainer.is_global_zero or not torch.is_grad_enabled()):
            return
        shared = [p for p in self.net.encoder.parameters() if p.requires_grad]
        if not shared:  # a frozen encoder: nothing shared is trained
            return
        cosine = float(gradient_cosine(static, dynamic, shared))
        if math.isfinite(cosine):  # NaN: a zero gradient, no direction to compare
            for logger in self.loggers:
                logger.log_metrics({"train/grad_cosine": cosine}, step=self.global_step)

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        if grads:
            self.log_step_and_epoch({"train/grad_norm": torch.stack(grads).norm()}, batch_size=1)

    # --- validation and test ------------------------------------------------------------------------------
    def _evaluate(self, batch: dict, dataloader_idx: int, features_only: bool) -> None:
        if "frames" not in batch:  # every sample of the batch was skipped as bad
            return
        reference = batch.get("reference")
        if features_only:
            part = encode(self.net, batch["frames"], batch["sensor"], reference)
        else:
            generator = self._generators.setdefault(dataloader_idx, torch.Generator().manual_seed(
                self.eval_config.mask_seed * 1_000 + self.global_rank))
            part = evaluate_batch(self.net, batch["frames"], batch["sensor"], self.loss_config.norm_pix,
                                  self.to_pixels, generator, reference=reference,
                                  static_norm_pix=self.loss_config.static_space, static_reference=self._recon_reference(batch))
        part |= {key: batch[key] for key in ("label", "sensor", "force", "contact_mm", "slip") if key in batch}
        self._parts.setdefault(dataloader_idx, []).append(part)

    def _probe_features(self, queries: dict, bank: dict, pool: str | None = None, protocol: str | None = None,
                        reference: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bank, query) features of `pool` (relative to the reference frame when `reference`) under
        the standardisation `protocol` (defaults: the config's)."""
        reference = self.eval_config.reference if reference is None else reference
        key = f"feature_{pool or self.eval_config.pool}" + ("_ref" if reference else "")
        if key not in bank or key not in queries:
            raise ConfigError("model.init_args.evaluation.reference",
                              "probes relative to the reference frame need data.init_args.reference_frames: true")
        protocol = protocol or self.eval_config.standardize
        if protocol == "none":
            return bank[key], queries[key]
        if protocol == "bank":
            return standardize(bank[key], queries[key])
        return standardize(bank[key], queries[key], bank["sensor"], queries["sensor"])

    def on_validation_epoch_start(self) -> None:
        self._parts, self._generators = {}, {}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 1 and not self.eval_config.val_knn:
            return
        self._evaluate(batch, dataloader_idx, features_only=dataloader_idx == 1)

    def on_validation_epoch_end(self) -> None:
        queries, bank = self.gather_eval(self._parts.get(0, [])), self.gather_eval(self._parts.get(1, []))
        self._parts = {}
        if not queries:
            return
        numbers = summarize(queries) | ratio_by_motion(queries)
        for key in ("pred_mse_ratio", "pred_mse_ratio_masked", "pixel_pred_mse_ratio", "psnr_masked",
                    "pred_mse_ratio_sliding", "pred_mse_ratio_static"):  # the last two with frame labels only
            if key in numbers:
                self.log(f"val/{key}", numbers[key], prog_bar=key == "pred_mse_ratio", sync_dist=True)
        if bank and (queries["label"] >= 0).any() and (bank["label"] >= 0).any():
            bank_x, query_x = self._probe_features(queries, bank)
            e = self.eval_config
            self.log("val/knn_accuracy", knn_accuracy(bank_x, bank["label"], query_x, queries["label"], e.knn_k,
                                                      e.knn_temperature), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._parts, self._generators, self._grid = {}, {}, {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, dataloader_idx, features_only=dataloader_idx >= 1)  # 1: train, 2: val windows
        if dataloader_idx == 0 and "frames" in batch and self.trainer.is_global_zero:
            self._collect_grid(batch)

    def _collect_grid(self, batch: dict) -> None:
        """Keep the first `grid_samples` windows of each sensor for the pictures."""
        for sensor_id in batch["sensor"].unique().tolist():
            have = len(self._grid.get(sensor_id, {}).get("frames", []))
            take = (batch["sensor"] == sensor_id).nonzero().flatten()[: self.eval_config.grid_samples - have]
            if len(take):
                chosen = {key: batch[key][take] for key in ("frames", "sensor", "reference") if key in batch}
                old = self._grid.get(sensor_id)
                self._grid[sensor_id] = chosen if old is None else {k: torch.cat([old[k], v]) for k, v in chosen.items()}

    def on_test_epoch_end(self) -> None:
        queries, train, val = (self.gather_eval(self._parts.get(i, [])) for i in range(3))
        self._parts = {}
        if not queries:
            return
        # The probes' bank: train + val windows (val apart only to choose the contact probes' settings).
        bank = {key: torch.cat([train[key], val[key]]) for key in train} if train and val else train
        report = summarize(queries) | ratio_by_motion(queries)
        report["mask_ratio"] = self.net.mask_ratio
        report["dynamic_mask_ratio"] = self.net.dynamic_mask_ratio
        report["norm_pix"] = self.loss_config.norm_pix
        report["static_norm_pix"] = self.loss_config.static_space
        report["static_target"] = self.loss_config.static_target
        e = self.eval_config
        protocol = self._protocol(train, val)  # chosen before any test number exists
        report["protocol"] = protocol
        pool, scaling, reference, k = (protocol[key] for key in ("pool", "standardize", "reference", "k"))
        if bank and (queries["label"] >= 0).any() and (bank["label"] >= 0).any():
            for each in ("mean", "cls"):
                bank_x, query_x = self._probe_features(queries, bank, each, scaling, reference)
                probes = probe_report(bank_x, bank["label"], query_x, queries["label"], k, e.knn_temperature,
                                      e.probe_c)
                report[f"probes_{each}"] = probes | {"standardize": scaling, "reference": reference}
            # TEST k-NN under every protocol at the chosen k: to read the choice against, never to choose.
            report["knn_protocols"] = {}
            for name, (each, each_standardize, each_reference) in self._protocol_grid(bank).items():
                bank_x, query_x = self._probe_features(queries, bank, each, each_standardize, each_reference)
                report["knn_protocols"][name] = knn_accuracy(bank_x, bank["label"], query_x, queries["label"], k,
                                                             e.knn_temperature)
            report |= {key: report[f"probes_{pool}"][key] for key in ("knn_accuracy", "linear_probe_accuracy")}
        report["pool"], report["standardize"], report["reference"], report["knn_k"] = pool, scaling, reference, k
        report["contact_probes"] = self._contact_probes(queries, train, val, bank, protocol)
        report |= {k: report["contact_probes"][k] for k in ("force_r2", "force_rmse", "contact_mm", "slip_f1")
                   if k in report["contact_probes"]}
        for key in ("pred_mse_ratio", "pixel_pred_mse_ratio", "psnr_masked", "knn_accuracy",
                    "linear_probe_accuracy", "force_r2", "force_rmse", "contact_mm", "slip_f1"):
            if key in report:
                self.log(f"test/{key}", float(report[key]), sync_dist=True)
        if self.trainer.is_global_zero:
            self._write_eval(report)

    @staticmethod
    def _protocol_grid(bank: dict) -> dict[str, tuple[str, str, bool]]:
        """{"pool[-ref]/standardize": (pool, standardize, reference)} for every protocol the features
        in `bank` allow (relative to the reference frame only where the batches carried one)."""
        references = (False, True) if "feature_mean_ref" in bank else (False,)
        return {f"{pool}{'-ref' if reference else ''}/{scaling}": (pool, scaling, reference)
                for reference in references for pool in ("mean", "cls") for scaling in ("none", "bank", "sensor")}

    def _protocol(self, train: dict, val: dict) -> dict:
        """The probes' protocol: the config's, or (`choose_on_val`) the one with the best k-NN
        accuracy of the val windows against the training windows, ties going to the config's."""
        e = self.eval_config
        configured = {"pool": e.pool, "standardize": e.standardize, "reference": e.reference, "k": e.knn_k,
                      "chosen_on": "config"}
        labelled = [part for part in (train, val) if part and (part["label"] >= 0).any()]
        if not e.choose_on_val or len(labelled) < 2:
            return configured
        name = f"{e.pool}{'-ref' if e.reference else ''}/{e.standardize}/k{e.knn_k}"
        candidates = {name: (e.pool, e.standardize, e.reference, e.knn_k)}  # first: wins ties
        for grid_name, (pool, scaling, reference) in self._protocol_grid(train).items():
            for k in e.candidate_k:
                candidates.setdefault(f"{grid_name}/k{k}", (pool, scaling, reference, k))
        val_knn = {}
        for key, (pool, scaling, reference, k) in candidates.items():
            bank_x, query_x = self._probe_features(val, train, pool, scaling, reference)
            val_knn[key] = knn_accuracy(bank_x, train["label"], query_x, val["label"], k, e.knn_temperature)
        best = max(val_knn, key=val_knn.get)
        pool, scaling, reference, k = candidates[best]
        return {"pool": pool, "standardize": scaling, "reference": reference, "k": k, "chosen_on": "val",
                "val_knn_accuracy": val_knn[best], "val_knn": val_knn}

    def _contact_probes(self, queries: dict, train: dict, val: dict, bank: dict, protocol: dict) -> dict:
        """Force / contact-centre / slip probes (`metrics.contact_probes`) on the features of the
        probes' `protocol` (standardisation fitted on train + val); the reason instead where they
        cannot run."""
        def known(part: dict) -> bool:
            return "force" in part and bool(torch.isfinite(part["force"]).any() or (part["slip"] >= 0).any())

        if not (known(queries) and train and known(train)):
            return {"skipped": "no frame labels for these windows (frame_labels.csv beside the frames: "
                               "`sensorium synth tactile` writes one; real TacQuad has none)"}
        if not val:
            return {"skipped": "no val windows to choose the probes' regularisation on"}
        bank_x, query_x = self._probe_features(queries, bank, protocol["pool"], protocol["standardize"],
                                               protocol["reference"])
        n_train = len(train["force"])
        splits = [(bank_x[:n_train], train), (bank_x[n_train:], val), (query_x, queries)]
        arrays = [{"x": x.double().numpy(), "force": part["force"].double().numpy(),
                   "contact_mm": part["contact_mm"].double().numpy(), "slip": part["slip"].numpy()}
                  for x, part in splits]
        return contact_probes(*arrays) | {key: protocol[key] for key in ("pool", "standardize", "reference")}

    def _write_eval(self, report: dict) -> None:
        eval_dir = self.run_dir / "eval"
        atomic_write_json(eval_dir / "tactile.json", report)
        generator = torch.Generator().manual_seed(self.eval_config.mask_seed)
        for sensor_id, chosen in sorted(self._grid.items()):
            columns = grid_images(self.net, chosen["frames"], chosen["sensor"], self.loss_config.norm_pix,
                                  self.to_pixels, generator, static_norm_pix=self.loss_config.static_space,
                                  static_reference=self._recon_reference(chosen))
            save_grid(columns, eval_dir / f"grid_{SENSORS[sensor_id]}.png",
                      f"{SENSORS[sensor_id]}: frame-4 prediction MSE ratio "
                      f"{report['pred_mse_ratio']:.3f} (all sensors)")
        knn = f", k-NN {report['knn_accuracy']:.3f}" if "knn_accuracy" in report else ""
        log.info(f"[tactile] TEST frame-4 prediction MSE / copy-frame-3 MSE {report['pred_mse_ratio']:.3f} "
                 f"(pixels {report['pixel_pred_mse_ratio']:.3f}), masked PSNR {report['psnr_masked']:.2f} dB{knn}; "
                 f"wrote {eval_dir / 'tactile.json'}")
