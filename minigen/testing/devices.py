"""Which devices the test suite runs on, and checks that GPU code never waits for the GPU.

* ``available_devices`` / ``to_device_like``: the CPU, the stand-in GPU, and CUDA if present.
* ``forbid_host_reads``: inside it, any read of stand-in device values back to the host
  raises, as a host sync would stall a real GPU.
* ``count_host_uploads``: counts the host data copied onto the stand-in device.
* ``check_shared_numbers``: no code wrote into a number shared on the device.
* ``cpu_random_numbers_on_every_device``: every device draws the CPU's random numbers,
  for tests that compare a device run with a CPU run draw for draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minigen import backend
from minigen.tensor import Tensor
from minigen.testing.standin import StandInArray, _StandInModule


def available_devices() -> list[str]:
    """``["cpu", "standin"]``, plus ``"cuda"`` when CuPy sees a GPU."""
    devices = ["cpu", "standin"]
    if backend.cuda_is_available():
        devices.append("cuda")
    return devices


def to_device_like(array: np.ndarray, device: Any, requires_grad: bool = False) -> Tensor:
    """A tensor on ``device`` holding a copy of the host array (dtype kept)."""
    return Tensor(np.array(array), device=device, requires_grad=requires_grad)


# ------------------------------------------------------------------------ host syncs
class HostReadError(AssertionError):
    """A device value was read back to the host inside ``forbid_host_reads``."""


# Reading a value: the host waits for every queued kernel, then copies the value over.
_VALUE_READS = (
    "get",  # cupy's explicit device -> host copy
    "item",  # t.item(), loss.item()
    "tolist",
    "tobytes",
    "__float__",  # float(t)
    "__int__",  # int(t)
    "__bool__",  # if t: ..., while t > 0: ..., `a and b`
    "__complex__",
    "__repr__",  # printing values (str() and f-strings fall back to __repr__)
    "__str__",
    "__format__",
)
# Functions whose *output shape* depends on the values: CuPy reads the count back to
# size the result. (Shape, dtype, ``len()`` and iterating over the first axis do not
# read values: CuPy knows them on the host, and iteration yields device views.)
_SHAPE_FROM_VALUES = frozenset({"nonzero", "flatnonzero", "argwhere", "unique", "bincount", "compress", "extract"})


def _is_bool_device_array(key: Any) -> bool:
    return type(key) is StandInArray and key.dtype.kind == "b"


@contextmanager
def forbid_host_reads() -> Iterator[None]:
    """Make every device -> host read on the ``"standin"`` device raise ``HostReadError``.

    On a GPU, reading a device value on the host (``loss.item()``, ``float(t)``,
    ``if t > 0:``, ``t.numpy()``, printing ``t``) is a *host sync*: Python stops until
    the GPU has finished all the work queued so far, and the GPU then idles until
    Python queues more. The stand-in device runs on the host and cannot stall, so this
    context manager makes each such read fail instead, naming what was read::

        with forbid_host_reads():
            loss = model.loss(x, y)       # x, y already on "standin"
            loss.backward()
            optimizer.step()              # any .item()/float()/bool() in here raises

    Refused inside: ``.get()``, ``.item()``, ``.tolist()``, ``.tobytes()``; conversion
    with ``float``/``int``/``bool``/``complex``; ``repr``/``str``/
    ``format`` of device arrays; ``backend.asnumpy``/``xp.asnumpy`` of device arrays
    (so ``Tensor.numpy()``, ``Tensor.item()``, ``.to("cpu")``, ``print(t)``); and the
    operations whose result size depends on the values (``nonzero``, ``flatnonzero``,
    ``argwhere``, ``unique``, ``bincount``, ``compress``, ``extract``, one-argument
    ``where``, indexing with a boolean mask), for which CuPy reads a count back.
    Allowed: shapes, dtypes, ``len()``, iterating over the first axis (device views),
    device-side reductions such as ``t.any()`` (the result stays on the device), and
    host -> device copies (see ``count_host_uploads``). Everything is restored on exit, also when the
    block raises. A refused read that the block catches and ignores still fails, on
    exit. Not thread-safe: it patches classes, process-wide.
    """

    refused: list[str] = []  # every refused read, in case an ``except`` swallows the error

    def fail(message: str) -> None:
        refused.append(message)
        raise HostReadError(message)

    def refuse(what: str):
        def refusing(*args: Any, **kwargs: Any) -> Any:
            fail(f"host sync: {what} reads a device value back to the host")

        return refusing

    asnumpy = backend.asnumpy

    def checked_asnumpy(array: Any) -> np.ndarray:
        if type(array) is StandInArray:
            fail("host sync: asnumpy copies a device array to the host")
        return asnumpy(array)  # host data (e.g. on its way to the device) passes

    getitem = StandInArray.__getitem__
    module_getattr = _StandInModule.__getattr__
    array_getattr = StandInArray.__getattr__

    def checked_getitem(self: StandInArray, key: Any) -> Any:
        keys = key if isinstance(key, tuple) else (key,)
        if any(_is_bool_device_array(k) for k in keys):
            fail("host sync: indexing with a boolean mask reads the number of True values back")
        return getitem(self, key)

    def checked_module_getattr(self: _StandInModule, name: str) -> Any:
        if name in _SHAPE_FROM_VALUES:
            fail(f"host sync: xp.{name} reads values back to size its result")
        attr = module_getattr(self, name)
        return one_argument_where_refused(attr) if name == "where" else attr

    def one_argument_where_refused(where: Any) -> Any:
        def checked(*args: Any, **kwargs: Any) -> Any:
            if len(args) + len(kwargs) == 1:
                fail("host sync: xp.where(condition) is nonzero(), which reads values back")
            return where(*args, **kwargs)

        return checked

    def checked_array_getattr(self: StandInArray, name: str) -> Any:
        if name in _SHAPE_FROM_VALUES:
            fail(f"host sync: array.{name}() reads values back to size its result")
        return array_getattr(self, name)

    patches: list[tuple[Any, str, Any]] = [
        (StandInArray, name, refuse(f"StandInArray.{name}")) for name in _VALUE_READS
    ]
    patches += [
        (StandInArray, "__getitem__", checked_getitem),
        (StandInArray, "__getattr__", checked_array_getattr),
        (_StandInModule, "__getattr__", checked_module_getattr),
        (_StandInModule, "asnumpy", staticmethod(checked_asnumpy)),
        (backend, "asnumpy", checked_asnumpy),
    ]
    missing = object()
    saved = [(owner, name, owner.__dict__.get(name, missing)) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
        if refused:  # the block caught a HostReadError and carried on: still a sync
            raise HostReadError(f"{len(refused)} host read(s) refused and caught inside the block: {refused[0]}")
    finally:
        for owner, name, original in reversed(saved):
            if original is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


# --------------------------------------------------------------------- host uploads
@dataclass
class HostUploads:
    """What ``count_host_uploads`` saw copied from the host onto the stand-in device.

    ``arrays``: one ``(shape, where)`` per host array or sequence uploaded;
    ``scalars``: how many single Python/NumPy numbers were uploaded
    (``xp.asarray(0.5)``; the ``0.5`` of ``t * 0.5`` is not one: ``Tensor._lift``
    writes it on the device with ``xp.full``, once, see ``backend.scalar_array``).
    """

    arrays: list[tuple[tuple[int, ...], str]] = field(default_factory=list)
    scalars: int = 0


@contextmanager
def count_host_uploads() -> Iterator[HostUploads]:
    """Count host -> device copies onto the ``"standin"`` device inside the block.

    Such a copy is no sync, but inside a training step it costs a transfer and an
    allocation every step (a batch of data is usually the only upload a step needs).
    Counted: ``backend.to_device(host_array, "standin")`` (which ``Tensor(..., device=)``
    and ``.to("standin")`` use) and ``xp.asarray``/``xp.array`` of host data on the
    stand-in module. Random numbers drawn by ``backend.random_*`` for the stand-in
    device are not counted: on a GPU they are generated on the device.
    """
    seen = HostUploads()
    to_device = backend.to_device
    asarray = _StandInModule.__dict__["asarray"]
    array = _StandInModule.__dict__["array"]

    def record(data: Any, where: str) -> None:
        if np.ndim(data) == 0 and not isinstance(data, np.ndarray):
            seen.scalars += 1
        else:
            seen.arrays.append((tuple(np.shape(data)), where))

    inside_to_device = []  # to_device uploads through xp.asarray: count that copy once

    def counted_to_device(data: Any, device: Any) -> Any:
        if backend.Device(device).type == "standin" and backend.device_of(data).type == "cpu":
            record(data, "backend.to_device")
        inside_to_device.append(True)
        try:
            return to_device(data, device)
        finally:
            inside_to_device.pop()

    def counting(original: staticmethod, where: str) -> staticmethod:
        def counted(a: Any, dtype: Any = None) -> StandInArray:
            if type(a) is not StandInArray and not inside_to_device:
                record(a, where)
            return original.__func__(a, dtype)

        return staticmethod(counted)

    backend.to_device = counted_to_device
    _StandInModule.asarray = counting(asarray, "xp.asarray")
    _StandInModule.array = counting(array, "xp.array")
    try:
        yield seen
    finally:
        backend.to_device = to_device
        _StandInModule.asarray = asarray
        _StandInModule.array = array


# ------------------------------------------------------------------ the CPU's random numbers
class _HostDraws:
    """A generator for a device that draws the CPU's numbers (PCG64 on the host) and copies them over."""

    def __init__(self, seed: Any, device: backend.Device) -> None:
        self._rng = np.random.default_rng(seed)
        self._device = device

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return backend.to_device(self._rng.standard_normal(size, dtype=dtype), self._device)

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return backend.to_device(self._rng.random(size, dtype=dtype), self._device)

    def integers(self, low: int, high: int | None = None, size: Any = None, dtype: Any = np.int64) -> Any:
        return backend.to_device(self._rng.integers(low, high, size=size, dtype=dtype), self._device)

    def permutation(self, n: int) -> Any:
        return backend.to_device(self._rng.permutation(n), self._device)


