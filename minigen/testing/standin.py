"""The stand-in GPU device, ``"standin"``: CuPy's behaviour on the host, for machines without a GPU.

CI has no GPU, yet code that only works on NumPy must not reach a GPU user. So the test
suite runs every op on one more device, ``"standin"``, whose arrays (``StandInArray``)
and array module (``standin_xp``, playing the ``cupy`` module) behave like CuPy's in every
way that catches CPU-only code. ``minigen.backend`` loads this module the first time a
tensor asks for the device; users never need it.

**What CuPy does, and the stand-in imitates.**

* **Only CuPy 14's API.** Functions of ``xp`` (also ``xp.linalg``, ``xp.fft``,
  ``xp.random``), ``ndarray`` methods and attributes, ufunc methods (``add.at``,
  ``maximum.reduce``) and ``Generator`` methods exist only if CuPy has them, and take
  only the keyword arguments CuPy takes. The list, ``cupy_api.json``, is read from the
  CuPy wheel by ``_make_cupy_api.py``.
* **Device arrays and host arrays do not mix.** ``standin + ndarray`` and
  ``np.asarray(standin)`` raise; ``backend.asnumpy``/``.get()`` are the way back.
* **No Python lists where CuPy wants arrays.** A list (or tuple) given to a ufunc
  (``xp.maximum(x, [0, 1])``), an operator (``x + [1, 2]``) or assigned into a slice
  (``x[:2] = [1, 2]``) raises, as on CuPy; convert it with ``xp.asarray`` first.
* **No ``__index__``.** ``range(n)`` or ``[...][n]`` with a device integer raises
  ``TypeError``: ``cupy.ndarray`` has no ``__index__``.
* **Out-of-bounds indices wrap.** Integer-array indexing (``x[idx]``, ``x[idx] = v``),
  ``take`` and ``add.at`` use ``idx mod n`` for an index outside ``[-n, n)``, silently,
  as CuPy's kernels do (NumPy would raise). Code must not rely on an ``IndexError``
  there (see the NaN losses of ``F.cross_entropy`` and ``F.embedding``).
* **bool() of an empty array** warns (``DeprecationWarning``) and is ``False``, as in
  CuPy 14 (NumPy 2 raises).
* **Random numbers through CuPy's ``Generator`` API.** ``xp.random.default_rng(seed)``
  offers ``random``, ``standard_normal``, ``integers``, … and no ``permutation``,
  ``shuffle`` or ``choice``. The numbers are NumPy's PCG64 stream with the same seed, so
  the CPU and the stand-in draw identical numbers (CuPy's XORWOW does not).

**Stricter than CuPy, on purpose.**

* ``np.*`` on a device array raises. CuPy would run ``np.exp(x)`` on the GPU through
  ``__array_ufunc__``/``__array_function__``, but minigen's rule is ``xp = xp_of(x)``:
  ``np.`` on tensor data is a bug that only looks fine until the data is on the host.
* Writing into a broadcast view raises (NumPy's views are read-only; CuPy's write
  through to the memory the view shares, which is never what the code meant).
* Host NumPy arrays are refused everywhere, also 0-d ones and index arrays, which CuPy
  would upload: an upload inside a training step is a cost the tests should see.
"""

from __future__ import annotations

import json
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

CUPY_API: dict[str, Any] = json.loads(Path(__file__).with_name("cupy_api.json").read_text())
CUPY = f"CuPy {CUPY_API['cupy_version']}"

