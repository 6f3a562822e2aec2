"""A correct solution of the conv2d exercise (used to check the checker)."""

from minigen import Function, Tensor


class Conv2d(Function):
    """y = conv2d(x, W) with stride s and zero padding p (no bias)."""

    def forward(self, x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0):
        xp = x.xp
        s, p = stride, padding
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        x_pad = xp.pad(x.data, ((0, 0), (0, 0), (p, p), (p, p)))
        h_out = (h + 2 * p - kh) // s + 1
        w_out = (w + 2 * p - kw) // s + 1
        y = xp.zeros((n, o, h_out, w_out), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                patch = x_pad[:, :, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s]
                y += xp.einsum("nchw,oc->nohw", patch, weight.data[:, :, i, j])
        self.saved = (x_pad, weight.data, s, p, x.shape)
        return y

    def backward(self, grad: Tensor):
        x_pad, weight, s, p, x_shape = self.saved
        xp = grad.xp
        g = grad.data
        h_out, w_out = g.shape[2:]
        kh, kw = weight.shape[2:]
        dx_pad = xp.zeros_like(x_pad)
        dw = xp.zeros_like(weight)
        for i in range(kh):
            for j in range(kw):
                window = (
                    slice(None),
                    slice(None),
                    slice(i, i + s * (h_out - 1) + 1, s),
                    slice(j, j + s * (w_out - 1) + 1, s),
                )
                dx_pad[window] += xp.einsum("nohw,oc->nchw", g, weight[:, :, i, j])
                dw[:, :, i, j] = xp.einsum("nohw,nchw->oc", g, x_pad[window])
        h, w = x_shape[2:]
        dx = dx_pad[:, :, p : p + h, p : p + w]
        return Tensor(dx), Tensor(dw)
