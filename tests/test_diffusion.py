"""Diffusion: schedules, the forward process, the loss, DDPM/DDIM samplers, guidance, EMA.

Everything is imported from ``minigen.models.diffusion``, as the demos and students do; the
schedules, guidance and samplers live in their own files and are re-exported there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from random_models import randomised_parameters

import minigen as mg
import minigen.nn as nn
from minigen.models import diffusion, guidance, noise_schedules, samplers
from minigen.models.diffusion import (
    NoiseSchedule,
    Trajectory,
    cosine_schedule,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    ddpm_loss,
    ddpm_sample,
    ddpm_step,
    drop_condition,
    drop_labels,
    guided_eps,
    interpolate_noise,
    lerp,
    linear_schedule,
    make_schedule,
    offset_cosine_schedule,
    plot_schedules,
    predict_eps,
    q_sample,
    q_step,
    slerp,
)
from minigen.models.unet import MLPDenoiser
from minigen.optim import EMA

FACTORIES = [linear_schedule, cosine_schedule, offset_cosine_schedule]


def _t(value: int, n: int, device: str = "cpu") -> mg.Tensor:
    return mg.full((n,), value, dtype=mg.int64, device=device)


# ---------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("T", [2, 3, 10, 50, 1000, 4000])
def test_schedules_are_valid_for_any_T_and_end_in_pure_noise(factory, T):
    s = factory(T)
    assert s.T == len(s.betas) == T
    assert np.all((s.betas > 0) & (s.betas < 1))
    assert np.all(np.diff(s.alpha_bars) < 0)
    assert s.alpha_bars[-1] < 1e-3  # x_T is (almost) independent of x_0
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - s.betas), rtol=1e-12)
    np.testing.assert_allclose(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert s.alpha_bars_prev[0] == 1.0


def test_linear_schedule_matches_ho_et_al_at_T_1000_and_scales_with_T():
    s = linear_schedule(1000)
    np.testing.assert_allclose(s.betas[[0, -1]], [1e-4, 0.02])
    s200 = linear_schedule(200)
    np.testing.assert_allclose(s200.betas[[0, -1]], [5e-4, 0.1])
    # Σβ is (almost) the same, so the total amount of noise does not depend on T.
    assert abs(s.betas.sum() - s200.betas.sum()) < 1e-9


def test_cosine_schedule_follows_its_formula():
    T, s_offset = 100, 0.008
    s = cosine_schedule(T)
    f = lambda t: math.cos(math.pi / 2 * (t / T + s_offset) / (1 + s_offset)) ** 2  # noqa: E731
    for t in (1, 10, 50, 99):  # lecture t; array index t − 1
        assert s.alpha_bars[t - 1] == pytest.approx(f(t) / f(0), rel=1e-9)
    assert s.betas[-1] == pytest.approx(0.999)  # f(T) = 0 is clipped


def test_offset_cosine_signal_rate_runs_between_its_limits():
    s = offset_cosine_schedule(1000, max_signal_rate=0.95, min_signal_rate=0.02)
    assert math.sqrt(s.alpha_bars[-1]) == pytest.approx(0.02)
    assert 0.9 < math.sqrt(s.alpha_bars[0]) < 0.95


@pytest.mark.parametrize(
    "betas, message",
    [
        ([], "T >= 1"),
        ([[0.5, 0.5]], "1-D"),
        ([0.0] + [0.5] * 20, r"beta\[0\] = 0.0"),
        ([0.5] * 20 + [1.0], r"beta\[20\] = 1.0"),
        ([0.5, -0.1] + [0.5] * 20, r"\(0, 1\)"),
        ([0.5, float("nan")] + [0.5] * 20, r"\(0, 1\)"),
        ([0.1] * 10, "alpha_bar_T"),
        ([0.9] + [1e-18] + [0.9] * 10, "strictly decreasing"),
    ],
)
def test_schedule_validation_rejects_bad_betas(betas, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(betas)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("T", [0, -5, 2.5, True, "100", None])
def test_schedule_factories_reject_bad_T(factory, T):
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        factory(T)


def test_a_single_step_schedule_needs_beta_above_0_999():
    assert offset_cosine_schedule(1).alpha_bars[-1] < 1e-3
    assert NoiseSchedule([0.9999]).T == 1
    for factory in (linear_schedule, cosine_schedule):
        with pytest.raises(ValueError, match="T = 1 step cannot reach alpha_bar_T < 1e-3"):
            factory(1)


def test_make_schedule_by_name_and_bad_offset_cosine_limits():
    assert make_schedule("cosine", 20).name == "cosine"
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        make_schedule("quadratic", 20)
    with pytest.raises(ValueError, match="min_signal_rate < max_signal_rate"):
        offset_cosine_schedule(10, max_signal_rate=0.1, min_signal_rate=0.5)


def test_plot_schedules_writes_a_png(tmp_path):
    from PIL import Image

    path = plot_schedules({"linear": linear_schedule(100), "cosine": cosine_schedule(100)}, tmp_path / "s.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert plot_schedules(linear_schedule(10), tmp_path / "one.png").exists()


def test_per_sample_lookups_read_the_tables_and_check_their_inputs(device):
    s = cosine_schedule(10)
    t = mg.tensor(np.array([0, 4, 9]), device=device)
    x = mg.zeros(3, 2, 5, device=device)
    for looked_up, table in ((s.alpha_bars_at(t, x), s.alpha_bars), (s.betas_at(t, x), s.betas)):
        assert looked_up.shape == (3, 1, 1) and looked_up.device == x.device and looked_up.dtype == x.dtype
        np.testing.assert_allclose(looked_up.numpy().ravel(), table[[0, 4, 9]], rtol=1e-6)
    # The older spelling by name still works and gives the same values.
    np.testing.assert_array_equal(s.gather("alpha_bars", t, x).numpy(), s.alpha_bars_at(t, x).numpy())
    for lookup in (s.alpha_bars_at, s.betas_at, lambda t, like: s.gather("alpha_bars", t, like)):
        with pytest.raises(ValueError, match=r"shape \(B,\) = \(3,\)"):
            lookup(mg.zeros(2, dtype=mg.int64, device=device), x)
        with pytest.raises(TypeError, match="integer tensor"):
            lookup(mg.zeros(3, device=device), x)


def test_diffusion_reexports_the_split_files():
    """``from minigen.models.diffusion import …`` reaches the schedules, guidance, the samplers and EMA."""
    assert diffusion.NoiseSchedule is noise_schedules.NoiseSchedule
    assert diffusion.guided_eps is guidance.guided_eps
    assert diffusion.ddim_sample is samplers.ddim_sample
    assert diffusion.EMA is mg.optim.EMA
    for name in diffusion.__all__:
        assert hasattr(diffusion, name), name


# ---------------------------------------------------------------------- forward process
def test_q_sample_is_the_closed_form_per_sample(device):
    s = cosine_schedule(50)
    rng = np.random.default_rng(1)
    x0, eps = rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(4, 3, 2, 2))
    t = np.array([0, 7, 30, 49])
    out = q_sample(s, mg.tensor(x0, device=device), mg.tensor(t, device=device), mg.tensor(eps, device=device)).numpy()
    a = s.alpha_bars[t][:, None, None, None]
    np.testing.assert_allclose(out, np.sqrt(a) * x0 + np.sqrt(1 - a) * eps, rtol=1e-12)
    step = q_step(s, mg.tensor(x0, device=device), mg.tensor(t, device=device), mg.tensor(eps, device=device)).numpy()
    b = s.betas[t][:, None, None, None]
    np.testing.assert_allclose(step, np.sqrt(1 - b) * x0 + np.sqrt(b) * eps, rtol=1e-12)


def _assert_moments(samples: np.ndarray, mean: np.ndarray, var: float) -> None:
    """Sample mean and variance (over axis 0) within 3 standard errors of the formula."""
    n = samples.shape[0]
    mean_se = math.sqrt(var / n)
    var_se = var * math.sqrt(2.0 / (n - 1))  # Var of the sample variance of a Gaussian
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 3 * mean_se), (samples.mean(axis=0), mean, mean_se)
    assert np.all(np.abs(samples.var(axis=0, ddof=1) - var) < 3 * var_se), (samples.var(axis=0, ddof=1), var)


@pytest.mark.parametrize("t", [0, 9, 50, 99])
def test_q_sample_statistics_match_q_xt_given_x0(t):
    """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I): sample moments within 3 standard errors."""
    s = linear_schedule(100)
    n = 20_000
    x0 = np.array([2.0, -1.0, 0.5], np.float32)
    samples = q_sample(s, mg.tensor(np.tile(x0, (n, 1))), _t(t, n), mg.randn(n, 3)).numpy().astype(np.float64)
    _assert_moments(samples, math.sqrt(s.alpha_bars[t]) * x0, 1.0 - s.alpha_bars[t])


def test_iterated_single_steps_have_the_closed_form_distribution():
    """x_t = √(1−β_t) x_{t−1} + √β_t ε applied t times is distributed as q(x_t | x_0)."""
    s = linear_schedule(40)
    n, t_final = 20_000, 25
    x0 = np.array([1.5, -2.0], np.float32)
    x = mg.tensor(np.tile(x0, (n, 1)))
    for t in range(t_final + 1):
        x = q_step(s, x, _t(t, n), mg.randn_like(x))
    _assert_moments(x.numpy().astype(np.float64), math.sqrt(s.alpha_bars[t_final]) * x0, 1 - s.alpha_bars[t_final])


@pytest.mark.parametrize("factory", FACTORIES)
def test_the_ddpm_schedule_ends_near_pure_noise(factory):
    """Whatever x_0 is, x_T is (nearly) N(0, I): the signal-to-noise ratio ᾱ_T / (1 − ᾱ_T)
    is below 1e-3, and samples of x_T have unit variance and a mean within √ᾱ_T |x_0| (< 0.1)
    plus 3 standard errors of 0."""
    s = factory(1000)
    assert s.alpha_bars[-1] / (1 - s.alpha_bars[-1]) < 1e-3
    n = 20_000
    x0 = np.array([3.0, -3.0, 1.0], np.float32)
    samples = q_sample(s, mg.tensor(np.tile(x0, (n, 1))), _t(s.T - 1, n), mg.randn(n, 3)).numpy().astype(np.float64)
    _assert_moments(samples, math.sqrt(s.alpha_bars[-1]) * x0, 1.0 - s.alpha_bars[-1])
    assert np.all(np.abs(samples.mean(axis=0)) < math.sqrt(s.alpha_bars[-1]) * np.abs(x0) + 3 / math.sqrt(n))
    assert np.all(np.abs(samples.var(axis=0) - 1.0) < 3 * math.sqrt(2.0 / n))


# -------------------------------------------------------------------------------- loss
def test_ddpm_loss_with_explicit_t_and_noise_is_the_formula():
    s = linear_schedule(30)
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=8, num_layers=1, time_dim=4), scale=0.5)
    rng = np.random.default_rng(2)
    x0 = mg.tensor(rng.normal(size=(5, 2)))
    noise = mg.tensor(rng.normal(size=(5, 2)))
    t = mg.tensor(np.array([0, 3, 10, 29, 29]))
    loss = ddpm_loss(model, s, x0, t=t, noise=noise)
    a = s.alpha_bars[t.numpy()][:, None]
    x_t = np.sqrt(a) * x0.numpy() + np.sqrt(1 - a) * noise.numpy()
    eps_hat = model(mg.tensor(x_t.astype(np.float32)), t).detach().numpy()
    assert loss.item() == pytest.approx(((noise.numpy() - eps_hat) ** 2).mean(), rel=1e-5)
    # Drawn t and ε: repeatable under the same seed, different under another.
    mg.manual_seed(3)
    first = ddpm_loss(model, s, x0).item()
    mg.manual_seed(3)
    assert ddpm_loss(model, s, x0).item() == first
    mg.manual_seed(4)
    assert ddpm_loss(model, s, x0).item() != first


def test_ddpm_loss_runs_and_backpropagates_on_every_device(device):
    s = linear_schedule(20)
    model = MLPDenoiser(data_dim=2, hidden=8, num_layers=2, time_dim=4, num_classes=3).to(device)
    x0 = mg.randn(6, 2, device=device)
    y = drop_labels(mg.randint(0, 3, (6,), device=device), 0.5, model.null_label)
    loss = ddpm_loss(model, s, x0, y=y)
    loss.backward()
    assert loss.device == mg.device(device)
    assert all(p.grad is not None for p in model.parameters())


def test_drop_labels_uses_the_null_label():
    y = mg.tensor(np.array([0, 1, 2, 3]))
    drop = mg.tensor(np.array([True, False, True, False]))
    np.testing.assert_array_equal(drop_labels(y, 0.5, 10, drop=drop).numpy(), [10, 1, 10, 3])
    dropped = drop_labels(mg.zeros(20_000, dtype=mg.int64), 0.2, 7).numpy()
    fraction = (dropped == 7).mean()
    assert abs(fraction - 0.2) < 3 * math.sqrt(0.2 * 0.8 / 20_000)


def _caption_condition(seed: int = 0) -> tuple[tuple[mg.Tensor, mg.Tensor], tuple[mg.Tensor, mg.Tensor]]:
    """A caption-like condition for 4 samples: a context (4, M=3, 2) with a key-padding mask
    (4, 3; True = padding), and ∅, the empty caption, for one sample: (1, 3, 2) and (1, 3)."""
    rng = np.random.default_rng(seed)
    context = mg.tensor(rng.normal(size=(4, 3, 2)).astype(np.float32))
    padding = mg.tensor(
        np.array([[False, False, True], [False, True, True], [False, False, False], [False, True, True]])
    )
    empty = (mg.zeros(1, 3, 2), mg.tensor(np.array([[False, True, True]])))
    return (context, padding), empty


def _captioned_model(x: mg.Tensor, t: mg.Tensor, context: mg.Tensor, padding: mg.Tensor) -> mg.Tensor:
    """A stand-in ε_θ(x_t, t, context, mask): reads the mean of the context's real tokens."""
    keep = mg.tensor((~padding.data).astype(x.dtype)).reshape(*padding.shape, 1)
    summary = (context * keep).sum(dim=1) / keep.sum(dim=1)
    return 0.5 * x + summary * (1.0 + t.reshape(-1, 1) * 0.01)


