"""Normalisation layers: layer norm, group norm and batch norm.

All three standardise x over some axes and then apply a per-feature affine map:

    x̂ = (x − μ) / σ,   σ = √(Var[x] + ε),   y = γ ⊙ x̂ + β,

with μ and the (biased) variance taken over the axes that the layer normalises:

* layer norm: the trailing ``normalized_shape`` axes of each sample;
* group norm: each group of C/G channels (and all spatial positions) of each sample;
* batch norm: the batch and spatial axes, per channel (in training; in evaluation it
  uses running estimates instead).

One fused ``Function``, ``Normalize``, does the standardisation and the affine map. Its
backward is what the chain rule through μ and σ simplifies to: with g_γ = g ⊙ γ,

    ∂L/∂x = (1/σ) (g_γ − mean(g_γ) − x̂ ⊙ mean(g_γ ⊙ x̂))     (means over the normalised axes),
    ∂L/∂γ = Σ g ⊙ x̂,   ∂L/∂β = Σ g                           (sums over the other axes).

float16 inputs are normalised in float32 and the result rounded back, as PyTorch does:
the variance of half-precision values overflows (float16 ends at 65504) as soon as
|x − μ| passes 256, and 1/√∞ would turn every output into 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minigen import kernels
from minigen.autograd import Function, no_grad
from minigen.tensor import Tensor


class Normalize(Function):
    """y = γ ⊙ (x − μ)/σ + β with μ, σ² = Var[x] (biased) over ``dims``, σ = √(σ² + ε).

    Inputs: x, then γ and β when present (``affine`` says which: "", "w", "b" or "wb"),
    stored in ``param_shape``, which broadcasts against x. ``mean`` and ``var`` may be
    passed in when the caller has computed them already (batch norm needs them for its
    running statistics).

    The backward is the formula in minigen ops, with x̂ and 1/σ recomputed from x so that
    they are differentiable too (``create_graph=True``). When no graph is being recorded,
    the common case, one line hands over to the same formula on the arrays the forward
    saved, in place, which is about twice as fast (``kernels/normalization.py``). On CUDA,
    with ``minigen.fused`` switched on, the forward and that fast backward run as fused
    kernels instead, and the array code is their reference.
    """

    __slots__ = ("dims", "eps", "param_shape", "affine")

    def forward(
        self,
        x: Tensor,
        *params: Tensor,
        dims: tuple[int, ...],
        eps: float,
        param_shape: tuple[int, ...] = (),
        affine: str = "",
        mean: Any = None,
        var: Any = None,
    ):
        if x.dtype.kind != "f":
            raise TypeError(f"normalization: needs a floating-point tensor, got dtype {x.dtype}")
        self.dims, self.eps, self.param_shape, self.affine = dims, eps, param_shape, affine
        weight, bias = (None if p is None else p.data.reshape(param_shape) for p in self.weight_bias(params))
        # x̂ = (x − μ)/σ and y = γ ⊙ x̂ + β on raw arrays, in few passes (kernels/normalization.py)
        xhat, y, rstd = kernels.normalize_forward(x.data, dims, eps, weight, bias, mean=mean, var=var)
        self.saved = (x, params, xhat, rstd)
        return y

    def weight_bias(self, params: tuple) -> tuple[Any, Any]:
        weight = params[0] if "w" in self.affine else None
        bias = params[-1] if "b" in self.affine else None
        return weight, bias

    def param_axes(self, ndim: int) -> tuple[int, ...]:
        """The axes that γ and β are broadcast over (their gradients sum over these)."""
        full = (1,) * (ndim - len(self.param_shape)) + tuple(self.param_shape)
        return tuple(i for i, size in enumerate(full) if size == 1)

    def backward(self, grad: Tensor):
        if kernels.fast_path():  # the same formula from the saved x̂ and 1/σ, in place (kernels/normalization.py)
            return kernels.normalize_backward(self, grad)
        x, params, _, _ = self.saved
        weight, bias = self.weight_bias(params)
        axes = self.param_axes(x.ndim)
        dims = self.dims
        centred = x - x.mean(dim=dims, keepdim=True)
        inv_std = ((centred * centred).mean(dim=dims, keepdim=True) + self.eps).rsqrt()
        xhat = centred * inv_std
        g_w = grad * weight.reshape(self.param_shape) if weight is not None else grad
        dx = inv_std * (g_w - g_w.mean(dim=dims, keepdim=True) - xhat * (g_w * xhat).mean(dim=dims, keepdim=True))
        grads = [dx]
        if weight is not None:
            grads.append((grad * xhat).sum(dim=axes).reshape(weight.shape))
        if bias is not None:
            grads.append(grad.sum(dim=axes).reshape(bias.shape))
        return tuple(grads)


def normalize(
    x: Tensor,
    dims: tuple[int, ...],
    eps: float,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    param_shape: tuple[int, ...] = (),
    **stats: Any,
) -> Tensor:
    """``Normalize`` with optional γ and β; float16 inputs are normalised in float32."""
    if x.dtype == np.float16:  # statistics in float32, as PyTorch: see the module docstring
        x32, weight32, bias32 = (None if t is None else t.to(np.float32) for t in (x, weight, bias))
        stats32 = {name: array.astype(np.float32) for name, array in stats.items() if array is not None}
        return normalize(x32, dims, eps, weight32, bias32, param_shape, **stats32).to(np.float16)
    params = tuple(p for p in (weight, bias) if p is not None)
    affine = ("w" if weight is not None else "") + ("b" if bias is not None else "")
    return Normalize.apply(x, *params, dims=dims, eps=eps, param_shape=param_shape, affine=affine, **stats)


def moments(data: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
    """Mean and biased variance of an array over ``dims`` (kept as size-1 axes).

    Two passes, Var = mean((x − μ)²), which unlike E[x²] − μ² does not cancel badly.
    """
    mean = data.mean(axis=dims, keepdims=True)
    centred = data - mean
    centred *= centred
    return mean, centred.mean(axis=dims, keepdims=True)


def _check_param(op: str, name: str, param: Tensor | None, expected: tuple[int, ...], x: Tensor) -> None:
    if param is None:
        return
    if tuple(param.shape) != expected:
        raise ValueError(
            f"{op}: {name} has shape {tuple(param.shape)}, expected {expected} for input shape {tuple(x.shape)}"
        )
    if param.device != x.device:
        raise RuntimeError(
            f"{op}: {name} is on {param.device} but the input is on {x.device}; move it with .to(device)"
        )


# --------------------------------------------------------------------------- layer norm
def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Standardise each sample over its trailing ``normalized_shape`` axes, then y = γ ⊙ x̂ + β."""
    shape = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k :]) != shape:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} must match the trailing dimensions of the input, "
            f"got input shape {tuple(input.shape)}"
        )
    _check_param("layer_norm", "weight", weight, shape, input)
    _check_param("layer_norm", "bias", bias, shape, input)
    dims = tuple(range(input.ndim - k, input.ndim))
    return normalize(input, dims, eps, weight, bias, param_shape=shape)


