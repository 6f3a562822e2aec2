"""Cross-attention: queries from one sequence, keys and values from another.

Self-attention lets the positions of one sequence look at each other. Cross-attention
lets the positions of x look at a *different* sequence, the context c, which is how a
latent-diffusion U-Net reads a caption (Rombach et al. 2022, the lecture's notation):

    φ_i(z_t) ∈ ℝ^{N×d_ε}     the U-Net's features, flattened to N = H·W tokens   (x here)
    τ_θ(y)   ∈ ℝ^{M×d_τ}     the text encoder's features of the caption's M tokens  (c here)

    Q = φ_i(z_t) W_Qᵀ,   K = τ_θ(y) W_Kᵀ,   V = τ_θ(y) W_Vᵀ          (no biases)
    Attention(Q, K, V) = softmax( Q Kᵀ / √d + M_pad ) V  ∈ ℝ^{N×d}

Every image position i gets a distribution A_i over the caption's tokens j and reads
their values: A_ij says how much pixel i listens to word j (the demo draws these
maps). N and M are unrelated, so A is N×M, not square. The key-padding mask M_pad is
−∞ in the columns of padding tokens, so A_ij = 0 there: a caption padded to a fixed
length means the same as the caption alone, and no gradient reaches its padding.

With h heads the d dimensions are split into h groups that attend independently (as
in ``MultiheadAttention``), and an optional W_O mixes the heads back. Everything is
composed from existing ops: ``linear`` for the projections, ``split_heads`` /
``merge_heads``, and ``scaled_dot_product_attention`` for softmax(QKᵀ/√d + M)V; so the
backward pass (and second derivatives) come from those ops.
"""

from __future__ import annotations

from typing import Any

from minigen.ops.attention import merge_heads, scaled_dot_product_attention, split_heads
from minigen.ops.linear import linear
from minigen.tensor import Tensor


def key_padding_attn_mask(key_padding_mask: Any, batch: int, context_length: int, device: Any) -> Tensor:
    """PyTorch's key_padding_mask (B, M), True = padding to IGNORE, as the boolean mask of
    ``scaled_dot_product_attention`` (True = may attend), shaped (B, 1, 1, M) so the same
    keys are hidden from every head and every query."""
    mask = key_padding_mask if isinstance(key_padding_mask, Tensor) else Tensor(key_padding_mask)
    if mask.dtype.kind != "b":
        raise TypeError(
            f"cross_attention: key_padding_mask must be boolean (True marks a padding token to ignore), "
            f"got dtype {mask.dtype}"
        )
    if tuple(mask.shape) != (batch, context_length):
        raise ValueError(
            f"cross_attention: key_padding_mask must have shape (batch, M) = {(batch, context_length)}, one flag "
            f"per context token, got {tuple(mask.shape)}"
        )
    if mask.device != device:  # a mask built on the host follows the data
        mask = mask.to(device)
    return Tensor(~mask.data).reshape(batch, 1, 1, context_length)


def cross_attention(
    x: Tensor,
    context: Tensor,
    q_weight: Tensor,
    k_weight: Tensor,
    v_weight: Tensor,
    out_weight: Tensor | None = None,
    key_padding_mask: Any = None,
    num_heads: int = 1,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ/√d + M_pad) V  with  Q = x W_Qᵀ,  K = c W_Kᵀ,  V = c W_Vᵀ  (then · W_Oᵀ if given).

    Shapes:

    * ``x`` (B, N, d_x): the queries' source, e.g. an image's H·W positions,
    * ``context`` (B, M, d_c): the keys' and values' source, e.g. a caption's tokens,
    * ``q_weight`` W_Q (d, d_x), ``k_weight`` W_K (d, d_c), ``v_weight`` W_V (d_v, d_c),
    * ``out_weight`` W_O (d_out, d_v) or None,
    * ``key_padding_mask`` (B, M) bool, True marks a context token to ignore (PyTorch's
      ``nn.MultiheadAttention`` convention); every row needs one token that is not padding,
    * ``num_heads`` h: d and d_v are split into h heads of d/h and d_v/h.

    Returns (B, N, d_v) (or (B, N, d_out) with W_O), and with ``return_weights=True``
    also the attention weights A (B, h, N, M), each row a distribution over the context.
    """
    if x.ndim != 3 or context.ndim != 3:
        raise ValueError(
            f"cross_attention: x must be (B, N, d_x) and context (B, M, d_c), got x {tuple(x.shape)} and "
            f"context {tuple(context.shape)}"
        )
    if context.shape[0] != x.shape[0]:
        raise ValueError(
            f"cross_attention: x {tuple(x.shape)} and context {tuple(context.shape)} must have the same batch size"
        )
    if q_weight.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"cross_attention: x has width {x.shape[-1]} but W_Q {tuple(q_weight.shape)} expects d_x = "
            f"{q_weight.shape[-1]}"
        )
    for name, weight in (("W_K", k_weight), ("W_V", v_weight)):
        if weight.shape[-1] != context.shape[-1]:
            raise ValueError(
                f"cross_attention: the context has width {context.shape[-1]} but {name} {tuple(weight.shape)} "
                f"expects context width d_c = {weight.shape[-1]}: context must be (B, M, {weight.shape[-1]})"
            )
    if q_weight.shape[0] != k_weight.shape[0]:
        raise ValueError(
            f"cross_attention: W_Q {tuple(q_weight.shape)} and W_K {tuple(k_weight.shape)} must project to the "
            "same width d (queries and keys are compared by a dot product)"
        )
    batch, context_length = context.shape[0], context.shape[1]

    # 1. Project: queries from x, keys and values from the context. No biases.
    q = linear(x, q_weight)  # (B, N, d)
    k = linear(context, k_weight)  # (B, M, d)
    v = linear(context, v_weight)  # (B, M, d_v)

    # 2. Split into heads: (B, T, d) -> (B, h, T, d/h).
    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))

    # 3. softmax(Q Kᵀ/√(d/h) + M_pad) V in every head at once; A is (B, h, N, M).
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_attn_mask(key_padding_mask, batch, context_length, x.device)
    heads, weights = scaled_dot_product_attention(q, k, v, attn_mask=mask, return_weights=True)

    # 4. Merge the heads, (B, h, N, d_v/h) -> (B, N, d_v), and mix them with W_O.
    out = merge_heads(heads)
    if out_weight is not None:
        out = linear(out, out_weight)
    return (out, weights) if return_weights else out
