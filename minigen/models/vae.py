"""The variational autoencoder (Kingma & Welling, 2014): encoder, reparameterisation, ELBO.

An encoder q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)) maps an image to a distribution over
latent codes; a decoder p_θ(x|z) maps a code back to a distribution over images. Both
are trained by maximising the evidence lower bound

    log p(x) ≥ ELBO(x) = E_{q_φ(z|x)}[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z)),   p(z) = N(0, I)

i.e. by minimising −ELBO = reconstruction loss + KL term (``vae_loss``).

Contents (reading order): ``reparameterize``, ``kl_divergence``,
``reconstruction_log_likelihood``, ``vae_loss``; the models ``MLPVAE`` and ``ConvVAE``;
the latent-space tools ``sample_prior``, ``interpolate``, ``attribute_vector`` and
``apply_attribute``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.tensor import Tensor


# =========================================================================== the maths
def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """The reparameterisation trick:  z = μ + σ ⊙ ε,  σ = exp(½ log σ²),  ε ~ N(0, I).

    Sampling z ~ N(μ, σ²) directly is not differentiable in μ and σ. Writing the sample
    as a deterministic function of (μ, σ) and outside noise ε moves the randomness out
    of the path of the gradient:  ∂z/∂μ = 1,  ∂z/∂σ = ε. The noise ``eps`` is an
    explicit argument (draw it with ``mg.randn_like(mu)``), so a gradient check can hold
    it fixed.
    """
    return mu + (0.5 * logvar).exp() * eps


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) in closed form, one value per sample (sum over dims):

        KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)

    It is 0 exactly when μ = 0 and σ = 1 (the code is the prior), and grows when the
    encoder moves a code away from the origin or makes it more (or less) certain.
    Shapes: ``mu``, ``logvar`` (N, d) → (N,).
    """
    return -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(dim=-1)


def reconstruction_log_likelihood(
    x_hat: Tensor, x: Tensor, likelihood: str = "bernoulli", sigma: float = 1.0
) -> Tensor:
    """log p_θ(x|z) per sample (summed over pixels), for a decoder output ``x_hat``.

    * ``"bernoulli"``: ``x_hat`` are logits l, pixels x ∈ [0, 1]:
      log p(x|z) = Σ_i [x_i log σ(l_i) + (1 − x_i) log(1 − σ(l_i))] = −Σ_i BCE(l_i, x_i),
      computed from the logits, so it is stable.
    * ``"gaussian"``: ``x_hat`` is the mean, with a fixed standard deviation ``sigma``:
      log p(x|z) = −Σ_i [(x_i − x̂_i)² / 2σ² + ½ log 2πσ²].
    """
    n = x.shape[0]
    if likelihood == "bernoulli":
        bce = F.binary_cross_entropy_with_logits(x_hat, x, reduction="none")
        return -bce.reshape(n, -1).sum(dim=1)
    if likelihood == "gaussian":
        per_pixel = (x_hat - x).square() * (0.5 / sigma**2) + 0.5 * math.log(2.0 * math.pi * sigma**2)
        return -per_pixel.reshape(n, -1).sum(dim=1)
    raise ValueError(f"unknown likelihood {likelihood!r}; choose 'bernoulli' or 'gaussian'")


class VAELoss(NamedTuple):
    """−ELBO and its two parts, each a batch mean in nats per sample."""

    loss: Tensor  # −ELBO = reconstruction + β · KL, what the optimiser minimises
    reconstruction: Tensor  # −E_q[log p(x|z)], estimated with one z per sample
    kl: Tensor  # KL(q(z|x) ‖ p(z))


def vae_loss(
    x_hat: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    sigma: float = 1.0,
) -> VAELoss:
    """−ELBO(x) = −log p_θ(x|z) + β · KL(q_φ(z|x) ‖ p(z)), z = μ + σ ⊙ ε, averaged over the batch.

    The expectation E_q[log p(x|z)] is estimated with the single sample z that produced
    ``x_hat``. β = 1 is the ELBO; β > 1 (β-VAE) trades reconstruction for a latent
    space closer to the prior.
    """
    reconstruction = -reconstruction_log_likelihood(x_hat, x, likelihood, sigma).mean()
    kl = kl_divergence(mu, logvar).mean()
    return VAELoss(reconstruction + beta * kl, reconstruction, kl)


# ============================================================================= models
class VAEOutput(NamedTuple):
    x_hat: Tensor  # decoder output: logits (Bernoulli) or means (Gaussian)
    mu: Tensor
    logvar: Tensor
    z: Tensor


class _VAE(nn.Module):
    """What every VAE shares: encode → reparameterise → decode."""

    latent_dim: int

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, eps: Tensor | None = None) -> VAEOutput:
        """x → (μ, log σ²) → z = μ + σ ⊙ ε → x̂. ``eps`` defaults to fresh N(0, I) noise."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = mg.randn_like(mu)
        z = reparameterize(mu, logvar, eps)
        return VAEOutput(self.decode(z), mu, logvar, z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder's image of the encoder's mean code, x̂ = σ(decode(μ(x))), in [0, 1].

        (For a Gaussian decoder use ``decode`` directly: its output is already the mean.)
        """
        mu, _ = self.encode(x)
        return self.decode(mu).sigmoid()


