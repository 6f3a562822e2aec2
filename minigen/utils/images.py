"""Image grids, PNG files and animated GIFs with Pillow alone.

* ``make_grid`` tiles a batch ``(N, C, H, W)`` into one ``uint8`` picture ``(H', W', 3)``,
  with the same layout rule as ``torchvision.utils.make_grid``.
* ``save_image_grid`` writes that grid as a PNG, enlarging small images (nearest
  neighbour, so 16x16 digits stay crisp and visible).
* ``save_gif`` writes an animation, e.g. a diffusion sampler's denoising steps.

Every writer creates the parent folders and writes atomically (``atomic_write``): the
picture goes to a temporary file in the same folder and is moved over the target with
``os.replace`` only once complete, so a crash never leaves a half-written file and
never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from minigen import backend

PathLike = str | os.PathLike


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


def save_image_grid(
    images: Any,
    path: PathLike,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    pad_value: float = 0.0,
) -> Path:
    """Write ``make_grid(images, ...)`` to ``path`` (PNG) and return the path.

    ``scale=None`` picks an integer nearest-neighbour enlargement so every tile is at
    least 64 pixels wide (4x for 16x16 digits); ``scale=1`` keeps the true size.
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([to_numpy(im) for im in images])
    array = _as_nchw(images)
    if scale is None:
        scale = _auto_scale(array.shape[2], array.shape[3])
    grid = make_grid(
        array,
        nrow=nrow,
        padding=padding,
        normalize=normalize,
        value_range=value_range,
        pad_value=pad_value,
        scale=scale,
    )
    return save_pil(Image.fromarray(grid, "RGB"), path)


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
