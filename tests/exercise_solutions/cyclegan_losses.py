"""A correct solution of the cyclegan_losses exercise (used to check the checker)."""

from minigen import Function, Tensor


class L1Loss(Function):
    def forward(self, output: Tensor, target: Tensor):
        diff = output.data - target.data
        self.saved = (diff,)
        return output.xp.abs(diff).mean()

    def backward(self, grad: Tensor):
        (diff,) = self.saved
        d = grad.data * grad.xp.sign(diff) / diff.size
        return Tensor(d), Tensor(-d)


def lsgan(scores, target):
    return ((scores - target) ** 2).mean()


def generator_objective(G, F, D_A, D_B, x, y, lambda_cyc=10.0, lambda_id=5.0):
    fake_y, fake_x = G(x), F(y)
    gan = lsgan(D_B(fake_y), 1.0) + lsgan(D_A(fake_x), 1.0)
    cycle = L1Loss.apply(F(fake_y), x) + L1Loss.apply(G(fake_x), y)
    identity = L1Loss.apply(G(y), y) + L1Loss.apply(F(x), x)
    return gan + lambda_cyc * cycle + lambda_id * identity


def discriminator_objective(D_A, D_B, x, y, fake_x, fake_y):
    fake_x, fake_y = fake_x.detach(), fake_y.detach()
    loss_a = 0.5 * (lsgan(D_A(x), 1.0) + lsgan(D_A(fake_x), 0.0))
    loss_b = 0.5 * (lsgan(D_B(y), 1.0) + lsgan(D_B(fake_y), 0.0))
    return loss_a + loss_b
