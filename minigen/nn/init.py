"""Weight initialisation (PyTorch's ``torch.nn.init`` names and formulas).

Every function fills a tensor in place and returns it. The random numbers are drawn on
the host, from the seeded NumPy generator ``backend.generator("cpu")`` (seeded by
``mg.manual_seed``), and then copied to the tensor's device. So a model built on the
CPU and one built on the GPU start from identical weights.

Why the scales: for a layer y = W x with n_in inputs of unit variance and independent
weights of variance σ², Var[y_j] = n_in σ². Keeping activations from growing or
shrinking through depth asks for σ² = 1/n_in (LeCun), σ² = 2/(n_in + n_out) as a
compromise with the backward pass (Glorot/Xavier), and σ² = 2/n_in when a ReLU halves
the second moment (He/Kaiming). ``gain`` carries the nonlinearity's factor.
"""

from __future__ import annotations

import math
from typing import Any

from minigen import backend
from minigen.tensor import Tensor


def _fill(tensor: Tensor, host_values: Any) -> Tensor:
    """Write host values into ``tensor`` in place, on its device and in its dtype."""
    values = backend.to_device(host_values.astype(tensor.dtype), tensor.device)
    tensor.data[...] = values
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor by which ``nonlinearity`` scales the standard deviation to keep.

    linear / conv / sigmoid: 1; tanh: 5/3; relu: √2; leaky_relu: √(2 / (1 + a²))
    with slope a (0.01 by default); selu: 3/4.
    """
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {slope!r} is not a number")
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel).

    fan_in = in · ∏kernel (the inputs that feed one output), fan_out = out · ∏kernel.
    """
    if tensor.ndim < 2:
        raise ValueError(
            "fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions "
            f"(shape {tuple(tensor.shape)})"
        )
    receptive_field = 1
    for s in tensor.shape[2:]:
        receptive_field *= s
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with samples of U(a, b)."""
    return _fill(tensor, backend.generator("cpu").uniform(a, b, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with samples of N(mean, std²)."""
    return _fill(tensor, backend.generator("cpu").normal(mean, std, size=tensor.shape))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
    """Fill with N(mean, std²) samples restricted to [a, b] (values outside are redrawn)."""
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    gen = backend.generator("cpu")
    values = gen.normal(mean, std, size=tensor.shape)
    outside = (values < a) | (values > b)
    while outside.any():  # rejection sampling: each round redraws only the rejected values
        values[outside] = gen.normal(mean, std, size=int(outside.sum()))
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with the value ``val``."""
    tensor.data[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: U(−b, b) with b = gain · √(6 / (fan_in + fan_out)), so Var = gain² · 2/(fan_in + fan_out)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot: N(0, σ²) with σ = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """He: U(−b, b) with b = gain · √(3 / fan), so the standard deviation is gain / √fan.

    With PyTorch's layer default ``a=√5`` the gain is √(2/(1+5)) = √(1/3), so
    b = 1/√fan_in.
    """
    if tensor.numel() == 0:  # nothing to fill, and fan 0 would divide by zero (PyTorch: a no-op too)
        return tensor
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """He: N(0, σ²) with σ = gain / √fan (σ = √(2/fan_in) for ReLU)."""
    if tensor.numel() == 0:  # nothing to fill, and fan 0 would divide by zero (PyTorch: a no-op too)
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std)


def default_layer_init_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default for Linear and Conv layers.

    weight ~ U(−1/√fan_in, 1/√fan_in) via ``kaiming_uniform_(a=√5)``, and
    bias ~ U(−1/√fan_in, 1/√fan_in), with fan_in computed from the weight.
    """
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
