"""The reverse process of a diffusion model: DDPM and DDIM sampling, and the noise to start from.

A trained noise predictor ε_θ(x_t, t) turns noise back into data, one step at a time
from x_T ~ N(0, I) (notation and 0-based indexing as in ``noise_schedules``):

* every step first estimates the clean data by solving the forward formula
  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0 (``predict_x0``):

      x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t;

* **DDPM** (Ho et al. 2020, Algorithm 2; ``ddpm_step``, ``ddpm_sample``) then draws
  x_{t−1} from p_θ(x_{t−1} | x_t) = N(μ_θ, β̃_t I), the true posterior q(x_{t−1} | x_t, x̂_0):
  T network evaluations, each adding fresh noise;
* **DDIM** (Song et al. 2021; ``ddim_step``, ``ddim_sample``) jumps between the entries
  of a sub-sequence τ of the timesteps, with the noise scaled by η: η = 0 is
  deterministic, and 50 steps replace 1000 with the same trained ε_θ.

Both run one loop, ``reverse_process``, with their own step. The network is any callable
``model(x_t, t, *condition)`` (``guidance`` says what a condition is); ``y`` and
``guidance_scale`` switch on classifier-free guidance.
``after_step`` lets a caller change each new x, e.g. for inpainting: paste the known
region of the original, noised to the new step with ``q_sample``, over it.

Starting noise can be interpolated (``slerp``, ``interpolate_noise``): with DDIM at
η = 0 the path between two noises becomes a smooth path between two samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import minigen as mg
from minigen.models.guidance import Condition, predict_eps
from minigen.models.noise_schedules import NoiseSchedule
from minigen.tensor import Tensor

AfterStep = Callable[[Tensor, int], Tensor]  # (x at the new timestep, that timestep; −1 = the end) -> x


@dataclass
class Trajectory:
    """A record of a reverse process: x_t and the predicted x̂_0 at every ``every``-th step.

    Pass one to a sampler (``trajectory=Trajectory(every=50)``); it fills ``timesteps``
    (0-based t of each recorded x_t, −1 for the final x_0), ``xs`` and ``x0_preds``
    (detached tensors on the sampling device).
    """

    every: int = 1
    timesteps: list[int] = field(default_factory=list)
    xs: list[Tensor] = field(default_factory=list)
    x0_preds: list[Tensor] = field(default_factory=list)

    def record(self, step: int, t: int, x: Tensor, x0_pred: Tensor | None) -> None:
        if step % self.every == 0 or t <= 0:
            self.timesteps.append(t)
            self.xs.append(x.detach())
            self.x0_preds.append((x0_pred if x0_pred is not None else x).detach())


def predict_x0(schedule: NoiseSchedule, x_t: Tensor, t: int, eps: Tensor) -> Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t: the forward formula solved for x_0."""
    alpha_bar = float(schedule.alpha_bars[t])
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def _maybe_clip(x0: Tensor, clip_x0: float | None) -> Tensor:
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


