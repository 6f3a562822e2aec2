"""Scaled dot-product attention, composed visibly from the lecture's steps:

    Attention(Q, K, V) = softmax( Q Kᵀ / √d_k + M ) V

* Q (..., T_q, d_k): one query per output position,
* K (..., T_k, d_k), V (..., T_k, d_v): one key and one value per input position,
* S = Q Kᵀ / √d_k (..., T_q, T_k): how well query i matches key j. Dividing by √d_k
  keeps the scores' variance near 1 when q and k have unit-variance entries, so the
  softmax does not saturate as d_k grows,
* M: the mask, added to the scores. M_ij = 0 where query i may attend to key j and −∞
  where it may not, so e^(S_ij + M_ij) = 0 there. The causal mask of a decoder is −∞
  above the diagonal (j > i): position i sees only positions ≤ i,
* A = softmax(S + M) row by row: the attention weights, each row a distribution over keys,
* output = A V: for each query, the weighted average of the values.

Every step is an ordinary differentiable op (matmul, multiply, add, softmax, matmul), so
the backward pass, and the second derivative, come from those ops: nothing special is
needed here. Leading dimensions (batch, heads) broadcast as in ``matmul``.
"""

from __future__ import annotations

import math
from typing import Any

from minigen import backend
from minigen.ops.activation import softmax
from minigen.ops.dropout import dropout
from minigen.ops.elementwise import where
from minigen.tensor import Tensor


def causal_mask(t_q: int, t_k: int, xp: Any) -> Any:
    """The boolean causal mask (T_q, T_k): True where query i may attend to key j, i.e. j ≤ i.

    As in PyTorch, the mask is aligned top-left when T_q ≠ T_k (query i sees keys 0 .. i).
    """
    return xp.tril(xp.ones((t_q, t_k), dtype=bool))


def additive_mask(attn_mask: Any, is_causal: bool, t_q: int, t_k: int, dtype: Any, device: Any) -> Tensor | None:
    """Turn the masks into the additive M of the formula: 0 where allowed, −∞ where not.

    ``attn_mask`` may be boolean (True = may attend, PyTorch's ``scaled_dot_product_attention``
    convention) or a float tensor that is added as it is (it may carry gradient, e.g. a
    learned bias). ``is_causal`` adds the causal mask on top.
    """
    xp = backend.xp_for(device)
    bias = None
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            attn_mask = Tensor(attn_mask)
        if attn_mask.device != device:  # a mask built on the host follows the data
            attn_mask = attn_mask.to(device)
        if attn_mask.dtype.kind == "b":
            bias = Tensor(xp.where(attn_mask.data, 0.0, -math.inf).astype(dtype))
        else:
            bias = attn_mask if attn_mask.dtype == dtype else attn_mask.to(dtype)
    if is_causal:
        causal = Tensor(xp.where(causal_mask(t_q, t_k, xp), 0.0, -math.inf).astype(dtype))
        bias = causal if bias is None else bias + causal
    return bias


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, E) -> (B, h, T, E/h): head j gets features j·d_k … (j + 1)·d_k − 1, d_k = E/h.

    Multi-head attention runs h attentions side by side on these slices; stacking them
    on a head axis lets one batched matmul compute all of them at once.
    """
    batch, length, width = x.shape
    if width % num_heads:
        raise ValueError(f"split_heads: the width {width} of x {tuple(x.shape)} is not divisible by {num_heads} heads")
    return x.reshape(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, T, d_k) -> (B, T, h·d_k): Concat(head_1, …, head_h), the inverse of ``split_heads``."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k + M) V  (PyTorch's ``F.scaled_dot_product_attention``).

    query (..., T_q, d_k), key (..., T_k, d_k), value (..., T_k, d_v) -> (..., T_q, d_v).

    * ``attn_mask``: boolean (True = may attend) or additive float, broadcastable to
      (..., T_q, T_k), e.g. (T_q, T_k) for all heads or (B, 1, 1, T_k) for key padding.
    * ``is_causal``: also forbid attending to later positions (j > i).
    * ``dropout_p``: drop attention weights with this probability (applied whenever > 0,
      as in PyTorch; modules pass 0 in eval mode).
    * ``scale``: the factor on the scores; 1/√d_k by default.
    * ``return_weights``: also return the attention weights A (..., T_q, T_k), e.g. to draw them.

    A query whose keys are all masked has no distribution to attend with; its output
    (and its row of A) is 0, never NaN.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"scaled_dot_product_attention: queries and keys need the same d_k, got query "
            f"{tuple(query.shape)} and key {tuple(key.shape)}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"scaled_dot_product_attention: keys and values need the same length T_k, got key "
            f"{tuple(key.shape)} and value {tuple(value.shape)}"
        )
    xp = query.xp
    t_q, t_k = query.shape[-2], key.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])

    # S = Q Kᵀ / √d_k. Scaling Q before the product gives the same S and costs
    # T_q·d_k multiplications instead of T_q·T_k.
    scores = (query * scale) @ key.transpose(-2, -1)

    # S + M: −∞ where a query may not look.
    bias = additive_mask(attn_mask, is_causal, t_q, t_k, scores.dtype, query.device)
    dead_rows = None
    if bias is not None:
        scores = scores + bias
        if attn_mask is not None:  # a causal mask alone always leaves key 0 visible
            # A row that is −∞ everywhere would give softmax 0/0 = NaN. Give such rows
            # finite scores (a harmless uniform softmax) and zero their weights below.
            dead_rows = Tensor(xp.isneginf(bias.data).all(axis=-1, keepdims=True))
            scores = where(dead_rows, 0.0, scores)

    # A = softmax(S + M) over the keys (the fused softmax: one pass forward, one backward).
    weights = softmax(scores, dim=-1)
    if dead_rows is not None:
        weights = where(dead_rows, 0.0, weights)

    if dropout_p > 0.0:
        weights = dropout(weights, p=dropout_p, training=True)

    # output = A V
    output = weights @ value
    return (output, weights) if return_weights else output
