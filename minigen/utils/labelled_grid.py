"""Image grids with words on them: a title, a label per row and per column.

``save_image_grid`` (``minigen.utils.images``) tiles a batch; a reader of the PNG then
has to know from elsewhere that row 3 holds the digit 3, or that column 0 is the
original. ``save_labelled_grid`` writes the same grid with that information on the
picture itself:

    save_labelled_grid(samples, "samples.png", nrow=10, row_labels=[f"digit {c}" for c in range(10)],
                       title="prior samples, one row per requested class")

The tiles stay crisp (nearest-neighbour enlargement, pasted after the text is drawn).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from minigen.utils.images import PathLike, _as_nchw, _auto_scale, grid_shape, make_grid, save_pil, to_numpy
from minigen.utils.plots import _Canvas

_TEXT = 12  # label font size in pixels
_TITLE = 14


def labelled_grid(
    images: Any,
    nrow: int = 8,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    padding: int = 2,
    pad_value: float = 0.4,
    scale: int | None = None,
    normalize: bool = False,
) -> Image.Image:
    """The grid of ``images`` (as ``make_grid``) on a white card with a title and row/column labels.

    ``row_labels`` has one entry per grid row (written left of it), ``col_labels`` one
    per column (above it). ``scale=None`` enlarges tiles to at least 64 pixels.
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([to_numpy(im) for im in images])
    array = _as_nchw(images)
    rows, columns = grid_shape(array.shape[0], nrow)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"labelled_grid: {len(row_labels)} row labels for a grid of {rows} rows")
    if col_labels is not None and len(col_labels) != columns:
        raise ValueError(f"labelled_grid: {len(col_labels)} column labels for a grid of {columns} columns")
    if scale is None:
        scale = _auto_scale(array.shape[2], array.shape[3])
    grid = make_grid(array, nrow=nrow, padding=padding, pad_value=pad_value, scale=scale, normalize=normalize)
    tile_h, tile_w = (array.shape[2] + padding) * scale, (array.shape[3] + padding) * scale
    pad = padding * scale

    measure = _Canvas(1, 1)
    left = 8 + max((measure.text_size(s, _TEXT)[0] for s in row_labels), default=0.0) if row_labels else 6
    top = 6
    if title:
        top += measure.text_size(title, _TITLE)[1] + 8
    if col_labels:
        top += max(measure.text_size(s, _TEXT)[1] for s in col_labels) + 6
    left, top = int(round(left)), int(round(top))
    width = max(left + grid.shape[1] + 6, int(measure.text_size(title, _TITLE)[0]) + 16 if title else 0)

    canvas = _Canvas(width, top + grid.shape[0] + 6)
    if title:
        canvas.text(width / 2, 6, title, size=_TITLE, ha="center", va="top")
    for r, label in enumerate(row_labels or []):
        canvas.text(left - 6, top + pad / 2 + r * tile_h + tile_h / 2, label, size=_TEXT, ha="right", va="center")
    for c, label in enumerate(col_labels or []):
        canvas.text(left + pad / 2 + c * tile_w + tile_w / 2, top - 4, label, size=_TEXT, ha="center", va="bottom")
    picture = canvas.finish()
    picture.paste(Image.fromarray(grid, "RGB"), (left, top))
    return picture


def save_labelled_grid(images: Any, path: PathLike, nrow: int = 8, **kwargs: Any) -> Path:
    """Write ``labelled_grid(images, nrow, **kwargs)`` to ``path`` (PNG, atomically) and return the path."""
    return save_pil(labelled_grid(images, nrow, **kwargs), path)
