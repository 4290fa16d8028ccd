"""DistilTask: a small CNN on raw frames (`model.StudentCNN`) reproduces the frozen AlignTask's fused
features at the points (cosine + smooth L1, as Theia distils vision encoders); `val/cosine` picks
best.ckpt; its export is what `sensorium embed rgbpc` and the evaluation's `student` load
(`model.load_student`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sensorium.config import as_config, to_plain
from sensorium.engine.optim import OptimConfig
from sensorium.engine.task import SensoriumTask
from sensorium.errors import ConfigError
from sensorium.recipes.rgbpc.datamodule import RgbpcDataSpec
from sensorium.recipes.rgbpc.model import StudentCNN, StudentConfig
from sensorium.recipes.rgbpc.task import check_data_matches, load_align_net


@dataclass
class DistilLossConfig:
    cosine_weight: float = 1.0
    l1_weight: float = 1.0
    beta: float = 0.5
    """Smooth-L1 transition, in units of the targets (unit-RMS features: each dimension ~1)."""


class DistilTask(SensoriumTask):
    recipe = "rgbpc"
    monitor = "val/cosine"
    monitor_mode = "max"
    data_spec_type = RgbpcDataSpec

    def __init__(self, teacher: str, student: StudentConfig | dict | None = None,
                 loss: DistilLossConfig | dict | None = None, optim: OptimConfig | dict | None = None):
        """teacher: an AlignTask checkpoint (its fused RGB features at the points are the targets)."""
        super().__init__(optim)
        self.student_config = as_config(StudentConfig, student)
        self.loss_config = as_config(DistilLossConfig, loss)
        self.teacher_path = str(teacher)
        self.save_config(teacher=self.teacher_path, student=self.student_config, loss=self.loss_config,
                         optim=self.optim)
        self.teacher = load_align_net(teacher).eval().requires_grad_(False)
        if self.student_config.dim != self.teacher.config.dim:
            raise ConfigError("model.init_args.student.dim", f"is {self.student_config.dim}, the teacher's aligned "
                                                             f"space has {self.teacher.config.dim}")
        self.net = StudentCNN(self.student_config)
        self._parts: list[dict[str, torch.Tensor]] = []

    def configure_data(self, spec: RgbpcDataSpec) -> None:
        check_data_matches(self.teacher.config, spec)
        if not spec.images:
            raise ConfigError("data.init_args.images", "must be true for distillation (the student reads frames)")

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
        return F.normalize(fused, dim=-1) * math.sqrt(fused.shape[-1])

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "image" not in batch:
            return {"cosine": sum(p.sum() for p in self.net.parameters()) * 0.0}
        cfg = self.loss_config
        target = self.targets(batch)
        predicted = self.net.at_points(batch["image"], batch["uv"]).float()  # (B, K, D)
        cosine = F.cosine_similarity(predicted, target, dim=-1).mean()
        return {"cosine": cfg.cosine_weight * (1 - cosine),
                "smooth_l1": cfg.l1_weight * F.smooth_l1_loss(predicted, target, beta=cfg.beta)}

    def on_validation_epoch_start(self) -> None:
        self._parts = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "image" not in batch:
            return
        predicted = self.net.at_points(batch["image"], batch["uv"]).float()
        self._parts.append({"cosine": F.cosine_similarity(predicted, self.targets(batch), dim=-1).flatten()})

    def on_validation_epoch_end(self) -> None:
        result = self.gather_eval(self._parts)
        self._parts = []
        if result:
            self.log("val/cosine", float(result["cosine"].mean()), prog_bar=True, sync_dist=True)

    def export_config(self) -> dict:
        return {**super().export_config(), "stride": self.net.stride, "dim": self.student_config.dim,
                "input": "uint8 RGB frames (B, 3, H, W), H and W multiples of the stride",
                "teacher": self.teacher_path, "teacher_net": to_plain(self.teacher.config)}

