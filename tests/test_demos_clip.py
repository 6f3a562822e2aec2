"""The CLIP demo: a quick smoke run (pictures, metric keys, --save/--load, bad flags), and the
issue's targets on the default run (slow: it trains for minutes).

Run the slow checks with ``pytest -m slow tests/test_demos_clip.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from demo_runner import import_demo, run_demo

KEYS = {
    "zero_shot_digit",
    "zero_shot_colour",
    "retrieval_r1_text_to_image",
    "retrieval_r1_image_to_text",
    "logit_scale",
}
PICTURES = (
    "captions_samples.png",
    "similarity.png",
    "retrieval_text_to_image.png",
    "retrieval_image_to_text.png",
    "zero_shot_digit.png",
    "zero_shot_colour.png",
    "logit_scale.png",
    "loss.png",
)


def _demo():
    return import_demo("clip_digits")


def _run(tmp_path: Path, *flags: str) -> dict:
    metrics = run_demo("clip_digits", tmp_path, *flags)
    return metrics


def test_clip_demo_quick(tmp_path):
    metrics = _run(tmp_path, "--quick")
    assert KEYS <= set(metrics)
    for key in KEYS - {"logit_scale"}:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["logit_scale"] <= math.log(100.0) + 1e-6
    for picture in PICTURES:
        assert (tmp_path / picture).stat().st_size > 0, picture


def test_clip_demo_saves_and_loads(tmp_path):
    weights = tmp_path / "clip.npz"
    trained = _run(tmp_path / "a", "--quick", "--save", str(weights))
    loaded = _run(tmp_path / "b", "--quick", "--load", str(weights))
    for key in KEYS:
        assert loaded[key] == pytest.approx(trained[key])
    assert not (tmp_path / "b" / "loss.png").exists()  # nothing was trained


def test_clip_demo_rejects_a_batch_of_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _demo().main(["--out", str(tmp_path), "--quick", "--batch", "1"])
    assert exit_info.value.code == 2
    assert "--batch" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


# ----------------------------------------------------------------------- demo targets
@pytest.mark.slow
@pytest.mark.full_demo
def test_clip_demo_reaches_its_targets(tmp_path):
    """The default run (about 5 minutes of CPU): the issue's targets on 1,000 held-out pairs."""
    metrics = _run(tmp_path)
    assert metrics["zero_shot_digit"] >= 0.90
    assert metrics["zero_shot_colour"] >= 0.90
    assert metrics["retrieval_r1_text_to_image"] >= 0.5
    assert metrics["retrieval_r1_image_to_text"] >= 0.5
    assert math.log(1 / 0.07) - 1.0 < metrics["logit_scale"] <= math.log(100.0) + 1e-6


@pytest.mark.slow
@pytest.mark.ci_quality
def test_clip_demo_ci_sized_run_learns_every_attribute_but_the_digit_fully(tmp_path):
    """800 steps (two fifths of the default's 2,000): colour and retrieval are there, the digits
    (the last attribute CLIP learns here) are well above chance (0.1) but not yet at 0.9."""
    metrics = _run(tmp_path, "--steps", "800")
    assert metrics["zero_shot_colour"] >= 0.90
    assert metrics["retrieval_r1_text_to_image"] >= 0.5
    assert metrics["retrieval_r1_image_to_text"] >= 0.5
    assert metrics["zero_shot_digit"] >= 0.3
