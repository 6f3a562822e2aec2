"""CycleGAN: image-to-image translation without pairs (Zhu et al., 2017).

With only two *collections*, images x of domain A and images y of domain B and no
pairs, a GAN alone cannot say which y an x should become: any mapping onto the B
distribution fools D_B. CycleGAN adds the requirement that the translation can be
undone. Two generators and two discriminators:

    G: A → B,   F: B → A,   D_B judges "is this a real B?",   D_A "is this a real A?"

and four L1 losses plus two adversarial losses, combined as a weighted sum:

    L(G, F, D_A, D_B) = L_GAN(G, D_B) + L_GAN(F, D_A) + λ_cyc · L_cyc(G, F) + λ_id · L_id(G, F)

    L_cyc = E_x ‖F(G(x)) − x‖₁ + E_y ‖G(F(y)) − y‖₁        cycle consistency: F(G(x)) ≈ x, G(F(y)) ≈ y
    L_id  = E_y ‖G(y) − y‖₁    + E_x ‖F(x) − x‖₁           identity: G leaves a B alone, F an A

    λ_cyc = 10,   λ_id = 0.5 · λ_cyc = 5

The adversarial losses are **least squares** (LSGAN, Mao et al.): D outputs an
unbounded score (a PatchGAN map, ``pix2pix.PatchDiscriminator``), real is 1 and fake 0,

    L_GAN(G, D_B) = E_x (D_B(G(x)) − 1)²                             (G's side)
    L_D_B = ½ [E_y (D_B(y) − 1)² + E_x D_B(G(x))²]                   (D_B's side; D_A likewise)

A squared error keeps pulling fakes towards the real score even when D already
classifies them correctly, where the log loss saturates; this makes training steadier.

**Training** (``train_step``), per batch (x from A, y from B):

1. *Generators first.* One Adam holds the parameters of both G and F (lr 2e-4,
   β = (0.5, 0.999)); it descends L above. D_A and D_B are frozen for this step:
   gradient flows through them into G and F, but none is stored for them.
2. *Then the discriminators*, with one Adam for both D_A and D_B, on the fakes of step 1
   passed through an ``ImagePool``: a history of 50 earlier fakes, from which half
   the time an older fake is shown instead of the new one, so D does not chase only
   G's latest move (it reduces oscillation). The pool returns detached tensors, so no
   D step ever reaches into G's or F's graph.
3. The learning rates stay constant for the first half of training and fall linearly
   to 0 over the second half (``linear_decay``).

**Known failures, and what the demo logs to see them** (``demos/cyclegan_digits.py``):

* *Colour (contrast) inversion.* G(x) may swap ink and background: the cycle loss is
  just as happy with an inverted image that F inverts back, and a PatchGAN at the
  start cannot always tell. Seen as bright backgrounds. The demo logs the mean
  brightness of G(x) and F(y) where the input is background (``background_a2b``,
  ``background_b2a``; real digits: about 0.0) and shows the translations.
* *Steganography.* G can hide a faint, invisible copy of x's details in G(x), which F
  decodes to satisfy the cycle loss, instead of really translating. Seen when the
  reconstruction depends on detail no one can see: the demo reports ``cycle_l1``
  and ``cycle_l1_noisy``, the same cycle error after adding faint noise (σ = 0.05) to
  G(x) before F. Real translations are robust to it; a hidden code is destroyed by it,
  so a large jump between the two numbers is the sign. The pictures show x, G(x),
  F(G(x)) side by side.
* *A discriminator loss that goes to 0.* D wins outright (typically D_B against an
  early G), its scores saturate at 1 for real and 0 for fake, and the LSGAN gradient
  it gives G carries no useful direction. Seen in ``losses.png``, the per-step D and G
  losses (and ``d_scores.png``: D's mean score on real and on pooled fake images,
  which should hover around the middle, not split to 1 and 0).

Contents: the losses (``lsgan_generator_loss``, ``lsgan_discriminator_loss``,
``cycle_loss``, ``identity_loss``, ``generator_terms`` / ``generator_objective``,
``discriminator_terms`` / ``discriminator_objective``),
``ImagePool``, ``CycleGAN`` (the four networks), ``make_optimizers``, ``linear_decay``
and ``make_schedulers``, ``train_step``. The generators are pix2pix's ``UNetGenerator``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import minigen as mg
import minigen.nn as nn
from minigen.models.pix2pix import PatchDiscriminator, UNetGenerator, frozen
from minigen.ops.loss import l1_loss, mse_loss
from minigen.optim import Adam, LambdaLR
from minigen.tensor import Tensor

LAMBDA_CYC = 10.0
LAMBDA_ID = 0.5 * LAMBDA_CYC  # λ_id = 0.5 · λ_cyc
LR, BETAS = 2e-4, (0.5, 0.999)
POOL_SIZE, SWAP_PROBABILITY = 50, 0.5


# ============================================================================== losses
def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """L_GAN = E (D(fake) − 1)²: the generator wants its fakes scored as real (1)."""
    return mse_loss(fake_scores, mg.ones_like(fake_scores))


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_D = ½ [E (D(real) − 1)² + E D(fake)²]: real scored 1, fake 0 (halved, as in the paper)."""
    return 0.5 * (mse_loss(real_scores, mg.ones_like(real_scores)) + mse_loss(fake_scores, mg.zeros_like(fake_scores)))


