"""Image grids, PNG files and animated GIFs with Pillow alone.

* ``make_grid`` tiles a batch ``(N, C, H, W)`` into one ``uint8`` picture ``(H', W', 3)``,
  with the same layout rule as ``torchvision.utils.make_grid``.
* ``save_image_grid`` writes that grid as a PNG, enlarging small images (nearest
  neighbour, so 16x16 digits stay crisp and visible). Given a ``title``,
  ``row_labels``, ``col_labels`` or per-tile ``captions`` it writes ``labelled_grid``:
  the same tiles with text around them, so a picture says what its rows and columns
  are (the class, the guidance scale w, true -> predicted, ...).
* ``save_gif`` writes an animation, e.g. a diffusion sampler's denoising steps.

Every writer creates the parent folders and writes atomically (``atomic_write``): the
picture goes to a temporary file in the same folder and is moved over the target with
``os.replace`` only once complete, so a crash never leaves a half-written file and
never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minigen import backend

PathLike = str | os.PathLike
_INK = (40, 40, 40)  # text


# ------------------------------------------------------------------------ atomic writes
@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``.

    Usage::

        with atomic_write("out/loss.png") as tmp:
            image.save(tmp, format="PNG")

    The temporary file lives in the same folder, so ``os.replace`` is an atomic rename
    (a cross-device move would not be). If the body raises, the temporary file is
    removed and ``path`` keeps its old contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name instead of mkstemp: mkstemp creates the file with mode 0600, which
    # would survive the rename; a plain open() by the writer honours the user's umask.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        # Flush the bytes to disk before the rename: otherwise a power cut right after
        # the rename can leave an empty file under the final name on some filesystems.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_pil(image: Image.Image, path: PathLike, **save_kwargs: Any) -> Path:
    """Save a Pillow image atomically; the format comes from the file extension."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell the image format from the file name {str(path)!r}; use .png, .gif or .jpg")
    with atomic_write(path) as tmp:
        # The temporary name ends in .tmp, so the format must be given explicitly.
        image.save(tmp, format=image_format, **save_kwargs)
    return path


# ---------------------------------------------------------------------- array helpers
def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy array from a minigen Tensor, a CuPy array, a Pillow image or array-like."""
    from minigen.tensor import Tensor  # local: keeps `import minigen.utils` light

    if isinstance(x, Tensor):
        return backend.asnumpy(x.data)  # not .numpy(): that refuses tensors requiring grad
    if isinstance(x, Image.Image):
        return np.asarray(x)
    if hasattr(x, "shape") and not isinstance(x, np.ndarray):
        return backend.asnumpy(x)  # CuPy or stand-in array
    return np.asarray(x)


def _to_unit_range(array: np.ndarray, normalize: bool, value_range: tuple[float, float] | None) -> np.ndarray:
    """Float pixels in [0, 1]: uint8 is divided by 255, floats are clipped (or rescaled)."""
    if array.dtype == np.uint8 and not normalize:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if normalize or value_range is not None:
        low, high = value_range if value_range is not None else (float(array.min()), float(array.max()))
        array = (array - low) / max(high - low, 1e-12)
    return np.clip(array, 0.0, 1.0)


def _as_nchw(images: Any) -> np.ndarray:
    array = to_numpy(images)
    if array.ndim == 2:  # one grayscale image (H, W)
        array = array[None, None]
    elif array.ndim == 3:  # a batch of grayscale images (N, H, W)
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            f"make_grid: expected images shaped (N, C, H, W) with C = 1 or 3, or (N, H, W); got {array.shape}"
        )
    return array


# -------------------------------------------------------------------------------- text
@functools.lru_cache(maxsize=32)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's scalable default font at ``size`` pixels, or its bitmap font on old Pillow.

    The scalable font covers ASCII and Latin-1 only: Greek letters, arrows and
    mathematical signs come out as empty boxes, so picture text is written in ASCII
    ("->", "w = 3", "x0_hat").
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def text_label(text: str, size: int, fill: tuple[int, int, int] = _INK) -> Image.Image:
    """``text`` drawn on a transparent, tightly cropped RGBA image (about ``size`` pixels tall).

    On old Pillow (no scalable font) the text is drawn in the small bitmap font.
    """
    chosen = font(size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox((0, 0), text, font=chosen)
    label = Image.new("RGBA", (max(right - left, 1) + 2, max(bottom - top, 1) + 2), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((1 - left, 1 - top), text, font=chosen, fill=tuple(fill) + (255,))
    return label


def paste_text(
    image: Image.Image, x: float, y: float, text: str, size: int, fill: tuple[int, int, int] = _INK, align: str = "lt"
) -> None:
    """Draw ``text`` on ``image`` with its box aligned at (x, y).

    ``align`` is two letters: horizontal ``l``/``c``/``r`` (left, centre, right) and
    vertical ``t``/``c``/``b`` (top, centre, bottom), e.g. ``"rc"`` for a row label
    ending at x. The box is measured from the text instead of using Pillow's
    ``anchor=``, which the bitmap fallback font does not support.
    """
    label = text_label(text, size, fill)
    px = x - {"l": 0.0, "c": label.width / 2, "r": label.width}[align[0]]
    py = y - {"t": 0.0, "c": label.height / 2, "b": label.height}[align[1]]
    image.paste(label, (round(px), round(py)), label)


# ------------------------------------------------------------------------------- grids
def grid_shape(n: int, nrow: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` tiles with ``nrow`` tiles per row (torchvision's naming)."""
    columns = max(1, min(nrow, n))
    return math.ceil(n / columns), columns


