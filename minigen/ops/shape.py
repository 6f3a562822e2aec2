"""Shape ops: they move or repeat elements without changing values.

Each backward undoes the forward's rearrangement on the gradient:
reshape <-> reshape back, permute <-> inverse permute, expand <-> sum_to.
"""

from __future__ import annotations

from minigen.autograd import Function
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
                raise ValueError(f"sum_to: shape {tuple(x.shape)} does not broadcast from {tuple(shape)}")
        self.saved = x.shape
        out = x.data.sum(axis=tuple(range(lead)) + stretched, keepdims=True)
        return out.reshape(shape)

    def backward(self, grad: Tensor):
        return grad.expand(self.saved)
