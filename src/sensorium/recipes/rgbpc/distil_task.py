"""DistilTask: a small CNN on raw frames (`model.StudentCNN`) reproduces the frozen AlignTask's fused
features (cosine + smooth L1, as Theia distils vision encoders) at the K points of each frame and,
with `loss.dense`, at every cell of its own output grid; optional terms keep the relations between a
frame's points (`frame_relation_loss`), tell them apart (`frame_contrast_loss`) and learn each
teacher encoder's adapted features through a 1x1 head per encoder (RADIO / Theia's per-teacher heads;
training only, not exported). `val/cosine` picks best.ckpt; the export is what `sensorium embed
rgbpc` and the evaluation's `student` load (`model.load_student`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sensorium.config import as_config, to_plain
from sensorium.data.image_grid import GridTransform
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError
from sensorium.layers.sampling import sample_points
from sensorium.recipes.rgbpc.datamodule import RgbpcDataSpec
from sensorium.recipes.rgbpc.encoders import (
    VIEW_TARGETS,
    ShapePretraining,
    pretrain_on_views,
    rendered_views,
    view_loss,
)
from sensorium.recipes.rgbpc.model import StudentCNN, StudentConfig
from sensorium.recipes.rgbpc.task import check_data_matches, load_align_net

log = logging.getLogger(__name__)


@dataclass
class DistilLossConfig:
    cosine_weight: float = 1.0
    l1_weight: float = 1.0
    beta: float = 0.5
    """Smooth-L1 transition, in units of the targets (unit-RMS features: each dimension ~1)."""
    dense: bool = False
    """Also distil at the centre of every cell of the student's output grid (the teacher's fused
    features sampled there), beside the K points: a whole frame's supervision per image read."""
    relation_weight: float = 0.0
    """Weight of `frame_relation_loss` over each frame's points (and cells): the student's cosine
    similarities between them against the teacher's."""
    contrast_weight: float = 0.0
    """Weight of `frame_contrast_loss`: each point's student feature must pick its own teacher
    feature among the frame's."""
    contrast_temperature: float = 0.1
    point_weight: float = 0.0
    """Weight of the aligned model's other tower as a target (cosine + smooth L1 at the K points): its
    point embedding z_p = point projector(pc_feat), the space the fused RGB features were aligned
    to. Training reads the point features (as the alignment did); the student still sees frames
    only (the design note's route 2 distils RGB from the point-cloud teacher)."""
    encoder_weight: float = 0.0
    """Weight of per-encoder distillation: a 1x1 head per teacher encoder on the student's backbone
    learns that encoder's adapted features (cosine + smooth L1)."""


def frame_relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean |S_student - S_teacher| over the (B, N, N) cosine-similarity matrices of each frame's N
    features (B, N, D): which points look alike and which differ, whatever the features' scale (a
    relational distillation term, Park et al. 2019). A head that must tell the target from the rest of
    a frame reads exactly these differences; a per-point cosine averaged over mostly-table points
    does not weigh them."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    return (s @ s.transpose(1, 2) - t @ t.transpose(1, 2)).abs().mean()


def frame_contrast_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE within each frame: point i's student feature against the teacher features of the
    frame's N points (B, N, D), its own the positive; the mean cross-entropy over B x N queries."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    logits = s @ t.transpose(1, 2) / temperature  # (B, N, N)
    labels = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def student_cells(student: StudentCNN, image_size: tuple[int, int], transforms: dict[str, GridTransform]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's output cells on frames of `image_size` that every encoder saw (their centres inside
    each encoder's crop): their positions on the student's own grid (L, 2), integers, and on each
    encoder's grid {encoder: (L, 2)} (`GridTransform.to_grid` of the cells' centre pixels)."""
    uv = student.cell_uv(*image_size).double().numpy()  # (L0, 2)
    grids = {e: t.to_grid(uv) for e, t in transforms.items()}
    seen = torch.from_numpy(np.logical_and.reduce([transforms[e].on_grid(g) for e, g in grids.items()]))
    own = student.to_grid(torch.from_numpy(uv)).float()[seen]
    return own, {e: torch.from_numpy(g).float()[seen] for e, g in grids.items()}


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    """Unit length x sqrt(D): about 1 per dimension."""
    return F.normalize(x.float(), dim=-1) * math.sqrt(x.shape[-1])


def _cosine_l1(predicted: torch.Tensor, target: torch.Tensor, cosine_weight: float, l1_weight: float,
               beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    cosine = F.cosine_similarity(predicted, target, dim=-1).mean()
    return cosine_weight * (1 - cosine), l1_weight * F.smooth_l1_loss(predicted, target, beta=beta)


@dataclass
class StudentPretraining:
    """The student's backbone pretrained as `shape8` is (`encoders.pretrain_on_views`: each 8 x 8 cell's
    depth and surface-part shares on views rendered from their own stream, never an episode) before
    distillation starts: the small student's stand-in for an ImageNet-pretrained initialisation."""

    views: int = 0
    """Rendered views (0: no pretraining, the student starts from random weights)."""
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    bf16: bool = False
    """Autocast the pretraining steps to bfloat16 (`ShapePretraining.bf16`)."""
    keep_weight: float = 0.0
    """Weight of the same objective kept during distillation, read from the student's output features
    by a 1x1 head (training only): `keep_batch` rendered views per step beside the frames."""
    keep_batch: int = 16


