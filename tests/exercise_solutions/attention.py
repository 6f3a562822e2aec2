"""A correct solution of the attention exercise (used to check the checker)."""

import math

from minigen import Function, Tensor


class CausalAttention(Function):
    def forward(self, q: Tensor, k: Tensor, v: Tensor):
        xp = q.xp
        t, d = q.shape[-2], q.shape[-1]
        scores = q.data @ k.data.swapaxes(-1, -2) / math.sqrt(d)
        mask = xp.tril(xp.ones((t, t), dtype=bool))
        scores = xp.where(mask, scores, -xp.inf)
        e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        a = e / e.sum(axis=-1, keepdims=True)
        self.saved = (q.data, k.data, v.data, a)
        return a @ v.data

    def backward(self, grad: Tensor):
        q, k, v, a = self.saved
        d = q.shape[-1]
        g = grad.data
        grad_v = a.swapaxes(-1, -2) @ g
        grad_a = g @ v.swapaxes(-1, -2)
        grad_s = a * (grad_a - (grad_a * a).sum(axis=-1, keepdims=True))
        grad_q = grad_s @ k / math.sqrt(d)
        grad_k = grad_s.swapaxes(-1, -2) @ q / math.sqrt(d)
        return Tensor(grad_q), Tensor(grad_k), Tensor(grad_v)
