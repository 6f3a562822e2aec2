"""PyTorch twins of minigen's demo models, for the side-by-side benchmarks.

Each twin mirrors its minigen model layer for layer, with the same attribute names, so
both ``state_dict``s have the same keys. ``copy_weights`` copies minigen's weights into
the twin by name and fails loudly on any missing, extra or differently shaped entry: if
a minigen model changes, its twin must change with it (the benchmark's check says so
before anything is timed).

Only what the benchmarks run is mirrored (training-mode forward passes); sampling and
plotting helpers are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------ copying weights
def copy_weights(source, twin: nn.Module) -> nn.Module:
    """Copy every entry of the minigen module ``source``'s state_dict into ``twin``, by name.

    Parameters and buffers (batch-norm running statistics) alike; the twin keeps its own
    device and dtype. Returns ``twin``.
    """
    theirs = source.state_dict()
    ours = twin.state_dict(keep_vars=True)
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    if missing or extra:
        raise KeyError(
            f"{type(twin).__name__}: the twin does not mirror {type(source).__name__}: "
            f"only in minigen: {missing}; only in the twin: {extra}"
        )
    with torch.no_grad():
        for name, value in theirs.items():
            array = value.numpy()
            target = ours[name]
            if tuple(target.shape) != array.shape:
                raise ValueError(f"{name}: minigen shape {array.shape}, twin shape {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.array(array, order="C")))
    return twin


# ---------------------------------------------------------------------------- LeNet
class LeNet(nn.Module):
    """minigen.models.cnn.LeNet."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, widths: tuple[int, int] = (16, 32)
    ) -> None:
        super().__init__()
        c1, c2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (image_size // 4) ** 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ------------------------------------------------------------------ transformer parts
def rope_adjacent(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """minigen's RoPE: rotate the ADJACENT pairs (x₁, x₂), (x₃, x₄), … (not rotate-half)."""
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def rope_cos_sin(length: int, dim: int, base: float = 10000.0, device=None, dtype=torch.float32):
    """cos(mθ_i), sin(mθ_i) for m = 0..length−1, θ_i = base^(−2(i−1)/d), computed in float64."""
    theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * theta
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


class TransformerBlock(nn.Module):
    """minigen.nn.transformer.TransformerBlock (pre-LayerNorm, fused qkv, GELU MLP)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        causal: bool = False,
        rope: bool = False,
    ) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.dropout_p, self.rope = causal, dropout, rope
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        hidden = int(mlp_ratio * d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        h, d_k = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.reshape(B, T, h, d_k).transpose(1, 2)
        k = k.reshape(B, T, h, d_k).transpose(1, 2)
        v = v.reshape(B, T, h, d_k).transpose(1, 2)
        if self.rope:
            cos, sin = rope_cos_sin(T, d_k, device=x.device, dtype=x.dtype)
            q, k = rope_adjacent(q, cos, sin), rope_adjacent(k, cos, sin)
        dropout_p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, dropout_p=dropout_p)
        return self.proj(out.transpose(1, 2).reshape(B, T, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.ln1(x)))
        return x + self.drop(self.fc2(self.act(self.fc1(self.ln2(x)))))


# ------------------------------------------------------------------------------ ViT
class PatchEmbedding(nn.Module):
    """minigen.models.vit.PatchEmbedding: a Conv2d with kernel = stride = P."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int) -> None:
        super().__init__()
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """minigen.models.vit.ViT."""

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
        n_tokens = self.patch_embed.num_patches + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, d_model))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal=False) for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(images)
        cls = self.cls_token.expand(patches.shape[0], 1, self.cls_token.shape[-1])
        x = self.drop(torch.cat([cls, patches], dim=1) + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x)[:, 0])


