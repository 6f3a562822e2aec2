"""GANs: the losses, the WGAN-GP penalty (a second derivative), the networks, training steps."""

from __future__ import annotations

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen.models.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    TrainingLog,
    critic_loss,
    discriminator_loss,
    discriminator_step,
    generator_loss_nonsaturating,
    generator_loss_saturating,
    generator_step,
    gradient_penalty,
    r1_penalty,
    train_step,
    update_ema,
    wasserstein_generator_loss,
)
from minigen.testing import cpu_random_numbers_on_every_device


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


# ------------------------------------------------------------------------------ losses
def test_losses_match_the_minimax_formulas():
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=7) * 3, rng.normal(size=5) * 3
    real, fake = mg.tensor(r, dtype=mg.float64), mg.tensor(f, dtype=mg.float64)
    # L_D = −mean log D(x) − mean log(1 − D(G(z)))  with D = σ(logit), log(1 − σ(l)) = log σ(−l)
    expected_d = -_log_sigmoid(r).mean() - _log_sigmoid(-f).mean()
    np.testing.assert_allclose(discriminator_loss(real, fake).item(), expected_d, rtol=1e-12)
    np.testing.assert_allclose(generator_loss_saturating(fake).item(), _log_sigmoid(-f).mean(), rtol=1e-12)
    np.testing.assert_allclose(generator_loss_nonsaturating(fake).item(), -_log_sigmoid(f).mean(), rtol=1e-12)
    np.testing.assert_allclose(critic_loss(real, fake).item(), f.mean() - r.mean(), rtol=1e-12)
    np.testing.assert_allclose(wasserstein_generator_loss(fake).item(), -f.mean(), rtol=1e-12)


def test_losses_stay_finite_for_confident_logits():
    huge = mg.tensor([200.0, -200.0], dtype=mg.float64)
    for value in (
        discriminator_loss(huge, huge),
        generator_loss_saturating(huge),
        generator_loss_nonsaturating(huge),
    ):
        assert np.isfinite(value.item())


def test_equilibrium_discriminator_loss_is_2_log_2():
    zero = mg.zeros(4, dtype=mg.float64)
    np.testing.assert_allclose(discriminator_loss(zero, zero).item(), 2 * np.log(2), rtol=1e-12)


@pytest.mark.parametrize("loss", [generator_loss_saturating, generator_loss_nonsaturating])
def test_generator_losses_gradcheck(loss):
    logits = mg.tensor(np.linspace(-4, 4, 6).reshape(2, 3), dtype=mg.float64, requires_grad=True)
    mg.gradcheck(loss, logits)


def test_discriminator_loss_gradcheck_with_patch_logits():
    rng = np.random.default_rng(1)
    real = mg.tensor(rng.normal(size=(2, 1, 3, 3)), requires_grad=True)
    fake = mg.tensor(rng.normal(size=(2, 1, 3, 3)), requires_grad=True)
    mg.gradcheck(discriminator_loss, real, fake)


def test_saturating_loss_gives_vanishing_gradient_when_d_rejects_fakes():
    """The docstring's claim: with D(G(z)) ≈ 0, ∂L/∂l ≈ −σ(l) ≈ 0 (saturating) vs σ(l) − 1 ≈ −1."""
    grads = {}
    for name, loss in [("sat", generator_loss_saturating), ("nonsat", generator_loss_nonsaturating)]:
        logits = mg.full((1,), -8.0, dtype=mg.float64, requires_grad=True)  # D(G(z)) = σ(−8) ≈ 3e-4
        loss(logits).backward()
        grads[name] = logits.grad.item()
    np.testing.assert_allclose(grads["sat"], -1 / (1 + np.exp(8.0)), rtol=1e-9)
    np.testing.assert_allclose(grads["nonsat"], 1 / (1 + np.exp(8.0)) - 1, rtol=1e-9)
    assert abs(grads["nonsat"]) > 1000 * abs(grads["sat"])


