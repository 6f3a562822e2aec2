"""Loaders for the standard files of MNIST, Fashion-MNIST and CIFAR-10 on local disk.

Nothing is downloaded unless asked (``download=True``); tests and demos never do.

* MNIST and Fashion-MNIST come as IDX files (``train-images-idx3-ubyte`` ...,
  optionally gzipped). ``read_idx`` parses any IDX file.
* CIFAR-10 comes as pickled "python batches" in ``cifar-10-batches-py/``.

Images are returned as float32 ``(N, C, H, W)`` in [0, 1], labels as int64, like the
rest of ``minigen.data``. Missing files give an error that lists the expected file
names and the folders searched; malformed files (wrong magic number, truncated data)
give an error that names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minigen.utils.images import atomic_write

PathLike = str | os.PathLike

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

# Where download=True fetches from, with the published MD5 checksums of each file.
_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def _check_split(split: str, loader: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{loader}: split must be 'train' or 'test', got {split!r}")


# ------------------------------------------------------------------------------- IDX
# The third byte of an IDX file's magic number gives the element type (big-endian).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped (recognised by content, not name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{path}: corrupt or truncated gzip data ({error}); delete the file and fetch it again"
        ) from error


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file into an array of its shape and (native-endian) type.

    Layout: two zero bytes, a type byte, the number of dimensions n, then n big-endian
    uint32 sizes, then the elements in C order, big-endian.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        magic = data[:4].hex() if data else "empty file"
        raise ValueError(
            f"{name}: not an IDX file (bad magic number {magic}); expected 0000 followed by a type byte "
            f"({', '.join(f'{k:02x}' for k in _IDX_TYPES)}) and the number of dimensions"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, the header needs {header})")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise ValueError(
            f"{name}: truncated IDX data: shape {shape} of {dtype.name} needs {expected} bytes, found {found}"
        )
    if found > expected:
        raise ValueError(f"{name}: {found - expected} unexpected bytes after the IDX data of shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a NumPy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def _find(root: Path, name: str, folders: Sequence[str]) -> Path | None:
    """The first of ``folder/name`` or ``folder/name.gz`` (or the ``.idx`` spelling) that exists."""
    spellings = (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz")
    for folder in folders:
        for spelling in spellings:
            candidate = root / folder / spelling
            if candidate.is_file():
                return candidate
    return None


def _load_idx_pair(
    root: PathLike, split: str, loader: str, folders: Sequence[str], download_hint: str
) -> tuple[np.ndarray, np.ndarray]:
    root = Path(root).expanduser()
    image_name, label_name = MNIST_FILES[split]
    image_path, label_path = _find(root, image_name, folders), _find(root, label_name, folders)
    if image_path is None or label_path is None:
        missing = [n for n, p in ((image_name, image_path), (label_name, label_path)) if p is None]
        searched = ", ".join(str(root / f) for f in folders)
        raise FileNotFoundError(
            f"{loader}: missing {' and '.join(missing)} (or the same name with .gz) for split {split!r}; "
            f"searched {searched}. The {split} split needs {image_name} and {label_name}. {download_hint}"
        )
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(
            f"{loader}: {image_path} should hold (N, H, W) images and {label_path} (N,) labels; "
            f"got shapes {images.shape} and {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{loader}: {len(images)} images in {image_path} but {len(labels)} labels in {label_path}")
    return _pixels_in_unit_range(images[:, None], f"{loader}: {image_path}"), _class_labels(
        labels, f"{loader}: {label_path}"
    )


def _pixels_in_unit_range(images: np.ndarray, source: str) -> np.ndarray:
    """Images as float32 in [0, 1]: integer pixels (0-255, whatever the IDX element type)
    are divided by 255; floating-point pixels must already lie in [0, 1]."""
    if images.dtype.kind in "iu":
        low, high = (int(images.min()), int(images.max())) if images.size else (0, 0)
        if low < 0 or high > 255:
            raise ValueError(f"{source}: integer pixels must lie in 0-255, found {low}..{high}")
        return images.astype(np.float32) / np.float32(255)
    if not np.isfinite(images).all():
        raise ValueError(f"{source}: {int((~np.isfinite(images)).sum())} pixels are NaN or infinite")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if low < 0 or high > 1:
        raise ValueError(
            f"{source}: floating-point pixels must lie in [0, 1], found {low:g}..{high:g} "
            "(pixels stored as 0-255 must be integers, or divided by 255)"
        )
    return images.astype(np.float32)


def _class_labels(labels: np.ndarray, source: str, num_classes: int = 10) -> np.ndarray:
    """Labels as int64 class indices, after checking that every one is a whole number in range.

    Floating-point labels are accepted only when they are whole numbers (3.0): casting
    3.7 or NaN to an integer would silently give 3 or -9.2e18.
    """
    if labels.dtype.kind not in "iuf":
        first = labels.flat[0] if labels.size else None
        example = f" such as {first.item() if isinstance(first, np.generic) else first!r}" if labels.size else ""
        raise ValueError(f"{source}: labels must be integers 0-{num_classes - 1}, found {labels.dtype} values{example}")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source}: labels must be whole numbers 0-{num_classes - 1}; {int(bad.sum())} are not, "
                f"the first is label {first} = {labels[first]}"
            )
    if labels.size and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise ValueError(f"{source}: labels must be 0-{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def load_mnist(root: PathLike, split: str = "train", download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from its IDX files under ``root``: float32 images (N, 1, 28, 28) in [0, 1], int64 labels.

    Looks in ``root``, ``root/raw`` and ``root/MNIST/raw`` (torchvision's layout) for
    ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (split "train") or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (split "test"), each
    optionally gzipped (``.gz``). ``download=True`` fetches missing files into ``root``
    first (needs internet; never used by the tests).
    """
    _check_split(split, "load_mnist")
    folders = (".", "raw", "MNIST/raw")
    if download and (_find(Path(root), MNIST_FILES[split][0], folders) is None):
        _download_idx(Path(root), split, _MNIST_MIRRORS, _MNIST_MD5)
    hint = "Pass download=True to fetch them, or get them from " + _MNIST_MIRRORS[0]
    return _load_idx_pair(root, split, "load_mnist", folders, hint)


