"""``Dropout``: zero each element with probability p during training, scale the rest by 1/(1−p)."""

from __future__ import annotations

from minigen.nn import functional as F
from minigen.nn.module import Module
from minigen.tensor import Tensor


class Dropout(Module):
    """y = x ⊙ m / (1 − p), m_i ~ Bernoulli(1 − p), in training mode; y = x in eval mode.

    The 1/(1 − p) scale keeps E[y] = x, so nothing changes between training and eval.
    The mask comes from the seeded generator of x's device (``mg.manual_seed``).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, p=self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
