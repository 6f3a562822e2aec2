"""Noise schedules of a diffusion model: β_1, …, β_T and what follows from them.

A schedule β_1, …, β_T ∈ (0, 1) fixes how much noise each forward step adds (Ho et al.
2020):

    q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I),
    α_t = 1 − β_t,        ᾱ_t = α_1 α_2 ⋯ α_t,        q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I).

ᾱ_t is the fraction of the signal's variance left at step t; a good schedule takes it
from nearly 1 down to nearly 0, so that x_T is (almost) pure noise. Three schedules:
linear β (Ho et al.), cosine ᾱ (Nichol & Dhariwal 2021) and the offset cosine of the
Keras DDIM tutorial. ``plot_schedules`` draws them side by side.

**Indexing.** Arrays and timestep tensors are 0-based, as in code: index t = 0, …, T−1
stands for the lecture's t = 1, …, T. So ``schedule.alpha_bars[0]`` is ᾱ_1, the
first, smallest amount of noise; ``alpha_bars[T−1]`` is ᾱ_T ≈ 0, pure noise; and
"ᾱ_{t−1}" of the first step is ᾱ_0 = 1 (no noise at all).

The schedule's constants are host float64 NumPy arrays: they are a handful of numbers
fixed before training, not tensor data. The samplers read them as Python floats (one t
for the whole batch); training looks them up per sample (``alpha_bars_at``) from a
copy on the data's device, so nothing is read back to the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minigen import backend
from minigen.tensor import Tensor


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
        self._on_device: dict[tuple[int, str, str], Tensor] = {}  # (id of the table, device, dtype)

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

    def alpha_bars_at(self, t: Tensor, like: Tensor) -> Tensor:
        """ᾱ_t for each sample's timestep t (B,), shaped (B, 1, …, 1) to broadcast against
        ``like`` (B, …), on ``like``'s device and in its dtype."""
        return self._per_sample(self.alpha_bars, t, like, "alpha_bars_at")

    def betas_at(self, t: Tensor, like: Tensor) -> Tensor:
        """β_t for each sample's timestep t (B,), shaped (B, 1, …, 1) like ``alpha_bars_at``."""
        return self._per_sample(self.betas, t, like, "betas_at")

    def gather(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """The older spelling of ``alpha_bars_at``/``betas_at``: the table named ``name``
        (``"alpha_bars"``, ``"betas"``, …) at t, kept so that existing code runs."""
        return self._per_sample(getattr(self, name), t, like, "gather")

    def _per_sample(self, table: np.ndarray, t: Tensor, like: Tensor, caller: str) -> Tensor:
        """``table[t]``, one value per sample, shaped (B, 1, …, 1) on ``like``'s device.

        Indexing on the device keeps the training step free of host syncs. The table is
        uploaded once per (device, dtype) and kept, so a training step uploads nothing.
        """
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"NoiseSchedule.{caller}: t must have shape (B,) = ({like.shape[0]},), one timestep per sample, "
                f"got {tuple(t.shape)}"
            )
        if t.dtype.kind not in "iu":
            raise TypeError(f"NoiseSchedule.{caller}: t must be an integer tensor, got dtype {t.dtype}")
        key = (id(table), str(like.device), str(like.dtype))
        on_device = self._on_device.get(key)
        if on_device is None:
            host = np.asarray(table, dtype=like.dtype)
            on_device = self._on_device[key] = Tensor(backend.to_device(host, like.device))
        return on_device[t].reshape((like.shape[0],) + (1,) * (like.ndim - 1))


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
