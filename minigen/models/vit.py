"""ViT: the Vision Transformer ("An Image is Worth 16×16 Words", Dosovitskiy et al., 2021).

    image (B, C, H, W)
    -> cut into N = (H/P)·(W/P) patches of P×P pixels, each flattened and linearly
       embedded: the patch tokens                                         (B, N, d)
    -> prepend a learned [CLS] token                                      (B, N + 1, d)
    -> add learned 1-D position embeddings (one vector per token slot)
    -> n_layers TransformerBlocks (no causal mask: every token sees every patch)
    -> final LayerNorm; the [CLS] vector -> linear head -> class logits

The transformer knows nothing about images: without the position embeddings, the
patches would be an unordered set. The learned embeddings of neighbouring patches end
up similar (``position_similarity``), i.e. the model learns the 2-D layout itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import minigen as mg
import minigen.nn as nn
from minigen.nn.transformer import TransformerBlock
from minigen.tensor import Tensor


class PatchEmbedding(nn.Module):
    """Patches -> vectors, written as a Conv2d with kernel_size = stride = P.

    Flatten-then-linear: each P×P×C patch p is flattened to a vector vec(p) of length
    C·P² and mapped to z = W vec(p) + b with W of shape (d, C·P²).

    A convolution with kernel P and stride P visits exactly the non-overlapping patches,
    and at each one computes Σ_{c,i,j} K[o, c, i, j] · p[c, i, j] + b[o]: the same dot
    product, with K = W reshaped to (d, C, P, P). So the two are one layer written two
    ways; the convolution form just avoids cutting the patches out by hand.
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"PatchEmbedding: image_size {image_size} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size  # patches per side
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, d), patches in row-major order (left to right, top to bottom)."""
        z = self.proj(images)  # (B, d, H/P, W/P): one d-vector per patch
        return z.flatten(2).transpose(1, 2)

    def as_linear(self, images: Tensor) -> Tensor:
        """The same result computed the flatten-then-linear way (for reading and tests)."""
        B, C, H, W = images.shape
        P, g = self.patch_size, self.grid
        patches = images.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * P * P)
        weight = self.proj.weight.reshape(self.proj.out_channels, C * P * P)
        return patches @ weight.mT + self.proj.bias


class ViT(nn.Module):
    """Vision Transformer classifier.

    ``forward(images)`` -> logits (B, num_classes); ``tokens(images)`` -> the final token
    vectors (B, N + 1, d) with [CLS] first; ``attention_maps(images)`` -> the last block's
    attention from [CLS] to every patch, (B, heads, grid, grid), for pictures.
    """

    def __init__(
        self,
        image_size: int = 16,
        patch_size: int = 4,
        in_channels: int = 1,
        num_classes: int = 10,
        d_model: int = 64,
        n_layers: int = 4,
        n_heads: int = 4,
        mlp_ratio: float = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        n_tokens = self.patch_embed.num_patches + 1  # the patches and [CLS]
        self.cls_token = nn.Parameter(mg.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(mg.zeros(1, n_tokens, d_model))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal=False) for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT's initialisation: truncated N(0, 0.02) for embeddings and linear weights, zero biases."""
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def embed(self, images: Tensor) -> Tensor:
        """Images -> the input tokens: [CLS] + patch embeddings, plus position embeddings (B, N + 1, d)."""
        patches = self.patch_embed(images)
        B = patches.shape[0]
        cls = self.cls_token.expand(B, 1, self.cls_token.shape[-1])
        return self.drop(mg.cat([cls, patches], dim=1) + self.pos_embed)

    def tokens(self, images: Tensor) -> Tensor:
        """The final (normalised) token vectors (B, N + 1, d); index 0 is [CLS]."""
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def forward(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> class logits (B, num_classes), read from the [CLS] token."""
        return self.head(self.tokens(images)[:, 0])

    @mg.no_grad()
    def attention_maps(self, images: Tensor) -> Tensor:
        """Attention of [CLS] to every patch in the last block: (B, heads, grid, grid).

        Row 0 of the attention weights is what [CLS] looks at; dropping its weight on
        itself (column 0) leaves one weight per patch, laid out on the patch grid.
        """
        x = self.embed(images)
        for block in self.blocks[:-1]:
            x = block(x)
        _, weights = self.blocks[-1](x, return_attention=True)  # (B, h, N + 1, N + 1)
        g = self.patch_embed.grid
        return weights[:, :, 0, 1:].reshape(weights.shape[0], weights.shape[1], g, g)

    @mg.no_grad()
    def position_similarity(self) -> Tensor:
        """Cosine similarity of each patch's position embedding with every other: (N, N)."""
        p = self.pos_embed[0, 1:]  # skip [CLS]
        p = p / (p * p).sum(dim=-1, keepdim=True).sqrt()
        return p @ p.mT


# --------------------------------------------------------------- named configurations
@dataclass(frozen=True)
class ViTConfig:
    """A ViT architecture as in Dosovitskiy et al., table 1: layers, width, MLP width, heads."""

    n_layers: int
    d_model: int
    mlp_dim: int
    n_heads: int


VIT_CONFIGS: dict[str, ViTConfig] = {
    "base": ViTConfig(n_layers=12, d_model=768, mlp_dim=3072, n_heads=12),  # ViT-B: 86M at patch 16
    "large": ViTConfig(n_layers=24, d_model=1024, mlp_dim=4096, n_heads=16),  # ViT-L
    "huge": ViTConfig(n_layers=32, d_model=1280, mlp_dim=5120, n_heads=16),  # ViT-H
}


def count_parameters(
    config: ViTConfig, image_size: int = 224, patch_size: int = 16, in_channels: int = 3, num_classes: int = 1000
) -> int:
    """The number of parameters of ``build_vit(config, ...)``, counted without allocating them.

    Per block: two LayerNorms (γ, β: 2·2d), W^Q, W^K, W^V and W^O with biases
    (3d² + 3d + d² + d) and the MLP (d·m + m + m·d + d). Around the blocks: the patch
    embedding (C·P²·d + d), [CLS] (d), position embeddings ((N + 1)·d), the final
    LayerNorm (2d) and the head (d·classes + classes).
    """
    d, m = config.d_model, config.mlp_dim
    tokens = (image_size // patch_size) ** 2 + 1
    block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    around = (in_channels * patch_size**2 * d + d) + d + tokens * d + 2 * d + (d * num_classes + num_classes)
    return config.n_layers * block + around


def build_vit(
    config: ViTConfig,
    image_size: int = 224,
    patch_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 1000,
    dropout: float = 0.0,
) -> ViT:
    """The ``ViT`` of a named configuration (this allocates it: ViT-B is 86M parameters)."""
    mlp_ratio = config.mlp_dim / config.d_model
    if int(mlp_ratio * config.d_model) < config.mlp_dim:  # the block takes int(ratio·d): keep rounding from losing 1
        mlp_ratio = math.nextafter(mlp_ratio, math.inf)
    return ViT(
        image_size=image_size,
        patch_size=patch_size,
        in_channels=in_channels,
        num_classes=num_classes,
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
    )
