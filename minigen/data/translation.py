"""Digit sets for image-to-image translation: four paired tasks and one unpaired set.

Every set is made from the rendered digits of ``digits.py`` (offline, seeded, the
``"train"`` and ``"test"`` splits never share a sample), all images at once. Targets
are the digits as ``load_digits`` renders them, with a visible grain (pixel noise of σ
up to ``DIGIT_NOISE`` = 0.1, where the default digits have 0.03).

**Paired tasks** (pix2pix): an input x and its target y come from the *same* digit.

* ``edges2digits``: x is the digit's outline, drawn with the lecture's edge-detection
  kernels (below); y is the filled digit. The lecture's "outlines → handbags".
* ``grey2colour``: colourisation. x is the grey digit; y paints its strokes in the hue
  of its class (``CLASS_HUES``: one hue per digit), so colouring needs recognition.
* ``lowres2highres``: super-resolution. x is the digit averaged down 4× (16 → 4
  pixels) and enlarged back bilinearly; y is the original.
* ``masked2full``: inpainting. x has a square hole filled with grey 0.5; y is whole.

**An unpaired set** (CycleGAN): ``thin_thick_digits`` gives thin-stroke digits (domain
A) and thick-stroke digits (domain B), drawn from two *independent* samples, so no
image of A has a partner in B.

The edge detector. The lecture's horizontal-edge filter and its transpose,

    K_h = [[ 1,  1,  1],        K_v = K_hᵀ = [[1, 0, −1],
           [ 0,  0,  0],                      [1, 0, −1],
           [−1, −1, −1]]                      [1, 0, −1]]

respond to brightness changes across rows and across columns; the edge strength is
the gradient magnitude ‖∇I‖ ≈ √((K_h ⋆ I)² + (K_v ⋆ I)²) (``edge_magnitude``). On a
stroke it is large on both flanks and zero along the middle, so it draws the digit's
outline. The pix2pix demo reuses it to measure sharpness.

Pixels are float32 in [0, 1], shaped (N, C, H, W); labels are int64 digits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from minigen.autograd import no_grad
from minigen.creation import tensor
from minigen.data.digits import Digits, load_digits, make_digits
from minigen.data.shapes import _hsv_to_rgb
from minigen.ops.conv import conv2d
from minigen.ops.pool import avg_pool2d
from minigen.ops.resize import interpolate
from minigen.tensor import Tensor

# The lecture's edge filter (rows: +1, 0, −1) and its transpose.
EDGE_KERNEL_H = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]], np.float32)
EDGE_KERNEL_V = EDGE_KERNEL_H.T.copy()

# One hue per class, evenly around the colour wheel (0 red, 1/3 green, 2/3 blue).
CLASS_HUES = np.arange(10, dtype=np.float32) / 10.0

SR_FACTOR = 4  # lowres2highres: how much the input is shrunk
HOLE_FILL = 0.5  # masked2full: the grey value of the missing square
# thin_thick_digits: stroke widths (output pixels at 16×16, scaled with the size) below
# which a digit is thin, and above which it is thick; about a quarter of digits each.
THIN_BELOW, THICK_ABOVE = 1.0, 1.9
# The paired targets' pixel noise (each image's σ is drawn in [0, DIGIT_NOISE]): a film
# grain that no input predicts. L1 alone averages it away; the discriminator notices.
DIGIT_NOISE = 0.1


@dataclasses.dataclass(frozen=True)
class PairedDigits:
    """(input, target) pairs of one translation task (host NumPy arrays).

    * ``inputs``: float32 ``(N, C_in, H, W)`` in [0, 1];
    * ``targets``: float32 ``(N, C_out, H, W)`` in [0, 1];
    * ``labels``: int64 ``(N,)``, the digit both show.

    ``digits.arrays`` is ``(inputs, targets)``, what ``DataLoader(digits, ...)`` iterates over.
    """

    task: str
    inputs: np.ndarray
    targets: np.ndarray
    labels: np.ndarray

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs, self.targets

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Any) -> PairedDigits:
        """The pairs at ``index`` (a slice, a boolean mask or integer indices), copied."""
        return PairedDigits(self.task, self.inputs[index].copy(), self.targets[index].copy(), self.labels[index].copy())


@dataclasses.dataclass(frozen=True)
class UnpairedDigits:
    """Two domains of digits with no correspondence: ``a`` (thin strokes) and ``b`` (thick)."""

    a: Digits
    b: Digits


# ------------------------------------------------------------------------- edge detector
def edge_magnitude(images: Tensor) -> Tensor:
    """‖∇I‖ = √((K_h ⋆ I)² + (K_v ⋆ I)²) per channel, zero padding: (N, C, H, W) -> (N, C, H, W).

    Works on any device; channels are filtered separately (a colour image gives one
    edge map per channel).
    """
    n, c, h, w = images.shape
    kernels = tensor(np.stack([EDGE_KERNEL_H, EDGE_KERNEL_V])[:, None], dtype=images.dtype, device=images.device)
    responses = conv2d(images.reshape(n * c, 1, h, w), kernels, padding=1)  # (N·C, 2, H, W)
    return (responses * responses).sum(dim=1).sqrt().reshape(n, c, h, w)


def _host(images: np.ndarray, op: Callable[[Tensor], Tensor]) -> np.ndarray:
    """Apply a minigen op to host images, without recording a graph."""
    with no_grad():
        return op(Tensor(images)).numpy()


def _digits(n: int | None, split: str, size: int, seed: int, noise: float = DIGIT_NOISE) -> Digits:
    """The rendered digits of ``load_digits``; ``noise=0`` gives the same digits without their grain."""
    return load_digits(split, n=n, size=size, seed=seed, noise=noise)


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    """A generator for a task's own random choices, distinct per split and per use."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), {"train": 0, "test": 1}[split], 77, stream]))


