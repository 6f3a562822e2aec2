"""Latent diffusion, text to image (Rombach et al. 2022, "Stable Diffusion"), built from the pieces before it.

The lecture's recipe, and where each piece lives:

1. **An autoencoder compresses the image** (``KLAutoencoder``): E(x) = z ∈ ℝ^{h×w×c} with
   h = H/f, w = W/f (here 32×32×3 → 8×8×4, f = 4), and D(z) ≈ x. Diffusion runs on z,
   48 times fewer numbers than x, so every U-Net step is that much cheaper, while the
   decoder D takes care of the pixels' fine detail.
2. **The latent scale factor** s = 1 / std(z) on the first batch (``LatentDiffusion.fit_latent_scale``):
   diffusion assumes data of about unit variance (x_T ~ N(0, I) must drown it), and
   nothing makes E's latents so. It is applied before diffusion, z_0 = s·E(x), and
   inverted before decoding, x = D(z_0 / s), and saved with the model.
3. **The same U-Net as before** (``minigen/models/unet.py``'s ResBlock, Downsample,
   Upsample, time embedding), with ``SpatialTransformer`` blocks after the residual
   blocks of the lower resolutions and in the middle (``CrossAttentionUNet``).
4. **External input y, a caption**, becomes τ_θ(y) ∈ ℝ^{M×d_τ}: one feature per token,
   made by a transformer text encoder (``minigen/models/clip.py``'s ``TextEncoder``).
5. **Cross-attention** joins the two: the U-Net's features at one resolution, flattened
   to φ_i(z_t) ∈ ℝ^{N×d_ε} (N = h·w positions), ask the caption's tokens

       Attention(Q, K, V) = softmax(Q Kᵀ / √d) · V,
       Q = W_Q^{(i)} · φ_i(z_t),   K = W_K^{(i)} · τ_θ(y),   V = W_V^{(i)} · τ_θ(y)

   (``minigen/ops/cross_attention.py``): pixel n reads a mixture of the words' values,
   weighted by how well its query matches each word's key.
6. **τ_θ and ε_θ are trained jointly** on the diffusion objective in latent space

       L_LDM = E_{E(x), y, ε ~ N(0, I), t} ‖ε − ε_θ(z_t, t, τ_θ(y))‖²,

   with the caption replaced by the empty caption ∅ 10% of the time (``drop_captions``),
   so that one network also knows ε_θ(z_t, t, ∅) for classifier-free guidance

       ε̃ = ε_θ(z_t, t, ∅) + w · (ε_θ(z_t, t, τ_θ(y)) − ε_θ(z_t, t, ∅)),

   sampled with DDIM (``LatentDiffusion.sample``; ``samplers.py``, ``guidance.py``).
7. **The same model inpaints** (``LatentDiffusion.inpaint``): at every sampling step the
   known region of z is replaced by the original's latent noised to that step,
   q_sample(z_0, t), and only the masked region is generated, under a caption. This
   happens in latent space: the pixel mask is reduced to the latent grid (a latent cell
   is known when all its f×f pixels are), and the result is decoded once at the end.

Which autoencoder, and why: a KL-regularised one (a VAE with a small KL weight β),
reusing ``vae.py``'s reparameterisation, KL and Gaussian/Bernoulli likelihoods. Its
latent is continuous, as diffusion's Gaussian noise assumes, and the small KL term only
keeps the latent's scale and smoothness in check (β = 1 would blur the digits away). A
VQ autoencoder's codes would need a quantisation step after sampling; the KL one needs
nothing but the scale factor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.models.diffusion import ddpm_loss, q_sample
from minigen.models.guidance import drop_condition
from minigen.models.noise_schedules import NoiseSchedule
from minigen.models.samplers import Trajectory, ddim_sample, ddim_timesteps
from minigen.models.unet import Downsample, ResBlock, Upsample, num_groups_for, time_mlp
from minigen.models.vae import kl_divergence, reconstruction_log_likelihood, reparameterize
from minigen.tensor import Tensor


# =============================================================== 1. the image autoencoder
class AutoencoderOutput(NamedTuple):
    x_hat: Tensor  # decoder logits (B, C, H, W); sigmoid(x_hat) is the image
    mu: Tensor  # (B, c, h, w)
    logvar: Tensor  # (B, c, h, w)
    z: Tensor  # μ + σ ⊙ ε


class KLAutoencoder(nn.Module):
    """A convolutional VAE with a spatial latent: x (B, 3, H, W) → z (B, c, H/f, W/f) → x̂, f = 2^L.

    encoder E: L × [Conv 4×4 stride 2 (halve), GroupNorm, SiLU] → Conv 3×3, GroupNorm, SiLU
               → Conv 1×1 to (μ, log σ²), c channels each
    decoder D: Conv 3×3, SiLU → Conv 3×3, SiLU → L × [ConvTranspose 4×4 stride 2 (double), SiLU],
               the last one to the image's channels, as logits (σ(logits) is the image in [0, 1])

    ``widths`` are the channels after each halving (L entries, e.g. (32, 64): 16×16×32 then
    8×8×64 for a 32×32 image). The strided and transposed convolutions do the resampling
    themselves, so no layer runs at full resolution with many channels: the whole
    autoencoder trains in about a minute on a CPU. Trained with ``autoencoder_loss``.
    """

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, widths: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths:
            raise ValueError("KLAutoencoder: widths needs one entry per halving of the resolution, got ()")
        self.in_channels, self.latent_channels, self.widths = in_channels, latent_channels, widths
        self.factor = 2 ** len(widths)

        def norm_act(channels: int) -> list[nn.Module]:
            return [nn.GroupNorm(num_groups_for(channels), channels), nn.SiLU()]

        encoder: list[nn.Module] = []
        for previous, width in zip((in_channels, *widths), widths):
            encoder += [nn.Conv2d(previous, width, 4, stride=2, padding=1), *norm_act(width)]
        encoder += [nn.Conv2d(widths[-1], widths[-1], 3, padding=1), *norm_act(widths[-1])]
        encoder.append(nn.Conv2d(widths[-1], 2 * latent_channels, 1))  # μ and log σ², stacked
        self.encoder = nn.Sequential(*encoder)

        # No normalisation in the decoder: each pixel of D(z) depends on a few nearby latent
        # cells only (GroupNorm's statistics would make it depend on all of them), so in
        # inpainting the known region decodes as the original's latent does.
        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1), nn.SiLU()]
        decoder += [nn.Conv2d(widths[-1], widths[-1], 3, padding=1), nn.SiLU()]
        for width, previous in zip(reversed(widths[:-1]), reversed(widths[1:])):
            decoder += [nn.ConvTranspose2d(previous, width, 4, stride=2, padding=1), nn.SiLU()]
        decoder.append(nn.ConvTranspose2d(widths[0], in_channels, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(c, h, w) of the latent of an image of this size."""
        return (self.latent_channels, height // self.factor, width // self.factor)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q_φ(z|x) = N(μ, diag σ²): returns (μ, log σ²), each (B, c, H/f, W/f)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(
                f"KLAutoencoder: expected images (B, {self.in_channels}, H, W) with H and W divisible by "
                f"{self.factor}, got {tuple(x.shape)}"
            )
        mu, logvar = self.encoder(x).split(self.latent_channels, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """p_θ(x|z): the decoder's logits (B, C, H, W); ``sigmoid`` gives the image."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"KLAutoencoder: expected latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> AutoencoderOutput:
        """x → (μ, log σ²) → z = μ + σ ⊙ ε → logits. ``eps`` defaults to fresh N(0, I) noise."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, mg.randn_like(mu) if eps is None else eps)
        return AutoencoderOutput(self.decode(z), mu, logvar, z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """D(μ(x)) as an image in [0, 1]."""
        mu, _ = self.encode(x)
        return self.decode(mu).sigmoid()


def autoencoder_loss(out: AutoencoderOutput, x: Tensor, beta: float = 1e-3) -> Tensor:
    """−log p_θ(x|z) + β · KL(q_φ(z|x) ‖ N(0, I)), per image, averaged over the batch.

    The likelihood is Bernoulli on the pixels (binary cross-entropy from the logits),
    which keeps thin bright strokes on black sharp; the KL term sums over all c·h·w latent
    dimensions (``vae.kl_divergence`` on the flattened latent). A small β leaves the
    latent free to carry detail; its only jobs are a bounded, smooth latent.
    """
    n = x.shape[0]
    reconstruction = -reconstruction_log_likelihood(out.x_hat, x, "bernoulli").mean()
    kl = kl_divergence(out.mu.reshape(n, -1), out.logvar.reshape(n, -1)).mean()
    return reconstruction + beta * kl


def psnr(images: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: 10 log₁₀(1 / MSE)."""
    mse = float(np.mean((np.asarray(images, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


# ============================================================ 5. the cross-attention block
class SpatialTransformer(nn.Module):
    """The reference implementation's "spatial transformer": a U-Net feature map reads the caption.

    For φ (B, C, H, W) and the context τ_θ(y) (B, M, d_τ) with its key-padding mask:

        h = W_in · GroupNorm(φ)                          1×1 projection, flattened to N = H·W tokens
        h = h + SelfAttention(LayerNorm(h))              pixels look at each other
        h = h + CrossAttention(LayerNorm(h), τ_θ(y))     pixels read the words: Q from h, K and V
                                                         from τ_θ(y), no biases, padding masked
        h = h + FeedForward(LayerNorm(h))                W₂ GELU(W₁ h + b₁) + b₂, per pixel
        out = φ + W_out · h                              1×1 projection back, W_out = 0 at first

    W_out starts at zero, so a new block is the identity (out = φ): adding it to a U-Net
    changes nothing until training finds a use for the caption. The self-attention is
    cross-attention of h to itself (``nn.CrossAttention`` with context h).

    ``forward(..., return_attention=True)`` also returns the cross-attention weights
    A (B, heads, H·W, M): where each word is read (the demo draws them).
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 1, ff_mult: int = 4) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"SpatialTransformer: channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.channels, self.context_dim, self.num_heads = channels, context_dim, num_heads
        self.norm = nn.GroupNorm(num_groups_for(channels), channels)
        self.proj_in = nn.Linear(channels, channels)  # a 1×1 convolution on the flattened pixels
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = nn.CrossAttention(channels, num_heads)  # self-attention: context = h
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = nn.CrossAttention(channels, num_heads, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(
            nn.Linear(channels, ff_mult * channels), nn.GELU(), nn.Linear(ff_mult * channels, channels)
        )
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, x: Tensor, context: Tensor, key_padding_mask: Any = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, c, height, width = x.shape
        h = self.proj_in(self.norm(x).reshape(b, c, height * width).transpose(1, 2))  # (B, N, C)
        normed = self.norm1(h)
        h = h + self.attn1(normed, normed)
        attended, weights = self.attn2(self.norm2(h), context, key_padding_mask, need_weights=True)
        h = h + attended
        h = h + self.ff(self.norm3(h))
        out = x + self.proj_out(h).transpose(1, 2).reshape(b, c, height, width)
        return (out, weights) if return_attention else out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, context_dim={self.context_dim}, num_heads={self.num_heads}"


# ======================================================== 3. the U-Net with cross-attention
class CrossAttentionUNet(nn.Module):
    """ε_θ(z_t, t, τ_θ(y)): ``unet.UNet``'s encoder-decoder with ``SpatialTransformer`` blocks.

    conv_in → per level: ResBlock [→ SpatialTransformer], then halve (not after the last)
    → middle: ResBlock → SpatialTransformer → ResBlock → per level in reverse: [double],
    concatenate the skip, ResBlock [→ SpatialTransformer] → GroupNorm, SiLU, conv_out (zero).

    The transformers sit at the levels listed in ``attention_levels`` (0 = full
    resolution; by default every level but the first, i.e. the lower resolutions) and in
    the middle. ``forward(z_t, t, context, key_padding_mask)``: context (B, M,
    context_dim) is τ_θ(y).

    ``pooled_context=True`` also adds W_p · mean_j τ_θ(y)_j (the mean over the caption's
    real tokens) to the time embedding, as SDXL adds its pooled text embedding: every
    ResBlock then hears the whole caption at once, which teaches global attributes (which
    digit, which colour) much faster than cross-attention alone. The cross-attention
    still decides where each word is drawn.
    """

    def __init__(
        self,
        in_channels: int = 4,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2),
        context_dim: int = 64,
        num_heads: int = 4,
        attention_levels: Sequence[int] | None = None,
        time_dim: int | None = None,
        dropout: float = 0.0,
        pooled_context: bool = False,
    ) -> None:
        super().__init__()
        if not channel_mults:
            raise ValueError("CrossAttentionUNet: channel_mults needs at least one level")
        levels = len(channel_mults)
        attention_levels = tuple(range(1, levels)) if attention_levels is None else tuple(attention_levels)
        if any(not 0 <= level < levels for level in attention_levels):
            raise ValueError(
                f"CrossAttentionUNet: attention_levels must lie in 0..{levels - 1} (one per entry of channel_mults), "
                f"got {attention_levels}"
            )
        time_dim = time_dim or 4 * base_channels
        self.in_channels, self.context_dim, self.num_levels = in_channels, context_dim, levels
        self.attention_levels = attention_levels
        self.time_embed = time_mlp(base_channels, time_dim)
        self.pooled_proj = nn.Linear(context_dim, time_dim) if pooled_context else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]

        def transformer(level: int, width: int) -> nn.Module:
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
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_latent_shape(self, z: Tensor) -> None:
        factor = 2 ** (self.num_levels - 1)
        if z.ndim != 4 or z.shape[1] != self.in_channels or z.shape[2] % factor or z.shape[3] % factor:
            raise ValueError(
                f"CrossAttentionUNet: expected latents (B, {self.in_channels}, h, w) with h and w divisible by "
                f"{factor} (the U-Net halves them {self.num_levels - 1} times), got {tuple(z.shape)}"
            )

    def forward(
        self,
        z: Tensor,
        t: Tensor,
        context: Tensor,
        key_padding_mask: Any = None,
        attention_maps: list[Tensor] | None = None,
    ) -> Tensor:
        """ε̂ (B, c, h, w). ``attention_maps``, if a list, receives every transformer's
        cross-attention weights (B, heads, h_i·w_i, M), in the order they run."""
        self.check_latent_shape(z)
        if context.ndim != 3 or context.shape[0] != z.shape[0] or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"CrossAttentionUNet: context must be (B, M, context_dim) = ({z.shape[0]}, M, {self.context_dim}), "
                f"the text encoder's features, got {tuple(context.shape)}"
            )
        temb = self.time_embed(t)
        if self.pooled_proj is not None:
            temb = temb + self.pooled_proj(masked_mean(context, key_padding_mask))

        def attend(block: nn.Module, h: Tensor) -> Tensor:
            if isinstance(block, nn.Identity):
                return h
            if attention_maps is None:
                return block(h, context, key_padding_mask)
            h, weights = block(h, context, key_padding_mask, return_attention=True)
            attention_maps.append(weights)
            return h

        h = self.conv_in(z)
        skips = []
        for res, attn, down in zip(self.down_res, self.down_attn, self.downsample):
            h = attend(attn, res(h, temb))
            skips.append(h)
            h = down(h)
        h = self.mid2(attend(self.mid_attn, self.mid1(h, temb)), temb)
        for up, res, attn in zip(self.upsample, self.up_res, self.up_attn):
            h = attend(attn, res(mg.cat([up(h), skips.pop()], dim=1), temb))
        return self.conv_out(F.silu(self.norm_out(h)))


