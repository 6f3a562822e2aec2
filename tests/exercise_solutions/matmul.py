"""A correct solution of the matmul exercise (used to check the checker)."""

from minigen import Function, Tensor


class MatMul(Function):
    def forward(self, a: Tensor, b: Tensor):
        self.saved = (a, b)
        return a.xp.matmul(a.data, b.data)

    def backward(self, grad: Tensor):
        a, b = self.saved
        grad_a = (grad @ b.mT).sum_to(a.shape)
        grad_b = (a.mT @ grad).sum_to(b.shape)
        return grad_a, grad_b
