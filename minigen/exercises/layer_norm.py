"""Exercise 6: layer normalisation, forward and backward (through the mean and the variance)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.normalization import layer_norm
from minigen.tensor import Tensor
from minigen.testing import arrays, distinct_arrays

NAME = "layer_norm"
TITLE = "layer_norm: forward and backward"
TOPIC = "normalisation layers in transformers"

EPS = 1e-5

TEMPLATE = '''"""Exercise: layer normalisation over the last axis, forward and backward.

The maths
---------
For each row x ∈ ℝᴰ (the last axis; all leading axes are independent rows):

    μ = (1/D) Σ_i x_i
    σ² = (1/D) Σ_i (x_i − μ)²          (the biased variance: 1/D, not 1/(D − 1))
    x̂ = (x − μ) / √(σ² + ε)
    y = γ ⊙ x̂ + β                      γ (weight), β (bias): one value per feature, shape (D,)

Backward, with G = ∂L/∂y and ĝ = γ ⊙ G (the gradient reaching x̂):

    ∂L/∂β = Σ_rows G
    ∂L/∂γ = Σ_rows G ⊙ x̂              (γ and β are shared by all rows: sum over them)
    ∂L/∂x = (1/√(σ² + ε)) · ( ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂) )     (means over the row)

The last formula is the chain rule through x̂, μ AND σ: μ and σ depend on every x_i of
the row. Dropping them (∂L/∂x = ĝ/σ) is the classic mistake. Derive it once on paper:
∂μ/∂x_i = 1/D and ∂σ²/∂x_i = 2(x_i − μ)/D.

Shapes
------
    x: (..., D)    weight, bias: (D,)    y: (..., D)
    backward returns (∂L/∂x, ∂L/∂weight, ∂L/∂bias) with the shapes of x, weight and bias

How a minigen Function works
----------------------------
* forward(self, x, weight, bias, eps) receives Tensors (eps is a float); compute on
  .data with xp = x.xp (never numpy directly), keep what backward needs in self.saved
  and return the ARRAY. Useful: a.mean(axis=-1, keepdims=True), xp.sqrt.
* backward(self, grad) receives G as a Tensor and returns three Tensors.

Check your work:
    python -m minigen.exercises check layer_norm THIS_FILE
