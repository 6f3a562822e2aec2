"""pix2pix: the U-Net generator (skips, both upsamplers), the PatchGAN and its receptive
field, the losses (against PyTorch), train/eval equality, one-batch overfitting, errors."""

from __future__ import annotations

import numpy as np
import pytest
from random_models import normal_f64, randomised_parameters

import minigen as mg
import minigen.nn as nn
from minigen.models.pix2pix import (
    L1_WEIGHT,
    DecoderBlock,
    EncoderBlock,
    PatchDiscriminator,
    UNetGenerator,
    discriminator_loss,
    generator_loss,
    pretrain_step,
    receptive_field,
    train_step,
)


# ----------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_unet_skip_shapes(size, upsample, device):
    with mg.no_grad():  # forward values only
        G = UNetGenerator(1, 3, base_channels=4, levels=3, upsample=upsample).to(device)
        x = mg.randn(2, 1, size, size, device=device)
        skips = G.features(x)
        widths = [4, 8, 16, 32]
        assert [tuple(s.shape) for s in skips] == [(2, w, size // 2**k, size // 2**k) for k, w in enumerate(widths)]
        # Each decoder output has the shape of the skip it is concatenated with.
        h = skips[-1]
        for decoder, skip in zip(G.decoders, reversed(skips[:-1])):
            out = decoder(h)
            assert out.shape == skip.shape
            h = mg.cat([out, skip], dim=1)
        y = G(x)
        assert y.shape == (2, 3, size, size) and y.device == mg.device(device)
        assert np.abs(y.numpy()).max() <= 1.0  # tanh


def test_unet_train_and_eval_compute_the_same_function():
    with mg.no_grad():  # forward values only
        G = randomised_parameters(UNetGenerator(1, 1, base_channels=4, levels=2))
        x = mg.randn(3, 1, 8, 8)
        G.train()
        in_training = G(x).numpy()
        G.eval()
        np.testing.assert_array_equal(G(x).numpy(), in_training)
        # ...and an image's output does not depend on the rest of its batch (no batch statistics)
        np.testing.assert_allclose(G(x[:1]).numpy(), in_training[:1], rtol=1e-5, atol=1e-6)


def test_noise_input_z():
    """G(x, z): z is drawn fresh each call unless given; with z fixed, G is one function in both modes."""
    G = randomised_parameters(UNetGenerator(1, 1, base_channels=4, levels=2, noise_channels=1))
    x = mg.randn(2, 1, 8, 8)
    z = mg.randn(2, 1, 8, 8)
    with mg.no_grad():
        assert not np.array_equal(G(x).numpy(), G(x).numpy())  # fresh z each call
        G.train()
        fixed = G(x, z).numpy()
        G.eval()
        np.testing.assert_array_equal(G(x, z).numpy(), fixed)
    with pytest.raises(ValueError, match=r"z must have shape \(2, 1, 8, 8\), got \(2, 2, 8, 8\)"):
        G(x, mg.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="noise_channels=0"):
        UNetGenerator(1, 1, base_channels=4, levels=2)(x, z)


def test_unet_rejects_sizes_it_cannot_halve_enough_times():
    G = UNetGenerator(1, 1, base_channels=4, levels=3)
    with pytest.raises(ValueError, match=r"12×12 cannot be halved levels=3 times.*multiples of 2\^levels = 8"):
        G(mg.zeros(1, 1, 12, 12))
    with pytest.raises(ValueError, match=r"valid sizes: 8, 16, 24"):
        G(mg.zeros(1, 1, 16, 20))
    with pytest.raises(ValueError, match=r"expected input \(N, 1, H, W\)"):
        G(mg.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="upsample must be one of"):
        UNetGenerator(upsample="bilinear")
    with pytest.raises(ValueError, match="levels must be at least 1"):
        UNetGenerator(levels=0)


# --------------------------------------------------------------------- gradient checks
def test_encoder_block_gradcheck():
    mg.gradcheck(randomised_parameters(EncoderBlock(2, 4)).to(mg.float64), normal_f64(2, 2, 4, 4))


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_decoder_block_gradcheck(upsample):
    block = randomised_parameters(DecoderBlock(4, 4, upsample)).to(mg.float64)
    mg.gradcheck(block, normal_f64(2, 4, 2, 2))


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
def test_unet_generator_gradcheck(upsample):
    """The whole U-Net, with respect to its input (its blocks' weights are checked above)."""
    G = randomised_parameters(UNetGenerator(1, 2, base_channels=4, levels=2, upsample=upsample), scale=0.2).to(
        mg.float64
    )
    mg.gradcheck(lambda x: G(x), normal_f64(1, 1, 4, 4).requires_grad_(True))


def test_patch_discriminator_gradcheck():
    D = randomised_parameters(PatchDiscriminator(3, base_channels=4, num_layers=2), scale=0.2).to(mg.float64)
    mg.gradcheck(lambda y, x: D(y, condition=x), normal_f64(2, 2, 4, 4), normal_f64(2, 1, 4, 4, seed=1))


def test_losses_gradcheck():
    fake = mg.tensor(np.random.default_rng(0).normal(size=(2, 1, 3, 3)), dtype=mg.float64, requires_grad=True)
    real = normal_f64(2, 1, 3, 3, seed=1).requires_grad_(True)
    output = normal_f64(2, 1, 4, 4, seed=2).requires_grad_(True)
    target = normal_f64(2, 1, 4, 4, seed=3)
    mg.gradcheck(lambda f, o: generator_loss(f, o, target)[0], fake, output)
    mg.gradcheck(discriminator_loss, real, fake)


# ----------------------------------------------------------------------- PatchGAN
@pytest.mark.parametrize("num_layers, expected", [(1, 8), (2, 12), (3, 16)])
def test_receptive_field_matches_a_brute_force_check(num_layers, expected):
    """Perturb one input pixel and see which outputs change: their span is the receptive field."""
    with mg.no_grad():  # forward values only
        D = randomised_parameters(PatchDiscriminator(1, base_channels=4, num_layers=num_layers), scale=0.3).to(
            mg.float64
        )
        assert D.receptive_field == receptive_field(D.net) == expected
        size = 32
        x = np.random.default_rng(1).normal(size=(1, 1, size, size))
        base = D(mg.tensor(x)).numpy()[0, 0]
        stride = size // base.shape[0]  # 2: one stride-2 layer
        # Output o sees inputs [stride·o − p, stride·o − p + r − 1]; read p from the first output, then
        # check every output and every pixel: the outputs a pixel moves are exactly those whose patch holds it.
        touched = np.zeros((size, base.shape[0]), bool)  # along one axis (the field is square)
        for pixel in range(size):
            bumped = x.copy()
            bumped[0, 0, 16, pixel] += 1.0
            moved = np.abs(D(mg.tensor(bumped)).numpy()[0, 0] - base) > 1e-12
            touched[pixel] = moved.any(axis=0)
        inside = 0
        for o in range(base.shape[0]):
            first = stride * o - (expected - stride) // 2  # where output o's patch starts
            if first < 0 or first + expected > size:
                continue  # the patch hangs over the zero padding
            pixels = np.flatnonzero(touched[:, o])
            assert (pixels.min(), pixels.max()) == (first, first + expected - 1), (o, pixels)
            inside += 1
        assert inside >= 4


def test_receptive_field_formula():
    chain = [nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2)]
    # r = 1 + 2·1 + 2·1 + (3 − 1)·2·2 = 13
    assert receptive_field(chain) == 13
    with pytest.raises(ValueError, match="transposed"):
        receptive_field([nn.ConvTranspose2d(1, 1, 4, stride=2)])


def test_conditional_discriminator_stacks_input_and_output():
    with mg.no_grad():  # forward values only
        D = PatchDiscriminator(4, base_channels=4)
        x, y = mg.randn(2, 1, 16, 16), mg.randn(2, 3, 16, 16)
        assert D(y, condition=x).shape == (2, 1, 8, 8)
        np.testing.assert_allclose(D(y, condition=x).numpy(), D(mg.cat([x, y], dim=1)).numpy())
        with pytest.raises(ValueError, match=r"expected 4 channels in total.*image \(2, 3, 16, 16\)$"):
            D(y)


# ---------------------------------------------------------------------------- losses
def test_losses_are_the_lecture_formulas():
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=(2, 1, 3, 3))
    out, tgt = rng.uniform(-1, 1, (2, 1, 4, 4)), rng.uniform(-1, 1, (2, 1, 4, 4))
    log_sigmoid = lambda v: -np.logaddexp(0.0, -v)  # noqa: E731
    total, adversarial, l1 = generator_loss(mg.tensor(f), mg.tensor(out), mg.tensor(tgt))
    np.testing.assert_allclose(adversarial.item(), -log_sigmoid(f).mean(), rtol=1e-12)
    np.testing.assert_allclose(l1.item(), np.abs(out - tgt).mean(), rtol=1e-12)
    np.testing.assert_allclose(total.item(), adversarial.item() + 100.0 * l1.item(), rtol=1e-12)
    assert L1_WEIGHT == 100.0
    expected_d = 0.5 * (-log_sigmoid(r).mean() - log_sigmoid(-f).mean())  # halved
    np.testing.assert_allclose(discriminator_loss(mg.tensor(r), mg.tensor(f)).item(), expected_d, rtol=1e-12)
    with pytest.raises(ValueError, match=r"output shape \(2, 1, 4, 4\) != target shape \(2, 3, 4, 4\)"):
        generator_loss(mg.tensor(f), mg.tensor(out), mg.zeros(2, 3, 4, 4))


