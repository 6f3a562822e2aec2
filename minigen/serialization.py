"""``mg.save`` / ``mg.load``: checkpoints as plain ``.npz`` files, without pickle.

A checkpoint is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays):

* every tensor or array becomes one entry, named by its dotted path in the saved
  structure, so a model's state dict keeps its keys: ``np.load(path)["0.weight"]``;
* one extra entry, ``__minigen__``, holds a small JSON text describing the nesting
  (dicts, lists, tuples) and the plain values (numbers, strings, booleans, None), so
  an optimiser's state dict round-trips too.

Nothing is pickled, so loading a file can never run code (``allow_pickle=False``).

Saving is atomic: the archive is written to a temporary file next to the target,
flushed to disk (fsync) and then renamed over the target in one step (``os.replace``).
A crash or an error during saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from minigen import backend
from minigen.backend import Device
from minigen.tensor import Tensor

HEADER_KEY = "__minigen__"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read (corrupt, truncated or not a minigen/NumPy archive)."""


# --------------------------------------------------------------------------- encoding
def _encode(obj: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """Describe ``obj`` as JSON; tensors and arrays go into ``arrays`` under a dotted name."""
    if isinstance(obj, np.generic):  # a NumPy scalar is a plain value, not an array
        obj = obj.item()
    if isinstance(obj, Tensor) or isinstance(obj, np.ndarray) or (hasattr(obj, "shape") and hasattr(obj, "dtype")):
        host = backend.asnumpy(obj.data if isinstance(obj, Tensor) else obj)
        if host.dtype == object:
            raise TypeError(
                f"save: the array at {path or '<root>'!r} has dtype object, which cannot be saved without pickle"
            )
        name = path or "tensor"
        while name in arrays or name == HEADER_KEY:  # keep two paths that spell the same apart
            name += "_"
        arrays[name] = host
        return {"tensor": name}
    if isinstance(obj, Mapping):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"save: dict keys must be str or int, got {key!r} at {path or '<root>'!r}")
            items.append([key, _encode(value, f"{path}.{key}" if path else str(key), arrays)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        encoded = [_encode(v, f"{path}.{i}" if path else str(i), arrays) for i, v in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": encoded}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    hint = " (save its .state_dict() instead)" if hasattr(obj, "state_dict") else ""
    raise TypeError(
        f"save: cannot save a {type(obj).__name__} at {path or '<root>'!r}{hint}; "
        "checkpoints hold tensors, arrays, numbers, strings, None, and dicts/lists/tuples of them"
    )


def _decode(node: Any, arrays: Mapping[str, np.ndarray], device: Device) -> Any:
    if "tensor" in node:
        return Tensor(backend.to_device(arrays[node["tensor"]], device))
    if "dict" in node:
        return {key: _decode(value, arrays, device) for key, value in node["dict"]}
    if "list" in node:
        return [_decode(value, arrays, device) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, arrays, device) for value in node["tuple"])
    return node["value"]


# ------------------------------------------------------------------------ save / load
def save(obj: Any, path: str | os.PathLike) -> None:
    """Save a state dict (or a nested dict/list of tensors and plain values) to ``path``.

    The file is an ``.npz`` archive readable by ``np.load(path, allow_pickle=False)``.
    It is written atomically: until the new file is complete and on disk, ``path``
    still holds the old one.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    structure = _encode(obj, "", arrays)
    header = json.dumps({"format": "minigen", "version": FORMAT_VERSION, "structure": structure})
    arrays[HEADER_KEY] = np.array(header)

    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them visible
        # mkstemp makes the file private (0600); give it the old file's mode, or the usual 0644.
        os.chmod(temporary, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(temporary, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """Load a checkpoint written by ``save``; tensors are placed on ``map_location`` (default CPU).

    A plain ``.npz`` without minigen's header loads as a dict of name -> Tensor.
    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (naming the
    file) for a corrupt or truncated one.
    """
    path = os.fspath(path)
    device = Device(map_location if map_location is not None else "cpu")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}  # reads (and checks) every entry
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(
            f"load: {path!r} is not a readable checkpoint (corrupt, truncated, or not an .npz archive): {error}"
        ) from error

    if HEADER_KEY not in arrays:
        return {name: Tensor(backend.to_device(array, device)) for name, array in arrays.items()}
    try:
        header = json.loads(str(arrays.pop(HEADER_KEY)))
        return _decode(header["structure"], arrays, device)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"load: {path!r} has a damaged minigen header: {error}") from error