@contextmanager
def cpu_random_numbers_on_every_device() -> Iterator[None]:
    """Inside, every device draws exactly the CPU's random numbers (drawn on the host, then copied).

    ``manual_seed(s)`` makes each device repeat its own stream, but CuPy's generator
    (XORWOW) does not draw NumPy's numbers (PCG64): a CUDA run and a CPU run with the same
    seed see different dropout masks and noise. A test that compares a device run with a
    CPU run draw for draw wraps both runs in this block::

        with cpu_random_numbers_on_every_device():
            for dev in ("cpu", device):
                mg.manual_seed(1)
                results.append(train_step(...))    # same noise on both devices

    Every draw is a host -> device copy, so this is for tests only. Restored on exit.
    """
    device_generator = backend.generator

    def host_drawn_generator(device: Any = "cpu") -> Any:
        device = backend.Device(device)
        if device.type == "cpu":
            return device_generator(device)
        gen = backend._generators.get(device)  # emptied by manual_seed, like the real ones
        if not isinstance(gen, _HostDraws):
            seed = backend.initial_seed()
            gen = backend._generators[device] = _HostDraws(
                np.random.SeedSequence().entropy if seed is None else seed, device
            )
        return gen

    backend.generator = host_drawn_generator
    try:
        yield
    finally:
        backend.generator = device_generator
        for device, gen in list(backend._generators.items()):
            if isinstance(gen, _HostDraws):
                del backend._generators[device]


# --------------------------------------------------------------- shared numbers on the device
def check_shared_numbers() -> int:
    """Assert that every number ``backend.scalar_array`` shares on a device still holds its value.

    ``t * 0.5`` on a GPU uses one shared 0-d array for 0.5; code that wrote into it
    (an in-place op on a lifted constant) would change every later ``* 0.5``. Returns how
    many shared numbers were checked.
    """
    for (device, dtype, kind, text), array in backend._device_scalars.items():
        if array.dtype != dtype:
            raise AssertionError(f"shared number {text} on {device}: dtype {array.dtype}, expected {dtype}")
        if kind in (int, float):  # the repr of a Python number reads back exactly
            expected = np.asarray(kind(text), dtype=dtype)
            if not np.array_equal(backend.asnumpy(array), expected, equal_nan=True):
                raise AssertionError(f"shared number {text} on {device} now holds {backend.asnumpy(array)}")
    return len(backend._device_scalars)
