"""The transformer block: the unit that GPT, BERT and ViT stack n_layers times.

Pre-LayerNorm form (GPT-2, ViT), with x of shape (B, T, d_model):

    x = x + Dropout( MultiHeadAttention( LayerNorm₁(x) ) )
    x = x + Dropout( MLP( LayerNorm₂(x) ) ),     MLP(z) = W₂ GELU(W₁ z + b₁) + b₂

The residual connections let each block add a correction to x instead of replacing
it, and normalising *before* each sub-layer keeps the residual path an identity, which
is what makes deep stacks train without warm-up tricks.

The attention is written out step by step (the same steps as ``nn.MultiheadAttention``):
project to q, k, v; split into heads; optionally rotate q and k with RoPE; scaled
dot-product attention (causal for a decoder); merge the heads; output projection.
"""

from __future__ import annotations

from typing import Any

from minigen.nn.activation import GELU
from minigen.nn.attention import RotaryEmbedding
from minigen.nn.dropout import Dropout
from minigen.nn.linear import Linear
from minigen.nn.module import Module
from minigen.nn.normalization import LayerNorm
from minigen.ops.attention import merge_heads, scaled_dot_product_attention, split_heads
from minigen.tensor import Tensor


class TransformerBlock(Module):
    """One pre-LayerNorm transformer block: attention and MLP, each with a residual.

    * ``d_model``: the width of the residual stream; ``n_heads`` heads of d_model/n_heads,
    * ``mlp_ratio``: the MLP's hidden width is mlp_ratio·d_model,
    * ``causal``: each position attends only to itself and earlier ones (decoders),
    * ``rope``: rotate queries and keys by their positions (RoPE) inside attention.

    Sub-layers: ``ln1``, ``qkv`` (d → 3d: W^Q, W^K, W^V stacked), ``proj`` (W^O),
    ``ln2``, ``fc1``, ``fc2``. ``proj`` and ``fc2`` write into the residual stream.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        causal: bool = False,
        rope: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"TransformerBlock: d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.dropout_p = dropout
        self.ln1 = LayerNorm(d_model)
        self.qkv = Linear(d_model, 3 * d_model)
        self.rotary = RotaryEmbedding(self.head_dim) if rope else None
        self.proj = Linear(d_model, d_model)
        self.ln2 = LayerNorm(d_model)
        hidden = int(mlp_ratio * d_model)
        self.fc1 = Linear(d_model, hidden)
        self.act = GELU()
        self.fc2 = Linear(hidden, d_model)
        self.drop = Dropout(dropout)

    def attention(
        self, x: Tensor, attn_mask: Any = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Multi-head self-attention of x (B, T, d) -> (B, T, d) (and the weights (B, h, T, T))."""
        d = x.shape[-1]

        # Project: q, k, v = x W^Qᵀ, x W^Kᵀ, x W^Vᵀ  (one matmul for all three).
        q, k, v = self.qkv(x).split(d, dim=-1)

        # Split heads: (B, T, d) -> (B, h, T, d_k), so every head attends independently.
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))

        # RoPE: rotate q and k by their positions; the scores then depend on m − n only.
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)

        # softmax(q kᵀ/√d_k + M) v, with M the causal mask in a decoder.
        out, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=self.causal,
            dropout_p=self.dropout_p if self.training else 0.0,
            return_weights=True,
        )

        # Merge heads: (B, h, T, d_k) -> (B, T, d), then mix them with W^O.
        out = self.proj(merge_heads(out))
        return (out, weights) if return_attention else out

    def mlp(self, x: Tensor) -> Tensor:
        """The position-wise MLP: W₂ GELU(W₁ x + b₁) + b₂."""
        return self.fc2(self.act(self.fc1(x)))

    def forward(
        self, x: Tensor, attn_mask: Any = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, d) -> (B, T, d). ``attn_mask``: as in ``F.scaled_dot_product_attention``
        (bool True = may attend), e.g. (B, 1, 1, T) to hide padding keys.
        With ``return_attention=True`` also returns the attention weights (B, h, T, T)."""
        attended, weights = self.attention(self.ln1(x), attn_mask, return_attention=True)
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return (x, weights) if return_attention else x

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}, rope={self.rotary is not None}"
