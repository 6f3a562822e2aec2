"""VAE: the reparameterisation trick, the closed-form KL, the ELBO, models and latent tools."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigen as mg
from minigen.models.vae import (
    MLPVAE,
    ConvVAE,
    apply_attribute,
    attribute_vector,
    interpolate,
    kl_divergence,
    reconstruction_log_likelihood,
    reparameterize,
    sample_prior,
    vae_loss,
)


def _gaussian_params(seed: int = 0, shape: tuple[int, int] = (3, 4)):
    rng = np.random.default_rng(seed)
    mu = mg.tensor(rng.normal(size=shape), requires_grad=True)
    logvar = mg.tensor(rng.uniform(-1.5, 1.0, size=shape), requires_grad=True)
    return mu, logvar


# -------------------------------------------------------------------- reparameterisation
def test_reparameterize_is_mu_plus_sigma_eps():
    mu, logvar = _gaussian_params()
    eps = mg.tensor(np.random.default_rng(9).normal(size=(3, 4)))
    z = reparameterize(mu, logvar, eps)
    expected = mu.detach().numpy() + np.exp(0.5 * logvar.detach().numpy()) * eps.numpy()
    np.testing.assert_allclose(z.detach().numpy(), expected, rtol=1e-12)


def test_reparameterize_gradcheck_with_fixed_eps():
    mu, logvar = _gaussian_params()
    eps = mg.tensor(np.random.default_rng(9).normal(size=(3, 4)))  # not checked: held fixed
    mg.gradcheck(reparameterize, mu, logvar, eps)
    mg.gradgradcheck(reparameterize, mu, logvar, eps)


def test_reparameterize_gradients_are_one_and_eps():
    # ∂z/∂μ = 1 and ∂z/∂σ = ε, i.e. ∂z/∂ log σ² = ½ σ ε.
    mu, logvar = _gaussian_params()
    eps = mg.tensor(np.random.default_rng(9).normal(size=(3, 4)))
    reparameterize(mu, logvar, eps).sum().backward()
    np.testing.assert_allclose(mu.grad.numpy(), 1.0)
    np.testing.assert_allclose(
        logvar.grad.numpy(), 0.5 * np.exp(0.5 * logvar.detach().numpy()) * eps.numpy(), rtol=1e-12
    )


# ------------------------------------------------------------------------------ the KL term
def test_kl_matches_the_formula_and_is_zero_at_the_prior():
    mu, logvar = _gaussian_params()
    m, lv = mu.detach().numpy(), logvar.detach().numpy()
    expected = -0.5 * (1 + lv - m**2 - np.exp(lv)).sum(axis=1)
    np.testing.assert_allclose(kl_divergence(mu, logvar).detach().numpy(), expected, rtol=1e-12)
    assert kl_divergence(mg.zeros(2, 5), mg.zeros(2, 5)).numpy().tolist() == [0.0, 0.0]
    assert (kl_divergence(mu, logvar).detach().numpy() > 0).all()


def test_kl_gradcheck():
    mu, logvar = _gaussian_params(seed=1)
    mg.gradcheck(kl_divergence, mu, logvar)
    mg.gradgradcheck(kl_divergence, mu, logvar)


def test_kl_closed_form_agrees_with_monte_carlo():
    """KL(q‖p) = E_q[log q(z) − log p(z)]: estimate it from samples of q and compare."""
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(1, 3))
    logvar = rng.uniform(-1.0, 1.0, size=(1, 3))
    closed = kl_divergence(mg.tensor(mu), mg.tensor(logvar)).item()

    n = 200_000
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * rng.standard_normal((n, 3))
    log_q = (-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(axis=1)
    log_p = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(axis=1)
    samples = log_q - log_p
    standard_error = samples.std() / math.sqrt(n)
    # 5 standard errors: a false failure has probability below 1e-6 (and the seed is fixed).
    assert abs(samples.mean() - closed) < 5 * standard_error
    assert standard_error < 0.02 * closed  # the bound is tight enough to catch a factor error


# ------------------------------------------------------------------------- reconstruction
def test_bernoulli_log_likelihood_matches_the_formula():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 1, 3, 3)) * 3
    x = rng.uniform(size=(2, 1, 3, 3))
    p = 1 / (1 + np.exp(-logits))
    expected = (x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(2, -1).sum(axis=1)
    got = reconstruction_log_likelihood(mg.tensor(logits), mg.tensor(x), "bernoulli").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_gaussian_log_likelihood_matches_the_formula():
    rng = np.random.default_rng(4)
    mean, x = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    sigma = 0.5
    expected = (-((x - mean) ** 2) / (2 * sigma**2) - 0.5 * np.log(2 * np.pi * sigma**2)).sum(axis=1)
    got = reconstruction_log_likelihood(mg.tensor(mean), mg.tensor(x), "gaussian", sigma=sigma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_log_likelihood(mg.tensor(mean), mg.tensor(x), "poisson")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_negative_elbo_gradcheck(likelihood):
    rng = np.random.default_rng(5)
    x_hat = mg.tensor(rng.normal(size=(2, 6)), requires_grad=True)
    x = mg.tensor(rng.uniform(size=(2, 6)))
    mu, logvar = _gaussian_params(seed=6, shape=(2, 3))

    def negative_elbo(x_hat, x, mu, logvar):
        return vae_loss(x_hat, x, mu, logvar, likelihood=likelihood, beta=0.7).loss

    mg.gradcheck(negative_elbo, x_hat, x, mu, logvar)
    parts = vae_loss(x_hat, x, mu, logvar, likelihood=likelihood, beta=0.7)
    assert parts.loss.item() == pytest.approx(parts.reconstruction.item() + 0.7 * parts.kl.item(), rel=1e-12)


# -------------------------------------------------------------------------------- models
@pytest.mark.parametrize("make", [lambda: MLPVAE((1, 8, 8), 4, (32,)), lambda: ConvVAE(1, 8, 4, base_channels=4)])
def test_model_shapes_and_explicit_eps(make):
    model = make()
    x = mg.rand(5, 1, 8, 8)
    eps = mg.randn(5, 4)
    out = model(x, eps=eps)
    assert out.x_hat.shape == (5, 1, 8, 8)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, 4)
    np.testing.assert_allclose(
        out.z.detach().numpy(), reparameterize(out.mu, out.logvar, eps).detach().numpy(), rtol=1e-6
    )
    again = model(x, eps=eps)  # the noise is the only randomness: same ε, same output
    np.testing.assert_array_equal(again.x_hat.detach().numpy(), out.x_hat.detach().numpy())
    assert model.reconstruct(x).shape == (5, 1, 8, 8)
    assert float(model.reconstruct(x).min()) >= 0.0


def _blobs(n: int = 8, size: int = 8) -> mg.Tensor:
    """A tiny batch of distinct binary images: a square at a different place in each."""
    images = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        r, c = divmod(i, 4)
        images[i, 0, 2 * r : 2 * r + 4, 2 * c : 2 * c + 3] = 1.0
    return mg.tensor(images)


@pytest.mark.parametrize(
    "make, steps", [(lambda: MLPVAE((1, 8, 8), 4, (64,)), 150), (lambda: ConvVAE(1, 8, 4, base_channels=8), 150)]
)
def test_vae_overfits_a_tiny_batch(make, steps):
    model = make()
    x = _blobs()
    opt = mg.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(steps):
        out = model(x)
        parts = vae_loss(out.x_hat, x, out.mu, out.logvar)
        opt.zero_grad()
        parts.loss.backward()
        opt.step()
        history.append(parts.reconstruction.item())
    assert history[-1] < 0.1 * history[0]
    with mg.no_grad():
        recon = model.reconstruct(x).numpy()
    assert np.abs(recon - x.numpy()).mean() < 0.05  # each square comes back where it was


def test_vae_forward_same_on_every_device(device):
    model = MLPVAE((1, 4, 4), 2, (8,))
    x = np.random.default_rng(0).uniform(size=(3, 1, 4, 4)).astype(np.float32)
    eps = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)
    outs = []
    for dev in ("cpu", device):
        model.to(dev)
        out = model(mg.tensor(x, device=dev), eps=mg.tensor(eps, device=dev))
        loss = vae_loss(out.x_hat, mg.tensor(x, device=dev), out.mu, out.logvar).loss
        assert loss.device == mg.device(dev)
        outs.append(loss.item())
    assert outs[1] == pytest.approx(outs[0], rel=1e-5)


# -------------------------------------------------------------------------- latent tools
def test_sample_prior_shape_and_moments():
    z = sample_prior(20_000, 3).numpy()
    assert z.shape == (20_000, 3)
    assert np.abs(z.mean(axis=0)).max() < 0.05 and np.abs(z.std(axis=0) - 1).max() < 0.05


def test_interpolate_runs_from_a_to_b():
    z_a, z_b = mg.tensor([1.0, 2.0, 3.0]), mg.tensor([-1.0, 0.0, 5.0])
    path = interpolate(z_a, z_b, 5).numpy()
    assert path.shape == (5, 3)
    np.testing.assert_allclose(path[0], z_a.numpy())
    np.testing.assert_allclose(path[-1], z_b.numpy())
    np.testing.assert_allclose(path[2], (z_a.numpy() + z_b.numpy()) / 2)
    np.testing.assert_allclose(np.diff(path, axis=0), np.broadcast_to((z_b.numpy() - z_a.numpy()) / 4, (4, 3)))
    with pytest.raises(ValueError):
        interpolate(z_a, z_b, 1)


def test_attribute_vector_is_the_difference_of_means():
    latents = mg.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0], [-2.0, 4.0], [2.0, 2.0]])
    has = mg.tensor([True, True, False, False, False])
    v = attribute_vector(latents, has).numpy()
    np.testing.assert_allclose(v, [2.0 - 0.0, 1.0 - 2.0])
    moved = apply_attribute(mg.tensor([0.0, 1.0]), mg.tensor(v), [-1.0, 0.0, 2.0]).numpy()
    np.testing.assert_allclose(moved, [[-2.0, 2.0], [0.0, 1.0], [4.0, -1.0]])
    with pytest.raises(ValueError, match="both with and without"):
        attribute_vector(latents, mg.tensor([True] * 5))
