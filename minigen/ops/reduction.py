"""Reductions over ``dim`` (an int, a tuple of ints, or None for all), with ``keepdim``.

The backward of a reduction broadcasts the gradient back over the reduced axes:
``expand_reduced`` first puts back the reduced axes as size 1 (when ``keepdim`` was
False) and then expands to the input's shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigen.arguments import normalize_dims
from minigen.autograd import Function
from minigen.tensor import Tensor


def reduced_count(shape: tuple[int, ...], dim: int | Sequence[int] | None, op: str = "reduction") -> int:
    """How many elements each output of a reduction over ``dim`` combines."""
    count = 1
    for d in normalize_dims(dim, len(shape), op):
        count *= shape[d]
    return count


def expand_reduced(grad: Tensor, in_shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> Tensor:
    """Broadcast a reduction's output gradient back to the input's shape."""
    if not keepdim:
        kept = tuple(1 if i in dims else s for i, s in enumerate(in_shape))
        grad = grad.reshape(kept)
    return grad.expand(in_shape)


class Sum(Function):
    """y = Σ_dim x;  ∂L/∂x = g broadcast over the summed axes."""

    __slots__ = ("dims", "keepdim")

    def forward(self, x: Tensor, dim: Any, keepdim: bool):
        self.dims = normalize_dims(dim, x.ndim, "sum")
        self.keepdim = keepdim
        self.saved = x.shape
        return x.data.sum(axis=self.dims, keepdims=keepdim)

    def backward(self, grad: Tensor):
        return expand_reduced(grad, self.saved, self.dims, self.keepdim)


class Mean(Function):
    """y = (1/N) Σ_dim x;  ∂L/∂x = g / N broadcast over the averaged axes."""

    __slots__ = ("dims", "keepdim")

    def forward(self, x: Tensor, dim: Any, keepdim: bool):
        self.dims = normalize_dims(dim, x.ndim, "mean")
        self.keepdim = keepdim
        self.saved = x.shape
        if x.dtype.kind not in "fc":
            raise TypeError(f"mean: needs a floating-point tensor, got dtype {x.dtype}; call .float() first")
        return x.data.mean(axis=self.dims, keepdims=keepdim)

    def backward(self, grad: Tensor):
        in_shape = self.saved
        return expand_reduced(grad, in_shape, self.dims, self.keepdim) / reduced_count(in_shape, self.dims)


class Max(Function):
    """y = max_dim x;  ∂L/∂x = g at the maximum, 0 elsewhere.

    Tie rule: if k elements share the maximum, each gets g / k (PyTorch's ``amax`` rule).
    """

    __slots__ = ("dims", "keepdim")

    def forward(self, x: Tensor, dim: Any, keepdim: bool):
        self.dims = normalize_dims(dim, x.ndim, "max")
        self.keepdim = keepdim
        if x.data.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {tuple(x.shape)}")
        top = x.data.max(axis=self.dims, keepdims=True)
        if self.needs_grad is not None:
            is_top = x.data == top
            self.saved = is_top / is_top.sum(axis=self.dims, keepdims=True)
        return top if keepdim else top.reshape(tuple(s for i, s in enumerate(top.shape) if i not in self.dims))

    def backward(self, grad: Tensor):
        share = Tensor(self.saved.astype(grad.dtype, copy=False))
        return expand_reduced(grad, share.shape, self.dims, self.keepdim) * share


class LogSumExp(Function):
    """y = log Σ_dim eˣ, computed as m + log Σ e^(x − m) with m = max x, so it never overflows.

    ∂L/∂x = g ⊙ e^(x − y) = g ⊙ softmax(x).
    """

    __slots__ = ("dims", "keepdim")

    def forward(self, x: Tensor, dim: Any, keepdim: bool):
        xp = x.xp
        self.dims = normalize_dims(dim, x.ndim, "logsumexp")
        self.keepdim = keepdim
        m = x.data.max(axis=self.dims, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # an all −inf row stays −inf instead of NaN
        y = xp.log(xp.exp(x.data - m).sum(axis=self.dims, keepdims=True)) + m
        if not keepdim:
            y = y.reshape(tuple(s for i, s in enumerate(y.shape) if i not in self.dims))
        self.saved = (x, y)
        return y

    def backward(self, grad: Tensor):
        x, y = self.saved
        kept_shape = tuple(1 if i in self.dims else s for i, s in enumerate(x.shape))
        softmax = (x - self.output_tensor(y).reshape(kept_shape)).exp()
        return expand_reduced(grad, x.shape, self.dims, self.keepdim) * softmax
