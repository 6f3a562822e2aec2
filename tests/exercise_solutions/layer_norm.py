"""A correct solution of the layer_norm exercise (used to check the checker)."""

from minigen import Function, Tensor


class LayerNorm(Function):
    def forward(self, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5):
        xp = x.xp
        mu = x.data.mean(axis=-1, keepdims=True)
        var = ((x.data - mu) ** 2).mean(axis=-1, keepdims=True)
        sigma = xp.sqrt(var + eps)
        xhat = (x.data - mu) / sigma
        self.saved = (xhat, sigma, weight.data)
        return weight.data * xhat + bias.data

    def backward(self, grad: Tensor):
        xhat, sigma, weight = self.saved
        g = grad.data
        lead = tuple(range(g.ndim - 1))
        grad_bias = g.sum(axis=lead)
        grad_weight = (g * xhat).sum(axis=lead)
        ghat = g * weight
        mean_g = ghat.mean(axis=-1, keepdims=True)
        mean_gx = (ghat * xhat).mean(axis=-1, keepdims=True)
        grad_x = (ghat - mean_g - xhat * mean_gx) / sigma
        return Tensor(grad_x), Tensor(grad_weight), Tensor(grad_bias)
