"""AlignTask: point-to-patch alignment with set-level distillation, per training batch of B windows
x K points:

    point  InfoNCE(point projector(pc_feat), fused patch features at the points' uv), the negatives
           of the whole global batch gathered across ranks with gradients (labels offset by rank),
           pairs of one frame closer than one patch left out of the negatives (counted:
           train/masked_negatives), optionally a queue of earlier batches' rows as more negatives;
    set    weight x InfoNCE(set teacher(mean pc_feat), set head(fused mean of K random cells per
           encoder)) over the batch's windows, windows of one episode left out of each other's
           negatives.

Validation (val episodes): point -> patch top-1 among a retrieval batch's candidates
(`val/point_top1`, which picks best.ckpt), patch -> point and set top-1. Test: the evaluation
evaluate.py describes (computed with metrics.py), written to RUN/eval/rgbpc.json.

`load_align_net` reads the net of an AlignTask checkpoint back (the teacher of distil_task.DistilTask).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sensorium.config import as_config
from sensorium.engine.checkpoint import atomic_write_json, load_task
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError, DataError
from sensorium.eval.retrieval import positive_negative_similarities, retrieval_topk
from sensorium.losses.contrastive import NegativeQueue, info_nce
from sensorium.recipes.rgbpc.datamodule import RgbpcDataSpec
from sensorium.recipes.rgbpc.metrics import (
    ACTION_SOURCES,
    action_head_test,
    depth_probe,
    feature_agreement,
    gap_closed,
    gap_closed_per_head,
    retrieval_metrics,
    similarity_histogram,
)
from sensorium.recipes.rgbpc.model import AlignNet, AlignNetConfig, load_student, same_patch_mask

log = logging.getLogger(__name__)


@dataclass
class AlignLossConfig:
    temperature: float = 0.07
    mask_same_patch: bool = True
    """Leave pairs of one frame closer than one patch out of each other's negatives."""
    queue_size: int = 0
    """Rows of earlier batches kept as extra negatives (0: off)."""
    set_weight: float = 0.5
    """Weight of the set-level term (0: off)."""
    set_temperature: float = 0.1


@dataclass
class AlignEvalConfig:
    student: str | None = None
    """Export directory of a distilled student (source d of the action-head test); None: skip d."""
    action_test: bool = True
    action_steps: int = 400
    action_lr: float = 1.0e-3
    action_seeds: int = 3
    action_bf16: bool = False
    """Train the action heads in bfloat16 autocast (predictions in float32): 1.45x faster a step on a
    CPU with avx512_bf16, where the heads' matrix products are most of the test's time."""
    raw_seed: int = 0
    """Initialisation of the untrained-adapter copy that gives source (c), raw RGB features."""
    depth_alpha: float = 1.0
    histogram_pairs: int = 20000
    """Negative pairs kept for the similarity histogram."""


