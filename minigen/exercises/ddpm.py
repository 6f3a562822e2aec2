"""Exercise 10: the DDPM forward process q(x_t | x_0) and the ε-prediction loss."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close, constant_ratio
from minigen.models.diffusion import NoiseSchedule, linear_schedule, q_sample
from minigen.ops.loss import mse_loss
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "ddpm"
TITLE = "DDPM: q_sample and the ε-prediction loss, forward and backward"
TOPIC = "diffusion models"

TEMPLATE = '''"""Exercise: the DDPM forward process q(x_t | x_0) and the ε-prediction loss.

The maths
---------
A noise schedule β_1 … β_T defines α_t = 1 − β_t and ᾱ_t = α_1 α_2 ⋯ α_t. Noising x_0
for t steps in one jump (a sample of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)):

    x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε,        ε ~ N(0, I)  (given as an input)

Each sample n of the batch has its own timestep t_n, so ᾱ_{t_n} is one number per
sample, broadcast over that sample's (C, H, W): reshape the gathered values to
(N, 1, 1, 1). Timesteps are 0-based indices into the table alpha_bars (T,).
The coefficients satisfy (√ᾱ)² + (√(1 − ᾱ))² = 1: the variance is preserved.

    ∂L/∂x_0 = √ᾱ_t · g,      ∂L/∂ε = √(1 − ᾱ_t) · g          (g = ∂L/∂x_t)

The training loss: the network predicts the noise, ε̂ = ε_θ(x_t, t), and

    L = mean over all N·C·H·W elements of (ε̂ − ε)²

    ∂L/∂ε̂ = 2 (ε̂ − ε) / (N·C·H·W) · g      (g: the scalar upstream gradient)

Shapes
------
    QSample:      x0, noise (N, C, H, W); alpha_bars (T,) a constant table; t (N,) integers
                  in 0..T−1  ->  x_t (N, C, H, W);
                  backward returns (∂L/∂x0, ∂L/∂noise, None, None)
    EpsilonLoss:  eps_pred, eps (N, C, H, W)  ->  L, a scalar (shape ());
                  backward returns (∂L/∂eps_pred, None): ε is the target

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = x0.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
  Gather with alpha_bars.data[t.data]; xp.sqrt; a.reshape(-1, 1, 1, 1); a.size.
* backward(self, grad) receives the upstream gradient as a Tensor and returns one Tensor
  (or None) per input. Wrap arrays with Tensor(array).

Check your work:
    python -m minigen.exercises check ddpm THIS_FILE
"""

from minigen import Function, Tensor


class QSample(Function):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with ᾱ_t gathered per sample."""

    def forward(self, x0: Tensor, noise: Tensor, alpha_bars: Tensor, t: Tensor):
        raise NotImplementedError("not implemented yet: QSample.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: QSample.backward")


class EpsilonLoss(Function):
    """L = mean((ε̂ − ε)²);  ∂L/∂ε̂ = 2 (ε̂ − ε) g / (number of elements)."""

    def forward(self, eps_pred: Tensor, eps: Tensor):
        raise NotImplementedError("not implemented yet: EpsilonLoss.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: EpsilonLoss.backward")
