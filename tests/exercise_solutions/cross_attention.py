"""A correct solution of the cross_attention exercise (used to check the checker)."""

import math

from minigen import Function, Tensor


class CrossAttention(Function):
    def forward(self, x: Tensor, context: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, key_padding_mask: Tensor):
        xp = x.xp
        d = w_q.shape[0]
        q = x.data @ w_q.data.T  # (B, N, d)
        k = context.data @ w_k.data.T  # (B, M, d)
        v = context.data @ w_v.data.T  # (B, M, d_v)
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(d)  # (B, N, M)
        scores = xp.where(key_padding_mask.data[:, None, :], -xp.inf, scores)
        e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        a = e / e.sum(axis=-1, keepdims=True)
        self.saved = (x.data, context.data, w_q.data, w_k.data, w_v.data, q, k, v, a)
        return a @ v

    def backward(self, grad: Tensor):
        x, c, w_q, w_k, w_v, q, k, v, a = self.saved
        d = w_q.shape[0]
        g = grad.data
        grad_v = a.swapaxes(-1, -2) @ g
        grad_a = g @ v.swapaxes(-1, -2)
        grad_s = a * (grad_a - (grad_a * a).sum(axis=-1, keepdims=True))
        grad_q = grad_s @ k / math.sqrt(d)
        grad_k = grad_s.swapaxes(-1, -2) @ q / math.sqrt(d)
        grad_x = grad_q @ w_q
        grad_c = grad_k @ w_k + grad_v @ w_v
        grad_w_q = (grad_q.swapaxes(-1, -2) @ x).sum(axis=0)
        grad_w_k = (grad_k.swapaxes(-1, -2) @ c).sum(axis=0)
        grad_w_v = (grad_v.swapaxes(-1, -2) @ c).sum(axis=0)
        return Tensor(grad_x), Tensor(grad_c), Tensor(grad_w_q), Tensor(grad_w_k), Tensor(grad_w_v), None
