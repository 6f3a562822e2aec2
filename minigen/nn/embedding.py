"""``Embedding``: a lookup table mapping integer ids to learned vectors."""

from __future__ import annotations

from typing import Any

from minigen import creation
from minigen.nn import functional as F
from minigen.nn import init
from minigen.nn.module import Module, Parameter
from minigen.tensor import Tensor


class Embedding(Module):
    """y[..., :] = W[ids[...], :] with W of shape (num_embeddings, embedding_dim), W ~ N(0, 1).

    Looking up row i is the same as multiplying the one-hot vector e_i by W, so the
    gradient of W adds each output gradient into the row it came from.

    ``padding_idx``: that row starts at zero and receives no gradient (a "no token" id).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for {num_embeddings} rows")
            padding_idx %= num_embeddings
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.weight = Parameter(creation.empty(num_embeddings, embedding_dim))
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text if self.padding_idx is None else f"{text}, padding_idx={self.padding_idx}"
