"""Generative adversarial networks: the minimax game, its losses, and the networks.

A generator G_θ maps noise z ~ p(z) = N(0, I) to a sample G_θ(z); a discriminator D_φ
says how likely its input is to be real. They play (Goodfellow et al., 2014)

    min_θ max_φ  V(θ, φ) = E_x[log D_φ(x)] + E_z[log(1 − D_φ(G_θ(z)))].

Every network here returns **logits** l, with D = σ(l). The losses are written with
``F.binary_cross_entropy_with_logits`` (BCE), which computes log σ(l) and log(1 − σ(l))
= log σ(−l) without ever forming σ(l), so they stay finite even when D is certain:

    BCE(l, 1) = −log σ(l)  = −log D           BCE(l, 0) = −log(1 − σ(l)) = −log(1 − D)

Contents (reading order):

* losses: ``discriminator_loss``, ``generator_loss_saturating``,
  ``generator_loss_nonsaturating``; WGAN-GP's ``critic_loss``,
  ``wasserstein_generator_loss`` and ``gradient_penalty``; the R1 penalty ``r1_penalty``;
* training: ``discriminator_step``, ``generator_step`` and ``train_step`` (Goodfellow's
  Algorithm 1: k discriminator steps, then one generator step) and ``TrainingLog`` (from
  ``minigen.utils``); an averaged generator for sampling is ``minigen.optim.EMA``;
* networks: ``MLPGenerator`` / ``MLPDiscriminator`` (toy 2-D data or flattened images),
  ``DCGANGenerator`` / ``DCGANDiscriminator`` (with a PatchGAN option), both
  optionally conditional on a class label (``LabelChannel``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.ops.reduction import reduced_count
from minigen.optim import EMA
from minigen.tensor import Tensor
from minigen.utils.training_log import TrainingLog  # noqa: F401  (part of this module's API)

LOSSES = ("nonsaturating", "saturating", "wgan-gp")


# ============================================================================ losses
def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's side of the minimax game, as a loss to minimise.

    D maximises  log D(x) + log(1 − D(G(z))),  i.e. it minimises

        L_D = −E_x[log D(x)] − E_z[log(1 − D(G(z)))]
            = BCE(l_real, 1) + BCE(l_fake, 0),

    a binary classifier told "real = 1, fake = 0". Logits may have any shape (one per
    sample, or one per patch for a PatchGAN); each term is the mean over its logits.
    At the game's equilibrium (D = ½ everywhere) L_D = 2 log 2 ≈ 1.386.
    """
    real_term = F.binary_cross_entropy_with_logits(real_logits, mg.ones_like(real_logits))
    fake_term = F.binary_cross_entropy_with_logits(fake_logits, mg.zeros_like(fake_logits))
    return real_term + fake_term


def generator_loss_saturating(fake_logits: Tensor) -> Tensor:
    """The generator's loss exactly as in the minimax game:  L_G = E_z[log(1 − D(G(z)))].

    Written with BCE: log(1 − D) = −BCE(l, 0). Its gradient with respect to the logit l
    is −σ(l) = −D(G(z)). Early in training D rejects the fakes easily (D(G(z)) ≈ 0),
    so this gradient is ≈ 0: the loss *saturates* and G barely learns exactly when it is
    worst. Compare ``generator_loss_nonsaturating``.
    """
    return -F.binary_cross_entropy_with_logits(fake_logits, mg.zeros_like(fake_logits))


def generator_loss_nonsaturating(fake_logits: Tensor) -> Tensor:
    """The heuristic generator loss used in practice:  L_G = −E_z[log D(G(z))].

    Instead of minimising log(1 − D(G(z))), G maximises log D(G(z)). Both push D(G(z))
    up and share the same fixed point, but the gradients differ where it matters:

        ∂/∂l  log(1 − σ(l)) = −σ(l)        → 0 when D(G(z)) → 0   (saturates)
        ∂/∂l −log σ(l)      = σ(l) − 1     → −1 when D(G(z)) → 0  (strong signal)

    so G gets a strong gradient early on, when D confidently rejects its samples.
    Written with BCE: −log D = BCE(l, 1).
    """
    return F.binary_cross_entropy_with_logits(fake_logits, mg.ones_like(fake_logits))


def critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """WGAN critic loss (to minimise):  L_C = E_z[C(G(z))] − E_x[C(x)].

    The critic C outputs an unbounded score, not a probability. Maximising
    E[C(x)] − E[C(G(z))] over 1-Lipschitz critics gives the Wasserstein-1 distance
    between the data and the generator's distribution (Kantorovich-Rubinstein duality);
    the Lipschitz constraint is enforced softly by ``gradient_penalty``.
    """
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    """WGAN generator loss:  L_G = −E_z[C(G(z))] (move the fakes to where C scores high)."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float = 10.0,
    alpha: Tensor | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al., 2017):  λ E_x̂[(‖∇_x̂ C(x̂)‖₂ − 1)²].

    x̂ = α x + (1 − α) x̃ lies on the straight line between a real sample x and a fake x̃,
    with α ~ U[0, 1] per sample (``alpha``, shape (N,), may be passed for a
    deterministic check). The optimal critic has gradient norm 1 along such lines, so
    the penalty keeps C close to 1-Lipschitz.

    The penalty depends on ∇_x̂ C, a gradient. ``mg.grad(..., create_graph=True)``
    records that gradient's own computation in the graph, so ``penalty.backward()``
    can differentiate it again with respect to the critic's weights (a second
    derivative: double backward).
    """
    n = real.shape[0]
    if alpha is None:
        alpha = mg.rand(n, dtype=real.dtype, device=real.device)
    alpha = alpha.reshape((n,) + (1,) * (real.ndim - 1))
    # x̂ is a new leaf: only the gradient with respect to it is wanted, not through x or x̃.
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).detach().requires_grad_()
    with mg.enable_grad():  # ∇_x̂ C needs a graph, even when called under no_grad (e.g. to log it)
        scores = critic(x_hat) if labels is None else critic(x_hat, labels)
        # Σ_i C(x̂_i): sample i's score depends only on x̂_i, so this gives every ∇_x̂ᵢ C(x̂ᵢ) at once.
        (grad_x,) = mg.grad(scores.sum(), x_hat, create_graph=True)
        # A tiny constant under the root keeps ∂‖g‖/∂g = g/‖g‖ finite if a gradient is exactly 0.
        norms = (grad_x.reshape(n, -1).square().sum(dim=1) + 1e-12).sqrt()
        return weight * ((norms - 1.0) ** 2).mean()


def r1_penalty(
    discriminator: Callable[..., Tensor], real: Tensor, weight: float = 1.0, labels: Tensor | None = None
) -> Tensor:
    """The zero-centred gradient penalty R1 (Mescheder et al., 2018):  (γ/2) E_x[‖∇_x D(x)‖²].

    It penalises the slope of D's logit at the *real* data only. Without it, D can
    answer a real mode with a steep, narrow spike; G's samples a little way off then
    see an almost flat D and get no pull toward that mode, which may stay uncovered
    for good (mode dropping). With R1, D's bumps around the data are smooth and wide,
    and the game converges instead of circling. Like ``gradient_penalty`` it needs the
    gradient of a gradient (``create_graph=True``).
    """
    x = real.detach().requires_grad_()
    with mg.enable_grad():
        logits = discriminator(x) if labels is None else discriminator(x, labels)
        (grad_x,) = mg.grad(logits.sum(), x, create_graph=True)
        return (0.5 * weight) * grad_x.reshape(x.shape[0], -1).square().sum(dim=1).mean()


