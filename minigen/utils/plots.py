"""Clean charts drawn with Pillow alone (no matplotlib): scatter, line, heatmap, bar.

The demos use them for 2-D samples (GANs, diffusion), loss curves, confusion
matrices, attention maps and RoPE similarity tables. Each function writes a PNG
atomically (see ``minigen.utils.images.atomic_write``) and returns its path.

How the pictures are drawn: everything is painted on a canvas ``_SUPERSAMPLE`` times
larger than the result and shrunk with a Lanczos filter at the end. Pillow draws
lines and circles without anti-aliasing; shrinking a larger drawing smooths their
edges. Text uses Pillow's built-in scalable font (Pillow >= 10.1) and falls back to
its small bitmap font on older versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minigen.utils.images import PathLike, save_pil, text_label, to_numpy
from minigen.utils.images import font as _font  # the one font loader, shared with the labelled grids

_SUPERSAMPLE = 2

# matplotlib's "tab10": distinct, colour-blind friendlier than pure RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

# Colour maps as evenly spaced stops, interpolated linearly (close to matplotlib's).
COLORMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "viridis": (
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ),
    # Diverging: blue for negative, light grey at the centre, red for positive.
    "coolwarm": ((59, 76, 192), (141, 176, 254), (221, 220, 220), (244, 154, 123), (180, 4, 38)),
    "blues": ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)),
    "gray": ((0, 0, 0), (255, 255, 255)),
}

_INK = (40, 40, 40)  # text and axes
_GRID = (232, 232, 232)
_GRID_MINOR = (244, 244, 244)
_FRAME = (150, 150, 150)

Color = tuple[int, int, int] | str


# ---------------------------------------------------------------------------- colours
def colormap(values: np.ndarray, name: str = "viridis") -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB with the named colour map (NaN -> light grey)."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose one of {sorted(COLORMAPS)}")
    stops = np.asarray(COLORMAPS[name], dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    nan = ~np.isfinite(values)
    position = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(stops) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(stops) - 2)
    frac = (position - low)[..., None]
    rgb = stops[low] * (1.0 - frac) + stops[low + 1] * frac
    rgb[nan] = (220, 220, 220)
    return np.round(rgb).astype(np.uint8)


def _rgb(color: Color) -> tuple[int, int, int]:
    if isinstance(color, str):
        from PIL import ImageColor

        return ImageColor.getrgb(color)[:3]
    return tuple(int(c) for c in color[:3])


class _Canvas:
    """A supersampled drawing surface that takes coordinates in final-image pixels."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.s = _SUPERSAMPLE
        self.image = Image.new("RGB", (width * self.s, height * self.s), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image, "RGBA")  # "RGBA" blends translucent fills

    def _p(self, *coords: float) -> list[float]:
        return [c * self.s for c in coords]

    def _label(self, text: str, size: int, fill: Color) -> Image.Image:
        """``text`` on a transparent, tightly cropped RGBA image at the canvas's scale.

        The scalable font is drawn at ``size x supersample`` directly; the bitmap
        fallback (one fixed size) is drawn at its size and enlarged, so text keeps
        its size in the final picture either way.
        """
        label = text_label(text, size * self.s, _rgb(fill))
        if not isinstance(_font(size * self.s), ImageFont.FreeTypeFont):
            label = label.resize((label.width * self.s, label.height * self.s), Image.Resampling.NEAREST)
        return label

    def text_size(self, text: str, size: int) -> tuple[float, float]:
        label = self._label(text, size, _INK)
        return label.width / self.s, label.height / self.s

    def text(
        self, x: float, y: float, text: str, size: int = 12, fill: Color = _INK, ha: str = "left", va: str = "top"
    ) -> None:
        """Draw ``text`` aligned at (x, y): ``ha`` left/center/right, ``va`` top/center/bottom.

        The alignment is computed from the text's bounding box instead of Pillow's
        ``anchor=``, which the bitmap fallback font does not support.
        """
        label = self._label(text, size, fill)
        px = x * self.s - {"left": 0.0, "center": label.width / 2, "right": label.width}[ha]
        py = y * self.s - {"top": 0.0, "center": label.height / 2, "bottom": label.height}[va]
        self.image.paste(label, (round(px), round(py)), label)

    def vertical_text(self, x: float, y: float, text: str, size: int = 12, fill: Color = _INK) -> None:
        """Text rotated 90 degrees (reading upwards), centred at (x, y); for y-axis labels."""
        label = self._label(text, size, fill).rotate(90, expand=True)
        self.image.paste(label, (round(x * self.s - label.width / 2), round(y * self.s - label.height / 2)), label)

    def line(self, points: Sequence[tuple[float, float]], fill: Any, width: float = 1.0) -> None:
        flat = [(px * self.s, py * self.s) for px, py in points]
        self.draw.line(flat, fill=fill, width=max(1, round(width * self.s)), joint="curve")

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Any = None, outline: Any = None) -> None:
        self.draw.rectangle(self._p(x0, y0, x1, y1), fill=fill, outline=outline, width=self.s if outline else 0)

    def dots(self, xs: np.ndarray, ys: np.ndarray, radius: float, fill: Any) -> None:
        r = radius * self.s
        for px, py in zip(xs * self.s, ys * self.s):
            self.draw.ellipse((px - r, py - r, px + r, py + r), fill=fill)

    def finish(self) -> Image.Image:
        return self.image.resize((self.width, self.height), Image.Resampling.LANCZOS)


