"""Tensor factories: ``mg.tensor``, ``zeros``, ``randn``, ``arange`` ... (PyTorch names).

Random factories draw from the seeded generator of the target device
(``minigen.manual_seed``), so a seeded run repeats exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigen import backend
from minigen.arguments import parse_dtype
from minigen.backend import Device
from minigen.tensor import DTypeLike, Tensor, _shape_from_args


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    return np.dtype(backend.DEFAULT_DTYPE) if dtype is None else parse_dtype(dtype)


def _make(array: Any, requires_grad: bool) -> Tensor:
    return Tensor(array, requires_grad=requires_grad)


def tensor(data: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (Python floats become float32)."""
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "shape") and not backend.is_host_array(data):
        data = data.copy()
    elif isinstance(data, np.ndarray):
        data = data.copy()
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array."""
    return Tensor(array)


def zeros(*size: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    return _make(xp.zeros(_shape_from_args(size), dtype=_float_dtype(dtype)), requires_grad)


def ones(*size: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    return _make(xp.ones(_shape_from_args(size), dtype=_float_dtype(dtype)), requires_grad)


def empty(*size: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def full(
    size: Any, fill_value: float, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    if dtype is None and isinstance(fill_value, bool):
        dtype = np.bool_
    elif dtype is None and isinstance(fill_value, int):
        dtype = np.int64
    return _make(xp.full(_shape_from_args((size,)), fill_value, dtype=_float_dtype(dtype)), requires_grad)


def eye(
    n: int, m: int | None = None, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    return _make(xp.eye(n, m, dtype=_float_dtype(dtype)), requires_grad)


def zeros_like(t: Tensor, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: float, dtype: DTypeLike = None, device: Any = None) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device)


def randn(*size: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Samples of N(0, 1)."""
    dtype = _float_dtype(dtype)
    data = backend.random_normal(_shape_from_args(size), dtype, Device(device or "cpu"))
    return _make(data, requires_grad)


def rand(*size: Any, dtype: DTypeLike = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Samples of U[0, 1)."""
    dtype = _float_dtype(dtype)
    data = backend.random_uniform(_shape_from_args(size), dtype, Device(device or "cpu"))
    return _make(data, requires_grad)


def randn_like(t: Tensor, dtype: DTypeLike = None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device)


def rand_like(t: Tensor, dtype: DTypeLike = None) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, device=t.device)


def randint(low: int, high: int | None = None, size: Any = (), dtype: DTypeLike = None, device: Any = None) -> Tensor:
    """Integers uniform in [low, high) (``randint(high, size)`` also works, as in PyTorch)."""
    if high is None:
        low, high = 0, low
    data = backend.random_integers(low, high, _shape_from_args((size,)), Device(device or "cpu"))
    tensor_ = Tensor(data)
    return tensor_ if dtype is None else tensor_.to(dtype)


def randperm(n: int, device: Any = None) -> Tensor:
    return Tensor(backend.random_permutation(n, Device(device or "cpu")))


def arange(
    start: float, end: float | None = None, step: float = 1, dtype: DTypeLike = None, device: Any = None
) -> Tensor:
    """Values start, start + step, ... below end; integers give int64, floats float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if integral else backend.DEFAULT_DTYPE
    xp = backend.xp_for(device or "cpu")
    return Tensor(xp.arange(start, end, step, dtype=parse_dtype(dtype, "arange")))


def linspace(start: float, end: float, steps: int, dtype: DTypeLike = None, device: Any = None) -> Tensor:
    xp = backend.xp_for(device or "cpu")
    return Tensor(xp.linspace(start, end, steps, dtype=_float_dtype(dtype)))