class MLPVAE(_VAE):
    """A VAE with MLP encoder and decoder on flattened images.

    encoder: x (N, *shape) → flatten → [Linear, ReLU]* → h → μ = Linear(h), log σ² = Linear(h)
    decoder: z (N, d) → [Linear, ReLU]* → Linear → logits, reshaped to (N, *shape)
    """

    def __init__(self, data_shape: Sequence[int] = (1, 16, 16), latent_dim: int = 8, hidden: Sequence[int] = (256,)):
        super().__init__()
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim
        size = math.prod(self.data_shape)
        encoder: list[nn.Module] = []
        fan_in = size
        for width in hidden:
            encoder += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        self.encoder = nn.Sequential(*encoder)
        self.to_mu = nn.Linear(fan_in, latent_dim)
        self.to_logvar = nn.Linear(fan_in, latent_dim)
        decoder: list[nn.Module] = []
        fan_in = latent_dim
        for width in reversed(hidden):
            decoder += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        decoder.append(nn.Linear(fan_in, size))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x.reshape(x.shape[0], -1))
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).reshape((z.shape[0], *self.data_shape))


def downsampling_convs(channels: int, base_channels: int) -> nn.Sequential:
    """x (N, C, H, W) ─Conv(k4,s2,p1), ReLU→ (N, c, H/2, W/2) ─Conv(k4,s2,p1), ReLU→ (N, 2c, H/4, W/4)."""
    return nn.Sequential(
        nn.Conv2d(channels, base_channels, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(base_channels, 2 * base_channels, 4, stride=2, padding=1),
        nn.ReLU(),
    )


def upsampling_convs(base_channels: int, channels: int) -> nn.Sequential:
    """h (N, 2c, H/4, W/4) ─ConvT(k4,s2,p1), ReLU→ (N, c, H/2, W/2) ─ConvT(k4,s2,p1)→ logits (N, C, H, W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(2 * base_channels, base_channels, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(base_channels, channels, 4, stride=2, padding=1),
    )


class ConvVAE(_VAE):
    """A convolutional VAE: strided convolutions down, transposed convolutions up.

    encoder: x (N, C, H, W) ─Conv(k4,s2,p1), ReLU→ (N, c, H/2, W/2)
             ─Conv(k4,s2,p1), ReLU→ (N, 2c, H/4, W/4) ─flatten→ μ, log σ² (Linear heads)
    decoder: z ─Linear, ReLU→ (N, 2c, H/4, W/4) ─ConvT(k4,s2,p1), ReLU→ (N, c, H/2, W/2)
             ─ConvT(k4,s2,p1)→ logits (N, C, H, W)
    """

    def __init__(self, channels: int = 1, image_size: int = 16, latent_dim: int = 8, base_channels: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ConvVAE: image_size must be a multiple of 4, got {image_size}")
        self.latent_dim, self.base_channels = latent_dim, base_channels
        self.small = image_size // 4
        flat = 2 * base_channels * self.small**2
        self.encoder = downsampling_convs(channels, base_channels)
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        self.decoder = upsampling_convs(base_channels, channels)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x).reshape(x.shape[0], -1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        h = self.from_z(z).relu().reshape(z.shape[0], 2 * self.base_channels, self.small, self.small)
        return self.decoder(h)


# ===================================================================== the latent space
def sample_prior(n: int, latent_dim: int, device: Any = "cpu") -> Tensor:
    """n codes from the prior p(z) = N(0, I); decode them to generate new images."""
    return mg.randn(n, latent_dim, device=device)


def interpolate(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Codes on the straight line between two latents:  z = α z_A + (1 − α) z_B.

    Row i has α = 1 − i/(steps − 1), so the rows run from z_A (row 0) to z_B (last row).
    ``z_a``, ``z_b``: (d,) → (steps, d). Decoding the rows morphs one image into the other.
    """
    if steps < 2:
        raise ValueError(f"interpolate: steps must be at least 2, got {steps}")
    alpha = mg.linspace(1.0, 0.0, steps, dtype=z_a.dtype, device=z_a.device).reshape(steps, 1)
    return alpha * z_a.reshape(1, -1) + (1.0 - alpha) * z_b.reshape(1, -1)


def attribute_vector(latents: Tensor, has_attribute: Tensor) -> Tensor:
    """The direction of an attribute in latent space:

        v = mean{ z_i : i has the attribute } − mean{ z_i : i does not }

    ``latents`` (N, d), e.g. the encoder means μ(x_i); ``has_attribute`` (N,) bool.
    Adding v to a code adds the attribute (thick strokes, a smile...) to its image.
    """
    if has_attribute.shape != (latents.shape[0],):
        raise ValueError(
            f"attribute_vector: has_attribute must have shape ({latents.shape[0]},), got {tuple(has_attribute.shape)}"
        )
    if not bool(has_attribute.any()) or bool(has_attribute.all()):
        raise ValueError("attribute_vector: need samples both with and without the attribute")
    # Means as weighted sums (no boolean indexing): the same code on every backend.
    with_attr = has_attribute.to(latents.dtype).reshape(-1, 1)
    without = 1.0 - with_attr
    n_with, n_without = with_attr.sum(), without.sum()
    return (with_attr * latents).sum(dim=0) / n_with - (without * latents).sum(dim=0) / n_without


def apply_attribute(z: Tensor, vector: Tensor, factors: Sequence[float]) -> Tensor:
    """z + f · v for each factor f: (d,) → (len(factors), d); f < 0 removes the attribute."""
    f = mg.tensor(list(factors), dtype=z.dtype, device=z.device).reshape(-1, 1)
    return z.reshape(1, -1) + f * vector.reshape(1, -1)