def test_drop_condition_drops_a_caption_and_its_mask_together():
    (context, padding), (empty_context, empty_padding) = _caption_condition()
    drop = mg.tensor(np.array([True, False, False, True]))
    kept, pad = drop_condition((context, padding), (empty_context, empty_padding), 0.5, drop=drop)
    for i, dropped in enumerate([True, False, False, True]):
        expected = (empty_context[0], empty_padding[0]) if dropped else (context[i], padding[i])
        np.testing.assert_array_equal(kept[i].numpy(), expected[0].numpy())
        np.testing.assert_array_equal(pad[i].numpy(), expected[1].numpy())
    # Drawn choices: about p of the captions become ∅, each with its own mask.
    n, p = 20_000, 0.1
    tokens = mg.ones(n, 3, dtype=mg.int64)
    mask = mg.zeros(n, 3, dtype=mg.bool_)
    out_tokens, out_mask = drop_condition(
        (tokens, mask), (mg.zeros(1, 3, dtype=mg.int64), mg.ones(1, 3, dtype=mg.bool_)), p
    )
    is_null = out_tokens.numpy()[:, 0] == 0
    np.testing.assert_array_equal(out_mask.numpy(), np.repeat(is_null[:, None], 3, axis=1))
    assert abs(is_null.mean() - p) < 3 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="the condition has 2 tensors but null has 1"):
        drop_condition((context, padding), empty_context, 0.5)
    with pytest.raises(ValueError, match=r"null condition must have the condition's shape \(4, 3\)"):
        drop_condition((context, padding), (empty_context, mg.zeros(2, 3, dtype=mg.bool_)), 0.5)