# ------------------------------------------------------------------------------ ticks
def _nice_step(span: float, target: int) -> float:
    """The 1-2-2.5-5 x 10^k step that gives the tick count closest to ``target``."""
    magnitude = 10.0 ** math.floor(math.log10(span / max(target, 1)))
    candidates = [m * magnitude for m in (0.5, 1.0, 2.0, 2.5, 5.0, 10.0)]
    return min(candidates, key=lambda step: abs(span / step - target))


def _linear_ticks(low: float, high: float, target: int = 6, integer: bool = False) -> tuple[np.ndarray, float]:
    step = _nice_step(high - low, target)
    if integer:  # steps, epochs: no tick at 0.25
        step = max(1.0, round(step))
    first = math.ceil(low / step - 1e-9) * step
    ticks = np.arange(first, high + step * 1e-6, step)
    return ticks[(ticks >= low - step * 1e-6) & (ticks <= high + step * 1e-6)], step


def _format_tick(value: float, step: float) -> str:
    """A tick label with just enough decimals for ``step`` (2.5 needs one, 0.25 two)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2g}"
    decimals = next((d for d in range(0, 7) if abs(step * 10**d - round(step * 10**d)) < 1e-6), 6)
    return f"{value:.{decimals}f}"


def _log_ticks(low: float, high: float) -> tuple[list[float], list[float]]:
    """Major ticks (powers of ten, plus 2 and 5 when the range is narrow) and minor ticks."""
    lo_exp, hi_exp = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0**e for e in range(lo_exp, hi_exp + 1)]
    multiples = (1, 2, 5) if hi_exp - lo_exp <= 2 else (1,)
    major = [m * d for d in decades for m in multiples if low <= m * d <= high]
    minor = [m * d for d in decades for m in range(2, 10) if low <= m * d <= high and m * d not in major]
    if len(major) < 2:  # less than a decade visible: fall back to the minor ticks as labels
        major, minor = sorted(set(major + minor)), []
    return major, minor


def _padded(low: float, high: float, fraction: float = 0.05) -> tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    if high - low < 1e-12:
        pad = max(abs(low) * 0.1, 0.5)
        return low - pad, high + pad
    pad = (high - low) * fraction
    return low - pad, high + pad


# ------------------------------------------------------------------------------- axes
class _Axes:
    """A rectangle of the canvas with a data coordinate system, grid, ticks and labels."""

    def __init__(
        self,
        canvas: _Canvas,
        box: tuple[float, float, float, float],
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        logy: bool = False,
        integer_x: bool = False,
    ) -> None:
        self.canvas, self.box = canvas, box
        self.xlim, self.ylim, self.logy = xlim, ylim, logy
        self.integer_x = integer_x

    def x(self, values: Any) -> np.ndarray:
        left, _, right, _ = self.box
        low, high = self.xlim
        return left + (np.asarray(values, dtype=np.float64) - low) / (high - low) * (right - left)

    def y(self, values: Any) -> np.ndarray:
        _, top, _, bottom = self.box
        values = np.asarray(values, dtype=np.float64)
        low, high = self.ylim
        if self.logy:
            values, low, high = np.log10(values), math.log10(low), math.log10(high)
        return bottom - (values - low) / (high - low) * (bottom - top)

    def decorate(self, xlabel: str | None = None, ylabel: str | None = None) -> None:
        """Grid lines, frame, tick labels and axis labels."""
        c = self.canvas
        left, top, right, bottom = self.box
        c.rect(left, top, right, bottom, fill=(252, 252, 252))
        xticks, xstep = _linear_ticks(*self.xlim, integer=self.integer_x)
        if self.logy:
            yticks, yminor = _log_ticks(*self.ylim)
            for v in yminor:
                c.line([(left, self.y(v)), (right, self.y(v))], fill=_GRID_MINOR)
            ylabels = [f"{v:g}" for v in yticks]
        else:
            yticks, ystep = _linear_ticks(*self.ylim)
            ylabels = [_format_tick(v, ystep) for v in yticks]
        for v in xticks:
            px = float(self.x(v))
            c.line([(px, top), (px, bottom)], fill=_GRID)
            c.line([(px, bottom), (px, bottom + 4)], fill=_FRAME)
            c.text(px, bottom + 7, _format_tick(v, xstep), size=11, ha="center", va="top")
        for v, label in zip(yticks, ylabels):
            py = float(self.y(v))
            c.line([(left, py), (right, py)], fill=_GRID)
            c.line([(left - 4, py), (left, py)], fill=_FRAME)
            c.text(left - 7, py, label, size=11, ha="right", va="center")
        c.rect(left, top, right, bottom, outline=_FRAME)
        if xlabel:
            c.text((left + right) / 2, bottom + 26, xlabel, size=12, ha="center", va="top")
        if ylabel:
            widest = max((c.text_size(s, 11)[0] for s in ylabels), default=0)
            c.vertical_text(left - widest - 20, (top + bottom) / 2, ylabel, size=12)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]], kind: str = "line") -> None:
        """A legend box in the upper right corner of the axes."""
        entries = [(name, color) for name, color in entries if name]
        if not entries:
            return
        c = self.canvas
        _, top, right, _ = self.box
        row = 18
        width = max(c.text_size(name, 11)[0] for name, _ in entries) + 42
        x0, y0 = right - width - 8, top + 8
        c.rect(x0, y0, x0 + width, y0 + row * len(entries) + 8, fill=(255, 255, 255, 225), outline=(205, 205, 205))
        for i, (name, color) in enumerate(entries):
            cy = y0 + 4 + row * i + row / 2
            if kind == "line":
                c.line([(x0 + 8, cy), (x0 + 28, cy)], fill=color, width=2.5)
            else:
                c.dots(np.array([x0 + 18.0]), np.array([cy]), 4.0, color)
            c.text(x0 + 34, cy, name, size=11, ha="left", va="center")


def _title(canvas: _Canvas, title: str | None, center_x: float) -> None:
    if title:
        canvas.text(center_x, 12, title, size=15, ha="center", va="top")


def _y_margin(canvas: _Canvas, labels: Sequence[str], ylabel: str | None) -> float:
    widest = max((canvas.text_size(s, 11)[0] for s in labels), default=0)
    return widest + 16 + (22 if ylabel else 0)


# ---------------------------------------------------------------------------- scatter
def _as_point_sets(points_or_sets: Any) -> list[np.ndarray]:
    if isinstance(points_or_sets, (list, tuple)):
        sets = [to_numpy(p) for p in points_or_sets]
    else:
        sets = [to_numpy(points_or_sets)]
    for i, points in enumerate(sets):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"scatter_plot: point set {i} must have shape (N, 2), got {points.shape}")
    return [p.astype(np.float64) for p in sets]


def _limits(limits: Any, values: np.ndarray) -> tuple[float, float]:
    if limits is not None:
        return float(limits[0]), float(limits[1])
    finite = values[np.isfinite(values)]
    return _padded(float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def scatter_plot(
    points_or_list_of_sets: Any,
    path: PathLike,
    colors: Sequence[Color] | None = None,
    labels: Sequence[str] | None = None,
    limits: Any = None,
    title: str | None = None,
    point_size: float = 2.5,
    alpha: float = 0.7,
    equal_aspect: bool = True,
    size: tuple[int, int] = (560, 560),
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """Scatter one ``(N, 2)`` point set or a list of them (e.g. data vs. samples).

    ``limits`` is ``(low, high)`` for both axes or ``((xlow, xhigh), (ylow, yhigh))``;
    by default it covers the points with a 5% margin. ``equal_aspect`` keeps circles
    round (both axes get the same units per pixel). ``labels`` names each set in a
    legend; ``point_size`` is the dot radius in pixels and ``alpha`` its opacity.
    """
    sets = _as_point_sets(points_or_list_of_sets)
    colors = [_rgb(c) for c in colors] if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(sets))]
    everything = np.concatenate(sets) if sets else np.zeros((0, 2))
    if limits is not None and np.ndim(limits[0]) == 0:
        limits = (limits, limits)
    xlim = _limits(limits[0] if limits is not None else None, everything[:, 0])
    ylim = _limits(limits[1] if limits is not None else None, everything[:, 1])

    width, height = size
    canvas = _Canvas(width, height)
    _, ystep = _linear_ticks(*ylim)
    left = 8 + _y_margin(canvas, [_format_tick(v, ystep) for v in _linear_ticks(*ylim)[0]], ylabel)
    top = 40 if title else 16
    box = [left, top, width - 18, height - (52 if xlabel else 32)]
    if equal_aspect:
        # Widen the shorter data range so one data unit is the same number of pixels on both axes.
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        units_per_pixel = max((xlim[1] - xlim[0]) / box_w, (ylim[1] - ylim[0]) / box_h)
        xc, yc = sum(xlim) / 2, sum(ylim) / 2
        xlim = (xc - units_per_pixel * box_w / 2, xc + units_per_pixel * box_w / 2)
        ylim = (yc - units_per_pixel * box_h / 2, yc + units_per_pixel * box_h / 2)
    axes = _Axes(canvas, tuple(box), xlim, ylim)
    axes.decorate(xlabel, ylabel)
    opacity = int(round(np.clip(alpha, 0.0, 1.0) * 255))
    for points, color in zip(sets, colors):
        keep = np.isfinite(points).all(axis=1)
        px, py = axes.x(points[keep, 0]), axes.y(points[keep, 1])
        inside = (px >= box[0]) & (px <= box[2]) & (py >= box[1]) & (py <= box[3])
        canvas.dots(px[inside], py[inside], point_size, color + (opacity,))
    canvas.rect(*box, outline=_FRAME)
    if labels is not None:
        axes.legend(list(zip(labels, colors)), kind="dot")
    _title(canvas, title, (box[0] + box[2]) / 2)
    return save_pil(canvas.finish(), path)


# ------------------------------------------------------------------------------- lines
def _series_xy(name: str, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """``ys`` or an ``(xs, ys)`` pair as two float arrays."""
    if isinstance(values, tuple) and len(values) == 2 and all(np.ndim(v) == 1 for v in values):
        xs, ys = (np.asarray(to_numpy(v), dtype=np.float64) for v in values)
    else:
        ys = np.asarray(to_numpy(values), dtype=np.float64).reshape(-1)
        xs = np.arange(len(ys), dtype=np.float64)
    if xs.shape != ys.shape:
        raise ValueError(f"line_plot: series {name!r} has {len(xs)} x values but {len(ys)} y values")
    return xs, ys


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    It averages the past only, so on a falling loss curve it trails behind, above the
    raw points: fine for a running value (a progress bar), wrong for a picture of a
    whole curve. Charts use ``moving_average``.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    average, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if np.isfinite(v):
            average = smoothing * average + (1.0 - smoothing) * v
            weight = smoothing * weight + (1.0 - smoothing)
        out[i] = average / weight if weight > 0 else np.nan
    return out


def moving_average(values: Sequence[float], smoothing: float) -> np.ndarray:
    """A centred moving average: each point is the mean of the points within h steps on both sides.

    The window is symmetric, so the smoothed line has no lag: a straight line comes out
    unchanged, and a falling loss curve is not drawn above its raw points (as a trailing
    average such as ``ema`` is). Near the ends the window shrinks to keep it centred: the
    first and last points are their raw values. ``smoothing`` in [0, 1) sets the
    half-width h = round(s / (1 − s)), the half-span of an EMA with factor s: 9 points for
    0.9, 19 for 0.95. Missing values (NaN, inf) are left out of the means and stay missing.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"moving_average: smoothing must be in [0, 1), got {smoothing}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    half = round(smoothing / (1.0 - smoothing))
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])  # sums[i] = Σ values[:i]
    counts = np.concatenate([[0], np.cumsum(finite)])
    index = np.arange(len(values))
    reach = np.minimum(half, np.minimum(index, len(values) - 1 - index))  # as many points left as right
    low, high = index - reach, index + reach + 1
    count = counts[high] - counts[low]
    mean = (sums[high] - sums[low]) / np.maximum(count, 1)
    return np.where(finite & (count > 0), mean, np.nan)


