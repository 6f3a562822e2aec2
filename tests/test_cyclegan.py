"""CycleGAN: the losses (formulas, gradcheck, PyTorch oracle), where the gradients go, the
image pool, the learning-rate schedule, one-batch overfitting and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from random_models import randomised_parameters

import minigen as mg
import minigen.nn as nn
from minigen.models.cyclegan import (
    LAMBDA_CYC,
    LAMBDA_ID,
    CycleGAN,
    ImagePool,
    cycle_loss,
    discriminator_objective,
    generator_objective,
    generator_terms,
    identity_loss,
    linear_decay,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    make_optimizers,
    make_schedulers,
    train_step,
)


def _f64(*shape: int, seed: int = 0) -> mg.Tensor:
    return mg.tensor(np.random.default_rng(seed).uniform(-1, 1, shape), dtype=mg.float64)


def _tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    """G, F: tanh(Conv3×3); D_A, D_B: Conv2×2 score maps (float64)."""
    nets = {
        "G": nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh()),
        "F": nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh()),
        "D_A": nn.Conv2d(1, 1, 2),
        "D_B": nn.Conv2d(1, 1, 2),
    }
    return {name: randomised_parameters(net, seed + i).to(mg.float64) for i, (name, net) in enumerate(nets.items())}


# ------------------------------------------------------------------------------ losses
def test_losses_are_the_lecture_formulas():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(2, 1, 3, 3))
    np.testing.assert_allclose(lsgan_generator_loss(mg.tensor(fake)).item(), ((fake - 1) ** 2).mean(), rtol=1e-12)
    expected = 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
    np.testing.assert_allclose(lsgan_discriminator_loss(mg.tensor(real), mg.tensor(fake)).item(), expected)
    a, b, c, d = (rng.uniform(-1, 1, (2, 1, 4, 4)) for _ in range(4))
    np.testing.assert_allclose(
        cycle_loss(mg.tensor(a), mg.tensor(b), mg.tensor(c), mg.tensor(d)).item(),
        np.abs(b - a).mean() + np.abs(d - c).mean(),
    )
    np.testing.assert_allclose(
        identity_loss(mg.tensor(a), mg.tensor(b), mg.tensor(c), mg.tensor(d)).item(),
        np.abs(b - a).mean() + np.abs(d - c).mean(),
    )
    assert (LAMBDA_CYC, LAMBDA_ID) == (10.0, 5.0)


def test_generator_objective_is_the_weighted_sum_of_its_terms():
    nets, x, y = _tiny_networks(), _f64(2, 1, 4, 4), _f64(2, 1, 4, 4, seed=1)
    with mg.no_grad():
        terms = generator_terms(nets["G"], nets["F"], nets["D_A"], nets["D_B"], x, y, lambda_cyc=4.0)
        expected = terms.gan_g + terms.gan_f + 4.0 * terms.cycle + 2.0 * terms.identity  # λ_id = 0.5·λ_cyc
        np.testing.assert_allclose(terms.total.item(), expected.item(), rtol=1e-12)
        G, F = nets["G"], nets["F"]
        np.testing.assert_allclose(terms.cycle.item(), cycle_loss(x, F(G(x)), y, G(F(y))).item())
        np.testing.assert_allclose(terms.identity.item(), identity_loss(x, F(x), y, G(y)).item())
        without = generator_terms(G, F, nets["D_A"], nets["D_B"], x, y, lambda_cyc=4.0, lambda_id=0.0)
        np.testing.assert_allclose(without.total.item(), (expected - 2.0 * terms.identity).item(), rtol=1e-12)


def test_losses_gradcheck():
    a, b = _f64(2, 1, 3, 3).requires_grad_(True), _f64(2, 1, 3, 3, seed=1).requires_grad_(True)
    mg.gradcheck(lsgan_generator_loss, a)
    mg.gradcheck(lsgan_discriminator_loss, a, b)
    x, y = _f64(2, 1, 3, 3, seed=2), _f64(2, 1, 3, 3, seed=3)
    mg.gradcheck(lambda p, q: cycle_loss(x, p, y, q), a, b)  # values kept off the |·| kink (random floats)
    mg.gradcheck(lambda p, q: identity_loss(x, p, y, q), a, b)


def test_objectives_gradcheck_through_the_networks():
    nets = _tiny_networks()
    x, y = _f64(1, 1, 4, 4).requires_grad_(True), _f64(1, 1, 4, 4, seed=1).requires_grad_(True)
    mg.gradcheck(lambda x, y: generator_objective(nets["G"], nets["F"], nets["D_A"], nets["D_B"], x, y), x, y)
    fake_x, fake_y = _f64(1, 1, 4, 4, seed=2), _f64(1, 1, 4, 4, seed=3)
    mg.gradcheck(lambda x, y: discriminator_objective(nets["D_A"], nets["D_B"], x, y, fake_x, fake_y), x, y)


@pytest.mark.torch
def test_composed_losses_against_pytorch():
    """L_G = L_GAN(G) + L_GAN(F) + 10·L_cyc + 5·L_id and L_D, values and gradients, against PyTorch."""
    torch = pytest.importorskip("torch")
    nets = _tiny_networks(3)
    x, y = _f64(2, 1, 5, 5), _f64(2, 1, 5, 5, seed=1)
    twins = {
        name: torch.nn.Conv2d(1, 1, 3, padding=1).double() if name in "GF" else torch.nn.Conv2d(1, 1, 2).double()
        for name in nets
    }
    with torch.no_grad():
        for name, net in nets.items():
            conv = net if isinstance(net, nn.Conv2d) else net[0]
            twins[name].weight.copy_(torch.tensor(conv.weight.detach().numpy()))
            twins[name].bias.copy_(torch.tensor(conv.bias.detach().numpy()))

    G, F, D_A, D_B = (nets[k] for k in ("G", "F", "D_A", "D_B"))
    terms = generator_terms(G, F, D_A, D_B, x, y)
    terms.total.backward()
    d_loss = discriminator_objective(D_A, D_B, x, y, terms.fake_x, terms.fake_y)
    for p in [*D_A.parameters(), *D_B.parameters()]:
        p.grad = None
    d_loss.backward()

    tG, tF = (lambda t: torch.tanh(twins["G"](t))), (lambda t: torch.tanh(twins["F"](t)))
    tD_A, tD_B = twins["D_A"], twins["D_B"]
    tx, ty = torch.tensor(x.numpy()), torch.tensor(y.numpy())
    fake_y, fake_x = tG(tx), tF(ty)
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    t_total = (
        ((tD_B(fake_y) - 1) ** 2).mean()
        + ((tD_A(fake_x) - 1) ** 2).mean()
        + 10.0 * (l1(tF(fake_y), tx) + l1(tG(fake_x), ty))
        + 5.0 * (l1(tG(ty), ty) + l1(tF(tx), tx))
    )
    t_total.backward()
    for p in [*tD_A.parameters(), *tD_B.parameters()]:
        p.grad = None
    t_d = 0.5 * (((tD_A(tx) - 1) ** 2).mean() + (tD_A(fake_x.detach()) ** 2).mean()) + 0.5 * (
        ((tD_B(ty) - 1) ** 2).mean() + (tD_B(fake_y.detach()) ** 2).mean()
    )
    t_d.backward()
    np.testing.assert_allclose(terms.total.item(), t_total.item(), rtol=1e-10)
    np.testing.assert_allclose(d_loss.item(), t_d.item(), rtol=1e-10)
    for name, net in nets.items():
        conv = net if isinstance(net, nn.Conv2d) else net[0]
        np.testing.assert_allclose(conv.weight.grad.numpy(), twins[name].weight.grad.numpy(), rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- where gradients go
def test_cycle_loss_sends_gradient_to_both_generators():
    nets, x, y = _tiny_networks(), _f64(2, 1, 4, 4), _f64(2, 1, 4, 4, seed=1)
    G, F = nets["G"], nets["F"]
    cycle_loss(x, F(G(x)), y, G(F(y))).backward()
    for net in (G, F):
        assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0 for p in net.parameters())
    # each direction alone already reaches both: A → B → A passes through G then F
    for p in [*G.parameters(), *F.parameters()]:
        p.grad = None
    cycle_loss(x, F(G(x)), y, y).backward()
    assert all(p.grad is not None and np.any(p.grad.numpy()) for p in [*G.parameters(), *F.parameters()])


def test_discriminator_step_leaves_the_generators_unchanged():
    mg.manual_seed(0)
    model = CycleGAN(1, base_channels=4, levels=2, disc_channels=4, disc_layers=1)
    opt_g, opt_d = make_optimizers(model)
    x, y = mg.rand(4, 1, 8, 8) * 2 - 1, mg.rand(4, 1, 8, 8) * 2 - 1
    fake_y, fake_x = model.G(x), model.F(y)  # still carrying G's and F's graph
    generators = {name: p.detach().numpy().copy() for name, p in model.named_parameters() if name[0] in "GF"}
    discriminators = {name: p.detach().numpy().copy() for name, p in model.named_parameters() if name.startswith("D")}
    loss = discriminator_objective(model.D_A, model.D_B, x, y, fake_x, fake_y)
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    params = dict(model.named_parameters())
    assert all(params[name].grad is None for name in generators)  # no gradient leaked through the fakes
    for name, before in generators.items():
        np.testing.assert_array_equal(params[name].detach().numpy(), before)
    assert all(not np.array_equal(params[name].detach().numpy(), before) for name, before in discriminators.items())


def test_train_step_updates_generators_first_then_discriminators():
    """The G step stores no gradient on D (frozen); the D step, on pooled (detached) fakes, none on G."""
    mg.manual_seed(0)
    model = CycleGAN(1, base_channels=4, levels=2, disc_channels=4, disc_layers=1)
    opt_g, opt_d = (
        mg.optim.SGD(model.generator_parameters(), lr=0.0),
        mg.optim.SGD(model.discriminator_parameters(), lr=0.0),
    )
    x, y = mg.rand(4, 1, 8, 8) * 2 - 1, mg.rand(4, 1, 8, 8) * 2 - 1
    stats = train_step(model, opt_g, opt_d, x, y, ImagePool(0), ImagePool(0))  # size 0: the fakes themselves
    assert set(stats) == {"g_loss", "gan_g", "gan_f", "cycle", "identity", "d_loss"} | {
        "D_A(x)",
        "D_A(fake)",
        "D_B(y)",
        "D_B(fake)",
    }
    assert all(p.requires_grad for p in model.discriminator_parameters())  # unfrozen again
    left = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    # With lr 0 nothing moved: recompute each objective alone and compare the gradients left behind.
    model.zero_grad()
    terms = generator_terms(model.G, model.F, model.D_A, model.D_B, x, y)
    terms.total.backward()
    for name, p in model.named_parameters():
        if name[0] in "GF":
            np.testing.assert_allclose(left[name], p.grad.numpy(), rtol=1e-5, atol=1e-7)
    model.zero_grad()
    discriminator_objective(model.D_A, model.D_B, x, y, terms.fake_x, terms.fake_y).backward()
    for name, p in model.named_parameters():
        if name.startswith("D"):
            np.testing.assert_allclose(left[name], p.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["g_loss"].item(), terms.total.item(), rtol=1e-6)


# ------------------------------------------------------------------------ image pool
def test_image_pool_fills_then_swaps_about_half(device):
    mg.manual_seed(0)
    pool = ImagePool(size=50)
    n_batches, batch = 300, 16
    swapped = returned_new = 0
    for b in range(n_batches):
        ids = np.arange(b * batch, (b + 1) * batch, dtype=np.float32)
        fakes = mg.tensor(np.broadcast_to(ids[:, None, None, None], (batch, 1, 2, 2)).copy(), device=device)
        fakes.requires_grad_(True)
        out = pool.query(fakes * 1.0)  # a non-leaf with a graph, as a generator's output
        assert not out.requires_grad and out.grad_fn is None  # detached
        shown = out.numpy()[:, 0, 0, 0]
        if b * batch >= 50:  # the pool is full: each fake is swapped with probability ½
            swapped += int((shown != ids).sum())
            returned_new += int((shown == ids).sum())
            assert np.all(shown[shown != ids] < b * batch)  # a swap returns an older fake
        elif (b + 1) * batch <= 50:
            np.testing.assert_array_equal(shown, ids)  # still filling: returned as they are
    decisions = swapped + returned_new
    rate = swapped / decisions
    standard_error = np.sqrt(0.25 / decisions)
    assert abs(rate - 0.5) < 4 * standard_error, (rate, standard_error)
    assert pool.count == 50


def test_image_pool_of_size_zero_and_errors():
    fakes = mg.randn(3, 1, 2, 2, requires_grad=True) * 2.0
    out = ImagePool(0).query(fakes)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), fakes.detach().numpy())
    pool = ImagePool(4)
    pool.query(mg.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"images of shape \(1, 3, 3\) given to a pool holding \(1, 2, 2\)"):
        pool.query(mg.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="swap_probability must be in"):
        ImagePool(5, swap_probability=1.5)


# ------------------------------------------------------------- schedule, optimisers
def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    factors = [linear_decay(t, 100) for t in range(101)]
    assert factors[:50] == [1.0] * 50
    np.testing.assert_allclose(factors[50:], np.linspace(1.0, 0.0, 51))
    model = CycleGAN(1, base_channels=4, levels=1, disc_channels=4, disc_layers=1)
    opt_g, opt_d = make_optimizers(model)
    assert opt_g.param_groups[0]["lr"] == opt_d.param_groups[0]["lr"] == 2e-4
    assert opt_g.param_groups[0]["betas"] == opt_d.param_groups[0]["betas"] == (0.5, 0.999)
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in model.generator_parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in model.discriminator_parameters()}
    schedules = make_schedulers(opt_g, opt_d, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt_g.param_groups[0]["lr"])
        for s in schedules:
            s.step()
    np.testing.assert_allclose(lrs, 2e-4 * np.array([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]))
    assert opt_d.param_groups[0]["lr"] == 0.0


# ------------------------------------------------------------------------- training
def test_cyclegan_overfits_one_batch():
    mg.manual_seed(0)
    model = CycleGAN(1, base_channels=8, levels=2, disc_channels=8, disc_layers=1)
    opt_g, opt_d = make_optimizers(model, lr=2e-3)
    rng = np.random.default_rng(0)
    x = mg.tensor((rng.random((4, 1, 8, 8)) > 0.7).astype(np.float32) * 2 - 1)
    y = mg.tensor((rng.random((4, 1, 8, 8)) > 0.3).astype(np.float32) * 2 - 1)
    pools = ImagePool(8), ImagePool(8)
    first = train_step(model, opt_g, opt_d, x, y, *pools)
    for _ in range(60):
        stats = train_step(model, opt_g, opt_d, x, y, *pools)
    assert stats["cycle"].item() < 0.2 * first["cycle"].item()
    assert stats["g_loss"].item() < 0.5 * first["g_loss"].item()


def test_domains_with_different_shapes_are_rejected():
    model = CycleGAN(1, base_channels=4, levels=1, disc_channels=4, disc_layers=1)
    x, y = mg.zeros(2, 1, 8, 8), mg.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"domain A images x \(2, 1, 8, 8\) and domain B images y \(2, 1, 16, 16\)"):
        generator_objective(model.G, model.F, model.D_A, model.D_B, x, y)
    with pytest.raises(ValueError, match="same C, H and W"):
        discriminator_objective(model.D_A, model.D_B, x, y, x, y)
    with pytest.raises(ValueError, match=r"cycle_loss \(x, F\(G\(x\)\)\): shapes differ"):
        cycle_loss(x, y, x, x)
