"""GPT: a decoder-only transformer language model (GPT-2's design, minGPT's size).

    tokens idx (B, T)
    -> x = token embedding E[idx] (+ learned position embedding P[0..T−1])   (B, T, d)
    -> n_layers causal TransformerBlocks (RoPE inside attention, if chosen)
    -> final LayerNorm
    -> logits = x Eᵀ   (the output layer shares E with the input: weight tying)    (B, T, V)

Trained by next-token prediction: the logits at position t predict token t + 1, with
the cross-entropy −log p(x_{t+1} | x_{≤t}). The causal mask makes every position's
prediction depend on the past only, so one forward pass trains all T predictions.

Initialisation (GPT-2): every weight ~ N(0, 0.02), biases 0, and the two projections
that write into the residual stream in each block (attention's W^O and the MLP's W₂)
use std 0.02/√(2·n_layers). The residual stream is a sum of 2·n_layers such writes;
scaling them keeps its variance roughly independent of the depth.
"""

from __future__ import annotations

import math

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import backend
from minigen.nn.transformer import TransformerBlock
from minigen.tensor import Tensor


class GPT(nn.Module):
    """Decoder-only language model.

    * ``vocab_size`` V, ``block_size``: the longest context (positions 0..block_size−1),
    * ``n_layers`` blocks of width ``d_model`` with ``n_heads`` heads,
    * ``positions``: ``"learned"`` (a table P of block_size vectors added to the tokens,
      as in GPT-2) or ``"rope"`` (queries and keys rotated in every block; no table, so
      any length runs, but only lengths seen in training are reliable).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layers: int = 4,
        n_heads: int = 4,
        d_model: int = 128,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        positions: str = "learned",
    ) -> None:
        super().__init__()
        if positions not in ("learned", "rope"):
            raise ValueError(f"GPT: positions must be 'learned' or 'rope', got {positions!r}")
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layers = n_layers
        self.positions = positions
        self.wte = nn.Embedding(vocab_size, d_model)  # E: token id -> vector
        self.wpe = nn.Embedding(block_size, d_model) if positions == "learned" else None  # P: position -> vector
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal=True, rope=positions == "rope")
            for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one Parameter, two uses
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections N(0, 0.02/√(2·n_layers))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=residual_std)
            nn.init.normal_(block.fc2.weight, std=residual_std)

    def embed(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> the blocks' input x = E[idx] (+ P[0..T−1]), (B, T, d)."""
        T = idx.shape[1]
        if self.wpe is not None and T > self.block_size:
            raise ValueError(
                f"GPT: sequence length {T} exceeds block_size {self.block_size} (the learned position table)"
            )
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(mg.arange(T, device=idx.device))  # (T, d) broadcasts over the batch
        return self.drop(x)

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @mg.no_grad()
    def attention_maps(self, idx: Tensor) -> list[Tensor]:
        """The attention weights of every block for ``idx`` (B, T): a list of (B, heads, T, T), for
        pictures (call ``model.eval()`` first, so that dropout is off)."""
        x = self.embed(idx)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_attention=True)
            maps.append(weights)
        return maps

    def loss(self, idx: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Mean cross-entropy of the predictions for ``targets`` (B, T); ``ignore_index`` skips a position."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1), ignore_index=ignore_index)

    @mg.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
        """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens, one at a time.

        Each step feeds the last ``block_size`` tokens, takes the logits of the last
        position, and picks the next token: the most likely one when ``temperature == 0``
        (greedy), otherwise a sample from softmax(logits / temperature), restricted to the
        ``top_k`` most likely tokens if given. Call ``model.eval()`` first to switch off dropout.
        """
        for _ in range(max_new_tokens):
            context = idx if idx.shape[1] <= self.block_size else idx[:, -self.block_size :]
            logits = self(context)[:, -1, :]  # (B, V): the prediction for the next position
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                next_token = sample_next(logits / temperature, top_k)
            idx = mg.cat([idx, next_token], dim=1)
        return idx


def top_k_logits(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row and set the rest to −∞ (their probability becomes 0)."""
    xp = logits.xp
    k = min(k, logits.shape[-1])
    kth_largest = xp.sort(logits.data, axis=-1)[..., -k, None]  # (..., 1)
    return Tensor(xp.where(logits.data < kth_largest, -math.inf, logits.data))


def sample_next(logits: Tensor, top_k: int | None = None) -> Tensor:
    """One token per row from softmax(logits): the first index whose cumulative probability exceeds u ~ U(0, 1)."""
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = F.softmax(logits, dim=-1).data
    xp = logits.xp
    u = backend.random_uniform(probs.shape[:-1] + (1,), probs.dtype, logits.device)
    cumulative = xp.cumsum(probs, axis=-1)
    index = (cumulative < u).sum(axis=-1, keepdims=True)
    return Tensor(xp.minimum(index, probs.shape[-1] - 1).astype("int64"))  # rounding can leave u above the total
