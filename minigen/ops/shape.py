"""Shape ops: they move or repeat elements without changing values.

Each backward undoes the forward's rearrangement on the gradient:
reshape <-> reshape back, permute <-> inverse permute, expand <-> sum_to.
"""

from __future__ import annotations

from typing import Any

from minigen.autograd import Function
from minigen.errors import SumToShapeError
from minigen.tensor import Tensor


class Reshape(Function):
    """y = x viewed with a new shape;  ∂L/∂x = g reshaped to x's shape."""

    def forward(self, x: Tensor, shape: tuple[int, ...], copy: bool = False):
        self.saved = x.shape
        out = x.data.reshape(shape)
        return out.copy() if copy else out

    def backward(self, grad: Tensor):
        return grad.reshape(self.saved)


class Permute(Function):
    """y = x with axes reordered by ``dims``;  ∂L/∂x = g with the inverse order."""

    def forward(self, x: Tensor, dims: tuple[int, ...]):
        if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise ValueError(
                f"permute: {tuple(dims)} is not a permutation of the {x.ndim} axes of shape {tuple(x.shape)}"
            )
        dims = tuple(d % x.ndim for d in dims)
        self.saved = dims
        return x.data.transpose(dims)

    def backward(self, grad: Tensor):
        inverse = [0] * len(self.saved)
        for position, axis in enumerate(self.saved):
            inverse[axis] = position
        return grad.permute(tuple(inverse))


class Expand(Function):
    """y = x broadcast to ``shape`` (a view, no copy);  ∂L/∂x = sum_to(g, x.shape)."""

    def forward(self, x: Tensor, shape: tuple[int, ...]):
        self.saved = x.shape
        return x.xp.broadcast_to(x.data, shape)

    def backward(self, grad: Tensor):
        return grad.sum_to(self.saved)


def _sum_keepdims(data: Any, axes: tuple[int, ...]) -> Any:
    """Σ over ``axes``, kept as size-1 axes. NumPy reduces a short axis (a 2×2 upsampling
    block, say) in one tiny inner loop per element, about 15× slower than adding its
    few slices, so the axes of length ≤ 4 are summed slice by slice."""
    short = [a for a in axes if 1 < data.shape[a] <= 4]
    if not short:
        return data.sum(axis=axes, keepdims=True)
    long = tuple(a for a in axes if a not in short)
    if long:
        data = data.sum(axis=long, keepdims=True)
    for axis in short:
        parts = [data[(slice(None),) * axis + (slice(k, k + 1),)] for k in range(data.shape[axis])]
        total = parts[0] + parts[1]  # a new array: the gradient that came in is never written to
        for part in parts[2:]:
            total += part
        data = total
    return data


class SumTo(Function):
    """y = x summed over the axes that broadcasting added or stretched, down to ``shape``.

    This is the 'unbroadcast' step of every binary op's backward;  ∂L/∂x = g expanded back.
    """

    def forward(self, x: Tensor, shape: tuple[int, ...]):
        lead = x.ndim - len(shape)
        if lead < 0:
            raise ValueError(f"sum_to: cannot sum shape {tuple(x.shape)} to the larger shape {tuple(shape)}")
        stretched = tuple(lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
        for i, s in enumerate(shape):
            if s != 1 and x.shape[lead + i] != s:
                raise SumToShapeError(
                    f"sum_to: shape {tuple(x.shape)} does not broadcast from {tuple(shape)}",
                    shape=tuple(x.shape),
                    target=tuple(shape),
                )
        self.saved = x.shape
        return _sum_keepdims(x.data, tuple(range(lead)) + stretched).reshape(shape)

    def backward(self, grad: Tensor):
        return grad.expand(self.saved)
