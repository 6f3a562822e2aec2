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
A crash or an error during saving leaves the previous checkpoint intact. Saving also
keeps a file's protections: a read-only checkpoint is never replaced, a symlink is
written through to its target (the link stays a link), and the temporary files of a
save that was killed outright (``SIGKILL``, a power cut) are removed by the next save
to the same place.

Loading reads nothing but arrays and a JSON header, and checks what it reads: a file
that is not a minigen checkpoint (a PyTorch ``.pt``, a pickle, random bytes) gives a
``CheckpointError`` that says what the file looks like.
"""

from __future__ import annotations

import json
import os
import re
import stat
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
# Nesting deeper than this is refused, when saving and when loading. A state dict is
# three or four levels deep; a structure that contains itself, or a crafted header
# nested 100,000 levels deep, would otherwise end in a RecursionError.
MAX_DEPTH = 100

try:  # POSIX file locks tell a live save's temporary file from one left by a killed save
    import fcntl
except ImportError:  # Windows: leftover temporary files are not cleaned up
    fcntl = None


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read (corrupt, truncated or not a minigen/NumPy archive)."""


# --------------------------------------------------------------------------- encoding
def _encode(obj: Any, path: str, arrays: dict[str, np.ndarray], depth: int = 0) -> Any:
    """Describe ``obj`` as JSON; tensors and arrays go into ``arrays`` under a dotted name."""
    if depth > MAX_DEPTH:
        raise ValueError(
            f"save: the structure is nested more than {MAX_DEPTH} levels deep at {path[:200]!r}... "
            "(does a list or dict contain itself?)"
        )
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
            items.append([key, _encode(value, f"{path}.{key}" if path else str(key), arrays, depth + 1)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        encoded = [_encode(v, f"{path}.{i}" if path else str(i), arrays, depth + 1) for i, v in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": encoded}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    hint = " (save its .state_dict() instead)" if hasattr(obj, "state_dict") else ""
    raise TypeError(
        f"save: cannot save a {type(obj).__name__} at {path or '<root>'!r}{hint}; "
        "checkpoints hold tensors, arrays, numbers, strings, None, and dicts/lists/tuples of them"
    )


def _decode(node: Any, arrays: Mapping[str, np.ndarray], device: Device, depth: int = 0) -> Any:
    """Rebuild what ``_encode`` described; a malformed node raises KeyError, TypeError or ValueError."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the structure is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(node, dict):
        raise TypeError(f"expected a JSON object describing one value, found {type(node).__name__}")
    if "tensor" in node:
        return Tensor(backend.to_device(arrays[node["tensor"]], device))
    if "dict" in node:
        return {key: _decode(value, arrays, device, depth + 1) for key, value in node["dict"]}
    if "list" in node:
        return [_decode(value, arrays, device, depth + 1) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, arrays, device, depth + 1) for value in node["tuple"])
    return node["value"]


# ------------------------------------------------------------------------ save / load
def save(obj: Any, path: str | os.PathLike) -> None:
    """Save a state dict (or a nested dict/list of tensors and plain values) to ``path``.

    The file is an ``.npz`` archive readable by ``np.load(path, allow_pickle=False)``.
    It is written atomically: until the new file is complete and on disk, ``path``
    still holds the old one. A read-only ``path`` is refused (``PermissionError``), a
    missing folder too (``FileNotFoundError``), before anything is written; a symlink
    is written through, so the file it points to gets the new checkpoint.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    structure = _encode(obj, "", arrays)
    header = json.dumps({"format": "minigen", "version": FORMAT_VERSION, "structure": structure})
    arrays[HEADER_KEY] = np.array(header)

    # Through any symlinks: the new file replaces the link's target and the link stays.
    target = os.path.realpath(path)
    check_writable(path, target)
    _remove_stale_temporaries(target)
    descriptor, temporary = _locked_temporary(target)
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them visible
            # mkstemp makes the file private (0600); give it the old file's mode, or the usual 0644.
            os.chmod(temporary, os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o644)
            if fcntl is not None:
                # Renamed while still locked, so another save's clean-up cannot take it first.
                os.replace(temporary, target)  # atomic: readers see the old file or the new one, never half
        if fcntl is None:
            os.replace(temporary, target)  # Windows cannot rename a file that is still open
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(os.path.dirname(target))


def check_writable(path: str | os.PathLike, target: str | None = None) -> None:
    """Raise a clear error now if ``save(..., path)`` could not write ``path``.

    Checks that the folder exists and is writable, that ``path`` is not a folder and
    that an existing file there is not read-only. A demo calls this before training,
    so a bad ``--save`` fails at once instead of after the work is done.
    """
    path = os.fspath(path)
    target = target if target is not None else os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save: cannot write {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(target):
        raise IsADirectoryError(f"save: cannot write {path!r}: it is a folder; give a file name such as model.npz")
    if os.path.exists(target) and not _is_writable_file(target):
        raise PermissionError(
            f"save: {path!r} is read-only, so it is not replaced; make it writable (chmod u+w) or choose another name"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"save: cannot write {path!r}: the folder {folder!r} is not writable")


def _is_writable_file(path: str) -> bool:
    """Writable by this user, and not marked read-only (root's os.access ignores the mode bits)."""
    mode = os.stat(path).st_mode
    return os.access(path, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _temporary_pattern(target: str) -> re.Pattern[str]:
    """Names of the temporary files ``save`` makes beside ``target``: mkstemp's 8 random characters."""
    return re.compile(re.escape(os.path.basename(target)) + r"\.[a-z0-9_]{8}\.tmp")


def _locked_temporary(target: str) -> tuple[int, str]:
    """A new temporary file beside ``target``, locked for as long as its descriptor stays open.

    The lock marks the file as in use: a save that is killed loses its lock with its
    process, which is how the next save recognises the file as left over.
    """
    folder, base = os.path.split(target)
    while True:
        descriptor, temporary = tempfile.mkstemp(prefix=base + ".", suffix=".tmp", dir=folder)
        if fcntl is None:
            return descriptor, temporary
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        # Another save's clean-up may have removed the file in the instant before the lock.
        try:
            if os.path.samestat(os.stat(temporary), os.fstat(descriptor)):
                return descriptor, temporary
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _remove_stale_temporaries(target: str) -> None:
    """Delete the temporary files that killed saves to ``target`` left behind.

    A temporary file is stale when nobody holds its lock: a save in progress (in this
    process or another) holds it until its rename, a killed one released it when it died.
    """
    if fcntl is None:
        return
    folder = os.path.dirname(target)
    pattern = _temporary_pattern(target)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = os.path.join(folder, name)
        try:
            descriptor = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a live save holds it
            if stat.S_ISREG(os.fstat(descriptor).st_mode) and os.path.samestat(
                os.stat(candidate), os.fstat(descriptor)
            ):
                os.remove(candidate)
        except OSError:
            pass
        finally:
            os.close(descriptor)


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


# How files that are not checkpoints begin, to say what a wrong file is.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one ends at once)
_NOT_A_CHECKPOINT = (
    (b"\x93NUMPY", "a single NumPy array (.npy), not a checkpoint: read it with np.load"),
    (b"\x80", "a Python pickle (perhaps an old-style torch.save file); minigen never unpickles, as that can run code"),
    (b"\x1f\x8b", "gzip-compressed data, not an .npz archive"),
    (b"\x89HDF", "an HDF5 file (Keras/h5py), not an .npz archive"),
)


def _describe_start(start: bytes) -> str:
    """What a file that is not a zip archive seems to be, from its first bytes."""
    if not start:
        return "the file is empty"
    for signature, meaning in _NOT_A_CHECKPOINT:
        if start.startswith(signature):
            return f"it is {meaning}"
    return f"it starts with the bytes {start[:8].hex(' ')}, not with the zip signature (50 4b) of an .npz archive"


def _describe_foreign_zip(names: list[str]) -> str:
    """What a zip archive whose entries are not all ``.npy`` arrays seems to be."""
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return (
            "it is a PyTorch checkpoint (written by torch.save), not a minigen one: minigen never unpickles. "
            "Convert it where PyTorch is installed: "
            "mg.save({k: v.numpy() for k, v in torch.load(path).items()}, 'model.npz')"
        )
    others = [name for name in names if not name.endswith(".npy")]
    return f"it is a zip archive but not an .npz: entries such as {others[:3]} are not NumPy arrays"


def load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """Load a checkpoint written by ``save``; tensors are placed on ``map_location`` (default CPU).

    A plain ``.npz`` without minigen's header loads as a dict of name -> Tensor.
    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (naming the
    file and saying what it seems to be) for a corrupt, truncated or foreign one.
    """
    path = os.fspath(path)
    device = Device(map_location if map_location is not None else "cpu")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no checkpoint at {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"load: {path!r} is a folder, not a checkpoint file")
    with open(path, "rb") as file:
        start = file.read(8)
    if not start.startswith(_ZIP_SIGNATURES):
        raise CheckpointError(f"load: {path!r} is not a minigen checkpoint: {_describe_start(start)}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.zip.namelist()
            if not all(name.endswith(".npy") for name in names):
                raise CheckpointError(f"load: {path!r} is not a minigen checkpoint: {_describe_foreign_zip(names)}")
            arrays = {name: archive[name] for name in archive.files}  # reads (and checks) every entry
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        # NumPy's advice for pickled entries (pass allow_pickle=True) is exactly what not to do here.
        detail = "an entry holds pickled Python objects, which minigen never loads" if "pickle" in str(error) else error
        raise CheckpointError(
            f"load: {path!r} is not a readable checkpoint (corrupt, truncated, or not an .npz archive): {detail}"
        ) from error

    if HEADER_KEY not in arrays:
        return {name: Tensor(backend.to_device(array, device)) for name, array in arrays.items()}
    try:
        header = json.loads(str(arrays.pop(HEADER_KEY)))
    except RecursionError:
        raise CheckpointError(
            f"load: {path!r} has a damaged minigen header: it is nested more than {MAX_DEPTH} levels deep"
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"load: {path!r} has a damaged minigen header: {error}") from error
    if not isinstance(header, dict) or header.get("format") != "minigen" or "structure" not in header:
        raise CheckpointError(f"load: {path!r} has a damaged minigen header: it does not describe a minigen checkpoint")
    if not isinstance(header.get("version"), int) or header["version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"load: {path!r} has checkpoint format version {header.get('version')!r}; "
            f"this minigen reads versions up to {FORMAT_VERSION} (update minigen)"
        )
    try:
        return _decode(header["structure"], arrays, device)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"load: {path!r} has a damaged minigen header: {error}") from error
