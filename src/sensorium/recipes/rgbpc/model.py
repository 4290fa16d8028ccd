"""The rgbpc networks: the alignment net (per-encoder adapters, optional temporal gated pooling,
fusion, point projector, set-level heads), the deployable RGB-only student (and `load_student`,
which reads one back from its export without Lightning), and the action head of the evaluation's
probe. Pure functions of tensors (batches are the datamodule's dicts).

    per encoder e:  z_e = sample(ConvAdapter_e(map_e), grid_e(uv))   (B, [T,] K, D) bilinear at each point
                    (or the note's z_e = Adapter_e(sample(map_e, grid_e(uv))), a per-point MLP)
                    z_e = TemporalGatedPooling_e(z_e) or anchor   (B, K, D)
    fusion:         z_v = Fusion(z_1..z_E)                        (B, K, D)  weighted / gate / concat
    points:         z_p = PointProjector(pc_feat)                 (B, K, D)  aligned to z_v by InfoNCE
    set level:      s_v = SetHead(Fusion_set(mean_k adapted map_e[random K cells]))     (B, D)
                    s_p = SetTeacher(mean_k pc_feat)                                      (B, D)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sensorium.config import as_config
from sensorium.engine.checkpoint import load_export, read_export_config
from sensorium.errors import ConfigError
from sensorium.layers.conv import ConvStem, with_coordinates
from sensorium.layers.mlp import Mlp
from sensorium.layers.sampling import sample_points
from sensorium.models.encoders import IMAGENET_MEAN, IMAGENET_STD
from sensorium.models.fusion import FeatureFusion, FeatureFusionOutput, FusionMode

AdapterKind = Literal["conv", "mlp"]


@dataclass
class AlignNetConfig:
    """The alignment net (`model.init_args.net` in YAML)."""

    encoders: dict[str, int] = field(default_factory=lambda: {"shape8": 96, "vit16": 64})
    """Encoder name -> feature width C of its packs, in fusion order (checked against the data)."""
    dim: int = 64
    """D: width of the aligned space."""
    adapter: AdapterKind = "conv"
    """conv: two 3x3 convolutions over each encoder's grid before the points are sampled (each point's
    feature then sees its 5x5-cell neighbourhood: the object around it); mlp: a per-point MLP of the
    feature sampled at the point (the design note's adapter)."""
    adapter_hidden: int = 128
    coord_channels: bool = False
    """Conv adapters: two channels of each cell's position on the encoder's grid (x, y in [-1, 1])
    beside its features (CoordConv): a convolution cannot tell where in the frame a cell is, and a
    point's place in the frame is half of where it is in the world."""
    fusion: FusionMode = "weighted"
    """weighted: one softmax weight per encoder; gate: per-point softmax gates; concat: linear."""
    temporal: bool = False
    """Gated pooling over the window's T frames at each point's uv, instead of the anchor frame
    alone (needs data.temporal true)."""
    window: int = 8
    """Largest window T (sizes the temporal offset embedding)."""
    pc_dim: int = 32
    """Width of the point features (pc_feat), or 6 for xyzrgb."""
    set_tokens: int = 32
    """Set level: grid cells sampled per encoder and window during training (all cells in evaluation)."""
    set_fusion: FusionMode = "weighted"


# --- blocks -------------------------------------------------------------------------------------------
class Adapter(nn.Module):
    """LayerNorm -> MLP: C-wide features (..., C) into the D-wide aligned space (..., D)."""

    def __init__(self, in_dim: int, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))