'''


def _schedule(alpha_bars: np.ndarray) -> NoiseSchedule:
    """The engine's schedule with these ᾱ_t (β_t = 1 − ᾱ_t / ᾱ_{t−1})."""
    previous = np.concatenate([[1.0], alpha_bars[:-1]])
    return NoiseSchedule(1.0 - alpha_bars / previous, name="exercise")


def reference_q_sample(x0: Tensor, noise: Tensor, alpha_bars: Tensor, t: Tensor) -> Tensor:
    return q_sample(_schedule(alpha_bars.numpy().astype(np.float64)), x0, t, noise)


def reference_epsilon_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    return mse_loss(eps_pred, eps)


OPS = (
    Op(
        "QSample",
        inputs=("x0", "noise", "alpha_bars", "t"),
        differentiable=("x0", "noise"),
        reference=reference_q_sample,
    ),
    Op("EpsilonLoss", inputs=("eps_pred", "noise"), differentiable=("eps_pred",), reference=reference_epsilon_loss),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Images (N ≤ 3, C ≤ 2, H, W ≤ 3), a linear schedule with T = 5..40 steps, timesteps t."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    steps = draw(st.integers(5, 40))
    t = np.array(draw(st.lists(st.integers(0, steps - 1), min_size=shape[0], max_size=shape[0])), dtype=np.int64)
    arrays_ = {name: draw(arrays(shape, low=-2.0, high=2.0)) for name in ("x0", "noise", "eps_pred")}
    return Case({**arrays_, "alpha_bars": linear_schedule(steps).alpha_bars.copy(), "t": t})


_rng = np.random.default_rng(11)
EXAMPLES = [
    Case(
        {
            "x0": _rng.standard_normal((3, 2, 3, 2)),
            "noise": _rng.standard_normal((3, 2, 3, 2)),
            "eps_pred": _rng.standard_normal((3, 2, 3, 2)),
            "alpha_bars": linear_schedule(20).alpha_bars.copy(),
            "t": np.array([0, 9, 17], dtype=np.int64),
        }
    )
]


def _coefficients(case: Case) -> tuple[np.ndarray, np.ndarray]:
    ab = case.arrays["alpha_bars"][case.arrays["t"]].reshape(-1, 1, 1, 1)
    return np.sqrt(ab), np.sqrt(1.0 - ab)


# ------------------------------------------------------------------------- properties
def variance_is_preserved(student: Student, case: Case) -> None:
    """The signal and noise coefficients satisfy (√ᾱ_t)² + (√(1 − ᾱ_t))² = 1."""
    x0 = case.arrays["x0"]
    signal = student.forward("QSample", case.with_arrays(x0=np.ones_like(x0), noise=np.zeros_like(x0)))
    noise = student.forward("QSample", case.with_arrays(x0=np.zeros_like(x0), noise=np.ones_like(x0)))
    if not np.allclose(signal**2 + noise**2, 1.0, atol=1e-9):
        ab = case.arrays["alpha_bars"][case.arrays["t"]].reshape(-1, 1, 1, 1)
        hints = []
        if np.allclose(signal, ab) or np.allclose(noise, 1.0 - ab):
            hints.append("use the square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (ᾱ_t is a variance, not a scale)")
        raise CheckFailed("signal² + noise² ≠ 1: the forward process must preserve the variance", hints)


def one_coefficient_per_sample(student: Student, case: Case) -> None:
    """With x_0 = 1 and ε = 0, x_t is constant within each sample: ᾱ_{t_n} broadcasts over C, H, W only."""
    x0 = case.arrays["x0"]
    signal = student.forward("QSample", case.with_arrays(x0=np.ones_like(x0), noise=np.zeros_like(x0)))
    if signal.shape != x0.shape:
        return  # the forward check reports the shape
    rows = signal.reshape(x0.shape[0], -1)
    if not np.allclose(rows, rows[:, :1], atol=1e-12):
        raise CheckFailed(
            "with x_0 = 1 and ε = 0, x_t varies within a sample: the coefficients are broadcast along the wrong axis",
            ["gather ᾱ at t (one value per sample) and reshape it to (N, 1, 1, 1) so it broadcasts per sample"],
        )


PROPERTIES = (variance_is_preserved, one_coefficient_per_sample)


# ------------------------------------------------------------------ typical mistakes
def _timestep_mistakes(case: Case) -> list[tuple[np.ndarray, str]]:
    """ᾱ per sample (N, 1, 1, 1) as typical mistakes read it, with the hint naming each mistake."""
    alpha_bars, t = case.arrays["alpha_bars"], case.arrays["t"]
    read = [
        (alpha_bars[t - 1], "ᾱ is read at t − 1: the timestep is off by one (alpha_bars[t] is ᾱ_t, t counts from 0)")
    ]
    if np.all(t + 1 < len(alpha_bars)):
        read.append((alpha_bars[t + 1], "ᾱ is read at t + 1: the timestep is off by one (alpha_bars[t] is ᾱ_t)"))
    read.append(
        (
            np.full(t.shape, alpha_bars[t[0]]),
            "the first sample's t is used for the whole batch: each sample n has its own timestep t_n, so "
            "gather ᾱ per sample, alpha_bars[t] with t of shape (N,), and reshape it to (N, 1, 1, 1)",
        )
    )
    right = alpha_bars[t]
    return [(ab.reshape(-1, 1, 1, 1), hint) for ab, hint in read if not np.allclose(ab, right)]


def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    if op == "QSample":
        x0, noise = case.arrays["x0"], case.arrays["noise"]
        a, b = _coefficients(case)
        if close(mine, b * x0 + a * noise):
            return ["the coefficients are swapped: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (x_0 gets √ᾱ_t)"]
        if close(mine, a**2 * x0 + b**2 * noise):
            return ["use the square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε"]
        for alpha_bar, hint in _timestep_mistakes(case):
            if close(mine, np.sqrt(alpha_bar) * x0 + np.sqrt(1.0 - alpha_bar) * noise):
                return [hint]
        return []
    size = case.arrays["eps_pred"].size
    if size > 1 and close(mine, want * size):
        return [f"the loss is the MEAN of the squared errors: divide the sum by the number of elements ({size})"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    if op == "QSample":
        a, b = _coefficients(case)
        if close(mine["x0"], b * g) or close(mine["noise"], a * g):
            return ["∂L/∂x_0 = √ᾱ_t g and ∂L/∂ε = √(1 − ᾱ_t) g: yours are swapped"]
        if close(mine["x0"], a**2 * g) or close(mine["noise"], b**2 * g):
            return [
                "∂x_t/∂x_0 = √ᾱ_t, not ᾱ_t (and ∂x_t/∂ε = √(1 − ᾱ_t)): multiply g by the coefficients of the "
                "forward themselves, ∂L/∂x_0 = √ᾱ_t g and ∂L/∂ε = √(1 − ᾱ_t) g"
            ]
        for alpha_bar, hint in _timestep_mistakes(case):
            if close(mine["x0"], np.sqrt(alpha_bar) * g) or close(mine["noise"], np.sqrt(1.0 - alpha_bar) * g):
                return [hint]
        return []
    size = case.arrays["eps_pred"].size
    c = constant_ratio(mine["eps_pred"], want["eps_pred"]) if mine["eps_pred"] is not None else None
    if c is None:
        return []
    if size > 1 and abs(c - size) < 1e-6:
        return [f"your gradient is N·C·H·W = {size} times too large: the loss is a MEAN, divide by the element count"]
    if abs(c - 0.5) < 1e-9:
        return ["∂(ε̂ − ε)²/∂ε̂ = 2(ε̂ − ε): the factor 2 is missing"]
    if abs(c + 1) < 1e-9:
        return ["∂L/∂ε̂ = +2(ε̂ − ε)/n: the sign is wrong (ε̂ − ε, not ε − ε̂)"]
    return []
