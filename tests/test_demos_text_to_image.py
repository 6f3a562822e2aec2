"""demos/text_to_image.py: a --quick smoke test, and the issue's targets (slow).

Run the slow ones with ``pytest -m slow tests/test_demos_text_to_image.py``: the default run
(once, shared by two tests: what it reaches, and the digit targets it does not reach yet,
marked xfail) and the shorter ``--steps 600`` run.
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


def _assert_reached(metrics: dict, layout: float) -> None:
    """What the demo does reach: the caption's colour, position and size, a good autoencoder, a kept region."""
    for key in ("colour_accuracy", "position_accuracy", "size_accuracy"):
        assert metrics[key] >= layout, (key, metrics)
    assert metrics["autoencoder_psnr"] > 20.0
    assert metrics["inpaint_known_region_error"] < 0.05


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("text_to_image_default"))


@pytest.mark.slow
@pytest.mark.full_demo
def test_text_to_image_demo_draws_colour_position_and_size(default_run):
    _assert_reached(default_run, layout=0.9)  # measured 1.0, 1.0, 1.0
    # measured 0.46 against 0.115: guidance is what reads the digit from the caption
    assert default_run["digit_accuracy"] >= default_run["unguided_digit_accuracy"] + 0.2, default_run


# Measured on the default run (CPU, seed 0): digit 0.46, heldout_combo 0.26 and inpaint_digit 0.425;
# the samples have the caption's colour, place and size, but looped digits (0, 2, 3, 5, 8, 9) often
# come out as 0, 6 or 8.
@pytest.mark.slow
@pytest.mark.full_demo
@pytest.mark.xfail(
    strict=True, reason="issue 17's digit targets are not reached yet: digit_accuracy 0.46 (target 0.80)"
)
def test_text_to_image_demo_reaches_the_digit_targets(default_run):
    for key in ("digit_accuracy", "inpaint_digit_accuracy"):
        assert default_run[key] >= 0.8, (key, default_run)
    assert default_run["heldout_combo_accuracy"] >= 0.6, default_run


@pytest.mark.slow
@pytest.mark.full_demo
def test_text_to_image_demo_short_run_draws_colour_position_and_size(tmp_path):
    # measured (600 steps): colour 1.0, position 1.0, size 0.995; the digit is still at chance (0.095)
    _assert_reached(_run(tmp_path, *CI_FLAGS), layout=0.8)


CI_FLAGS = ("--steps", "600")
