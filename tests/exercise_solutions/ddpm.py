"""A correct solution of the ddpm exercise (used to check the checker)."""

from minigen import Function, Tensor


class QSample(Function):
    def forward(self, x0: Tensor, noise: Tensor, alpha_bars: Tensor, t: Tensor):
        xp = x0.xp
        alpha_bar = alpha_bars.data[t.data].reshape(-1, 1, 1, 1)
        signal, spread = xp.sqrt(alpha_bar), xp.sqrt(1.0 - alpha_bar)
        self.saved = (signal, spread)
        return signal * x0.data + spread * noise.data

    def backward(self, grad: Tensor):
        signal, spread = self.saved
        return Tensor(signal * grad.data), Tensor(spread * grad.data), None, None


class EpsilonLoss(Function):
    def forward(self, eps_pred: Tensor, eps: Tensor):
        diff = eps_pred.data - eps.data
        self.saved = diff
        return (diff * diff).mean()

    def backward(self, grad: Tensor):
        diff = self.saved
        return Tensor(grad.data * 2.0 * diff / diff.size), None
