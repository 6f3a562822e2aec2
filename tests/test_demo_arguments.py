"""Every demo checks its flags and its output places before it trains (exit status 2, a clear message).

These tests stop at argument parsing, so they run in a moment: nothing is rendered or trained.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parent.parent / "demos"
if str(DEMOS) not in sys.path:
    sys.path.insert(0, str(DEMOS))

import common  # noqa: E402  (demos/common.py)

# (demo, flag, bad value, what the error says): every numeric flag of every demo.
BAD_FLAGS = [
    ("gan_toy2d", "--k", "0", "argument --k: must be 1 or more, got 0"),
    ("gan_toy2d", "--steps", "-5", "argument --steps: must be 1 or more"),
    ("gan_toy2d", "--r1", "-0.5", "argument --r1: must be 0 or more, got -0.5"),
    ("gan_toy2d", "--r1", "nan", "argument --r1: expected a finite number, got 'nan'"),
    ("gan_toy2d", "--seed", "-1", "argument --seed: must be 0 or more, got -1"),
    ("gan_toy2d", "--seed", "1.5", "argument --seed: expected an integer, got '1.5'"),
    ("cnn_digits", "--epochs", "0", "argument --epochs: must be 1 or more"),
    ("dcgan_digits", "--epochs", "0", "argument --epochs: must be 1 or more"),
    ("diffusion_digits", "--steps", "0", "argument --steps: must be 1 or more"),
    ("diffusion_digits", "--guidance", "-1", "argument --guidance: must be 0 or more"),
    ("diffusion_digits", "--guidance", "inf", "argument --guidance: expected a finite number"),
    ("diffusion_toy2d", "--steps", "0", "argument --steps: must be 1 or more"),
    ("vae_digits", "--latent-dim", "0", "argument --latent-dim: must be 1 or more"),
    ("vae_digits", "--epochs", "-1", "argument --epochs: must be 1 or more"),
    ("vit_digits", "--epochs", "0", "argument --epochs: must be 1 or more"),
    ("gpt_sort", "--steps", "0", "argument --steps: must be 1 or more"),
    ("gpt_chars", "--steps", "0", "argument --steps: must be 1 or more"),
    ("bert_mlm", "--steps", "0", "argument --steps: must be 1 or more"),
    ("rope", "--steps", "0", "argument --steps: must be 1 or more"),
]


def _fails_before_training(name: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the demo's main with ``argv``; it must stop at argument parsing. Returns the message."""
    demo = importlib.import_module(name)
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    assert stop.value.code == 2  # argparse's usage error
    return capsys.readouterr().err


@pytest.mark.parametrize(("name", "flag", "value", "says"), BAD_FLAGS)
def test_bad_numbers_are_refused_by_argparse(name, flag, value, says, tmp_path, capsys) -> None:
    message = _fails_before_training(name, ["--quick", "--out", str(tmp_path), flag, value], capsys)
    assert says in message and f"demos/{name}.py" in message
    assert not (tmp_path / "metrics.json").exists()


def test_out_must_be_a_writable_folder(tmp_path, capsys) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    message = _fails_before_training("gan_toy2d", ["--quick", "--out", str(a_file)], capsys)
    assert "--out: " in message and "results.txt' is a file, not a folder" in message
    message = _fails_before_training("gan_toy2d", ["--quick", "--out", str(a_file / "run")], capsys)
    assert "--out: cannot write into" in message and "results.txt/run" in message


@pytest.fixture
def untrainable_cnn_demo(monkeypatch: pytest.MonkeyPatch):
    """demos/cnn_digits.py with its data and training replaced by tripwires."""
    demo = importlib.import_module("cnn_digits")

    def tripwire(*args, **kwargs):
        raise AssertionError("the demo started work before checking its flags")

    monkeypatch.setattr(demo, "load_digits", tripwire)
    monkeypatch.setattr(demo, "fit_classifier", tripwire)
    return demo


def test_save_into_a_missing_folder_fails_at_once_naming_the_folder(untrainable_cnn_demo, tmp_path, capsys) -> None:
    target = tmp_path / "no such folder" / "model.npz"
    message = _fails_before_training("cnn_digits", ["--out", str(tmp_path / "out"), "--save", str(target)], capsys)
    assert "argument --save" in message or "--save: " in message
    assert f"the folder '{target.parent}' does not exist" in message
    assert ".tmp" not in message


def test_save_onto_a_read_only_file_or_a_folder_fails_at_once(untrainable_cnn_demo, tmp_path, capsys) -> None:
    locked = tmp_path / "keep.npz"
    locked.write_bytes(b"an earlier checkpoint")
    os.chmod(locked, 0o444)
    message = _fails_before_training("cnn_digits", ["--out", str(tmp_path / "o"), "--save", str(locked)], capsys)
    assert "--save: " in message and "read-only" in message
    message = _fails_before_training("cnn_digits", ["--out", str(tmp_path / "o"), "--save", str(tmp_path)], capsys)
    assert "--save: " in message and "is a folder" in message
    assert locked.read_bytes() == b"an earlier checkpoint"


def test_load_of_a_missing_file_fails_at_once(untrainable_cnn_demo, tmp_path, capsys) -> None:
    message = _fails_before_training("cnn_digits", ["--out", str(tmp_path), "--load", str(tmp_path / "x.npz")], capsys)
    assert "argument --load: no such file" in message


def test_save_may_go_into_the_out_folder_it_creates(tmp_path) -> None:
    def extra(parser):
        parser.add_argument("--save", type=Path, default=None)

    out = tmp_path / "new" / "run"
    args = common.demo_arguments("x", "test", ["--out", str(out), "--save", str(out / "model.npz")], extra)
    assert args.out == out and out.is_dir() and args.save == out / "model.npz"
    assert os.listdir(out) == []  # the write probe leaves nothing behind
