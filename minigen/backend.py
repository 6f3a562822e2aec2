"""NumPy on the CPU, CuPy on a CUDA GPU, one code path for both.

Code that touches array data asks the data for its array module, ``xp_of(array)``, and
then writes ``xp.exp(a)`` instead of ``np.exp(a)``. Everything here that NumPy and CuPy
spell differently (devices, transfers, random numbers, scatter-add) has one
backend-neutral function, so no other file needs to know which library it runs on.

Devices are ``"cpu"``, ``"cuda"`` / ``"cuda:N"``, and ``"standin"``: a test-only device
whose arrays behave like CuPy's (see ``minigen/standin.py``) so that CI, which has no
GPU, still catches NumPy-only code on the GPU path.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from minigen.standin import StandInArray, standin_xp

try:  # CuPy is optional: `import minigen` must work without it.
    import cupy as _cupy
    import cupyx as _cupyx
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    _cupy = None
    _cupyx = None

DEFAULT_DTYPE = np.float32


def _reuse_freed_memory() -> None:
    """Let glibc keep large freed blocks for reuse instead of returning them to the OS.

    Training frees and re-allocates the same large temporaries (activations, gradients)
    every step. By default glibc unmaps blocks above 128 KiB on free and the next
    allocation page-faults them back in, which costs about half the time of an op like
    softmax forward+backward. Raising the mmap and trim thresholds keeps the memory in
    the process (PyTorch's caching allocator does the same). Linux/glibc only; set
    MINIGEN_DEFAULT_MALLOC=1 to leave the allocator alone.
    """
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("MINIGEN_DEFAULT_MALLOC"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve big blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give freed heap back
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


_reuse_freed_memory()


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
            f"device {device!s} requested but CUDA is not available: "
            "install CuPy (pip install minigen[gpu]) on a machine with an NVIDIA GPU"
        )


# ---------------------------------------------------------------------- array modules
def xp_of(array: Any) -> Any:
    """The array module (numpy, cupy, or the stand-in) that owns ``array``."""
    if type(array) is StandInArray:
        return standin_xp
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def xp_for(device: Any) -> Any:
    """The array module that creates arrays on ``device``."""
    device = Device(device)
    if device.type == "cpu":
        return np
    if device.type == "standin":
        return standin_xp
    _require_cuda(device)
    return _cupy


def device_of(array: Any) -> Device:
    """The device an array lives on."""
    if type(array) is StandInArray:
        return STANDIN
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return Device(f"cuda:{array.device.id}")
    return CPU


def is_host_array(array: Any) -> bool:
    return type(array) is not StandInArray and xp_of(array) is np


def is_cuda_array(array: Any) -> bool:
    """True for CuPy arrays: reading their values back costs a host sync."""
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def to_device(array: Any, device: Any) -> Any:
    """Copy ``array`` to ``device`` (no copy when it is already there)."""
    device = Device(device)
    if device_of(array) == device:
        return array
    host = asnumpy(array)
    if device.type == "cpu":
        return host
    if device.type == "standin":
        return StandInArray(host)
    _require_cuda(device)
    with _cupy.cuda.Device(device.index):
        return _cupy.asarray(host)


def asnumpy(array: Any) -> np.ndarray:
    """A host (NumPy) copy of any backend's array: the one way back to the CPU."""
    if type(array) is StandInArray:
        return array.get()
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def device_context(device: Any) -> Any:
    """A context manager that makes ``device`` current (a no-op off CUDA)."""
    device = Device(device)
    if device.type == "cuda":
        return _cupy.cuda.Device(device.index)
    return _NullContext()


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# ------------------------------------------------------------------------ scatter-add
def scatter_add(target: Any, key: Any, values: Any) -> None:
    """In place ``target[key] += values``, where repeated indices accumulate.

    Plain ``target[key] += values`` keeps only one of several writes to the same
    element. This is the backward of advanced indexing (and of embedding lookups).
    On NumPy each selected element's flat position is found by indexing an ``arange``
    with the same key, and ``bincount`` sums the values per position; on CuPy
    ``cupyx.scatter_add`` does the job.
    """
    if type(target) is StandInArray:  # the stand-in does what CuPy would, on the host
        scatter_add(target._a, _strip_standin(key), values._a if type(values) is StandInArray else values)
        return
    if _cupy is not None and isinstance(target, _cupy.ndarray):
        _cupyx.scatter_add(target, key, values)
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


def _strip_standin(key: Any) -> Any:
    if type(key) is StandInArray:
        return key._a
    if isinstance(key, tuple):
        return tuple(_strip_standin(k) for k in key)
    return key


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
    """The seeded random generator for ``device``.

    The CPU and the stand-in device share one host stream definition (NumPy's PCG64
    seeded with the same seed), so they draw identical numbers. CUDA uses CuPy's own
    generator with the same seed.
    """
    device = Device(device)
    gen = _generators.get(device)
    if gen is None:
        seed = _seed if _seed is not None else np.random.SeedSequence().entropy
        if device.type == "cuda":
            _require_cuda(device)
            with _cupy.cuda.Device(device.index):
                gen = _cupy.random.default_rng(seed)
        else:
            gen = np.random.default_rng(seed)
        _generators[device] = gen
    return gen


def _on(device: Device, host_or_device_array: Any) -> Any:
    return StandInArray(host_or_device_array) if device.type == "standin" else host_or_device_array


def random_normal(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Standard normal samples of ``shape`` on ``device``."""
    device = Device(device)
    return _on(device, generator(device).standard_normal(shape, dtype=dtype))


def random_uniform(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Uniform samples in [0, 1) of ``shape`` on ``device``."""
    device = Device(device)
    return _on(device, generator(device).random(shape, dtype=dtype))


def random_integers(low: int, high: int, shape: tuple[int, ...], device: Any) -> Any:
    """Integers uniform in [low, high) of ``shape`` on ``device`` (int64)."""
    device = Device(device)
    return _on(device, generator(device).integers(low, high, size=shape, dtype=np.int64))


def random_permutation(n: int, device: Any = "cpu") -> Any:
    """A random permutation of range(n) on ``device``."""
    device = Device(device)
    gen = generator(device)
    if hasattr(gen, "permutation"):
        return _on(device, gen.permutation(n))
    # CuPy's Generator may lack permutation(): the order that sorts n uniform draws is a
    # uniformly random permutation (a tie among float64 draws is all but impossible).
    return _on(device, gen.random(n, dtype=np.float64).argsort())
