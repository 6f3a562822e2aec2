"""The denoising networks: time embedding, U-Net blocks (gradient-checked), U-Net, MLP denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from random_models import normal_f64, randomised_parameters

import minigen as mg
from minigen.models.diffusion import ddpm_loss, linear_schedule
from minigen.models.unet import (
    DownBlock,
    MLPDenoiser,
    ResBlock,
    SelfAttention2d,
    SinusoidalTimeEmbedding,
    UNet,
    UpBlock,
    num_groups_for,
    sinusoidal_embedding,
)


# ---------------------------------------------------------------------- time embedding
def test_sinusoidal_embedding_values():
    t = mg.tensor(np.array([0, 1, 10, 999]))
    e = sinusoidal_embedding(t, 8).numpy()
    assert e.shape == (4, 8) and e.dtype == np.float32
    np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)  # sin 0 = 0, cos 0 = 1
    omega = 10000.0 ** (-np.arange(4) / 4)
    expected = np.concatenate([np.sin(999 * omega), np.cos(999 * omega)])
    np.testing.assert_allclose(e[3], expected, rtol=1e-4, atol=1e-5)
    # Every timestep gets its own code, and each (sin, cos) pair lies on the unit circle.
    codes = sinusoidal_embedding(mg.arange(1000), 16).numpy()
    assert len(np.unique(codes.round(4), axis=0)) == 1000
    np.testing.assert_allclose(codes[:, :8] ** 2 + codes[:, 8:] ** 2, 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_embedding(t, 7)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        sinusoidal_embedding(mg.zeros(2, 2), 8)


def test_time_embedding_gradcheck():
    t = mg.tensor(np.array([0.3, 5.0, 17.2, 250.0]), dtype=mg.float64, requires_grad=True)
    mg.gradcheck(lambda t: sinusoidal_embedding(t, 12), t)
    mg.gradcheck(SinusoidalTimeEmbedding(6), t)


def test_time_embedding_on_every_device(device):
    t = mg.tensor(np.array([0, 3, 77]), device=device)
    e = sinusoidal_embedding(t, 10)
    assert e.device == mg.device(device)
    np.testing.assert_allclose(e.numpy(), sinusoidal_embedding(mg.tensor(np.array([0, 3, 77])), 10).numpy())


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("channels, groups", [(1, 1), (4, 1), (8, 2), (12, 3), (16, 4), (32, 8), (64, 16), (256, 32)])
def test_group_counts_suit_small_widths(channels, groups):
    assert num_groups_for(channels) == groups


@pytest.mark.parametrize("in_channels, out_channels", [(4, 4), (2, 4)])
def test_resblock_gradcheck(in_channels, out_channels):
    block = randomised_parameters(ResBlock(in_channels, out_channels, time_dim=3))
    assert type(block.skip).__name__ == ("Conv2d" if in_channels != out_channels else "Identity")
    mg.gradcheck(block, normal_f64(2, in_channels, 3, 3), normal_f64(2, 3, seed=1))


def test_resblock_uses_the_time_embedding():
    block = randomised_parameters(ResBlock(4, 8, time_dim=6))
    x = mg.randn(2, 4, 4, 4)
    a, b = block(x, mg.randn(2, 6)), block(x, mg.randn(2, 6))
    assert a.shape == (2, 8, 4, 4)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())


def test_down_and_up_blocks_gradcheck():
    down = randomised_parameters(DownBlock(2, 4, time_dim=3)).double()
    x, temb = normal_f64(2, 2, 4, 4), normal_f64(2, 3, seed=1)
    h, skip = down(x, temb)
    assert h.shape == (2, 4, 2, 2) and skip.shape == (2, 4, 4, 4)
    mg.gradcheck(down, x, temb)
    up = randomised_parameters(UpBlock(4, 2, 2, time_dim=3), seed=2).double()
    low, skip = normal_f64(2, 4, 2, 2, seed=3), normal_f64(2, 2, 4, 4, seed=4)
    assert up(low, skip, temb).shape == (2, 2, 4, 4)
    mg.gradcheck(up, low, skip, temb)


def test_self_attention_gradcheck_and_global_mixing():
    attention = randomised_parameters(SelfAttention2d(8, num_heads=2)).double()
    x = normal_f64(2, 8, 3, 3)
    mg.gradcheck(attention, x)
    # Changing one pixel changes the output at every pixel: attention is global.
    with mg.no_grad():
        y = attention(x).numpy()
        x2 = x.detach().numpy().copy()
        x2[:, :, 0, 0] += 1.0
        y2 = attention(mg.tensor(x2, dtype=mg.float64)).numpy()
    changed = np.abs(y2 - y).sum(axis=1) > 1e-9
    assert changed.all()
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SelfAttention2d(6, num_heads=4)


# ------------------------------------------------------------------------------ U-Net
def test_unet_shapes_and_zero_initialised_output():
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2, 2), num_classes=3)
    x, t = mg.randn(2, 1, 16, 16), mg.randint(0, 100, (2,))
    out = net(x, t, mg.tensor(np.array([0, 2])))
    assert out.shape == (2, 1, 16, 16)
    assert np.all(out.detach().numpy() == 0)  # ε̂ = 0 before training
    assert net.null_label == 3 and net.label_embed.num_embeddings == 4
    with pytest.raises(ValueError, match="divisible by 4"):
        net(mg.randn(2, 1, 10, 10), t)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(mg.randn(2, 3, 16, 16), t)
    with pytest.raises(ValueError, match="without num_classes"):
        UNet(base_channels=8, channel_mults=(1, 2))(mg.randn(1, 1, 8, 8), mg.zeros(1, dtype=mg.int64), t[:1])


def test_unet_depends_on_x_t_and_label_and_uses_the_null_label():
    net = randomised_parameters(UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_classes=3), scale=0.2)
    x, t = mg.randn(3, 1, 8, 8), mg.randint(0, 100, (3,))
    with mg.no_grad():
        base = net(x, t, mg.tensor(np.array([0, 1, 2]))).numpy()
        other_label = net(x, t, mg.tensor(np.array([1, 2, 0]))).numpy()
        other_t = net(x, mg.tensor((t.numpy() + 7) % 100), mg.tensor(np.array([0, 1, 2]))).numpy()
        null = net(x, t, mg.full((3,), 3, dtype=mg.int64)).numpy()
        unconditional = net(x, t).numpy()
    assert not np.allclose(base, other_label)
    assert not np.allclose(base, other_t)
    np.testing.assert_array_equal(null, unconditional)


def test_unet_gradients_reach_every_parameter():
    net = randomised_parameters(UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_classes=2), scale=0.2)
    out = net(mg.randn(2, 1, 8, 8), mg.randint(0, 50, (2,)), mg.tensor(np.array([0, 1])))
    (out * out).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, name


def test_unet_same_on_every_device(device):
    net = randomised_parameters(UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_classes=2), scale=0.2)
    rng = np.random.default_rng(3)
    x, t, y = rng.normal(size=(2, 1, 8, 8)).astype(np.float32), np.array([3, 40]), np.array([1, 0])
    outputs = []
    for dev in ("cpu", device):
        net.to(dev)
        out = net(mg.tensor(x, device=dev), mg.tensor(t, device=dev), mg.tensor(y, device=dev))
        assert out.device == mg.device(dev)
        outputs.append(out.detach().numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def _overfit(model, x0: mg.Tensor, y: mg.Tensor | None, steps: int, lr: float) -> tuple[float, float]:
    s = linear_schedule(100)
    t = mg.tensor(np.array([3, 20, 45, 70, 95, 60][: x0.shape[0]]))
    noise = mg.randn_like(x0)
    optimizer = mg.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = ddpm_loss(model, s, x0, y=y, t=t, noise=noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_unet_overfits_one_tiny_batch():
    """Fixed x_0, t and ε: the tiny U-Net must drive the DDPM loss close to zero."""
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_classes=3)
    x0 = mg.tensor(np.random.default_rng(4).uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32))
    first, last = _overfit(net, x0, mg.tensor(np.array([0, 1, 2, 0])), steps=60, lr=5e-3)
    assert math.isclose(first, 1.0, rel_tol=0.5)  # ε̂ = 0 at the start: the loss is E ε² ≈ 1
    assert last < 0.05 * first


def test_mlp_denoiser_shapes_and_errors():
    model = MLPDenoiser(data_dim=3, hidden=16, num_layers=2, time_dim=8)
    out = model(mg.randn(5, 3), mg.randint(0, 10, (5,)))
    assert out.shape == (5, 3) and np.all(out.detach().numpy() == 0)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        model(mg.randn(5, 2), mg.randint(0, 10, (5,)))
    with pytest.raises(ValueError, match="at least 1"):
        MLPDenoiser(num_layers=0)


def test_mlp_denoiser_gradcheck():
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=6, num_layers=2, time_dim=4, num_classes=2))
    t = mg.tensor(np.array([1, 7, 30]))
    y = mg.tensor(np.array([0, 2, 1]))
    mg.gradcheck(lambda x: model(x, t, y), normal_f64(3, 2))
    mg.gradcheck(model, normal_f64(3, 2), t, y)
