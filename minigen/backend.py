"""NumPy on the CPU, CuPy on a CUDA GPU, one code path for both.

Code that touches array data asks the data for its array module, ``xp_of(array)``, and
then writes ``xp.exp(a)`` instead of ``np.exp(a)``. Everything here that NumPy and CuPy
spell differently (devices, transfers, random numbers, scatter-add) has one
backend-neutral function, so no other file needs to know which library it runs on.

Devices are ``"cpu"`` and ``"cuda"`` / ``"cuda:N"``. The test suite adds one more,
``"standin"`` (see "the test device" below).
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

import numpy as np

try:  # CuPy is optional: `import minigen` must work without it.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    _cupy = None

DEFAULT_DTYPE = np.float32


def reuse_freed_memory() -> bool:
    """Opt in: let glibc keep large freed blocks for reuse instead of returning them to the OS.

    By default glibc serves blocks above a threshold with mmap and unmaps them on free, and
    gives the top of its heap back to the OS once more than a threshold of it is free. Both
    thresholds adapt to what the process freed before (the mmap one rises to the largest
    freed block, at most 32 MiB), so whether an op's temporaries page-fault depends on its
    history. This call raises both to 1 GiB: freed memory stays in the process for reuse
    (as PyTorch's CUDA caching allocator does on a GPU), and timings stop depending on what
    ran before.

    It changes allocation for the whole process, every library in it included, so it is
    off unless asked for: call it, or set MINIGEN_REUSE_FREED_MEMORY=1 before importing
    minigen. ``benchmarks/run.py`` calls it for both libraries. Measured (issue 18, one
    thread, CPU time): layer_norm (4096, 768) forward+backward in a fresh process 25 ms
    (2036 page faults a call) without it, 17 ms (none) with it; no difference on the
    benchmark rows after a 16 MiB block has been freed once; causal attention at T 1024
    (256 MiB weights) 5 % faster, and PyTorch, in the same process, 37 % faster on that
    row. Linux/glibc only; returns whether the setting was applied.
    """
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve big blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give freed heap back
        return True
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


if os.environ.get("MINIGEN_REUSE_FREED_MEMORY") == "1":
    reuse_freed_memory()


# ----------------------------------------------------------------------------- devices
class Device(str):
    """A device name. It is a ``str`` ("cpu", "cuda:0", "standin") with ``.type`` and ``.index``."""

    type: str
    index: int | None

    def __new__(cls, spec: Any = "cpu") -> Device:
        if isinstance(spec, Device):
            return spec
        name = str(spec).strip().lower()
        if name == "cpu":
            dev_type, index = "cpu", None
        elif name == "standin":
            dev_type, index = "standin", None
        elif name == "cuda" or name.startswith("cuda:"):
            dev_type = "cuda"
            suffix = name[5:]
            if name != "cuda" and not suffix.isdigit():
                raise ValueError(f"invalid device {spec!r}: expected 'cuda' or 'cuda:N' with N an integer")
            index = int(suffix) if suffix else 0
            name = f"cuda:{index}"
        else:
            raise ValueError(f"invalid device {spec!r}: expected 'cpu', 'cuda', 'cuda:N' (or the test-only 'standin')")
        self = super().__new__(cls, name)
        self.type = dev_type
        self.index = index
        return self

    def __repr__(self) -> str:
        return f"device({str(self)!r})"


CPU = Device("cpu")
STANDIN = Device("standin")


def cuda_is_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _require_cuda(device: Device) -> None:
    if not cuda_is_available():
        raise RuntimeError(
            f"device {device!s} requested but CUDA is not available: install CuPy for your CUDA version "
            "(pip install minigen[gpu13] for CUDA 13, minigen[gpu12] for CUDA 12) on a machine with an NVIDIA GPU"
        )


# ---------------------------------------------------------------------- the test device
# CI has no GPU, so the test suite adds a third device, "standin": a CuPy look-alike that
# lives on the host and refuses what CuPy refuses (minigen/testing/standin.py). It is one
# more array module beside numpy and cupy (its ``ndarray``, ``asarray``, ``asnumpy``,
# ``random`` and ``add.at`` are CuPy's), loaded the first time a tensor asks for it; the
# three functions below are the only ones that tell it apart from CuPy.
_standin_xp: Any = None


def _standin() -> Any:
    global _standin_xp
    if _standin_xp is None:
        from minigen.testing.standin import standin_xp

        _standin_xp = standin_xp
    return _standin_xp


# ---------------------------------------------------------------------- array modules
def xp_of(array: Any) -> Any:
    """The array module (numpy or cupy) that owns ``array``."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    if _standin_xp is not None and isinstance(array, _standin_xp.ndarray):
        return _standin_xp
    return np


def xp_for(device: Any) -> Any:
    """The array module that creates arrays on ``device``."""
    device = Device(device)
    if device.type == "cpu":
        return np
    if device.type == "standin":
        return _standin()
    _require_cuda(device)
    return _cupy


def device_of(array: Any) -> Device:
    """The device an array lives on."""
    xp = xp_of(array)
    if xp is np:
        return CPU
    if xp is _cupy:
        return Device(f"cuda:{array.device.id}")
    return STANDIN


def is_host_array(array: Any) -> bool:
    return xp_of(array) is np


def is_cuda_array(array: Any) -> bool:
    """True for CuPy arrays: reading their values back costs a host sync."""
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def _selected(device: Device) -> Any:
    """Make a CUDA device the current one for the block (CuPy allocates on the current device)."""
    return _cupy.cuda.Device(device.index) if device.type == "cuda" else contextlib.nullcontext()


def to_device(array: Any, device: Any) -> Any:
    """Copy ``array`` to ``device`` (no copy when it is already there)."""
    device = Device(device)
    if device_of(array) == device:
        return array
    host = asnumpy(array)
    xp = xp_for(device)
    if xp is np:
        return host
    with _selected(device):
        return xp.asarray(host)


def asnumpy(array: Any) -> np.ndarray:
    """A host (NumPy) copy of any backend's array: the one way back to the CPU."""
    xp = xp_of(array)
    return np.asarray(array) if xp is np else xp.asnumpy(array)


def assignable(value: Any, target: Any) -> Any:
    """``value`` ready for ``target[key] = value``: host data (a list, a NumPy array) moved to target's device.

    NumPy takes anything array-like there; CuPy takes only its own arrays and scalars
    ("non-scalar numpy.ndarray cannot be used for fill"), so host data is converted on
    the way in, with the target's dtype. Scalars and device arrays pass unchanged.
    """
    if isinstance(value, (list, tuple, np.ndarray)) and not is_host_array(target):
        with _selected(device_of(target)):
            return xp_of(target).asarray(np.asarray(value, dtype=target.dtype))
    return value


# ------------------------------------------------------------------- scalars on the device
_device_scalars: dict[tuple, Any] = {}
_MAX_DEVICE_SCALARS = 1024


def scalar_array(value: Any, dtype: Any, like: Any) -> Any:
    """A 0-d array holding the Python number ``value`` on the device of the array ``like``.

    This is the 0.5 of ``t * 0.5``. On the CPU it is ``np.asarray(value)``. On a GPU a
    fresh 0-d array costs an allocation and a fill kernel, and a training step uses the
    same few numbers every step (0.5, 1 - β, ε), so each (value, dtype, device) is written
    once and then shared. A shared array is a constant: nothing may write into it. (An LR
    schedule can make a new number every step, so the table is emptied when it is full.)
    """
    xp = xp_of(like)
    if xp is np:
        return np.asarray(value, dtype=dtype)
    device = device_of(like)
    key = (device, np.dtype(dtype), type(value), repr(value))  # repr tells 0.0 from -0.0
    array = _device_scalars.get(key)
    if array is None:
        if len(_device_scalars) >= _MAX_DEVICE_SCALARS:
            _device_scalars.clear()
        with _selected(device):
            array = _device_scalars[key] = xp.full((), value, dtype=dtype)
    return array


# ------------------------------------------------------------------------ scatter-add
def scatter_add(target: Any, key: Any, values: Any) -> None:
    """In place ``target[key] += values``, where repeated indices accumulate.

    Plain ``target[key] += values`` keeps only one of several writes to the same
    element. This is the backward of advanced indexing (and of embedding lookups).
    On CuPy ``add.at`` is an atomic scatter on the GPU. On NumPy each selected element's
    flat position is found by indexing an ``arange`` with the same key, and ``bincount``
    sums the values per position (NumPy's own ``add.at`` is far slower).
    """
    xp = xp_of(target)
    if xp is not np:
        xp.add.at(target, key, values)
        return
    if isinstance(key, np.ndarray) and key.dtype.kind in "iu" and target.flags.c_contiguous:
        _scatter_add_rows(target, key, values)
        return
    flat_positions = np.arange(target.size).reshape(target.shape)[key]
    values = np.broadcast_to(values, flat_positions.shape)
    sums = np.bincount(flat_positions.ravel(), weights=values.ravel(), minlength=target.size)
    target += sums.reshape(target.shape).astype(target.dtype, copy=False)


def _scatter_add_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows] += values`` for an integer array ``rows`` indexing the first axis.

    Sort the row indices, sum the values of equal rows with one ``reduceat``, and add
    each sum once. This is the embedding backward, so it must be fast for big tables.
    """
    rows = rows.reshape(-1)
    if rows.size == 0:
        return
    rows = np.where(rows < 0, rows + target.shape[0], rows)
    row_size = int(np.prod(target.shape[1:]))
    values = np.broadcast_to(values, (rows.size,) + target.shape[1:]).reshape(rows.size, row_size)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    sums = np.add.reduceat(values[order], starts, axis=0)
    target.reshape(target.shape[0], row_size)[sorted_rows[starts]] += sums.astype(target.dtype, copy=False)


# ---------------------------------------------------------------------------- randomness
_seed: int | None = None
_generators: dict[Device, Any] = {}


def manual_seed(seed: int) -> None:
    """Seed every device's generator, so runs repeat exactly on each device."""
    global _seed
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    _seed = int(seed)
    _generators.clear()


