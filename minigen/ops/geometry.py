"""Sliding-window geometry that convolution and pooling share.

A window of k taps with dilation d moves with stride s over an axis padded by p. Output
position o's tap t reads input position

    o·s + t·d − p,

which lies in the padding when it is < 0 or ≥ the input's length. These helpers turn
that index relation into slices, so that both ops loop over the k_H·k_W taps only and
take every output pixel of a tap in one strided slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigen.tensor import Tensor

IntPair = int | Sequence[int]


def int_pair(value: Any, name: str, op: str) -> tuple[int, int]:
    """An int or a pair of ints, as PyTorch accepts for stride, padding, kernel size..."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def outputs_inside_input(tap: int, stride: int, pad: int, dilation: int, n_in: int, n_out: int) -> tuple[int, int, int]:
    """For one tap along one axis: the output positions [first, stop) whose read
    o·s + tap·d − p falls inside the input [0, n_in) (the others read padding), and the
    input position that output ``first`` reads. A negative ``pad`` crops instead."""
    offset = tap * dilation - pad
    first = -(offset // stride) if offset < 0 else 0  # ⌈−offset / s⌉
    stop = min(n_out, (n_in - 1 - offset) // stride + 1)
    stop = max(stop, first)
    return first, stop, first * stride + offset


def strided_slice(start: int, stride: int, count: int) -> slice:
    """The slice start, start + s, ..., covering ``count`` positions."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def add_batch_axis(input: Any) -> tuple[Any, bool]:
    """PyTorch accepts an unbatched (C, H, W) image: add the batch axis, and say so, so
    that the caller removes it from the result."""
    if isinstance(input, Tensor) and input.ndim == 3:
        return input.unsqueeze(0), True
    return input, False
