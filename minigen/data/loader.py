"""Mini-batches of host arrays, delivered as minigen Tensors on a device.

The data sets in ``minigen.data`` return host NumPy arrays; ``DataLoader`` cuts them
into batches and moves each batch to the device (``"cpu"``, ``"cuda"``, ...). As in
PyTorch::

    loader = DataLoader((images, labels), batch_size=64, shuffle=True, seed=0, device="cuda")
    for x, y in loader:          # x, y: Tensors on cuda
        ...

Shuffling uses the loader's own ``numpy.random.Generator``: with a ``seed`` the order
of every epoch repeats from run to run, and drawing it never disturbs the random
stream of ``minigen.manual_seed`` (model initialisation, dropout, noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from minigen import backend
from minigen.backend import Device
from minigen.tensor import Tensor


def _host(array: Any) -> np.ndarray:
    """A host NumPy array from a Tensor (any device), a CuPy array or array-like data."""
    if isinstance(array, Tensor):
        return backend.asnumpy(array.data)
    if hasattr(array, "shape") and not isinstance(array, np.ndarray):
        return backend.asnumpy(array)
    return np.asarray(array)


class TensorDataset:
    """A data set made of arrays that share their first dimension (samples).

    ``TensorDataset(images, labels)[i]`` is ``(images[i], labels[i])``. Arrays are kept
    on the host; ``DataLoader`` moves batches to the device.
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array")
        self.arrays: tuple[np.ndarray, ...] = tuple(_host(a) for a in arrays)
        lengths = [len(a) if a.ndim else -1 for a in self.arrays]
        if min(lengths) < 0 or len(set(lengths)) != 1:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ValueError(f"TensorDataset: all arrays need the same first dimension, got shapes {shapes}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over a data set in mini-batches of minigen Tensors on ``device``.

    ``dataset_or_arrays`` may be
    * one array (or Tensor): each batch is a single Tensor;
    * a tuple or list of arrays of equal length, a ``TensorDataset``, or any object
      with an ``arrays`` attribute (such as ``load_digits(...)``): each batch is a
      tuple of Tensors;
    * any object with ``__len__`` and ``__getitem__`` returning a sample (a tuple of
      arrays/numbers, or one array): samples are stacked into a tuple of Tensors.

    ``shuffle=True`` draws a new order every epoch from the loader's own generator,
    seeded by ``seed``; with ``seed=None`` it is seeded from ``minigen.manual_seed`` if
    one was set (without consuming that stream), else from fresh entropy.
    ``drop_last=True`` skips a final incomplete batch. ``len(loader)`` is the number
    of batches per epoch.
    """

    def __init__(
        self,
        dataset_or_arrays: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        device: Any = "cpu",
    ) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = Device(device)
        self.dataset = dataset_or_arrays
        self._single = False
        self._arrays: tuple[np.ndarray, ...] | None = None
        if isinstance(dataset_or_arrays, (np.ndarray, Tensor)):
            self._arrays, self._single = (_host(dataset_or_arrays),), True
        elif isinstance(dataset_or_arrays, (tuple, list)):
            self._arrays = TensorDataset(*dataset_or_arrays).arrays
        elif hasattr(dataset_or_arrays, "arrays"):
            self._arrays = TensorDataset(*dataset_or_arrays.arrays).arrays
        elif not (hasattr(dataset_or_arrays, "__len__") and hasattr(dataset_or_arrays, "__getitem__")):
            raise TypeError(
                "DataLoader: expected an array, a tuple of arrays, or a data set with __len__ and __getitem__; "
                f"got {type(dataset_or_arrays).__name__}"
            )
        if self._arrays is not None and self._arrays[0].ndim == 0:
            raise ValueError("DataLoader: a 0-d array has no samples to batch")
        if seed is None:
            seed = backend.initial_seed()  # read, not drawn: the global stream is untouched
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _num_samples(self) -> int:
        return len(self._arrays[0]) if self._arrays is not None else len(self.dataset)

    def _to_tensor(self, array: np.ndarray) -> Tensor:
        return Tensor(np.ascontiguousarray(array), device=self.device)

    def _fetch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._arrays is not None:
            return tuple(a[indices] for a in self._arrays)  # fancy indexing copies: batches never alias data
        samples = [self.dataset[int(i)] for i in indices]
        if not isinstance(samples[0], (tuple, list)):
            self._single = True
            return (np.stack([_host(s) for s in samples]),)
        return tuple(np.stack([_host(s[k]) for s in samples]) for k in range(len(samples[0])))

    def __iter__(self) -> Iterator[Any]:
        n = self._num_samples()
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            batch = self._fetch(order[start : min(start + self.batch_size, stop)])
            tensors = tuple(self._to_tensor(a) for a in batch)
            yield tensors[0] if self._single else tensors

    def __repr__(self) -> str:
        return (
            f"DataLoader(samples={self._num_samples()}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, device='{self.device}')"
        )
