"""The noise-prediction networks ε_θ(x_t, t[, y]) of a diffusion model.

A diffusion model trains one network to answer, at every noise level t, "which noise ε
was added to make x_t?" (``minigen/models/diffusion.py`` has the process and the
samplers). Two such networks live here, sharing how they are told t:

* ``sinusoidal_embedding``: t ↦ [sin(t ω_0), …, sin(t ω_{d/2−1}), cos(t ω_0), …, cos(t ω_{d/2−1})]
  with ω_i = 10000^(−i/(d/2)), the Transformer's position code used as a "time code",
  followed by a small MLP so the network can learn its own features of t.
* ``UNet``: for images. An encoder halves the resolution level by level
  (``DownBlock``), a decoder doubles it back (``UpBlock``) and, at every level,
  concatenates the encoder's features of the same resolution (the skip connections
  that carry fine detail past the bottleneck). Each level is a ``ResBlock`` that
  receives the time embedding; the bottleneck can add self-attention, where the
  resolution is low enough for it to be cheap.
* ``MLPDenoiser``: the same idea for 2-D points: an MLP on [x_t, e(t)].

Class conditioning (for classifier-free guidance) adds a learned label embedding to
the time embedding. The label ``num_classes`` is the extra "null" label that means
"no class": training replaces real labels by it at random, so that one network learns
both ε_θ(x_t, t, y) and ε_θ(x_t, t, ∅).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.ops.attention import merge_heads, split_heads
from minigen.tensor import Tensor


# ---------------------------------------------------------------------- time embedding
def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """e(t) = [sin(t ω_i)]_{i<d/2} ⧺ [cos(t ω_i)]_{i<d/2},  ω_i = max_period^(−i/(d/2)).

    ``t`` has shape (B,), integer timesteps or floats (floats keep their dtype, so the
    embedding is differentiable in t and can be gradient-checked); the result is (B, dim).
    The frequencies run geometrically from 1 to 1/max_period, so nearby timesteps get
    similar codes (low frequencies) yet remain distinguishable (high frequencies).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be even, got {dim}")
    if t.ndim != 1:
        raise ValueError(f"sinusoidal_embedding: t must have shape (B,), got {tuple(t.shape)}")
    xp = t.xp
    dtype = t.dtype if t.dtype.kind == "f" else mg.float32
    half = dim // 2
    frequencies = Tensor(xp.exp(-math.log(max_period) * xp.arange(half, dtype=dtype) / half))
    t = t if t.dtype.kind == "f" else t.to(dtype)
    angles = t.unsqueeze(1) * frequencies.unsqueeze(0)  # (B, d/2)
    return mg.cat([angles.sin(), angles.cos()], dim=1)


