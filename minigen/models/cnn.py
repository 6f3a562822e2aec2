"""A LeNet-style CNN: the lecture's first convolutional network.

    x (N, C, H, W)
    -> conv 5×5 (pad 2) -> ReLU -> max-pool 2×2      (N, c1, H/2, W/2)
    -> conv 5×5 (pad 2) -> ReLU -> max-pool 2×2      (N, c2, H/4, W/4)
    -> flatten -> linear -> ReLU -> linear            (N, classes) logits

Padding 2 keeps each 5×5 convolution "same"-sized, so the network works for any image
size divisible by 4 (the 8×8, 16×16 and 28×28 rendered digits). Training is ordinary
cross-entropy on the logits; ``fit_classifier`` and ``predict`` are the loops the demos
and the generative models' quality checks share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.data import DataLoader


class LeNet(nn.Module):
    """Two conv/ReLU/pool stages and a two-layer classifier head."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, widths: tuple[int, int] = (16, 32)
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"LeNet: image_size must be divisible by 4 (two 2×2 poolings), got {image_size}")
        c1, c2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (image_size // 4) ** 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: mg.Tensor) -> mg.Tensor:
        return self.classifier(self.features(x))


def classifier_step(model: nn.Module, optimizer: Any, x: mg.Tensor, y: mg.Tensor) -> mg.Tensor:
    """One training step on a batch: cross-entropy, backward, optimiser step.

    Returns the detached loss, still on the device: reading it (``.item()``) would make
    the host wait for the GPU every step.
    """
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def fit_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    on_step: Callable[[int, mg.Tensor], Any] | None = None,
) -> list[float]:
    """Train ``model`` with Adam on cross-entropy; returns the loss of every step.

    The losses are copied to the host once per epoch, in one transfer (for the progress
    bar and the returned curve), so a GPU step stays free of host syncs.
    """
    model.to(device).train()
    optimizer = mg.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader((images, labels), batch_size=batch_size, shuffle=True, drop_last=True, seed=seed, device=device)
    losses: list[float] = []
    bar = tqdm(total=epochs * len(loader), desc="train classifier", disable=not progress, leave=False)
    step = 0
    for _ in range(epochs):
        epoch_losses = []
        for x, y in loader:
            loss = classifier_step(model, optimizer, x, y)
            epoch_losses.append(loss)
            if on_step is not None:
                on_step(step, loss)
            step += 1
            bar.update(1)
        if epoch_losses:
            losses += mg.stack(epoch_losses).numpy().tolist()  # the epoch's one host sync
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Class predictions (host int64 array) for a batch of images."""
    model.to(device).eval()
    predictions = []
    with mg.no_grad():
        for start in range(0, len(images), batch_size):
            x = mg.tensor(images[start : start + batch_size], device=device)
            predictions.append(model(x).argmax(dim=1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: str = "cpu") -> float:
    """Fraction of images classified correctly."""
    return float((predict(model, images, device=device) == labels).mean())