def load_fashion_mnist(root: PathLike, split: str = "train", download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (same file names and format as MNIST); class names in ``FASHION_MNIST_CLASSES``.

    Looks in ``root``, ``root/raw`` and ``root/FashionMNIST/raw``.
    """
    _check_split(split, "load_fashion_mnist")
    folders = (".", "raw", "FashionMNIST/raw")
    if download and (_find(Path(root), MNIST_FILES[split][0], folders) is None):
        _download_idx(Path(root), split, _FASHION_MIRRORS, _FASHION_MD5)
    hint = "Pass download=True to fetch them, or get them from " + _FASHION_MIRRORS[0]
    return _load_idx_pair(root, split, "load_fashion_mnist", folders, hint)


# --------------------------------------------------------------------------- CIFAR-10
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else.

    CIFAR-10's "python version" is distributed only as pickles, so reading it needs
    pickle, and unpickling can run arbitrary code named in the file. This unpickler
    accepts only the few NumPy names that rebuild an array; any other global (say
    ``os.system`` in a tampered file) is refused. ``encoding="bytes"`` is required
    because the batches were written by Python 2: their str keys come back as bytes
    (``b"data"``, ``b"labels"``) instead of failing to decode.
    """

    _ALLOWED = {
        ("multiarray", "_reconstruct"),  # how NumPy pickles an array (protocols 0-4)
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),  # how NumPy pickles an array with protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes with protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        # NumPy 2 renamed numpy.core to numpy._core; files written by either must load.
        submodule = module.rsplit(".", 1)[-1] if module.startswith(("numpy.core.", "numpy._core.")) else module
        if (submodule, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR batch: only NumPy arrays are expected"
            )
        if submodule in ("multiarray", "numeric"):
            try:
                owner = importlib.import_module(f"numpy._core.{submodule}")
            except ImportError:  # NumPy 1.x
                owner = importlib.import_module(f"numpy.core.{submodule}")
            return getattr(owner, name)
        return super().find_class(module, name)


def read_cifar_batch(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'; found {keys}")
    data = np.asarray(batch[b"data"])
    try:
        labels = np.asarray(batch[b"labels"])
    except ValueError as error:  # a ragged list
        raise ValueError(f"{path}: b'labels' must be a flat list of integers 0-9 ({error})") from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    labels = _class_labels(labels, str(path))
    # Each row holds the 1024 red values, then green, then blue, each image row by row.
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: PathLike, split: str = "train", download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from its python batches: float32 images (N, 3, 32, 32) in [0, 1], int64 labels.

    ``root`` is the folder that holds ``cifar-10-batches-py/`` (or that folder itself).
    The "train" split reads ``data_batch_1`` ... ``data_batch_5``, "test" reads
    ``test_batch``. ``download=True`` fetches and unpacks the archive into ``root``
    first (needs internet; never used by the tests).
    """
    _check_split(split, "load_cifar10")
    root = Path(root).expanduser()
    names = CIFAR10_BATCHES[split]

    def folder_with_batches() -> Path | None:
        for folder in (root / CIFAR10_FOLDER, root):
            if all((folder / name).is_file() for name in names):
                return folder
        return None

    folder = folder_with_batches()
    if folder is None and download:
        _download_cifar10(root)
        folder = folder_with_batches()
    if folder is None:
        raise FileNotFoundError(
            f"load_cifar10: the {split} split needs {', '.join(names)} in {root / CIFAR10_FOLDER} (or in {root}); "
            f"some are missing. Pass download=True to fetch them, or unpack {_CIFAR10_URL} into {root}"
        )
    batches = [read_cifar_batch(folder / name) for name in names]
    images = np.concatenate([b[0] for b in batches]).astype(np.float32) / 255.0
    labels = np.concatenate([b[1] for b in batches])
    return images, labels


# --------------------------------------------------------------------------- download
def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, destination: Path, md5: str) -> None:
    """Download ``url`` to ``destination`` atomically, checking its MD5 before it appears."""
    from tqdm import tqdm

    with atomic_write(destination) as tmp:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        if _md5(tmp) != md5:  # raising here discards the temporary file
            raise OSError(f"download of {url} is corrupt (MD5 mismatch); try again")


def _download_idx(root: Path, split: str, mirrors: Sequence[str], checksums: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES[split]:
        target = root / (name + ".gz")
        if target.is_file():
            continue
        errors = []
        for mirror in mirrors:
            try:
                _fetch(mirror + name + ".gz", target, checksums[name + ".gz"])
                break
            except OSError as error:  # URLError and HTTPError are OSErrors
                errors.append(f"{mirror}: {error}")
        else:
            raise OSError(f"could not download {name}.gz: " + "; ".join(errors))


def _download_cifar10(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    if not archive.is_file():
        _fetch(_CIFAR10_URL, archive, _CIFAR10_MD5)
    # Unpack into a scratch folder, then move the finished folder into place, so an
    # interrupted unpack never looks like a complete data set.
    scratch = root / f".{CIFAR10_FOLDER}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            # Only regular files, written under their base name: a crafted member name
            # ("../x", "/etc/x") or a link cannot place anything outside `scratch`.
            name = Path(member.name).name
            if not member.isfile() or not member.name.startswith(CIFAR10_FOLDER + "/") or name in ("", ".", ".."):
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(scratch / name, "wb") as out:
                shutil.copyfileobj(source, out)
    if (root / CIFAR10_FOLDER).exists():
        shutil.rmtree(root / CIFAR10_FOLDER)
    os.replace(scratch, root / CIFAR10_FOLDER)


__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_FILES",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "parse_idx",
    "read_cifar_batch",
    "read_idx",
]