# ========================================================================== training
def _generate(generator: nn.Module, z: Tensor, labels: Tensor | None) -> Tensor:
    return generator(z) if labels is None else generator(z, labels)


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; choose one of {LOSSES}")


def discriminator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_d: Any,
    real: Tensor,
    z: Tensor,
    labels: Tensor | None = None,
    loss: str = "nonsaturating",
    gp_weight: float = 10.0,
    r1_weight: float = 0.0,
) -> dict[str, Tensor]:
    """One update of D (ascend log D(x) + log(1 − D(G(z)))), G held fixed.

    ``r1_weight`` > 0 adds the R1 penalty (``r1_penalty``) to D's loss. Returns
    detached device scalars (no host sync): ``d_loss``, ``D(x)`` and ``D(G(z))`` (mean
    probabilities; for ``"wgan-gp"`` the mean critic scores) and, with a penalty,
    ``gp`` or ``r1``.
    """
    _check_loss(loss)
    with mg.no_grad():  # G is fixed in this step: no graph through it
        fake = _generate(generator, z, labels)
    real_logits = discriminator(real) if labels is None else discriminator(real, labels)
    fake_logits = discriminator(fake) if labels is None else discriminator(fake, labels)
    stats: dict[str, Tensor] = {}
    if loss == "wgan-gp":
        penalty = gradient_penalty(discriminator, real, fake, weight=gp_weight, labels=labels)
        d_loss = critic_loss(real_logits, fake_logits) + penalty
        stats["gp"] = penalty.detach()
        stats["D(x)"], stats["D(G(z))"] = real_logits.detach().mean(), fake_logits.detach().mean()
    else:
        d_loss = discriminator_loss(real_logits, fake_logits)
        if r1_weight > 0:
            penalty = r1_penalty(discriminator, real, r1_weight, labels)
            d_loss = d_loss + penalty
            stats["r1"] = penalty.detach()
        stats["D(x)"] = real_logits.detach().sigmoid().mean()
        stats["D(G(z))"] = fake_logits.detach().sigmoid().mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    stats["d_loss"] = d_loss.detach()
    return stats


def generator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: Any,
    z: Tensor,
    labels: Tensor | None = None,
    loss: str = "nonsaturating",
) -> dict[str, Tensor]:
    """One update of G (descend its loss through D), D held fixed.

    D's parameters are frozen (``requires_grad_(False)``) for the step: the gradient
    still flows *through* D to G(z), but no gradient is stored for D's weights.
    Returns the detached ``g_loss``.
    """
    _check_loss(loss)
    discriminator.requires_grad_(False)
    try:
        fake = _generate(generator, z, labels)
        fake_logits = discriminator(fake) if labels is None else discriminator(fake, labels)
        if loss == "wgan-gp":
            g_loss = wasserstein_generator_loss(fake_logits)
        elif loss == "saturating":
            g_loss = generator_loss_saturating(fake_logits)
        else:
            g_loss = generator_loss_nonsaturating(fake_logits)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    finally:
        discriminator.requires_grad_(True)
    return {"g_loss": g_loss.detach()}


def train_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: Any,
    opt_d: Any,
    real_batches: Iterator[Any],
    latent_dim: int,
    k: int = 1,
    loss: str = "nonsaturating",
    gp_weight: float = 10.0,
    r1_weight: float = 0.0,
) -> dict[str, Tensor]:
    """One iteration of Goodfellow's Algorithm 1 (minibatch GAN training):

        for k steps:   sample z₁..z_m ~ p(z), x₁..x_m ~ p_data
                       ascend  ∇_φ (1/m) Σ [log D(xᵢ) + log(1 − D(G(zᵢ)))]
        then once:     sample z₁..z_m ~ p(z)
                       descend ∇_θ (1/m) Σ L_G(D(G(zᵢ)))

    ``real_batches`` yields real batches ``x`` or, for a conditional GAN, pairs
    ``(x, labels)``; the generator step then reuses the last batch's labels, so G is
    asked for the same class mix as the data. Returns detached device scalars (see
    ``discriminator_step``; the D statistics are those of the last of the k steps).
    """
    stats: dict[str, Tensor] = {}
    labels = None
    for _ in range(k):
        batch = next(real_batches)
        real, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        z = mg.randn(real.shape[0], latent_dim, device=real.device)
        stats.update(discriminator_step(generator, discriminator, opt_d, real, z, labels, loss, gp_weight, r1_weight))
    z = mg.randn(real.shape[0], latent_dim, device=real.device)
    stats.update(generator_step(generator, discriminator, opt_g, z, labels, loss))
    return stats