@pytest.mark.torch
def test_composed_losses_against_pytorch():
    """G's loss (non-saturating + 100·L1 through a conditional D) and D's halved loss, value and gradients."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (2, 1, 6, 6)), rng.uniform(-1, 1, (2, 1, 6, 6))
    G = randomised_parameters(nn.Conv2d(1, 1, 3, padding=1), seed=1).to(mg.float64)
    D = randomised_parameters(nn.Conv2d(2, 1, 2, stride=2), seed=2).to(mg.float64)
    tG, tD = torch.nn.Conv2d(1, 1, 3, padding=1).double(), torch.nn.Conv2d(2, 1, 2, stride=2).double()
    with torch.no_grad():
        for mine, theirs in ((G, tG), (D, tD)):
            theirs.weight.copy_(torch.tensor(mine.weight.detach().numpy()))
            theirs.bias.copy_(torch.tensor(mine.bias.detach().numpy()))

    xs, ys = mg.tensor(x), mg.tensor(y)
    fake = G(xs).tanh()
    d_loss = discriminator_loss(D(mg.cat([xs, ys], 1)), D(mg.cat([xs, fake.detach()], 1)))
    g_loss = generator_loss(D(mg.cat([xs, fake], 1)), fake, ys)[0]
    d_loss.backward()
    g_loss.backward()

    tx, ty = torch.tensor(x), torch.tensor(y)
    tfake = torch.tanh(tG(tx))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    real_logits, fake_logits = tD(torch.cat([tx, ty], 1)), tD(torch.cat([tx, tfake.detach()], 1))
    t_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
    g_logits = tD(torch.cat([tx, tfake], 1))
    t_g = bce(g_logits, torch.ones_like(g_logits)) + 100.0 * (tfake - ty).abs().mean()
    t_d.backward()
    t_g.backward()
    np.testing.assert_allclose(d_loss.item(), t_d.item(), rtol=1e-10)
    np.testing.assert_allclose(g_loss.item(), t_g.item(), rtol=1e-10)
    # D's gradient: from its own loss and (unfrozen here) from G's loss; G's: from G's loss only.
    np.testing.assert_allclose(G.weight.grad.numpy(), tG.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(D.weight.grad.numpy(), tD.weight.grad.numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- training
def _batch(seed: int = 0) -> tuple[mg.Tensor, mg.Tensor]:
    rng = np.random.default_rng(seed)
    y = (rng.random((4, 1, 8, 8)) > 0.6).astype(np.float32) * 2 - 1
    x = -y  # an easy deterministic mapping: invert
    return mg.tensor(x), mg.tensor(y)


def test_pix2pix_overfits_one_batch():
    mg.manual_seed(0)
    G, D = UNetGenerator(1, 1, base_channels=8, levels=2), PatchDiscriminator(2, base_channels=8, num_layers=1)
    opt_g = mg.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = mg.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x, y = _batch()
    first = train_step(G, D, opt_g, opt_d, x, y)["l1"].item()
    for _ in range(60):
        stats = train_step(G, D, opt_g, opt_d, x, y)
    assert stats["l1"].item() < 0.1 * first
    assert set(stats) == {"d_loss", "g_loss", "g_adv", "l1", "D(x,y)", "D(x,G(x))"}


def test_pretraining_overfits_one_batch_with_l1_alone():
    mg.manual_seed(0)
    G = UNetGenerator(1, 1, base_channels=8, levels=2)
    opt = mg.optim.Adam(G.parameters(), lr=2e-3)
    x, y = _batch(1)
    first = pretrain_step(G, opt, x, y)["l1"].item()
    for _ in range(60):
        last = pretrain_step(G, opt, x, y)["l1"].item()
    assert last < 0.1 * first


def test_train_step_keeps_the_two_updates_apart():
    """D's step sends nothing into G (its fake is detached); G's step stores nothing on D (frozen).

    With learning rate 0 the weights stay put, so the gradients each step left behind can be
    compared with those of D's loss alone and of G's loss alone.
    """
    mg.manual_seed(0)
    G, D = UNetGenerator(1, 1, base_channels=4, levels=2), PatchDiscriminator(2, base_channels=4, num_layers=1)
    opt_g, opt_d = mg.optim.SGD(G.parameters(), lr=0.0), mg.optim.SGD(D.parameters(), lr=0.0)
    x, y = _batch()
    train_step(G, D, opt_g, opt_d, x, y)
    assert all(p.requires_grad for p in D.parameters())  # unfrozen again after G's step
    left_on_d = [p.grad.numpy().copy() for p in D.parameters()]
    left_on_g = [p.grad.numpy().copy() for p in G.parameters()]

    for p in [*G.parameters(), *D.parameters()]:
        p.grad = None
    fake = G(x)
    discriminator_loss(D(y, condition=x), D(fake.detach(), condition=x)).backward()
    assert all(p.grad is None for p in G.parameters())
    for left, p in zip(left_on_d, D.parameters()):
        np.testing.assert_allclose(left, p.grad.numpy(), rtol=1e-5, atol=1e-7)  # D's loss only
    for p in D.parameters():
        p.grad = None
    generator_loss(D(fake, condition=x), fake, y)[0].backward()
    for left, p in zip(left_on_g, G.parameters()):
        np.testing.assert_allclose(left, p.grad.numpy(), rtol=1e-5, atol=1e-7)  # G's loss only
