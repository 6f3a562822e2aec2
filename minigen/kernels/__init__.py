"""Fast paths: the same formulas as the ops' backwards, written on raw arrays for speed.

Every backward in ``minigen/ops`` is written as the lecture's formula in minigen ops,
so that ``create_graph=True`` works and a student stepping into it reads the maths.
A few ops (softmax, layer/group/batch norm, GELU, conv_transpose2d) spend enough time
in backward that they also have a raw-array version of the same formula: in place,
fewer passes over memory, or one shared pass over an im2col matrix. Those live here,
one file per op family, and an op reaches its fast path through one line::

    def backward(self, grad):
        if kernels.fast_path():  # the same formula on raw arrays (minigen/kernels/...)
            return Tensor(kernels.softmax_backward(...))
        ...                       # the formula in minigen ops

A fast path may run only when no graph is being recorded (``create_graph=False``): a
raw array is a constant to autograd, so a second derivative through it would be wrong.
It can also be switched off, which makes every backward run its readable formula, for
stepping through in a debugger or for checking the two against each other::

    with minigen.kernels.fast_paths(False):
        loss.backward()

On CUDA, with ``minigen.fused`` switched on, some fast paths hand over to a fused GPU
kernel (``minigen/fused.py``); the array code here is that kernel's reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from minigen.autograd import is_grad_enabled

_enabled = True


def fast_path() -> bool:
    """True when a backward should take its raw-array fast path: fast paths are on (the
    default) and no graph is being recorded (``create_graph=False``)."""
    return _enabled and not is_grad_enabled()


def set_fast_paths(on: bool) -> bool:
    """Switch the fast paths on or off for every op; returns the previous setting."""
    global _enabled
    previous = _enabled
    _enabled = bool(on)
    return previous


@contextlib.contextmanager
def fast_paths(on: bool = True) -> Iterator[None]:
    """``with kernels.fast_paths(False): ...`` runs the block on the readable formulas only."""
    previous = set_fast_paths(on)
    try:
        yield
    finally:
        set_fast_paths(previous)


from minigen.kernels.activation import (  # noqa: E402
    elementwise_in_blocks,
    gelu_backward,
    gelu_tanh_backward,
    softmax_backward,
)
from minigen.kernels.conv import conv2d_and_weight_grad  # noqa: E402
from minigen.kernels.normalization import normalize_backward, normalize_forward, sum_of_products  # noqa: E402

__all__ = [
    "conv2d_and_weight_grad",
    "elementwise_in_blocks",
    "fast_path",
    "fast_paths",
    "gelu_backward",
    "gelu_tanh_backward",
    "normalize_backward",
    "normalize_forward",
    "set_fast_paths",
    "softmax_backward",
    "sum_of_products",
]
