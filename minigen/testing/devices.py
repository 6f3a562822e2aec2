"""Which devices the test suite runs on: the CPU, the stand-in GPU, and CUDA if present."""

from __future__ import annotations

from typing import Any

import numpy as np

from minigen import backend
from minigen.tensor import Tensor


def available_devices() -> list[str]:
    """``["cpu", "standin"]``, plus ``"cuda"`` when CuPy sees a GPU."""
    devices = ["cpu", "standin"]
    if backend.cuda_is_available():
        devices.append("cuda")
    return devices


def to_device_like(array: np.ndarray, device: Any, requires_grad: bool = False) -> Tensor:
    """A tensor on ``device`` holding a copy of the host array (dtype kept)."""
    return Tensor(np.array(array), device=device, requires_grad=requires_grad)
