"""Shape ops: they move or repeat elements without changing values.

Each backward undoes the forward's rearrangement on the gradient:
reshape <-> reshape back, permute <-> inverse permute, expand <-> sum_to.

Reshape, permute and expand return views of their input's memory, so their outputs
share the input's version counter (``output_is_view``): an in-place change through one
is seen by a Function that saved the other. The dims reaching these ops were checked by
the Tensor methods (``minigen.arguments``).
"""

from __future__ import annotations

from typing import Any

from minigen.autograd import Function
from minigen.errors import SumToShapeError
from minigen.tensor import Tensor


class Reshape(Function):
    """y = x viewed with a new shape;  ∂L/∂x = g reshaped to x's shape.

    When the memory layout does not allow a view (a transposed input, say), the array
    library copies; the output still shares x's version counter, which can only make the
    saved-tensor check stricter, never miss a change.
    """

    output_is_view = True

    def forward(self, x: Tensor, shape: tuple[int, ...]):
        self.saved = x.shape
        return x.data.reshape(shape)

    def backward(self, grad: Tensor):
        return grad.reshape(self.saved)


class Clone(Function):
    """y = a copy of x (its own memory and version);  ∂L/∂x = g."""

    def forward(self, x: Tensor):
        return x.data.copy()

    def backward(self, grad: Tensor):
        return grad


class Permute(Function):
    """y = x with axes reordered by ``dims`` (a permutation of 0 … ndim − 1, checked by
    ``Tensor.permute``);  ∂L/∂x = g with the inverse order."""

    output_is_view = True

    def forward(self, x: Tensor, dims: tuple[int, ...]):
        self.saved = dims
        return x.data.transpose(dims)

    def backward(self, grad: Tensor):
        inverse = [0] * len(self.saved)
        for position, axis in enumerate(self.saved):
            inverse[axis] = position
        return grad.permute(tuple(inverse))


class Expand(Function):
    """y = x broadcast to ``shape`` (a view, no copy);  ∂L/∂x = sum_to(g, x.shape)."""

    output_is_view = True

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
