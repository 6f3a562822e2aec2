"""The transformer demos reach their targets (slow: each trains for minutes).

Run with ``pytest -m slow tests/test_demos_transformers.py``. The fast ``--quick``
smoke tests only check that each demo runs end to end and writes its pictures.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from demo_runner import run_demo


def _pictures(tmp_path: Path, *names: str) -> None:
    for name in names:
        assert (tmp_path / name).stat().st_size > 0, name


# ------------------------------------------------------------------------- smoke tests
def test_vit_demo_quick(tmp_path):
    metrics = run_demo("vit_digits", tmp_path, "--quick")
    _pictures(tmp_path, "attention.png", "position_similarity.png", "loss.png", "accuracy.png")
    assert metrics["test_accuracy"] > 0.1  # better than chance after one short epoch


def test_gpt_sort_demo_quick(tmp_path):
    metrics = run_demo("gpt_sort", tmp_path, "--quick")
    _pictures(tmp_path, "attention.png", "loss.png")
    assert 0.0 <= metrics["test_exact_match"] <= 1.0 and metrics["test_sequences"] == 145


def test_rope_demo_quick(tmp_path):
    metrics = run_demo("rope", tmp_path, "--quick")
    _pictures(
        tmp_path, "scores.png", "relative_decay.png", "extrapolation.png", "extrapolation_by_length.png", "loss.png"
    )
    assert metrics["score_shift_invariance_error"] < 1e-10  # the maths part needs no training


@pytest.mark.slow
def test_gpt_chars_demo_quick(tmp_path):
    metrics = run_demo("gpt_chars", tmp_path, "--quick")
    _pictures(tmp_path, "loss.png", "samples.txt")
    assert math.isfinite(metrics["val_loss"])


@pytest.mark.slow
def test_bert_demo_quick(tmp_path):
    metrics = run_demo("bert_mlm", tmp_path, "--quick")
    _pictures(tmp_path, "attention.png", "loss.png", "finetune_loss.png")
    assert metrics["masked_token_accuracy"] > metrics["unigram_baseline_accuracy"]


# ----------------------------------------------------------------------- demo targets
@pytest.mark.slow
def test_vit_reaches_95_percent(tmp_path):
    metrics = run_demo("vit_digits", tmp_path)
    assert metrics["test_accuracy"] >= 0.95
    # No assertion on the position embeddings: after 6 epochs neighbours are only weakly
    # alike (0.12 against 0.00, spread ±0.3), and the demo no longer claims they are.
    assert -1.0 <= metrics["position_similarity_adjacent"] <= 1.0


@pytest.mark.slow
def test_gpt_sorts_held_out_sequences(tmp_path):
    metrics = run_demo("gpt_sort", tmp_path)
    assert metrics["test_exact_match"] >= 0.99


@pytest.mark.slow
def test_char_gpt_beats_the_unigram_entropy(tmp_path):
    metrics = run_demo("gpt_chars", tmp_path)
    assert metrics["val_loss"] < metrics["unigram_entropy"] - 0.7  # nats per character
    assert "Shall I compare thee" in (tmp_path / "samples.txt").read_text()


@pytest.mark.slow
def test_bert_masked_accuracy_far_above_unigram(tmp_path):
    metrics = run_demo("bert_mlm", tmp_path)
    assert metrics["masked_token_accuracy"] > 3 * metrics["unigram_baseline_accuracy"]
    assert metrics["masked_token_accuracy"] > 0.6
    assert metrics["finetune_accuracy_pretrained"] >= 0.9
    assert metrics["finetune_accuracy_pretrained"] > metrics["finetune_accuracy_scratch"] + 0.2


@pytest.mark.slow
def test_rope_extrapolates_where_learned_positions_fail(tmp_path):
    metrics = run_demo("rope", tmp_path)
    assert metrics["train_length_accuracy_learned"] > 0.95 and metrics["train_length_accuracy_rope"] > 0.95
    assert metrics["long_accuracy_rope"] > 0.9
    assert metrics["long_accuracy_rope"] > metrics["long_accuracy_learned"] + 0.2