# --------------------------------------------------------------------------- group norm
def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Split the C channels of x (N, C, *) into ``num_groups`` groups and standardise each
    group of each sample (over its channels and positions); then a per-channel affine map."""
    if input.ndim < 2:
        raise ValueError(f"group_norm: expected input of shape (N, C, *), got {tuple(input.shape)}")
    n, channels = input.shape[:2]
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(
            f"group_norm: num_groups={num_groups} must divide the number of channels {channels} "
            f"(input shape {tuple(input.shape)})"
        )
    _check_param("group_norm", "weight", weight, (channels,), input)
    _check_param("group_norm", "bias", bias, (channels,), input)
    # (N, G, C/G, positions): each group is normalised over its channels and positions,
    # and γ, β (one per channel) are laid out as (G, C/G) to match.
    grouped = input.reshape(n, num_groups, channels // num_groups, -1)
    param_shape = (1, num_groups, channels // num_groups, 1)
    return normalize(grouped, (2, 3), eps, weight, bias, param_shape=param_shape).reshape(input.shape)


# --------------------------------------------------------------------------- batch norm
def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation of x (N, C, *) per channel.

    Training: standardise with the batch's own mean and (biased) variance over N and the
    spatial axes, and update the running estimates in place,
    r ← (1 − momentum)·r + momentum·batch statistic, using the unbiased variance
    (n/(n − 1) times the biased one) for ``running_var``, as PyTorch does.
    Evaluation: y = γ (x − r_μ)/√(r_σ² + ε) + β with the running estimates.
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, *), got {tuple(input.shape)}")
    channels = input.shape[1]
    param_shape = (1, channels) + (1,) * (input.ndim - 2)
    _check_param("batch_norm", "weight", weight, (channels,), input)
    _check_param("batch_norm", "bias", bias, (channels,), input)
    _check_param("batch_norm", "running_mean", running_mean, (channels,), input)
    _check_param("batch_norm", "running_var", running_var, (channels,), input)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are required when training=False")
        # y = γ(x − r_μ)/√(r_σ² + ε) + β = x·s + (β − r_μ·s) with s = γ/√(r_σ² + ε): the
        # per-channel factors are folded first, so the full-size tensor is touched twice.
        scale = (running_var.detach() + eps).rsqrt()
        if weight is not None:
            scale = scale * weight
        shift = -running_mean.detach() * scale
        if bias is not None:
            shift = shift + bias
        return input * scale.reshape(param_shape) + shift.reshape(param_shape)

    dims = (0,) + tuple(range(2, input.ndim))
    count = input.numel() // channels
    if count <= 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input shape {tuple(input.shape)}"
        )
    data = input.data.astype(np.float32) if input.dtype == np.float16 else input.data  # see the module docstring
    mean, var = moments(data, dims)
    if running_mean is not None or running_var is not None:
        with no_grad():  # the running estimates are buffers, not part of the graph
            if running_mean is not None:
                running_mean.data *= 1.0 - momentum
                running_mean.data += momentum * mean.reshape(channels)
            if running_var is not None:
                running_var.data *= 1.0 - momentum
                running_var.data += (momentum * count / (count - 1)) * var.reshape(channels)
    return normalize(input, dims, eps, weight, bias, param_shape=param_shape, mean=mean, var=var)