# ----------------------------------------------------------------------- WGAN-GP penalty
def _tanh_critic(x, w1, b1, w2, b2):
    return ((x @ w1.T + b1).tanh() @ w2.T + b2).reshape(x.shape[0])


def _penalty_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    real = mg.tensor(rng.normal(size=(3, 2)))
    fake = mg.tensor(rng.normal(size=(3, 2)))
    alpha = mg.tensor(rng.uniform(0.1, 0.9, size=3))
    params = [
        mg.tensor(rng.normal(size=(4, 2)), requires_grad=True),
        mg.tensor(rng.normal(size=4) * 0.5, requires_grad=True),
        mg.tensor(rng.normal(size=(1, 4)), requires_grad=True),
        mg.tensor(rng.normal(size=1), requires_grad=True),
    ]
    return real, fake, alpha, params


def _penalty_fn(real, fake, alpha, w1, b1, w2, b2):
    return gradient_penalty(lambda x: _tanh_critic(x, w1, b1, w2, b2), real, fake, weight=10.0, alpha=alpha)


def test_gradient_penalty_of_a_linear_critic_is_known():
    # C(x) = w·x + b has ∇_x C = w everywhere, so the penalty is λ (‖w‖ − 1)².
    w = mg.tensor([[3.0, 4.0]], dtype=mg.float64)
    real = mg.tensor(np.random.default_rng(0).normal(size=(5, 2)))
    fake = mg.tensor(np.random.default_rng(1).normal(size=(5, 2)))
    penalty = gradient_penalty(lambda x: (x @ w.T).reshape(-1), real, fake, weight=10.0)
    np.testing.assert_allclose(penalty.item(), 10.0 * (5.0 - 1.0) ** 2, rtol=1e-10)


def test_gradient_penalty_gradcheck_through_double_backward():
    """∂penalty/∂θ differentiates ∇_x C: it only works if create_graph=True records that gradient."""
    real, fake, alpha, params = _penalty_inputs()
    mg.gradcheck(_penalty_fn, real, fake, alpha, *params)


def test_gradient_penalty_gradgradcheck():
    real, fake, alpha, params = _penalty_inputs(seed=3)
    mg.gradgradcheck(_penalty_fn, real, fake, alpha, *params)


def test_gradient_penalty_matches_torch():
    torch = pytest.importorskip("torch")
    real, fake, alpha, params = _penalty_inputs(seed=5)
    penalty = _penalty_fn(real, fake, alpha, *params)
    penalty.backward()

    t_params = [torch.tensor(p.detach().numpy(), requires_grad=True) for p in params]
    t_real, t_fake, t_alpha = (torch.tensor(t.numpy()) for t in (real, fake, alpha))
    x_hat = (t_alpha[:, None] * t_real + (1 - t_alpha[:, None]) * t_fake).requires_grad_()
    w1, b1, w2, b2 = t_params
    scores = (torch.tanh(x_hat @ w1.T + b1) @ w2.T + b2).reshape(-1)
    (g,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    t_penalty = 10.0 * ((g.norm(dim=1) - 1) ** 2).mean()
    t_penalty.backward()
    np.testing.assert_allclose(penalty.item(), t_penalty.item(), rtol=1e-9)
    for p, tp in zip(params[:3], t_params[:3]):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-7, atol=1e-10)
    # The output bias b₂ shifts C but not ∇_x C: the penalty does not depend on it.
    assert params[3].grad is None or not params[3].grad.numpy().any()


def test_gradient_penalty_works_under_no_grad():
    real, fake, alpha, params = _penalty_inputs()
    expected = _penalty_fn(real, fake, alpha, *params).item()
    with mg.no_grad():
        assert _penalty_fn(real, fake, alpha, *params).item() == pytest.approx(expected, rel=1e-12)


def test_r1_penalty_of_a_linear_discriminator_is_known():
    # D(x) = w·x has ∇_x D = w, so R1 = (γ/2) ‖w‖².
    w = mg.tensor([[3.0, 4.0]], dtype=mg.float64)
    real = mg.tensor(np.random.default_rng(0).normal(size=(5, 2)))
    np.testing.assert_allclose(r1_penalty(lambda x: (x @ w.T).reshape(-1), real, weight=2.0).item(), 25.0)