def test_ddpm_loss_passes_a_tuple_condition_to_the_model():
    s = linear_schedule(30)
    condition, _ = _caption_condition()
    rng = np.random.default_rng(4)
    x0, noise = (mg.tensor(rng.normal(size=(4, 2)).astype(np.float32)) for _ in range(2))
    t = mg.tensor(np.array([0, 5, 17, 29]))
    loss = ddpm_loss(_captioned_model, s, x0, y=condition, t=t, noise=noise)
    eps_hat = _captioned_model(q_sample(s, x0, t, noise), t, *condition)
    assert loss.item() == pytest.approx(((noise - eps_hat) ** 2).mean().item(), rel=1e-6)


# --------------------------------------------------------------------------- samplers
def _gaussian_oracle(schedule: NoiseSchedule, mu: float, s: float):
    """The exact ε-prediction E[ε | x_t] for data x_0 ~ N(mu, s² I):
    ε* = √(1−ᾱ) (x_t − √ᾱ mu) / (ᾱ s² + 1 − ᾱ)."""

    def eps(x: mg.Tensor, t: mg.Tensor) -> mg.Tensor:
        a = schedule.alpha_bars_at(t, x)
        return (x - a.sqrt() * mu) * (1.0 - a).sqrt() / (a * (s * s) + (1.0 - a))

    return eps


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-eta1"])
def test_samplers_with_the_exact_noise_predictor_recover_the_data_distribution(sampler):
    """With the optimal ε for Gaussian data, the reverse process must return that Gaussian."""
    s = linear_schedule(1000)
    mu, std, n = 2.0, 0.5, 20_000
    oracle = _gaussian_oracle(s, mu, std)
    x_T = mg.randn(n, 2)
    if sampler == "ddpm":
        x = ddpm_sample(oracle, s, x_T)
    else:
        x = ddim_sample(oracle, s, x_T, num_steps=200, eta=1.0 if sampler == "ddim-eta1" else 0.0)
    x = x.numpy().astype(np.float64)
    # Discretisation leaves a small bias (σ about 1-4 % low at these step counts).
    assert abs(x.mean() - mu) < 0.01
    assert abs(x.std() / std - 1.0) < 0.04


