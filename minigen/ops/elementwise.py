"""Elementwise functions y = f(x), whose backward is ∂L/∂x = g ⊙ f'(x).

Where f' is written with the output y (exp, sqrt, tanh, sigmoid), the output array is
saved and turned back into a tensor in backward with ``self.output_tensor``: it is the
same value, and with ``create_graph=True`` it is differentiated through correctly.
"""

from __future__ import annotations

from typing import Any

from minigen.autograd import Function
from minigen.tensor import Tensor


class Exp(Function):
    """y = eˣ;  ∂L/∂x = g ⊙ y."""

    def forward(self, x: Tensor):
        y = x.xp.exp(x.data)
        self.saved = y
        return y

    def backward(self, grad: Tensor):
        return grad * self.output_tensor(self.saved)


class Log(Function):
    """y = ln x;  ∂L/∂x = g / x."""

    def forward(self, x: Tensor):
        self.saved = x
        return x.xp.log(x.data)

    def backward(self, grad: Tensor):
        return grad / self.saved


class Sqrt(Function):
    """y = √x;  ∂L/∂x = g / (2y)."""

    def forward(self, x: Tensor):
        y = x.xp.sqrt(x.data)
        self.saved = y
        return y

    def backward(self, grad: Tensor):
        return grad / (2.0 * self.output_tensor(self.saved))


class Abs(Function):
    """y = |x|;  ∂L/∂x = g ⊙ sign(x)  (0 at x = 0, the subgradient PyTorch uses)."""

    def forward(self, x: Tensor):
        self.saved = x.xp.sign(x.data)
        return x.xp.abs(x.data)

    def backward(self, grad: Tensor):
        return grad * Tensor(self.saved)


class Sin(Function):
    """y = sin x;  ∂L/∂x = g ⊙ cos x."""

    def forward(self, x: Tensor):
        self.saved = x
        return x.xp.sin(x.data)

    def backward(self, grad: Tensor):
        return grad * self.saved.cos()


class Cos(Function):
    """y = cos x;  ∂L/∂x = −g ⊙ sin x."""

    def forward(self, x: Tensor):
        self.saved = x
        return x.xp.cos(x.data)

    def backward(self, grad: Tensor):
        return -grad * self.saved.sin()


class Tanh(Function):
    """y = tanh x;  ∂L/∂x = g ⊙ (1 − y²)."""

    def forward(self, x: Tensor):
        y = x.xp.tanh(x.data)
        self.saved = y
        return y

    def backward(self, grad: Tensor):
        y = self.output_tensor(self.saved)
        return grad * (1.0 - y * y)


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e⁻ˣ);  ∂L/∂x = g ⊙ y(1 − y).

    Computed as σ(x) = e^min(x, 0) / (1 + e^(−|x|)), which is 1/(1 + e⁻ˣ) for x ≥ 0 and
    eˣ/(1 + eˣ) for x < 0: neither exponential can overflow, and both tails keep their
    relative accuracy (σ(−80) ≈ e⁻⁸⁰ is not rounded to 0 by a 1 − ... cancellation).
    """

    def forward(self, x: Tensor):
        xp = x.xp
        # out=: NumPy would return a 0-d result as a scalar, which the in-place steps cannot write into
        y = xp.minimum(x.data, 0, out=xp.empty_like(x.data))
        xp.exp(y, out=y)  # the numerator, e^min(x, 0)
        denominator = xp.abs(x.data, out=xp.empty_like(x.data))
        xp.negative(denominator, out=denominator)
        xp.exp(denominator, out=denominator)
        denominator += 1.0
        y /= denominator  # in place throughout: a few fast passes instead of a masked select
        self.saved = y
        return y

    def backward(self, grad: Tensor):
        y = self.output_tensor(self.saved)
        return grad * (y * (1.0 - y))


class Relu(Function):
    """y = max(x, 0);  ∂L/∂x = g ⊙ [x > 0]  (0 at the kink x = 0, as in PyTorch)."""

    def forward(self, x: Tensor):
        self.saved = x.data > 0
        return x.xp.maximum(x.data, 0)

    def backward(self, grad: Tensor):
        return grad * Tensor(self.saved.astype(grad.dtype))


class Clamp(Function):
    """y = min(max(x, low), high);  ∂L/∂x = g ⊙ [low ≤ x ≤ high]  (bounds inclusive, as in PyTorch)."""

    def forward(self, x: Tensor, low: float | None, high: float | None):
        if low is None and high is None:
            raise ValueError("clamp: at least one of min and max must be given")
        inside = x.xp.ones(x.shape, dtype=bool)
        if low is not None:
            inside &= x.data >= low
        if high is not None:
            inside &= x.data <= high
        self.saved = inside
        return x.xp.clip(x.data, low, high)

    def backward(self, grad: Tensor):
        return grad * Tensor(self.saved.astype(grad.dtype))


class Where(Function):
    """z = cond ? a : b;  ∂L/∂a = g ⊙ cond,  ∂L/∂b = g ⊙ ¬cond  (cond gets no gradient)."""

    def forward(self, cond: Tensor, a: Tensor, b: Tensor):
        if cond.dtype.kind != "b":
            raise TypeError(f"where: the condition must be a bool tensor, got dtype {cond.dtype}")
        self.saved = (cond, a.shape, b.shape)  # the Tensor, so that an in-place change of it is caught
        return cond.xp.where(cond.data, a.data, b.data)

    def backward(self, grad: Tensor):
        cond, a_shape, b_shape = self.saved
        _, need_a, need_b = self.needs_grad
        chosen = Tensor(cond.data.astype(grad.dtype))
        grad_a = (grad * chosen).sum_to(a_shape) if need_a else None
        grad_b = (grad * (1.0 - chosen)).sum_to(b_shape) if need_b else None
        return None, grad_a, grad_b


class Maximum(Function):
    """z = max(a, b) elementwise. Tie rule: at a = b the gradient is split ½ / ½ (as in PyTorch)."""

    def forward(self, a: Tensor, b: Tensor):
        a_wins = (a.data > b.data) + 0.5 * (a.data == b.data)
        self.saved = (a_wins, a.shape, b.shape)
        return a.xp.maximum(a.data, b.data)

    def backward(self, grad: Tensor):
        a_wins, a_shape, b_shape = self.saved
        need_a, need_b = self.needs_grad
        share_a = Tensor(a_wins.astype(grad.dtype))
        grad_a = (grad * share_a).sum_to(a_shape) if need_a else None
        grad_b = (grad * (1.0 - share_a)).sum_to(b_shape) if need_b else None
        return grad_a, grad_b


def _as_tensor_pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    if isinstance(a, Tensor):
        return a, a._lift(b)
    if isinstance(b, Tensor):
        return b._lift(a), b
    return Tensor(a), Tensor(b)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum, broadcasting."""
    a, b = _as_tensor_pair(a, b)
    return Maximum.apply(a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise minimum: min(a, b) = −max(−a, −b)."""
    a, b = _as_tensor_pair(a, b)
    return -Maximum.apply(-a, -b)


def where(condition: Tensor, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is True, else ``b`` (broadcasting)."""
    if not isinstance(condition, Tensor):
        condition = Tensor(condition)
    a, b = _as_tensor_pair(a, b)
    if condition.device != a.device:
        condition = Tensor(condition.data, device=a.device)
    return Where.apply(condition, a, b)