def update_ema(average: nn.Module, model: nn.Module, decay: float = 0.995) -> None:
    """θ̄ ← β θ̄ + (1 − β) θ, kept in ``average``, a second copy of the model (same
    architecture, never trained directly) whose buffers (batch-norm statistics) are
    copied from ``model``.

    The older spelling of ``minigen.optim.EMA``, which the demos use: it keeps the
    averages itself and swaps them in with ``ema.average_parameters(generator)``. Kept so
    that existing code runs; the average is ``EMA.blend_``, the one implementation.
    """
    with mg.no_grad():
        for p_avg, p in zip(average.parameters(), model.parameters()):
            EMA.blend_(p_avg, p, decay)
        for b_avg, b in zip(average.buffers(), model.buffers()):
            b_avg.data[...] = b.data


# ========================================================================== networks
def _mlp(sizes: Sequence[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """G_θ(z): an MLP from noise z ∈ ℝ^latent_dim to a sample of ``data_shape``.

    ``output="linear"`` for unbounded data (toy 2-D points), ``"tanh"`` for images in
    [−1, 1].
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: int | Sequence[int],
        hidden: Sequence[int] = (128, 128),
        output: str = "linear",
    ) -> None:
        super().__init__()
        if output not in ("linear", "tanh"):
            raise ValueError(f"MLPGenerator: output must be 'linear' or 'tanh', got {output!r}")
        self.latent_dim = latent_dim
        self.data_shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
        self.output = output
        self.net = _mlp([latent_dim, *hidden, reduced_count(self.data_shape, None)], nn.ReLU)

    def forward(self, z: Tensor) -> Tensor:
        x = self.net(z).reshape((z.shape[0], *self.data_shape))
        return x.tanh() if self.output == "tanh" else x


class MLPDiscriminator(nn.Module):
    """D_φ(x): an MLP from a sample (flattened) to one logit l per sample, D = σ(l).

    LeakyReLU (slope 0.2) keeps a gradient for every input, which G needs: G learns only
    through ∂D/∂x.
    """

    def __init__(self, data_shape: int | Sequence[int], hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.data_shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
        self.net = _mlp([reduced_count(self.data_shape, None), *hidden, 1], lambda: nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0])


class LabelChannel(nn.Module):
    """Conditioning by an extra channel: the class label as a learned H₀×W₀ map.

    y ↦ embedding e_y ∈ ℝ^{H₀·W₀} ↦ reshape to 1×H₀×W₀, concatenated to a feature map
    h (N, C, H₀, W₀) as channel C + 1. The conditional GAN uses it in both G (at the
    projection's resolution) and D (at the input image's resolution).
    """

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.embedding = nn.Embedding(num_classes, height * width)

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:
        label_map = self.embedding(labels).reshape(labels.shape[0], 1, self.height, self.width)
        return mg.cat([h, label_map], dim=1)


def _upsampling_stages(image_size: int, max_stages: int = 2) -> int:
    """How many ×2 stages reach ``image_size`` from a small start (16 → 4, 28 → 7, 32 → 8)."""
    stages = 0
    while stages < max_stages and image_size % (2 ** (stages + 1)) == 0:
        stages += 1
    if stages == 0:
        raise ValueError(f"DCGAN: image_size must be even, got {image_size}")
    return stages


class DCGANGenerator(nn.Module):
    """The DCGAN generator (Radford et al., 2016): project and reshape, then upsample.

        z (N, latent) ─Linear→ (N, C₀·H₀·W₀) ─reshape→ (N, C₀, H₀, W₀) ─BN, ReLU→
        [concat label channel → (N, C₀+1, H₀, W₀)]                    (conditional only)
        ConvTranspose2d(k=4, s=2, p=1): H → 2H, BN, ReLU               (repeated)
        ConvTranspose2d(k=4, s=2, p=1) → (N, channels, H, W), tanh

    A transposed ("fractionally-strided") convolution with stride 2 spreads each input
    pixel over a 4×4 patch of a twice-as-large output: a learned upsampling. For
    16×16 images H₀ = 4; for 28×28, H₀ = 7. Output pixels lie in [−1, 1].
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: int = 1,
        image_size: int = 16,
        base_channels: int = 64,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim, self.channels, self.image_size, self.num_classes = (
            latent_dim,
            channels,
            image_size,
            num_classes,
        )
        stages = _upsampling_stages(image_size)
        self.start_size = image_size // 2**stages
        widths = [base_channels * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 128, 64
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

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.project(z).reshape(z.shape[0], self.start_channels, self.start_size, self.start_size)
        h = self.project_norm(h).relu()
        if self.label_channel is not None:
            if labels is None:
                raise ValueError("DCGANGenerator: this generator is conditional; pass labels")
            h = self.label_channel(h, labels)
        return self.upsample(h).tanh()


class DCGANDiscriminator(nn.Module):
    """The DCGAN discriminator: a strided CNN, no pooling (the strides downsample).

        x (N, channels, H, W) [concat label channel → channels + 1]   (conditional only)
        Conv2d(k=4, s=2, p=1): H → H/2, LeakyReLU(0.2)
        Conv2d(k=4, s=2, p=1): H/2 → H/4, norm, LeakyReLU(0.2)          (repeated)
        patch=False: flatten, Linear → one logit per image        (N,)
        patch=True:  Conv2d(k=3, s=1, p=1) → a map of logits     (N, 1, H/4, W/4)

    A PatchGAN discriminator (Isola et al., 2017) scores each receptive field ("patch")
    of the image separately; the loss averages over patches, so D judges local texture
    and sharpness rather than the whole image at once.

    ``norm`` is ``"batch"`` (DCGAN) or ``"none"``: WGAN-GP needs ``"none"`` because its
    gradient penalty is per sample, and batch norm mixes the samples of a batch.
    """

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
        if norm not in ("batch", "none"):
            raise ValueError(f"DCGANDiscriminator: norm must be 'batch' or 'none', got {norm!r}")
        stages = _upsampling_stages(image_size)
        self.patch, self.num_classes = patch, num_classes
        self.label_channel = LabelChannel(num_classes, image_size, image_size) if num_classes else None
        fan_in = channels + (1 if num_classes else 0)
        layers: list[nn.Module] = []
        for i in range(stages):
            width = base_channels * 2**i
            layers.append(nn.Conv2d(fan_in, width, 4, stride=2, padding=1))
            if i > 0 and norm == "batch":  # DCGAN: no norm on the first layer (it would see raw pixels)
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            fan_in = width
        self.features = nn.Sequential(*layers)
        final_size = image_size // 2**stages
        if patch:
            self.head = nn.Conv2d(fan_in, 1, 3, stride=1, padding=1)
        else:
            self.head = nn.Linear(fan_in * final_size**2, 1)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.label_channel is not None:
            if labels is None:
                raise ValueError("DCGANDiscriminator: this discriminator is conditional; pass labels")
            x = self.label_channel(x, labels)
        h = self.features(x)
        if self.patch:
            return self.head(h)
        return self.head(h.reshape(h.shape[0], -1)).reshape(h.shape[0])