def test_ddpm_step_adds_no_noise_at_t_0_and_equals_the_epsilon_form():
    s = linear_schedule(50)
    rng = np.random.default_rng(5)
    x_t, eps, z = (mg.tensor(rng.normal(size=(3, 2))) for _ in range(3))
    x_prev, _ = ddpm_step(s, x_t, 0, eps, z)
    no_noise, _ = ddpm_step(s, x_t, 0, eps, None)
    np.testing.assert_array_equal(x_prev.numpy(), no_noise.numpy())
    for t in (0, 10, 49):
        mean, _ = ddpm_step(s, x_t, t, eps, mg.zeros(3, 2))
        # μ = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε̂)
        expected = (x_t.numpy() - s.betas[t] / math.sqrt(1 - s.alpha_bars[t]) * eps.numpy()) / math.sqrt(s.alphas[t])
        np.testing.assert_allclose(mean.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ddim_with_eta_1_on_every_step_is_ddpm():
    """σ_t(η = 1) on the full step list is DDPM's √β̃_t, and the whole step coincides."""
    s = cosine_schedule(60)
    for t in range(s.T):
        assert ddim_sigma(s, t, t - 1, 1.0) == pytest.approx(math.sqrt(s.posterior_variances[t]), rel=1e-9, abs=1e-15)
    assert ddim_timesteps(s.T, s.T) == list(range(s.T - 1, -1, -1))
    rng = np.random.default_rng(6)
    x_t, eps, z = (mg.tensor(rng.normal(size=(4, 3)), dtype=mg.float64) for _ in range(3))
    for t in (0, 1, 20, 59):
        ddim, _ = ddim_step(s, x_t, t, t - 1, eps, eta=1.0, z=z)
        ddpm, _ = ddpm_step(s, x_t, t, eps, z)
        np.testing.assert_allclose(ddim.numpy(), ddpm.numpy(), rtol=1e-9, atol=1e-12)


def test_ddim_eta_0_is_deterministic_for_a_fixed_x_T_and_ddpm_is_not():
    s = linear_schedule(100)
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=16, num_layers=2, time_dim=8), seed=1, scale=0.5)
    x_T = mg.randn(8, 2)
    mg.manual_seed(10)
    first = ddim_sample(model, s, x_T, num_steps=10, eta=0.0).numpy()
    mg.manual_seed(11)
    np.testing.assert_array_equal(ddim_sample(model, s, x_T, num_steps=10, eta=0.0).numpy(), first)
    mg.manual_seed(10)
    a = ddpm_sample(model, s, x_T).numpy()
    mg.manual_seed(11)
    assert not np.allclose(ddpm_sample(model, s, x_T).numpy(), a)
    mg.manual_seed(12)
    assert not np.allclose(ddim_sample(model, s, x_T, num_steps=10, eta=0.5).numpy(), first)