# ------------------------------------------------------------------------------ GPT
class GPT(nn.Module):
    """minigen.models.gpt.GPT (tied input/output embedding)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layers: int = 4,
        n_heads: int = 4,
        d_model: int = 128,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        positions: str = "learned",
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model) if positions == "learned" else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal=True, rope=positions == "rope")
            for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1))


# ---------------------------------------------------------------------------- DCGAN
def _upsampling_stages(image_size: int, max_stages: int = 2) -> int:
    stages = 0
    while stages < max_stages and image_size % (2 ** (stages + 1)) == 0:
        stages += 1
    return stages


class LabelChannel(nn.Module):
    """minigen.models.gan.LabelChannel: the label as a learned extra channel."""

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.embedding = nn.Embedding(num_classes, height * width)

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        label_map = self.embedding(labels).reshape(labels.shape[0], 1, self.height, self.width)
        return torch.cat([h, label_map], dim=1)


class DCGANGenerator(nn.Module):
    """minigen.models.gan.DCGANGenerator."""

    def __init__(
        self,
        latent_dim: int = 64,
        channels: int = 1,
        image_size: int = 16,
        base_channels: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        stages = _upsampling_stages(image_size)
        self.start_size = image_size // 2**stages
        widths = [base_channels * 2 ** (stages - 1 - i) for i in range(stages)]
        self.start_channels = widths[0]
        self.project = nn.Linear(latent_dim, widths[0] * self.start_size**2)
        self.project_norm = nn.BatchNorm2d(widths[0])
        self.label_channel = LabelChannel(num_classes, self.start_size, self.start_size) if num_classes else None
        layers: list[nn.Module] = []
        fan_in = widths[0] + (1 if num_classes else 0)
        for width in widths[1:]:
            layers += [nn.ConvTranspose2d(fan_in, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            fan_in = width
        layers.append(nn.ConvTranspose2d(fan_in, channels, 4, stride=2, padding=1))
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(z).reshape(z.shape[0], self.start_channels, self.start_size, self.start_size)
        h = self.project_norm(h).relu()
        if self.label_channel is not None:
            h = self.label_channel(h, labels)
        return self.upsample(h).tanh()


class DCGANDiscriminator(nn.Module):
    """minigen.models.gan.DCGANDiscriminator."""

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 16,
        base_channels: int = 64,
        num_classes: int | None = None,
        patch: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        stages = _upsampling_stages(image_size)
        self.patch = patch
        self.label_channel = LabelChannel(num_classes, image_size, image_size) if num_classes else None
        fan_in = channels + (1 if num_classes else 0)
        layers: list[nn.Module] = []
        for i in range(stages):
            width = base_channels * 2**i
            layers.append(nn.Conv2d(fan_in, width, 4, stride=2, padding=1))
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            fan_in = width
        self.features = nn.Sequential(*layers)
        final_size = image_size // 2**stages
        self.head = nn.Conv2d(fan_in, 1, 3, stride=1, padding=1) if patch else nn.Linear(fan_in * final_size**2, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_channel is not None:
            x = self.label_channel(x, labels)
        h = self.features(x)
        if self.patch:
            return self.head(h)
        return self.head(h.reshape(h.shape[0], -1)).reshape(h.shape[0])


def gan_training_step(generator, discriminator, opt_g, opt_d, real, z_d, z_g, labels) -> dict[str, torch.Tensor]:
    """minigen.models.gan.discriminator_step then generator_step (non-saturating loss)."""
    bce = F.binary_cross_entropy_with_logits
    with torch.no_grad():
        fake = generator(z_d, labels)
    real_logits = discriminator(real, labels)
    fake_logits = discriminator(fake, labels)
    d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
    stats = {"D(x)": real_logits.detach().sigmoid().mean(), "D(G(z))": fake_logits.detach().sigmoid().mean()}
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    stats["d_loss"] = d_loss.detach()
    discriminator.requires_grad_(False)
    try:
        fake_logits = discriminator(generator(z_g, labels), labels)
        g_loss = bce(fake_logits, torch.ones_like(fake_logits))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    finally:
        discriminator.requires_grad_(True)
    stats["g_loss"] = g_loss.detach()
    return stats


# ------------------------------------------------------------------------------ VAE
class ConvVAE(nn.Module):
    """minigen.models.vae.ConvVAE."""

    def __init__(self, channels: int = 1, image_size: int = 16, latent_dim: int = 8, base_channels: int = 32):
        super().__init__()
        self.base_channels = base_channels
        self.small = image_size // 4
        flat = 2 * base_channels * self.small**2
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, base_channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(base_channels, 2 * base_channels, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * base_channels, base_channels, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(base_channels, channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        h = self.encoder(x).reshape(x.shape[0], -1)
        mu, logvar = self.to_mu(h), self.to_logvar(h)
        z = mu + (0.5 * logvar).exp() * eps
        h = self.from_z(z).relu().reshape(z.shape[0], 2 * self.base_channels, self.small, self.small)
        return self.decoder(h), mu, logvar


def vae_loss(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """minigen.models.vae.vae_loss with the Bernoulli likelihood and β = 1: −ELBO per sample."""
    n = x.shape[0]
    reconstruction = F.binary_cross_entropy_with_logits(x_hat, x, reduction="none").reshape(n, -1).sum(dim=1).mean()
    kl = (-0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(dim=-1)).mean()
    return reconstruction + kl


# ----------------------------------------------------------------------------- U-Net
def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """minigen.models.unet.sinusoidal_embedding: [sin(t ω_i)] ⧺ [cos(t ω_i)]."""
    half = dim // 2
    dtype = t.dtype if t.is_floating_point() else torch.float32
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    angles = t.to(dtype).unsqueeze(1) * frequencies.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SinusoidalTimeEmbedding(nn.Module):
    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim, self.max_period = dim, max_period

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(t, self.dim, self.max_period)


def time_mlp(base_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        SinusoidalTimeEmbedding(base_dim), nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
    )


def num_groups_for(channels: int, min_channels_per_group: int = 4, max_groups: int = 32) -> int:
    best = 1
    for groups in range(1, min(max_groups, channels) + 1):
        if channels % groups == 0 and channels // groups >= min_channels_per_group:
            best = groups
    return best


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups_for(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb)).reshape(h.shape[0], h.shape[1], 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups_for(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
        merged = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(merged).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class DownBlock(nn.Module):
    def __init__(self, in_channels, out_channels, time_dim, downsample=True, dropout=0.0) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_dim, dropout)
        self.down = Downsample(out_channels) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor):
        skip = self.res(x, temb)
        return self.down(skip), skip


class UpBlock(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels, time_dim, upsample=True, dropout=0.0) -> None:
        super().__init__()
        self.up = Upsample() if upsample else nn.Identity()
        self.res = ResBlock(in_channels + skip_channels, out_channels, time_dim, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.res(torch.cat([self.up(x), skip], dim=1), temb)


class UNet(nn.Module):
    """minigen.models.unet.UNet; a conditional one takes labels y (``num_classes`` is the null label)."""

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        attention: bool = True,
        num_heads: int = 1,
        num_classes: int | None = None,
        time_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        time_dim = time_dim or 4 * base_channels
        self.time_embed = time_mlp(base_channels, time_dim)
        self.label_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes is not None else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]
        last = len(widths) - 1
        downs, previous = [], base_channels
        for level, width in enumerate(widths):
            downs.append(DownBlock(previous, width, time_dim, downsample=level < last, dropout=dropout))
            previous = width
        self.downs = nn.ModuleList(downs)
        self.mid1 = ResBlock(previous, previous, time_dim, dropout)
        self.mid_attn = SelfAttention2d(previous, num_heads) if attention else nn.Identity()
        self.mid2 = ResBlock(previous, previous, time_dim, dropout)
        ups = []
        for level in reversed(range(len(widths))):
            ups.append(
                UpBlock(previous, widths[level], widths[level], time_dim, upsample=level < last, dropout=dropout)
            )
            previous = widths[level]
        self.ups = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(num_groups_for(previous), previous)
        self.conv_out = nn.Conv2d(previous, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_embed(t)
        if self.label_embed is not None:
            temb = temb + self.label_embed(y)
        h = self.conv_in(x)
        skips = []
        for down in self.downs:
            h, skip = down(h, temb)
            skips.append(skip)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for up in self.ups:
            h = up(h, skips.pop(), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ------------------------------------------------------------- pix2pix and CycleGAN
class EncoderBlock(nn.Module):
    """minigen.models.pix2pix.EncoderBlock: Conv 4×4 s2 → GroupNorm → LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.norm = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DecoderBlock(nn.Module):
    """minigen.models.pix2pix.DecoderBlock: ×2 (transposed conv, or nearest + conv 3×3) → GroupNorm → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, upsample: str = "nearest") -> None:
        super().__init__()
        if upsample == "transposed":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
        else:
            self.up = nn.Sequential(Upsample(), nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.norm = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.up(x)))


class UNetGenerator(nn.Module):
    """minigen.models.pix2pix.UNetGenerator (z, when it has noise channels, is passed in)."""

    def __init__(self, in_channels=1, out_channels=1, base_channels=16, levels=3, upsample="nearest", noise_channels=0):
        super().__init__()
        widths = [base_channels * 2 ** min(k, 3) for k in range(levels + 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels + noise_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.encoders = nn.ModuleList([EncoderBlock(widths[k - 1], widths[k]) for k in range(1, levels + 1)])
        self.decoders = nn.ModuleList(
            [
                DecoderBlock(widths[k] if k == levels else 2 * widths[k], widths[k - 1], upsample)
                for k in range(levels, 0, -1)
            ]
        )
        self.head = nn.Conv2d(2 * widths[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        skips = [self.stem(x if z is None else torch.cat([x, z], dim=1))]
        for encoder in self.encoders:
            skips.append(encoder(skips[-1]))
        h = skips.pop()
        for decoder in self.decoders:
            h = torch.cat([decoder(h), skips.pop()], dim=1)
        return torch.tanh(self.head(h))


class PatchDiscriminator(nn.Module):
    """minigen.models.pix2pix.PatchDiscriminator (no normalisation layers)."""

    def __init__(self, in_channels: int, base_channels: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        layers = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = base_channels
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(width, 2 * width, 3, padding=1), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(image if condition is None else torch.cat([condition, image], dim=1))


def pix2pix_training_step(generator, discriminator, opt_g, opt_d, x, y, z, l1_weight=100.0) -> dict[str, torch.Tensor]:
    """minigen.models.pix2pix.train_step: D on (x, y) vs (x, G(x, z)) detached, halved; then G, D frozen."""
    bce = F.binary_cross_entropy_with_logits
    fake = generator(x, z)
    real_logits, fake_logits = discriminator(y, x), discriminator(fake.detach(), x)
    d_loss = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    discriminator.requires_grad_(False)
    try:
        logits = discriminator(fake, x)
        g_loss = bce(logits, torch.ones_like(logits)) + l1_weight * (fake - y).abs().mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    finally:
        discriminator.requires_grad_(True)
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


class CycleGAN(nn.Module):
    """minigen.models.cyclegan.CycleGAN: G, F (U-Nets), D_A, D_B (PatchGANs)."""

    def __init__(self, channels=1, base_channels=16, levels=2, upsample="nearest", disc_channels=32, disc_layers=2):
        super().__init__()
        self.G = UNetGenerator(channels, channels, base_channels, levels, upsample)
        self.F = UNetGenerator(channels, channels, base_channels, levels, upsample)
        self.D_A = PatchDiscriminator(channels, disc_channels, disc_layers)
        self.D_B = PatchDiscriminator(channels, disc_channels, disc_layers)


def cyclegan_training_step(model, opt_g, opt_d, x, y, lambda_cyc=10.0, lambda_id=5.0) -> dict[str, torch.Tensor]:
    """minigen.models.cyclegan.train_step with image pools of size 0 (the fakes themselves)."""
    G, F_, D_A, D_B = model.G, model.F, model.D_A, model.D_B
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    for d in (D_A, D_B):
        d.requires_grad_(False)
    try:
        fake_y, fake_x = G(x), F_(y)
        gan = ((D_B(fake_y) - 1) ** 2).mean() + ((D_A(fake_x) - 1) ** 2).mean()
        cycle = l1(F_(fake_y), x) + l1(G(fake_x), y)
        identity = l1(G(y), y) + l1(F_(x), x)
        g_loss = gan + lambda_cyc * cycle + lambda_id * identity
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    finally:
        for d in (D_A, D_B):
            d.requires_grad_(True)
    fake_x, fake_y = fake_x.detach(), fake_y.detach()
    d_loss = 0.5 * (((D_A(x) - 1) ** 2).mean() + (D_A(fake_x) ** 2).mean()) + 0.5 * (
        ((D_B(y) - 1) ** 2).mean() + (D_B(fake_y) ** 2).mean()
    )
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}


# ----------------------------------------------------------------------------- CLIP
class MaskedTransformerBlock(TransformerBlock):
    """minigen.nn.transformer.TransformerBlock called with a boolean ``attn_mask`` (True = may attend)."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        B, T, d = h.shape
        q, k, v = (t.reshape(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in self.qkv(h).split(d, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(out.transpose(1, 2).reshape(B, T, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class CLIPTextEncoder(nn.Module):
    """minigen.models.clip.TextEncoder: token + position embeddings, blocks with padding hidden, LayerNorm."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        end_id: int = 1,
    ) -> None:
        super().__init__()
        self.end_id = end_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)
        self.blocks = nn.ModuleList(MaskedTransformerBlock(width, heads) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        B, L = tokens.shape
        x = self.token_embedding(tokens) + self.position_embedding(torch.arange(L, device=tokens.device))
        may_attend = ~key_padding_mask.reshape(B, 1, 1, L)
        for block in self.blocks:
            x = block(x, may_attend)
        return self.ln_final(x)

    def encode(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        features = self(tokens, key_padding_mask)
        end = (tokens == self.end_id).int().argmax(dim=1)
        return features[torch.arange(tokens.shape[0], device=tokens.device), end]


class CLIPImageEncoder(nn.Module):
    """minigen.models.clip.ImageEncoder: RGB + brightness, five 3×3 convolutions; the means of
    the first layer and of the last grid, and the last grid's quadrants."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(in_channels + 1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(c3, c3, 3, stride=2, padding=1)
        self.conv5 = nn.Conv2d(c3, c3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(torch.cat([images, images.amax(dim=1, keepdim=True)], dim=1)))
        colour = x.mean(dim=(2, 3))
        for conv in (self.conv2, self.conv3, self.conv4, self.conv5):
            x = F.relu(conv(x))
        return torch.cat([colour, x.mean(dim=(2, 3)), F.avg_pool2d(x, x.shape[-1] // 2).flatten(1)], dim=1)


class CLIP(nn.Module):
    """minigen.models.clip.CLIP: both encoders, bias-free projections, the learned logit scale t."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        embed_dim: int = 64,
        text_width: int = 64,
        text_depth: int = 2,
        text_heads: int = 4,
        image_channels: Sequence[int] = (16, 32, 64),
        image_size: int = 32,
        end_id: int = 1,
    ) -> None:
        super().__init__()
        self.image_encoder = CLIPImageEncoder(3, image_channels)
        self.text_encoder = CLIPTextEncoder(vocab_size, context_length, text_width, text_depth, text_heads, end_id)
        c1, c3 = image_channels[0], image_channels[-1]
        self.image_projection = nn.Linear(c1 + c3 + 4 * c3, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, images, tokens, key_padding_mask, image_to_text, text_to_image) -> torch.Tensor:
        """The symmetric contrastive loss with soft targets (minigen.models.clip.clip_loss)."""
        u = F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)
        v = F.normalize(self.text_projection(self.text_encoder.encode(tokens, key_padding_mask)), dim=-1)
        logits = self.logit_scale.exp() * u @ v.T
        return 0.5 * (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.T, text_to_image))


# -------------------------------------------------------------- VQ-VAE and its prior (issue 15)
class ConvEncoder(nn.Module):
    """minigen.models.autoencoder.ConvEncoder: an image to a grid of code vectors."""

    def __init__(self, in_channels=1, latent_channels=16, hidden_channels=32, downsamples=2) -> None:
        super().__init__()
        layers = [nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU()]
        width = hidden_channels
        for level in range(downsamples):
            out = 2 * hidden_channels if level == 0 else width
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """minigen.models.autoencoder.ConvDecoder: a grid of code vectors to linear pixels."""

    def __init__(self, latent_channels=16, out_channels=1, hidden_channels=32, upsamples=2) -> None:
        super().__init__()
        width = 2 * hidden_channels
        layers = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU()]
        for level in range(upsamples):
            out = hidden_channels if level == upsamples - 1 else width
            layers += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        self.net = nn.Sequential(*layers)
        self.last_layer = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.net(z))


class VectorQuantizer(nn.Module):
    """minigen.models.vq.VectorQuantizer (gradient-trained codebook): nearest code by the matmul
    expansion, the loss before the straight-through substitution, and the code counts of the
    restart window (minigen counts them in every training forward)."""

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.register_buffer("window_counts", torch.zeros(num_codes), persistent=False)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.no_grad():
            book = self.codebook
            distances = flat.square().sum(1, keepdim=True) - 2.0 * flat @ book.T + book.square().sum(1)
            k = distances.argmin(1)
            self.window_counts += torch.bincount(k, minlength=self.num_codes)
        e = F.embedding(k, self.codebook)
        loss = F.mse_loss(e, flat.detach()) + self.beta * F.mse_loss(flat, e.detach())
        z_q = flat + (e - flat).detach()
        return z_q.reshape(n, h, w, d).permute(0, 3, 1, 2), loss


class VQVAE(nn.Module):
    """minigen.models.vq.VQVAE: encoder, quantiser, decoder."""

    def __init__(self, in_channels=1, num_codes=64, code_dim=16, hidden_channels=32, downsamples=2, beta=0.25):
        super().__init__()
        self.encoder = ConvEncoder(in_channels, code_dim, hidden_channels, downsamples)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta)
        self.decoder = ConvDecoder(code_dim, in_channels, hidden_channels, downsamples)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_q, vq_loss = self.quantizer(self.encoder(x))
        return self.decoder(z_q), vq_loss


def vqvae_training_step(model: VQVAE, optimizer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """minigen.models.vq.train_step without the GAN: L = ‖x − x̂‖² + L_VQ, one optimiser step."""
    x_hat, vq_loss = model(x)
    rec = F.mse_loss(x_hat, x)
    loss = rec + vq_loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), "reconstruction": rec.detach()}


class CodePrior(nn.Module):
    """minigen.models.vq.CodePrior: the GPT over [class token, codes in raster order]."""

    def __init__(self, num_codes, grid_shape=(4, 4), num_classes=10, n_layers=4, n_heads=4, d_model=128, dropout=0.0):
        super().__init__()
        self.num_codes = num_codes
        length = grid_shape[0] * grid_shape[1]
        self.gpt = GPT(num_codes + num_classes, length, n_layers, n_heads, d_model, dropout=dropout)

    def loss(self, indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seq = torch.cat([(labels + self.num_codes).reshape(-1, 1), indices.flatten(1)], dim=1)
        return self.gpt.loss(seq[:, :-1], seq[:, 1:])


# ----------------------------------------------------------- latent diffusion (issue 17)
class SpatialTransformer(nn.Module):
    """minigen.models.latent_diffusion.SpatialTransformer: GroupNorm, 1×1 in, self-attention,
    cross-attention (no biases, key-padding mask), feed-forward, each with a residual, 1×1 out."""

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1, ff_mult: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups_for(channels), channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = nn.MultiheadAttention(channels, num_heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = nn.MultiheadAttention(
            channels, num_heads, bias=False, kdim=context_dim, vdim=context_dim, batch_first=True
        )
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(
            nn.Linear(channels, ff_mult * channels), nn.GELU(), nn.Linear(ff_mult * channels, channels)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x).reshape(b, c, h * w).transpose(1, 2))
        n = self.norm1(t)
        t = t + self.attn1(n, n, n, need_weights=False)[0]
        n = self.norm2(t)
        t = t + self.attn2(n, context, context, key_padding_mask=key_padding_mask, need_weights=False)[0]
        t = t + self.ff(self.norm3(t))
        return x + self.proj_out(t).transpose(1, 2).reshape(b, c, h, w)


class CrossAttentionUNet(nn.Module):
    """minigen.models.latent_diffusion.CrossAttentionUNet: the U-Net with spatial transformers
    after the ResBlocks of the ``attention_levels`` and in the middle."""

    def __init__(
        self,
        in_channels=4,
        base_channels=64,
        channel_mults=(1, 2),
        context_dim=64,
        num_heads=4,
        attention_levels=None,
        time_dim=None,
        dropout=0.0,
    ) -> None:
        super().__init__()
        levels = len(channel_mults)
        attention_levels = tuple(range(1, levels)) if attention_levels is None else tuple(attention_levels)
        time_dim = time_dim or 4 * base_channels
        self.time_embed = time_mlp(base_channels, time_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]

        def transformer(level, width):
            return SpatialTransformer(width, context_dim, num_heads) if level in attention_levels else nn.Identity()

        previous = base_channels
        self.down_res, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level, width in enumerate(widths):
            self.down_res.append(ResBlock(previous, width, time_dim, dropout))
            self.down_attn.append(transformer(level, width))
            self.downsample.append(Downsample(width) if level < levels - 1 else nn.Identity())
            previous = width
        self.mid1 = ResBlock(previous, previous, time_dim, dropout)
        self.mid_attn = SpatialTransformer(previous, context_dim, num_heads)
        self.mid2 = ResBlock(previous, previous, time_dim, dropout)
        self.upsample, self.up_res, self.up_attn = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels)):
            self.upsample.append(Upsample() if level < levels - 1 else nn.Identity())
            self.up_res.append(ResBlock(previous + widths[level], widths[level], time_dim, dropout))
            self.up_attn.append(transformer(level, widths[level]))
            previous = widths[level]
        self.norm_out = nn.GroupNorm(num_groups_for(previous), previous)
        self.conv_out = nn.Conv2d(previous, in_channels, 3, padding=1)

    def forward(self, z, t, context, key_padding_mask):
        temb = self.time_embed(t)

        def attend(block, h):
            return h if isinstance(block, nn.Identity) else block(h, context, key_padding_mask)

        h = self.conv_in(z)
        skips = []
        for res, attn, down in zip(self.down_res, self.down_attn, self.downsample):
            h = attend(attn, res(h, temb))
            skips.append(h)
            h = down(h)
        h = self.mid2(attend(self.mid_attn, self.mid1(h, temb)), temb)
        for up, res, attn in zip(self.upsample, self.up_res, self.up_attn):
            h = attend(attn, res(torch.cat([up(h), skips.pop()], dim=1), temb))
        return self.conv_out(F.silu(self.norm_out(h)))