def initial_seed() -> int | None:
    """The seed last given to ``manual_seed`` (None if never called)."""
    return _seed


def get_rng_state() -> tuple[int | None, dict[Device, Any]]:
    """A snapshot of the random state: the seed and a copy of each device's generator.

    ``set_rng_state(state)`` puts it back, so the draws after it repeat the draws that
    followed ``get_rng_state()``. ``gradcheck`` uses the pair to re-seed around each
    evaluation without disturbing the caller's random stream.
    """
    return _seed, {device: copy.deepcopy(gen) for device, gen in _generators.items()}


def set_rng_state(state: tuple[int | None, dict[Device, Any]]) -> None:
    """Restore a snapshot taken by ``get_rng_state`` (the snapshot stays reusable)."""
    global _seed
    seed, generators = state
    _seed = seed
    _generators.clear()
    _generators.update({device: copy.deepcopy(gen) for device, gen in generators.items()})


def generator(device: Any = "cpu") -> Any:
    """The seeded random generator for ``device``: NumPy's, or CuPy's ``Generator``.

    The CPU and the stand-in device draw the same numbers (NumPy's PCG64 with the same
    seed). CUDA draws from CuPy's generator (XORWOW) with the same seed: repeatable on
    that GPU, but not the CPU's numbers. Parameters are initialised on the host and
    moved, so every device starts from the same weights; dropout masks and noise drawn
    on a GPU differ from the CPU's (see the README's Devices section).
    """
    device = Device(device)
    gen = _generators.get(device)
    if gen is None:
        seed = _seed if _seed is not None else np.random.SeedSequence().entropy
        with _selected(device):
            gen = _generators[device] = xp_for(device).random.default_rng(seed)
    return gen


