"""Indexing ``x[key]``, with basic (ints, slices, None, ...) and advanced (integer or
boolean arrays) keys, as in NumPy.

The backward puts the gradient back where the elements came from. An element picked
several times by an advanced index receives the sum of its gradients, which is why the
backward uses ``backend.scatter_add`` rather than plain assignment.
"""

from __future__ import annotations

from typing import Any

from minigen import backend
from minigen.autograd import Function
from minigen.tensor import Tensor


def normalize_key(key: Any, x: Tensor) -> Any:
    """Turn tensors and lists inside ``key`` into index arrays on ``x``'s device."""
    if isinstance(key, tuple):
        return tuple(normalize_key(k, x) for k in key)
    if isinstance(key, Tensor):
        key = key.data
    elif isinstance(key, list):
        key = x.xp.asarray(key)
    elif not hasattr(key, "dtype"):
        return key  # int, slice, None, Ellipsis
    if backend.device_of(key) != x.device:  # index arrays follow the data
        key = backend.to_device(key, x.device)
    if key.dtype.kind not in "iub":
        raise IndexError(f"index arrays must be integer or bool, got dtype {key.dtype}")
    return key


def is_basic_key(key: Any) -> bool:
    """True when ``key`` only uses ints, slices, None and Ellipsis (no repeats possible)."""
    parts = key if isinstance(key, tuple) else (key,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    """y = x[key];  ∂L/∂x = zeros like x, with g added at the selected positions.

    A basic key gives a view of x's memory (so y shares x's version counter); an advanced
    key (index arrays) gives a copy with its own.
    """

    __slots__ = ("key", "output_is_view")

    def forward(self, x: Tensor, key: Any):
        self.key = normalize_key(key, x)
        self.output_is_view = is_basic_key(self.key)
        self.saved = x.shape
        return x.data[self.key]

    def backward(self, grad: Tensor):
        return IndexAdd.apply(grad, shape=self.saved, key=self.key)


class IndexAdd(Function):
    """y = zeros(shape) with y[key] += g (repeats accumulate);  ∂L/∂g = (∂L/∂y)[key].

    The backward of ``GetItem``, and itself differentiable for higher-order gradients.
    """

    __slots__ = ("key",)

    def forward(self, grad: Tensor, shape: tuple[int, ...], key: Any):
        self.key = key
        out = grad.xp.zeros(shape, dtype=grad.dtype)
        if is_basic_key(key):
            out[key] = grad.data
        else:
            backend.scatter_add(out, key, grad.data)
        return out

    def backward(self, grad: Tensor):
        return GetItem.apply(grad, key=self.key)
