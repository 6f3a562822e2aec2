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


# ------------------------------------------------------------- a file's protections
def test_save_refuses_to_replace_a_read_only_checkpoint(tmp_path) -> None:
    path = tmp_path / "model.npz"
    serialization.save({"w": mg.ones(2)}, path)
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match="model.npz.*read-only"):
        serialization.save({"w": mg.zeros(2)}, path)
    np.testing.assert_array_equal(serialization.load(path)["w"].numpy(), np.ones(2))
    assert os.stat(path).st_mode & 0o777 == 0o444
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_into_a_missing_folder_names_the_folder_not_a_temporary_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere.* does not exist") as error:
        serialization.save({"w": mg.ones(2)}, tmp_path / "nowhere" / "model.npz")
    assert ".tmp" not in str(error.value)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        serialization.save({"w": mg.ones(2)}, tmp_path)


def test_save_writes_through_a_symlink_to_its_target(tmp_path) -> None:
    real = tmp_path / "store" / "model.npz"
    real.parent.mkdir()
    serialization.save({"w": mg.ones(2)}, real)
    os.chmod(real, 0o640)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    serialization.save({"w": mg.full((2,), 7.0)}, link)
    assert link.is_symlink() and os.readlink(link) == str(real)  # the link is still a link
    np.testing.assert_array_equal(serialization.load(real)["w"].numpy(), [7.0, 7.0])
    assert os.stat(real).st_mode & 0o777 == 0o640
    assert sorted(os.listdir(real.parent)) == ["model.npz"]  # written beside the target, no temporary left


def test_a_self_containing_structure_is_refused_clearly(tmp_path) -> None:
    loop: list = [mg.ones(1)]
    loop.append(loop)
    with pytest.raises(ValueError, match="nested more than 100 levels.*contain itself"):
        serialization.save({"loop": loop}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


_KILLED_SAVER = """
import sys, time, numpy as np
import minigen as mg
from minigen import serialization
def slow_savez(file, **arrays):
    file.write(b"PK\\x03\\x04" + b"x" * 1_000_000)
    file.flush()
    print("writing", flush=True)
    time.sleep(60)
serialization.np.savez = slow_savez
serialization.save({"w": mg.zeros(4)}, sys.argv[1])
"""


def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    path = tmp_path / "model.npz"
    serialization.save({"w": mg.ones(4)}, path)
    saver = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVER, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    try:
        assert saver.stdout.readline() == b"writing\n"
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".tmp")]) == 1  # the killed save's
    # An older leftover as well (the name mkstemp gives): it is no one's, so it goes too.
    (tmp_path / "model.npz.ab3_x9q0.tmp").write_bytes(b"PK half")
    (tmp_path / "other.npz.ab3_x9q0.tmp").write_bytes(b"another file's")  # not this target's: kept
    np.testing.assert_array_equal(serialization.load(path)["w"].numpy(), np.ones(4))  # still intact

    serialization.save({"w": mg.full((4,), 2.0)}, path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "other.npz.ab3_x9q0.tmp"]
    np.testing.assert_array_equal(serialization.load(path)["w"].numpy(), np.full(4, 2.0))


@pytest.mark.skipif(serialization.fcntl is None, reason="needs POSIX file locks")
def test_the_temporary_of_a_save_in_progress_is_left_alone(tmp_path) -> None:
    path = tmp_path / "model.npz"
    descriptor, in_progress = serialization._locked_temporary(str(path))  # another save, still writing
    try:
        serialization.save({"w": mg.ones(2)}, path)
        assert os.path.exists(in_progress)
    finally:
        os.close(descriptor)
    serialization.save({"w": mg.ones(2)}, path)  # now its lock is gone: a leftover
    assert os.listdir(tmp_path) == ["model.npz"]


# ------------------------------------------------------------ files that are not checkpoints
def test_a_pytorch_checkpoint_is_named_as_one(tmp_path) -> None:
    import zipfile

    path = tmp_path / "model.pt"  # torch.save's layout: a zip holding a pickle and raw storages
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("model/data/0", b"\x00\x00\x80?" * 2)
        archive.writestr("model/version", b"3\n")
    with pytest.raises(CheckpointError, match="model.pt.*PyTorch checkpoint.*torch.save"):
        serialization.load(path)
    other = tmp_path / "notes.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", b"hello")
    with pytest.raises(CheckpointError, match="notes.zip.*zip archive but not an .npz.*readme.txt"):
        serialization.load(other)


def test_a_real_torch_file_is_refused(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="PyTorch checkpoint"):
        serialization.load(path)
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickle") as error:
        serialization.load(path)
    assert "allow_pickle" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty"),
        (bytes(range(256)) * 4, "starts with the bytes 00 01 02"),
        (b"\x80\x04\x95 pickled", "pickle"),
        (b"\x1f\x8b\x08\x00 gzip", "gzip"),
    ],
)
def test_random_bytes_say_what_the_file_is_without_numpys_pickle_advice(tmp_path, content, says) -> None:
    path = tmp_path / "mystery.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"mystery.npz.*{says}") as error:
        serialization.load(path)
    assert "allow_pickle" not in str(error.value)


def test_a_single_npy_array_and_an_object_array_are_refused_clearly(tmp_path) -> None:
    single = tmp_path / "array.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.arange(3))
    with pytest.raises(CheckpointError, match="single NumPy array"):
        serialization.load(single)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled Python objects") as error:
        serialization.load(pickled)
    assert "allow_pickle" not in str(error.value)


def test_a_header_nested_100000_levels_deep_is_a_clear_error(tmp_path) -> None:
    depth = 100_000
    header = '{"format": "minigen", "version": 1, "structure": ' + '{"list": [' * depth + "]}" * depth + "}"
    path = tmp_path / "deep.npz"
    np.savez(path, **{serialization.HEADER_KEY: np.array(header)})
    with pytest.raises(CheckpointError, match="deep.npz.*nested more than 100 levels"):
        serialization.load(path)
    # Deep enough to parse, deeper than any checkpoint: refused by the decoder's bound.
    header = '{"format": "minigen", "version": 1, "structure": ' + '{"list": [' * 150 + "]}" * 150 + "}"
    np.savez(path, **{serialization.HEADER_KEY: np.array(header)})
    with pytest.raises(CheckpointError, match="nested more than 100 levels"):
        serialization.load(path)


def test_a_header_from_a_newer_format_or_another_program_is_refused(tmp_path) -> None:
    path = tmp_path / "future.npz"
    header = '{"format": "minigen", "version": 99, "structure": {"value": 1}}'
    np.savez(path, **{serialization.HEADER_KEY: np.array(header)})
    with pytest.raises(CheckpointError, match="version 99.*up to 1"):
        serialization.load(path)
    np.savez(path, **{serialization.HEADER_KEY: np.array('["not", "a", "header"]')})
    with pytest.raises(CheckpointError, match="does not describe a minigen checkpoint"):
        serialization.load(path)