def _distributed_rows(count: int) -> int:
    """The smallest `count` of all ranks (a rank whose batch lost bad samples shrinks everyone's):
    the gathered loss needs the same rows on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return count
    value = torch.tensor(count)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value)


class AlignTask(SensoriumTask):
    recipe = "rgbpc"
    monitor = "val/point_top1"
    monitor_mode = "max"
    data_spec_type = RgbpcDataSpec

    def __init__(self, net: AlignNetConfig | dict | None = None, loss: AlignLossConfig | dict | None = None,
                 evaluation: AlignEvalConfig | dict | None = None, optim: OptimConfig | dict | None = None):
        super().__init__(optim)
        self.net_config = as_config(AlignNetConfig, net)
        self.loss_config = as_config(AlignLossConfig, loss)
        self.eval_config = as_config(AlignEvalConfig, evaluation)
        self.save_config(net=self.net_config, loss=self.loss_config, evaluation=self.eval_config, optim=self.optim)
        self.net = AlignNet(self.net_config)
        q = self.loss_config.queue_size
        self.queues = (torch.nn.ModuleDict({"points": NegativeQueue(self.net_config.dim, q),
                                            "patches": NegativeQueue(self.net_config.dim, q)}) if q > 0 else None)
        if self.loss_config.set_weight <= 0:
            # Unused set-level heads: frozen, so the doctor does not report them as gradient-less.
            for module in (self.net.set_fusion, self.net.set_head, self.net.set_teacher):
                module.requires_grad_(False)
        self._parts: dict[int, list[dict[str, torch.Tensor]]] = {}
        self._extras: list = []  # (raw net, student) during a test: not submodules, not in checkpoints
        self.data_spec: RgbpcDataSpec | None = None  # from the datamodule, when run by a Trainer

    def configure_data(self, spec: RgbpcDataSpec) -> None:
        check_data_matches(self.net_config, spec)
        self.data_spec = spec

    # --- training -------------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "pc_feat" not in batch:  # every window of the batch was skipped as bad
            return {"point": sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0}
        rows = _distributed_rows(batch["pc_feat"].shape[0])
        batch = {k: v[:rows] if isinstance(v, torch.Tensor) and v.ndim > 0 else v for k, v in batch.items()}
        cfg = self.loss_config
        B, K = batch["pc_feat"].shape[:2]
        patches = self.net.patch_features(batch)
        z_v = F.normalize(patches.fused.float().reshape(B * K, -1), dim=-1)  # (B*K, D)
        z_p = F.normalize(self.net.point_features(batch).float().reshape(B * K, -1), dim=-1)  # (B*K, D)
        mask = None
        if cfg.mask_same_patch:
            frame_id, uv = batch["frame_id"].repeat_interleave(K), batch["uv"].reshape(B * K, 2)
            # The positive itself is in the mask (same frame, distance 0); info_nce never masks it.
            mask = same_patch_mask(frame_id, uv, self.gather(frame_id), self.gather(uv), float(batch["patch_px"][0]))
            self.log_step_and_epoch({"train/masked_negatives": mask.sum(dim=1).float().mean() - 1}, B)
        extra = {}
        if self.queues is not None:
            extra = {"negatives_a": self.queues["points"].rows(), "negatives_b": self.queues["patches"].rows()}
        terms = {"point": info_nce(z_p, z_v, cfg.temperature, negative_mask=mask, gather=True, **extra)}
        if self.queues is not None:
            self.queues["points"].push(self.gather(z_p.detach()))
            self.queues["patches"].push(self.gather(z_v.detach()))
        if cfg.set_weight > 0:
            s_v = F.normalize(self.net.set_features(batch, self.net_config.set_tokens).float(), dim=-1)  # (B, D)
            s_p = F.normalize(self.net.set_teacher_features(batch).float(), dim=-1)  # (B, D)
            episode = batch["episode"]
            same_episode = episode[:, None] == self.gather(episode)[None, :]  # (B, B_global)
            terms["set"] = cfg.set_weight * info_nce(s_p, s_v, cfg.set_temperature, negative_mask=same_episode,
                                                     gather=True)
        if patches.weights is not None:
            for i, e in enumerate(self.net.encoders):
                self.log(f"fusion/{e}", patches.weights[..., i].float().mean(), on_step=False, on_epoch=True,
                         sync_dist=True, batch_size=B)
        return terms

    # --- validation ------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._parts = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "pc_feat" not in batch:
            return
        metrics = self._batch_retrieval(batch, batch["pc_feat"].shape[1])
        self._parts.setdefault(0, []).append({k: torch.tensor([v]) for k, v in metrics.items()})

    def on_validation_epoch_end(self) -> None:
        result = self.gather_eval(self._parts.get(0, []))
        self._parts = {}
        if not result:
            return
        for key in ("point_top1", "patch_top1", "point_top1_within_patch", "set_top1"):
            self.log(f"val/{key}", float(result[key].mean()), prog_bar=key == "point_top1", sync_dist=True)
        self.log("val/chance_top1", float((1.0 / result["candidates"]).mean()), sync_dist=True)

    def _batch_retrieval(self, batch: dict[str, torch.Tensor], points: int, net: AlignNet | None = None) -> dict:
        net = net or self.net
        sub = _first_points(batch, points)
        patches = F.normalize(net.patch_features(sub).fused.float(), dim=-1)
        pts = F.normalize(net.point_features(sub).float(), dim=-1)
        metrics = retrieval_metrics(pts, patches, sub["frame_id"], sub["uv"], float(batch["patch_px"][0]))
        s_v, s_p = net.set_features(batch), net.set_teacher_features(batch)
        set_ranks = retrieval_topk(s_p, s_v)
        metrics.update(set_top1=set_ranks[1], set_top5=set_ranks[5], set_candidates=float(len(s_v)))
        return metrics

    # --- test: the full evaluation ---------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._parts = {}
        with torch.random.fork_rng():
            torch.manual_seed(self.eval_config.raw_seed)
            raw = AlignNet(self.net_config).to(self.device).eval()
        student = load_student(self.eval_config.student).to(self.device).eval() if self.eval_config.student else None
        self._extras = [raw, student]

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if "pc_feat" not in batch:
            return
        raw, student = self._extras
        patches = self.net.patch_features(batch)
        part = {
            "pc": batch["pc_feat"].float(),
            "rgb_aligned": F.normalize(patches.fused.float(), dim=-1),
            "rgb_raw": F.normalize(raw.patch_features(batch).fused.float(), dim=-1),
            "action": batch["action"].float(), "task": batch["task"], "episode": batch["episode"],
            "depth": batch["depth"].float(),
        }
        if student is not None:
            part["student"] = student.at_points(batch["image"], batch["uv"]).float()
        if patches.weights is not None:
            part["weights"] = patches.weights.float().mean(dim=1)  # (B, E)
        if dataloader_idx == 1:
            data = self.data_spec
            if batch["pc_feat"].shape[0] == data.eval_windows:  # full retrieval batches only
                metrics = self._batch_retrieval(batch, data.eval_points)
                part.update({f"r/{k}": torch.tensor([v]) for k, v in metrics.items()})
                part.update({f"r/{k}": torch.tensor([v]) for k, v in
                             _prefixed(self._batch_retrieval(batch, data.eval_points, raw), "raw_").items()})
                sub = _first_points(batch, data.eval_points)
                pts = self.net.point_features(sub).reshape(-1, self.net_config.dim)
                pat = patches.fused[:, :data.eval_points].reshape(-1, self.net_config.dim)
                positive, negative = positive_negative_similarities(pts, pat)
                keep = torch.randperm(len(negative), generator=torch.Generator().manual_seed(batch_idx))
                part["sim_pos"], part["sim_neg"] = positive, negative[keep[: len(positive) * 4].to(negative.device)]
        self._parts.setdefault(dataloader_idx, []).append(part)

    def on_test_epoch_end(self) -> None:
        bank = self._gather_ragged(self._parts.get(0, []))
        held = self._gather_ragged(self._parts.get(1, []))
        self._parts, self._extras = {}, []
        if not held:
            return
        report = self.evaluation_report(bank, held)
        for key in ("point_top1", "point_top5", "set_top1"):
            self.log(f"test/{key}", report[key], sync_dist=True)
        if self.trainer.is_global_zero:
            self.write_eval(report, held)

    def _gather_ragged(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """gather_eval for parts whose keys differ (retrieval keys only on full batches)."""
        keys = sorted({k for p in parts for k in p})
        out = {}
        for key in keys:
            having = [{key: p[key]} for p in parts if key in p]
            out.update(self.gather_eval(having) if having else {})
        return out

    def evaluation_report(self, bank: dict[str, torch.Tensor], held: dict[str, torch.Tensor]) -> dict:
        cfg = self.eval_config
        candidates = float(held["r/candidates"].mean()) if "r/candidates" in held else math.nan
        report: dict = {
            "held_out_episodes": self.data_spec.held_out_episodes, "held_out_steps": int(len(held["action"])),
            "retrieval_batches": int(len(held.get("r/point_top1", []))), "candidates": candidates,
            "chance_top1": 1.0 / candidates, "chance_top5": 5.0 / candidates,
            "set_candidates": float(held["r/set_candidates"].mean()) if "r/set_candidates" in held else math.nan,
        }
        for key in ("point_top1", "point_top5", "patch_top1", "patch_top5", "point_top1_within_patch",
                    "point_top5_within_patch", "set_top1", "set_top5"):
            report[key] = float(held[f"r/{key}"].mean()) if f"r/{key}" in held else math.nan
            report[f"raw_{key}"] = float(held[f"r/raw_{key}"].mean()) if f"r/raw_{key}" in held else math.nan
        report["set_chance_top1"] = 1.0 / report["set_candidates"]
        report["encoders"] = list(self.net.encoders)
        report["fusion"] = self.fusion_report(held)
        sources = [s for s in ACTION_SOURCES if s in held and s in bank]
        num_tasks = int(max(bank["task"].max(), held["task"].max())) + 1
        if cfg.action_test and len(bank.get("action", [])) and bank["action"].shape[-1] > 0:
            started = time.perf_counter()
            with torch.inference_mode(False), torch.enable_grad(), torch.autocast(self.device.type, enabled=False):
                clone = {s: (bank[s].clone(), held[s].clone()) for s in sources}
                action = action_head_test(clone, bank["task"].clone(), bank["action"].clone(), held["task"].clone(),
                                          held["action"].clone(), num_tasks, cfg.action_seeds, cfg.action_steps,
                                          cfg.action_lr, bf16=cfg.action_bf16)
            errors = {s: action[s]["error"] for s in sources}
            report["action"] = {
                "error": errors, "detail": action, "train_episodes": int(len(torch.unique(bank["episode"]))),
                "train_steps": int(len(bank["action"])), "test_steps": int(len(held["action"])),
                "points_per_step": int(held["pc"].shape[1]),
                "metric": "E|pred - action|^2 / E|action - mean|^2 on held-out steps (1 = the mean predictor)",
                "gap_closed": gap_closed(errors["rgb_raw"], errors["rgb_aligned"], errors["pc"]),
                "student_gap_closed": (gap_closed(errors["rgb_raw"], errors["student"], errors["pc"])
                                       if "student" in errors else None),
                # the gap of the mean errors above, and here each head's own (its spread is the noise)
                "gap_closed_per_head": gap_closed_per_head(action, "rgb_aligned"),
                "student_gap_closed_per_head": gap_closed_per_head(action, "student"),
                "seconds": round(time.perf_counter() - started, 1),
            }
        if "student" in held:
            report["student_agreement"] = feature_agreement(held["student"], held["rgb_aligned"])
        report["depth_probe"] = {s: depth_probe(bank[s].flatten(0, 1), bank["depth"].flatten(),
                                                held[s].flatten(0, 1), held["depth"].flatten(), cfg.depth_alpha)
                                 for s in sources}
        report["model"] = {"fusion": self.net_config.fusion, "temporal": self.net_config.temporal,
                           "dim": self.net_config.dim, "student": cfg.student}
        return report

    def fusion_report(self, held: dict[str, torch.Tensor]) -> dict:
        encoders = list(self.net.encoders)
        fusion = self.net.fusion
        if fusion.mode == "gate" and "weights" in held:
            w = held["weights"]  # (N, E) per-step means of the per-point gates
            return {"mode": "gate", "mean": dict(zip(encoders, w.mean(0).tolist())),
                    "std": dict(zip(encoders, w.std(0).tolist()))}
        return {"mode": fusion.mode, "weights": dict(zip(encoders, fusion.input_shares().tolist()))}

    def write_eval(self, report: dict, held: dict[str, torch.Tensor]) -> None:
        eval_dir = self.run_dir / "eval"
        if "sim_pos" in held:
            similarity_histogram(held["sim_pos"].float().numpy(), held["sim_neg"].float().numpy(),
                                 eval_dir / "similarity_histogram.png",
                                 f"point vs patch, held-out: top-1 {report['point_top1']:.3f} "
                                 f"(chance {report['chance_top1']:.4f})")
        atomic_write_json(eval_dir / "rgbpc.json", _jsonable(report))
        line = (f"[rgbpc] held-out point->patch top-1 {report['point_top1']:.4f} (chance {report['chance_top1']:.4f}, "
                f"untrained adapters {report['raw_point_top1']:.4f}), top-5 {report['point_top5']:.4f}, set top-1 "
                f"{report['set_top1']:.4f}")
        if "action" in report:
            errors = report["action"]["error"]
            line += "; action error " + ", ".join(f"{s} {e:.3f}" for s, e in errors.items())
            if report["action"]["gap_closed"] is not None:
                line += f"; gap closed {report['action']['gap_closed']:.2f}"
        log.info(line + f"; wrote {eval_dir / 'rgbpc.json'}")


def _first_points(batch: dict[str, torch.Tensor], points: int) -> dict[str, torch.Tensor]:
    """The batch with only the first `points` points of every sample (they are a random subset)."""
    per_point = {"pc_feat", "uv", "xyz", "depth"} | {k for k in batch if k.startswith("grid/")}
    return {k: (v[:, :points] if k in per_point else v) for k, v in batch.items()}


def _prefixed(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in metrics.items() if k not in ("candidates", "set_candidates")}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_data_matches(config: AlignNetConfig, data: RgbpcDataSpec) -> None:
    """The model's encoders and widths are the data's, and temporal pooling has windows to pool."""
    channels = data.channels
    if list(channels) != list(config.encoders) or channels != dict(config.encoders):
        raise DataError(data.features, f"the packs hold encoders {channels} (name: channels), the model "
                                             f"expects {dict(config.encoders)} (model.init_args.net.encoders)")
    if config.temporal != data.temporal:
        raise ConfigError("model.init_args.net.temporal", f"is {config.temporal} but data.temporal is "
                                                          f"{data.temporal}; set both")
    if data.point_input == "xyzrgb" and config.pc_dim != 6:
        raise ConfigError("model.init_args.net.pc_dim", "must be 6 with data.point_input xyzrgb")


# --- checkpoints ----------------------------------------------------------------------------------------
def load_align_net(ckpt: str | Path) -> AlignNet:
    """The AlignNet of an AlignTask checkpoint (weights_only loading; errors name the file)."""
    return load_task(ckpt, AlignTask).net
