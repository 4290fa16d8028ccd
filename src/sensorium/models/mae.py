"""Generic masked-autoencoder pieces (MAE, He et al. 2022, "Masked Autoencoders Are Scalable Vision
Learners", arXiv:2111.06377), for any recipe that masks patch tokens before its encoder:

    patches + 2-D positions -> keep a share (per-sample shuffle, `random_masking`) -> [CLS, ..., visible]
    -> encoder blocks -> final norm

- `num_visible`, `random_masking`: MAE's masking by argsort of noise, with an exact visible count;
- `ViTBackbone`: a ViT trained from scratch (conv patch embedding, fixed 2-D sin-cos positions, SDPA
  blocks from `sensorium.layers`);
- `CLIPBackbone`: the vision tower of a local CLIP checkpoint
  (`transformers.CLIPVisionModel.from_pretrained(local_dir)`), run stage by stage;
- `init_linear_and_norm`: MAE's initialisation of linears and LayerNorms (encoders and decoders).

Both encoders expose the same stages, so a model can mask between them: `embed_patches` (B, C, H, W)
-> (B, L, D) patch tokens with positions, `cls_embed` (1, 1, D), `forward_tokens` (B, N, D) ->
(B, N, D) over whatever token sequence the model assembles, `initialize_weights`, and the
attributes `dim`, `img_size`, `patch_size`, `grid`. Patchify and sin-cos positions live in
`sensorium.layers` (patch_embed, pos_embed); a model's decoder is a stack of
`sensorium.layers.attention.TransformerBlock`. The tactile recipe's `TactileMAE` is built from these.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sensorium.errors import ConfigError
from sensorium.layers.attention import TransformerBlock
from sensorium.layers.patch_embed import PatchEmbed
from sensorium.layers.pos_embed import sincos_2d


# --- helpers -------------------------------------------------------------------------------------
def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """How many of `num_tokens` stay visible at `mask_ratio` (at least one)."""
    # The epsilon keeps 16 * (1 - 0.75) == 4, not 3, under float rounding.
    return max(1, math.floor(num_tokens * (1.0 - mask_ratio) + 1e-6))


def random_masking(x: torch.Tensor, len_keep: int, noise: torch.Tensor | None = None):
    """Per-sample random masking by argsort of noise (MAE): keep the `len_keep` lowest-noise tokens.

    x: (B, N, D); noise: (B, N) or None (uniform). Returns
      visible (B, len_keep, D): kept tokens, in shuffled order;
      mask (B, N): 1 = masked, 0 = visible, in the original token order;
      ids_restore (B, N): argsort of the shuffle, so gathering [visible, masked] by it restores order.
    Exactly `len_keep` tokens are visible in every sample.
    """
    B, N, D = x.shape
    if noise is None:
        noise = torch.rand(B, N, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # (B, N), ascending: the first len_keep stay
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N)
    ids_keep = ids_shuffle[:, :len_keep]  # (B, K)
    visible = torch.gather(x, 1, ids_keep[..., None].expand(B, len_keep, D))  # (B, K, D)
    mask = torch.ones(B, N, device=x.device)  # float32 even under autocast: the loss weights by it
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, N), back in token order
    return visible, mask, ids_restore


# --- encoders --------------------------------------------------------------------------------------
class ViTBackbone(nn.Module):
    """From-scratch ViT encoder: conv patch embedding, fixed 2-D sin-cos positions, pre-norm SDPA
    blocks and a final LayerNorm. The stages are exposed separately so the MAE can mask in between."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.dim, self.img_size, self.patch_size = dim, img_size, patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim)
        self.grid = self.patch_embed.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, *self.grid)[None], persistent=False)  # (1, L, D)
        self.blocks = nn.ModuleList([TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, D) patch tokens with their 2-D positions."""
        return self.patch_embed(imgs) + self.pos_embed  # (B, L, D)

    def cls_embed(self) -> torch.Tensor:
        return self.cls_token  # (1, 1, D); MAE gives CLS no position

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, N, D)

    def initialize_weights(self) -> None:
        self.apply(init_linear_and_norm)
        self.patch_embed.reset_parameters()
        nn.init.normal_(self.cls_token, std=0.02)  # MAE: normal(0.02), like timm's cls token


class CLIPBackbone(nn.Module):
    """The vision tower of a local CLIP checkpoint, run MAE-style on visible patches only.

    `transformers.CLIPVisionModel.from_pretrained(local_dir)` (SDPA attention); the tower is not
    called as a whole, since MAE encodes the visible patches only: its stages are called one by one,
    `embeddings.patch_embedding` (conv) plus rows 1.. of its learned `position_embedding` (the
    pretrained positions are kept; an MAE decoder uses fixed sin-cos), the masking happens outside,
    then CLS (`class_embedding` + position row 0) is prepended, then `pre_layrnorm`, each of
    `encoder.layers`, and `post_layernorm` over every token (CLIP applies it to the pooled CLS only;
    the MAE decoder needs normalised tokens, as MAE's final norm gives).
    Nothing here downloads: `local_dir` must hold config.json and the weights.
    """

    def __init__(self, local_dir: str | Path):
        super().__init__()
        from transformers import CLIPVisionModel

        local_dir = Path(local_dir)
        if not (local_dir / "config.json").is_file():
            raise ConfigError(local_dir, "not a local transformers checkpoint (no config.json); "
                                         "download the CLIP weights once elsewhere and point `pretrained` here")
        self.tower = CLIPVisionModel.from_pretrained(str(local_dir), local_files_only=True,
                                                     attn_implementation="sdpa")
        config = self.tower.config
        self.dim, self.img_size, self.patch_size = config.hidden_size, config.image_size, config.patch_size
        self.grid = (self.img_size // self.patch_size,) * 2

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        emb = self.tower.embeddings
        H, W = imgs.shape[-2:]
        if (H, W) != (self.img_size, self.img_size):
            raise ValueError(f"the CLIP tower expects {self.img_size}x{self.img_size} images, got {H}x{W}")
        x = emb.patch_embedding(imgs.to(emb.patch_embedding.weight.dtype))  # (B, D, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, L, D)
        return x + emb.position_embedding.weight[1:][None]  # (B, L, D); row 0 belongs to CLS

    def cls_embed(self) -> torch.Tensor:
        emb = self.tower.embeddings
        return (emb.class_embedding + emb.position_embedding.weight[0]).view(1, 1, -1)  # (1, 1, D)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tower.pre_layrnorm(x)
        for layer in self.tower.encoder.layers:
            x = layer(x, None)  # (B, N, D); no attention mask: every token is a real one
        return self.tower.post_layernorm(x)

    def initialize_weights(self) -> None:
        """Pretrained: nothing to initialise."""


# --- init ------------------------------------------------------------------------------------------
def init_linear_and_norm(module: nn.Module) -> None:
    """For `module.apply`: MAE's init (following the JAX ViT), xavier_uniform linears with zero bias
    and LayerNorms at identity."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
