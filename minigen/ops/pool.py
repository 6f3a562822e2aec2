"""2-D max and average pooling over strided windows.

A pooling window of size k_H × k_W moves over each channel with stride s (by default
s = k, non-overlapping windows) over the input padded by p:

    max pool:  y[n, c, h, w] = max_{i,j} x_pad[n, c, h·s + i·d, w·s + j·d]      (padding = −∞)
    avg pool:  y[n, c, h, w] = (1/|window|) Σ_{i,j} x_pad[n, c, h·s + i, w·s + j]  (padding = 0)

with H_out = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1 (⌈·⌉ with ``ceil_mode``).

Both are computed with one strided slice per kernel offset (i, j): the slice
``x[:, :, i·d :: s, j·d :: s]`` holds, for every output pixel at once, the element at
offset (i, j) of its window. So the Python loops run over the k_H·k_W offsets only,
never over output pixels. Padding is never materialised: an offset's slice simply skips
the output positions whose element would lie in the padding.

**Gradients.**

* Max pool routes each output gradient one-hot to the element that won its window:
  ∂L/∂x[p] = Σ_{windows whose max is at p} g. Tie rule: when several elements share the
  maximum, the *first* in row-major window order (smallest i, then smallest j) takes all
  of the gradient, as PyTorch's CPU kernel does. A NaN counts as the maximum (NaN
  propagates). The backward is a scatter (``MaxPool2dScatter``) whose own backward is the
  matching gather (``MaxPool2dGather``), so second derivatives work.
* Avg pool is linear: ∂L/∂x[p] = Σ_{windows containing p} g / |window|. Its backward
  (``AvgPool2dScatter``) and the pooling itself are each other's adjoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigen.autograd import Function
from minigen.backend import xp_of
from minigen.ops.geometry import IntPair, add_batch_axis, int_pair, outputs_inside_input, strided_slice
from minigen.tensor import Tensor


class _Geometry:
    """Kernel, stride, padding, dilation and the input/output sizes of one pooling."""

    __slots__ = ("kernel", "stride", "pad", "dilation", "in_hw", "out_hw")

    def __init__(self, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple, in_hw: tuple, out_hw: tuple):
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)

    def offsets(self):
        """For each kernel offset t = i·k_W + j: (t, output slice, input slice), skipping
        offsets that only ever read padding. The output slice selects the output pixels
        whose window element at (i, j) is a real input element; the input slice (a
        strided window) selects those elements, in the same order."""
        (s_h, s_w), (p_h, p_w), (d_h, d_w) = self.stride, self.pad, self.dilation
        for i in range(self.kernel[0]):
            first_h, stop_h, start_h = outputs_inside_input(i, s_h, p_h, d_h, self.in_hw[0], self.out_hw[0])
            for j in range(self.kernel[1]):
                first_w, stop_w, start_w = outputs_inside_input(j, s_w, p_w, d_w, self.in_hw[1], self.out_hw[1])
                if stop_h > first_h and stop_w > first_w:
                    out_slice = (slice(None), slice(None), slice(first_h, stop_h), slice(first_w, stop_w))
                    in_slice = (
                        slice(None),
                        slice(None),
                        strided_slice(start_h, s_h, stop_h - first_h),
                        strided_slice(start_w, s_w, stop_w - first_w),
                    )
                    yield i * self.kernel[1] + j, out_slice, in_slice


# --------------------------------------------------------------------------- max pool
class MaxPool2d(Function):
    """y = max over each window;  ∂L/∂x = g routed one-hot to each window's argmax."""

    __slots__ = ("geometry",)

    def forward(self, x: Tensor, geometry: _Geometry, argmax_out: list | None = None):
        xp = x.xp
        self.geometry = geometry
        n, c = x.shape[:2]
        best = xp.full((n, c, *geometry.out_hw), -xp.inf, dtype=x.dtype)
        offsets = list(geometry.offsets())
        # The maximum first: one pass per offset (maximum propagates NaN, like PyTorch).
        for _, out_slice, in_slice in offsets:
            current = best[out_slice]
            xp.maximum(current, x.data[in_slice], out=current)
        # Then which offset t won each window (int16 holds any sensible kernel size). Going
        # through the offsets backwards, each match overwrites: on ties the first one wins.
        # The select is arithmetic, argmax += (t − argmax)·hit, because xp.where and
        # copyto(where=) with a random mask are ~15× slower than a multiply on a CPU.
        last = offsets[-1][0] if offsets else 0  # no offset at all: every window lies in the padding
        argmax = xp.full((n, c, *geometry.out_hw), last, dtype=xp.int16)
        for t, out_slice, in_slice in reversed(offsets[:-1]):
            candidate = x.data[in_slice]
            hit = (candidate == best[out_slice]) | (candidate != candidate)  # a NaN is the maximum
            chosen = argmax[out_slice]
            chosen -= (chosen - t) * hit
        self.saved = argmax
        if argmax_out is not None:  # max_pool2d(..., return_indices=True) wants it too
            argmax_out.append(argmax)
        return best

    def backward(self, grad: Tensor):
        return MaxPool2dScatter.apply(grad, argmax=self.saved, geometry=self.geometry)