def _same_shape(name: str, a: Tensor, b: Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")


def cycle_loss(x: Tensor, x_cycled: Tensor, y: Tensor, y_cycled: Tensor) -> Tensor:
    """L_cyc = E‖F(G(x)) − x‖₁ + E‖G(F(y)) − y‖₁ (both directions, each a mean over pixels)."""
    _same_shape("cycle_loss (x, F(G(x)))", x_cycled, x)
    _same_shape("cycle_loss (y, G(F(y)))", y_cycled, y)
    return l1_loss(x_cycled, x) + l1_loss(y_cycled, y)


def identity_loss(x: Tensor, f_of_x: Tensor, y: Tensor, g_of_y: Tensor) -> Tensor:
    """L_id = E‖G(y) − y‖₁ + E‖F(x) − x‖₁: a generator given its own target domain changes nothing."""
    _same_shape("identity_loss (y, G(y))", g_of_y, y)
    _same_shape("identity_loss (x, F(x))", f_of_x, x)
    return l1_loss(g_of_y, y) + l1_loss(f_of_x, x)


@dataclasses.dataclass
class GeneratorTerms:
    """Everything the generator step computes: the objective, its parts, and the fakes."""

    total: Tensor  # L = L_GAN(G) + L_GAN(F) + λ_cyc L_cyc + λ_id L_id
    gan_g: Tensor  # L_GAN(G, D_B)
    gan_f: Tensor  # L_GAN(F, D_A)
    cycle: Tensor  # L_cyc
    identity: Tensor  # L_id
    fake_y: Tensor  # G(x), with its graph
    fake_x: Tensor  # F(y), with its graph


def check_domains(x: Tensor, y: Tensor) -> None:
    """A and B images must have one shape (N aside): G maps one onto the other and F back."""
    if x.ndim != 4 or y.ndim != 4 or tuple(x.shape[1:]) != tuple(y.shape[1:]):
        raise ValueError(
            f"CycleGAN: domain A images x {tuple(x.shape)} and domain B images y {tuple(y.shape)} must both be "
            "(N, C, H, W) with the same C, H and W"
        )


def generator_terms(
    G: nn.Module,
    F: nn.Module,
    D_A: nn.Module,
    D_B: nn.Module,
    x: Tensor,
    y: Tensor,
    lambda_cyc: float = LAMBDA_CYC,
    lambda_id: float | None = None,
) -> GeneratorTerms:
    """L(G, F) = L_GAN(G, D_B) + L_GAN(F, D_A) + λ_cyc L_cyc + λ_id L_id, with its parts.

    ``lambda_id`` defaults to 0.5 · ``lambda_cyc``. x is a batch of domain A, y of domain B.
    """
    check_domains(x, y)
    lambda_id = 0.5 * lambda_cyc if lambda_id is None else lambda_id
    fake_y, fake_x = G(x), F(y)  # G(x) ∈ B, F(y) ∈ A
    gan_g = lsgan_generator_loss(D_B(fake_y))
    gan_f = lsgan_generator_loss(D_A(fake_x))
    cycle = cycle_loss(x, F(fake_y), y, G(fake_x))
    identity = identity_loss(x, F(x), y, G(y)) if lambda_id else mg.zeros((), dtype=x.dtype, device=x.device)
    total = gan_g + gan_f + lambda_cyc * cycle + lambda_id * identity
    return GeneratorTerms(total, gan_g, gan_f, cycle, identity, fake_y, fake_x)


def generator_objective(
    G: nn.Module,
    F: nn.Module,
    D_A: nn.Module,
    D_B: nn.Module,
    x: Tensor,
    y: Tensor,
    lambda_cyc: float = LAMBDA_CYC,
    lambda_id: float | None = None,
) -> Tensor:
    """The generators' loss L(G, F), a scalar (``generator_terms(...).total``)."""
    return generator_terms(G, F, D_A, D_B, x, y, lambda_cyc, lambda_id).total


@dataclasses.dataclass
class DiscriminatorTerms:
    """The discriminators' objective and the scores it was computed from (D's outputs)."""

    total: Tensor  # L_D_A + L_D_B
    real_a: Tensor  # D_A(x)
    fake_a: Tensor  # D_A(F(y))
    real_b: Tensor  # D_B(y)
    fake_b: Tensor  # D_B(G(x))


def discriminator_terms(
    D_A: nn.Module, D_B: nn.Module, x: Tensor, y: Tensor, fake_x: Tensor, fake_y: Tensor
) -> DiscriminatorTerms:
    """L_D = L_D_A + L_D_B = ½[E(D_A(x) − 1)² + E D_A(F(y))²] + ½[E(D_B(y) − 1)² + E D_B(G(x))²].

    The fakes are detached here: this loss trains only the discriminators, and a
    gradient reaching G or F through the fakes would teach them to *help* D.
    """
    check_domains(x, y)
    _same_shape("discriminator_objective (x, fake_x)", fake_x, x)
    _same_shape("discriminator_objective (y, fake_y)", fake_y, y)
    real_a, fake_a = D_A(x), D_A(fake_x.detach())
    real_b, fake_b = D_B(y), D_B(fake_y.detach())
    total = lsgan_discriminator_loss(real_a, fake_a) + lsgan_discriminator_loss(real_b, fake_b)
    return DiscriminatorTerms(total, real_a, fake_a, real_b, fake_b)


def discriminator_objective(
    D_A: nn.Module, D_B: nn.Module, x: Tensor, y: Tensor, fake_x: Tensor, fake_y: Tensor
) -> Tensor:
    """The discriminators' loss L_D, a scalar (``discriminator_terms(...).total``)."""
    return discriminator_terms(D_A, D_B, x, y, fake_x, fake_y).total


# ========================================================================== image pool
class ImagePool:
    """A history of ``size`` generated images that D is shown instead of only the newest.

    ``query(fakes)`` returns one image per fake, all detached:

    * while the pool is filling, each new fake is stored and returned as it is;
    * once it is full, each fake is, with probability ``swap_probability`` (½), swapped
      for a stored fake chosen at random (the new one takes its place in the pool), and
      otherwise returned as it is.

    The stored images live on the fakes' device and every choice is drawn there
    (``mg.rand``, ``mg.randint``), so a query never reads a value back to the host.
    Two fakes of one batch may draw the same slot: both then return the stored image,
    and the slot keeps one of them.
    """

    def __init__(self, size: int = POOL_SIZE, swap_probability: float = SWAP_PROBABILITY) -> None:
        if size < 0:
            raise ValueError(f"ImagePool: size must be >= 0, got {size}")
        if not 0.0 <= swap_probability <= 1.0:
            raise ValueError(f"ImagePool: swap_probability must be in [0, 1], got {swap_probability}")
        self.size, self.swap_probability = size, swap_probability
        self.images: Tensor | None = None  # (size, C, H, W), allocated by the first query
        self.count = 0  # how many slots are filled (a host number: no device read needed)

    def query(self, fakes: Tensor) -> Tensor:
        fakes = fakes.detach()
        if self.size == 0:
            return fakes
        if self.images is None:
            self.images = mg.zeros((self.size, *fakes.shape[1:]), dtype=fakes.dtype, device=fakes.device)
        elif tuple(fakes.shape[1:]) != tuple(self.images.shape[1:]):
            raise ValueError(
                f"ImagePool.query: images of shape {tuple(fakes.shape[1:])} given to a pool holding "
                f"{tuple(self.images.shape[1:])}"
            )
        filling = min(self.size - self.count, fakes.shape[0])
        if filling > 0:  # store the first fakes as they are
            self.images[self.count : self.count + filling] = fakes[:filling]
            self.count += filling
        rest = fakes[filling:]
        if rest.shape[0] == 0:
            return fakes
        swap = (mg.rand(rest.shape[0], device=fakes.device) < self.swap_probability).reshape(-1, 1, 1, 1)
        slots = mg.randint(0, self.size, (rest.shape[0],), device=fakes.device)
        stored = self.images[slots]
        self.images[slots] = mg.where(swap, rest, stored)  # a swapped fake takes the slot it emptied
        shown = mg.where(swap, stored, rest)
        return shown if filling == 0 else mg.cat([fakes[:filling], shown], dim=0)


# ========================================================================== the networks
class CycleGAN(nn.Module):
    """The four networks: G: A → B and F: B → A (``UNetGenerator``s), D_A and D_B (PatchGANs).

    Images of both domains are (N, channels, H, W) in [−1, 1].
    """

    def __init__(
        self,
        channels: int = 1,
        base_channels: int = 16,
        levels: int = 2,
        upsample: str = "nearest",
        disc_channels: int = 32,
        disc_layers: int = 2,
    ) -> None:
        super().__init__()
        self.G = UNetGenerator(channels, channels, base_channels, levels, upsample)
        self.F = UNetGenerator(channels, channels, base_channels, levels, upsample)
        self.D_A = PatchDiscriminator(channels, disc_channels, disc_layers)
        self.D_B = PatchDiscriminator(channels, disc_channels, disc_layers)

    def generator_parameters(self) -> list[Tensor]:
        return list(itertools.chain(self.G.parameters(), self.F.parameters()))

    def discriminator_parameters(self) -> list[Tensor]:
        return list(itertools.chain(self.D_A.parameters(), self.D_B.parameters()))

    def forward(self, x: Tensor) -> Tensor:
        """G(x): translate domain A to domain B."""
        return self.G(x)


def make_optimizers(model: CycleGAN, lr: float = LR, betas: tuple[float, float] = BETAS) -> tuple[Adam, Adam]:
    """One Adam for both generators (G and F) and one for both discriminators (D_A and D_B)."""
    opt_g = Adam(model.generator_parameters(), lr=lr, betas=betas)
    opt_d = Adam(model.discriminator_parameters(), lr=lr, betas=betas)
    return opt_g, opt_d


def linear_decay(step: int, total_steps: int) -> float:
    """The learning-rate factor: 1 for the first half of training, then linearly down to 0.

    factor(t) = 1                              for t < T/2
              = 1 − (t − T/2) / (T − T/2)      for T/2 ≤ t ≤ T
    """
    half = total_steps // 2
    if step < half:
        return 1.0
    return max(0.0, 1.0 - (step - half) / max(total_steps - half, 1))


def make_schedulers(opt_g: Any, opt_d: Any, total_steps: int) -> tuple[LambdaLR, LambdaLR]:
    """``linear_decay`` for both optimisers; call ``.step()`` on each after every iteration."""
    factor = functools.partial(linear_decay, total_steps=total_steps)
    return LambdaLR(opt_g, factor), LambdaLR(opt_d, factor)


# ============================================================================= training
def train_step(
    model: CycleGAN,
    opt_g: Any,
    opt_d: Any,
    x: Tensor,
    y: Tensor,
    pool_a: ImagePool,
    pool_b: ImagePool,
    lambda_cyc: float = LAMBDA_CYC,
    lambda_id: float | None = None,
) -> dict[str, Tensor]:
    """One CycleGAN iteration: the generators' step, then the discriminators' step.

    Returns detached device scalars (no host sync): the generator objective ``g_loss``
    and its parts ``gan_g``, ``gan_f``, ``cycle``, ``identity``; the discriminator
    objective ``d_loss``; and D's mean scores ``D_A(x)``, ``D_A(fake)``, ``D_B(y)``,
    ``D_B(fake)`` (real should sit near 1, fake near 0, and both drift to the middle
    as G and F improve).
    """
    # 1. Generators: D_A and D_B frozen, so the backward stores no gradient for them.
    with frozen(model.D_A, model.D_B):
        terms = generator_terms(model.G, model.F, model.D_A, model.D_B, x, y, lambda_cyc, lambda_id)
        opt_g.zero_grad()
        terms.total.backward()
        opt_g.step()

    # 2. Discriminators, on pooled fakes: detached, so G and F are out of reach.
    fake_x, fake_y = pool_a.query(terms.fake_x), pool_b.query(terms.fake_y)
    judged = discriminator_terms(model.D_A, model.D_B, x, y, fake_x, fake_y)
    opt_d.zero_grad()
    judged.total.backward()
    opt_d.step()
    return {
        "g_loss": terms.total.detach(),
        "gan_g": terms.gan_g.detach(),
        "gan_f": terms.gan_f.detach(),
        "cycle": terms.cycle.detach(),
        "identity": terms.identity.detach(),
        "d_loss": judged.total.detach(),
        "D_A(x)": judged.real_a.detach().mean(),
        "D_A(fake)": judged.fake_a.detach().mean(),
        "D_B(y)": judged.real_b.detach().mean(),
        "D_B(fake)": judged.fake_b.detach().mean(),
    }