class SinusoidalTimeEmbedding(nn.Module):
    """Module form of ``sinusoidal_embedding`` (no parameters)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding: dim must be even, got {dim}")
        self.dim = dim
        self.max_period = max_period

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.dim, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def time_mlp(base_dim: int, out_dim: int) -> nn.Sequential:
    """t ↦ Linear(SiLU(Linear(e(t)))): the sinusoidal code, then learned features of it."""
    return nn.Sequential(
        SinusoidalTimeEmbedding(base_dim), nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
    )


# ---------------------------------------------------------------------------- U-Net parts
def num_groups_for(channels: int, min_channels_per_group: int = 4, max_groups: int = 32) -> int:
    """The GroupNorm group count for ``channels``: as many groups as possible (≤ max_groups)
    with at least ``min_channels_per_group`` channels each, e.g. 8 → 2, 16 → 4, 32 → 8, 64 → 16.

    The usual 32 groups would leave a small network's 16 or 32 channels with one or two
    channels per group, whose statistics are too noisy to normalise with.
    """
    best = 1
    for groups in range(1, min(max_groups, channels) + 1):
        if channels % groups == 0 and channels // groups >= min_channels_per_group:
            best = groups
    return best


class ResBlock(nn.Module):
    """h = Conv(SiLU(GN(x))) + W_t·SiLU(e_t);   out = Conv(Dropout(SiLU(GN(h)))) + skip(x).

    The time embedding e_t enters as a per-channel bias after the first convolution, so
    every block knows the noise level. ``skip`` is the identity, or a 1×1 convolution when
    the channel count changes (the residual sum needs equal shapes).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = nn.GroupNorm(num_groups_for(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb)).reshape(h.shape[0], h.shape[1], 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


class SelfAttention2d(nn.Module):
    """Every pixel attends to every pixel: softmax(QKᵀ/√d) V over the H·W positions, plus x.

    The feature map (B, C, H, W) is read as a sequence of H·W tokens of C features; Q, K,
    V are 1×1 projections of the normalised map, split into ``num_heads`` heads. Its cost
    grows as (H·W)², which is why the U-Net uses it only at its lowest resolution.
    """

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"SelfAttention2d: channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.channels, self.num_heads = channels, num_heads
        self.norm = nn.GroupNorm(num_groups_for(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(tokens).split(c, dim=-1))  # (B, heads, HW, C/heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        merged = merge_heads(attended)  # (B, HW, C)
        return x + self.proj(merged).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Halve H and W with a learned 3×3 convolution of stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour copying (each pixel becomes a 2×2 block).

    No convolution of its own: the ResBlock that follows convolves the upsampled map
    together with the skip features, which smooths the blocks at no extra cost.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class DownBlock(nn.Module):
    """One encoder level: ResBlock(s) at this resolution, then (optionally) halve it.

    Returns ``(h, skip)``: ``skip`` is the full-resolution output that the decoder's
    ``UpBlock`` at this level will concatenate.
    """

    def __init__(
        self, in_channels: int, out_channels: int, time_dim: int, downsample: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, time_dim, dropout)
        self.down = Downsample(out_channels) if downsample else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.res(x, temb)
        return self.down(skip), skip


class UpBlock(nn.Module):
    """One decoder level: (optionally) double the resolution, concatenate the encoder's
    skip features of that resolution along channels, and mix them with a ResBlock."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        time_dim: int,
        upsample: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.up = Upsample() if upsample else nn.Identity()
        self.res = ResBlock(in_channels + skip_channels, out_channels, time_dim, dropout)

    def forward(self, x: Tensor, skip: Tensor, temb: Tensor) -> Tensor:
        x = self.up(x)
        return self.res(mg.cat([x, skip], dim=1), temb)


# ------------------------------------------------------------------------------- U-Net
class UNet(nn.Module):
    """ε_θ(x_t, t[, y]) for images (B, C, H, W) -> (B, C, H, W).

    conv_in -> DownBlock per level (channels base·mult, resolution halved between levels)
    -> middle: ResBlock, [SelfAttention2d], ResBlock -> UpBlock per level (in reverse,
    each concatenating its DownBlock's skip) -> GroupNorm, SiLU, conv_out.

    H and W must be divisible by 2^(len(channel_mults) − 1). ``conv_out`` starts at zero,
    so the untrained network predicts ε̂ = 0, the mean of the noise it will learn to
    predict, and early training is not swamped by random outputs.

    With ``num_classes`` set, the label embedding (``num_classes + 1`` rows: the last one,
    ``null_label``, means "unconditional") is added to the time embedding. ``y=None``
    means the null label for the whole batch.
    """

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
        if not channel_mults:
            raise ValueError("UNet: channel_mults needs at least one level")
        time_dim = time_dim or 4 * base_channels
        self.in_channels = in_channels
        self.num_levels = len(channel_mults)
        self.num_classes = num_classes
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
            # The DownBlock at `level` downsampled after its skip unless it was the last,
            # so coming back up we first undo that halving, then join its skip.
            ups.append(
                UpBlock(previous, widths[level], widths[level], time_dim, upsample=level < last, dropout=dropout)
            )
            previous = widths[level]
        self.ups = nn.ModuleList(ups)

        self.norm_out = nn.GroupNorm(num_groups_for(previous), previous)
        self.conv_out = nn.Conv2d(previous, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_label(self) -> int | None:
        """The label id meaning "no class" (``num_classes``), or None for an unconditional net."""
        return self.num_classes

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """e = MLP(sinusoidal(t)) [+ E_label[y]]: everything the blocks are told besides x_t."""
        return _time_and_label(self.time_embed, self.label_embed, self.num_classes, t, y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        factor = 2 ** (self.num_levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"UNet: expected input (B, {self.in_channels}, H, W) with H and W divisible by {factor}, "
                f"got {tuple(x.shape)}"
            )
        temb = self.embed(t, y)
        h = self.conv_in(x)
        skips = []
        for down in self.downs:
            h, skip = down(h, temb)
            skips.append(skip)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for up in self.ups:
            h = up(h, skips.pop(), temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _time_and_label(
    time_embed: nn.Module, label_embed: nn.Module | None, num_classes: int | None, t: Tensor, y: Tensor | None
) -> Tensor:
    """Time embedding plus, for a conditional network, the label embedding (null label if y is None)."""
    if t.ndim == 0:
        raise ValueError("expected one timestep per sample, t of shape (B,), got a 0-d tensor")
    temb = time_embed(t)
    if label_embed is None:
        if y is not None:
            raise ValueError("labels y were given to a network built without num_classes")
        return temb
    if y is None:
        y = mg.full((t.shape[0],), num_classes, dtype=mg.int64, device=t.device)
    return temb + label_embed(y)


# ------------------------------------------------------------------------- MLP denoiser
class MLPDenoiser(nn.Module):
    """ε_θ(x_t, t[, y]) for points x ∈ ℝ^d (B, d) -> (B, d): an MLP on [x_t, e(t) (+ e(y))].

    Each hidden layer is h ← SiLU(W h + b) and sees the time features again
    (h ← SiLU(W [h, e] + b)), so deep layers need not carry t through. The last layer
    starts at zero, as in the U-Net.
    """

    def __init__(
        self,
        data_dim: int = 2,
        hidden: int = 128,
        num_layers: int = 3,
        time_dim: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLPDenoiser: num_layers must be at least 1, got {num_layers}")
        self.data_dim = data_dim
        self.num_classes = num_classes
        self.time_embed = time_mlp(time_dim, time_dim)
        self.label_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes is not None else None
        self.layers = nn.ModuleList(
            [nn.Linear((data_dim if i == 0 else hidden) + time_dim, hidden) for i in range(num_layers)]
        )
        self.out = nn.Linear(hidden, data_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_label(self) -> int | None:
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"MLPDenoiser: expected x of shape (B, {self.data_dim}), got {tuple(x.shape)}")
        temb = _time_and_label(self.time_embed, self.label_embed, self.num_classes, t, y)
        h = x
        for layer in self.layers:
            h = F.silu(layer(mg.cat([h, temb], dim=1)))
        return self.out(h)
