"""pix2pix: paired image-to-image translation with a conditional GAN (Isola et al., 2017).

When every input x of domain A comes with its target y in domain B, a generator G
learns y ≈ G(x). The lecture's objective combines a conditional GAN with a per-pixel
loss:

    G* = arg min_G max_D  L_cGAN(G, D) + λ · L_L1(G),          λ = 100

    L_cGAN(G, D) = E_{x,y}[log D(x, y)] + E_x[log(1 − D(x, G(x)))]
    L_L1(G)      = E_{x,y}[‖y − G(x)‖₁]

The L1 term alone already gives the right content, but it is minimised by the *median*
of all plausible targets, which is blurry wherever the input leaves the answer
uncertain. The discriminator sees (input, output) pairs and rejects outputs that do
not look like real targets *for that input*, which pushes G towards sharp, plausible
detail. In the losses actually minimised (``generator_loss``, ``discriminator_loss``):

    L_G = −E_x[log D(x, G(x))] + λ · E‖y − G(x)‖₁          (the non-saturating form)
    L_D = ½ · (−E[log D(x, y)] − E[log(1 − D(x, G(x)))])      (halved: D learns more slowly than G)

Contents (reading order):

* the generator ``UNetGenerator``: an encoder-decoder with skip connections, built from
  ``EncoderBlock`` and ``DecoderBlock``; the decoder upsamples with transposed
  convolutions or with nearest-neighbour upsampling + convolution (``upsample=``);
* the discriminator ``PatchDiscriminator`` and ``receptive_field``;
* the losses ``generator_loss``, ``discriminator_loss``, ``l1_loss``;
* training: ``pretrain_step`` (L1 only, the lecture's optional pre-training of G),
  ``train_step`` (one D update, then one G update) and ``frozen`` (D during G's update).

**Batch norm and test time.** Isola et al. normalise with batch norm but keep it in
training mode at test time with batches of one image, which makes it normalise each
image by its own statistics: instance normalisation. This file says so directly:
every norm layer is a ``GroupNorm``, whose statistics come from the one image being
normalised, so there are no running averages and ``G.train()`` and ``G.eval()``
compute exactly the same function (``tests/test_pix2pix.py`` checks it).

**Where the randomness comes from.** A conditional GAN's generator is G(x, z): without
a noise input z, G is a deterministic function of x and cannot draw detail that x does
not determine (a texture, film grain), however the discriminator insists. pix2pix
supplied z as dropout, kept on at test time; here it is explicit and optional:
``UNetGenerator(noise_channels=k)`` stacks k channels of z ~ N(0, I) onto x (fresh each
call, or passed as ``z=``), so G stays one function of (x, z) in both modes, with no
dropout to switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.models import gan
from minigen.models.unet import Upsample, num_groups_for
from minigen.tensor import Tensor

UPSAMPLE_MODES = ("nearest", "transposed")
L1_WEIGHT = 100.0  # λ of the lecture


# ============================================================================ generator
class EncoderBlock(nn.Module):
    """Halve the resolution: Conv 4×4 stride 2 → GroupNorm → LeakyReLU(0.2)   (Isola's "C_k")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.norm = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class DecoderBlock(nn.Module):
    """Double the resolution → GroupNorm → ReLU, with one of two upsamplers:

    * ``"transposed"``: ConvTranspose 4×4, stride 2 (a learned upsampling);
    * ``"nearest"``: copy each pixel into a 2×2 block (``unet.Upsample``), then Conv 3×3.

    **Why the second avoids checkerboard artefacts** (Odena et al., 2016). A transposed
    convolution with stride 2 paints each input pixel's kernel onto the output, two
    pixels apart. Output pixels at even and odd positions are then built by *different*
    subsets of the kernel's taps (the 4×4 kernel splits into four 2×2 sub-kernels, one
    per position parity), and when the kernel size is not a multiple of the stride some
    output pixels even receive more contributions than their neighbours. Unless
    training makes the four sub-kernels agree exactly, neighbouring pixels get
    systematically different values: a 2-pixel checkerboard, which deeper layers
    repeat and amplify. Nearest upsampling first makes a map with no such pattern (every
    2×2 block is one value), and the convolution that follows applies the *same* kernel
    at every output pixel, so no position parity is treated differently.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: str = "nearest") -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"DecoderBlock: upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        if upsample == "transposed":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
        else:
            self.up = nn.Sequential(Upsample(), nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.norm = nn.GroupNorm(num_groups_for(out_channels), out_channels)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.up(x)))

    def extra_repr(self) -> str:
        return f"upsample={self.upsample!r}"


class UNetGenerator(nn.Module):
    """G: (N, in_channels, H, W) in [−1, 1] -> (N, out_channels, H, W) in [−1, 1] (tanh).

    An encoder-decoder whose decoder, at every resolution, also receives the encoder's
    features of that resolution (the skip connections):

        e₀ = LeakyReLU(Conv3×3(x))                      H × W,        c channels
        e_k = EncoderBlock(e_{k−1})                     H/2^k,        c·2^min(k, 3)   (k = 1 … L)
        d_L = e_L                                        (the bottleneck, H/2^L)
        d_{k−1} = [DecoderBlock(d_k), e_{k−1}]           H/2^(k−1)     (concatenated along channels)
        G(x) = tanh(Conv3×3(d₀))

    The bottleneck sees the whole image (a 2×2 map for L = 3 at 16×16), which is where
    global decisions are made (which digit is this? which colour?); the skips carry the
    input's exact stroke positions past it, so the decoder need not squeeze them through.
    H and W must be divisible by 2^L (``levels``). With ``noise_channels`` = k > 0 the
    stem sees [x, z], z ~ N(0, I) of k channels at full resolution (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        levels: int = 3,
        upsample: str = "nearest",
        noise_channels: int = 0,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"UNetGenerator: levels must be at least 1, got {levels}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"UNetGenerator: upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if noise_channels < 0:
            raise ValueError(f"UNetGenerator: noise_channels must be >= 0, got {noise_channels}")
        self.in_channels, self.out_channels, self.levels, self.upsample = in_channels, out_channels, levels, upsample
        self.noise_channels = noise_channels
        widths = [base_channels * 2 ** min(k, 3) for k in range(levels + 1)]  # e₀ … e_L
        self.widths = widths
        self.stem = nn.Sequential(nn.Conv2d(in_channels + noise_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.encoders = nn.ModuleList([EncoderBlock(widths[k - 1], widths[k]) for k in range(1, levels + 1)])
        decoders = []
        for k in range(levels, 0, -1):  # d_k -> d_{k−1}: input d_k (plus its skip, except at the bottleneck)
            fan_in = widths[k] if k == levels else 2 * widths[k]
            decoders.append(DecoderBlock(fan_in, widths[k - 1], upsample))
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Conv2d(2 * widths[0], out_channels, 3, padding=1)

    def check_input(self, x: Tensor) -> None:
        factor = 2**self.levels
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNetGenerator: expected input (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"UNetGenerator: image size {x.shape[2]}×{x.shape[3]} cannot be halved levels={self.levels} times; "
                f"H and W must be multiples of 2^levels = {factor} (valid sizes: {factor}, {2 * factor}, "
                f"{3 * factor}, ...), or choose fewer levels"
            )

    def features(self, x: Tensor, z: Tensor | None = None) -> list[Tensor]:
        """The encoder's outputs [e₀, e₁, …, e_L] (the skips, and the bottleneck last)."""
        self.check_input(x)
        if self.noise_channels:
            n, _, h, w = x.shape
            if z is None:
                z = mg.randn(n, self.noise_channels, h, w, dtype=x.dtype, device=x.device)
            elif tuple(z.shape) != (n, self.noise_channels, h, w):
                raise ValueError(
                    f"UNetGenerator: z must have shape {(n, self.noise_channels, h, w)}, got {tuple(z.shape)}"
                )
            x = mg.cat([x, z], dim=1)
        elif z is not None:
            raise ValueError("UNetGenerator: z was given to a generator built with noise_channels=0")
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(skips[-1]))
        return skips

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        skips = self.features(x, z)
        h = skips.pop()  # the bottleneck e_L
        for decoder in self.decoders:
            h = mg.cat([decoder(h), skips.pop()], dim=1)
        return self.head(h).tanh()

    def extra_repr(self) -> str:
        noise = f", noise_channels={self.noise_channels}" if self.noise_channels else ""
        return f"{self.in_channels} -> {self.out_channels}, levels={self.levels}, upsample={self.upsample!r}{noise}"


# ======================================================================== discriminator
def receptive_field(layers: Sequence[nn.Module]) -> int:
    """The side of the input square that one output of a chain of convolutions depends on.

    Walking from the input: r₀ = 1, j₀ = 1, and for each convolution (kernel k,
    stride s, dilation d)

        r ← r + (k − 1)·d·j,        j ← j·s

    (j is the distance, in input pixels, between neighbouring outputs of the layer so
    far). Pointwise layers (activations, norms over channels) leave both unchanged.
    ``layers`` is the chain in order, e.g. a ``Sequential``.
    """
    size, jump = 1, 1
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if isinstance(layer, nn.ConvTranspose2d):
                raise ValueError("receptive_field: transposed convolutions are not supported")
            kernel, stride, dilation = layer.kernel_size[0], layer.stride[0], layer.dilation[0]
            size += (kernel - 1) * dilation * jump
            jump *= stride
    return size


class PatchDiscriminator(nn.Module):
    """A PatchGAN: a map of logits, one per receptive field ("patch") of the input.

        Conv 4×4 stride 2 → LeakyReLU(0.2)
        [Conv 3×3 → LeakyReLU(0.2)] × (num_layers − 1)              (channels doubling)
        Conv 3×3 → 1 logit per position                             (N, 1, H/2, W/2)

    Each logit judges only its patch, so D penalises structure at the scale of patches
    (texture, sharpness) and the loss averages over them. The patch side, computed by
    ``receptive_field`` and stored as ``self.receptive_field``, is

        r = 1 + (3 − 1)·2·num_layers + (4 − 1)      (for num_layers = 2: 12 pixels,
                                                     for num_layers = 1: 8)

    (the 3×3 layers come after the stride-2 one, so each widens r by 2·2). For a
    *conditional* PatchGAN (pix2pix) pass the condition: ``D(y, condition=x)`` stacks
    input and output as channels, [x, y], so ``in_channels`` counts both.

    There is no normalisation layer: a norm whose statistics are taken over the image
    (batch, instance or group norm) would make every logit depend on every pixel through
    those statistics, and the patch would no longer be a patch (the receptive-field
    test, which perturbs one pixel and watches which logits move, would see all of them).
    """

    def __init__(self, in_channels: int, base_channels: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"PatchDiscriminator: num_layers must be at least 1, got {num_layers}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = base_channels
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(width, 2 * width, 3, padding=1), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.receptive_field = receptive_field(self.net)

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        x = image if condition is None else mg.cat([condition, image], dim=1)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            given = f"image {tuple(image.shape)}"
            if condition is not None:
                given += f", condition {tuple(condition.shape)}"
            raise ValueError(
                f"PatchDiscriminator: expected {self.in_channels} channels in total (condition and image "
                f"stacked), got {given}"
            )
        return self.net(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, receptive_field={self.receptive_field}"


# =============================================================================== losses
def l1_loss(output: Tensor, target: Tensor) -> Tensor:
    """L_L1 = mean |y − G(x)|, with a clear error when the shapes differ."""
    if tuple(output.shape) != tuple(target.shape):
        raise ValueError(f"pix2pix l1_loss: output shape {tuple(output.shape)} != target shape {tuple(target.shape)}")
    return F.l1_loss(output, target)


def generator_loss(
    fake_logits: Tensor, output: Tensor, target: Tensor, l1_weight: float = L1_WEIGHT
) -> tuple[Tensor, Tensor, Tensor]:
    """L_G = −E[log D(x, G(x))] + λ · E|y − G(x)|  ->  (L_G, the adversarial term, the L1 term).

    The adversarial term is the non-saturating one, ``gan.generator_loss_nonsaturating``.
    """
    adversarial = gan.generator_loss_nonsaturating(fake_logits)
    per_pixel = l1_loss(output, target)
    return adversarial + l1_weight * per_pixel, adversarial, per_pixel


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = ½ · (BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)): ``gan.discriminator_loss``, halved.

    Halving slows D relative to G (Isola et al.): the patches of a small image are easy
    to tell apart early on, and a D that wins outright stops teaching G.
    """
    return 0.5 * gan.discriminator_loss(real_logits, fake_logits)


# ============================================================================= training
@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Inside the block the modules' parameters need no gradient; afterwards they do again.

    Used for the generator's step of a GAN: its loss goes *through* D, so the gradient
    still flows through D's layers to G's output, but none is stored for D's weights
    (D is not updated by this step, and its ``.grad`` keeps nothing of G's loss).
    """
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module in modules:
            module.requires_grad_(True)


def pretrain_step(generator: nn.Module, optimizer: Any, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """One step of per-pixel pre-training: minimise E|y − G(x)| alone (no discriminator).

    With pairs available the lecture suggests it: G first learns the content, so the
    adversarial game starts from sensible outputs rather than noise. Training with this
    step only is also the "L1 alone" model the demo compares with. Returns the detached loss.
    """
    loss = l1_loss(generator(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"l1": loss.detach()}


def train_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: Any,
    opt_d: Any,
    x: Tensor,
    y: Tensor,
    l1_weight: float = L1_WEIGHT,
    z: Tensor | None = None,
) -> dict[str, Tensor]:
    """One pix2pix iteration on a batch of pairs (x, y): D first, then G.

    1. G(x, z) is computed once (z: G's noise input, drawn by G when not given).
    2. D step on (x, y) against (x, G(x).detach()): the detached fake carries no graph
       into G, so this step cannot change G.
    3. G step on the same G(x), with D ``frozen``: gradient flows
       *through* D into G(x), but no gradient is stored for D's weights.

    Returns detached device scalars (no host sync): ``d_loss``, ``g_loss``, ``g_adv``,
    ``l1`` and D's mean probabilities ``D(x,y)`` and ``D(x,G(x))``.
    """
    fake = generator(x) if z is None else generator(x, z)

    real_logits = discriminator(y, condition=x)
    fake_logits = discriminator(fake.detach(), condition=x)
    d_loss = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()

    with frozen(discriminator):
        g_loss, adversarial, per_pixel = generator_loss(discriminator(fake, condition=x), fake, y, l1_weight)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return {
        "d_loss": d_loss.detach(),
        "g_loss": g_loss.detach(),
        "g_adv": adversarial.detach(),
        "l1": per_pixel.detach(),
        "D(x,y)": real_logits.detach().sigmoid().mean(),
        "D(x,G(x))": fake_logits.detach().sigmoid().mean(),
    }
