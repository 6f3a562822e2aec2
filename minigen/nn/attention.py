"""Attention layers: ``MultiheadAttention`` (PyTorch's layout) and ``RotaryEmbedding``.

Multi-head attention runs h attentions side by side on smaller pieces of the model
width E (each head gets d_k = E / h dimensions):

    head_j = Attention(Q W_j^Q, K W_j^K, V W_j^V),   j = 1 .. h
    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O

All h query projections W_j^Q together form one E×E matrix, and likewise for keys and
values. PyTorch stores the three stacked as ``in_proj_weight`` (3E, E) with the query
rows first, then key, then value, and W^O as the ``Linear`` ``out_proj``. Keeping that
layout means a PyTorch ``state_dict`` loads here unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from minigen import creation
from minigen.backend import Device
from minigen.nn import functional as F
from minigen.nn import init
from minigen.nn.linear import Linear
from minigen.nn.module import Module, Parameter
from minigen.ops.attention import merge_heads, scaled_dot_product_attention, split_heads
from minigen.ops.cross_attention import cross_attention
from minigen.ops.rope import apply_rope, rope_cos_sin
from minigen.tensor import Tensor


class MultiheadAttention(Module):
    """Multi-head attention with PyTorch's names, parameters and masks.

    Parameters (as in ``torch.nn.MultiheadAttention``):

    * ``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,): W^Q, W^K, W^V stacked, when
      keys and values have width E; otherwise ``q_proj_weight`` (E, E),
      ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim) separately,
    * ``out_proj``: the ``Linear`` W^O (E → E).

    ``batch_first=True`` (the default here; PyTorch's default is False) means inputs
    of shape (B, T, E); with False they are (T, B, E).

    Masks in ``forward`` follow ``nn.MultiheadAttention``, which is the opposite of
    ``F.scaled_dot_product_attention`` for booleans:

    * ``key_padding_mask`` (B, T_k): True marks a key to IGNORE (e.g. padding),
    * ``attn_mask`` (T_q, T_k) or (B·h, T_q, T_k): boolean True = NOT allowed, or a float
      mask added to the scores,
    * ``is_causal=True``: forbid attending to later positions (without an ``attn_mask``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads} "
                "(each head gets embed_dim / num_heads dimensions)"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim

        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(creation.empty(3 * embed_dim, embed_dim))
        else:
            self.q_proj_weight = Parameter(creation.empty(embed_dim, embed_dim))
            self.k_proj_weight = Parameter(creation.empty(embed_dim, self.kdim))
            self.v_proj_weight = Parameter(creation.empty(embed_dim, self.vdim))
        if bias:
            self.in_proj_bias = Parameter(creation.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """PyTorch's initialisation: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _projection_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """W^Q, W^K, W^V, each (E, in_dim): the three row blocks of ``in_proj_weight``."""
        if self._qkv_same_embed_dim:
            E = self.embed_dim
            w = self.in_proj_weight
            return w[:E], w[E : 2 * E], w[2 * E :]
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def _sdpa_mask(self, key_padding_mask: Any, attn_mask: Any, B: int, t_q: int, t_k: int, dtype: Any) -> Any:
        """Combine PyTorch's MHA masks into one mask for sdpa (bool: True = may attend; or additive)."""
        masks = []
        if attn_mask is not None:
            attn_mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(attn_mask)
            if attn_mask.ndim == 3:  # (B·h, T_q, T_k) -> (B, h, T_q, T_k)
                attn_mask = attn_mask.reshape(B, self.num_heads, t_q, t_k)
            masks.append(Tensor(~attn_mask.data) if attn_mask.dtype.kind == "b" else attn_mask.to(dtype))
        if key_padding_mask is not None:
            kpm = key_padding_mask if isinstance(key_padding_mask, Tensor) else Tensor(key_padding_mask)
            if tuple(kpm.shape) != (B, t_k):
                raise ValueError(
                    f"MultiheadAttention: key_padding_mask must have shape (batch, T_k) = {(B, t_k)}, "
                    f"got {tuple(kpm.shape)}"
                )
            kpm = kpm.reshape(B, 1, 1, t_k)  # the same keys are hidden from every head and query
            masks.append(Tensor(~kpm.data) if kpm.dtype.kind == "b" else kpm.to(dtype))
        if not masks:
            return None
        if len(masks) == 2 and masks[0].dtype.kind == "b" and masks[1].dtype.kind == "b":
            return Tensor(masks[0].data & masks[1].data)  # allowed only if both allow it
        xp = masks[0].xp
        additive = [m if m.dtype.kind != "b" else Tensor(xp.where(m.data, 0.0, -math.inf).astype(dtype)) for m in masks]
        return additive[0] if len(additive) == 1 else additive[0] + additive[1]

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` (B, T_q, E) to ``key`` (B, T_k, kdim) / ``value`` (B, T_k, vdim).

        Self-attention passes the same tensor three times. Returns ``(output, weights)``:
        output (B, T_q, E), and the attention weights averaged over heads (B, T_q, T_k), or
        per head (B, h, T_q, T_k) with ``average_attn_weights=False``, or None when
        ``need_weights=False``.
        """
        if not self.batch_first:  # (T, B, E) -> (B, T, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, t_q, _ = query.shape
        t_k = key.shape[1]
        if key.shape[0] != B or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"MultiheadAttention: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                f"{tuple(value.shape)} must share the batch size, and key and value the length"
            )

        # 1. Project: Q = query W^Qᵀ + b^Q, and likewise K and V.
        w_q, w_k, w_v = self._projection_weights()
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            E = self.embed_dim
            b_q, b_k, b_v = self.in_proj_bias[:E], self.in_proj_bias[E : 2 * E], self.in_proj_bias[2 * E :]
        q = F.linear(query, w_q, b_q)
        k = F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v)

        # 2. Split into heads: (B, T, E) -> (B, h, T, d_k).
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))

        # 3. Attention in every head at once: softmax(Q Kᵀ/√d_k + M) V.
        mask = self._sdpa_mask(key_padding_mask, attn_mask, B, t_q, t_k, q.dtype)
        heads, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal and attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            return_weights=True,
        )

        # 4. Merge the heads back, (B, h, T_q, d_k) -> (B, T_q, E), and mix them with W^O.
        out = self.out_proj(merge_heads(heads))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (weights.mean(dim=1) if average_attn_weights else weights)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


class RotaryEmbedding(Module):
    """Applies RoPE (see ``minigen/ops/rope.py``) to queries or keys of shape (..., T, dim).

    cos(mθ_i) and sin(mθ_i) are computed once per (device, dtype, length) and cached. They
    are constants, not parameters, so they are neither trained nor saved.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0 or dim <= 0:
            raise ValueError(f"RotaryEmbedding: dim must be even and positive (pairs are rotated), got {dim}")
        self.dim = dim
        self.base = base
        self._cache: dict[tuple[Device, Any, int], tuple[Tensor, Tensor]] = {}

    def cos_sin(self, length: int, device: Any, dtype: Any) -> tuple[Tensor, Tensor]:
        """cos and sin of mθ_i for positions m = 0 .. length−1: two (length, dim/2) tensors."""
        key = (Device(device), str(dtype), length)
        if key not in self._cache:
            self._cache[key] = rope_cos_sin(length, self.dim, self.base, device=device, dtype=dtype)
        return self._cache[key]

    def forward(self, x: Tensor, positions: Any = None) -> Tensor:
        """Rotate x (..., T, dim) for positions 0 .. T−1 (or the given ``positions``)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"RotaryEmbedding: expected last dimension {self.dim}, got shape {tuple(x.shape)}")
        if positions is None:
            cos, sin = self.cos_sin(x.shape[-2], x.device, x.dtype)
        else:
            cos, sin = rope_cos_sin(positions, self.dim, self.base, device=x.device, dtype=x.dtype)
        return apply_rope(x, cos, sin)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}"


class CrossAttention(MultiheadAttention):
    """Cross-attention as a layer: queries from x (B, N, E), keys and values from a context (B, M, d_c).

        Q = x W_Qᵀ,  K = c W_Kᵀ,  V = c W_Vᵀ,   out = softmax(Q Kᵀ/√d_k + M_pad) V W_Oᵀ

    (``minigen/ops/cross_attention.py`` has the maths.) It is a ``MultiheadAttention``
    with ``kdim = vdim = context_dim`` and no biases, so its parameters and
    ``state_dict`` are PyTorch's ``nn.MultiheadAttention(E, h, bias=False,
    kdim=context_dim, vdim=context_dim, batch_first=True)``; only ``forward`` differs:
    it takes the context once, as latent diffusion's spatial transformer calls it.
    """

    def __init__(
        self, embed_dim: int, num_heads: int = 1, context_dim: int | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            bias=False,
            batch_first=True,
            kdim=context_dim,
            vdim=context_dim,
            device=device,
            dtype=dtype,
        )
        self.context_dim = self.kdim

    def forward(  # type: ignore[override]
        self, x: Tensor, context: Tensor, key_padding_mask: Any = None, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, N, E), context (B, M, context_dim), key_padding_mask (B, M) bool (True = ignore)
        -> (B, N, E), and the attention weights (B, h, N, M) when ``need_weights``."""
        if context.ndim != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"CrossAttention: context must have shape (B, M, context_dim) = (B, M, {self.context_dim}), "
                f"got {tuple(context.shape)}"
            )
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"CrossAttention: x must have shape (B, N, embed_dim) = (B, N, {self.embed_dim}), got {tuple(x.shape)}"
            )
        w_q, w_k, w_v = self._projection_weights()
        return cross_attention(
            x,
            context,
            w_q,
            w_k,
            w_v,
            self.out_proj.weight,
            key_padding_mask=key_padding_mask,
            num_heads=self.num_heads,
            return_weights=need_weights,
        )

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, context_dim={self.context_dim}, num_heads={self.num_heads}"