def test_ddim_takes_the_previous_timestep_from_the_step_list():
    s = linear_schedule(100)
    seen = []
    oracle = _gaussian_oracle(s, 1.0, 0.3)

    def model(x, t):
        seen.append(int(t.numpy()[0]))
        return oracle(x, t)

    x_T = mg.randn(5, 2, dtype=mg.float64)
    steps = [99, 60, 11, 3]
    out = ddim_sample(model, s, x_T, timesteps=steps)
    assert seen == steps
    # By hand: each update lands on the next listed timestep (−1 = the end, ᾱ = 1).
    x = x_T
    for t, t_prev in zip(steps, steps[1:] + [-1]):
        eps = oracle(x, _t(t, 5)).numpy()
        a, a_prev = s.alpha_bars[t], (s.alpha_bars[t_prev] if t_prev >= 0 else 1.0)
        x0 = (x.numpy() - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = mg.tensor(math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps)
    np.testing.assert_allclose(out.numpy(), x.numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="decrease strictly"):
        ddim_sample(model, s, x_T, timesteps=[10, 50])


@given(T=st.integers(1, 2000), data=st.data())
def test_ddim_timesteps_are_a_decreasing_sub_sequence(T, data):
    n = data.draw(st.integers(1, T))
    steps = ddim_timesteps(T, n)
    assert len(steps) == n and steps[0] == T - 1
    assert all(b < a for a, b in zip(steps, steps[1:]))
    assert steps[-1] == (0 if n > 1 else T - 1)


def test_ddim_timesteps_rejects_bad_counts():
    with pytest.raises(ValueError, match="between 1 and T = 10"):
        ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="between 1 and T = 10"):
        ddim_timesteps(10, 0)