class ConvAdapter(nn.Module):
    """A map (N, C, Hf, Wf) -> (N, D, Hf, Wf): per-cell LayerNorm, then 3x3 conv -> GELU -> 3x3 conv, so a
    cell's output sees a 5x5-cell neighbourhood of the encoder's grid; with `coords`, two channels of
    the cell's grid position join the normalised features before the first convolution."""

    def __init__(self, in_dim: int, dim: int, hidden: int, coords: bool = False):
        super().__init__()
        self.coords = coords
        self.norm = nn.LayerNorm(in_dim)
        self.conv1 = nn.Conv2d(in_dim + 2 * coords, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = self.norm(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, C, Hf, Wf), normalised per cell
        if self.coords:
            x = with_coordinates(x)  # (N, C + 2, Hf, Wf)
        return self.conv2(F.gelu(self.conv1(x)))


class TemporalGatedPooling(nn.Module):
    """(B, T, K, D) features of the T frames of a window at the same uv -> (B, K, D): a softmax over T
    of a score of each frame's feature plus an embedding of its offset to the anchor frame. With a
    moving camera a fixed uv sees other scene points in other frames: the offsets let the gate learn
    how far from the anchor a frame still helps."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.window = window
        self.offset = nn.Embedding(2 * window - 1, dim)
        self.score = nn.Linear(dim, 1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Zero scores: pooling starts as the plain mean over the window and learns its gates.
        nn.init.normal_(self.offset.weight, std=0.02)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor, anchor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = x.shape[:2]
        offsets = torch.arange(T, device=x.device)[None, :] - anchor[:, None] + self.window - 1  # (B, T)
        scores = self.score(x + self.offset(offsets)[:, :, None, :]).squeeze(-1)  # (B, T, K)
        gates = torch.softmax(scores.float(), dim=1).to(x.dtype)  # (B, T, K), sums to 1 over T
        return torch.einsum("btk,btkd->bkd", gates, x), gates


@dataclass
class PatchFeatures:
    fused: torch.Tensor  # (B, K, D), before L2 normalisation
    weights: torch.Tensor | None  # (B, K, E) fusion weights (None for concat)
    per_encoder: torch.Tensor  # (B, K, E, D) adapted features


# --- the alignment net ----------------------------------------------------------------------------------
class AlignNet(nn.Module):
    def __init__(self, config: AlignNetConfig):
        super().__init__()
        self.config = config
        self.encoders = tuple(config.encoders)
        if not self.encoders:
            raise ConfigError("model.net.encoders", "needs at least one encoder")
        D = config.dim
        if config.adapter not in ("conv", "mlp"):
            raise ConfigError("model.net.adapter", f"must be conv or mlp, got {config.adapter!r}")
        if config.coord_channels and config.adapter != "conv":
            raise ConfigError("model.net.coord_channels", "needs net.adapter: conv (a per-point MLP sees no grid)")
        self.adapters = nn.ModuleDict({
            e: ConvAdapter(c, D, config.adapter_hidden, config.coord_channels) if config.adapter == "conv"
            else Adapter(c, D, config.adapter_hidden) for e, c in config.encoders.items()})
        self.temporal = (nn.ModuleDict({e: TemporalGatedPooling(D, config.window) for e in self.encoders})
                         if config.temporal else None)
        self.fusion = FeatureFusion(len(self.encoders), D, config.fusion)
        self.point_proj = Adapter(config.pc_dim, D, 2 * D)
        self.set_fusion = FeatureFusion(len(self.encoders), D, config.set_fusion)
        self.set_head = Mlp(D, 2 * D, D)
        self.set_teacher = Adapter(config.pc_dim, D, 2 * D)

    # --- point level ---
    def encoder_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K, E, D): each encoder's map adapted and sampled at the points (conv adapters adapt the
        map first, mlp adapters the sampled features), then pooled over the window's frames."""
        out = []
        for e in self.encoders:
            maps = self._maps(batch, e)  # (B, T, C, Hf, Wf)
            B, T = maps.shape[:2]
            grid = batch[f"grid/{e}"].repeat_interleave(T, dim=0)  # (B*T, K, 2)
            if self.config.adapter == "conv":
                z = sample_points(self.adapters[e](maps.flatten(0, 1)), grid)  # (B*T, K, D)
            else:
                z = self.adapters[e](sample_points(maps.flatten(0, 1), grid))  # (B*T, K, D)
            z = z.view(B, T, grid.shape[1], -1)  # (B, T, K, D)
            if self.temporal is not None:
                z, _ = self.temporal[e](z, batch["anchor"])  # (B, K, D)
            else:
                z = z[:, 0]
            out.append(z)
        return torch.stack(out, dim=2)  # (B, K, E, D)

    def _maps(self, batch: dict[str, torch.Tensor], encoder: str, anchor_only: bool = False) -> torch.Tensor:
        """The encoder's frames (B, T, C, Hf, Wf) float: the whole window with temporal pooling (or
        `anchor_only` False), else the anchor frame alone (T = 1)."""
        maps = batch[f"feat/{encoder}"]  # (B, T, Hf, Wf, C) float16
        B, T = maps.shape[:2]
        if (self.temporal is None or anchor_only) and T != 1:
            maps = maps[torch.arange(B, device=maps.device), batch["anchor"]][:, None]  # (B, 1, Hf, Wf, C)
        return maps.permute(0, 1, 4, 2, 3).float()

    def patch_features(self, batch: dict[str, torch.Tensor]) -> PatchFeatures:
        per_encoder = self.encoder_features(batch)
        fused: FeatureFusionOutput = self.fusion(per_encoder)
        return PatchFeatures(fused.fused, fused.weights, per_encoder)

    def point_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.point_proj(batch["pc_feat"])  # (B, K, D)

    # --- set level ---
    def set_features(self, batch: dict[str, torch.Tensor], tokens: int | None = None) -> torch.Tensor:
        """(B, D) student set embedding from `tokens` random cells of each encoder's adapted anchor map
        (all cells when None)."""
        pooled = []
        for e in self.encoders:
            maps = self._maps(batch, e, anchor_only=True)[:, 0]  # (B, C, Hf, Wf)
            if self.config.adapter == "conv":
                cells = self.adapters[e](maps).flatten(2).transpose(1, 2)  # (B, L, D)
            else:
                cells = maps.flatten(2).transpose(1, 2)  # (B, L, C)
            B, L = cells.shape[:2]
            if tokens is not None and tokens < L:
                pick = torch.rand(B, L, device=cells.device).argsort(dim=1)[:, :tokens]  # (B, k)
                cells = cells.gather(1, pick[:, :, None].expand(-1, -1, cells.shape[2]))  # (B, k, .)
            if self.config.adapter == "mlp":
                cells = self.adapters[e](cells)  # (B, k, D)
            pooled.append(cells.mean(dim=1))  # (B, D)
        fused = self.set_fusion(torch.stack(pooled, dim=1)).fused  # (B, D)
        return self.set_head(fused)

    def set_teacher_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.set_teacher(batch["pc_feat"].mean(dim=1))  # (B, D)


def same_patch_mask(frame_id: torch.Tensor, uv: torch.Tensor, frame_id_all: torch.Tensor, uv_all: torch.Tensor,
                    patch_px: float) -> torch.Tensor:
    """(N, N_all) bool: point i (local) and point j (global) are in the same frame and closer than one
    patch (`patch_px` pixels, per axis): their patch features are near-identical, so they must not be
    each other's negatives. frame_id (N,), uv (N, 2); *_all the same for the whole global batch."""
    same_frame = frame_id[:, None] == frame_id_all[None, :]  # (N, N_all)
    close = (uv[:, None, :] - uv_all[None, :, :]).abs().amax(dim=-1) < patch_px  # (N, N_all)
    return same_frame & close


# --- the RGB-only student -----------------------------------------------------------------------------
StudentStem = Literal["conv", "patch"]


@dataclass
class StudentConfig:
    widths: tuple[int, ...] = (24, 48, 96)
    """Channels per stage (each stage halves the resolution after the first)."""
    dim: int = 64
    """Output width: the aligned space's D."""
    stem: StudentStem = "conv"
    """conv: `ConvStem` stages (a stride-2 3x3 convolution and a 3x3 convolution each, the first at
    half resolution: stride 2^len(widths)); patch: one `patch` x `patch` convolution of stride `patch`
    (ConvNeXt's patchify stem) to widths[0] and depths[0] 3x3 convolutions there, then per later
    width a stride-2 3x3 convolution and depths[i] - 1 more (stride patch x 2^(len(widths) - 1)):
    nothing runs at full or half resolution, which is where the conv stem spends most of its time."""
    patch: int = 4
    depths: tuple[int, ...] = (1, 2)
    """patch stem: 3x3 convolutions per stage (the first stage's after the patchify convolution; a
    later stage's count includes its strided convolution)."""


def _conv_norm_act(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    padding = (kernel - 1) // 2 if kernel % 2 else 0
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), _group_norm(cout), nn.GELU()]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)  # as ConvStem's


