"""Denoising diffusion (Ho et al. 2020): the forward process and the training objective.

The lecture's model in three parts, one file each:

* ``noise_schedules``: β_1, …, β_T, α_t = 1 − β_t and ᾱ_t = α_1 α_2 ⋯ α_t;
* this file, the **forward (noising) process**, one step at a time or in closed form,

      q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I),       q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I),

  and the **training objective**: predict the noise that was added,

      L = E_{x_0, t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²;

* ``samplers``: the reverse process, DDPM and DDIM, from x_T ~ N(0, I) back to data;

with classifier-free guidance in ``guidance`` and the network ε_θ in ``unet``.
Everything is importable from here, ``from minigen.models.diffusion import ddim_sample``,
and so is ``EMA`` (``minigen.optim``), the averaged weights a diffusion model samples with.

Timesteps are 0-based indices: t = 0, …, T−1 stands for the lecture's t = 1, …, T
(see ``noise_schedules``).
"""

from __future__ import annotations

from collections.abc import Callable

import minigen as mg
import minigen.nn.functional as F
from minigen.models.guidance import (
    Condition,
    condition_args,
    drop_condition,
    drop_labels,
    guided_eps,
    predict_eps,
)
from minigen.models.noise_schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    offset_cosine_schedule,
    plot_schedules,
)
from minigen.models.samplers import (
    Trajectory,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    interpolate_noise,
    lerp,
    predict_x0,
    reverse_process,
    slerp,
)
from minigen.optim import EMA
from minigen.tensor import Tensor

__all__ = [
    # the forward process and the loss (this file)
    "q_step",
    "q_sample",
    "ddpm_loss",
    # noise_schedules
    "NoiseSchedule",
    "linear_schedule",
    "cosine_schedule",
    "offset_cosine_schedule",
    "SCHEDULES",
    "make_schedule",
    "plot_schedules",
    # guidance
    "Condition",
    "drop_condition",
    "drop_labels",
    "guided_eps",
    "predict_eps",
    # samplers
    "Trajectory",
    "predict_x0",
    "reverse_process",
    "ddpm_step",
    "ddpm_sample",
    "ddim_timesteps",
    "ddim_sigma",
    "ddim_step",
    "ddim_sample",
    "lerp",
    "slerp",
    "interpolate_noise",
    # minigen.optim
    "EMA",
]


def q_step(schedule: NoiseSchedule, x_prev: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """One forward step: x_t = √(1−β_t) x_{t−1} + √β_t ε, i.e. a sample of
    q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I).

    ``t`` (B,) are 0-based indices; ``x_prev`` is x_0 when t = 0. ``noise`` is ε ~ N(0, I).
    """
    beta = schedule.betas_at(t, x_prev)
    return (1.0 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, a sample of
    q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I).

    The t single steps compose into this because a sum of independent Gaussians is
    Gaussian: the signal is scaled by √α_1⋯√α_t = √ᾱ_t and the noise variances add up
    to 1 − ᾱ_t.
    """
    alpha_bar = schedule.alpha_bars_at(t, x0)
    return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise


def ddpm_loss(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    y: Condition | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """The DDPM ("simple") loss, averaged over the batch and every element:

        L = mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t[, y])‖²,   t ~ U{1..T},  ε ~ N(0, I).

    ``y`` is the condition, if any (class labels, or a tuple such as a caption's context
    and mask: see ``guidance``). ``t`` (B,) and ``noise`` (like x0) may be given for
    deterministic checks; otherwise they are drawn from the seeded generator on x0's device.
    """
    if t is None:
        t = mg.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    if noise is None:
        noise = mg.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    eps_hat = model(x_t, t, *condition_args(y))
    return F.mse_loss(eps_hat, noise)
