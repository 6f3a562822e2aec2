"""Argument checks shared by every op: dims, devices and dtypes, validated in one place.

A bad argument must never be silently reinterpreted: a dim out of range is an error
(never wrapped around), a device string is never read as a dtype, and a dtype is given
as a dtype object (``mg.float32``, ``np.float64``, ``np.dtype("int64")``) or by its full
name (``"float32"``), never by a one-letter NumPy code such as ``"f"`` or ``"b"``.
Each check raises an error that names the op, the value it got and what is valid.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from minigen.backend import Device

# The dtypes minigen tensors may have, by their full names.
DTYPE_NAMES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
VALID_DEVICES = "'cpu', 'cuda', 'cuda:N' (or the test-only 'standin')"


# ---------------------------------------------------------------------------- dims
def normalize_dim(dim: Any, ndim: int, op: str, new_axis: bool = False) -> int:
    """``dim`` as an axis in 0 … ndim − 1 (negative dims count from the end).

    ``new_axis=True`` is for ops that insert a dim (``unsqueeze``, ``stack``): the
    result may then also be ``ndim``, one past the last. A 0-d tensor accepts dim 0 and
    −1, as in PyTorch. Out of range is an ``IndexError``, e.g.
    ``cat: dim 2 is out of range for a tensor with 2 dimensions (expected -2 … 1)``.
    """
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int, got {dim!r} ({type(dim).__name__})")
    size = ndim + 1 if new_axis else max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(
            f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions (expected {-size} … {size - 1})"
        )
    return int(dim) % size


def normalize_dims(dim: int | Sequence[int] | None, ndim: int, op: str) -> tuple[int, ...]:
    """A reduction's ``dim`` (an int, a sequence of ints, or None for all) as sorted axes.

    Each dim is checked by ``normalize_dim``; naming one axis twice is an error, as in PyTorch.
    """
    if dim is None:
        return tuple(range(ndim))
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    axes = [normalize_dim(d, ndim, op) for d in dims]
    if len(set(axes)) != len(axes):
        raise IndexError(f"{op}: dims {tuple(dims)} name the same axis twice (tensor with {ndim} dimensions)")
    return tuple(sorted(axes)) if ndim else ()


# ------------------------------------------------------------------------- devices
def parse_device(spec: Any, op: str = "device") -> Device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or the test device ``"standin"``) -> ``Device``."""
    if not isinstance(spec, str):
        raise ValueError(f"{op}: expected a device {VALID_DEVICES}, got {spec!r} ({type(spec).__name__})")
    try:
        return Device(spec)
    except ValueError as error:
        raise ValueError(f"{op}: {error}") from None


def parse_device_argument(text: str) -> str:
    """``parse_device`` for argparse (the demos' ``--device``): the text, once it is valid."""
    try:
        parse_device(text, "--device")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# -------------------------------------------------------------------------- dtypes
def parse_dtype(spec: Any, op: str = "dtype") -> np.dtype:
    """A dtype object (``mg.float32``, ``np.int64``, ``np.dtype("bool")``, ``float``) or a
    full dtype name (``"float32"``) -> ``np.dtype``. Anything else is a ``ValueError``."""
    if isinstance(spec, str):
        valid = spec in DTYPE_NAMES
    else:
        valid = isinstance(spec, np.dtype) or (
            isinstance(spec, type) and issubclass(spec, (np.generic, bool, int, float))
        )
    dtype = np.dtype(spec) if valid else None
    if dtype is None or dtype.name not in DTYPE_NAMES:
        raise ValueError(
            f"{op}: {spec!r} is not a dtype minigen supports; pass a dtype object such as mg.float32 "
            f"or one of the names {', '.join(DTYPE_NAMES)}"
        )
    return dtype
