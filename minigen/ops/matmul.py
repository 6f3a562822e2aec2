"""Matrix multiplication, batched and broadcast like ``numpy.matmul``.

For C = A B:  ∂L/∂A = G Bᵀ,  ∂L/∂B = Aᵀ G  (summed over broadcast batch axes).
1-D operands are treated as a row (left) or column (right) vector and the added axis
is removed again, exactly as NumPy and PyTorch do.
"""

from __future__ import annotations

from minigen.autograd import Function
from minigen.tensor import Tensor


class MatMul(Function):
    """C = A B for A (..., n, k) and B (..., k, m)."""

    def forward(self, a: Tensor, b: Tensor):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied "
                f"({a.shape[-1]} columns vs {b.shape[-2]} rows)"
            )
        self.saved = (a, b)
        return a.xp.matmul(a.data, b.data)

    def backward(self, grad: Tensor):
        a, b = self.saved
        need_a, need_b = self.needs_grad
        grad_a = matmul(grad, b.mT).sum_to(a.shape) if need_a else None
        grad_b = matmul(a.mT, grad).sum_to(b.shape) if need_b else None
        return grad_a, grad_b


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; handles the 1-D cases by adding and removing a unit axis."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: both operands need at least 1 dimension, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim == 1 and b.ndim == 1:
        return matmul(a.reshape(1, -1), b.reshape(-1, 1)).reshape(())
    if a.ndim == 1:
        out = MatMul.apply(a.reshape(1, -1), b)
        return out.reshape(out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        return MatMul.apply(a, b.reshape(-1, 1)).reshape(a.shape[:-1])
    return MatMul.apply(a, b)