def test_samplers_run_on_every_device_and_agree_with_the_cpu(device):
    s = linear_schedule(20)
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=8, num_layers=2, time_dim=4, num_classes=2), scale=0.5)
    x_T = np.random.default_rng(7).normal(size=(4, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0])
    results = []
    for dev in ("cpu", device):
        model.to(dev)
        x = ddim_sample(
            model, s, mg.tensor(x_T, device=dev), num_steps=5, y=mg.tensor(y, device=dev), guidance_scale=2.0
        )
        assert x.device == mg.device(dev)
        results.append(x.numpy())
        ddpm_sample(model, s, mg.tensor(x_T, device=dev), y=mg.tensor(y, device=dev), guidance_scale=2.0)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_trajectory_records_x_t_and_x0_predictions():
    s = linear_schedule(20)
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=8, num_layers=1, time_dim=4), scale=0.5)
    trajectory = Trajectory(every=5)
    final = ddpm_sample(model, s, mg.randn(3, 2), trajectory=trajectory)
    assert trajectory.timesteps == [19, 14, 9, 4, 0, -1]
    assert len(trajectory.xs) == len(trajectory.x0_preds) == 6
    np.testing.assert_array_equal(trajectory.xs[-1].numpy(), final.numpy())
    ddim_trajectory = Trajectory()
    ddim_sample(model, s, mg.randn(3, 2), num_steps=4, trajectory=ddim_trajectory)
    assert ddim_trajectory.timesteps == ddim_timesteps(20, 4) + [-1]


def test_clip_x0_keeps_the_predicted_x0_in_range():
    s = linear_schedule(20)
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=8, num_layers=1, time_dim=4), scale=0.5)
    for sampler in (ddpm_sample, ddim_sample):
        trajectory = Trajectory()
        sampler(model, s, 5 * mg.randn(6, 2), clip_x0=1.0, trajectory=trajectory)
        assert max(np.abs(x.numpy()).max() for x in trajectory.x0_preds[:-1]) <= 1.0 + 1e-6