def _polylines(axes: _Axes, xs: np.ndarray, ys: np.ndarray) -> list[list[tuple[float, float]]]:
    """Screen polylines, broken where a value is missing (NaN/inf, or <= 0 on a log axis)."""
    valid = np.isfinite(xs) & np.isfinite(ys)
    if axes.logy:
        valid &= ys > 0
    px = axes.x(np.where(valid, xs, 0.0))
    py = axes.y(np.where(valid, ys, 1.0))
    pieces, current = [], []
    for ok, a, b in zip(valid, px, py):
        if ok:
            current.append((float(a), float(b)))
        elif current:
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    return pieces


def line_plot(
    series: Mapping[str, Any],
    path: PathLike,
    title: str | None = None,
    xlabel: str | None = "step",
    ylabel: str | None = None,
    logy: bool = False,
    smooth: float = 0.0,
    colors: Sequence[Color] | None = None,
    size: tuple[int, int] = (640, 420),
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Line chart of named series, e.g. ``{"train": losses, "test": (steps, test_losses)}``.

    Each value is a list of y values (x = 0, 1, 2, ...) or an ``(xs, ys)`` pair.
    ``logy=True`` uses a log-scaled y axis (non-positive values are skipped);
    ``smooth`` in [0, 1) draws a centred moving average (``moving_average``, no lag) over a faint
    raw curve, which makes noisy minibatch losses readable. Missing values (NaN) break the line.
    """
    if not series:
        raise ValueError("line_plot: no series to draw")
    data = {name: _series_xy(name, values) for name, values in series.items()}
    colors = [_rgb(c) for c in colors] if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(data))]
    all_x = np.concatenate([xs for xs, _ in data.values()])
    all_y = np.concatenate([ys for _, ys in data.values()])
    finite_x = all_x[np.isfinite(all_x)]
    xlim = (float(finite_x.min()), float(finite_x.max())) if finite_x.size else (0.0, 1.0)
    if xlim[1] - xlim[0] < 1e-12:
        xlim = _padded(*xlim)
    if logy:
        positive = all_y[np.isfinite(all_y) & (all_y > 0)]
        if positive.size == 0:
            raise ValueError("line_plot: logy=True needs positive values")
        low, high = float(positive.min()), float(positive.max())
        if high / low < 1.0001:
            low, high = low / 2, high * 2
        log_pad = (math.log10(high) - math.log10(low)) * 0.05
        auto_ylim = (10 ** (math.log10(low) - log_pad), 10 ** (math.log10(high) + log_pad))
    else:
        finite_y = all_y[np.isfinite(all_y)]
        auto_ylim = _padded(float(finite_y.min()), float(finite_y.max())) if finite_y.size else (0.0, 1.0)
    ylim = ylim if ylim is not None else auto_ylim

    width, height = size
    canvas = _Canvas(width, height)
    if logy:
        ylabels = [f"{v:g}" for v in _log_ticks(*ylim)[0]]
    else:
        ticks, step = _linear_ticks(*ylim)
        ylabels = [_format_tick(v, step) for v in ticks]
    box = (8 + _y_margin(canvas, ylabels, ylabel), 40 if title else 16, width - 20, height - (52 if xlabel else 32))
    integer_x = bool(finite_x.size) and bool(np.all(finite_x == np.round(finite_x)))
    axes = _Axes(canvas, box, xlim, ylim, logy=logy, integer_x=integer_x)
    axes.decorate(xlabel, ylabel)
    for (xs, ys), color in zip(data.values(), colors):
        if smooth > 0:
            for piece in _polylines(axes, xs, ys):
                canvas.line(piece, fill=color + (70,), width=1.0)
            ys = moving_average(ys, smooth)
        for piece in _polylines(axes, xs, ys):
            if len(piece) == 1:
                canvas.dots(np.array([piece[0][0]]), np.array([piece[0][1]]), 2.5, color)
            else:
                canvas.line(piece, fill=color, width=2.0)
    canvas.rect(*box, outline=_FRAME)
    axes.legend(list(zip(data.keys(), colors)))
    _title(canvas, title, (box[0] + box[2]) / 2)
    return save_pil(canvas.finish(), path)


# ---------------------------------------------------------------------------- heatmap
def _label_stride(count: int, room: float, label_extent: float) -> int:
    """Show every k-th label so that labels do not overlap."""
    stride = 1
    while count > 1 and room * stride < label_extent and stride < count:
        stride = {1: 2, 2: 5}.get(stride, stride * 2)
    return stride


def heatmap(
    matrix: Any,
    path: PathLike,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    fmt: str | None = None,
    colorbar: bool = True,
    cell_size: int | None = None,
) -> Path:
    """Colour-coded matrix: confusion matrices, attention maps, similarity tables.

    Row 0 is at the top. ``annotate`` writes each value in its cell (by default when
    the matrix is at most 16 x 16); ``fmt`` is its format (``"{:d}"`` for integer
    matrices, ``"{:.2f}"`` otherwise). ``cmap`` is one of ``COLORMAPS`` ("viridis",
    "blues" for counts, "coolwarm" for signed values, centred on 0 unless ``vmin``/
    ``vmax`` are given). Large matrices get smaller cells and thinned-out labels.
    """
    values = np.asarray(to_numpy(matrix), dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heatmap: expected a non-empty 2-D matrix, got shape {values.shape}")
    rows, cols = values.shape
    finite = values[np.isfinite(values)]
    low = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    high = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if cmap == "coolwarm" and vmin is None and vmax is None:
        bound = max(abs(low), abs(high))
        low, high = -bound, bound
    if high - low < 1e-12:
        high = low + 1.0
    integral = finite.size > 0 and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1e9
    if fmt is None:
        fmt = "{:.0f}" if integral else "{:.2f}"
    if row_labels is None:
        row_labels = [str(i) for i in range(rows)]
    if col_labels is None:
        col_labels = [str(j) for j in range(cols)]
    if len(row_labels) != rows or len(col_labels) != cols:
        raise ValueError(
            f"heatmap: {len(row_labels)} row labels and {len(col_labels)} column labels for a {rows} x {cols} matrix"
        )
    if cell_size is None:
        cell_size = int(np.clip(440 // max(rows, cols), 2, 56))
    if annotate is None:
        annotate = max(rows, cols) <= 16 and cell_size >= 24

    probe = _Canvas(8, 8)
    row_text_w = max(probe.text_size(str(s), 11)[0] for s in row_labels)
    col_text_w = max(probe.text_size(str(s), 11)[0] for s in col_labels)
    col_stride = _label_stride(cols, cell_size, col_text_w + 6)
    row_stride = _label_stride(rows, cell_size, 18)
    rotate_cols = col_text_w + 6 > cell_size * col_stride and col_text_w > 24
    col_band = (col_text_w if rotate_cols else 14) + 10

    left = 12 + (22 if ylabel else 0) + row_text_w + 8
    top = 44 if title else 16
    grid_w, grid_h = cols * cell_size, rows * cell_size
    bar_room = 76 if colorbar else 0
    width = int(left + grid_w + bar_room + 16)
    height = int(top + grid_h + col_band + (26 if xlabel else 0) + 12)
    width = max(width, 240)
    canvas = _Canvas(width, height)

    colours = colormap((values - low) / (high - low), cmap)
    cells = Image.fromarray(colours, "RGB").resize((grid_w * canvas.s, grid_h * canvas.s), Image.Resampling.NEAREST)
    canvas.image.paste(cells, (int(left * canvas.s), int(top * canvas.s)))
    if annotate:
        size = int(np.clip(cell_size * 0.3, 8, 12))
        luminance = colours.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        for i in range(rows):
            for j in range(cols):
                if not np.isfinite(values[i, j]):
                    continue
                text = fmt.format(int(round(values[i, j]))) if fmt == "{:d}" else fmt.format(values[i, j])
                ink = (255, 255, 255) if luminance[i, j] < 140 else (30, 30, 30)
                cx, cy = left + (j + 0.5) * cell_size, top + (i + 0.5) * cell_size
                canvas.text(cx, cy, text, size=size, fill=ink, ha="center", va="center")
    canvas.rect(left, top, left + grid_w, top + grid_h, outline=_FRAME)
    for i in range(0, rows, row_stride):
        canvas.text(left - 6, top + (i + 0.5) * cell_size, str(row_labels[i]), size=11, ha="right", va="center")
    for j in range(0, cols, col_stride):
        cx = left + (j + 0.5) * cell_size
        if rotate_cols:
            canvas.vertical_text(cx, top + grid_h + 6 + col_text_w / 2, str(col_labels[j]), size=11)
        else:
            canvas.text(cx, top + grid_h + 6, str(col_labels[j]), size=11, ha="center", va="top")
    if xlabel:
        canvas.text(left + grid_w / 2, top + grid_h + col_band + 4, xlabel, size=12, ha="center", va="top")
    if ylabel:
        canvas.vertical_text(12 + 8, top + grid_h / 2, ylabel, size=12)
    if colorbar:
        _draw_colorbar(canvas, left + grid_w + 14, top, grid_h, low, high, cmap)
    _title(canvas, title, left + grid_w / 2)
    return save_pil(canvas.finish(), path)


_BAR_WIDTH = 14


def _draw_colorbar(canvas: _Canvas, left: float, top: float, height: float, low: float, high: float, cmap: str) -> None:
    """A vertical colour ramp from ``high`` (top) to ``low`` (bottom) with tick labels on its right."""
    ramp = colormap(np.linspace(1.0, 0.0, 256)[:, None], cmap)
    size = (round(_BAR_WIDTH * canvas.s), round(height * canvas.s))
    strip = Image.fromarray(ramp, "RGB").resize(size, Image.Resampling.BILINEAR)
    canvas.image.paste(strip, (round(left * canvas.s), round(top * canvas.s)))
    canvas.rect(left, top, left + _BAR_WIDTH, top + height, outline=_FRAME)
    ticks, step = _linear_ticks(low, high, target=max(2, min(6, int(height) // 40)))
    for v in ticks:
        py = top + (high - v) / (high - low) * height
        canvas.line([(left + _BAR_WIDTH, py), (left + _BAR_WIDTH + 4, py)], fill=_FRAME)
        canvas.text(left + _BAR_WIDTH + 7, py, _format_tick(v, step), size=10, ha="left", va="center")


def colorbar(
    low: float, high: float, height: int, cmap: str = "viridis", label: str | None = None, top: int = 8
) -> Image.Image:
    """A stand-alone colour bar, ``height`` pixels tall, ``top`` pixels down, to paste beside a picture (``hstack``).

    It reads like ``heatmap``'s: the colour map from ``low`` (bottom) to ``high`` (top),
    tick labels on the right, and ``label`` (e.g. "cosine similarity") written upwards
    beside them.
    """
    if not high > low:
        raise ValueError(f"colorbar: high must be above low, got low={low}, high={high}")
    probe = _Canvas(8, 8)
    ticks, step = _linear_ticks(low, high, target=max(2, min(6, height // 40)))
    labels_w = max(probe.text_size(_format_tick(v, step), 10)[0] for v in ticks)
    width = int(8 + _BAR_WIDTH + 7 + labels_w + (26 if label else 0) + 6)
    canvas = _Canvas(width, top + height + 8)
    _draw_colorbar(canvas, 8, top, height, low, high, cmap)
    if label:
        canvas.vertical_text(width - 14, top + height / 2, label, size=12)
    return canvas.finish()


# -------------------------------------------------------------------------------- bars
def bar_chart(
    values: Mapping[str, float] | Sequence[float],
    path: PathLike,
    title: str | None = None,
    ylabel: str | None = None,
    xlabel: str | None = None,
    labels: Sequence[str] | None = None,
    color: Color | None = None,
    annotate: bool = True,
    size: tuple[int, int] = (560, 380),
) -> Path:
    """Vertical bars, e.g. samples per mode of a GAN or per-class accuracy.

    ``values`` is a ``{label: value}`` mapping or a sequence (labels default to 0, 1, ...).
    """
    if isinstance(values, Mapping):
        labels, heights = [str(k) for k in values], np.asarray(list(values.values()), dtype=np.float64)
    else:
        heights = np.asarray(to_numpy(values), dtype=np.float64).reshape(-1)
        labels = [str(s) for s in labels] if labels is not None else [str(i) for i in range(len(heights))]
    if len(heights) == 0 or len(labels) != len(heights):
        raise ValueError(f"bar_chart: {len(labels)} labels for {len(heights)} values")
    fill = _rgb(color) if color is not None else PALETTE[0]
    low = min(0.0, float(np.nanmin(heights)))
    high = max(0.0, float(np.nanmax(heights)))
    pad = (high - low) * 0.1
    ylim = (low - pad * (low < 0), high + pad * (high > 0)) if high > low else (0.0, 1.0)

    width, height = size
    canvas = _Canvas(width, height)
    ticks, step = _linear_ticks(*ylim)
    box = (
        8 + _y_margin(canvas, [_format_tick(v, step) for v in ticks], ylabel),
        40 if title else 16,
        width - 16,
        height - (52 if xlabel else 32),
    )
    axes = _Axes(canvas, box, (0.0, 1.0), ylim)
    # Horizontal grid only: the x axis holds categories, not numbers.
    left, top, right, bottom = box
    canvas.rect(left, top, right, bottom, fill=(252, 252, 252))
    for v in ticks:
        py = float(axes.y(v))
        canvas.line([(left, py), (right, py)], fill=_GRID)
        canvas.text(left - 7, py, _format_tick(v, step), size=11, ha="right", va="center")
    slot = (right - left) / len(heights)
    zero = float(axes.y(0.0))
    label_w = max(canvas.text_size(s, 11)[0] for s in labels)
    stride = _label_stride(len(labels), slot, label_w + 6)
    for i, (label, value) in enumerate(zip(labels, heights)):
        x0, x1 = left + slot * (i + 0.15), left + slot * (i + 0.85)
        if np.isfinite(value):
            py = float(axes.y(value))
            canvas.rect(x0, min(py, zero), x1, max(py, zero), fill=fill)
            if annotate and slot >= 22:
                text = f"{value:.0f}" if value == round(value) else f"{value:.3g}"
                if value >= 0:  # above a positive bar, below a negative one
                    canvas.text((x0 + x1) / 2, py - 3, text, size=10, ha="center", va="bottom")
                else:
                    canvas.text((x0 + x1) / 2, py + 3, text, size=10, ha="center", va="top")
        if i % stride == 0:
            canvas.text((x0 + x1) / 2, bottom + 7, label, size=11, ha="center", va="top")
    canvas.line([(left, zero), (right, zero)], fill=_FRAME)
    canvas.rect(left, top, right, bottom, outline=_FRAME)
    if xlabel:
        canvas.text((left + right) / 2, bottom + 26, xlabel, size=12, ha="center", va="top")
    if ylabel:
        widest = max(canvas.text_size(_format_tick(v, step), 11)[0] for v in ticks)
        canvas.vertical_text(left - widest - 20, (top + bottom) / 2, ylabel, size=12)
    _title(canvas, title, (left + right) / 2)
    return save_pil(canvas.finish(), path)
