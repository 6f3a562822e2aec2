"""The LeNet CNN: shapes, overfitting one batch, and the demo's quality target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.models.cnn import LeNet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demos"))


def test_lenet_output_shape_and_bad_size():
    model = LeNet(image_size=16)
    assert model(mg.randn(3, 1, 16, 16)).shape == (3, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        LeNet(image_size=10)


def test_lenet_overfits_one_batch(device):
    mg.manual_seed(0)
    model = LeNet(image_size=8, widths=(4, 8)).to(device)
    x = mg.randn(16, 1, 8, 8, device=device)
    y = mg.tensor(np.arange(16) % 10, device=device)
    optimizer = mg.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


def test_demo_quick_smoke_and_checkpoint_round_trip(tmp_path):
    import cnn_digits

    ckpt = tmp_path / "ckpt.npz"
    trained = cnn_digits.main(["--quick", "--out", str(tmp_path / "a"), "--save", str(ckpt), "--size", "8"])
    reloaded = cnn_digits.main(["--quick", "--out", str(tmp_path / "b"), "--load", str(ckpt), "--size", "8"])
    assert reloaded["test_accuracy"] == trained["test_accuracy"]
    for picture in ("loss_curve.png", "confusion_matrix.png", "filters.png"):
        assert (tmp_path / "a" / picture).stat().st_size > 1000
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["test_accuracy"] == trained["test_accuracy"]


@pytest.mark.slow
def test_demo_reaches_97_percent(tmp_path):
    import cnn_digits

    metrics = cnn_digits.main(["--out", str(tmp_path)])
    assert metrics["test_accuracy"] >= 0.97, metrics
