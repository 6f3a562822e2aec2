"""A stand-in GPU device for machines without one (CI has no GPU).

``StandInArray`` wraps a NumPy array and behaves like a CuPy array in the ways that
catch CPU-only code on the GPU path:

* it refuses to mix with plain NumPy arrays (``standin + ndarray`` raises),
* it refuses implicit conversion to NumPy (``np.asarray(x)``, ``np.exp(x)`` raise),
* NumPy functions called on it raise, so ``np.`` on tensor data fails the tests.

``standin_xp`` plays the part of the ``cupy`` module: it forwards to NumPy, unwrapping
the stand-in arrays on the way in and wrapping results on the way out. Tensors on the
device ``"standin"`` carry these arrays. Only the test suite needs this device; users
never do.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

_NO_MIX = (
    "standin device: refusing to mix a device array with a NumPy array in {where}; "
    "move the NumPy array to the device first (as CuPy would require)"
)
_NO_CONVERT = (
    "standin device: implicit conversion to a NumPy array is not allowed; "
    "use backend.asnumpy(x) (as CuPy would require)"
)


def _unwrap(value: Any, where: str) -> Any:
    """Strip stand-in wrappers from an argument; refuse host NumPy arrays."""
    if type(value) is StandInArray:
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(_NO_MIX.format(where=where))
    if isinstance(value, tuple):
        return tuple(_unwrap(v, where) for v in value)
    if isinstance(value, list):
        return [_unwrap(v, where) for v in value]
    return value


def _wrap(value: Any) -> Any:
    """Wrap NumPy results as device arrays; scalars become 0-d arrays, as in CuPy."""
    if isinstance(value, np.ndarray):
        return StandInArray(value)
    if isinstance(value, np.generic):
        return StandInArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class StandInArray:
    """A NumPy array pretending to live on a GPU."""

    __slots__ = ("_a",)
    # Tell NumPy not to handle us in ufuncs or binary operators: np.exp(x) raises, and
    # np.float32(2) * x falls back to our __rmul__.
    __array_ufunc__ = None

    def __init__(self, array: np.ndarray) -> None:
        self._a = array

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(_NO_CONVERT)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(
            f"standin device: numpy.{func.__name__} called on device data; use the array module from backend.xp_of(x)"
        )

    # CuPy-style explicit transfer back to the host.
    def get(self) -> np.ndarray:
        return self._a.copy()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # hide NumPy's __array_interface__ and friends
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return _StandInFunction(attr, f"ndarray.{name}")
        return _wrap(attr)

    def __repr__(self) -> str:
        return "standin_array(" + repr(self._a)[6:]

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return iter(_wrap(list(self._a)))

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key, "indexing")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key, "indexing")] = _unwrap(value, "item assignment")

    # Arithmetic: each operator unwraps its operand and refuses host arrays.
    def __add__(self, o):
        return _wrap(self._a + _unwrap(o, "+"))

    def __radd__(self, o):
        return _wrap(_unwrap(o, "+") + self._a)

    def __sub__(self, o):
        return _wrap(self._a - _unwrap(o, "-"))

    def __rsub__(self, o):
        return _wrap(_unwrap(o, "-") - self._a)

    def __mul__(self, o):
        return _wrap(self._a * _unwrap(o, "*"))

    def __rmul__(self, o):
        return _wrap(_unwrap(o, "*") * self._a)

    def __truediv__(self, o):
        return _wrap(self._a / _unwrap(o, "/"))

    def __rtruediv__(self, o):
        return _wrap(_unwrap(o, "/") / self._a)

    def __floordiv__(self, o):
        return _wrap(self._a // _unwrap(o, "//"))

    def __rfloordiv__(self, o):
        return _wrap(_unwrap(o, "//") // self._a)

    def __mod__(self, o):
        return _wrap(self._a % _unwrap(o, "%"))

    def __rmod__(self, o):
        return _wrap(_unwrap(o, "%") % self._a)

    def __pow__(self, o):
        return _wrap(self._a ** _unwrap(o, "**"))

    def __rpow__(self, o):
        return _wrap(_unwrap(o, "**") ** self._a)

    def __matmul__(self, o):
        return _wrap(self._a @ _unwrap(o, "@"))

    def __rmatmul__(self, o):
        return _wrap(_unwrap(o, "@") @ self._a)

    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)

    def __and__(self, o):
        return _wrap(self._a & _unwrap(o, "&"))

    def __rand__(self, o):
        return _wrap(_unwrap(o, "&") & self._a)

    def __or__(self, o):
        return _wrap(self._a | _unwrap(o, "|"))

    def __ror__(self, o):
        return _wrap(_unwrap(o, "|") | self._a)

    def __xor__(self, o):
        return _wrap(self._a ^ _unwrap(o, "^"))

    def __lt__(self, o):
        return _wrap(self._a < _unwrap(o, "<"))

    def __le__(self, o):
        return _wrap(self._a <= _unwrap(o, "<="))

    def __gt__(self, o):
        return _wrap(self._a > _unwrap(o, ">"))

    def __ge__(self, o):
        return _wrap(self._a >= _unwrap(o, ">="))

    def __eq__(self, o):
        return _wrap(self._a == _unwrap(o, "=="))

    def __ne__(self, o):
        return _wrap(self._a != _unwrap(o, "!="))

    __hash__ = None

    def __iadd__(self, o):
        self._a += _unwrap(o, "+=")
        return self

    def __isub__(self, o):
        self._a -= _unwrap(o, "-=")
        return self

    def __imul__(self, o):
        self._a *= _unwrap(o, "*=")
        return self

    def __itruediv__(self, o):
        self._a /= _unwrap(o, "/=")
        return self


class _StandInFunction:
    """A NumPy function or method seen through the stand-in device."""

    __slots__ = ("_f", "_name")

    def __init__(self, f: Any, name: str) -> None:
        self._f = f
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = _unwrap(args, self._name)
        kwargs = {k: _unwrap(v, self._name) for k, v in kwargs.items()}
        return _wrap(self._f(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:  # ufunc methods such as maximum.reduce
        attr = getattr(self._f, name)
        return _StandInFunction(attr, f"{self._name}.{name}") if callable(attr) else attr


class _StandInModule:
    """Plays the ``cupy`` module: NumPy's functions, device arrays in and out."""

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return _StandInModule(attr)
        if isinstance(attr, type):  # dtypes (xp.float32) and classes pass through
            return attr
        if callable(attr):
            return _StandInFunction(attr, f"xp.{name}")
        return attr

    # Host -> device transfers are explicit in CuPy and allowed here.
    @staticmethod
    def asarray(a: Any, dtype: Any = None) -> StandInArray:
        if type(a) is StandInArray:
            return StandInArray(a._a if dtype is None else a._a.astype(dtype, copy=False))
        return StandInArray(np.asarray(a, dtype=dtype))

    @staticmethod
    def array(a: Any, dtype: Any = None) -> StandInArray:
        data = a._a if type(a) is StandInArray else a
        return StandInArray(np.array(data, dtype=dtype))

    @staticmethod
    def asnumpy(a: Any) -> np.ndarray:
        return a._a.copy() if type(a) is StandInArray else np.asarray(a)

    def __repr__(self) -> str:
        return "<standin array module (NumPy behind a device wall)>"


standin_xp = _StandInModule(np)
