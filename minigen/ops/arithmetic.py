"""Arithmetic: z = a ∘ b with NumPy broadcasting.

When an input was broadcast in forward, its gradient is summed back over the
broadcast axes (``sum_to``): each input element was used many times, so its
gradient is the sum of the gradients of all its copies.
"""

from __future__ import annotations

from minigen.autograd import Function
from minigen.tensor import Tensor


class Add(Function):
    """z = a + b;  ∂L/∂a = g,  ∂L/∂b = g  (each summed back to its input's shape)."""

    def forward(self, a: Tensor, b: Tensor):
        self.saved = (a.shape, b.shape)
        return a.data + b.data

    def backward(self, grad: Tensor):
        a_shape, b_shape = self.saved
        need_a, need_b = self.needs_grad
        return (grad.sum_to(a_shape) if need_a else None, grad.sum_to(b_shape) if need_b else None)


class Sub(Function):
    """z = a − b;  ∂L/∂a = g,  ∂L/∂b = −g."""

    def forward(self, a: Tensor, b: Tensor):
        self.saved = (a.shape, b.shape)
        return a.data - b.data

    def backward(self, grad: Tensor):
        a_shape, b_shape = self.saved
        need_a, need_b = self.needs_grad
        return (grad.sum_to(a_shape) if need_a else None, (-grad).sum_to(b_shape) if need_b else None)


class Mul(Function):
    """z = a ⊙ b;  ∂L/∂a = g ⊙ b,  ∂L/∂b = g ⊙ a."""

    def forward(self, a: Tensor, b: Tensor):
        self.saved = (a, b)
        return a.data * b.data

    def backward(self, grad: Tensor):
        a, b = self.saved
        need_a, need_b = self.needs_grad
        return ((grad * b).sum_to(a.shape) if need_a else None, (grad * a).sum_to(b.shape) if need_b else None)


class Div(Function):
    """z = a / b;  ∂L/∂a = g / b,  ∂L/∂b = −g ⊙ a / b²."""

    def forward(self, a: Tensor, b: Tensor):
        self.saved = (a, b)
        return a.data / b.data

    def backward(self, grad: Tensor):
        a, b = self.saved
        need_a, need_b = self.needs_grad
        grad_a = (grad / b).sum_to(a.shape) if need_a else None
        grad_b = (-grad * a / (b * b)).sum_to(b.shape) if need_b else None
        return grad_a, grad_b


class Neg(Function):
    """z = −x;  ∂L/∂x = −g."""

    def forward(self, x: Tensor):
        return -x.data

    def backward(self, grad: Tensor):
        return -grad


class PowScalar(Function):
    """z = xᵖ for a constant p;  ∂L/∂x = g ⊙ p xᵖ⁻¹."""

    __slots__ = ("exponent",)

    def forward(self, x: Tensor, exponent: float):
        self.exponent = exponent
        self.saved = (x,)
        return x.data**exponent

    def backward(self, grad: Tensor):
        (x,) = self.saved
        p = self.exponent
        if p == 2:
            return grad * (2.0 * x)
        return grad * (p * x ** (p - 1))


class PowTensor(Function):
    """z = aᵇ;  ∂L/∂a = g ⊙ b aᵇ⁻¹,  ∂L/∂b = g ⊙ aᵇ ln a  (a > 0 for the second)."""

    def forward(self, a: Tensor, b: Tensor):
        out = a.data**b.data
        self.saved = (a, b, out)
        return out

    def backward(self, grad: Tensor):
        a, b, out = self.saved
        need_a, need_b = self.needs_grad
        grad_a = (grad * b * a ** (b - 1.0)).sum_to(a.shape) if need_a else None
        grad_b = (grad * self.output_tensor(out) * a.log()).sum_to(b.shape) if need_b else None
        return grad_a, grad_b
