"""mg.save / mg.load: .npz checkpoints without pickle, written atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen import serialization
from minigen.serialization import CheckpointError
from minigen.tensor import Tensor


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(mg.randn(3, 2))
        self.blocks = nn.ModuleList([nn.Module(), nn.Module()])
        self.blocks[1].b = nn.Parameter(mg.randn(2))
        self.register_buffer("count", mg.tensor(5))


def test_state_dict_round_trip_keeps_keys_values_and_dtypes(tmp_path, device: str) -> None:
    model = Tiny().to(device)
    path = tmp_path / "model.npz"
    serialization.save(model.state_dict(), path)
    loaded = serialization.load(path, map_location=device)
    assert list(loaded) == ["w", "count", "blocks.1.b"]
    for name, t in model.state_dict().items():
        assert isinstance(loaded[name], Tensor) and loaded[name].device == device
        assert loaded[name].dtype == t.dtype
        np.testing.assert_array_equal(loaded[name].numpy(), t.numpy())
    fresh = Tiny()
    fresh.load_state_dict(serialization.load(path))  # default: onto the CPU
    np.testing.assert_array_equal(fresh.w.detach().numpy(), model.w.detach().numpy())
    assert fresh.count.item() == 5


def test_file_is_a_plain_npz_readable_without_pickle(tmp_path) -> None:
    model = Tiny()
    path = tmp_path / "model.npz"
    serialization.save(model.state_dict(), path)
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"w", "count", "blocks.1.b", serialization.HEADER_KEY}
        np.testing.assert_array_equal(archive["w"], model.w.detach().numpy())
        assert archive["count"].dtype == np.int64
    # a plain .npz written by NumPy loads as a dict of tensors
    np.savez(tmp_path / "plain.npz", a=np.arange(3), b=np.ones((2, 2), np.float32))
    plain = serialization.load(tmp_path / "plain.npz", map_location="standin")
    assert plain["a"].device == "standin" and plain["b"].dtype == np.float32


def test_nested_structures_round_trip(tmp_path) -> None:
    state = {
        "model": {"0.weight": mg.ones(2, 2), "0.bias": mg.zeros(2)},
        "step": 12,
        "lr": 3e-4,
        "betas": (0.9, 0.999),
        "history": [1.5, None, "done", True],
        "per_param": {0: {"exp_avg": mg.full((2,), 0.5)}, 1: {}},
        "array": np.arange(4, dtype=np.int32),
        "scalar": np.float32(2.5),
    }
    path = tmp_path / "ckpt.npz"
    serialization.save(state, path)
    loaded = serialization.load(path)
    assert list(loaded["model"]) == ["0.weight", "0.bias"]  # dotted keys are not split
    np.testing.assert_array_equal(loaded["model"]["0.weight"].numpy(), np.ones((2, 2)))
    assert loaded["step"] == 12 and isinstance(loaded["step"], int)
    assert loaded["lr"] == 3e-4 and loaded["betas"] == (0.9, 0.999)
    assert loaded["history"] == [1.5, None, "done", True]
    assert list(loaded["per_param"]) == [0, 1]  # int keys stay ints
    np.testing.assert_array_equal(loaded["per_param"][0]["exp_avg"].numpy(), [0.5, 0.5])
    assert loaded["array"].dtype == np.int32 and loaded["scalar"] == 2.5


def test_unsaveable_values_are_refused(tmp_path) -> None:
    with pytest.raises(TypeError, match="cannot save a set"):
        serialization.save({"bad": {1, 2}}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="save its .state_dict\\(\\) instead"):
        serialization.save(Tiny(), tmp_path / "x.npz")
    with pytest.raises(TypeError, match="dtype object"):
        serialization.save({"bad": np.array([object()])}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)  # nothing written, no temporary left


def test_crash_during_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.npz"
    first = {"w": mg.ones(4)}
    serialization.save(first, path)

    def crash_mid_write(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.np, "savez", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        serialization.save({"w": mg.zeros(4)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(serialization.load(path)["w"].numpy(), np.ones(4))
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file was removed


def test_save_replaces_atomically_and_keeps_permissions(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.npz"
    serialization.save({"w": mg.ones(2)}, path)
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((os.path.dirname(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(serialization.os, "replace", spy)
    serialization.save({"w": mg.zeros(2)}, path)
    assert replaced == [(str(tmp_path), str(path))]  # written beside the target, then renamed over it
    assert os.stat(path).st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(serialization.load(path)["w"].numpy(), np.zeros(2))


def test_missing_corrupt_and_truncated_files_raise_errors_naming_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        serialization.load(missing)

    path = tmp_path / "model.npz"
    serialization.save(Tiny().state_dict(), path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        serialization.load(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.npz"):
        serialization.load(garbage)

    flipped = bytearray(data)
    start = data.index(b"\x93NUMPY")  # corrupt the bytes of the first stored array
    flipped[start + 130 : start + 140] = b"\xff" * 10
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt.npz"):
        serialization.load(corrupt)
