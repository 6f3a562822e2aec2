"""A correct solution of the vae exercise (used to check the checker)."""

from minigen import Function, Tensor


class Reparameterize(Function):
    def forward(self, mu: Tensor, logvar: Tensor, eps: Tensor):
        sigma = mu.xp.exp(0.5 * logvar.data)
        self.saved = (sigma, eps.data)
        return mu.data + sigma * eps.data

    def backward(self, grad: Tensor):
        sigma, eps = self.saved
        grad_logvar = grad.data * eps * sigma * 0.5
        return grad, Tensor(grad_logvar), None


class KLDivergence(Function):
    def forward(self, mu: Tensor, logvar: Tensor):
        variance = mu.xp.exp(logvar.data)
        self.saved = (mu.data, variance)
        return -0.5 * (1.0 + logvar.data - mu.data**2 - variance).sum(axis=-1)

    def backward(self, grad: Tensor):
        mu, variance = self.saved
        g = grad.data.reshape(-1, 1)
        grad_mu = g * mu
        grad_logvar = g * 0.5 * (variance - 1.0)
        return Tensor(grad_mu), Tensor(grad_logvar)
