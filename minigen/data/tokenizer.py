"""A word-level tokenizer for the captions of ``captions.py``, with a vocabulary shipped in the package.

A caption is lower-cased and split into words at spaces; "," and ":" are tokens of
their own ("left: a red three, small" -> left : a red three , small). Each token is
looked up in the vocabulary (``caption_vocabulary.txt``, one token per line, the line
number is the id), then the batch is laid out as a (B, L) table:

    tokens            left  :  a  red  three  ,  small  <end>  <pad>  <pad> ...
    key_padding_mask  F     F  F  F    F      F  F      F      T      T     ...

* ``<end>`` closes every caption. A transformer without a causal mask sees the whole
  caption from every position, and CLIP reads the caption's summary at ``<end>``.
* ``<pad>`` (id 0) fills the rest of the row, so captions of different lengths share one
  array; ``key_padding_mask`` marks the padding True ("ignore this key"), as PyTorch's
  ``nn.MultiheadAttention(key_padding_mask=...)`` does, so attention never reads it.
* The empty caption "" encodes as just ``<end>``: the "no caption" input (the null
  condition of classifier-free guidance).

There is no unknown-word token: a word outside the vocabulary is an error naming the word
(a silent ``<unk>`` would make a typo in a prompt look like a model failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

VOCABULARY_FILE = Path(__file__).with_name("caption_vocabulary.txt")
PAD, END = "<pad>", "<end>"
_PUNCTUATION = (",", ":")


class Tokenizer:
    """Word-level tokenizer: ``encode`` captions to (tokens, key_padding_mask), ``decode`` back.

    ``vocabulary``: the tokens in id order; ``"<pad>"`` must be first (id 0) and
    ``"<end>"`` present. ``Tokenizer.default()`` loads the shipped vocabulary.
    """

    def __init__(self, vocabulary: Sequence[str], source: str = "the vocabulary") -> None:
        vocabulary = [str(word) for word in vocabulary]
        if not vocabulary or vocabulary[0] != PAD:
            raise ValueError(f"Tokenizer: {source} must start with {PAD!r} (id 0), got {vocabulary[:1]}")
        if END not in vocabulary:
            raise ValueError(f"Tokenizer: {source} must contain {END!r}")
        if len(set(vocabulary)) != len(vocabulary):
            repeated = sorted({w for w in vocabulary if vocabulary.count(w) > 1})
            raise ValueError(f"Tokenizer: {source} lists these tokens more than once: {repeated}")
        self.vocabulary = tuple(vocabulary)
        self.source = source
        self.ids = {word: i for i, word in enumerate(vocabulary)}
        self.pad_id = 0
        self.end_id = self.ids[END]

    @classmethod
    def default(cls) -> Tokenizer:
        """The tokenizer of the captioned digits, from ``minigen/data/caption_vocabulary.txt``."""
        words = VOCABULARY_FILE.read_text(encoding="utf-8").split("\n")
        return cls([w.strip() for w in words if w.strip()], source=str(VOCABULARY_FILE))

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @staticmethod
    def split(caption: str) -> list[str]:
        """Lower-case words, with "," and ":" as separate tokens."""
        text = caption.lower()
        for mark in _PUNCTUATION:
            text = text.replace(mark, f" {mark} ")
        return text.split()

    def encode(self, captions: str | Sequence[str], context_length: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> ``tokens`` int64 (B, L) and ``key_padding_mask`` bool (B, L), L = ``context_length``.

        Each row is the caption's tokens, then ``<end>``, then ``<pad>``; the mask is True
        at the padding. A single string gives B = 1. A caption needs at most
        ``context_length − 1`` words (one slot is for ``<end>``).
        """
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(context_length, (int, np.integer)) or context_length < 1:
            raise ValueError(f"Tokenizer.encode: context_length must be a positive int, got {context_length!r}")
        tokens = np.full((len(captions), context_length), self.pad_id, np.int64)
        lengths = np.zeros(len(captions), np.int64)
        for row, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"Tokenizer.encode: captions must be strings, got {type(caption).__name__} at {row}")
            words = self.split(caption)
            if len(words) > context_length - 1:
                raise ValueError(
                    f"Tokenizer.encode: caption {caption!r} has {len(words)} tokens, more than "
                    f"context_length - 1 = {context_length - 1} (context_length {context_length} includes <end>)"
                )
            for col, word in enumerate(words):
                if word not in self.ids:
                    raise ValueError(
                        f"Tokenizer.encode: the word {word!r} in caption {caption!r} is not in the vocabulary "
                        f"({self.source}, {self.vocab_size} tokens)"
                    )
                tokens[row, col] = self.ids[word]
            tokens[row, len(words)] = self.end_id
            lengths[row] = len(words) + 1
        key_padding_mask = np.arange(context_length)[None, :] >= lengths[:, None]
        return tokens, key_padding_mask

    def decode(self, tokens: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        """Token ids (B, L) (or one row (L,)) -> captions; reading stops at ``<end>``.

        Punctuation is attached to the word before it ("left: a red three, small"), so
        ``decode(encode(c))`` is ``c`` up to case and whitespace.
        """
        if hasattr(tokens, "numpy"):  # a Tensor
            tokens = tokens.numpy()
        rows = np.asarray(tokens)
        if rows.ndim == 1:
            rows = rows[None]
        if rows.ndim != 2 or rows.dtype.kind not in "iu":
            raise ValueError(
                f"Tokenizer.decode: tokens must be integer ids shaped (B, L), got {rows.dtype} {rows.shape}"
            )
        captions = []
        for row in rows:
            words = []
            for token in row.tolist():
                if not 0 <= token < self.vocab_size:
                    raise ValueError(f"Tokenizer.decode: token id {token} is outside 0..{self.vocab_size - 1}")
                if token == self.end_id:
                    break
                if token != self.pad_id:
                    words.append(self.vocabulary[token])
            text = " ".join(words)
            for mark in _PUNCTUATION:
                text = text.replace(f" {mark}", mark)
            captions.append(text)
        return captions