_NO_MIX = (
    "standin device: refusing to mix a device array with a NumPy array in {where}; "
    "move the NumPy array to the device first (as CuPy would require)"
)
_NO_CONVERT = (
    "standin device: implicit conversion to a NumPy array is not allowed; "
    "use backend.asnumpy(x) (as CuPy would require)"
)
_NO_LIST = (
    "stand-in GPU: a Python {kind} in {where}; CuPy takes only device arrays and scalars there: "
    "convert it first with xp.asarray(...)"
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


def _operand(value: Any, where: str) -> Any:
    """An array operand (of an operator or a ufunc): a device array or a scalar, never a list."""
    if isinstance(value, (list, tuple)):
        raise TypeError(_NO_LIST.format(kind=type(value).__name__, where=where))
    return _unwrap(value, where)


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


def _check_keywords(name: str, kwargs: dict[str, Any], allowed: list[str] | None) -> None:
    if allowed is None:
        return
    unknown = [key for key in kwargs if key not in allowed]
    if unknown:
        raise TypeError(
            f"{name}() got the keyword argument {unknown[0]!r}, which {CUPY} does not take "
            f"(it takes {', '.join(allowed) or 'none'}); the stand-in GPU refuses it as CuPy would"
        )


def _not_in_cupy(what: str, hint: str = "") -> AttributeError:
    return AttributeError(
        f"{what} is not part of {CUPY}'s API, so it fails on a GPU "
        f"(the stand-in GPU allows only what minigen/testing/cupy_api.json lists){hint}"
    )


# ------------------------------------------------------------- out-of-bounds indices wrap
def _wrapped_key(key: Any, shape: tuple[int, ...]) -> Any:
    """``key`` with each integer index array taken modulo its axis length, as CuPy's kernels do.

    NumPy raises ``IndexError`` for an index outside [-n, n); CuPy reads (or writes) element
    ``i mod n`` without a word. Python integers are still checked on both.
    """
    parts = list(key) if isinstance(key, tuple) else [key]
    parts = [np.asarray(p) if isinstance(p, list) else p for p in parts]
    consumed = sum(
        p.ndim if isinstance(p, np.ndarray) and p.dtype.kind == "b" else 0 if p is None or p is Ellipsis else 1
        for p in parts
    )
    axis = 0
    for i, part in enumerate(parts):
        if part is Ellipsis:
            axis += len(shape) - consumed
        elif isinstance(part, np.ndarray) and part.dtype.kind == "b":
            axis += part.ndim
        elif part is not None:
            if isinstance(part, np.ndarray) and part.dtype.kind in "iu" and axis < len(shape) and shape[axis] > 0:
                parts[i] = part % shape[axis]
            axis += 1
    return tuple(parts) if isinstance(key, tuple) else parts[0]


def _take(a: np.ndarray, indices: Any, axis: int | None = None, out: Any = None) -> Any:
    length = a.size if axis is None else a.shape[axis]
    indices = np.asarray(indices)
    if length and indices.dtype.kind in "iu":
        indices = indices % length
    return np.take(a, indices, axis=axis, out=out)


# ------------------------------------------------------------------------ device arrays
class StandInArray:
    """A NumPy array pretending to live on a GPU (see the module docstring for its rules)."""

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
        entry = CUPY_API["ndarray"].get(name)
        if entry is None:
            raise _not_in_cupy(f"cupy.ndarray.{name}")
        if name == "take":  # wraps out-of-range indices
            return _StandInFunction(
                lambda *args, **kwargs: _take(self._a, *args, **kwargs), "ndarray.take", entry["keywords"]
            )
        attr = getattr(self._a, name)
        if entry["kind"] == "method":
            return _StandInFunction(attr, f"ndarray.{name}", entry["keywords"])
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
        if self._a.size == 0:  # CuPy 14 (like NumPy 1.x): a warning and False; NumPy 2 raises
            warnings.warn(
                "The truth value of an empty array is ambiguous. Returning False, but in future this will "
                "result in an error. Use `array.size > 0` to check that an array is not empty.",
                DeprecationWarning,
                stacklevel=2,
            )
            return False
        return bool(self._a)

    # No __index__: cupy.ndarray has none, so range(t) or a_list[t] fail on a GPU too.

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_wrapped_key(_unwrap(key, "indexing"), self._a.shape)])

    def __setitem__(self, key: Any, value: Any) -> None:
        value = _operand(value, "item assignment")
        self._a[_wrapped_key(_unwrap(key, "indexing"), self._a.shape)] = value

    # Arithmetic: each operator takes a device array or a scalar (never a host array or a list).
    def __add__(self, o):
        return _wrap(self._a + _operand(o, "+"))

    def __radd__(self, o):
        return _wrap(_operand(o, "+") + self._a)

    def __sub__(self, o):
        return _wrap(self._a - _operand(o, "-"))

    def __rsub__(self, o):
        return _wrap(_operand(o, "-") - self._a)

    def __mul__(self, o):
        return _wrap(self._a * _operand(o, "*"))

    def __rmul__(self, o):
        return _wrap(_operand(o, "*") * self._a)

    def __truediv__(self, o):
        return _wrap(self._a / _operand(o, "/"))

    def __rtruediv__(self, o):
        return _wrap(_operand(o, "/") / self._a)

    def __floordiv__(self, o):
        return _wrap(self._a // _operand(o, "//"))

    def __rfloordiv__(self, o):
        return _wrap(_operand(o, "//") // self._a)

    def __mod__(self, o):
        return _wrap(self._a % _operand(o, "%"))

    def __rmod__(self, o):
        return _wrap(_operand(o, "%") % self._a)

    def __pow__(self, o):
        return _wrap(self._a ** _operand(o, "**"))

    def __rpow__(self, o):
        return _wrap(_operand(o, "**") ** self._a)

    def __matmul__(self, o):
        return _wrap(self._a @ _operand(o, "@"))

    def __rmatmul__(self, o):
        return _wrap(_operand(o, "@") @ self._a)

    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)

    def __and__(self, o):
        return _wrap(self._a & _operand(o, "&"))

    def __rand__(self, o):
        return _wrap(_operand(o, "&") & self._a)

    def __or__(self, o):
        return _wrap(self._a | _operand(o, "|"))

    def __ror__(self, o):
        return _wrap(_operand(o, "|") | self._a)

    def __xor__(self, o):
        return _wrap(self._a ^ _operand(o, "^"))

    def __lt__(self, o):
        return _wrap(self._a < _operand(o, "<"))

    def __le__(self, o):
        return _wrap(self._a <= _operand(o, "<="))

    def __gt__(self, o):
        return _wrap(self._a > _operand(o, ">"))

    def __ge__(self, o):
        return _wrap(self._a >= _operand(o, ">="))

    def __eq__(self, o):
        return _wrap(self._a == _operand(o, "=="))

    def __ne__(self, o):
        return _wrap(self._a != _operand(o, "!="))

    __hash__ = None

    def __iadd__(self, o):
        self._a += _operand(o, "+=")
        return self

    def __isub__(self, o):
        self._a -= _operand(o, "-=")
        return self

    def __imul__(self, o):
        self._a *= _operand(o, "*=")
        return self

    def __itruediv__(self, o):
        self._a /= _operand(o, "/=")
        return self


# ------------------------------------------------------------------ functions and ufuncs
class _StandInFunction:
    """A NumPy function or method seen through the stand-in device, with CuPy's keywords."""

    __slots__ = ("_f", "_name", "_keywords")

    def __init__(self, f: Any, name: str, keywords: list[str] | None = None) -> None:
        self._f = f
        self._name = name
        self._keywords = keywords

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _check_keywords(self._name, kwargs, self._keywords)
        args = _unwrap(args, self._name)
        kwargs = {k: _unwrap(v, self._name) for k, v in kwargs.items()}
        return _wrap(self._f(*args, **kwargs))


class _StandInUfunc:
    """A NumPy ufunc with CuPy's ufunc interface: array or scalar inputs, CuPy's methods."""

    __slots__ = ("_ufunc", "_name")

    def __init__(self, ufunc: np.ufunc, name: str) -> None:
        self._ufunc = ufunc
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _check_keywords(f"xp.{self._name}", kwargs, CUPY_API["ufunc"]["__call__"]["keywords"])
        inputs = [_operand(a, f"xp.{self._name}") for a in args]
        kwargs = {k: _unwrap(v, f"xp.{self._name}") for k, v in kwargs.items()}
        return _wrap(self._ufunc(*inputs, **kwargs))

    def at(self, a: StandInArray, indices: Any, b: Any = None) -> None:
        """CuPy's ``ufunc.at`` (a scatter on the GPU): repeated indices accumulate, out-of-bounds ones wrap."""
        target = _unwrap(a, f"xp.{self._name}.at")
        key = _wrapped_key(_unwrap(indices, f"xp.{self._name}.at"), target.shape)
        args = () if b is None else (_operand(b, f"xp.{self._name}.at"),)
        self._ufunc.at(target, key, *args)

    def __getattr__(self, name: str) -> Any:
        entry = CUPY_API["ufunc"].get(name)
        if entry is None or name.startswith("_"):
            raise _not_in_cupy(f"cupy.ufunc.{name} (on xp.{self._name})")
        attr = getattr(self._ufunc, name)
        if entry["kind"] == "method":
            return _StandInFunction(attr, f"xp.{self._name}.{name}", entry["keywords"])
        return attr


class StandInGenerator:
    """``cupy.random.Generator``'s methods, drawing NumPy's PCG64 numbers onto the device."""

    __slots__ = ("_rng",)

    def __init__(self, seed: Any) -> None:
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        entry = CUPY_API["random.Generator"].get(name)
        if entry is None:
            methods = ", ".join(sorted(CUPY_API["random.Generator"]))
            raise _not_in_cupy(f"cupy.random.Generator.{name}", f"; it offers {methods}")
        return _StandInFunction(getattr(self._rng, name), f"Generator.{name}", entry["keywords"])


# --------------------------------------------------------------------- the array module
class _StandInModule:
    """Plays the ``cupy`` module (or ``cupy.linalg``, ``cupy.fft``): NumPy's functions, device arrays in and out."""

    ndarray = StandInArray  # as cupy.ndarray: what backend.xp_of recognises

    def __init__(self, module: types.ModuleType, name: str = "cupy") -> None:
        self._module = module
        self._name = name
        self._api = CUPY_API["namespaces"][name]
        self._made: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = self._make(name)
        return made

    def _make(self, name: str) -> Any:
        entry = self._api.get(name)
        if entry is None or name.startswith("_"):
            raise _not_in_cupy(f"{self._name}.{name}")
        if entry["kind"] == "module":
            if f"{self._name}.{name}" not in CUPY_API["namespaces"]:
                raise AttributeError(f"the stand-in GPU does not imitate {self._name}.{name}")
            return _StandInModule(getattr(self._module, name), f"{self._name}.{name}")
        if name == "take":
            return _StandInFunction(_take, "xp.take", entry["keywords"])
        if not hasattr(self._module, name):
            raise AttributeError(f"{self._name}.{name} exists in {CUPY} but the stand-in GPU does not imitate it")
        attr = getattr(self._module, name)
        if entry["kind"] == "ufunc" and isinstance(attr, np.ufunc):
            return _StandInUfunc(attr, name)
        if isinstance(attr, type) or not callable(attr) or entry["kind"] == "numpy":
            return attr  # dtypes (xp.float32), constants (xp.inf), NumPy's own helpers
        return _StandInFunction(attr, f"{self._name.replace('cupy', 'xp', 1)}.{name}", entry["keywords"])

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
        return a.get() if type(a) is StandInArray else np.asarray(a)  # as cupy.asnumpy does

    def __repr__(self) -> str:
        return f"<standin array module: {self._name} of {CUPY} (NumPy behind a device wall)>"


class _StandInRandom:
    """Plays ``cupy.random``: ``default_rng(seed)`` gives a Generator with CuPy's methods."""

    ndarray = StandInArray

    @staticmethod
    def default_rng(seed: Any = None) -> StandInGenerator:
        return StandInGenerator(seed)

    def __getattr__(self, name: str) -> Any:
        if name not in CUPY_API["namespaces"]["cupy.random"]:
            raise _not_in_cupy(f"cupy.random.{name}")
        raise AttributeError(f"cupy.random.{name} exists in {CUPY} but the stand-in GPU imitates only default_rng")


standin_xp = _StandInModule(np)
standin_xp._made["random"] = _StandInRandom()