# ---------------------------------------------------------------------------- guidance
def test_classifier_free_guidance_endpoints_and_formula():
    model = randomised_parameters(
        MLPDenoiser(data_dim=2, hidden=16, num_layers=2, time_dim=8, num_classes=3), seed=2, scale=0.5
    )
    x, t, y = mg.randn(5, 2), mg.randint(0, 50, (5,)), mg.tensor(np.array([0, 1, 2, 1, 0]))
    cond = model(x, t, y).detach().numpy()
    uncond = model(x, t, mg.full((5,), model.null_label, dtype=mg.int64)).detach().numpy()
    np.testing.assert_allclose(model(x, t).detach().numpy(), uncond)  # y=None means the null label
    assert not np.allclose(cond, uncond)
    with mg.no_grad():
        np.testing.assert_allclose(guided_eps(model, x, t, y, 1.0).numpy(), cond, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(guided_eps(model, x, t, y, 0.0).numpy(), uncond, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            guided_eps(model, x, t, y, 3.0).numpy(), uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(predict_eps(model, x, t, y, 1.0).numpy(), cond, rtol=1e-6)
    with pytest.raises(ValueError, match="null_label"):
        guided_eps(MLPDenoiser(data_dim=2, hidden=4, num_layers=1, time_dim=4), x, t, y, 2.0)


def test_guidance_on_a_caption_with_the_empty_caption_as_null():
    """A condition may be a tuple (context, key-padding mask) with ∅ given for one sample:
    w = 1 is the conditional prediction, w = 0 the prediction for the empty caption."""
    condition, empty = _caption_condition()
    x, t = mg.randn(4, 2), mg.randint(0, 50, (4,))
    cond = _captioned_model(x, t, *condition).numpy()
    uncond = _captioned_model(x, t, *(part.expand(4, *part.shape[1:]) for part in empty)).numpy()
    assert not np.allclose(cond, uncond)
    np.testing.assert_allclose(guided_eps(_captioned_model, x, t, condition, 1.0, null=empty).numpy(), cond, rtol=1e-6)
    np.testing.assert_allclose(
        guided_eps(_captioned_model, x, t, condition, 0.0, null=empty).numpy(), uncond, rtol=1e-6
    )
    np.testing.assert_allclose(
        guided_eps(_captioned_model, x, t, condition, 3.0, null=empty).numpy(),
        uncond + 3.0 * (cond - uncond),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(predict_eps(_captioned_model, x, t, condition).numpy(), cond, rtol=1e-6)
    with pytest.raises(ValueError, match="pass null="):
        guided_eps(_captioned_model, x, t, condition, 2.0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_guide_with_a_caption_condition(sampler):
    """The samplers hand the condition and ∅ to ``guided_eps`` unchanged: sampling with them
    equals sampling an unconditional model that has the guided ε̃ built in."""
    s = linear_schedule(20)
    condition, empty = _caption_condition()
    x_T = mg.randn(4, 2)

    def guided(x: mg.Tensor, t: mg.Tensor) -> mg.Tensor:
        return guided_eps(_captioned_model, x, t, condition, 2.5, null=empty)

    if sampler == "ddpm":
        noise = [mg.randn(4, 2) for _ in range(s.T)]
        through = ddpm_sample(_captioned_model, s, x_T, y=condition, guidance_scale=2.5, null=empty, noise=noise)
        built_in = ddpm_sample(guided, s, x_T, noise=noise)
    else:
        through = ddim_sample(_captioned_model, s, x_T, num_steps=6, y=condition, guidance_scale=2.5, null=empty)
        built_in = ddim_sample(guided, s, x_T, num_steps=6)
    np.testing.assert_array_equal(through.numpy(), built_in.numpy())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_after_step_can_inpaint_the_known_region(sampler):
    """Inpainting through ``after_step``: after every step the known region is replaced by
    q_sample(x_0, t_prev) of the original, so each x_t the sampler continues from carries the
    noised original there, and the final sample carries x_0 itself."""
    s = linear_schedule(20)
    model = randomised_parameters(MLPDenoiser(data_dim=4, hidden=8, num_layers=1, time_dim=4), scale=0.5)
    x0, eps = mg.randn(3, 4), mg.randn(3, 4)
    known = mg.tensor(np.array([[True, True, False, False]]))
    seen: list[int] = []

    def keep_known(x: mg.Tensor, t_prev: int) -> mg.Tensor:
        seen.append(t_prev)
        original = x0 if t_prev < 0 else q_sample(s, x0, _t(t_prev, 3), eps)
        return mg.where(known, original, x)

    trajectory = Trajectory()
    if sampler == "ddpm":
        out = ddpm_sample(model, s, mg.randn(3, 4), after_step=keep_known, trajectory=trajectory)
        assert seen == list(range(18, -2, -1))
    else:
        out = ddim_sample(model, s, mg.randn(3, 4), num_steps=5, eta=0.5, after_step=keep_known, trajectory=trajectory)
        assert seen == ddim_timesteps(20, 5)[1:] + [-1]
    np.testing.assert_array_equal(out.numpy()[:, :2], x0.numpy()[:, :2])
    assert not np.allclose(out.numpy()[:, 2:], x0.numpy()[:, 2:])
    for t, x in list(zip(trajectory.timesteps, trajectory.xs))[1:-1]:  # every x_t after the first step
        np.testing.assert_allclose(x.numpy()[:, :2], q_sample(s, x0, _t(t, 3), eps).numpy()[:, :2], rtol=1e-6)


# --------------------------------------------------------------------------------- EMA
def _set(model: nn.Module, values: list[np.ndarray]) -> None:
    for p, v in zip(model.parameters(), values):
        p.data[...] = v


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_its_closed_form(warmup):
    model = MLPDenoiser(data_dim=2, hidden=4, num_layers=1, time_dim=4)
    rng = np.random.default_rng(8)
    shapes = [p.shape for p in model.parameters()]
    theta0 = [p.data.astype(np.float64) for p in model.parameters()]
    d, n = 0.9, 12
    ema = EMA(model, decay=d, warmup=warmup)
    history = []
    for _ in range(n):
        values = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
        history.append(values)
        _set(model, values)
        ema.update(model)
    decays = [min(d, (1 + k) / (10 + k)) if warmup else d for k in range(1, n + 1)]
    for i, (name, _) in enumerate(model.named_parameters()):
        if warmup:  # θ̄_n = Π_k d_k θ̄_0 + Σ_k (1 − d_k) Π_{j>k} d_j θ_k
            expected = np.prod(decays) * theta0[i]
            for k in range(n):
                expected = expected + (1 - decays[k]) * np.prod(decays[k + 1 :]) * history[k][i]
        else:  # θ̄_n = dⁿ θ̄_0 + (1 − d) Σ_k d^{n−k} θ_k
            expected = d**n * theta0[i] + (1 - d) * sum(d ** (n - k) * history[k - 1][i] for k in range(1, n + 1))
        np.testing.assert_allclose(ema.shadow[name].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert ema.num_updates == n


def test_ema_swaps_its_weights_in_and_out():
    model = randomised_parameters(MLPDenoiser(data_dim=2, hidden=4, num_layers=1, time_dim=4), scale=0.5)
    ema = EMA(model, decay=0.5)
    trained = [p.data.copy() for p in model.parameters()]
    _set(model, [np.zeros_like(v) for v in trained])
    ema.update(model)  # θ̄ = ½ θ_trained
    _set(model, trained)
    with ema.average_parameters(model):
        for p, v in zip(model.parameters(), trained):
            np.testing.assert_allclose(p.data, 0.5 * v, rtol=1e-6)
    for p, v in zip(model.parameters(), trained):
        np.testing.assert_array_equal(p.data, v)
    state = ema.state_dict()
    other = EMA(model, decay=0.5)
    other.load_state_dict(state)
    for name in state:
        np.testing.assert_array_equal(other.shadow[name].numpy(), ema.shadow[name].numpy())
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\)"):
        EMA(model, decay=1.0)


# ------------------------------------------------------------------------ interpolation
def test_slerp_and_lerp_endpoints_and_norms():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(3, 1, 4, 4))
    b = rng.normal(size=(3, 1, 4, 4))
    b *= (np.linalg.norm(a.reshape(3, -1), axis=1) / np.linalg.norm(b.reshape(3, -1), axis=1))[:, None, None, None]
    z0, z1 = mg.tensor(a), mg.tensor(b)
    np.testing.assert_allclose(slerp(z0, z1, 0.0).numpy(), a, atol=1e-6)
    np.testing.assert_allclose(slerp(z0, z1, 1.0).numpy(), b, atol=1e-6)
    norms = np.linalg.norm(a.reshape(3, -1), axis=1)
    for w in (0.25, 0.5, 0.8):  # equal norms stay equal along the great circle...
        mid = slerp(z0, z1, w).numpy().reshape(3, -1)
        np.testing.assert_allclose(np.linalg.norm(mid, axis=1), norms, rtol=1e-5)
    lerp_mid = lerp(z0, z1, 0.5).numpy().reshape(3, -1)  # ...but shrink along the chord
    assert np.all(np.linalg.norm(lerp_mid, axis=1) < norms)
    np.testing.assert_allclose(slerp(z0, z0, 0.3).numpy(), a, rtol=1e-5)  # parallel: no division by 0


def test_interpolate_noise_stacks_the_path():
    z0, z1 = mg.randn(1, 1, 4, 4), mg.randn(1, 1, 4, 4)
    path = interpolate_noise(z0, z1, 5)
    assert path.shape == (5, 1, 4, 4)
    np.testing.assert_allclose(path[0].numpy(), z0[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(path[4].numpy(), z1[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(interpolate_noise(z0, z1, 3, method="lerp")[1].numpy(), 0.5 * (z0 + z1)[0].numpy())
    with pytest.raises(ValueError, match="single samples"):
        interpolate_noise(mg.randn(2, 3), mg.randn(2, 3), 4)
    with pytest.raises(ValueError, match="'slerp' or 'lerp'"):
        interpolate_noise(z0, z1, 4, method="cubic")


# ---------------------------------------------------------------------------- overfit
def test_mlp_denoiser_overfits_one_tiny_batch():
    """With x_0, t and ε fixed, the DDPM loss of one batch can be driven to (nearly) zero."""
    s = linear_schedule(100)
    model = MLPDenoiser(data_dim=2, hidden=64, num_layers=2, time_dim=16, num_classes=2)
    optimizer = mg.optim.Adam(model.parameters(), lr=3e-3)
    x0, noise = mg.randn(8, 2), mg.randn(8, 2)
    t, y = mg.randint(0, 100, (8,)), mg.randint(0, 2, (8,))
    first = None
    for _ in range(300):
        loss = ddpm_loss(model, s, x0, y=y, t=t, noise=noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.02 * first