def reverse_process(
    model: Callable[..., Tensor],
    x_T: Tensor,
    timesteps: Sequence[int],
    update: Callable[[int, int, int, Tensor, Tensor], tuple[Tensor, Tensor]],
    y: Condition | None = None,
    guidance_scale: float = 1.0,
    null: Condition | None = None,
    after_step: AfterStep | None = None,
    trajectory: Trajectory | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> Tensor:
    """The loop both samplers run (DDPM's Algorithm 2, DDIM on a sub-sequence): from x_T,
    for each t of ``timesteps`` (descending), with t_prev the next entry (−1 after the last),

        ε̂ = ε_θ(x_t, t[, y])             (guided if w ≠ 1: ``predict_eps``)
        x_{t_prev}, x̂_0 = update(i, t, t_prev, x_t, ε̂)      (``ddpm_step`` or ``ddim_step``)

    then ``after_step`` may replace x_{t_prev}, and ``trajectory`` records x_t and x̂_0.
    No graph is recorded. Returns x_0.
    """
    x = x_T
    with mg.no_grad():
        indices = range(len(timesteps))
        for i in progress(indices) if progress is not None else indices:
            t = timesteps[i]
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            t_batch = mg.full((x.shape[0],), t, dtype=mg.int64, device=x.device)
            eps = predict_eps(model, x, t_batch, y, guidance_scale, null)
            x_next, x0_hat = update(i, t, t_prev, x, eps)
            if after_step is not None:
                x_next = after_step(x_next, t_prev)
            if trajectory is not None:
                trajectory.record(i, t, x, x0_hat)
            x = x_next
        if trajectory is not None:
            trajectory.record(0, -1, x, x)
    return x


# ================================================================================== DDPM


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    eps: Tensor,
    z: Tensor | None = None,
    clip_x0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t−1} ~ p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I):

        μ_θ = 1/√α_t · (x_t − β_t/√(1−ᾱ_t) · ε̂)
            = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x̂_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t,
        σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t,        x_{t−1} = μ_θ + σ_t z.

    The second form of μ (the mean of the true posterior q(x_{t−1} | x_t, x̂_0)) is the
    one computed, because it lets x̂_0 be clipped to the data range (``clip_x0``); without
    clipping the two forms are equal. At t = 0 (the lecture's t = 1) σ = 0: no noise is
    added to the final sample. Returns (x_{t−1}, x̂_0).
    """
    alpha, beta = float(schedule.alphas[t]), float(schedule.betas[t])
    alpha_bar, alpha_bar_prev = float(schedule.alpha_bars[t]), float(schedule.alpha_bars_prev[t])
    x0_hat = _maybe_clip(predict_x0(schedule, x_t, t, eps), clip_x0)
    coef_x0 = math.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)
    coef_xt = math.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    if t == 0:
        return mean, x0_hat
    if z is None:
        z = mg.randn_like(x_t)
    return mean + math.sqrt(float(schedule.posterior_variances[t])) * z, x0_hat


def ddpm_sample(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    y: Condition | None = None,
    guidance_scale: float = 1.0,
    clip_x0: float | None = None,
    noise: Sequence[Tensor] | None = None,
    trajectory: Trajectory | None = None,
    progress: Callable[[Any], Any] | None = None,
    null: Condition | None = None,
    after_step: AfterStep | None = None,
) -> Tensor:
    """DDPM ancestral sampling: start at x_T (e.g. ``mg.randn``) and apply ``ddpm_step`` for
    t = T, …, 1 (T network evaluations).

    * ``y``, ``guidance_scale``, ``null``: the condition, w and ∅ (see ``guided_eps``);
    * ``noise``: the z of every step (T tensors like x_T, in sampling order; the last is
      unused since σ = 0 at the final step);
    * ``after_step(x, t_prev)`` may replace each new x_{t−1} (t_prev = −1 for the final x_0);
    * ``progress`` may wrap the step range (e.g. ``tqdm``).
    """

    def ancestral_step(i: int, t: int, t_prev: int, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        z = noise[i] if noise is not None and t > 0 else None  # None: ddpm_step draws z itself
        return ddpm_step(schedule, x, t, eps, z, clip_x0)

    every_step = list(range(schedule.T - 1, -1, -1))
    return reverse_process(
        model, x_T, every_step, ancestral_step, y, guidance_scale, null, after_step, trajectory, progress
    )


# ================================================================================== DDIM


def ddim_timesteps(T: int, num_steps: int) -> list[int]:
    """``num_steps`` evenly spaced 0-based timesteps from T−1 down to 0: the sub-sequence τ."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"ddim_timesteps: num_steps must be between 1 and T = {T}, got {num_steps}")
    if num_steps == 1:
        return [T - 1]
    # floor(x + 0.5) rather than round(): values at least 1 apart never land on the same integer.
    return [int(math.floor(v + 0.5)) for v in np.linspace(T - 1, 0, num_steps)]


def _alpha_bar_before(schedule: NoiseSchedule, t_prev: int) -> float:
    """ᾱ at the step DDIM moves to: ᾱ_{t_prev}, or 1 (clean data) after the last step (t_prev = −1)."""
    return float(schedule.alpha_bars[t_prev]) if t_prev >= 0 else 1.0


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """σ_t(η) = η · √((1−ᾱ_prev)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev), with ᾱ_prev = 1 when t_prev < 0.

    η = 0 makes sampling deterministic; η = 1 with every step (t_prev = t − 1) gives
    σ_t² = β̃_t, exactly DDPM's posterior variance.
    """
    alpha_bar = float(schedule.alpha_bars[t])
    alpha_bar_prev = _alpha_bar_before(schedule, t_prev)
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev))