class DistilTask(SensoriumTask):
    recipe = "rgbpc"
    monitor = "val/cosine"
    monitor_mode = "max"
    data_spec_type = RgbpcDataSpec

    def __init__(self, teacher: str, student: StudentConfig | dict | None = None,
                 loss: DistilLossConfig | dict | None = None, optim: OptimConfig | dict | None = None,
                 pretraining: StudentPretraining | dict | None = None):
        """teacher: an AlignTask checkpoint (its fused RGB features at the points are the targets)."""
        super().__init__(optim)
        self.student_config = as_config(StudentConfig, student)
        self.loss_config = as_config(DistilLossConfig, loss)
        self.pretraining = as_config(StudentPretraining, pretraining)
        self.teacher_path = str(teacher)
        self.save_config(teacher=self.teacher_path, student=self.student_config, loss=self.loss_config,
                         optim=self.optim, pretraining=self.pretraining)
        self.teacher = load_align_net(teacher).eval().requires_grad_(False)
        if self.student_config.dim != self.teacher.config.dim:
            raise ConfigError("model.init_args.student.dim", f"is {self.student_config.dim}, the teacher's aligned "
                                                             f"space has {self.teacher.config.dim}")
        self.net = StudentCNN(self.student_config)
        dim = self.student_config.dim
        self.encoder_heads = (nn.ModuleDict({e: nn.Conv2d(self.net.channels, dim, 1) for e in self.teacher.encoders})
                              if self.loss_config.encoder_weight > 0 else None)
        self.transforms: dict[str, GridTransform] = {}
        self._pretrained = False
        self._views: tuple[torch.Tensor, ...] | None = None  # (frames, depth cells, part cells), not saved
        if self.pretraining.keep_weight > 0:
            if self.pretraining.views <= 0:
                raise ConfigError("model.init_args.pretraining.keep_weight", "needs pretraining.views > 0")
            self.view_head = nn.Conv2d(dim, VIEW_TARGETS, 1)
        self._cells: dict[tuple[int, int], tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        self._parts: list[dict[str, torch.Tensor]] = []

    def configure_data(self, spec: RgbpcDataSpec) -> None:
        check_data_matches(self.teacher.config, spec)
        if not spec.images:
            raise ConfigError("data.init_args.images", "must be true for distillation (the student reads frames)")
        self.transforms = {e: GridTransform.from_dict(spec.transforms[e]) for e in self.teacher.encoders}
        if self.pretraining.views > 0 and not self._pretrained:
            self.pretrain(tuple(next(iter(self.transforms.values())).image_size))

    def pretrain(self, image_size: tuple[int, int]) -> None:
        """The student's weights from `StudentPretraining` on views of the data's frame size (a resumed
        fit then restores its checkpoint's weights over them)."""
        if self.net.stride != 8:
            raise ConfigError("model.init_args.pretraining", f"predicts 8 x 8 cells; the student's stride is "
                                                             f"{self.net.stride}")
        cfg = self.pretraining
        settings = ShapePretraining(views=cfg.views, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                    bf16=cfg.bf16)
        started = time.perf_counter()
        views = rendered_views(cfg.views, cfg.seed, image_size)  # rendered once: pretraining and the kept objective
        net = pretrain_on_views(lambda: StudentCNN(self.student_config), lambda n, x: n.backbone(x),
                                self.net.channels, views, cfg.seed, settings)
        self.net.load_state_dict(net.state_dict())
        self._pretrained = True
        if cfg.keep_weight > 0:
            self._views = views
        log.info(f"[rgbpc] student pretrained on {cfg.views} rendered views, {cfg.steps} steps, in "
                 f"{time.perf_counter() - started:.0f} s")

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: never back to training mode
        return self

    def export_module(self):
        return self.net

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K, D) the teacher's fused features, unit length x sqrt(D) (about 1 per dimension)."""
        with torch.no_grad():
            fused = self.teacher.patch_features(batch).fused.float()
        return _unit_rms(fused)

    # --- dense targets ---------------------------------------------------------------------------------
    def cells(self, image_size: tuple[int, int], device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`student_cells` for this frame size, computed once."""
        key = tuple(int(x) for x in image_size)
        if key not in self._cells:
            if not self.transforms:
                raise ConfigError("model.init_args.loss.dense", "needs the packs' grid transforms (a datamodule "
                                                                "that passes its data spec to the task)")
            self._cells[key] = student_cells(self.net, key, self.transforms)
        own, grids = self._cells[key]
        return own.to(device), {e: g.to(device) for e, g in grids.items()}

    def teacher_at(self, batch: dict[str, torch.Tensor], dense: bool):
        """The positions on the student's grid (B, N, 2) where it is taught, and the teacher's fused
        (B, N, D) and per-encoder (B, N, E, D) features there: the K points, then (dense) every cell."""
        positions = self.net.to_grid(batch["uv"].float())  # (B, K, 2)
        if dense:
            B = positions.shape[0]
            own, grids = self.cells(tuple(batch["image"].shape[-2:]), positions.device)
            positions = torch.cat([positions, own.expand(B, -1, -1)], dim=1)
            batch = {**batch, **{f"grid/{e}": torch.cat([batch[f"grid/{e}"], g.expand(B, -1, -1)], dim=1)
                                 for e, g in grids.items()}}
        with torch.no_grad():
            patches = self.teacher.patch_features(batch)
        return positions, patches.fused.float(), patches.per_encoder.float()

    # --- training -------------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "image" not in batch:
            return {"cosine": sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0}
        cfg = self.loss_config
        positions, fused, per_encoder = self.teacher_at(batch, cfg.dense)
        features = self.net.backbone(batch["image"])  # (B, C, Hs, Ws)
        predicted = sample_points(self.net.head(features), positions).float()  # (B, N, D)
        target = _unit_rms(fused)
        cosine, smooth_l1 = _cosine_l1(predicted, target, cfg.cosine_weight, cfg.l1_weight, cfg.beta)
        terms = {"cosine": cosine, "smooth_l1": smooth_l1}
        if self._views is not None:
            frames, depth_cells, part_cells = self._views
            idx = torch.randint(len(frames), (self.pretraining.keep_batch,))
            out = self.view_head(self.net(frames[idx].to(self.device)))
            terms["views"] = self.pretraining.keep_weight * view_loss(out.float(), depth_cells[idx].to(self.device),
                                                                      part_cells[idx].to(self.device))
        if cfg.point_weight > 0:
            with torch.no_grad():
                points = _unit_rms(self.teacher.point_features(batch))  # (B, K, D)
            c, l1 = _cosine_l1(predicted[:, :points.shape[1]], points, cfg.cosine_weight, cfg.l1_weight, cfg.beta)
            terms["point"] = cfg.point_weight * (c + l1)
        if cfg.relation_weight > 0:
            terms["relation"] = cfg.relation_weight * frame_relation_loss(predicted, target)
        if cfg.contrast_weight > 0:
            terms["contrast"] = cfg.contrast_weight * frame_contrast_loss(predicted, target, cfg.contrast_temperature)
        if self.encoder_heads is not None:
            for i, e in enumerate(self.teacher.encoders):
                own = sample_points(self.encoder_heads[e](features), positions).float()
                c, l1 = _cosine_l1(own, _unit_rms(per_encoder[:, :, i]), cfg.cosine_weight, cfg.l1_weight, cfg.beta)
                terms[f"encoder_{e}"] = cfg.encoder_weight * (c + l1)
        return terms

    def on_validation_epoch_start(self) -> None:
        self._parts = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "image" not in batch:
            return
        predicted = self.net.at_points(batch["image"], batch["uv"]).float()
        target = self.targets(batch)
        with torch.no_grad():
            points = self.teacher.point_features(batch).float()
        self._parts.append({"cosine": F.cosine_similarity(predicted, target, dim=-1).flatten(),
                            "point_cosine": F.cosine_similarity(predicted, points, dim=-1).flatten(),
                            "relation": frame_relation_loss(predicted, target)[None]})

    def on_validation_epoch_end(self) -> None:
        result = self.gather_eval(self._parts)
        self._parts = []
        if result:
            self.log("val/cosine", float(result["cosine"].mean()), prog_bar=True, sync_dist=True)
            self.log("val/relation", float(result["relation"].mean()), sync_dist=True)
            self.log("val/point_cosine", float(result["point_cosine"].mean()), sync_dist=True)

    def export_config(self) -> dict:
        return {**super().export_config(), "stride": self.net.stride, "dim": self.student_config.dim,
                "input": "uint8 RGB frames (B, 3, H, W), H and W multiples of the stride",
                "teacher": self.teacher_path, "teacher_net": to_plain(self.teacher.config)}

