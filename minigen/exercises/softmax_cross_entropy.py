"""Exercise 3: softmax and the cross-entropy loss, forward and backward."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close, constant_ratio
from minigen.ops.activation import softmax
from minigen.ops.loss import cross_entropy
from minigen.tensor import Tensor
from minigen.testing import arrays, shapes

NAME = "softmax_cross_entropy"
TITLE = "softmax and cross-entropy: forward and backward"
TOPIC = "classification losses"

TEMPLATE = '''"""Exercise: softmax and the cross-entropy loss, forward and backward.

The maths
---------
Softmax along the last axis (one row of C logits z at a time):

    s_i = e^(z_i) / Σ_j e^(z_j)

Its Jacobian is ∂s_i/∂z_j = s_i (δ_ij − s_j), i.e. diag(s) − s sᵀ, so with g = ∂L/∂s

    ∂L/∂z = s ⊙ g − s (sᵀ g)      (per row: s ⊙ (g − Σ_j g_j s_j)).

It is NOT just g ⊙ s(1 − s): that is only the diagonal of the Jacobian.

Stability: e^(1000) overflows. Softmax does not change when a constant is added to a
row, so subtract the row's maximum first: s = e^(z − max z) / Σ e^(z − max z).

Cross-entropy of logits Z (N, C) with integer class targets t (N,), averaged over the
batch:

    L = −(1/N) Σ_n log s(Z_n)_{t_n} = (1/N) Σ_n [ logsumexp(Z_n) − Z_{n, t_n} ]

    ∂L/∂Z = (1/N) (softmax(Z) − onehot(t))       (times the upstream g, a scalar)

Shapes
------
    Softmax:       x (..., C)  ->  s (..., C)
    CrossEntropy:  logits (N, C), target (N,) integers in 0..C−1  ->  L, a scalar (shape ())
                   backward returns (∂L/∂logits, None): the target gets no gradient

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = x.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
  Useful: xp.exp, a.max(axis=-1, keepdims=True), a.sum(axis=-1, keepdims=True),
  xp.arange(N), indexing a[xp.arange(N), t].
* backward(self, grad) receives ∂L/∂output as a Tensor and returns one Tensor per input
  (None for the integer target). Wrap arrays with Tensor(array).

Check your work:
    python -m minigen.exercises check softmax_cross_entropy THIS_FILE
"""

from minigen import Function, Tensor


class Softmax(Function):
    """s = softmax(x) along the last axis;  ∂L/∂x = s ⊙ (g − Σ_j g_j s_j)."""

    def forward(self, x: Tensor):
        raise NotImplementedError("not implemented yet: Softmax.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: Softmax.backward")


class CrossEntropy(Function):
    """L = mean_n [logsumexp(Z_n) − Z_{n,t_n}];  ∂L/∂Z = g (softmax(Z) − onehot(t)) / N."""

    def forward(self, logits: Tensor, target: Tensor):
        raise NotImplementedError("not implemented yet: CrossEntropy.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: CrossEntropy.backward")
'''


def reference_softmax(x: Tensor) -> Tensor:
    return softmax(x, dim=-1)


def reference_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    return cross_entropy(logits, target)


OPS = (
    Op("Softmax", inputs=("x",), differentiable=("x",), reference=reference_softmax),
    Op("CrossEntropy", inputs=("logits", "target"), differentiable=("logits",), reference=reference_cross_entropy),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Softmax input x (..., C) with C ≥ 2; logits (N, C) and targets (N,)."""
    x = draw(arrays(shapes(1, 3, min_side=2, max_side=4), low=-3.0, high=3.0))
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    logits = draw(arrays((n, c), low=-3.0, high=3.0))
    target = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    return Case({"x": x, "logits": logits, "target": target})


