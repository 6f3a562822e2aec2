"""Denoising diffusion: noise schedules, the forward process, the DDPM loss, DDPM and DDIM
sampling, classifier-free guidance, EMA weights and noise interpolation.

Notation (Ho et al. 2020; Song et al. 2021). A schedule β_1, …, β_T ∈ (0, 1) defines

    α_t = 1 − β_t,        ᾱ_t = α_1 α_2 ⋯ α_t,

the forward (noising) process, one step at a time or in closed form,

    q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I),       q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I),

and the training objective: predict the noise that was added,

    L = E_{x_0, t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖².

**Indexing.** Arrays and timestep tensors are 0-based, as in code: index t = 0, …, T−1
stands for the lecture's t = 1, …, T. So ``schedule.alpha_bars[0]`` is ᾱ_1, the
first, smallest amount of noise; ``alpha_bars[T−1]`` is ᾱ_T ≈ 0, pure noise; and
"ᾱ_{t−1}" of the first step is ᾱ_0 = 1 (no noise at all).

The schedule's constants are host float64 NumPy arrays: they are a handful of numbers
fixed before training, not tensor data. Per-sample coefficients (one t per sample) are
gathered from a copy on the data's device, so nothing is read back to the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import minigen as mg
import minigen.nn.functional as F
from minigen import backend
from minigen.tensor import Tensor

# ============================================================================ schedules


class NoiseSchedule:
    """β_t for t = 1..T and everything derived from it: α_t, ᾱ_t, ᾱ_{t−1}, β̃_t.

    Validated on construction: T ≥ 1, every 0 < β_t < 1, ᾱ_t strictly decreasing, and
    ᾱ_T < 1e-3, so that x_T carries (almost) nothing of x_0 and sampling may start from
    x_T ~ N(0, I).
    """

    def __init__(self, betas: Sequence[float] | np.ndarray, name: str = "custom", max_final_alpha_bar: float = 1e-3):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(f"NoiseSchedule: betas must be a 1-D sequence of T >= 1 values, got shape {betas.shape}")
        bad = np.flatnonzero(~((betas > 0.0) & (betas < 1.0)))  # also catches NaN
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"NoiseSchedule ({name}): every beta_t must lie in (0, 1), but beta[{i}] = {float(betas[i])!r} "
                f"({bad.size} of {betas.size} values are outside)"
            )
        alpha_bars = np.cumprod(1.0 - betas)
        if np.any(np.diff(alpha_bars) >= 0):
            i = int(np.flatnonzero(np.diff(alpha_bars) >= 0)[0]) + 1
            raise ValueError(
                f"NoiseSchedule ({name}): alpha_bar must be strictly decreasing, but alpha_bar[{i}] = "
                f"{float(alpha_bars[i])!r} >= alpha_bar[{i - 1}] = {float(alpha_bars[i - 1])!r} "
                "(beta too small to change it)"
            )
        if alpha_bars[-1] >= max_final_alpha_bar:
            raise ValueError(
                f"NoiseSchedule ({name}): alpha_bar_T = {alpha_bars[-1]:.3g} must be below {max_final_alpha_bar:g}, "
                f"so that x_T is (almost) pure noise; use larger betas or more steps (T = {betas.size})"
            )
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = alpha_bars
        self.alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])  # ᾱ_{t−1}, with ᾱ_0 = 1
        # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, the variance of the true posterior q(x_{t−1} | x_t, x_0).
        self.posterior_variances = (1.0 - self.alpha_bars_prev) / (1.0 - alpha_bars) * betas
        self._on_device: dict[tuple[str, str, str], Tensor] = {}

    @property
    def T(self) -> int:
        return int(self.betas.size)

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule({self.name}, T={self.T}, beta {self.betas[0]:.3g}..{self.betas[-1]:.3g}, "
            f"alpha_bar_T={self.alpha_bars[-1]:.2e})"
        )

    def gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """``getattr(self, name)[t]`` for a batch of timesteps, shaped (B, 1, …, 1) to broadcast
        against ``like`` (B, …), on ``like``'s device and in its dtype."""
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"NoiseSchedule.gather: t must have shape (B,) = ({like.shape[0]},), one timestep per sample, "
                f"got {tuple(t.shape)}"
            )
        if t.dtype.kind not in "iu":
            raise TypeError(f"NoiseSchedule.gather: t must be an integer tensor, got dtype {t.dtype}")
        key = (name, str(like.device), str(like.dtype))
        table = self._on_device.get(key)
        if table is None:
            host = np.asarray(getattr(self, name), dtype=like.dtype)
            table = self._on_device[key] = Tensor(backend.to_device(host, like.device))
        return table[t].reshape((like.shape[0],) + (1,) * (like.ndim - 1))


