"""The plain autoencoder: shapes, the same layers as the VAE, the Bernoulli reconstruction
loss (the VAE's, against PyTorch), overfitting one batch, gradient checks, errors; the
spatial encoder and decoder the VQ-VAE is built from."""

from __future__ import annotations

import numpy as np
import pytest
from random_models import normal_f64, randomised_parameters

import minigen as mg
import minigen.nn as nn
from minigen.models.autoencoder import (
    Autoencoder,
    ConvAutoencoder,
    ConvDecoder,
    ConvEncoder,
    reconstruction_loss,
)
from minigen.models.vae import ConvVAE, reconstruction_log_likelihood


def test_autoencoder_shapes(device):
    model = ConvAutoencoder(1, 16, latent_dim=2, base_channels=4).to(device)
    x = mg.rand(3, 1, 16, 16, device=device)
    with mg.no_grad():
        z = model.encode(x)
        assert z.shape == (3, 2) and model.decode(z).shape == (3, 1, 16, 16)
        image = model.reconstruct(x).numpy()
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_autoencoder_has_the_vae_layers_but_one_deterministic_head():
    ae, vae = ConvAutoencoder(1, 16, 2, 8), ConvVAE(1, 16, 2, 8)
    shapes = {name: tuple(t.shape) for name, t in ae.state_dict().items()}
    vae_shapes = {name: tuple(t.shape) for name, t in vae.state_dict().items()}
    heads = {"to_z.weight", "to_z.bias"}
    assert {k: v for k, v in shapes.items() if k not in heads} == {
        k: v for k, v in vae_shapes.items() if not k.startswith(("to_mu", "to_logvar"))
    }
    assert shapes["to_z.weight"] == vae_shapes["to_mu.weight"]
    # deterministic: the same image gives the same code every time (the VAE samples z)
    x = mg.rand(2, 1, 16, 16)
    with mg.no_grad():
        np.testing.assert_array_equal(ae.encode(x).numpy(), ae.encode(x).numpy())


def test_reconstruction_loss_is_the_vaes_bernoulli_term():
    rng = np.random.default_rng(0)
    logits, x = rng.normal(size=(3, 1, 4, 4)) * 3, rng.uniform(size=(3, 1, 4, 4))
    ours = reconstruction_loss(mg.tensor(logits), mg.tensor(x)).item()
    vae = -reconstruction_log_likelihood(mg.tensor(logits), mg.tensor(x)).mean().item()
    assert ours == pytest.approx(vae, rel=1e-12)
    torch = pytest.importorskip("torch")
    tl = torch.tensor(logits, requires_grad=True)
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(tl, torch.tensor(x), reduction="sum") / 3
    theirs.backward()
    ml = mg.tensor(logits, requires_grad=True)
    loss = reconstruction_loss(ml, mg.tensor(x))
    loss.backward()
    assert loss.item() == pytest.approx(theirs.item(), rel=1e-12)
    np.testing.assert_allclose(ml.grad.numpy(), tl.grad.numpy(), rtol=1e-10)


def test_autoencoder_overfits_a_batch():
    mg.manual_seed(0)
    model = ConvAutoencoder(1, 8, latent_dim=2, base_channels=8)
    rng = np.random.default_rng(1)
    x = mg.tensor((rng.uniform(size=(4, 1, 8, 8)) > 0.6).astype(np.float32))
    opt = mg.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = reconstruction_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]  # four codes in the plane are enough to tell four images apart


def test_spatial_autoencoder_overfits_a_batch():
    mg.manual_seed(0)
    model = Autoencoder(ConvEncoder(1, 4, 8, downsamples=1), ConvDecoder(4, 1, 8, upsamples=1))
    x = mg.tensor((np.random.default_rng(1).uniform(size=(4, 1, 8, 8)) > 0.6).astype(np.float32))
    opt = mg.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = (model(x) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or loss.item()
    assert loss.item() < 0.05 * first


@pytest.mark.parametrize("downsamples", [1, 2])
def test_spatial_encoder_and_decoder_shapes(downsamples, device):
    enc = ConvEncoder(1, latent_channels=5, hidden_channels=4, downsamples=downsamples).to(device)
    dec = ConvDecoder(5, out_channels=1, hidden_channels=4, upsamples=downsamples).to(device)
    with mg.no_grad():
        z = enc(mg.rand(2, 1, 16, 16, device=device))
        side = 16 // 2**downsamples
        assert z.shape == (2, 5, side, side)
        assert dec(z).shape == (2, 1, 16, 16)
    assert isinstance(dec.last_layer, nn.Conv2d) and dec.last_layer.out_channels == 1


# --------------------------------------------------------------------- gradient checks
def test_conv_autoencoder_gradcheck():
    model = randomised_parameters(ConvAutoencoder(1, 4, latent_dim=2, base_channels=2)).to(mg.float64)
    mg.gradcheck(model, normal_f64(2, 1, 4, 4))


def test_conv_encoder_gradcheck():
    mg.gradcheck(randomised_parameters(ConvEncoder(1, 3, 2, downsamples=1)).to(mg.float64), normal_f64(1, 1, 4, 4))


def test_conv_decoder_gradcheck():
    mg.gradcheck(randomised_parameters(ConvDecoder(3, 1, 2, upsamples=1)).to(mg.float64), normal_f64(1, 3, 2, 2))


def test_reconstruction_loss_gradcheck():
    x = mg.tensor(np.random.default_rng(2).uniform(size=(2, 1, 3, 3)))
    mg.gradcheck(lambda logits: reconstruction_loss(logits, x), normal_f64(2, 1, 3, 3).requires_grad_(True))


# ---------------------------------------------------------------------------- errors
def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="image_size must be a multiple of 4, got 10"):
        ConvAutoencoder(image_size=10)
    with pytest.raises(ValueError, match="latent_dim must be at least 1"):
        ConvAutoencoder(latent_dim=0)
    with pytest.raises(ValueError, match=r"expected codes \(N, 2\), got \(3, 5\)"):
        ConvAutoencoder(latent_dim=2).decode(mg.zeros(3, 5))
    with pytest.raises(ValueError, match=r"multiples of 2\^downsamples = 4, got shape \(1, 1, 10, 10\)"):
        ConvEncoder(1, 4, 4, downsamples=2)(mg.zeros(1, 1, 10, 10))
    with pytest.raises(ValueError, match=r"latent_channels=4\), got shape \(1, 3, 2, 2\)"):
        ConvDecoder(4, 1, 4)(mg.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="encoder writes 4 channels but the decoder reads 3"):
        Autoencoder(ConvEncoder(1, 4), ConvDecoder(3, 1))
    with pytest.raises(ValueError, match=r"logits shape \(1, 1, 4, 4\) != images shape \(1, 1, 2, 2\)"):
        reconstruction_loss(mg.zeros(1, 1, 4, 4), mg.zeros(1, 1, 2, 2))