def masked_mean(context: Tensor, key_padding_mask: Any = None) -> Tensor:
    """The mean of the context's features over its real tokens: (B, M, d), (B, M) -> (B, d)."""
    if key_padding_mask is None:
        return context.mean(dim=1)
    mask = key_padding_mask if isinstance(key_padding_mask, Tensor) else mg.tensor(np.asarray(key_padding_mask))
    keep = (~mask.to(context.device)).to(context.dtype).unsqueeze(-1)  # 1 at real tokens, 0 at padding
    return (context * keep).sum(dim=1) / keep.sum(dim=1)


# ========================================================================= captions
def encode_captions(tokenizer: Any, captions: str | Sequence[str], context_length: int, device: Any = "cpu"):
    """Captions -> (tokens int64 (B, L), key_padding_mask bool (B, L)) tensors on ``device``.

    An unknown word raises the tokenizer's ValueError, which names the word and the
    vocabulary file.
    """
    tokens, mask = tokenizer.encode(captions, context_length)
    return mg.tensor(tokens, device=device), mg.tensor(mask, device=device)


def drop_captions(
    tokens: Tensor, key_padding_mask: Tensor, null: tuple[Tensor, Tensor], p_uncond: float = 0.1, drop: Any = None
) -> tuple[Tensor, Tensor]:
    """Caption dropout: each caption becomes the empty caption ∅ (``null``: its tokens and
    mask, one row) with probability ``p_uncond``, so the network learns ε_θ(z_t, t, ∅) too.
    The tokens and their mask are dropped together (``guidance.drop_condition``)."""
    return drop_condition((tokens, key_padding_mask), null, p_uncond, drop)


