"""A correct solution of the max_pool exercise (used to check the checker)."""

from minigen import Function, Tensor


class MaxPool2d(Function):
    """y = the maximum of each k×k window (stride s);  ∂L/∂x = G routed to each window's argmax."""

    def forward(self, x: Tensor, kernel_size: int = 2, stride: int = 2):
        xp = x.xp
        k, s = kernel_size, stride
        n, c, h, w = x.shape
        h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
        y = xp.full((n, c, h_out, w_out), -xp.inf, dtype=x.dtype)
        argmax = xp.zeros((n, c, h_out, w_out), dtype=xp.int64)
        for i in range(k):
            for j in range(k):
                candidate = x.data[:, :, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s]
                wins = candidate > y  # strictly greater: on a tie the first offset keeps the max
                y = xp.where(wins, candidate, y)
                argmax = xp.where(wins, i * k + j, argmax)
        self.saved = (argmax, x.shape, k, s)
        return y

    def backward(self, grad: Tensor):
        argmax, x_shape, k, s = self.saved
        xp = grad.xp
        g = grad.data
        h_out, w_out = g.shape[2:]
        dx = xp.zeros(x_shape, dtype=g.dtype)
        for i in range(k):
            for j in range(k):
                window = (
                    slice(None),
                    slice(None),
                    slice(i, i + s * (h_out - 1) + 1, s),
                    slice(j, j + s * (w_out - 1) + 1, s),
                )
                dx[window] += xp.where(argmax == i * k + j, g, 0.0)
        return Tensor(dx)
