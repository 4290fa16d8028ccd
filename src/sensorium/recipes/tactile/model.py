"""The tactile recipe's network: TactileMAE, a masked autoencoder for tactile images and 4-frame
tactile sequences (MAE, He et al. 2022; the static + dynamic tasks of AnyTouch stage 1, Feng et al.
ICLR 2025), assembled from the generic MAE pieces of `sensorium.models.mae` (masking, the ViT and
CLIP encoders, MAE's init) and `sensorium.layers` blocks.

Static task, one frame (B, 3, H, W):

    patches + 2-D positions -> keep 25% (per-sample shuffle) -> [CLS, sensor tokens, visible] -> encoder
    -> decoder over [visible, mask tokens] in grid order + positions -> pixels of every patch

Dynamic task, four frames (B, 4, 3, H, W):

    patches of frames 1-3 + 2-D positions + temporal embedding -> keep 25% -> encoder
    -> decoder over [frames 1-3: visible + mask tokens, frame 4: one query per patch] + positions + time
    -> masked patches of frames 1-3 (reconstruction) and ALL patches of frame 4 (prediction)

Frame 4 as a change of frame 3 (`future_residual`, the default): each frame-4 query starts as the
decoder token of frame 3 at the same position (what the encoder saw there; a mask token where it
was masked) instead of a bare mask token, and a head of its own, zero-initialised, outputs a change
that is added to frame 3's patches in the loss's target space (`DynamicOutput.predict_future`).
Training then starts exactly at the "copy frame 3" predictor and learns the motion; with bare
queries and an absolute prediction (AnyTouch) a small model stays behind copying for a long time,
since it must rebuild every fixed detail (markers, gel texture) of the frame before it can move
anything.

The model is a pure function of its inputs: it returns predictions, their targets in patch space
(`patchify` of the input, before any norm_pix) and masks; `sensorium.losses.mae_loss` scores them.

Two encoders run the same stages: a small ViT trained from scratch (`ViTBackbone`), or the vision
tower of a local CLIP checkpoint (`CLIPBackbone`; paper: CLIP ViT-L/14 at 224 px).

Token layout: encoder and decoder sequences are [CLS, sensor tokens (optional), patch tokens]. Patch
tokens of several frames are time-major: token f * L + l is patch l of frame f.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sensorium.layers.attention import TransformerBlock
from sensorium.layers.patch_embed import patchify
from sensorium.layers.pos_embed import sincos_2d
from sensorium.losses.masked import normalize_patches
from sensorium.models.mae import CLIPBackbone, ViTBackbone, init_linear_and_norm, num_visible, random_masking

EPS = 1e-6  # mae_loss's default: the same per-patch normalisation as the training target


# --- config ----------------------------------------------------------------------------------------
@dataclass
class TactileModelConfig:
    """TactileMAE's arguments (the YAML's `model.init_args.model`); defaults: the demo size."""

    img_size: int = 64
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    decoder_embed_dim: int = 96
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    dynamic_mask_ratio: float | None = None
    """Mask ratio of frames 1-3 in the dynamic task; None: `mask_ratio` (AnyTouch)."""
    sensor_tokens: int = 1
    tube_mask: bool = True
    future_residual: bool = True
    """Predict frame 4 as a change of frame 3 (False: AnyTouch's absolute prediction)."""
    motion_cue: bool = False
    """Add each position's pixel changes between the context frames to its frame-4 query (see
    TactileMAE); needs future_residual."""
    pretrained: str | None = None
    """Local CLIP vision checkpoint directory for the encoder (paper); None: a ViT from scratch."""


# --- helpers -----------------------------------------------------------------------------------------
def target_space(patches: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Patches (..., L, P) -> the loss's target space (per-patch standardised under norm_pix)."""
    return normalize_patches(patches.float(), EPS) if norm_pix else patches.float()


def contact_space(patches: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The static task's contact target: patches (B, L, P) of frame t minus those of its recording's
    reference frame, standardised over each image (all its patches and pixels at once). The loss
    is then on norm_pix's scale, which the loss balancer compares with the dynamic task's, while a
    patch where nothing touches stays near zero: a per-patch standardisation would blow its noise
    up to unit variance."""
    change = patches.float() - reference.float()
    return normalize_patches(change.flatten(1), EPS).view_as(change)


def from_contact_space(pred: torch.Tensor, patches: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Undo `contact_space` for `pred` (B, L, P) with the true change's image statistics: the
    reference frame's patches plus the predicted change, (B, L, P)."""
    change = (patches.float() - reference.float()).flatten(1)  # (B, L*P)
    mean, var = change.mean(1, keepdim=True), change.var(1, keepdim=True)
    return reference.float() + (pred.float().flatten(1) * (var + EPS).sqrt() + mean).view_as(pred)


def static_norm_pix_or(norm_pix: bool, static_norm_pix: bool | None) -> bool:
    """The static task's target space: its own setting, or norm_pix where it has none."""
    return norm_pix if static_norm_pix is None else static_norm_pix


# --- outputs ---------------------------------------------------------------------------------------
@dataclass
class EncoderOutput:
    latent: torch.Tensor  # (B, prefix + K, D): [CLS, sensor tokens, visible tokens]
    mask: torch.Tensor  # (B, N): 1 = masked
    ids_restore: torch.Tensor  # (B, N)
    num_prefix: int  # CLS + sensor tokens at the front of `latent`


@dataclass
class StaticOutput:
    """Static task: `mae_loss(pred, target, mask)` scores the masked patches of the frame."""

    pred: torch.Tensor  # (B, L, P) predicted pixels of every patch
    target: torch.Tensor  # (B, L, P) patchify(input frame); the loss applies norm_pix itself
    mask: torch.Tensor  # (B, L) 1 = masked
    contact_pred: torch.Tensor | None = None
    """(B, L, P) the predicted contact in `contact_space` (a model with `contact_head`)."""


@dataclass
class DynamicOutput:
    """Dynamic task. Frames 1-3 are time-major: index f * L + l is patch l of frame f.

    loss_recon = mae_loss(recon_pred, recon_target, recon_mask)                  (masked patches of frames 1-3)
    loss_pred  = mae_loss(predict_future(norm_pix), future_target, future_mask)  (all patches of frame 4)
    """

    recon_pred: torch.Tensor  # (B, 3L, P)
    recon_target: torch.Tensor  # (B, 3L, P)
    recon_mask: torch.Tensor  # (B, 3L) 1 = masked
    future_pred: torch.Tensor  # (B, L, P) frame 4, or its change from `future_base` when that is set
    future_target: torch.Tensor  # (B, L, P)
    future_mask: torch.Tensor  # (B, L) all ones: every patch of frame 4 is predicted
    future_base: torch.Tensor | None = None
    """(B, L, P) patchify(frame 3) when `future_pred` is a change: see `predict_future`."""

    def predict_future(self, norm_pix: bool) -> torch.Tensor:
        """The model's frame-T prediction in the loss's target space, (B, L, P). With a residual model
        the decoder's output is a change added to frame T-1 in that space, so a zero change is exactly
        the "copy frame T-1" predictor."""
        if self.future_base is None:
            return self.future_pred.float()
        return target_space(self.future_base, norm_pix) + self.future_pred.float()


# --- model -----------------------------------------------------------------------------------------
class TactileMAE(nn.Module):
    """ViT encoder + light MAE decoder with the static and dynamic tactile tasks.

    Args:
        img_size, patch_size: input resolution and patch side (CLIP: must match the checkpoint).
        in_chans: image channels.
        embed_dim, depth, num_heads: from-scratch encoder; ignored when `pretrained` is set (the
            checkpoint's config decides).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder (MAE: narrow and shallow;
            it only serves pretraining).
        mlp_ratio: MLP width of every block / width.
        mask_ratio: fraction of patch tokens hidden from the encoder (MAE: 0.75).
        dynamic_mask_ratio: the dynamic task's ratio over frames 1..T-1 when it should differ
            (None: `mask_ratio`, as AnyTouch). Under a 0.75 tube mask three quarters of frame T's
            positions were never seen in any context frame, so most of the frame-T loss only
            teaches "no change"; a lower ratio trains the motion at more positions.
        num_frames: frames of a dynamic sample; the last is predicted from the others.
        num_sensors: sensor ids 0..num_sensors-1 (`sensorium.recipes.tactile.reader.SENSORS`).
        sensor_tokens: learned tokens per sensor prepended after CLS (AnyTouch: 5); 0 disables.
        tube_mask: dynamic task masks the same patch positions in frames 1-3 (VideoMAE / AnyTouch tube
            masking); with independent masks a patch could be copied from a neighbouring frame.
        future_residual: predict frame T as a change of frame T-1 from queries that start as frame
            T-1's decoder tokens, through a zero-initialised head of its own (see the module
            docstring); False: absolute prediction from mask-token queries through the shared
            head, as AnyTouch does.
        motion_cue: each frame-T query also gets a zero-initialised linear map of its position's
            pixel changes between consecutive context frames (frame 2 - frame 1, frame 3 - frame 2;
            zero where the position was masked): whether and how the gel moved there, which the
            queries otherwise have to work out from the encoder's tokens of separate frames (a
            pressed-in-place contact changes by noise only; a sliding one by its motion).
        contact_head: the static task gets a second pixel head (linear, MAE's init) for frame t's
            contact (frame t minus its reference frame; `StaticOutput.contact_pred`). Frames are
            predicted by `decoder_pred`, shared with the dynamic task's reconstruction; the contact
            is another quantity, which would pull a shared head away from the frames.
        pretrained: local directory of a CLIP checkpoint for the encoder; None trains a ViT from scratch.
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        dynamic_mask_ratio: float | None = None,
        num_frames: int = 4,
        num_sensors: int = 3,
        sensor_tokens: int = 1,
        tube_mask: bool = True,
        future_residual: bool = True,
        motion_cue: bool = False,
        contact_head: bool = False,
        pretrained: str | None = None,
    ):
        super().__init__()
        for name, ratio in (("mask_ratio", mask_ratio), ("dynamic_mask_ratio", dynamic_mask_ratio)):
            if ratio is not None and not 0.0 <= ratio < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {ratio}")
        if num_frames < 2:
            raise ValueError(f"the dynamic task needs at least 2 frames, got num_frames={num_frames}")
        if motion_cue and (not future_residual or num_frames < 3):
            raise ValueError("motion_cue needs future_residual and at least 3 frames (two context frames)")
        if pretrained is None:
            self.encoder = ViTBackbone(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio)
        else:
            self.encoder = CLIPBackbone(pretrained)
            if (self.encoder.img_size, self.encoder.patch_size) != (img_size, patch_size):
                raise ValueError(f"{pretrained}: the checkpoint takes {self.encoder.img_size} px images in "
                                 f"{self.encoder.patch_size} px patches; the config says "
                                 f"{img_size} / {patch_size}")
        dim = self.encoder.dim
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid = self.encoder.grid
        self.num_patches = self.grid[0] * self.grid[1]
        self.mask_ratio, self.num_frames, self.tube_mask = mask_ratio, num_frames, tube_mask
        self.dynamic_mask_ratio = mask_ratio if dynamic_mask_ratio is None else dynamic_mask_ratio
        self.future_residual = future_residual
        self.num_sensors, self.sensor_tokens = num_sensors, sensor_tokens

        # Encoder-side additions (new in both backbones).
        self.sensor_embed = (nn.Parameter(torch.zeros(num_sensors, sensor_tokens, dim))  # (sensors, S, D)
                             if sensor_tokens else None)
        self.temporal_embed = nn.Parameter(torch.zeros(num_frames, dim))  # (T, D)

        # Decoder.
        self.decoder_embed = nn.Linear(dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d(decoder_embed_dim, *self.grid)[None],
                             persistent=False)  # (1, L, Dd)
        self.decoder_temporal_embed = nn.Parameter(torch.zeros(num_frames, decoder_embed_dim))  # (T, Dd)
        self.decoder_blocks = nn.ModuleList(
            [TransformerBlock(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        # Frame T's queries from the context tokens at their position (all T-1 frames: the trajectory),
        # and frame T's own head for the change.
        self.future_query = nn.Linear((num_frames - 1) * decoder_embed_dim, decoder_embed_dim) if future_residual else None
        self.future_pred = (nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
                            if future_residual else None)
        self.motion_cue = (nn.Linear((num_frames - 2) * patch_size * patch_size * in_chans, decoder_embed_dim)
                           if motion_cue else None)

        self.initialize_weights()
        # Built after the shared initialisation, so every other weight keeps the draw it has without
        # this head (the untrained baseline stays the same network).
        self.contact_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_chans) if contact_head else None
        if self.contact_pred is not None:
            self.contact_pred.apply(init_linear_and_norm)

    # --- stages ------------------------------------------------------------------------------------
    def prefix_tokens(self, batch: int, sensor: torch.Tensor | None) -> torch.Tensor:
        """(B, 1 + S, D): CLS, then the sample's sensor tokens (none when `sensor` is None or disabled)."""
        cls = self.encoder.cls_embed().expand(batch, -1, -1)  # (B, 1, D)
        if self.sensor_embed is None or sensor is None:
            return cls
        return torch.cat([cls, self.sensor_embed[sensor].to(cls.dtype)], dim=1)  # (B, 1 + S, D)

    def forward_encoder(self, tokens: torch.Tensor, sensor: torch.Tensor | None,
                        noise: torch.Tensor | None = None, mask_ratio: float | None = None) -> EncoderOutput:
        """Mask `tokens` (B, N, D) (positions already added), encode [prefix, visible].
        `mask_ratio` overrides the model's (e.g. 0.0 to evaluate frame prediction from whole frames)."""
        B, N, _ = tokens.shape
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        visible, mask, ids_restore = random_masking(tokens, num_visible(N, ratio), noise)
        prefix = self.prefix_tokens(B, sensor)  # (B, prefix, D)
        x = torch.cat([prefix, visible], dim=1)  # (B, prefix + K, D)
        return EncoderOutput(self.encoder.forward_tokens(x), mask, ids_restore, prefix.shape[1])

    def forward_decoder(self, encoded: EncoderOutput, pos: torch.Tensor, context_frames: int = 0,
                        query_cue: torch.Tensor | None = None) -> torch.Tensor:
        """Decode every token position: the N encoded ones (visible tokens and mask tokens, back in
        token order) followed by Q extra queries (frame T in the dynamic task). The queries are mask
        tokens, or, with `context_frames` > 0 and `future_residual`, built per position from the N
        tokens seen as `context_frames` time-major frames: frame T-1's token plus a learned mix of
        all context frames' tokens at that position, plus `query_cue` (B, Q, Dd) when given.
        pos: (1, N + Q, Dd) decoder positions. Returns the normalised decoder features (B, N + Q, Dd);
        the prediction heads map them to pixels."""
        x = self.decoder_embed(encoded.latent)  # (B, prefix + K, Dd)
        prefix, visible = x[:, : encoded.num_prefix], x[:, encoded.num_prefix:]  # (B, prefix, Dd), (B, K, Dd)
        B, N = encoded.ids_restore.shape
        num_queries = pos.shape[1] - N
        mask_token = self.mask_token.to(x.dtype)
        hidden = mask_token.expand(B, N - visible.shape[1], -1)  # (B, N - K, Dd)
        tokens = torch.cat([visible, hidden], dim=1)  # (B, N, Dd), shuffled order
        index = encoded.ids_restore[..., None].expand(-1, -1, tokens.shape[2])  # (B, N, Dd)
        tokens = torch.gather(tokens, 1, index)  # (B, N, Dd), token order
        if context_frames and self.future_query is not None:
            trajectory = tokens.view(B, context_frames, N // context_frames, -1)  # (B, ctx, L, Dd)
            queries = trajectory[:, -1] + self.future_query(trajectory.permute(0, 2, 1, 3).flatten(2))  # (B, L, Dd)
            if query_cue is not None:
                queries = queries + query_cue.to(queries.dtype)
        else:
            queries = mask_token.expand(B, num_queries, -1)  # (B, Q, Dd)
        tokens = torch.cat([tokens, queries], dim=1) + pos  # (B, N + Q, Dd)
        x = torch.cat([prefix, tokens], dim=1)  # (B, prefix + N + Q, Dd)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x[:, encoded.num_prefix:])  # (B, N + Q, Dd)

    def forward_static(self, imgs: torch.Tensor, sensor: torch.Tensor | None = None,
                       noise: torch.Tensor | None = None, mask_ratio: float | None = None) -> StaticOutput:
        """imgs (B, C, H, W), sensor (B,) int64 or None, noise (B, L) to fix the mask (tests),
        mask_ratio to override the model's."""
        encoded = self.forward_encoder(self.encoder.embed_patches(imgs), sensor, noise, mask_ratio)
        hidden = self.forward_decoder(encoded, self.decoder_pos_embed)  # (B, L, Dd)
        contact = self.contact_pred(hidden) if self.contact_pred is not None else None  # (B, L, P)
        return StaticOutput(self.decoder_pred(hidden), patchify(imgs, self.patch_size), encoded.mask, contact)

    def forward_dynamic(self, frames: torch.Tensor, sensor: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None, mask_ratio: float | None = None) -> DynamicOutput:
        """frames (B, T, C, H, W) with T = num_frames; frames 1..T-1 are seen (masked), frame T is
        predicted. noise: (B, L) with tube masking, (B, (T-1) L) without; None draws it.
        mask_ratio overrides the model's `dynamic_mask_ratio`: 0.0 shows frames 1..T-1 whole, the
        fair setting for comparing frame-T prediction with copying frame T-1 (which sees it whole)."""
        B, T = frames.shape[:2]
        if T != self.num_frames:
            raise ValueError(f"forward_dynamic expects {self.num_frames} frames, got {T}")
        L, ctx = self.num_patches, T - 1
        tokens = self.encoder.embed_patches(frames[:, :ctx].flatten(0, 1))  # (B*ctx, L, D)
        temporal = self.temporal_embed[:ctx, None].to(tokens.dtype)  # (ctx, 1, D)
        tokens = tokens.view(B, ctx, L, -1) + temporal  # (B, ctx, L, D)
        if self.tube_mask:
            noise = torch.rand(B, L, device=frames.device) if noise is None else noise
            noise = noise[:, None].expand(B, ctx, L).flatten(1)  # (B, ctx*L): one draw per patch position
        ratio = self.dynamic_mask_ratio if mask_ratio is None else mask_ratio
        encoded = self.forward_encoder(tokens.flatten(1, 2), sensor, noise, ratio)  # over (B, ctx*L, D)
        pos = self.decoder_pos_embed[:, None] + self.decoder_temporal_embed[None, :T, None]  # (1, T, L, Dd)
        target = patchify(frames, self.patch_size)  # (B, T, L, P)
        cue = self.motion(target[:, :ctx], encoded.mask.view(B, ctx, L)) if self.motion_cue is not None else None
        hidden = self.forward_decoder(encoded, pos.flatten(1, 2), ctx, cue)  # (B, T*L, Dd)
        future_head = self.future_pred if self.future_residual else self.decoder_pred
        return DynamicOutput(
            recon_pred=self.decoder_pred(hidden[:, : ctx * L]),  # (B, ctx*L, P)
            recon_target=target[:, :ctx].flatten(1, 2),
            recon_mask=encoded.mask,
            future_pred=future_head(hidden[:, ctx * L:]),  # (B, L, P)
            future_target=target[:, -1],
            future_mask=torch.ones(B, L, device=frames.device, dtype=encoded.mask.dtype),
            future_base=target[:, -2] if self.future_residual else None,
        )

    def motion(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`motion_cue` of context patches (B, ctx, L, P) under the encoder's mask (B, ctx, L), 1 =
        masked: (B, L, Dd) from each position's changes between consecutive frames, zero where
        either frame of a pair was masked (the encoder did not see it either)."""
        seen = 1.0 - mask.to(context.dtype)  # (B, ctx, L)
        changes = (context[:, 1:] - context[:, :-1]) * (seen[:, 1:] * seen[:, :-1])[..., None]  # (B, ctx-1, L, P)
        return self.motion_cue(changes.permute(0, 2, 1, 3).flatten(2))  # (B, L, Dd)

    def forward(self, x: torch.Tensor, sensor: torch.Tensor | None = None) -> StaticOutput | DynamicOutput:
        """(B, C, H, W) -> the static task; (B, T, C, H, W) -> the dynamic task."""
        return self.forward_static(x, sensor) if x.dim() == 4 else self.forward_dynamic(x, sensor)

    @torch.no_grad()
    def encode_tokens(self, imgs: torch.Tensor, sensor: torch.Tensor | None = None) -> torch.Tensor:
        """Whole frames (no masking): (B, C, H, W) -> (B, prefix + L, D), CLS first, patch tokens last."""
        x = torch.cat([self.prefix_tokens(imgs.shape[0], sensor), self.encoder.embed_patches(imgs)], dim=1)
        return self.encoder.forward_tokens(x)

    def pool_tokens(self, tokens: torch.Tensor, pool: Literal["mean", "cls"] = "mean") -> torch.Tensor:
        """`encode_tokens`' output -> (B, D): the mean of the patch tokens (the MAE linear-probe
        choice) or the CLS token."""
        return tokens[:, 0] if pool == "cls" else tokens[:, -self.num_patches:].mean(dim=1)

    @torch.no_grad()
    def encode_features(self, imgs: torch.Tensor, sensor: torch.Tensor | None = None,
                        pool: Literal["mean", "cls"] = "mean") -> torch.Tensor:
        """Frozen features of whole frames: (B, C, H, W) -> (B, D) (`pool_tokens` of `encode_tokens`)."""
        return self.pool_tokens(self.encode_tokens(imgs, sensor), pool)

    # --- init ----------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        self.encoder.initialize_weights()  # from-scratch ViT only; a CLIP tower keeps its weights
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_linear_and_norm)
        if self.future_pred is not None:
            self.future_query.apply(init_linear_and_norm)
            # Zero change at the start: the frame-T prediction begins as "copy frame T-1", the
            # baseline it is measured against, and moves away from it only where it learns motion.
            nn.init.zeros_(self.future_pred.weight)
            nn.init.zeros_(self.future_pred.bias)
        if self.motion_cue is not None:  # starts as the model without it
            nn.init.zeros_(self.motion_cue.weight)
            nn.init.zeros_(self.motion_cue.bias)
        # normal(0.02) for every learned token and embedding (MAE's mask token, AnyTouch's sensor
        # tokens); small, so a pretrained encoder's inputs barely move at the start.
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.temporal_embed, std=0.02)
        nn.init.normal_(self.decoder_temporal_embed, std=0.02)
        if self.sensor_embed is not None:
            nn.init.normal_(self.sensor_embed, std=0.02)
        # Last, as at construction: a re-initialisation draws every other weight as without the head.
        if getattr(self, "contact_pred", None) is not None:
            self.contact_pred.apply(init_linear_and_norm)
