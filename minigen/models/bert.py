"""BERT: an encoder-only transformer, pre-trained by masked language modelling (MLM).

    tokens (B, T), starting with [CLS]
    -> token embedding + learned position embedding                        (B, T, d)
    -> n_layers TransformerBlocks WITHOUT a causal mask: every token sees both sides
    -> final LayerNorm: the contextual vectors h_1 .. h_T
    MLM head:  logits_t = LayerNorm(GELU(W h_t + b)) Eᵀ + c   (E tied to the input embedding)
    [CLS] head: class logits = W_c tanh(W_p h_[CLS] + b_p) + b_c

Pre-training hides some tokens and asks the model to recover them (``mlm_mask``): 15 %
of the (non-special) tokens are selected; of those 80 % become [MASK], 10 % a random
token and 10 % stay unchanged, so the model cannot rely on seeing [MASK] at prediction
time. The loss is the cross-entropy on the selected positions only (labels −100 elsewhere).

Fine-tuning for classification reads the [CLS] vector, which attention lets gather
information from the whole sequence.

This model uses pre-LayerNorm blocks (as GPT-2 and ViT do); the original BERT normalised
after each residual addition. The difference is in training stability, not in the idea.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import backend
from minigen.nn.transformer import TransformerBlock
from minigen.tensor import Tensor

IGNORE_INDEX = -100  # cross_entropy skips these labels


class BERT(nn.Module):
    """Encoder-only transformer with an MLM head and a [CLS] classification head.

    ``forward(tokens, attention_mask)`` returns the hidden states (B, T, d);
    ``mlm_logits(hidden)`` and ``classify(hidden)`` apply the two heads.
    ``attention_mask`` (B, T): True (or 1) for real tokens, False (0) for padding,
    which then is hidden from every query.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        n_layers: int = 4,
        n_heads: int = 4,
        d_model: int = 128,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio, dropout, causal=False) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        # MLM head: a small transform, then the (tied) embedding matrix as the output layer.
        self.mlm_dense = nn.Linear(d_model, d_model)
        self.mlm_act = nn.GELU()
        self.mlm_ln = nn.LayerNorm(d_model)
        self.mlm_bias = nn.Parameter(mg.zeros(vocab_size))
        # [CLS] head: BERT's "pooler" (Linear + tanh) and a linear classifier.
        self.pooler = nn.Linear(d_model, d_model)
        self.classifier = nn.Linear(d_model, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialisation: weights ~ N(0, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids (B, T) -> the blocks' input: token + position embeddings (B, T, d)."""
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"BERT: sequence length {T} exceeds max_len {self.max_len}")
        return self.drop(self.tok_emb(tokens) + self.pos_emb(mg.arange(T, device=tokens.device)))

    def forward(self, tokens: Tensor, attention_mask: Any = None) -> Tensor:
        """Token ids (B, T) -> contextual vectors (B, T, d)."""
        x = self.embed(tokens)
        mask = keys_to_attend(attention_mask, tokens.shape)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.ln_f(x)

    @mg.no_grad()
    def attention_maps(self, tokens: Tensor, attention_mask: Any = None) -> list[Tensor]:
        """The attention weights of every block: a list of (B, heads, T, T), for pictures
        (call ``model.eval()`` first, so that dropout is off)."""
        x = self.embed(tokens)
        mask = keys_to_attend(attention_mask, tokens.shape)
        maps = []
        for block in self.blocks:
            x, weights = block(x, attn_mask=mask, return_attention=True)
            maps.append(weights)
        return maps

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Hidden states (B, T, d) -> vocabulary logits (B, T, V) with the tied embedding."""
        z = self.mlm_ln(self.mlm_act(self.mlm_dense(hidden)))
        return F.linear(z, self.tok_emb.weight, self.mlm_bias)

    def classify(self, hidden: Tensor) -> Tensor:
        """Hidden states (B, T, d) -> class logits (B, num_classes) from the [CLS] (first) vector."""
        cls = hidden[:, 0]
        return self.classifier(self.pooler(cls).tanh())

    def mlm_loss(self, inputs: Tensor, labels: Tensor, attention_mask: Any = None) -> Tensor:
        """Cross-entropy on the masked positions (labels ≠ −100)."""
        logits = self.mlm_logits(self(inputs, attention_mask))
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def keys_to_attend(attention_mask: Any, shape: tuple[int, ...]) -> Tensor | None:
    """``attention_mask`` (B, T) (True or 1 for a real token, False or 0 for padding) as the
    blocks' attention mask (B, 1, 1, T): the same keys hidden from every head and query."""
    if attention_mask is None:
        return None
    B, T = shape
    keep = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    return Tensor(keep.astype(bool).reshape(B, 1, 1, T))


def mlm_mask(
    tokens: Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Sequence[int] = (),
    p: float = 0.15,
    generator: np.random.Generator | None = None,
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: returns ``(inputs, labels)`` for masked language modelling.

    Each token that is not special ([CLS], [PAD], …) is selected with probability p.
    A selected token is replaced by [MASK] with probability 0.8, by a random
    non-special token with probability 0.1, and kept with probability 0.1. ``labels``
    holds the original token at selected positions and −100 (ignored by the loss)
    everywhere else.

    Randomness: ``generator`` (a NumPy Generator) or ``seed`` draws on the host;
    otherwise the device's seeded generator (``minigen.manual_seed``) is used.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mlm_mask: p must be in [0, 1], got {p}")
    xp, device, data = tokens.xp, tokens.device, tokens.data
    shape = tuple(tokens.shape)
    specials = sorted(set(int(i) for i in special_ids) | {int(mask_token_id)})
    ordinary = [i for i in range(vocab_size) if i not in specials]  # the ids a random replacement may use
    if seed is not None and generator is None:
        generator = np.random.default_rng(seed)

    if generator is not None:  # host draws, moved to the tokens' device

        def uniform() -> Any:
            return backend.to_device(generator.random(shape, dtype=np.float32), device)

        pick = backend.to_device(generator.integers(0, len(ordinary), size=shape), device)
    else:

        def uniform() -> Any:
            return backend.random_uniform(shape, np.float32, device)

        pick = backend.random_integers(0, len(ordinary), shape, device)

    # The id lists are not uploaded to the device (a copy every training step): each
    # special id is compared with directly, and a random index k becomes the k-th
    # ordinary id by stepping past every special id at or below it, in ascending order.
    is_special = xp.zeros(shape, dtype=bool)
    random_tokens = pick
    for special in specials:
        is_special = is_special | (data == special)
        if 0 <= special < vocab_size:
            random_tokens = random_tokens + (random_tokens >= special)
    selected = (uniform() < p) & ~is_special  # 15 % of the ordinary tokens
    kind = uniform()  # one draw decides what happens to a selected token
    to_mask = selected & (kind < 0.8)  # 80 %: [MASK]
    to_random = selected & (kind >= 0.8) & (kind < 0.9)  # 10 %: a random token; the last 10 % stay as they are

    inputs = xp.where(to_mask, mask_token_id, data)
    inputs = xp.where(to_random, random_tokens.astype(data.dtype), inputs)
    labels = xp.where(selected, data, IGNORE_INDEX)
    return Tensor(inputs.astype(data.dtype)), Tensor(labels.astype("int64"))