def test_r1_penalty_gradcheck_through_double_backward():
    real, _, _, params = _penalty_inputs(seed=7)

    def r1(real, w1, b1, w2, b2):
        return r1_penalty(lambda x: _tanh_critic(x, w1, b1, w2, b2), real, weight=3.0)

    mg.gradcheck(r1, real, *params)


def test_discriminator_step_adds_r1():
    g, d = MLPGenerator(2, 2, hidden=(8,)), MLPDiscriminator(2, hidden=(8,))
    opt_d = mg.optim.SGD(d.parameters(), lr=0.0)  # lr 0: the step leaves D unchanged, so losses compare
    real, z = mg.randn(6, 2), mg.randn(6, 2)
    plain = discriminator_step(g, d, opt_d, real, z)
    with_r1 = discriminator_step(g, d, opt_d, real, z, r1_weight=5.0)
    assert with_r1["r1"].item() > 0
    assert with_r1["d_loss"].item() == pytest.approx(plain["d_loss"].item() + with_r1["r1"].item(), rel=1e-5)


def test_update_ema_averages_parameters_and_copies_buffers():
    model = DCGANGenerator(latent_dim=4, image_size=8, base_channels=4)
    average = DCGANGenerator(latent_dim=4, image_size=8, base_channels=4)
    before = [p.detach().numpy().copy() for p in average.parameters()]
    with mg.no_grad():
        model(mg.randn(3, 4))  # train mode: moves the batch-norm running statistics
    update_ema(average, model, decay=0.9)
    for b, p_avg, p in zip(before, average.parameters(), model.parameters()):
        np.testing.assert_allclose(p_avg.detach().numpy(), 0.9 * b + 0.1 * p.detach().numpy(), rtol=1e-6)
    for b_avg, b in zip(average.buffers(), model.buffers()):
        np.testing.assert_array_equal(b_avg.numpy(), b.numpy())


def test_optim_ema_draws_what_the_second_copy_draws():
    """The demos' ``optim.EMA`` (averages swapped into G, batch norm in eval mode) and the
    older ``update_ema`` (averages kept in a second copy of G) give the same samples."""
    mg.manual_seed(0)
    generator = DCGANGenerator(latent_dim=4, image_size=8, base_channels=4, num_classes=3)
    average = DCGANGenerator(latent_dim=4, image_size=8, base_channels=4, num_classes=3)
    average.load_state_dict(generator.state_dict())
    ema = mg.optim.EMA(generator, decay=0.8)
    optimizer = mg.optim.SGD(generator.parameters(), lr=0.1)
    z, y = mg.randn(5, 4), mg.tensor(np.array([0, 1, 2, 1, 0]))
    for _ in range(3):
        optimizer.zero_grad()
        (generator(z, y) ** 2).mean().backward()  # train mode: batch statistics, running ones move
        optimizer.step()
        ema.update(generator)
        update_ema(average, generator, decay=0.8)
    generator.eval()
    with mg.no_grad():
        last = generator(z, y).numpy()
        with ema.average_parameters(generator):
            from_ema = generator(z, y).numpy()
        from_copy = average.eval()(z, y).numpy()
    np.testing.assert_allclose(from_ema, from_copy, rtol=1e-5, atol=1e-6)
    assert not np.allclose(from_ema, last)  # the average is not the last weights
    np.testing.assert_array_equal(generator(z, y).detach().numpy(), last)  # the trained weights are back


# ------------------------------------------------------------------------------ networks
def test_mlp_shapes():
    g = MLPGenerator(3, (1, 4, 4), hidden=(8,), output="tanh")
    d = MLPDiscriminator((1, 4, 4), hidden=(8,))
    x = g(mg.randn(5, 3))
    assert x.shape == (5, 1, 4, 4)
    assert float(x.abs().max()) <= 1.0
    assert d(x).shape == (5,)