# ---------------------------------------------------------------------------- paired tasks
def edges2digits(n: int | None = None, split: str = "train", size: int = 16, seed: int = 0) -> PairedDigits:
    """Outline → digit: x = ‖∇I‖ (``edge_magnitude``) of the noise-free digit I, scaled so each
    outline's peak is 1; y = the same digit with its grain (``DIGIT_NOISE``).

    The outline is a drawing and carries no grain, so nothing in x predicts y's noise:
    the L1 loss alone averages it away (a smoother output than any real digit), and
    only the adversarial term asks for local contrast like the targets'.
    """
    clean, digits = _digits(n, split, size, seed, noise=0.0), _digits(n, split, size, seed)
    edges = _host(clean.images, edge_magnitude)
    edges /= np.maximum(edges.max(axis=(1, 2, 3), keepdims=True), 1e-6)
    return PairedDigits("edges2digits", edges.astype(np.float32), digits.images, digits.labels)


def class_colours() -> np.ndarray:
    """(10, 3) RGB of each class's hue at full saturation and value (its brightest channel is 1)."""
    ones = np.ones(10, np.float32)
    return _hsv_to_rgb(CLASS_HUES, ones, ones).astype(np.float32)


def grey2colour(n: int | None = None, split: str = "train", size: int = 16, seed: int = 0) -> PairedDigits:
    """Grey → colour: y = I · rgb(hue of the class), so max over y's channels is I again."""
    digits = _digits(n, split, size, seed)
    colours = class_colours()[digits.labels]  # (N, 3)
    targets = digits.images * colours[:, :, None, None]
    return PairedDigits("grey2colour", digits.images, targets.astype(np.float32), digits.labels)


def lowres2highres(n: int | None = None, split: str = "train", size: int = 16, seed: int = 0) -> PairedDigits:
    """Low → high resolution: x = bilinear ×4 of the 4×4 average-pooled digit."""
    if size % SR_FACTOR:
        raise ValueError(f"lowres2highres: size must be divisible by {SR_FACTOR}, got {size}")
    digits = _digits(n, split, size, seed)
    blurred = _host(
        digits.images,
        lambda x: interpolate(avg_pool2d(x, SR_FACTOR), scale_factor=SR_FACTOR, mode="bilinear"),
    )
    return PairedDigits("lowres2highres", np.clip(blurred, 0.0, 1.0), digits.images, digits.labels)


def masked2full(n: int | None = None, split: str = "train", size: int = 16, seed: int = 0) -> PairedDigits:
    """Masked → whole: a square of side ⌊3·size/8⌋ (6 pixels at 16×16) set to ``HOLE_FILL``.

    The square lies at a random place inside the central region where the digit is
    (at least size/8 from each border), so it usually hides part of a stroke.
    """
    digits = _digits(n, split, size, seed)
    side, margin = (3 * size) // 8, size // 8
    corners = _rng(seed, split, 0).integers(margin, size - margin - side + 1, size=(len(digits), 2))
    rows = np.arange(size)[None, :, None]
    cols = np.arange(size)[None, None, :]
    top, left = corners[:, 0, None, None], corners[:, 1, None, None]
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (N, H, W)
    inputs = np.where(hole[:, None], np.float32(HOLE_FILL), digits.images)
    return PairedDigits("masked2full", inputs.astype(np.float32), digits.images, digits.labels)


PAIRED_TASKS: dict[str, Callable[..., PairedDigits]] = {
    "edges2digits": edges2digits,
    "grey2colour": grey2colour,
    "lowres2highres": lowres2highres,
    "masked2full": masked2full,
}


