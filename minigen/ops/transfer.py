"""Moving a tensor to another device or dtype, differentiably.

The gradient goes back the way the data came: to the original device, in the
original dtype.
"""

from __future__ import annotations

from typing import Any

from minigen import backend
from minigen.autograd import Function
from minigen.tensor import Tensor


class ToDevice(Function):
    """y = x on another device;  ∂L/∂x = g moved back to x's device."""

    def forward(self, x: Tensor, device: Any):
        self.saved = x.device
        return backend.to_device(x.data, device)

    def backward(self, grad: Tensor):
        return grad.to(self.saved)


class Cast(Function):
    """y = x converted to ``dtype``;  ∂L/∂x = g converted back to x's dtype."""

    def forward(self, x: Tensor, dtype: Any):
        self.saved = x.dtype
        return x.data.astype(dtype)

    def backward(self, grad: Tensor):
        return grad.to(self.saved)