class MaxPool2dScatter(Function):
    """dx = zeros like x, with g[n, c, h, w] added at the argmax of window (h, w).

    Linear in g; its adjoint (the backward) gathers: ∂L/∂g[h, w] = U[argmax of (h, w)].
    Overlapping windows can share an argmax, hence one ``+=`` per offset, not ``=``.
    """

    __slots__ = ("argmax", "geometry")

    def forward(self, g: Tensor, argmax: Any, geometry: _Geometry):
        xp = g.xp
        self.argmax, self.geometry = argmax, geometry
        dx = xp.zeros((*g.shape[:2], *geometry.in_hw), dtype=g.dtype)
        # Windows that do not overlap (stride ≥ window) share no input element: assign, not add.
        disjoint = all(s >= d * (k - 1) + 1 for s, d, k in zip(geometry.stride, geometry.dilation, geometry.kernel))
        for t, out_slice, in_slice in geometry.offsets():
            routed = g.data[out_slice] * (argmax[out_slice] == t)  # a multiply: much faster than xp.where
            if disjoint:
                dx[in_slice] = routed
            else:
                dx[in_slice] += routed
        return dx

    def backward(self, grad: Tensor):
        return MaxPool2dGather.apply(grad, argmax=self.argmax, geometry=self.geometry)


class MaxPool2dGather(Function):
    """y[n, c, h, w] = u[n, c, argmax of window (h, w)]: max pooling with the winners fixed.

    The adjoint of ``MaxPool2dScatter``; its backward is that scatter again.
    """

    __slots__ = ("argmax", "geometry")

    def forward(self, u: Tensor, argmax: Any, geometry: _Geometry):
        xp = u.xp
        self.argmax, self.geometry = argmax, geometry
        y = xp.zeros((*u.shape[:2], *geometry.out_hw), dtype=u.dtype)
        for t, out_slice, in_slice in geometry.offsets():
            xp.copyto(y[out_slice], u.data[in_slice], where=argmax[out_slice] == t)
        return y

    def backward(self, grad: Tensor):
        return MaxPool2dScatter.apply(grad, argmax=self.argmax, geometry=self.geometry)


# --------------------------------------------------------------------------- avg pool
class AvgPool2d(Function):
    """y = (Σ over each window) / divisor;  ∂L/∂x = ``AvgPool2dScatter``(g)."""

    __slots__ = ("geometry", "inverse_divisor")

    def forward(self, x: Tensor, geometry: _Geometry, inverse_divisor: Any):
        self.geometry, self.inverse_divisor = geometry, inverse_divisor
        y = x.xp.zeros((*x.shape[:2], *geometry.out_hw), dtype=x.dtype)
        for _, out_slice, in_slice in geometry.offsets():
            y[out_slice] += x.data[in_slice]
        y *= inverse_divisor
        return y

    def backward(self, grad: Tensor):
        return AvgPool2dScatter.apply(grad, geometry=self.geometry, inverse_divisor=self.inverse_divisor)


class AvgPool2dScatter(Function):
    """dx[p] = Σ_{windows containing p} g / divisor: the adjoint of average pooling.

    Its backward is average pooling again.
    """

    __slots__ = ("geometry", "inverse_divisor")

    def forward(self, g: Tensor, geometry: _Geometry, inverse_divisor: Any):
        self.geometry, self.inverse_divisor = geometry, inverse_divisor
        share = g.data * inverse_divisor
        dx = g.xp.zeros((*g.shape[:2], *geometry.in_hw), dtype=g.dtype)
        for _, out_slice, in_slice in geometry.offsets():
            dx[in_slice] += share[out_slice]
        return dx

    def backward(self, grad: Tensor):
        return AvgPool2d.apply(grad, geometry=self.geometry, inverse_divisor=self.inverse_divisor)