@pytest.mark.parametrize("size, start", [(16, 4), (28, 7)])
def test_conditional_dcgan_shapes_and_the_extra_channel(size, start):
    g = DCGANGenerator(latent_dim=8, image_size=size, base_channels=8, num_classes=10)
    d = DCGANDiscriminator(image_size=size, base_channels=8, num_classes=10)
    z, labels = mg.randn(4, 8), mg.tensor([0, 3, 3, 9])
    assert g.start_size == start
    # The label becomes a 1 × H₀ × W₀ map appended to the C₀ projected channels ...
    h = mg.zeros(4, g.start_channels, start, start)
    assert g.label_channel(h, labels).shape == (4, g.start_channels + 1, start, start)
    assert g.upsample[0].weight.shape[0] == g.start_channels + 1  # ConvTranspose2d weight: (C_in, C_out, k, k)
    # ... and, in D, a 1 × H × W map appended to the image's channel.
    images = g(z, labels)
    assert images.shape == (4, 1, size, size)
    assert d.label_channel(images, labels).shape == (4, 2, size, size)
    assert d.features[0].weight.shape[1] == 2
    assert d(images, labels).shape == (4,)


def test_conditional_generator_uses_the_label():
    g = DCGANGenerator(latent_dim=8, image_size=16, base_channels=8, num_classes=10).eval()
    z = mg.randn(1, 8).expand(2, 8)
    with mg.no_grad():
        out = g(z, mg.tensor([1, 7])).numpy()
    assert np.abs(out[0] - out[1]).max() > 1e-3
    with pytest.raises(ValueError, match="conditional"):
        g(z)


def test_patch_discriminator_returns_a_map_of_logits():
    d = DCGANDiscriminator(image_size=16, base_channels=8, patch=True)
    logits = d(mg.randn(3, 1, 16, 16))
    assert logits.shape == (3, 1, 4, 4)
    assert discriminator_loss(logits, logits).shape == ()


# ------------------------------------------------------------------------------ training
def test_discriminator_separates_a_tiny_real_fake_batch():
    d = MLPDiscriminator(2, hidden=(16, 16))
    opt = mg.optim.Adam(d.parameters(), lr=1e-2)
    real = mg.tensor(np.random.default_rng(0).normal(loc=1.0, scale=0.3, size=(8, 2)))
    fake = mg.tensor(np.random.default_rng(1).normal(loc=-1.0, scale=0.3, size=(8, 2)))
    first = None
    for _ in range(100):
        loss = discriminator_loss(d(real), d(fake))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with mg.no_grad():
        assert float(d(real).sigmoid().min()) > 0.95
        assert float(d(fake).sigmoid().max()) < 0.05
    assert loss.item() < 0.05 * first


def test_discriminator_step_freezes_generator_and_generator_step_freezes_discriminator():
    g, d = MLPGenerator(2, 2, hidden=(8,)), MLPDiscriminator(2, hidden=(8,))
    opt_g, opt_d = mg.optim.SGD(g.parameters(), lr=0.1), mg.optim.SGD(d.parameters(), lr=0.1)
    g_before = [p.detach().numpy().copy() for p in g.parameters()]
    stats = discriminator_step(g, d, opt_d, mg.randn(6, 2), mg.randn(6, 2))
    assert all(np.array_equal(a, p.detach().numpy()) for a, p in zip(g_before, g.parameters()))
    assert set(stats) == {"d_loss", "D(x)", "D(G(z))"}
    d_before = [p.detach().numpy().copy() for p in d.parameters()]
    generator_step(g, d, opt_g, mg.randn(6, 2))
    assert all(np.array_equal(a, p.detach().numpy()) for a, p in zip(d_before, d.parameters()))
    assert all(p.requires_grad for p in d.parameters())  # unfrozen again for the next D step
    assert not all(np.array_equal(a, p.detach().numpy()) for a, p in zip(g_before, g.parameters()))