def _check_T(T: Any, name: str, max_beta: float | None = None) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"{name}: the number of steps T must be an int >= 1, got {T!r}")
    if max_beta is not None and T == 1 and 1.0 - max_beta >= 1e-3:
        raise ValueError(
            f"{name}: with beta clipped at {max_beta}, T = 1 step cannot reach alpha_bar_T < 1e-3 "
            f"(alpha_bar_1 = 1 - beta_1 >= {1.0 - max_beta:.3g}); use T >= 2"
        )
    return int(T)


def linear_schedule(
    T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, max_beta: float = 0.999
) -> NoiseSchedule:
    """β_t linear from β_start·1000/T to β_end·1000/T (Ho et al. use T = 1000, 1e-4 to 0.02).

    Scaling by 1000/T keeps Σβ_t (about −log ᾱ_T) the same for any T, so ᾱ_T ≈ e^−10 ≈ 0
    whether T is 50 or 4000. For small T the scaled β would pass 1 and are clipped at
    ``max_beta`` = 0.999 (so T = 1 is too few steps: ᾱ_1 ≥ 0.001).
    """
    T = _check_T(T, "linear_schedule", max_beta)
    scale = 1000.0 / T
    start, end = beta_start * scale, beta_end * scale
    betas = np.linspace(start, end, T) if T > 1 else np.array([end])
    return NoiseSchedule(np.minimum(betas, max_beta), name="linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """ᾱ_t = f(t)/f(0),  f(t) = cos²(π/2 · (t/T + s)/(1 + s))  (Nichol & Dhariwal 2021).

    β_t = 1 − ᾱ_t/ᾱ_{t−1}, clipped at ``max_beta`` = 0.999 since f(T) = 0 would make the
    last β exactly 1. The small offset s keeps β_1 from being vanishingly small. ᾱ falls
    like a cosine: slowly at both ends, so fewer steps are spent on nearly-clean images
    than with the linear schedule.
    """
    T = _check_T(T, "cosine_schedule", max_beta)
    steps = np.arange(T + 1, dtype=np.float64)
    f = np.cos(0.5 * math.pi * (steps / T + s) / (1.0 + s)) ** 2
    alpha_bars = f / f[0]
    betas = 1.0 - alpha_bars[1:] / alpha_bars[:-1]
    return NoiseSchedule(np.clip(betas, 0.0, max_beta), name="cosine")


def offset_cosine_schedule(
    T: int = 1000, max_signal_rate: float = 0.95, min_signal_rate: float = 0.02
) -> NoiseSchedule:
    """√ᾱ_t = cos φ_t with the angle φ_t linear in t/T, from φ_0 = arccos(max_signal_rate)
    to φ_T = arccos(min_signal_rate) (the "offset cosine" schedule of the Keras DDIM
    tutorial, in which signal² + noise² = cos² φ + sin² φ = 1 at every step).

    The signal rate √ᾱ_t runs from about 0.95 at the first step to 0.02 at t = T: it
    never comes near the extremes 1 and 0, so the network never sees x_t that are
    exactly clean or exactly noise (the first step jumps from x_0 to ᾱ_1 ≈ 0.9 at once).
    ᾱ_T = min_signal_rate² = 4e-4.
    """
    T = _check_T(T, "offset_cosine_schedule")
    if not 0.0 < min_signal_rate < max_signal_rate <= 1.0:
        raise ValueError(
            f"offset_cosine_schedule: need 0 < min_signal_rate < max_signal_rate <= 1, got "
            f"{min_signal_rate} and {max_signal_rate}"
        )
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    angles = start + (end - start) * np.arange(T + 1, dtype=np.float64) / T
    alpha_bars = np.cos(angles) ** 2  # ᾱ(0) = max_signal_rate², ᾱ(T) = min_signal_rate²
    alpha_bars[0] = 1.0  # x_0 is the data itself; the first step jumps to the offset
    betas = 1.0 - alpha_bars[1:] / alpha_bars[:-1]
    return NoiseSchedule(betas, name="offset-cosine")


SCHEDULES: dict[str, Callable[[int], NoiseSchedule]] = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "offset-cosine": offset_cosine_schedule,
}


def make_schedule(name: str, T: int = 1000) -> NoiseSchedule:
    """``make_schedule("cosine", 1000)``: a schedule by name (linear, cosine, offset-cosine)."""
    if name not in SCHEDULES:
        raise ValueError(f"make_schedule: unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](T)


def plot_schedules(schedules: NoiseSchedule | Mapping[str, NoiseSchedule], path: str | Path) -> Path:
    """Write a PNG of β_t and ᾱ_t against t for one schedule or several (to compare them)."""
    from minigen.utils import line_plot

    if isinstance(schedules, NoiseSchedule):
        schedules = {schedules.name: schedules}
    series: dict[str, Any] = {}
    for label, schedule in schedules.items():
        t = np.arange(1, schedule.T + 1, dtype=np.float64)
        series[f"{label}: alpha_bar_t"] = (t, schedule.alpha_bars)
        series[f"{label}: beta_t"] = (t, schedule.betas)
    return line_plot(series, path, title="noise schedules: beta_t and alpha_bar_t", xlabel="t", ylim=(0.0, 1.02))


# ====================================================================== forward process


def q_step(schedule: NoiseSchedule, x_prev: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """One forward step: x_t = √(1−β_t) x_{t−1} + √β_t ε, i.e. a sample of q(x_t | x_{t−1}).

    ``t`` (B,) are 0-based indices; ``x_prev`` is x_0 when t = 0. ``noise`` is ε ~ N(0, I).
    """
    beta = schedule.gather("betas", t, x_prev)
    return (1.0 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, a sample of
    q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I).

    The t single steps compose into this because a sum of independent Gaussians is
    Gaussian: the signal is scaled by √α_1⋯√α_t = √ᾱ_t and the noise variances add up
    to 1 − ᾱ_t.
    """
    alpha_bar = schedule.gather("alpha_bars", t, x0)
    return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise


# ============================================================================== training


def drop_labels(y: Tensor, p_uncond: float, null_label: int, drop: Tensor | None = None) -> Tensor:
    """Classifier-free guidance training: replace each label by the null label ∅ with
    probability ``p_uncond``, so the network also learns the unconditional ε_θ(x_t, t, ∅).

    ``drop`` (bool, (B,)) gives the choice explicitly; by default it is drawn from the
    seeded generator.
    """
    if drop is None:
        drop = mg.rand(y.shape[0], device=y.device) < p_uncond
    return mg.where(drop, mg.full(tuple(y.shape), null_label, dtype=y.dtype, device=y.device), y)


def ddpm_loss(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    y: Tensor | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """The DDPM ("simple") loss, averaged over the batch and every element:

        L = mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t[, y])‖²,   t ~ U{1..T},  ε ~ N(0, I).

    ``t`` (B,) and ``noise`` (like x0) may be given for deterministic checks; otherwise
    they are drawn from the seeded generator on x0's device.
    """
    if t is None:
        t = mg.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    if noise is None:
        noise = mg.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    eps_hat = model(x_t, t) if y is None else model(x_t, t, y)
    return F.mse_loss(eps_hat, noise)


# ============================================================================= guidance


def guided_eps(model: Callable[..., Tensor], x: Tensor, t: Tensor, y: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance: ε̃ = ε_θ(x_t, t, ∅) + w · (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅)).

    w = 0 is the unconditional model, w = 1 the conditional one, and w > 1 extrapolates
    away from "any image" towards "an image of class y", trading diversity for fidelity.
    Both predictions come from one forward pass on the batch doubled: [x, x] with
    labels [y, ∅]. ``model.null_label`` names ∅.
    """
    null_label = getattr(model, "null_label", None)
    if null_label is None:
        raise ValueError("guided_eps: the model has no null_label; build it with num_classes for guidance")
    b = x.shape[0]
    null = mg.full((b,), null_label, dtype=y.dtype, device=y.device)
    eps = model(mg.cat([x, x], dim=0), mg.cat([t, t], dim=0), mg.cat([y, null], dim=0))
    eps_cond, eps_uncond = eps[:b], eps[b:]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def predict_eps(
    model: Callable[..., Tensor], x: Tensor, t: Tensor, y: Tensor | None = None, guidance_scale: float = 1.0
) -> Tensor:
    """ε̂ for the samplers: unconditional if ``y`` is None, conditional for w = 1, else guided."""
    if y is None:
        return model(x, t)
    if guidance_scale == 1.0:  # ε̃ = ε_cond exactly: skip the unconditional half
        return model(x, t, y)
    return guided_eps(model, x, t, y, guidance_scale)


# ============================================================================= sampling


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


def _noise_for(noise: Sequence[Tensor] | None, step: int, like: Tensor) -> Tensor:
    return noise[step] if noise is not None else mg.randn_like(like)


def ddpm_sample(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_x0: float | None = None,
    noise: Sequence[Tensor] | None = None,
    trajectory: Trajectory | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> Tensor:
    """DDPM ancestral sampling: start at x_T (e.g. ``mg.randn``) and apply ``ddpm_step`` for
    t = T, …, 1 (T network evaluations). ``noise`` optionally gives the z of every step
    (a sequence of T tensors like x_T, in sampling order; the last one is unused since
    σ = 0 at the final step). ``progress`` may wrap the step range (e.g. ``tqdm``).
    """
    timesteps = range(schedule.T - 1, -1, -1)
    x = x_T
    with mg.no_grad():
        for step, t in enumerate(progress(timesteps) if progress is not None else timesteps):
            t_batch = mg.full((x.shape[0],), t, dtype=mg.int64, device=x.device)
            eps = predict_eps(model, x, t_batch, y, guidance_scale)
            z = _noise_for(noise, step, x) if t > 0 else None
            x_next, x0_hat = ddpm_step(schedule, x, t, eps, z, clip_x0)
            if trajectory is not None:
                trajectory.record(step, t, x, x0_hat)
            x = x_next
        if trajectory is not None:
            trajectory.record(0, -1, x, x)
    return x


def ddim_timesteps(T: int, num_steps: int) -> list[int]:
    """``num_steps`` evenly spaced 0-based timesteps from T−1 down to 0: the sub-sequence τ."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"ddim_timesteps: num_steps must be between 1 and T = {T}, got {num_steps}")
    if num_steps == 1:
        return [T - 1]
    # floor(x + 0.5) rather than round(): values at least 1 apart never land on the same integer.
    return [int(math.floor(v + 0.5)) for v in np.linspace(T - 1, 0, num_steps)]


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """σ_t(η) = η · √((1−ᾱ_prev)/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev), with ᾱ_prev = 1 when t_prev < 0.

    η = 0 makes sampling deterministic; η = 1 with every step (t_prev = t − 1) gives
    σ_t² = β̃_t, exactly DDPM's posterior variance.
    """
    alpha_bar = float(schedule.alpha_bars[t])
    alpha_bar_prev = float(schedule.alpha_bars[t_prev]) if t_prev >= 0 else 1.0
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
    alpha_bar_prev = float(schedule.alpha_bars[t_prev]) if t_prev >= 0 else 1.0
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
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_x0: float | None = None,
    timesteps: Sequence[int] | None = None,
    noise: Sequence[Tensor] | None = None,
    trajectory: Trajectory | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021) over a sub-sequence τ of the T timesteps
    (``ddim_timesteps(T, num_steps)`` unless ``timesteps`` is given, descending): each
    step goes from τ_i to the *next entry of the list* τ_{i+1} (−1 after the last), so
    ``num_steps`` network evaluations replace T. The same trained ε_θ serves: DDIM only
    changes the sampler. ``num_steps`` defaults to min(50, T). ``noise`` optionally
    gives z for every step (used when η > 0).
    """
    if timesteps is not None:
        steps = list(timesteps)
    else:
        steps = ddim_timesteps(schedule.T, num_steps if num_steps is not None else min(50, schedule.T))
    if any(b >= a for a, b in zip(steps, steps[1:])) or steps[0] >= schedule.T or steps[-1] < 0:
        raise ValueError(f"ddim_sample: timesteps must decrease strictly within [0, {schedule.T}), got {steps}")
    x = x_T
    with mg.no_grad():
        indices = range(len(steps))
        for i in progress(indices) if progress is not None else indices:
            t = steps[i]
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            t_batch = mg.full((x.shape[0],), t, dtype=mg.int64, device=x.device)
            eps = predict_eps(model, x, t_batch, y, guidance_scale)
            z = noise[i] if noise is not None and eta > 0 else None
            x_next, x0_hat = ddim_step(schedule, x, t, t_prev, eps, eta, z, clip_x0)
            if trajectory is not None:
                trajectory.record(i, t, x, x0_hat)
            x = x_next
        if trajectory is not None:
            trajectory.record(0, -1, x, x)
    return x


# ================================================================================= EMA


class EMA:
    """An exponential moving average of a model's parameters, θ̄ ← d·θ̄ + (1 − d)·θ.

    After n updates with parameters θ_1, …, θ_n, starting from θ̄_0 (the weights at
    construction), a constant decay d gives the closed form

        θ̄_n = dⁿ θ̄_0 + (1 − d) Σ_{k=1..n} d^{n−k} θ_k.

    Sampling with θ̄ instead of the last θ averages out the noise of the final SGD
    steps; diffusion models are almost always sampled this way. With ``warmup=True``
    the n-th update uses d_n = min(d, (1 + n)/(10 + n)) instead, so that early on, when
    the weights still change fast, the average forgets the random initial weights
    quickly (θ̄_n = Π_k d_k θ̄_0 + Σ_k (1 − d_k) Π_{j>k} d_j θ_k). Updates happen in
    place on the parameters' device, with no host sync.
    """

    def __init__(self, model: Any, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {name: Tensor(p.data.copy()) for name, p in model.named_parameters()}

    def current_decay(self) -> float:
        """The d of the next update: ``decay``, or its warm-up value min(d, (1 + n)/(10 + n))."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    def update(self, model: Any) -> None:
        """θ̄ ← d·θ̄ + (1 − d)·θ for every parameter (call after each optimiser step)."""
        d = self.current_decay()
        for name, p in model.named_parameters():
            average = self.shadow[name].data
            average *= d
            average += (1.0 - d) * p.data
        self.num_updates += 1

    def copy_to(self, model: Any) -> None:
        """Overwrite the model's parameters with the averages."""
        for name, p in model.named_parameters():
            p.data[...] = self.shadow[name].data

    @contextmanager
    def average_parameters(self, model: Any) -> Iterator[Any]:
        """``with ema.average_parameters(model): sample(model, ...)``: the EMA weights inside,
        the trained weights restored afterwards."""
        saved = {name: p.data.copy() for name, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            for name, p in model.named_parameters():
                p.data[...] = saved[name]

    def state_dict(self) -> dict[str, Tensor]:
        return {name: Tensor(t.data.copy()) for name, t in self.shadow.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for name, t in state.items():
            self.shadow[name].data[...] = backend.to_device(t.data, self.shadow[name].device)


# ========================================================================== interpolation


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