def make_grid(
    images: Any,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    pad_value: float = 0.0,
    scale: int = 1,
) -> np.ndarray:
    """Tile ``images`` into one ``uint8`` picture of shape ``(H', W', 3)``.

    ``images`` is ``(N, C, H, W)`` (C = 1 or 3) or ``(N, H, W)``: a Tensor on any device,
    a NumPy array, or a list of ``(C, H, W)`` arrays. Float pixels are taken to lie in
    [0, 1] and are clipped; ``normalize=True`` rescales the batch's min..max (or
    ``value_range``) to [0, 1] first, e.g. for images in [-1, 1]. There are ``nrow``
    tiles per row and ``padding`` pixels of ``pad_value`` around every tile, so

        H' = rows * (H + padding) + padding,   W' = cols * (W + padding) + padding,

    times ``scale`` (a nearest-neighbour enlargement of the whole grid).
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([to_numpy(im) for im in images])
    array = _to_unit_range(_as_nchw(images), normalize, value_range)
    n, channels, height, width = array.shape
    if n == 0:
        raise ValueError("make_grid: got an empty batch of images")
    if channels == 1:
        array = np.repeat(array, 3, axis=1)
    rows, columns = grid_shape(n, nrow)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, 3), pad_value, np.float32
    )
    for index in range(n):
        r, c = divmod(index, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top : top + height, left : left + width] = array[index].transpose(1, 2, 0)
    grid = np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def _auto_scale(height: int, width: int, target: int = 64) -> int:
    """The integer enlargement that makes a tile at least ``target`` pixels on its longer side."""
    return max(1, math.ceil(target / max(height, width, 1)))


def _check_label_count(what: str, labels: Sequence[str] | None, expected: int) -> None:
    if labels is not None and len(labels) != expected:
        raise ValueError(f"labelled_grid: {len(labels)} {what} for {expected}; give exactly one per {what[:-1]}")


def labelled_grid(
    images: Any,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    pad_value: float = 0.0,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
) -> Image.Image:
    """``make_grid(images, ...)`` with text around it, as a Pillow RGB image.

    ``title`` goes above the grid, ``row_labels`` (one per grid row) to the left of
    each row, ``col_labels`` (one per column) above each column, and ``captions`` (one
    per image, e.g. ``"7 -> 1"`` for a digit read as 1) under each tile. Text is
    ASCII: see ``font``. ``scale=None`` enlarges tiles to at least 64 pixels, as in
    ``save_image_grid``.
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([to_numpy(im) for im in images])
    array = _as_nchw(images)
    n, _, height, width = array.shape
    rows, columns = grid_shape(n, nrow)
    _check_label_count("row labels", row_labels, rows)
    _check_label_count("column labels", col_labels, columns)
    _check_label_count("captions", captions, n)
    if scale is None:
        scale = _auto_scale(height, width)
    tile_h, tile_w, gap = height * scale, width * scale, padding * scale
    grid = make_grid(
        array,
        nrow=nrow,
        padding=padding,
        normalize=normalize,
        value_range=value_range,
        pad_value=pad_value,
        scale=scale,
    )
    text_size, title_size, margin = 13, 15, 6
    line_height = {size: text_label("Ag(y|)", size).height for size in (text_size, title_size)}  # any text fits
    # Under each row of tiles: its bottom padding, then a white band for the captions.
    caption_band = gap + line_height[text_size] + 4 if captions is not None else 0
    row_band = max((text_label(str(s), text_size).width for s in row_labels), default=0) + 8 if row_labels else 0
    title_band = line_height[title_size] + 8 if title else 0  # the same for every title: GIF frames match
    col_band = line_height[text_size] + 4 if col_labels is not None else 0

    # The grid, cut into its rows so that a caption band fits under each row of tiles.
    pitch = tile_h + gap  # one tile and the padding above it
    grid_w = grid.shape[1]
    grid_h = rows * (pitch + caption_band) + (0 if caption_band else gap)
    title_w = text_label(title, title_size).width if title else 0
    width_px = max(row_band + grid_w + 2 * margin, title_w + 2 * margin)
    left = (width_px - row_band - grid_w) // 2 + row_band  # the grid and its labels centred under a wide title
    top = margin + title_band + col_band
    picture = Image.new("RGB", (width_px, top + grid_h + margin), (255, 255, 255))
    for r in range(rows):
        strip = grid[r * pitch : (r + 1) * pitch + gap]  # the row of tiles with the padding above and below
        picture.paste(Image.fromarray(strip, "RGB"), (left, top + r * (pitch + caption_band)))

    def tile_box(index: int) -> tuple[int, int]:
        """The top-left pixel of tile ``index`` in the picture."""
        r, c = divmod(index, columns)
        return left + gap + c * (tile_w + gap), top + gap + r * (pitch + caption_band)

    if title:
        centre = min(max(left + grid_w / 2, title_w / 2 + margin), width_px - title_w / 2 - margin)
        paste_text(picture, centre, margin, title, title_size, align="ct")
    for c, label in enumerate(col_labels or []):
        x, _ = tile_box(c)
        paste_text(picture, x + tile_w / 2, top - 3, str(label), text_size, align="cb")
    for r, label in enumerate(row_labels or []):
        _, y = tile_box(r * columns)
        paste_text(picture, left - 6, y + tile_h / 2, str(label), text_size, align="rc")
    for index, caption in enumerate(captions or []):
        x, y = tile_box(index)
        paste_text(picture, x + tile_w / 2, y + tile_h + gap + 2, str(caption), text_size, align="ct")
    return picture