def paired_digits(task: str, n: int | None = None, split: str = "train", size: int = 16, seed: int = 0) -> PairedDigits:
    """The paired set called ``task`` (one of ``PAIRED_TASKS``); a clear error for any other name."""
    if task not in PAIRED_TASKS:
        raise ValueError(f"paired_digits: unknown task {task!r}; choose one of {', '.join(PAIRED_TASKS)}")
    return PAIRED_TASKS[task](n, split=split, size=size, seed=seed)


# --------------------------------------------------------------------------- unpaired set
def _select(n: int, seed_words: list[int], size: int, keep: Callable[[np.ndarray], np.ndarray]) -> Digits:
    """The first ``n`` rendered digits whose stroke widths pass ``keep``, from their own seed."""
    chosen: list[Digits] = []
    found, batch, round_ = 0, max(4 * n, 256), 0
    while found < n:
        rendered = make_digits(batch, size=size, seed=np.random.SeedSequence([*seed_words, round_]))
        picked = rendered.subset(keep(rendered.thickness))
        chosen.append(picked)
        found += len(picked)
        round_ += 1
    images = np.concatenate([d.images for d in chosen])[:n]
    labels = np.concatenate([d.labels for d in chosen])[:n]
    thickness = np.concatenate([d.thickness for d in chosen])[:n]
    return Digits(images, labels, thickness)


def thin_thick_digits(n: int = 4000, split: str = "train", size: int = 16, seed: int = 0) -> UnpairedDigits:
    """``n`` thin digits (domain A, stroke < ``THIN_BELOW``) and ``n`` thick ones (domain B,
    stroke > ``THICK_ABOVE``), widths in output pixels at 16×16 (scaled for other sizes).

    A and B are rendered from two independent random streams, so the sets share no
    digit: there are no pairs to learn from, only the two collections.
    """
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"thin_thick_digits: n must be a positive int, got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"thin_thick_digits: split must be 'train' or 'test', got {split!r}")
    scale = size / 16
    split_id = {"train": 0, "test": 1}[split]
    thin = _select(n, [int(seed), split_id, 88, 0], size, lambda width: width < THIN_BELOW * scale)
    thick = _select(n, [int(seed), split_id, 88, 1], size, lambda width: width > THICK_ABOVE * scale)
    return UnpairedDigits(thin, thick)


def rgb_to_hue(images: np.ndarray) -> np.ndarray:
    """The HSV hue in [0, 1) of every pixel of (N, 3, H, W) RGB images -> (N, H, W).

    hue = (1/6)·{ (G − B)/Δ mod 6 if max = R;  (B − R)/Δ + 2 if max = G;  (R − G)/Δ + 4 if max = B },
    Δ = max − min (grey pixels, Δ = 0, get hue 0).
    """
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    top, bottom = images.max(axis=1), images.min(axis=1)
    delta = np.maximum(top - bottom, 1e-12)
    hue = np.where(top == r, ((g - b) / delta) % 6.0, np.where(top == g, (b - r) / delta + 2.0, (r - g) / delta + 4.0))
    return np.where(top - bottom > 0, hue / 6.0, 0.0) % 1.0


# ------------------------------------------------------------------------------- metrics
def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 1, H, W): the brightest channel (HSV's value V), so a stroke of
    ``grey2colour`` reads as the grey digit it was coloured from; grey images pass unchanged."""
    return images.max(axis=1, keepdims=True)


def sharpness(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean edge strength of the outputs over that of the targets: E‖∇ŷ‖ / E‖∇y‖.

    1 means as much local contrast as real targets; below 1, blurrier; above, harsher.
    Host arrays (N, C, H, W) in [0, 1]; ‖∇·‖ is ``edge_magnitude``.
    """
    if outputs.shape != targets.shape:
        raise ValueError(f"sharpness: outputs {outputs.shape} and targets {targets.shape} must have the same shape")
    return float(_host(outputs, edge_magnitude).mean() / max(_host(targets, edge_magnitude).mean(), 1e-12))


def hue_accuracy(outputs: np.ndarray, targets: np.ndarray, labels: np.ndarray, stroke: float = 0.5) -> float:
    """The fraction of stroke pixels (target brightness ≥ ``stroke``) whose output hue is
    nearer to the hue of the digit's class than to any other class's hue (``CLASS_HUES``)."""
    hue = rgb_to_hue(outputs)  # (N, H, W)
    distance = np.abs(hue[..., None] - CLASS_HUES)  # to every class hue, around the circle
    nearest = np.minimum(distance, 1.0 - distance).argmin(axis=-1)
    strokes = to_grey(targets)[:, 0] >= stroke
    return float((nearest == labels[:, None, None])[strokes].mean())