# --------------------------------------------------------------------------- public
def _pool_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1, or with ⌈·⌉ (PyTorch's rule, rounding towards
    −∞, so ceil mode gives one window even when the dilated window is wider than the
    padded input); in ceil mode the last window must still start inside the input or its
    left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _geometry(
    op: str,
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
) -> _Geometry:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W) (or 3-D (C, H, W)), got shape {tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {input.dtype}")
    kernel = int_pair(kernel_size, "kernel_size", op)
    stride_ = (
        kernel
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        else int_pair(stride, "stride", op)
    )
    pad = int_pair(padding, "padding", op)
    dil = int_pair(dilation, "dilation", op)
    if min(kernel) < 1 or min(stride_) < 1 or min(dil) < 1 or min(pad) < 0:
        raise ValueError(
            f"{op}: kernel_size, stride and dilation must be positive and padding non-negative, got kernel_size "
            f"{kernel}, stride {stride_}, padding {pad}, dilation {dil}"
        )
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {pad} should be at most half of kernel_size {kernel}")
    in_hw = input.shape[2:]
    out_hw = tuple(_pool_size(in_hw[a], kernel[a], stride_[a], pad[a], dil[a], ceil_mode) for a in range(2))
    if min(out_hw) < 1:
        raise ValueError(
            f"{op}: the output would be empty ({out_hw[0]}×{out_hw[1]}): the window (kernel_size {kernel}, dilation "
            f"{dil}) is larger than the padded input of shape {tuple(input.shape)} with padding {pad}"
        )
    return _Geometry(kernel, stride_, pad, dil, in_hw, out_hw)


def max_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling, PyTorch's ``F.max_pool2d``: y[n, c, h, w] = max of the window at (h·s, w·s).

    ``stride`` defaults to ``kernel_size``. Padding counts as −∞ and must be at most half
    the kernel (with dilation, a window that lies wholly in the padding gives −∞). The
    gradient goes one-hot to each window's maximum; on ties, to the first in row-major
    window order. With ``return_indices`` also returns, per output, the flat index
    h·W + w of the maximum within its (unpadded) channel, as an int64 tensor.
    """
    op = "max_pool2d"
    x, unbatched = add_batch_axis(input)
    geometry = _geometry(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    argmax: list = []
    out = MaxPool2d.apply(x, geometry=geometry, argmax_out=argmax if return_indices else None)
    if not return_indices:
        return out.squeeze(0) if unbatched else out
    indices = _flat_indices(argmax[0], geometry)
    if unbatched:
        return out.squeeze(0), indices.squeeze(0)
    return out, indices


def _flat_indices(argmax: Any, geometry: _Geometry) -> Tensor:
    """Offset t = i·k_W + j of window (h, w) -> flat input index row·W + col."""
    xp = xp_of(argmax)
    k_w = geometry.kernel[1]
    i = argmax.astype(xp.int64) // k_w
    j = argmax.astype(xp.int64) % k_w
    rows = xp.arange(geometry.out_hw[0]).reshape(-1, 1) * geometry.stride[0] - geometry.pad[0]
    cols = xp.arange(geometry.out_hw[1]).reshape(1, -1) * geometry.stride[1] - geometry.pad[1]
    row = rows + i * geometry.dilation[0]
    col = cols + j * geometry.dilation[1]
    return Tensor(row * geometry.in_hw[1] + col)


def avg_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Average pooling, PyTorch's ``F.avg_pool2d``: y = (Σ over the window) / divisor.

    ``stride`` defaults to ``kernel_size``; padding counts as zeros. The divisor is
    k_H·k_W (``count_include_pad=True``, the default), or the number of real input
    elements in the window (``count_include_pad=False``), or ``divisor_override``.
    """
    op = "avg_pool2d"
    x, unbatched = add_batch_axis(input)
    geometry = _geometry(op, x, kernel_size, stride, padding, 1, ceil_mode)
    inverse_divisor = _inverse_divisor(x, geometry, ceil_mode, count_include_pad, divisor_override)
    out = AvgPool2d.apply(x, geometry=geometry, inverse_divisor=inverse_divisor)
    return out.squeeze(0) if unbatched else out


def _inverse_divisor(
    input: Tensor, geometry: _Geometry, ceil_mode: bool, count_include_pad: bool, divisor_override: int | None
) -> Any:
    """1/divisor: a Python float when it is the same for every window, else an (H_out, W_out)
    array on the input's device, built on the host from the window extents."""
    k_h, k_w = geometry.kernel
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or divisor_override <= 0:
            raise ValueError(f"avg_pool2d: divisor_override must be a positive int, got {divisor_override!r}")
        return 1.0 / divisor_override
    if count_include_pad and not ceil_mode:
        return 1.0 / (k_h * k_w)
    key = (geometry.kernel, geometry.stride, geometry.pad, geometry.in_hw, geometry.out_hw, count_include_pad)
    key += (input.dtype, input.device)
    divisor = _divisors.get(key)
    if divisor is None:
        counts = []
        for a in range(2):  # per axis, how many window rows (columns) count; the divisor is their product
            start = np.arange(geometry.out_hw[a]) * geometry.stride[a] - geometry.pad[a]
            end = np.minimum(start + geometry.kernel[a], geometry.in_hw[a] + geometry.pad[a])
            if not count_include_pad:
                start = np.maximum(start, 0)
                end = np.minimum(end, geometry.in_hw[a])
            counts.append(end - start)
        host = 1.0 / np.outer(counts[0], counts[1]).astype(np.float64)
        divisor = input.xp.asarray(host.astype(input.dtype))
        if len(_divisors) >= 256:  # a small cache: forget everything rather than grow
            _divisors.clear()
        _divisors[key] = divisor
    return divisor


# Device copies of the 1/divisor arrays: the same pooling runs every training step, and
# on a GPU each fresh host-to-device copy would be a synchronisation.
_divisors: dict[tuple, Any] = {}
