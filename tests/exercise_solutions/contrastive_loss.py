"""A correct solution of the contrastive_loss exercise (used to check the checker)."""

from minigen import Function, Tensor


class ContrastiveLoss(Function):
    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor):
        xp = image_features.xp
        x, y = image_features.data, text_features.data
        x_norm = xp.sqrt((x * x).sum(axis=1, keepdims=True))
        y_norm = xp.sqrt((y * y).sum(axis=1, keepdims=True))
        u, v = x / x_norm, y / y_norm
        s = xp.exp(logit_scale.data)
        logits = s * (u @ v.T)
        # Row-wise softmax P (image -> text) and column-wise softmax Q (text -> image).
        e_rows = xp.exp(logits - logits.max(axis=1, keepdims=True))
        p = e_rows / e_rows.sum(axis=1, keepdims=True)
        e_cols = xp.exp(logits - logits.max(axis=0, keepdims=True))
        q = e_cols / e_cols.sum(axis=0, keepdims=True)
        rows = xp.arange(logits.shape[0])
        labels = rows  # image i belongs with caption i: the diagonal
        loss_rows = -xp.log(p[rows, labels]).mean()
        loss_cols = -xp.log(q[labels, rows]).mean()
        self.saved = (u, v, x_norm, y_norm, s, logits, p, q)
        return 0.5 * (loss_rows + loss_cols)

    def backward(self, grad: Tensor):
        u, v, x_norm, y_norm, s, logits, p, q = self.saved
        xp = grad.xp
        b = logits.shape[0]
        eye = xp.eye(b, dtype=logits.dtype)
        g = grad.data / (2 * b) * ((p - eye) + (q - eye))  # dL/dS
        grad_u = s * (g @ v)
        grad_v = s * (g.T @ u)
        grad_t = (g * logits).sum()
        grad_x = (grad_u - u * (u * grad_u).sum(axis=1, keepdims=True)) / x_norm
        grad_y = (grad_v - v * (v * grad_v).sum(axis=1, keepdims=True)) / y_norm
        return Tensor(grad_x), Tensor(grad_y), Tensor(grad_t)
