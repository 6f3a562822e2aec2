"""The fully connected layer: y = x Wᵀ + b, with W of shape (out_features, in_features).

It is a composition of differentiable ops, so its backward is the matmul's:
∂L/∂x = G W,  ∂L/∂W = Gᵀ x,  ∂L/∂b = Σ_rows G.
Inputs with several leading dimensions (batch, time, ...) are flattened to one matrix
first, so that forward and backward are each a single large matrix product instead of
one per batch element (and ∂L/∂W needs no sum over a broadcast batch axis).
"""

from __future__ import annotations

from minigen.tensor import Tensor


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x Wᵀ + b for x (..., in), W (out, in), b (out,)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input shape {tuple(input.shape)} does not end in in_features={weight.shape[1]} "
            f"of weight shape {tuple(weight.shape)} (weight is (out_features, in_features))"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"linear: bias shape {tuple(bias.shape)} does not match out_features={weight.shape[0]} "
            f"of weight shape {tuple(weight.shape)}"
        )
    lead = input.shape[:-1]
    x = input.reshape(-1, weight.shape[1]) if input.ndim > 2 else input
    y = x @ weight.mT
    if bias is not None:
        y = y + bias
    return y.reshape(lead + (weight.shape[0],)) if input.ndim > 2 else y