def _draw_dtype(dtype: Any) -> np.dtype:
    """Generators draw float32 or float64 only (NumPy's refuses float16): other floats are drawn in float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def random_normal(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Standard normal samples of ``shape`` on ``device``."""
    draws = generator(device).standard_normal(shape, dtype=_draw_dtype(dtype))
    return draws.astype(dtype, copy=False)


def random_uniform(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Uniform samples in [0, 1) of ``shape`` on ``device`` (float16 too, the same on every device)."""
    dtype = np.dtype(dtype)
    draws = generator(device).random(shape, dtype=_draw_dtype(dtype))
    if draws.dtype == dtype:
        return draws
    # A float32 draw just below 1 rounds to 1.0 in float16: keep every sample below 1.
    below_one = np.nextafter(dtype.type(1), dtype.type(0))
    return xp_of(draws).minimum(draws.astype(dtype), below_one)


def random_integers(low: int, high: int, shape: tuple[int, ...], device: Any) -> Any:
    """Integers uniform in [low, high) of ``shape`` on ``device`` (int64)."""
    return generator(device).integers(low, high, size=shape, dtype=np.int64)


def random_permutation(n: int, device: Any = "cpu") -> Any:
    """A random permutation of range(n) on ``device``."""
    gen = generator(device)
    if hasattr(gen, "permutation"):
        return gen.permutation(n)
    # CuPy's Generator has no permutation(): the order that sorts n uniform draws is a
    # uniformly random permutation (a tie among float64 draws is all but impossible).
    return gen.random(n, dtype=np.float64).argsort()
