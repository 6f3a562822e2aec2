"""Resizing images (and 1-D / 3-D signals): nearest-neighbour and (bi/tri)linear interpolation.

Every mode here is *separable* and *linear*: along each spatial axis, output position o
reads a weighted mix of input positions,

    y[..., o, ...] = Σ_i M[o, i] · x[..., i, ...],

with a small interpolation matrix M of shape (out, in). Resizing an image applies one
such matrix per axis, Y = M_H · X · M_Wᵀ, and the gradient is the transposed map,
∂L/∂X = M_Hᵀ · G · M_W. (The backward of a linear map is its transpose, so second
derivatives come for free.)

The rows of M, with PyTorch's index rules, for an axis of ``in`` → ``out`` samples and
scale r = in/out (or 1/scale_factor when that was given):

* ``nearest``:  M[o, ⌊o·r⌋] = 1  (clipped to in − 1). With an integer upscale factor m
  this is "repeat every pixel m times", done as a broadcast and a reshape.
* ``nearest-exact``:  M[o, ⌊(o + ½)·r⌋] = 1, the pixel whose centre is nearest.
* ``linear`` / ``bilinear`` / ``trilinear``, ``align_corners=False``: the source
  coordinate is s = (o + ½)·r − ½ (pixel centres line up), clamped at 0; with
  i = ⌊s⌋ and λ = s − i, M[o, i] = 1 − λ and M[o, min(i + 1, in − 1)] = λ.
  ``align_corners=True`` uses s = o·(in − 1)/(out − 1) (the corner pixels line up).

Nearest modes gather (``xp.take``) instead of multiplying by a 0/1 matrix, which is
exact even for ±inf inputs; their gradient multiplies by Mᵀ, which sums the gradients of
all outputs that copied the same input pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minigen.autograd import Function
from minigen.tensor import Tensor

_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}
_NEAREST_MODES = ("nearest", "nearest-exact")


def _apply_along(x: Any, matrix: Any, axis: int) -> Any:
    """y[..., o, ...] = Σ_i matrix[o, i] · x[..., i, ...] along ``axis`` (as a matmul)."""
    ndim = x.ndim
    if axis == ndim - 1:
        return x @ matrix.T
    moved = x.swapaxes(axis, ndim - 2)
    out = matrix @ moved
    return out.swapaxes(axis, ndim - 2)


class AxisLinear(Function):
    """y = M applied along ``axis`` (y[..., o, ...] = Σ_i M[o, i] x[..., i, ...]);  ∂L/∂x = Mᵀ applied to g."""

    __slots__ = ("matrix", "axis")

    def forward(self, x: Tensor, matrix: Any, axis: int):
        self.matrix, self.axis = matrix, axis
        return _apply_along(x.data, matrix, axis)

    def backward(self, grad: Tensor):
        return AxisLinear.apply(grad, matrix=self.matrix.T, axis=self.axis)


class AxisGather(Function):
    """y = x[..., index, ...] along ``axis`` (nearest-neighbour sampling);
    ∂L/∂x = Mᵀ applied to g, with M the 0/1 matrix M[o, index[o]] = 1."""

    __slots__ = ("matrix", "axis")

    def forward(self, x: Tensor, index: Any, matrix: Any, axis: int):
        self.matrix, self.axis = matrix, axis
        return x.xp.take(x.data, index, axis=axis)

    def backward(self, grad: Tensor):
        return AxisLinear.apply(grad, matrix=self.matrix.T, axis=self.axis)


# ------------------------------------------------------------------ the index rules
def _nearest_source(n_in: int, n_out: int, scale: float | None, exact: bool, copy_same_size: bool) -> np.ndarray:
    """Source index per output index, following PyTorch's float32 arithmetic.

    ``copy_same_size``: PyTorch's 2-D nearest kernel copies an axis whose size does not
    change, even when a scale_factor such as 1.2 would pick other pixels; its 1-D and 3-D
    kernels do not. We follow it, so results match PyTorch exactly.
    """
    if n_out == n_in and copy_same_size:
        return np.arange(n_out)
    ratio = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(n_in) / np.float32(n_out)
    if not exact and n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    if exact:  # PyTorch computes (o + 0.5) · r in double, o · r in float
        position = (np.arange(n_out, dtype=np.float64) + 0.5) * np.float64(ratio)
    else:
        position = np.arange(n_out, dtype=np.float32) * ratio
    return np.minimum(np.floor(position).astype(np.int64), n_in - 1)


def _linear_matrix(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D linear interpolation weights (float64, on the host)."""
    if n_out == n_in:  # PyTorch copies an axis whose size does not change, whatever the scale
        return np.eye(n_in)
    o = np.arange(n_out, dtype=np.float64)
    if align_corners:
        ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        source = o * ratio
    else:
        ratio = 1.0 / scale if scale is not None and scale > 0 else n_in / n_out
        source = np.maximum((o + 0.5) * ratio - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    weight_high = source - low
    rows = np.arange(n_out)
    matrix = np.zeros((n_out, n_in))  # a small host array, moved to the device by the caller
    matrix[rows, low] += 1.0 - weight_high  # each row once per statement: no repeats
    matrix[rows, high] += weight_high  # (low == high at the last pixel: the weights add up to 1)
    return matrix


# ------------------------------------------------------------------------ public API
def _spatial_tuple(value: Any, n: int, name: str, kind: type) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"interpolate: {name} needs {n} values for {n} spatial dimensions, got {tuple(value)}")
        return tuple(kind(v) for v in value)
    return (kind(value),) * n