"""

from minigen import Function, Tensor


class LayerNorm(Function):
    """y = γ ⊙ (x − μ)/√(σ² + ε) + β over the last axis."""

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5):
        raise NotImplementedError("not implemented yet: LayerNorm.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: LayerNorm.backward")
'''


def reference_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return layer_norm(x, x.shape[-1], weight, bias, eps)


OPS = (
    Op(
        "LayerNorm",
        inputs=("x", "weight", "bias"),
        differentiable=("x", "weight", "bias"),
        reference=reference_layer_norm,
        params=("eps",),
    ),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """x (..., D) with 2 ≤ D ≤ 5 and distinct values (so no row has zero variance)."""
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    d = draw(st.integers(2, 5))
    x = draw(distinct_arrays(tuple(lead) + (d,), gap=0.05))
    weight = draw(arrays((d,), low=0.5, high=2.0))
    bias = draw(arrays((d,), low=-1.0, high=1.0))
    return Case({"x": x, "weight": weight, "bias": bias}, {"eps": EPS})


_rng = np.random.default_rng(7)
EXAMPLES = [
    Case(
        {"x": _rng.standard_normal((3, 5)), "weight": _rng.uniform(0.5, 2.0, 5), "bias": _rng.standard_normal(5)},
        {"eps": EPS},
    )
]


def _xhat(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS), np.sqrt(var + EPS)


# ------------------------------------------------------------------------- properties
def rows_are_standardised(student: Student, case: Case) -> None:
    """With γ = 1 and β = 0 each output row has mean 0 and variance σ²/(σ² + ε) ≈ 1."""
    x = case.arrays["x"]
    plain = case.with_arrays(weight=np.ones(x.shape[-1]), bias=np.zeros(x.shape[-1]))
    y = student.forward("LayerNorm", plain)
    var = x.var(axis=-1)
    if not np.allclose(y.mean(axis=-1), 0.0, atol=1e-9):
        raise CheckFailed("the output rows do not have mean 0 (with γ = 1, β = 0)", ["subtract the row mean μ"])
    if not np.allclose(y.var(axis=-1), var / (var + EPS), rtol=1e-6):
        raise CheckFailed(
            "the output rows do not have variance ≈ 1 (with γ = 1, β = 0)",
            ["divide by √(σ² + ε), with the biased variance σ² = mean((x − μ)²)"],
        )


def _backward_x(g: np.ndarray, x: np.ndarray, weight: np.ndarray | None, reduce: str = "mean") -> np.ndarray:
    """∂L/∂x = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / σ with ĝ = γ ⊙ G (or variations, to recognise mistakes)."""
    xhat, sigma = _xhat(x)
    ghat = g if weight is None else g * weight
    average = getattr(np, reduce)
    return (ghat - average(ghat, axis=-1, keepdims=True) - xhat * average(ghat * xhat, axis=-1, keepdims=True)) / sigma


GAMMA_HINT = (
    "you used G where the formula has ĝ = γ ⊙ G: the gradient reaching x̂ goes through the scale γ, so "
    "∂L/∂x = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / σ with ĝ = γ ⊙ G"
)


def gradient_ignores_shift_and_scale_of_a_row(student: Student, case: Case) -> None:
    """Shifting a row leaves y unchanged, so Σ_i ∂L/∂x_i = 0; scaling it changes y only through ε."""
    g = student.upstream("LayerNorm", case)
    dx = student.vjp("LayerNorm", case, g)["x"]
    x, weight = case.arrays["x"], case.arrays["weight"]
    if dx is None or dx.shape != x.shape:
        return
    xhat, sigma = _xhat(x)
    size = np.abs(dx).max() + 1.0
    hints = [
        GAMMA_HINT
        if close(dx, _backward_x(g, x, None))
        else "the backward must go through μ and σ too: ∂L/∂x = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / σ; "
        "the two means remove exactly these directions"
    ]
    along_shift = dx.sum(axis=-1)
    if not np.allclose(along_shift, 0.0, atol=1e-9 * size):
        raise CheckFailed(
            "∂L/∂x changes L when a row is shifted (x_i → x_i + δ), which leaves y unchanged: "
            f"Σ_i ∂L/∂x_i = {float(np.abs(along_shift).max()):.3g}, should be 0",
            hints,
        )
    # d/dδ of L at x + δ(x − μ) is (ĝ·x̂) ε/(σ² + ε): exactly 0 without ε.
    expected_scale = (g * weight * xhat).sum(axis=-1) * EPS / sigma[..., 0] ** 2
    along_scale = (dx * (x - x.mean(axis=-1, keepdims=True))).sum(axis=-1)
    if not np.allclose(along_scale, expected_scale, atol=1e-9 * size):
        worst = int(np.argmax(np.abs(along_scale - expected_scale).reshape(-1)))
        raise CheckFailed(
            "∂L/∂x changes L when a row is scaled about its mean (x_i → μ + (1 + δ)(x_i − μ)), which changes y "
            f"only through ε: Σ_i ∂L/∂x_i (x_i − μ) = {float(along_scale.reshape(-1)[worst]):.6g}, "
            f"should be (ĝ·x̂) ε/(σ² + ε) = {float(expected_scale.reshape(-1)[worst]):.6g}",
            hints,
        )


PROPERTIES = (rows_are_standardised, gradient_ignores_shift_and_scale_of_a_row)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    x, weight, bias = case.arrays["x"], case.arrays["weight"], case.arrays["bias"]
    d = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    unbiased = ((x - mu) ** 2).sum(axis=-1, keepdims=True) / (d - 1)
    if close(mine, weight * (x - mu) / np.sqrt(unbiased + EPS) + bias):
        return ["you used the unbiased variance (divide by D − 1); layer norm uses the biased one, mean((x − μ)²)"]
    if close(mine, weight * (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True)) + bias):
        return ["ε is missing: divide by √(σ² + ε), not by σ"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    x, weight = case.arrays["x"], case.arrays["weight"]
    xhat, sigma = _xhat(x)
    if close(mine["x"], g * weight / sigma):
        return [
            "you treated μ and σ as constants (∂L/∂x = γ ⊙ G / σ); they depend on every x_i of the row: "
            "∂L/∂x = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / σ with ĝ = γ ⊙ G"
        ]
    if close(mine["x"], _backward_x(g, x, weight, reduce="sum")):
        return ["you used sums where the formula has means over the row: divide them by D"]
    if close(mine["x"], _backward_x(g, x, None)) and not close(mine["x"], want["x"]):
        return [GAMMA_HINT]
    return []
