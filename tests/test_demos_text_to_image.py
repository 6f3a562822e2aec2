"""demos/text_to_image.py: a --quick smoke test, and the issue's targets (slow).

Run the slow ones with ``pytest -m slow tests/test_demos_text_to_image.py``: the default run
against the issue's targets (``full_demo``), and the ``--steps 1500`` run that CI checks
(``ci_quality``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_runner import import_demo, run_demo

KEYS = {
    "digit_accuracy",
    "colour_accuracy",
    "position_accuracy",
    "size_accuracy",
    "heldout_combo_accuracy",
    "unguided_digit_accuracy",
    "inpaint_digit_accuracy",
    "inpaint_known_region_error",
    "autoencoder_psnr",
    "latent_scale",
    "seconds",
}
PICTURES = (
    "prompts.png",
    "guidance_scales.png",
    "attention_maps.png",
    "reconstructions.png",
    "inpainting.png",
    "autoencoder_loss.png",
    "diffusion_loss.png",
)


def _demo():
    return import_demo("text_to_image")


def _run(tmp_path: Path, *flags: str) -> dict:
    metrics = run_demo("text_to_image", tmp_path, *flags)
    assert KEYS <= set(metrics)
    trained = "--load" not in flags  # a loaded model has no training curves
    for picture in PICTURES if trained else PICTURES[:-2]:
        assert (tmp_path / picture).stat().st_size > 0, picture
    return metrics


def test_text_to_image_demo_quick(tmp_path):
    metrics = _run(tmp_path, "--quick", "--save", str(tmp_path / "ldm.npz"))
    assert set(metrics) - {"device", "seed", "quick"} == KEYS
    for key in KEYS - {"latent_scale", "autoencoder_psnr", "inpaint_known_region_error", "seconds"}:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["latent_scale"] > 0
    # --load runs the evaluation on the saved model without training, with the saved scale
    again = _run(tmp_path / "loaded", "--quick", "--load", str(tmp_path / "ldm.npz"))
    assert again["latent_scale"] == metrics["latent_scale"]


def test_text_to_image_demo_rejects_a_missing_clip_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _demo().main(["--out", str(tmp_path), "--quick", "--clip-init", str(tmp_path / "missing.npz")])
    assert exit_info.value.code == 2
    assert "--clip-init" in capsys.readouterr().err


def _assert_layout_and_autoencoder(metrics: dict, layout: float) -> None:
    """The caption's colour, position and size, a good autoencoder, and a kept region that stays put."""
    for key in ("colour_accuracy", "position_accuracy", "size_accuracy"):
        assert metrics[key] >= layout, (key, metrics)
    assert metrics["autoencoder_psnr"] > 20.0
    assert metrics["inpaint_known_region_error"] < 0.05


@pytest.mark.slow
@pytest.mark.full_demo
def test_text_to_image_demo_reaches_its_targets(tmp_path):
    """The default run (about 13 minutes on the 2-core machine): the issue's targets."""
    metrics = _run(tmp_path)
    _assert_layout_and_autoencoder(metrics, layout=0.8)  # measured 1.0, 1.0, 1.0
    assert metrics["digit_accuracy"] >= 0.8, metrics  # measured 0.845
    assert metrics["heldout_combo_accuracy"] >= 0.6, metrics  # measured 0.72
    assert metrics["inpaint_digit_accuracy"] >= 0.8, metrics  # measured 0.91 (100 images)
    # guidance is what reads the digit: w = 0 ignores the caption (measured 0.065, chance 0.1)
    assert metrics["digit_accuracy"] >= metrics["unguided_digit_accuracy"] + 0.5, metrics


@pytest.mark.slow
@pytest.mark.ci_quality
def test_text_to_image_demo_ci_sized_run_draws_the_layout_and_starts_on_the_digit(tmp_path):
    """1500 steps (half the default's 3000): colour, place and size are right, and the digit,
    the attribute learned last, is well above chance (0.1) but not yet at 0.8."""
    metrics = _run(tmp_path, *CI_FLAGS)
    _assert_layout_and_autoencoder(metrics, layout=0.9)
    assert metrics["digit_accuracy"] >= 0.3, metrics
    assert metrics["digit_accuracy"] >= metrics["unguided_digit_accuracy"] + 0.2, metrics


CI_FLAGS = ("--steps", "1500")
