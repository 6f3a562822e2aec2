"""Random weights and inputs for the model tests.

A freshly built model hides parts of its graph: zero-initialised output layers (U-Net,
spatial transformers) give zero gradients upstream. Tests that check shapes, gradients or
devices therefore fill every parameter with random numbers first.
"""

from __future__ import annotations

import numpy as np

import minigen as mg
import minigen.nn as nn


def randomised_parameters(model: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Every parameter of ``model`` drawn from N(0, scale²), in place; returns the model."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, scale, p.shape).astype(p.dtype)
    return model


def normal_f64(*shape: int, seed: int = 0) -> mg.Tensor:
    """A float64 tensor of standard normal numbers, for gradchecks."""
    return mg.tensor(np.random.default_rng(seed).normal(size=shape), dtype=mg.float64)
