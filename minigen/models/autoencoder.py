"""The plain (deterministic) autoencoder: an encoder to a small code, a decoder back.

An autoencoder learns two maps, an encoder f_φ and a decoder g_θ, so that

    z = f_φ(x),     x̂ = g_θ(z) ≈ x,          minimise  L_rec(x, x̂)

with nothing else in the loss. With a 2-D code every image becomes a point of the plane,
which can be drawn. The lecture's point is what that plane looks like: nothing asks the
codes to fill it. The encoder puts each class wherever reconstruction is easiest, with
empty space between the clusters and no particular scale, so

* decoding points *between* the clusters gives garbage (the decoder never saw them), and
* sampling z ~ N(0, I) lands wherever N(0, I) happens to overlap the codes: mostly
  nowhere useful, or effectively onto the few training codes near the origin.

The VAE (``models/vae.py``) adds KL(q(z|x) ‖ N(0, I)) to the loss, which pulls every code
towards the origin and gives it a spread, so the codes tile the plane densely and N(0, I)
is where they are (``demos/latent_spaces.py`` measures both).

Contents:

* ``ConvAutoencoder``: a vector bottleneck (e.g. 2-D), the VAE's ``ConvVAE`` layer for
  layer but with one deterministic head z = W h instead of (μ, log σ²);
* ``reconstruction_loss``: the Bernoulli negative log-likelihood the VAE uses, so the two
  models differ only in the KL term;
* ``ConvEncoder`` and ``ConvDecoder``: a *spatial* code, an image to an (h × w) grid of
  vectors and back, the halves of the VQ-VAE (``models/vq.py``) and of the latent
  diffusion autoencoder; ``Autoencoder`` joins them into the continuous autoencoder the
  VQ-VAE is compared with.
"""

from __future__ import annotations

import minigen.nn as nn
import minigen.nn.functional as F
from minigen.models.vae import downsampling_convs, upsampling_convs
from minigen.tensor import Tensor


