"""Normalisation layers: layer norm, group norm and batch norm.

All three standardise x over some axes and then apply a per-feature affine map:

    x̂ = (x − μ) / σ,   σ = √(Var[x] + ε),   y = γ ⊙ x̂ + β,

with μ and the (biased) variance taken over the axes that the layer normalises:

* layer norm: the trailing ``normalized_shape`` axes of each sample;
* group norm: each group of C/G channels (and all spatial positions) of each sample;
* batch norm: the batch and spatial axes, per channel (in training; in evaluation it
  uses running estimates instead).

The standardisation is one fused ``Function`` (``Standardize``) with the compact backward

    ∂L/∂x = (1/σ) (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))     (means over the normalised axes),

which is what the chain rule through μ and σ simplifies to. The affine part is an
ordinary product and sum, whose backward gives ∂L/∂γ = Σ g ⊙ x̂ and ∂L/∂β = Σ g.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from minigen.autograd import Function, is_grad_enabled, no_grad
from minigen.tensor import Tensor


class Standardize(Function):
    """x̂ = (x − μ)/σ over ``dims``, σ = √(σ² + ε) (biased variance);
    ∂L/∂x = (1/σ)(g − mean(g) − x̂ ⊙ mean(g ⊙ x̂)).

    ``mean`` and ``var`` may be passed in when the caller has computed them already
    (batch norm needs them for its running statistics).
    """

    __slots__ = ("dims", "eps")

    def forward(self, x: Tensor, dims: tuple[int, ...], eps: float, mean: Any = None, var: Any = None):
        if x.dtype.kind != "f":
            raise TypeError(f"normalization: needs a floating-point tensor, got dtype {x.dtype}")
        xp = x.xp
        self.dims, self.eps = dims, eps
        if mean is None:
            mean = x.data.mean(axis=dims, keepdims=True)
        xhat = x.data - mean
        if var is None:  # Var = mean((x − μ)²): two passes, no cancellation as in E[x²] − μ²
            var = (xhat * xhat).mean(axis=dims, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        xhat *= rstd
        self.saved = (x, rstd, xhat)
        return xhat

    def backward(self, grad: Tensor):
        x, rstd, xhat = self.saved
        dims = self.dims
        xhat = self.output_tensor(xhat)
        if is_grad_enabled():  # create_graph: 1/σ must be a differentiable function of x
            centred = x - x.mean(dim=dims, keepdim=True)
            inv_std = ((centred * centred).mean(dim=dims, keepdim=True) + self.eps).rsqrt()
        else:
            inv_std = Tensor(rstd)
        mean_g = grad.mean(dim=dims, keepdim=True)
        mean_g_xhat = (grad * xhat).mean(dim=dims, keepdim=True)
        return inv_std * (grad - mean_g - xhat * mean_g_xhat)


def moments(data: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
    """Mean and biased variance of an array over ``dims`` (kept as size-1 axes).

    Two passes, Var = mean((x − μ)²), which unlike E[x²] − μ² does not cancel badly.
    """
    mean = data.mean(axis=dims, keepdims=True)
    centred = data - mean
    centred *= centred
    return mean, centred.mean(axis=dims, keepdims=True)


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    """y = γ ⊙ x + β with γ, β reshaped to ``shape`` for broadcasting."""
    if weight is not None:
        x = x * weight.reshape(shape)
    if bias is not None:
        x = x + bias.reshape(shape)
    return x


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
    return _affine(Standardize.apply(input, dims=dims, eps=eps), weight, bias, shape)


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
    grouped = input.reshape(n, num_groups, -1)
    x_hat = Standardize.apply(grouped, dims=(2,), eps=eps).reshape(input.shape)
    return _affine(x_hat, weight, bias, (1, channels) + (1,) * (input.ndim - 2))


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
        scale = (running_var.detach() + eps).rsqrt()
        x_hat = (input - running_mean.detach().reshape(param_shape)) * scale.reshape(param_shape)
        return _affine(x_hat, weight, bias, param_shape)

    dims = (0,) + tuple(range(2, input.ndim))
    count = input.numel() // channels
    if count <= 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input shape {tuple(input.shape)}"
        )
    mean, var = moments(input.data, dims)
    if running_mean is not None or running_var is not None:
        with no_grad():  # the running estimates are buffers, not part of the graph
            if running_mean is not None:
                running_mean.data *= 1.0 - momentum
                running_mean.data += momentum * mean.reshape(channels)
            if running_var is not None:
                running_var.data *= 1.0 - momentum
                running_var.data += (momentum * count / (count - 1)) * var.reshape(channels)
    x_hat = Standardize.apply(input, dims=dims, eps=eps, mean=mean, var=var)
    return _affine(x_hat, weight, bias, param_shape)
