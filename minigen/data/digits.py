"""MNIST-like digits rendered offline: no download, a few seconds for ten thousand.

How a digit is made:

1. **Glyph templates** (once per process). Each character 0-9 is drawn with Pillow's
   built-in scalable font at a high resolution (``_TEMPLATE`` pixels), at several
   stroke thicknesses: thinner by erosion (``MinFilter``), thicker by Pillow's
   ``stroke_width``. Like MNIST, each glyph is about 20/28 of the frame tall and is
   centred on its centre of mass.
2. **Random jitter** (vectorised over the whole batch). Every sample draws a
   thickness level and an affine map: rotation, scale, aspect, shear and shift, plus a
   gentle smooth "elastic" wobble made of two random sinusoids per axis. Each output
   pixel is mapped back into the template and read with bilinear interpolation; the
   templates are blurred first by about one output pixel, so this shrinking does not
   alias.
3. **Finish.** Each image is scaled so its brightest pixel is 1, and receives a little
   Gaussian noise, then is clipped to [0, 1].

Every sample's random numbers are one row of a ``(n, P)`` table drawn in row order, so
``make_digits(100, seed=s)`` is the first 100 samples of ``make_digits(1000, seed=s)``.
The train and test splits of ``load_digits`` use different seeds, so they hold
different samples. The per-sample stroke thickness is returned as metadata: the VAE
demo builds its "thick minus thin" attribute vector from it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from minigen.utils.images import atomic_write

# Bump when the generator changes, so stale disk caches are not reused.
GENERATOR_VERSION = 1

_TEMPLATE = 112  # template resolution: 4x the 28-pixel output, 14x the 8-pixel one
_GLYPH_HEIGHT = 20 / 28  # MNIST digits fit a 20x20 box in a 28x28 frame
_LEVELS = (-2, -1, 0, 1, 2, 3, 4)  # stroke change per side in template pixels (<0: eroded)
_SIZES = (8, 16, 28)
_DEFAULT_N = {"train": 10000, "test": 2000}
_SPLIT_ID = {"train": 0, "test": 1}

# Jitter ranges (the output frame spans [-1, 1] in both directions).
_MAX_ROTATION = np.deg2rad(14.0)
_SCALE = (0.85, 1.08)
_ASPECT = (0.85, 1.12)
_MAX_SHEAR = 0.25
_MAX_SHIFT = 0.09  # about 1.3 pixels at 28x28
_ELASTIC = 0.035  # amplitude of the wobble, in frame units
_N_PARAMS = 10 + 16  # columns of the per-sample random table


@dataclasses.dataclass(frozen=True)
class Digits:
    """Rendered digits and their metadata (host NumPy arrays).

    * ``images``: float32 ``(N, 1, size, size)`` in [0, 1], white digit on black.
    * ``labels``: int64 ``(N,)``, the digit 0-9.
    * ``thickness``: float32 ``(N,)``, the stroke width in output pixels.

    ``x, y = digits`` unpacks images and labels; ``digits.arrays`` is the same pair,
    which is what ``DataLoader(digits, ...)`` iterates over.
    """

    images: np.ndarray
    labels: np.ndarray
    thickness: np.ndarray

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.arrays)

    def subset(self, index: Any) -> Digits:
        """The samples at ``index`` (a slice, a boolean mask or integer indices), copied."""
        return Digits(self.images[index].copy(), self.labels[index].copy(), self.thickness[index].copy())


# --------------------------------------------------------------------------- templates
def _load_font(size: int) -> tuple[Any, bool]:
    """Pillow's scalable default font, or (Pillow < 10.1, no FreeType) its small bitmap font."""
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):
        font = ImageFont.load_default()
    return font, isinstance(font, ImageFont.FreeTypeFont)