class PatchStem(nn.Module):
    """(B, C_in, H, W) -> (B, widths[-1], H / s, W / s), s = patch x 2^(len(widths) - 1): a stride-`patch`
    patchify convolution, depths[0] 3x3 convolutions, then for each later width a stride-2 3x3
    convolution and depths[i] - 1 more (each convolution followed by GroupNorm and GELU)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...], patch: int):
        super().__init__()
        if len(depths) != len(widths) or depths[0] < 0 or min(depths[1:], default=1) < 1 or patch < 1:
            raise ConfigError("model.init_args.student.depths", f"needs one count per width ({len(widths)}), the "
                                                                f"first >= 0 and the others >= 1; got {list(depths)}")
        layers = _conv_norm_act(in_channels, widths[0], patch, patch)
        for _ in range(depths[0]):
            layers += _conv_norm_act(widths[0], widths[0])
        for previous, width, depth in zip(widths[:-1], widths[1:], depths[1:]):
            layers += _conv_norm_act(previous, width, stride=2)
            for _ in range(depth - 1):
                layers += _conv_norm_act(width, width)
        self.layers = nn.Sequential(*layers)
        self.stride = patch * 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class StudentCNN(nn.Module):
    """Raw frames (B, 3, H, W) uint8 -> (B, D, H / s, W / s) features, trained to reproduce the aligned
    fused features (at the points or at every cell), so inference needs neither point clouds nor the
    large encoders.

    The frame is fed with two more channels, each pixel's normalised column and row (CoordConv, Liu
    et al. 2018): the aligned features carry where in the image a point is (a ViT's positions), which
    a translation-equivariant CNN cannot reproduce on its own (val cosine to the teacher 0.72 without
    them in the demo). `backbone` gives the map before the 1x1 head (the distillation's per-encoder
    heads read it)."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        widths = tuple(config.widths)
        if config.stem == "conv":
            self.stem = ConvStem(3 + 2, widths, first_stride=2)
            self.stride = 2 ** len(widths)
        elif config.stem == "patch":
            self.stem = PatchStem(3 + 2, widths, tuple(config.depths), config.patch)
            self.stride = self.stem.stride
        else:
            raise ConfigError("model.init_args.student.stem", f"must be conv or patch, got {config.stem!r}")
        self.channels = widths[-1]
        self.head = nn.Conv2d(widths[-1], config.dim, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def backbone(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (or float in [0, 1]) -> (B, widths[-1], H / s, W / s)."""
        H, W = images.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ConfigError("student", f"frames of {H}x{W} are not a whole number of {self.stride}-pixel cells")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return self.stem(with_coordinates((x - self.mean) / self.std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))  # (B, D, H/s, W/s)

    def at_points(self, images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """(B, K, D) features at pixels uv (B, K, 2) of the original frames."""
        return sample_points(self(images), self.to_grid(uv))

    def to_grid(self, uv: torch.Tensor) -> torch.Tensor:
        """Pixels uv (..., 2) of the original frames -> the output grid's (x, y), cell centres at
        integers: `GridTransform.identity(image_size, stride).to_grid`, as every pack's map."""
        return (uv + 0.5) / self.stride - 0.5

    def cell_uv(self, height: int, width: int, device=None) -> torch.Tensor:
        """(Hs * Ws, 2) the pixel uv of every output cell's centre, row-major (the inverse of to_grid)."""
        Hs, Ws = height // self.stride, width // self.stride
        rows, cols = torch.meshgrid(torch.arange(Hs, device=device, dtype=torch.float32),
                                    torch.arange(Ws, device=device, dtype=torch.float32), indexing="ij")
        return (torch.stack([cols, rows], dim=-1).reshape(-1, 2) + 0.5) * self.stride - 0.5


def load_student(export_dir: str | Path) -> StudentCNN:
    """A distilled student from its export directory (model.safetensors + config.json)."""
    config = read_export_config(export_dir, "DistilTask")
    return load_export(StudentCNN(as_config(StudentConfig, config["hparams"]["student"])), export_dir)


# --- the evaluation's action head ---------------------------------------------------------------------
class ActionHead(nn.Module):
    """Per-point features (B, K, F) + task (B,) -> action (B, A), PointNet style (Qi et al. 2017): a
    per-point MLP of the point's features plus an embedding of the task (which object is the
    target), max-pooled over the points, then an MLP. The same architecture for every feature
    source. Max pooling generalised from few training scenes where softmax-attention pooling
    memorised them (normalised error 0.40 vs ~1.0 on teacher features, 48 training episodes)."""

    def __init__(self, in_dim: int, num_tasks: int, action_dim: int, hidden: int = 64):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.task = nn.Embedding(num_tasks, hidden)
        self.point_mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.out = Mlp(hidden, hidden, action_dim)
        nn.init.normal_(self.task.weight, std=1.0)  # as large as the features: tasks start well apart

    def forward(self, features: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = self.point_mlp(self.inp(features) + self.task(task)[:, None, :])  # (B, K, H)
        return self.out(h.amax(dim=1))  # (B, A)