_rng = np.random.default_rng(3)
EXAMPLES = [
    Case(
        {
            "x": _rng.standard_normal((3, 5)),
            "logits": _rng.standard_normal((3, 4)),
            "target": np.array([0, 3, 1], dtype=np.int64),
        }
    )
]


def _numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------- properties
def softmax_rows_are_distributions(student: Student, case: Case) -> None:
    """Softmax rows are positive, sum to 1, and do not change when a constant is added to a row."""
    x = case.arrays["x"]
    s = student.forward("Softmax", case)
    if np.any(s <= 0) or not np.allclose(s.sum(axis=-1), 1.0, atol=1e-12):
        raise CheckFailed("softmax rows must be positive and sum to 1", ["divide e^(x_i) by the sum over its row"])
    shifted = student.forward("Softmax", case.with_arrays(x=x + 7.5))
    if not np.allclose(shifted, s, atol=1e-12):
        raise CheckFailed("softmax(x + c) ≠ softmax(x): it should not change when a row is shifted by a constant")


def stable_for_large_logits(student: Student, case: Case) -> None:
    """Logits of size 1000 give finite, correct probabilities (the row maximum is subtracted)."""
    x = np.array([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1000.5]])
    want = _numpy_softmax(x)
    for name, args in (
        ("Softmax", {"x": x}),
        ("CrossEntropy", {"logits": x, "target": np.array([1, 0], dtype=np.int64)}),
    ):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = student.forward(name, case.with_arrays(**args))
        if not np.all(np.isfinite(out)) or (name == "Softmax" and not np.allclose(out, want, atol=1e-9)):
            raise CheckFailed(
                f"{name} of logits like ±1000 gives {out.tolist()}",
                ["e^1000 overflows: subtract each row's maximum before the exponential (softmax does not change)"],
                case=f"logits {x.tolist()}",
            )


def cross_entropy_gradient_rows_sum_to_zero(student: Student, case: Case) -> None:
    """Each row of ∂L/∂logits = (softmax − onehot)/N sums to 0."""
    grads = student.vjp("CrossEntropy", case, np.array(1.0))
    d = grads["logits"]
    if d is not None and d.shape == case.arrays["logits"].shape and not np.allclose(d.sum(axis=-1), 0.0, atol=1e-9):
        raise CheckFailed(
            "the rows of ∂L/∂logits do not sum to 0",
            ["softmax sums to 1 and onehot sums to 1, so each row of softmax − onehot sums to 0"],
        )


PROPERTIES = (softmax_rows_are_distributions, stable_for_large_logits, cross_entropy_gradient_rows_sum_to_zero)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    if not np.all(np.isfinite(mine)):
        return [
            "e^x overflows for large x: subtract each row's maximum before the exponential (softmax does not change)"
        ]
    if op == "CrossEntropy":
        n = case.arrays["logits"].shape[0]
        if n > 1 and close(mine, want * n):
            return [f"your loss is {n} × the expected one: cross-entropy is the MEAN over the batch, divide by N = {n}"]
        if close(mine, -want):
            return ["your loss has the wrong sign: L = −log s_t (it is ≥ 0)"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    if op == "Softmax":
        s = _numpy_softmax(case.arrays["x"])
        if close(mine["x"], g * s * (1.0 - s)):
            return [
                "you computed g ⊙ s(1 − s), only the diagonal of the softmax Jacobian diag(s) − s sᵀ; "
                "every s_j depends on every x_i: ∂L/∂x = s ⊙ (g − Σ_j g_j s_j)"
            ]
        return []
    n = case.arrays["logits"].shape[0]
    c = constant_ratio(mine["logits"], want["logits"]) if mine["logits"] is not None else None
    if c is not None and n > 1 and abs(c - n) < 1e-6:
        return [f"your gradient is N = {n} times too large: the loss is the MEAN over the batch, so divide by N"]
    if c is not None and abs(c + 1) < 1e-6:
        return ["∂L/∂logits = softmax − onehot (over N); yours has the opposite sign"]
    return []
