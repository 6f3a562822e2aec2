"""Inverted dropout: y = x ⊙ m / (1 − p), with m a random 0/1 mask that keeps each
element with probability 1 − p.

Scaling by 1/(1 − p) during training keeps E[y] = x, so evaluation needs no rescaling:
at eval time dropout is the identity. The backward is ∂L/∂x = g ⊙ m / (1 − p), the same
mask (it is a product with a constant).

The mask comes from the seeded generator of x's device (``minigen.manual_seed``), or is
passed explicitly with ``mask=`` so that checks can be deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigen import backend
from minigen.tensor import Tensor


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, mask: Any = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1 − p).

    ``mask`` (optional, minigen-only): a bool or 0/1 tensor, broadcastable to the input,
    that says which elements are kept; it replaces the random draw. ``inplace`` is
    accepted for PyTorch code; the result is always a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or (p == 0.0 and mask is None):
        return input
    if input.dtype.kind != "f":
        raise TypeError(f"dropout: needs a floating-point tensor, got dtype {input.dtype} (shape {tuple(input.shape)})")
    if mask is None:
        draw_dtype = input.dtype if input.dtype.itemsize >= 4 else "float32"  # generators draw float32/64
        keep = backend.random_uniform(input.shape, draw_dtype, input.device) >= p  # P(keep) = 1 − p
    else:
        mask = mask if isinstance(mask, Tensor) else Tensor(mask)
        if mask.device != input.device:
            raise RuntimeError(
                f"dropout: mask is on {mask.device} but the input is on {input.device}; move it with .to(device)"
            )
        try:
            fits = np.broadcast_shapes(tuple(mask.shape), tuple(input.shape)) == tuple(input.shape)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"dropout: mask shape {tuple(mask.shape)} does not broadcast to input shape {tuple(input.shape)}"
            )
        keep = mask.data != 0
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0  # p = 1 drops everything, as in PyTorch
    scaled_mask = keep.astype(input.dtype)
    scaled_mask *= scale
    return input * Tensor(scaled_mask)