def _draw_glyph(digit: int, stroke: int) -> np.ndarray:
    """One digit, ``_TEMPLATE`` pixels square, white on black, float in [0, 1], before centring."""
    canvas = 2 * _TEMPLATE
    font, scalable = _load_font(round(_GLYPH_HEIGHT * _TEMPLATE / 0.72))  # digits are ~0.72 em tall
    if scalable:
        image = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(image).text(
            (canvas // 2, canvas // 2),
            str(digit),
            font=font,
            fill=255,
            anchor="mm",
            stroke_width=max(stroke, 0),
            stroke_fill=255,
        )
    else:
        # The bitmap font is about 11 pixels tall: draw it small, then enlarge it to the
        # glyph height (bicubic, then re-sharpened by a threshold-like contrast stretch).
        small = Image.new("L", (16, 16), 0)
        ImageDraw.Draw(small).text((4, 2), str(digit), font=font, fill=255)
        box = small.getbbox() or (0, 0, 16, 16)
        glyph = small.crop(box)
        height = round(_GLYPH_HEIGHT * _TEMPLATE)
        width = max(1, round(glyph.width * height / glyph.height))
        glyph = glyph.resize((width, height), Image.Resampling.BICUBIC).point(lambda v: 255 if v > 100 else 0)
        glyph = glyph.filter(ImageFilter.GaussianBlur(1.0))
        for _ in range(max(stroke, 0)):
            glyph = glyph.filter(ImageFilter.MaxFilter(3))
        image = Image.new("L", (canvas, canvas), 0)
        image.paste(glyph, ((canvas - width) // 2, (canvas - height) // 2))
    for _ in range(max(-stroke, 0)):
        image = image.filter(ImageFilter.MinFilter(3))  # erosion: thinner by one pixel per side
    return np.asarray(image, dtype=np.float32) / 255.0


def _center_crop(image: np.ndarray, row: float, col: float) -> np.ndarray:
    """The ``_TEMPLATE`` square of ``image`` centred at (row, col), rounded to whole pixels."""
    top = int(round(row - _TEMPLATE / 2))
    left = int(round(col - _TEMPLATE / 2))
    return image[top : top + _TEMPLATE, left : left + _TEMPLATE]


@functools.lru_cache(maxsize=1)
def _glyph_templates() -> tuple[np.ndarray, np.ndarray]:
    """All templates ``(10, L, T, T)`` and their stroke widths ``(10, L)`` in template pixels.

    Every thickness level of one digit is centred on the centre of mass of the
    unmodified glyph, so only the stroke changes between levels, not the position.
    The widths come from the areas: a stroke of width w and length ℓ covers w·ℓ, and
    widening it by one pixel per side adds 2ℓ, so w = 2·A₀ / (A₊₁ − A₀) for the plain
    glyph, and w₀ + 2k at level k.
    """
    templates = np.zeros((10, len(_LEVELS), _TEMPLATE, _TEMPLATE), np.float32)
    widths = np.zeros((10, len(_LEVELS)), np.float32)
    for digit in range(10):
        plain, wider = _draw_glyph(digit, 0), _draw_glyph(digit, 1)
        rows, cols = np.indices(plain.shape)
        mass = plain.sum()
        row, col = (rows * plain).sum() / mass, (cols * plain).sum() / mass
        base_width = 2.0 * mass / max(float(wider.sum() - mass), 1e-6)
        for j, level in enumerate(_LEVELS):
            glyph = plain if level == 0 else (wider if level == 1 else _draw_glyph(digit, level))
            templates[digit, j] = _center_crop(glyph, row, col)
            widths[digit, j] = max(base_width + 2 * level, 1.0)
    return templates, widths


@functools.lru_cache(maxsize=len(_SIZES))
def _blurred_templates(size: int) -> np.ndarray:
    """Templates blurred by about one output pixel and padded with a zero border, flattened.

    The blur stands in for averaging over each output pixel's footprint, so bilinear
    sampling at a coarse grid does not alias. A Gaussian with the variance of a box
    one output pixel wide has σ = footprint/√12; a slightly larger σ gives MNIST's
    soft edges. The one-pixel zero border lets out-of-frame reads clamp onto zeros.
    """
    templates, _ = _glyph_templates()
    sigma = 0.4 * _TEMPLATE / size
    # A separable Gaussian blur as two matrix products, G @ image @ Gᵀ, with
    # G[i, j] = exp(−(i − j)² / 2σ²) (normalised): outside the template counts as 0.
    offsets = np.arange(_TEMPLATE)[:, None] - np.arange(_TEMPLATE)[None, :]
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    # Cut the tails at 5σ: the far entries would be subnormal floats, which make
    # the matrix products below a hundred times slower on most CPUs.
    kernel[np.abs(offsets) > 5 * sigma] = 0.0
    kernel = (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)
    flat = templates.reshape(-1, _TEMPLATE, _TEMPLATE)
    rows_blurred = (flat.reshape(-1, _TEMPLATE) @ kernel.T).reshape(flat.shape)  # along each row
    blurred = np.zeros((len(flat), _TEMPLATE + 2, _TEMPLATE + 2), np.float32)
    blurred[:, 1:-1, 1:-1] = np.einsum("ij,njk->nik", kernel, rows_blurred)  # along each column
    return blurred.reshape(len(blurred), -1)


# ---------------------------------------------------------------------------- sampling
def _affine_inverses(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample inverse linear maps (n, 2, 2), shifts (n, 2) and linear scale (n,) from uniforms.

    The forward map takes template coordinates q to the frame: p = A q + t with
    A = Rotation(θ) · Shear(s) · diag(scale·aspect, scale/aspect).
    """
    theta = (2 * u[:, 0] - 1) * _MAX_ROTATION
    scale = _SCALE[0] + (_SCALE[1] - _SCALE[0]) * u[:, 1]
    aspect = _ASPECT[0] + (_ASPECT[1] - _ASPECT[0]) * u[:, 2]
    shear = (2 * u[:, 3] - 1) * _MAX_SHEAR
    shift = (2 * u[:, 4:6] - 1) * _MAX_SHIFT
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear_m = np.zeros_like(rotation)
    shear_m[:, 0, 0] = shear_m[:, 1, 1] = 1.0
    shear_m[:, 0, 1] = shear
    diag = np.zeros_like(rotation)
    diag[:, 0, 0] = scale * aspect
    diag[:, 1, 1] = scale / aspect
    forward = rotation @ shear_m @ diag
    # |det A| = scale² (rotation and shear have det 1), so strokes widen by `scale`.
    return np.linalg.inv(forward), shift, scale


def _render_chunk(u: np.ndarray, size: int, level: np.ndarray, digit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images (m, size, size) for one chunk of per-sample uniforms ``u`` (m, P)."""
    inverse, shift, scale = _affine_inverses(u)
    # float32 from here on: half the memory traffic of float64, and ample precision
    # for coordinates in a 112-pixel template.
    inverse, shift, wobble = inverse.astype(np.float32), shift.astype(np.float32), u[:, 10:].astype(np.float32)
    centres = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)  # output pixel centres in [-1, 1]
    py, px = np.meshgrid(centres, centres, indexing="ij")
    # Inverse map: q = A⁻¹ (p − t), then the smooth wobble.
    dx, dy = px[None] - shift[:, 0, None, None], py[None] - shift[:, 1, None, None]
    qx = inverse[:, 0, 0, None, None] * dx + inverse[:, 0, 1, None, None] * dy
    qy = inverse[:, 1, 0, None, None] * dx + inverse[:, 1, 1, None, None] * dy
    wobble = wobble.reshape(-1, 4, 4)  # 4 sinusoids: (amplitude, direction, frequency, phase)
    for k in range(4):
        amp = np.float32(_ELASTIC) * wobble[:, k, 0, None, None]
        direction = np.float32(np.pi) * wobble[:, k, 1, None, None]
        freq = np.float32(1.5) + np.float32(2.0) * wobble[:, k, 2, None, None]
        phase = np.float32(2 * np.pi) * wobble[:, k, 3, None, None]
        wave = amp * np.sin(freq * (np.cos(direction) * px + np.sin(direction) * py) + phase)
        if k < 2:
            qx = qx + wave
        else:
            qy = qy + wave
    # Template pixel coordinates, +1 for the zero border, clamped onto it when outside.
    limit = np.float32(_TEMPLATE + 1 - 1e-3)
    half = np.float32(_TEMPLATE / 2)
    tx = np.clip(qx * half + (half + np.float32(0.5)), 0.0, limit)  # (q + 1)/2·T − 0.5 + 1
    ty = np.clip(qy * half + (half + np.float32(0.5)), 0.0, limit)
    floor_x, floor_y = np.floor(tx), np.floor(ty)
    fx, fy = tx - floor_x, ty - floor_y  # float32 bilinear weights
    x0, y0 = floor_x.astype(np.int64), floor_y.astype(np.int64)
    flat = _blurred_templates(size)
    stride = _TEMPLATE + 2
    base = ((digit * len(_LEVELS) + level) * flat.shape[1])[:, None, None] + y0 * stride + x0
    pixels = flat.reshape(-1)
    top = pixels[base] * (1 - fx) + pixels[base + 1] * fx
    bottom = pixels[base + stride] * (1 - fx) + pixels[base + stride + 1] * fx
    return top * (1 - fy) + bottom * fy, scale


def make_digits(n: int, size: int = 28, seed: int | np.random.SeedSequence | None = 0, noise: float = 0.03) -> Digits:
    """Render ``n`` random digits at ``size`` x ``size`` pixels (8, 16 or 28), uncached.

    ``noise`` is the largest standard deviation of the added Gaussian pixel noise
    (each image draws its own level in [0, noise]). Same arguments, same digits.
    """
    if size not in _SIZES:
        raise ValueError(f"make_digits: size must be one of {_SIZES}, got {size!r}")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"make_digits: n must be a non-negative int, got {n!r}")
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    param_stream, noise_stream = (np.random.default_rng(s) for s in sequence.spawn(2))
    u = param_stream.random((n, _N_PARAMS))
    labels = np.minimum((u[:, 6] * 10).astype(np.int64), 9)
    level = np.minimum((u[:, 7] * len(_LEVELS)).astype(np.int64), len(_LEVELS) - 1)
    noise_std = (noise * u[:, 8]).astype(np.float32)
    _, widths = _glyph_templates()

    images = np.empty((n, 1, size, size), np.float32)
    thickness = np.empty(n, np.float32)
    chunk = 2048
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rendered, scale = _render_chunk(u[start:stop], size, level[start:stop], labels[start:stop])
        # Every digit's brightest pixel becomes 1, as in MNIST, whatever its stroke or size.
        peak = rendered.reshape(len(rendered), -1).max(axis=1)
        rendered = rendered / np.maximum(peak, 0.25)[:, None, None]
        # Drawn chunk by chunk in order, the noise stream stays the same for any chunking.
        rendered += noise_std[start:stop, None, None] * noise_stream.standard_normal(rendered.shape, np.float32)
        images[start:stop, 0] = np.clip(rendered, 0.0, 1.0)
        thickness[start:stop] = widths[labels[start:stop], level[start:stop]] * (size / _TEMPLATE) * scale
    return Digits(images, labels, thickness)


# ----------------------------------------------------------------------------- caching
_memory_cache: dict[tuple, Digits] = {}


def default_cache_dir() -> Path:
    """``$MINIGEN_CACHE`` if set, else ``~/.cache/minigen``."""
    return Path(os.environ.get("MINIGEN_CACHE") or Path.home() / ".cache" / "minigen")


def _fingerprint() -> str:
    """Font rendering can differ between Pillow/FreeType versions: key the disk cache on them."""
    from PIL import features

    text = f"{GENERATOR_VERSION}|{PIL.__version__}|{features.version('freetype2')}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _read_cache(path: Path, n: int, size: int) -> Digits | None:
    """The digits in the cache file ``path``, or None (with a warning naming the file) if it is damaged.

    A damaged file (truncated by a full disk, overwritten, or from elsewhere) is
    reported and then rendered again and replaced, never trusted and never fatal.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = Digits(archive["images"], archive["labels"], archive["thickness"])
        problem = _cache_problem(data, n, size)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem is None:
        return data
    warnings.warn(f"the digits cache file {path} is damaged ({problem}); rendering the digits again", stacklevel=3)
    return None


def _cache_problem(data: Digits, n: int, size: int) -> str | None:
    """What is wrong with digits read from a cache file that should hold ``n`` at ``size`` pixels, or None."""
    images, labels, thickness = data.images, data.labels, data.thickness
    if images.shape != (n, 1, size, size) or images.dtype != np.float32:
        return f"images are {images.dtype} {images.shape}, expected float32 {(n, 1, size, size)}"
    if labels.shape != (n,) or labels.dtype != np.int64:
        return f"labels are {labels.dtype} {labels.shape}, expected int64 {(n,)}"
    if thickness.shape != (n,) or thickness.dtype != np.float32:
        return f"thickness is {thickness.dtype} {thickness.shape}, expected float32 {(n,)}"
    if n and (labels.min() < 0 or labels.max() > 9):
        return f"labels range over {labels.min()}..{labels.max()}, expected 0-9"
    if not (np.isfinite(images).all() and images.min(initial=0.0) >= 0.0 and images.max(initial=0.0) <= 1.0):
        return "pixel values outside [0, 1]"
    return None


def _write_cache(path: Path, data: Digits) -> None:
    """Write the cache file atomically (a reader or a second writer never sees half a file).

    A cache that cannot be written (a read-only or full disk) is only a warning: the
    digits are already rendered.
    """
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, images=data.images, labels=data.labels, thickness=data.thickness)
    except OSError as error:
        warnings.warn(f"could not write the digits cache file {path} ({error}); continuing without it", stacklevel=3)


def load_digits(
    split: str = "train",
    n: int | None = None,
    size: int = 28,
    seed: int = 0,
    noise: float = 0.03,
    disk_cache: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Digits:
    """The rendered-digits data set: a fixed, deterministic train or test split.

    ``n`` defaults to 10,000 for "train" and 2,000 for "test". The two splits draw
    from different seeds (derived from ``seed``), so they never share a sample.
    Results are cached in memory for the process (a smaller ``n`` reuses a larger
    set, as samples are drawn in a fixed order); ``disk_cache=True`` also keeps them
    as ``.npz`` files under ``cache_dir`` (default ``default_cache_dir()``), written
    atomically. A damaged cache file is reported (a warning naming it), rendered
    again and replaced. Returned arrays are copies, safe to modify.
    """
    if split not in _SPLIT_ID:
        raise ValueError(f"load_digits: split must be 'train' or 'test', got {split!r}")
    n = _DEFAULT_N[split] if n is None else n
    key = (split, size, int(seed), float(noise))
    cached = _memory_cache.get(key)
    if cached is None or len(cached) < n:
        cached = None
        path = None
        if disk_cache:
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            path = folder / f"digits-{split}-{size}px-seed{seed}-noise{noise:g}-n{n}-{_fingerprint()}.npz"
            cached = _read_cache(path, n, size) if path.exists() else None
        if cached is None or len(cached) < n:
            cached = make_digits(n, size=size, seed=np.random.SeedSequence([int(seed), _SPLIT_ID[split]]), noise=noise)
            if path is not None:
                _write_cache(path, cached)
        _memory_cache[key] = cached
    return cached.subset(slice(0, n))
