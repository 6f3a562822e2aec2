"""The image-to-image demos reach their targets (slow: each trains for minutes).

Run with ``pytest -m slow tests/test_demos_translation.py``. The fast ``--quick`` smoke
tests only check that a demo runs end to end, writes its pictures and the metric keys
of issue 14, and rejects bad flags.
"""

from __future__ import annotations

import pytest
from demo_runner import import_demo, run_demo

PIX2PIX_KEYS = {"digit_accuracy", "l1", "sharpness_l1_only", "sharpness_gan"}
CYCLEGAN_KEYS = {"a2b_digit_accuracy", "b2a_digit_accuracy", "a2b_domain_accuracy", "b2a_domain_accuracy", "cycle_l1"}


# ------------------------------------------------------------------------- smoke tests
@pytest.mark.parametrize(
    "task, flags",
    [
        ("edges2digits", ()),
        ("grey2colour", ()),
        ("lowres2highres", ("--upsample", "transposed")),
        ("masked2full", ("--pretrain-steps", "0", "--noise-channels", "1")),
    ],
)
def test_pix2pix_demo_quick(tmp_path, task, flags):
    metrics = run_demo("pix2pix_digits", tmp_path, "--quick", "--task", task, *flags)
    assert PIX2PIX_KEYS <= set(metrics) and metrics["task"] == task
    assert ("hue_accuracy" in metrics) == (task == "grey2colour")
    assert metrics["upsample"] == ("transposed" if "transposed" in flags else "nearest")
    assert metrics["pretrain_steps"] == (0 if "--pretrain-steps" in flags else 2)
    assert metrics["noise_channels"] == (1 if "--noise-channels" in flags else 0)
    for picture in ("pairs.png", "translations.png", "losses.png", "l1.png", "d_outputs.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_pix2pix_demo_rejects_an_unknown_task(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        import_demo("pix2pix_digits").main(["--out", str(tmp_path), "--task", "edges2handbags"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--task" in error and "edges2handbags" in error
    for task in ("edges2digits", "grey2colour", "lowres2highres", "masked2full"):
        assert task in error
    assert not (tmp_path / "metrics.json").exists()


def test_cyclegan_demo_quick(tmp_path):
    metrics = run_demo("cyclegan_digits", tmp_path, "--quick")
    assert CYCLEGAN_KEYS <= set(metrics)
    assert {"cycle_l1_noisy", "background_a2b", "background_b2a"} <= set(metrics)  # the pitfalls' signs
    for picture in ("domains.png", "translations.png", "losses.png", "cycle.png", "d_scores.png"):
        assert (tmp_path / picture).stat().st_size > 0


# ----------------------------------------------------------------------- demo targets
@pytest.mark.slow
def test_pix2pix_edges2digits_reaches_its_targets(tmp_path):
    metrics = run_demo("pix2pix_digits", tmp_path)
    assert metrics["classifier_accuracy_on_real_test"] > 0.97  # the judge itself is reliable
    assert metrics["digit_accuracy"] >= 0.95
    assert metrics["l1"] < 0.05
    # the adversarial term brings the outputs' edge strength closer to the targets' than L1 alone
    assert abs(metrics["sharpness_gan"] - 1.0) < abs(metrics["sharpness_l1_only"] - 1.0)


@pytest.mark.slow
def test_pix2pix_grey2colour_paints_the_class_hue(tmp_path):
    metrics = run_demo("pix2pix_digits", tmp_path, "--task", "grey2colour")
    assert metrics["hue_accuracy"] >= 0.90
    assert metrics["digit_accuracy"] >= 0.95


@pytest.mark.slow
def test_cyclegan_keeps_the_digit_and_changes_the_stroke(tmp_path):
    metrics = run_demo("cyclegan_digits", tmp_path)
    assert metrics["domain_classifier_accuracy_on_real_test"] > 0.97
    for key in CYCLEGAN_KEYS - {"cycle_l1"}:
        assert metrics[key] >= 0.90, key
    assert metrics["cycle_l1"] < 0.05
    assert metrics["background_a2b"] < 0.25 and metrics["background_b2a"] < 0.25  # no colour inversion (≈ 0.9)