# ==================================================================== the whole model
class LatentDiffusion(nn.Module):
    """Autoencoder (frozen after its own training), text encoder τ_θ and U-Net ε_θ, with the latent scale.

    * ``fit_latent_scale(images)``: s = 1 / std(E(x)) on the first batch, stored in the
      buffer ``latent_scale`` (saved in ``state_dict``). Until then it is NaN, and
      ``encode``/``decode`` refuse to run, so forgetting it cannot go unnoticed.
    * ``encode(x)`` = s · μ_φ(x) (the encoder's mean: the KL term keeps σ tiny, and a
      deterministic z_0 makes inpainting's known region exact); ``decode(z)`` = σ(D(z / s)).
    * ``forward(z_t, t, tokens, key_padding_mask)`` = ε_θ(z_t, t, τ_θ(y)): the network the
      samplers and ``guidance`` call, with the caption's (tokens, mask) as the condition.
    * ``loss``, ``sample``, ``inpaint``: training and the two uses.

    ``prediction`` says what the U-Net's output means. ``"eps"``: the noise ε itself, with
    the loss ‖ε − ε̂‖². ``"v"`` (Salimans & Ho 2022): the velocity v = √ᾱ_t ε − √(1−ᾱ_t) z_0,
    with the loss ‖v − v̂‖², and ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) z_t for the samplers. The two differ
    in how they weight the noise levels: in terms of ẑ_0 the ε loss is SNR_t ‖z_0 − ẑ_0‖²,
    almost nothing at high noise, while the v loss is (1 + SNR_t) ‖z_0 − ẑ_0‖², at least
    ‖z_0 − ẑ_0‖². At high noise the model decides where the digit goes and which digit it
    is; with the ε loss those decisions are learned last, with the v loss they are not.
    """

    def __init__(
        self,
        autoencoder: KLAutoencoder,
        text_encoder: nn.Module,
        unet: CrossAttentionUNet,
        schedule: NoiseSchedule,
        null_tokens: Any,
        null_mask: Any,
        prediction: str = "eps",
    ) -> None:
        super().__init__()
        if prediction not in ("eps", "v"):
            raise ValueError(f"LatentDiffusion: prediction must be 'eps' or 'v', got {prediction!r}")
        self.prediction = prediction
        width = getattr(text_encoder, "width", None)
        if width is not None and width != unet.context_dim:
            raise ValueError(
                f"LatentDiffusion: the text encoder's width {width} must equal the U-Net's cross-attention "
                f"context_dim {unet.context_dim}"
            )
        if unet.in_channels != autoencoder.latent_channels:
            raise ValueError(
                f"LatentDiffusion: the U-Net takes {unet.in_channels} channels but the autoencoder's latent has "
                f"{autoencoder.latent_channels}"
            )
        self.autoencoder, self.text_encoder, self.unet = autoencoder, text_encoder, unet
        self.schedule = schedule
        self.register_buffer("latent_scale", mg.tensor(float("nan")))
        # ∅, the empty caption (just <end>), as one row of tokens and mask: not learned.
        self.register_buffer("null_tokens", mg.tensor(np.asarray(null_tokens).reshape(1, -1)), persistent=False)
        self.register_buffer("null_mask", mg.tensor(np.asarray(null_mask).reshape(1, -1)), persistent=False)

    # ------------------------------------------------------------ the latent scale
    def diffusion_parameters(self) -> list[nn.Parameter]:
        """What the diffusion stage trains: τ_θ and ε_θ (the autoencoder stays frozen)."""
        return list(self.text_encoder.parameters()) + list(self.unet.parameters())

    def fit_latent_scale(self, images: Tensor) -> float:
        """s = 1 / std(μ_φ(x)) over the batch ``images`` (the first training batch); stored and returned."""
        with mg.no_grad():
            mu, _ = self.autoencoder.encode(images)
            std = float(mu.reshape(-1).var(correction=0).item()) ** 0.5
        if not std > 0.0:
            raise ValueError("fit_latent_scale: the latents of this batch have zero spread; use real images")
        self.latent_scale.data[...] = 1.0 / std
        return 1.0 / std

    def _scale(self) -> float:
        scale = float(self.latent_scale.item())
        if not math.isfinite(scale):
            raise RuntimeError(
                "LatentDiffusion: the latent scale is not set: call fit_latent_scale(first_batch) before training "
                "(or load a checkpoint that has it)"
            )
        return scale

    def encode(self, images: Tensor) -> Tensor:
        """z_0 = s · μ_φ(x): the latent diffusion works on (no graph: the autoencoder is frozen)."""
        scale = self._scale()
        with mg.no_grad():
            mu, _ = self.autoencoder.encode(images)
        return mu * scale

    def decode(self, z: Tensor) -> Tensor:
        """x = σ(D(z_0 / s)), images in [0, 1]."""
        scale = self._scale()
        with mg.no_grad():
            return self.autoencoder.decode(z * (1.0 / scale)).sigmoid()

    # ------------------------------------------------------------------ ε_θ
    def null_condition(self, batch: int = 1) -> tuple[Tensor, Tensor]:
        """∅: the empty caption's (tokens, mask) for ``batch`` samples."""
        return (
            self.null_tokens.expand(batch, self.null_tokens.shape[1]),
            self.null_mask.expand(batch, self.null_mask.shape[1]),
        )

    def forward(
        self,
        z: Tensor,
        t: Tensor,
        tokens: Tensor,
        key_padding_mask: Tensor,
        attention_maps: list[Tensor] | None = None,
    ) -> Tensor:
        """ε_θ(z_t, t, τ_θ(y)) (converted from v̂ when ``prediction="v"``)."""
        out = self.network(z, t, tokens, key_padding_mask, attention_maps)
        if self.prediction == "eps":
            return out
        alpha_bar = self.schedule.alpha_bars_at(t, z)
        return alpha_bar.sqrt() * out + (1.0 - alpha_bar).sqrt() * z  # ε̂ = √ᾱ v̂ + √(1−ᾱ) z_t

    def network(
        self,
        z: Tensor,
        t: Tensor,
        tokens: Tensor,
        key_padding_mask: Tensor,
        attention_maps: list[Tensor] | None = None,
    ) -> Tensor:
        """The U-Net's raw output (ε̂ or v̂): encode the caption, then run the U-Net with it as the context."""
        if tokens.ndim != 2 or tokens.shape[0] != z.shape[0] or tuple(key_padding_mask.shape) != tuple(tokens.shape):
            raise ValueError(
                f"LatentDiffusion: tokens and key_padding_mask must both be (B, L) with B = {z.shape[0]} latents, "
                f"got {tuple(tokens.shape)} and {tuple(key_padding_mask.shape)}"
            )
        context = self.text_encoder(tokens, key_padding_mask)
        return self.unet(z, t, context, key_padding_mask, attention_maps)

    def loss(
        self,
        z0: Tensor,
        tokens: Tensor,
        key_padding_mask: Tensor,
        p_uncond: float = 0.1,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        drop: Any = None,
    ) -> Tensor:
        """L_LDM on scaled latents z_0 with caption dropout ``p_uncond``, t ~ U{1..T}, ε ~ N(0, I):

            "eps":  mean ‖ε − ε_θ(z_t, t, τ_θ(y))‖²,     "v":  mean ‖v − v_θ(z_t, t, τ_θ(y))‖²,
            z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε,   v = √ᾱ_t ε − √(1−ᾱ_t) z_0.

        ``t`` (B,), ``noise`` (like z_0) and ``drop`` (bool (B,), which captions become ∅) may
        be given for deterministic checks.
        """
        condition = drop_captions(tokens, key_padding_mask, self.null_condition(), p_uncond, drop)
        if self.prediction == "eps":
            return ddpm_loss(self, self.schedule, z0, y=condition, t=t, noise=noise)
        if t is None:
            t = mg.randint(0, self.schedule.T, (z0.shape[0],), device=z0.device)
        if noise is None:
            noise = mg.randn_like(z0)
        alpha_bar = self.schedule.alpha_bars_at(t, z0)
        z_t = q_sample(self.schedule, z0, t, noise)
        v = alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * z0
        return F.mse_loss(self.network(z_t, t, *condition), v)

    # -------------------------------------------------------------------- sampling
    def sample(
        self,
        tokens: Tensor,
        key_padding_mask: Tensor,
        guidance_scale: float = 3.0,
        num_steps: int = 50,
        z_T: Tensor | None = None,
        eta: float = 0.0,
        progress: Callable[[Any], Any] | None = None,
        trajectory: Trajectory | None = None,
        after_step: Callable[[Tensor, int], Tensor] | None = None,
        decode: bool = True,
        clip_x0: float | None = None,
        attention_maps: list[list[Tensor]] | None = None,
    ) -> Tensor:
        """DDIM with classifier-free guidance w in latent space, then D: images (B, 3, H, W) in [0, 1]
        (or the latents z_0 with ``decode=False``). ``z_T`` defaults to N(0, I) noise; ``clip_x0``
        optionally clips each ẑ_0 to ±clip_x0 (the scaled latents have unit variance).

        ``attention_maps``, if a list, receives for every network evaluation the list of the
        transformers' cross-attention weights (B', heads, h_i·w_i, M); with guidance (w ≠ 1) the
        batch is doubled, B' = 2B, the conditional half first.
        """
        b = tokens.shape[0]
        if z_T is None:
            c, h, w = self.latent_shape()
            z_T = mg.randn(b, c, h, w, device=tokens.device)
        network: Callable[..., Tensor] = self
        if attention_maps is not None:

            def network(z: Tensor, t: Tensor, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
                maps: list[Tensor] = []
                eps = self(z, t, tokens, key_padding_mask, attention_maps=maps)
                attention_maps.append(maps)
                return eps

        z0 = ddim_sample(
            network,
            self.schedule,
            z_T,
            num_steps=num_steps,
            eta=eta,
            y=(tokens, key_padding_mask),
            guidance_scale=guidance_scale,
            null=self.null_condition(),
            trajectory=trajectory,
            progress=progress,
            after_step=after_step,
            clip_x0=clip_x0,
        )
        return self.decode(z0) if decode else z0

    def latent_shape(self, image_size: int = 32) -> tuple[int, int, int]:
        return self.autoencoder.latent_shape(image_size, image_size)

    def inpaint(
        self,
        images: Tensor,
        known: Any,
        tokens: Tensor,
        key_padding_mask: Tensor,
        guidance_scale: float = 3.0,
        num_steps: int = 50,
        z_T: Tensor | None = None,
        known_noise: Sequence[Tensor] | None = None,
        trajectory: Trajectory | None = None,
        progress: Callable[[Any], Any] | None = None,
        decode: bool = True,
    ) -> Tensor:
        """Inpainting in latent space: keep the ``known`` pixels of ``images``, generate the rest under the caption.

        ``known`` (B, 1, H, W) or (H, W), bool or 0/1: True where the original is kept. It
        is reduced to the latent grid (``latent_mask``), m = 1 on the known latent cells.
        Every DDIM state z_t, from the start on, gets

            z_t ← m ⊙ q_sample(z_0, t) + (1 − m) ⊙ z_t,    z_0 = s · E(original),

        so the known cells are always the original noised to the current step (and exactly
        z_0 at the end), and the network fills in the rest in agreement with them.
        ``known_noise`` gives the ε of q_sample for the start and every step but the last
        (num_steps tensors like z_0; default: fresh noise), so a check can recompute them.
        Returns the decoded images (or z_0 with ``decode=False``).
        """
        z0 = self.encode(images)
        m = latent_mask(known, images.shape, self.autoencoder.factor).to(z0.device).to(z0.dtype)
        steps = ddim_timesteps(self.schedule.T, num_steps)
        if known_noise is not None and len(known_noise) != len(steps):
            raise ValueError(
                f"inpaint: known_noise needs num_steps = {len(steps)} tensors (the start, then after every step but "
                f"the last), got {len(known_noise)}"
            )
        calls = iter(range(len(steps) + 1))

        def paste(z: Tensor, t: int) -> Tensor:
            """The known cells: the original noised to step t (t = −1: the original itself)."""
            i = next(calls)
            if t < 0:
                return m * z0 + (1.0 - m) * z
            noise = known_noise[i] if known_noise is not None else mg.randn_like(z0)
            t_batch = mg.full((z0.shape[0],), t, dtype=mg.int64, device=z0.device)
            return m * q_sample(self.schedule, z0, t_batch, noise) + (1.0 - m) * z

        if z_T is None:
            z_T = mg.randn_like(z0)
        z_T = paste(z_T, steps[0])
        return self.sample(
            tokens,
            key_padding_mask,
            guidance_scale,
            num_steps,
            z_T=z_T,
            progress=progress,
            trajectory=trajectory,
            after_step=paste,
            decode=decode,
        )

    def cross_attention_maps(self, z: Tensor, t: Tensor, tokens: Tensor, key_padding_mask: Tensor) -> list[Tensor]:
        """Every SpatialTransformer's cross-attention weights at (z_t, t), averaged over heads:
        a list of (B, h_i·w_i, M), one entry per transformer in the order they run."""
        maps: list[Tensor] = []
        with mg.no_grad():
            self(z, t, tokens, key_padding_mask, attention_maps=maps)
        return [m.mean(dim=1) for m in maps]


def latent_mask(known: Any, image_shape: Sequence[int], factor: int) -> Tensor:
    """The pixel mask ``known`` ((B, 1, H, W) or (H, W), True = keep) on the latent grid:
    (B or 1, 1, H/f, W/f) float, 1 where all f×f pixels of the cell are known."""
    mask = known if isinstance(known, Tensor) else mg.tensor(np.asarray(known))
    b, _, height, width = image_shape
    valid = ((height, width), (1, 1, height, width), (b, 1, height, width))
    if tuple(mask.shape) not in valid:
        raise ValueError(
            f"inpaint: the mask must have the image's height and width, shaped (H, W), (1, 1, H, W) or "
            f"(B, 1, H, W) = {valid[2]}, got {tuple(mask.shape)} for images {tuple(image_shape)}"
        )
    if height % factor or width % factor:
        raise ValueError(f"inpaint: H and W must be divisible by the autoencoder's factor {factor}")
    mask = mask.reshape(-1, 1, height, width).to(mg.float32)
    # A cell is known when its darkest (least known) pixel is: −max(−m) is min-pooling.
    return -F.max_pool2d(-mask, factor)