def test_generator_learns_a_point_mass():
    """Algorithm 1 end to end: with all the data at one point, G(z) must move there."""
    target = mg.tensor([[1.5, -1.0]])
    g, d = MLPGenerator(2, 2, hidden=(16,)), MLPDiscriminator(2, hidden=(16,))
    opt_g = mg.optim.Adam(g.parameters(), lr=1e-2, betas=(0.5, 0.999))
    opt_d = mg.optim.Adam(d.parameters(), lr=1e-2, betas=(0.5, 0.999))

    def batches():
        while True:
            yield target.expand(32, 2)

    stream = batches()
    for _ in range(300):
        train_step(g, d, opt_g, opt_d, stream, latent_dim=2, k=1)
    with mg.no_grad():
        samples = g(mg.randn(256, 2)).numpy()
    assert np.linalg.norm(samples.mean(axis=0) - target.numpy()[0]) < 0.15


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_conditional_dcgan_train_step_same_on_every_device(device, loss):
    """One conditional train step on each device gives the same losses (catches NumPy-only code on the GPU path).

    The step draws noise (z, and the interpolation ε of the gradient penalty); CuPy's
    generator draws other numbers than the CPU's, so every device draws the CPU's here.
    """
    results = []
    with cpu_random_numbers_on_every_device():
        for dev in ("cpu", device):
            results.append(_conditional_dcgan_step(dev, loss))
    for name in results[0]:
        assert results[1][name] == pytest.approx(results[0][name], rel=1e-4, abs=1e-6)


def _conditional_dcgan_step(dev: str, loss: str) -> dict[str, float]:
    """One conditional GAN train step on ``dev`` from host-initialised weights; the losses as floats."""
    mg.manual_seed(0)
    norm = "none" if loss == "wgan-gp" else "batch"
    g = DCGANGenerator(latent_dim=4, image_size=8, base_channels=4, num_classes=3).to(dev)
    d = DCGANDiscriminator(image_size=8, base_channels=4, num_classes=3, norm=norm).to(dev)
    opt_g, opt_d = mg.optim.Adam(g.parameters(), lr=1e-3), mg.optim.Adam(d.parameters(), lr=1e-3)
    mg.manual_seed(1)  # fresh generators: with the CPU's numbers on every device, the same draws
    x = mg.rand(4, 1, 8, 8, device=dev) * 2 - 1
    y = mg.tensor([0, 1, 2, 0], device=dev)
    stream = iter([(x, y), (x, y)])
    stats = train_step(g, d, opt_g, opt_d, stream, latent_dim=4, k=2, loss=loss)
    if loss == "wgan-gp":
        assert "gp" in stats
    assert all(v.device == mg.device(dev) for v in stats.values())
    return {name: v.item() for name, v in stats.items()}


def test_unknown_loss_is_rejected():
    g, d = MLPGenerator(2, 2, hidden=(4,)), MLPDiscriminator(2, hidden=(4,))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        generator_step(g, d, mg.optim.SGD(g.parameters(), lr=0.1), mg.randn(2, 2), loss="hinge")


def test_training_log_syncs_every_n_steps():
    log = TrainingLog(sync_every=3)
    for step in range(7):
        synced = log.record({"d_loss": mg.tensor(float(step)), "g_loss": mg.tensor(-float(step))})
        assert synced == (step % 3 == 2)  # True exactly on the steps that copied to the host
        if step == 1:
            assert log.history == {}  # nothing copied to the host yet
    assert log.history["d_loss"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    log.flush()
    assert log.history["g_loss"] == [-0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
    assert log.last("d_loss", window=2) == pytest.approx(5.5)


def test_networks_are_modules_with_parameters():
    for model in (
        MLPGenerator(2, 2),
        MLPDiscriminator(2),
        DCGANGenerator(num_classes=10),
        DCGANDiscriminator(num_classes=10, patch=True),
    ):
        assert isinstance(model, nn.Module)
        assert sum(p.numel() for p in model.parameters()) > 0