def save_image_grid(
    images: Any,
    path: PathLike,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    pad_value: float = 0.0,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write ``make_grid(images, ...)`` to ``path`` (PNG) and return the path.

    ``scale=None`` picks an integer nearest-neighbour enlargement so every tile is at
    least 64 pixels wide (4x for 16x16 digits); ``scale=1`` keeps the true size. With a
    ``title``, ``row_labels``, ``col_labels`` or ``captions`` the picture is
    ``labelled_grid``'s: the grid with that text around it.
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([to_numpy(im) for im in images])
    array = _as_nchw(images)
    if scale is None:
        scale = _auto_scale(array.shape[2], array.shape[3])
    settings = dict(nrow=nrow, padding=padding, normalize=normalize, value_range=value_range, pad_value=pad_value)
    if title is None and row_labels is None and col_labels is None and captions is None:
        return save_pil(Image.fromarray(make_grid(array, scale=scale, **settings), "RGB"), path)
    picture = labelled_grid(
        array, scale=scale, title=title, row_labels=row_labels, col_labels=col_labels, captions=captions, **settings
    )
    return save_pil(picture, path)


def hstack(
    pictures: Sequence[Image.Image], gap: int = 0, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Pillow images side by side, top-aligned, ``gap`` pixels apart: panels of one figure."""
    if not pictures:
        raise ValueError("hstack: no pictures")
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    row = Image.new("RGB", (width, max(p.height for p in pictures)), background)
    x = 0
    for picture in pictures:
        row.paste(picture.convert("RGB"), (x, 0))
        x += picture.width + gap
    return row


# -------------------------------------------------------------------------------- GIFs
def _frame_to_rgb(frame: Any, normalize: bool) -> np.ndarray:
    """One GIF frame as uint8 (H, W, 3) from a Pillow image, (H, W), (H, W, 3), (C, H, W) or (N, C, H, W)."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = to_numpy(frame)
    if array.ndim == 4:  # a batch: animate its grid
        return make_grid(array, normalize=normalize)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"save_gif: cannot read a frame of shape {array.shape} as an image")
    if array.dtype != np.uint8 or normalize:
        array = np.round(_to_unit_range(array, normalize, None) * 255.0).astype(np.uint8)
    return array


def save_gif(
    frames: Sequence[Any],
    path: PathLike,
    duration: int = 100,
    loop: int = 0,
    scale: int | None = None,
    normalize: bool = False,
    final_pause: int = 0,
) -> Path:
    """Write ``frames`` as an animated GIF and return the path.

    Each frame is a Pillow image or an array/Tensor: ``(H, W)``, ``(H, W, 3)``,
    ``(C, H, W)``, or a batch ``(N, C, H, W)`` shown as a grid. Floats are taken in
    [0, 1] (``normalize=True`` rescales each frame). ``duration`` is milliseconds per
    frame, ``loop=0`` repeats forever, ``final_pause`` adds that many milliseconds on
    the last frame so the result can be seen. ``scale=None`` enlarges small frames
    (nearest neighbour) to at least 128 pixels, or each tile of a batch frame to at
    least 64 pixels, as ``save_image_grid`` does.
    """
    if len(frames) == 0:
        raise ValueError("save_gif: no frames")
    arrays = [_frame_to_rgb(frame, normalize) for frame in frames]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"save_gif: all frames must have the same size, got {sorted(shapes)}")
    if scale is None:
        first = frames[0]
        if not isinstance(first, Image.Image) and to_numpy(first).ndim == 4:
            scale = _auto_scale(*to_numpy(first).shape[2:], target=64)  # grid frames: size by tile, as in PNGs
        else:
            scale = _auto_scale(*arrays[0].shape[:2], target=128)
    if scale > 1:
        arrays = [a.repeat(scale, axis=0).repeat(scale, axis=1) for a in arrays]
    pictures = [Image.fromarray(a, "RGB") for a in arrays]
    durations = [duration] * len(pictures)
    durations[-1] += final_pause
    return save_pil(
        pictures[0],
        path,
        save_all=True,
        append_images=pictures[1:],
        duration=durations,
        loop=loop,
        optimize=False,
    )
