"""The GAN and VAE demos reach their targets (slow: each trains a model for minutes).

Run with ``pytest -m slow tests/test_demos_gan_vae.py``. The fast ``--quick`` smoke
tests only check that a demo runs end to end and writes its pictures.
"""

from __future__ import annotations

import pytest
from demo_runner import run_demo


# ------------------------------------------------------------------------- smoke tests
def test_vae_demo_quick(tmp_path, capsys):
    metrics = run_demo("vae_digits", tmp_path, "--quick", "--latent-dim", "2")
    said = capsys.readouterr().out
    assert "rendering 2000 training and 1000 test digits ..." in said and "done in" in said  # no silent phase
    for picture in ("reconstructions", "samples", "interpolation", "attribute", "latent_map", "latent_scatter", "elbo"):
        assert (tmp_path / f"{picture}.png").stat().st_size > 0
    assert metrics["neg_elbo_last_epoch"] < metrics["neg_elbo_first_epoch"]


def test_gan_toy2d_demo_quick(tmp_path):
    run_demo("gan_toy2d", tmp_path, "--quick")
    for picture in ("progress.png", "progress.gif", "samples.png", "decision_surface.png", "losses.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_dcgan_demo_quick(tmp_path):
    metrics = run_demo("dcgan_digits", tmp_path, "--quick")
    for picture in ("samples.png", "progress.gif", "losses.png", "d_outputs.png"):
        assert (tmp_path / picture).stat().st_size > 0
    assert len(metrics["conditional_accuracy_per_class"]) == 10
    from PIL import Image

    with Image.open(tmp_path / "samples.png") as samples, Image.open(tmp_path / "progress.gif") as gif:
        assert gif.size == samples.size  # the GIF's frames are enlarged and labelled like the PNG
        assert gif.width > 10 * 64  # ten 16-pixel digits per row, each drawn at least 64 pixels wide


# ----------------------------------------------------------------------- demo targets
@pytest.mark.slow
def test_gan_toy2d_covers_the_modes(tmp_path):
    metrics = run_demo("gan_toy2d", tmp_path)
    assert metrics["modes_covered"] >= 7  # modes holding at least 1/3 of their share of samples
    assert metrics["energy_distance"] < 0.04


@pytest.mark.slow
def test_dcgan_draws_the_requested_digit(tmp_path):
    metrics = run_demo("dcgan_digits", tmp_path)
    assert metrics["classifier_accuracy_on_real_test"] > 0.95  # the judge itself is reliable
    assert metrics["conditional_accuracy"] >= 0.85
    for picture in ("samples.png", "progress.gif", "losses.png", "d_outputs.png"):
        assert (tmp_path / picture).stat().st_size > 0


@pytest.mark.slow
def test_vae_learns_digits(tmp_path):
    metrics = run_demo("vae_digits", tmp_path)
    assert metrics["neg_elbo_drop"] > 0.5  # −ELBO falls by more than half from the first epoch to the last
    assert 1.0 < metrics["kl_per_sample"] < 30.0
    assert metrics["interpolation_endpoint_error"] < 1e-3  # the strip starts and ends at the reconstructions
    ink = list(metrics["ink_by_attribute_factor"].values())
    assert all(a < b for a, b in zip(ink, ink[1:]))  # adding v_thick thickens the strokes