def interpolate(
    input: Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> Tensor:
    """Resize the spatial dimensions of ``input`` (N, C, *spatial), PyTorch's ``F.interpolate``.

    Give either ``size`` (the output's spatial size) or ``scale_factor`` (output size =
    ⌊input size × scale_factor⌋). Modes: ``"nearest"`` (PyTorch's source index
    ⌊o · in/out⌋), ``"nearest-exact"``, ``"linear"`` (3-D input), ``"bilinear"`` (4-D),
    ``"trilinear"`` (5-D), the last three with ``align_corners`` (default False).
    Differentiable, to any order (each axis is a linear map; see the module docstring).
    """
    op = "interpolate"
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4, 5):
        raise ValueError(f"{op}: expected a 3-D, 4-D or 5-D input (N, C, *spatial), got shape {tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {input.dtype}")
    n_spatial = input.ndim - 2
    if mode in _LINEAR_MODES:
        if _LINEAR_MODES[mode] != n_spatial:
            raise ValueError(
                f"{op}: mode {mode!r} needs a {_LINEAR_MODES[mode] + 2}-D input, got shape {tuple(input.shape)}"
            )
        align_corners = bool(align_corners)
    elif mode in _NEAREST_MODES:
        if align_corners is not None:
            raise ValueError(f"{op}: align_corners can only be set with the linear modes, not mode={mode!r}")
    else:
        raise ValueError(
            f"{op}: unsupported mode {mode!r}; choose one of nearest, nearest-exact, linear, bilinear, trilinear"
        )
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor")

    in_sizes = input.shape[2:]
    if size is not None:
        out_sizes = _spatial_tuple(size, n_spatial, "size", int)
        scales: tuple = (None,) * n_spatial
    else:
        factors = _spatial_tuple(scale_factor, n_spatial, "scale_factor", float)
        if any(not math.isfinite(f) or f <= 0 for f in factors):
            raise ValueError(f"{op}: scale_factor must be positive and finite, got {scale_factor}")
        out_sizes = tuple(int(math.floor(s * f)) for s, f in zip(in_sizes, factors))
        scales = (None,) * n_spatial if recompute_scale_factor else factors
    if any(s < 1 for s in out_sizes):
        raise ValueError(f"{op}: the output size {out_sizes} must be positive (input shape {tuple(input.shape)})")

    if mode == "nearest":
        repeats = [_integer_repeat(i, o, s, n_spatial == 2) for i, o, s in zip(in_sizes, out_sizes, scales)]
        if all(r is not None for r in repeats):
            return _repeat(input, repeats)

    out = input
    for a, (n_in, n_out, scale) in enumerate(zip(in_sizes, out_sizes, scales)):
        key = (mode, n_in, n_out, scale, align_corners, n_spatial == 2, input.dtype, input.device)
        plan = _axis_plans.get(key)
        if plan is None:
            plan = _axis_plan(input, mode, n_in, n_out, scale, align_corners, n_spatial == 2)
            if len(_axis_plans) >= 256:  # a small cache: forget everything rather than grow
                _axis_plans.clear()
            _axis_plans[key] = plan
        kind, index, matrix = plan
        if kind == "gather":
            out = AxisGather.apply(out, index=index, matrix=matrix, axis=2 + a)
        elif kind == "linear":
            out = AxisLinear.apply(out, matrix=matrix, axis=2 + a)
    return out


# Device copies of the index arrays and matrices, per (mode, sizes, scale, dtype, device):
# a training step that resizes calls interpolate with the same sizes every time, and
# on a GPU each fresh host-to-device copy would be a synchronisation.
_axis_plans: dict[tuple, tuple] = {}


def _axis_plan(
    input: Tensor, mode: str, n_in: int, n_out: int, scale: float | None, align_corners: bool, two_d: bool
) -> tuple[str, Any, Any]:
    """("copy" | "gather" | "linear", index on the device, matrix on the device) for one axis."""
    xp = input.xp
    if mode in _NEAREST_MODES:
        exact = mode == "nearest-exact"
        source = _nearest_source(n_in, n_out, scale, exact, copy_same_size=not exact and two_d)
        if n_in == n_out and np.array_equal(source, np.arange(n_in)):
            return "copy", None, None
        matrix = np.zeros((n_out, n_in))
        matrix[np.arange(n_out), source] = 1.0
        return "gather", xp.asarray(source), xp.asarray(matrix.astype(input.dtype))
    if n_in == n_out:
        return "copy", None, None
    matrix = _linear_matrix(n_in, n_out, scale, align_corners)
    return "linear", None, xp.asarray(matrix.astype(input.dtype))


def _integer_repeat(n_in: int, n_out: int, scale: float | None, copy_same_size: bool) -> int | None:
    """m when nearest resizing ``n_in`` → ``n_out`` just repeats each pixel m times."""
    if n_out % n_in:
        return None
    m = n_out // n_in
    source = _nearest_source(n_in, n_out, scale, exact=False, copy_same_size=copy_same_size)
    return m if np.array_equal(source, np.arange(n_out) // m) else None


def _repeat(x: Tensor, repeats: list[int]) -> Tensor:
    """Repeat each pixel m_a times along spatial axis a: a reshape, a broadcast, a reshape.

    Built from differentiable Tensor ops, so the gradient (sum over each m_H × m_W block,
    via ``expand``'s backward) needs no code of its own.
    """
    if all(m == 1 for m in repeats):
        return x
    lead = x.shape[:2]
    spatial = x.shape[2:]
    with_unit_axes = lead + tuple(d for s in spatial for d in (s, 1))
    expanded = lead + tuple(d for s, m in zip(spatial, repeats) for d in (s, m))
    return x.reshape(with_unit_axes).expand(expanded).reshape(lead + tuple(s * m for s, m in zip(spatial, repeats)))