# ======================================================================== vector code
class ConvAutoencoder(nn.Module):
    """A deterministic convolutional autoencoder with a ``latent_dim``-dimensional code.

    encoder: x (N, C, H, W) ─Conv(k4,s2,p1), ReLU→ (N, c, H/2, W/2)
             ─Conv(k4,s2,p1), ReLU→ (N, 2c, H/4, W/4) ─flatten→ z = Linear(h)       (N, d)
    decoder: z ─Linear, ReLU→ (N, 2c, H/4, W/4) ─ConvT(k4,s2,p1), ReLU→ (N, c, H/2, W/2)
             ─ConvT(k4,s2,p1)→ logits (N, C, H, W)

    The same layers as ``vae.ConvVAE`` (same names, same sizes), with one head ``to_z``
    where the VAE has ``to_mu`` and ``to_logvar``: the difference between the two models
    is the KL term and the sampling of z, nothing else.
    """

    def __init__(self, channels: int = 1, image_size: int = 16, latent_dim: int = 2, base_channels: int = 32) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"ConvAutoencoder: image_size must be a multiple of 4, got {image_size}")
        if latent_dim < 1:
            raise ValueError(f"ConvAutoencoder: latent_dim must be at least 1, got {latent_dim}")
        self.latent_dim, self.base_channels = latent_dim, base_channels
        self.small = image_size // 4
        flat = 2 * base_channels * self.small**2
        self.encoder = downsampling_convs(channels, base_channels)
        self.to_z = nn.Linear(flat, latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        self.decoder = upsampling_convs(base_channels, channels)

    def encode(self, x: Tensor) -> Tensor:
        """z = f_φ(x): (N, C, H, W) → (N, d)."""
        return self.to_z(self.encoder(x).reshape(x.shape[0], -1))

    def decode(self, z: Tensor) -> Tensor:
        """g_θ(z): (N, d) → pixel logits (N, C, H, W); ``.sigmoid()`` gives the image."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ConvAutoencoder.decode: expected codes (N, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.from_z(z).relu().reshape(z.shape[0], 2 * self.base_channels, self.small, self.small)
        return self.decoder(h)

    def forward(self, x: Tensor) -> Tensor:
        """x̂ = g_θ(f_φ(x)) as logits."""
        return self.decode(self.encode(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        """The reconstruction as an image in [0, 1]: σ(g_θ(f_φ(x)))."""
        return self(x).sigmoid()


def reconstruction_loss(logits: Tensor, x: Tensor) -> Tensor:
    """−log p_θ(x|z) for a Bernoulli decoder, summed over pixels, averaged over the batch:

        L_rec = (1/N) Σ_n Σ_i BCE(l_ni, x_ni)

    The VAE's reconstruction term (``vae.reconstruction_log_likelihood``): the autoencoder
    minimises exactly this, the VAE this plus KL.
    """
    if tuple(logits.shape) != tuple(x.shape):
        raise ValueError(f"reconstruction_loss: logits shape {tuple(logits.shape)} != images shape {tuple(x.shape)}")
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return bce.reshape(x.shape[0], -1).sum(dim=1).mean()


# ======================================================================== spatial code
class ConvEncoder(nn.Module):
    """An image to a grid of code vectors, halving the resolution ``downsamples`` times:

        x (N, C, H, W) ─Conv3×3, ReLU→ (N, c, H, W)
          ─[Conv4×4 stride 2, ReLU]× downsamples→ (N, c', H/2^L, W/2^L)    (c' = 2c after the first)
          ─Conv3×3, ReLU ─Conv1×1→ z_e (N, D, H/2^L, W/2^L)                D = latent_channels

    Each code vector z_e[:, :, i, j] describes one (2^L × 2^L)-pixel patch of the image
    (more, counting the receptive field). The last layer is linear (no ReLU), so codes can
    take any sign, as a codebook of vectors needs.
    """

    def __init__(
        self, in_channels: int = 1, latent_channels: int = 16, hidden_channels: int = 32, downsamples: int = 2
    ) -> None:
        super().__init__()
        if downsamples < 1:
            raise ValueError(f"ConvEncoder: downsamples must be at least 1, got {downsamples}")
        self.in_channels, self.latent_channels, self.downsamples = in_channels, latent_channels, downsamples
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU()]
        width = hidden_channels
        for level in range(downsamples):
            out = 2 * hidden_channels if level == 0 else width
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**self.downsamples
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"ConvEncoder: expected images (N, {self.in_channels}, H, W) with H and W multiples of "
                f"2^downsamples = {factor}, got shape {tuple(x.shape)}"
            )
        return self.net(x)


class ConvDecoder(nn.Module):
    """A grid of code vectors back to an image, doubling the resolution ``upsamples`` times:

        z (N, D, h, w) ─Conv3×3, ReLU→ (N, c', h, w)
          ─[ConvT4×4 stride 2, ReLU]× upsamples→ (N, c, h·2^L, w·2^L)      (c = c'/2 at the last)
          ─Conv3×3→ pixels x̂ (N, C, H, W)                                  ``last_layer``

    The output is linear, trained with the squared error ‖x − x̂‖² (a sigmoid on top
    saturates early and leaves the model stuck at the mean image for hundreds of steps);
    ``x̂.clamp(0, 1)`` is the picture. ``last_layer`` is the convolution that writes the
    pixels: the VQ-GAN's adaptive weight compares the gradients of the two losses there
    (``vq.adaptive_weight``).
    """

    def __init__(
        self, latent_channels: int = 16, out_channels: int = 1, hidden_channels: int = 32, upsamples: int = 2
    ) -> None:
        super().__init__()
        if upsamples < 1:
            raise ValueError(f"ConvDecoder: upsamples must be at least 1, got {upsamples}")
        self.latent_channels = latent_channels
        width = 2 * hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU()]
        for level in range(upsamples):
            out = hidden_channels if level == upsamples - 1 else width
            layers += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        self.net = nn.Sequential(*layers)
        self.last_layer = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"ConvDecoder: expected codes (N, {self.latent_channels}, h, w) (latent_channels="
                f"{self.latent_channels}), got shape {tuple(z.shape)}"
            )
        return self.last_layer(self.net(z))


class Autoencoder(nn.Module):
    """x̂ = g_θ(f_φ(x)) with a continuous spatial code: the VQ-VAE without its quantiser.

    The baseline a VQ-VAE of the same size is compared with: the same encoder and decoder,
    trained on the same reconstruction loss, but with code vectors free to take any value
    instead of one of K codebook entries. Its reconstructions bound what quantisation costs.
    """

    def __init__(self, encoder: ConvEncoder, decoder: ConvDecoder) -> None:
        super().__init__()
        if encoder.latent_channels != decoder.latent_channels:
            raise ValueError(
                f"Autoencoder: the encoder writes {encoder.latent_channels} channels but the decoder reads "
                f"{decoder.latent_channels}"
            )
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: Tensor) -> Tensor:
        """x̂ = g_θ(f_φ(x)), linear pixels (train with ‖x − x̂‖²)."""
        return self.decoder(self.encoder(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        """The reconstruction as a picture: x̂ clamped to [0, 1]."""
        return self(x).clamp(0.0, 1.0)