def ddim_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    t_prev: int,
    eps: Tensor,
    eta: float = 0.0,
    z: Tensor | None = None,
    clip_x0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step from timestep t to the previous timestep t_prev of the step list:

        x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t
        x_prev = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ_t²) · ε̂ + σ_t z

    ("predicted x_0", "direction pointing to x_t", "random noise"), with σ_t from
    ``ddim_sigma``. t_prev = −1 means the end (ᾱ_prev = 1). Returns (x_prev, x̂_0).
    """
    alpha_bar_prev = _alpha_bar_before(schedule, t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x0_hat = _maybe_clip(predict_x0(schedule, x_t, t, eps), clip_x0)
    if clip_x0 is not None:  # keep ε̂ consistent with the clipped x̂_0
        alpha_bar = float(schedule.alpha_bars[t])
        eps = (x_t - math.sqrt(alpha_bar) * x0_hat) / math.sqrt(1.0 - alpha_bar)
    x_prev = math.sqrt(alpha_bar_prev) * x0_hat + math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * (z if z is not None else mg.randn_like(x_t))
    return x_prev, x0_hat


def ddim_sample(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    num_steps: int | None = None,
    eta: float = 0.0,
    y: Condition | None = None,
    guidance_scale: float = 1.0,
    clip_x0: float | None = None,
    timesteps: Sequence[int] | None = None,
    noise: Sequence[Tensor] | None = None,
    trajectory: Trajectory | None = None,
    progress: Callable[[Any], Any] | None = None,
    null: Condition | None = None,
    after_step: AfterStep | None = None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021) over a sub-sequence τ of the T timesteps
    (``ddim_timesteps(T, num_steps)`` unless ``timesteps`` is given, descending): each
    step goes from τ_i to the *next entry of the list* τ_{i+1} (−1 after the last), so
    ``num_steps`` network evaluations replace T. The same trained ε_θ serves: DDIM only
    changes the sampler. ``num_steps`` defaults to min(50, T). ``noise`` optionally
    gives z for every step (used when η > 0). ``y``, ``guidance_scale``, ``null``,
    ``after_step``, ``trajectory`` and ``progress`` as in ``ddpm_sample``.
    """
    if timesteps is not None:
        steps = list(timesteps)
    else:
        steps = ddim_timesteps(schedule.T, num_steps if num_steps is not None else min(50, schedule.T))
    if any(b >= a for a, b in zip(steps, steps[1:])) or steps[0] >= schedule.T or steps[-1] < 0:
        raise ValueError(f"ddim_sample: timesteps must decrease strictly within [0, {schedule.T}), got {steps}")

    def ddim_update(i: int, t: int, t_prev: int, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        z = noise[i] if noise is not None and eta > 0 else None
        return ddim_step(schedule, x, t, t_prev, eps, eta, z, clip_x0)

    return reverse_process(model, x_T, steps, ddim_update, y, guidance_scale, null, after_step, trajectory, progress)


# ========================================================================= starting noise


def lerp(z0: Tensor, z1: Tensor, weight: float) -> Tensor:
    """(1 − α) z_0 + α z_1. Between two N(0, I) draws the midpoint has variance ½: too
    little noise for the sampler, which is why noise is usually interpolated with slerp."""
    return (1.0 - weight) * z0 + weight * z1


def slerp(z0: Tensor, z1: Tensor, weight: float) -> Tensor:
    """Spherical interpolation per sample:

        slerp(z_0, z_1; α) = sin((1−α)θ)/sin θ · z_0 + sin(αθ)/sin θ · z_1,
        cos θ = ⟨z_0, z_1⟩ / (‖z_0‖ ‖z_1‖),

    which follows the great circle between them and keeps the norm (≈ √dim for Gaussian
    noise) along the way. Each sample (dim 0) is interpolated separately.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp: z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    xp = z0.xp
    a = z0.data.reshape(z0.shape[0], -1)
    b = z1.data.reshape(z1.shape[0], -1)
    cos = (a * b).sum(axis=1) / (xp.linalg.norm(a, axis=1) * xp.linalg.norm(b, axis=1))
    theta = xp.arccos(xp.clip(cos, -1.0, 1.0))
    sin = xp.sin(theta)
    # Nearly parallel vectors: sin θ ≈ 0, and slerp becomes lerp.
    safe = sin > 1e-6
    w0 = xp.where(safe, xp.sin((1.0 - weight) * theta) / xp.where(safe, sin, 1.0), 1.0 - weight)
    w1 = xp.where(safe, xp.sin(weight * theta) / xp.where(safe, sin, 1.0), weight)
    shape = (z0.shape[0],) + (1,) * (z0.ndim - 1)
    return Tensor(w0.astype(z0.dtype).reshape(shape)) * z0 + Tensor(w1.astype(z0.dtype).reshape(shape)) * z1


def interpolate_noise(z0: Tensor, z1: Tensor, num: int, method: str = "slerp") -> Tensor:
    """``num`` noise tensors on the path from z_0 to z_1 (each one sample of shape (1, …),
    like an x_T batch of one), stacked into a batch (num, …): feed it to a deterministic
    sampler (DDIM, η = 0) to see how the sample changes along the path."""
    if method not in ("slerp", "lerp"):
        raise ValueError(f"interpolate_noise: method must be 'slerp' or 'lerp', got {method!r}")
    if num < 2:
        raise ValueError(f"interpolate_noise: num must be at least 2, got {num}")
    if z0.ndim < 1 or z0.shape[0] != 1 or z0.shape != z1.shape:
        raise ValueError(
            f"interpolate_noise: z0 and z1 must be single samples of equal shape (1, ...), "
            f"got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    step = slerp if method == "slerp" else lerp
    return mg.cat([step(z0, z1, i / (num - 1)) for i in range(num)], dim=0)
