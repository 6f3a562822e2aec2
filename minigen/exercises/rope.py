"""Exercise 8: rotary position embedding (RoPE), forward and backward, as in the lecture."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.rope import rope
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "rope"
TITLE = "RoPE: rotate adjacent pairs, forward and backward"
TOPIC = "transformers: rotary position embedding"

TEMPLATE = '''"""Exercise: rotary position embedding (RoPE), forward and backward.

The maths (the lecture's convention)
------------------------------------
A vector x ∈ ℝᵈ (d even) at position m is rotated by the block-diagonal matrix

    R_{Θ,m} = blockdiag( [[cos mθ_i, −sin mθ_i],
                          [sin mθ_i,  cos mθ_i]] ),     i = 1 .. d/2,

    θ_i = 10000^(−2(i−1)/d)        (so θ_1 = 1, and the angles shrink with i).

Block i acts on the ADJACENT pair (x_{2i−1}, x_{2i}) (1-based), i.e. x[0::2] and x[1::2]
in Python. Writing a = x_{2i−1}, b = x_{2i}, c = cos mθ_i, s = sin mθ_i:

    y_{2i−1} = a·c − b·s
    y_{2i}   = a·s + b·c

(Careful: many libraries pair x_i with x_{i+d/2} instead, "rotate-half"; that is a
different convention and not the one asked for here.)

Backward: y = R x is linear, so ∂L/∂x = Rᵀ G. The transpose of a rotation by mθ is the
rotation by −mθ: the same formulas with s replaced by −s:

    ∂L/∂a = g₁·c + g₂·s,     ∂L/∂b = −g₁·s + g₂·c

Rotations keep lengths, ‖R x‖ = ‖x‖, and ⟨R_m q, R_n k⟩ depends only on n − m: the
attention score sees relative positions.

Shapes
------
    x: (..., T, d), d even     positions: a tuple of T ints, the position m of each row t
    y, ∂L/∂x: the same shape as x

How a minigen Function works
----------------------------
* forward(self, x, positions) receives x as a Tensor and positions as a tuple; compute
  on x.data with xp = x.xp (never numpy directly): xp.asarray(positions, dtype=x.dtype),
  xp.arange(d // 2), xp.cos, xp.sin, slices x[..., 0::2] and x[..., 1::2],
  xp.empty_like(x.data). Keep what backward needs in self.saved; return the ARRAY.
* backward(self, grad) receives G as a Tensor and returns ∂L/∂x as a Tensor.

Check your work:
    python -m minigen.exercises check rope THIS_FILE
"""

from minigen import Function, Tensor


class Rope(Function):
    """y = R_{Θ,m} x for each row (position m), adjacent pairs;  ∂L/∂x = R_{Θ,m}ᵀ G."""

    def forward(self, x: Tensor, positions: tuple = ()):
        raise NotImplementedError("not implemented yet: Rope.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: Rope.backward")
'''


def reference_rope(x: Tensor, positions: tuple) -> Tensor:
    return rope(x, positions=list(positions))


OPS = (Op("Rope", inputs=("x",), differentiable=("x",), reference=reference_rope, params=("positions",)),)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """x (..., T, d) with d ∈ {2, 4, 6, 8}, positions 0..60 (in any order, repeats allowed)."""
    batch = tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2)))
    t, d = draw(st.integers(1, 4)), 2 * draw(st.integers(1, 4))
    x = draw(arrays(batch + (t, d), low=-2.0, high=2.0))
    positions = tuple(draw(st.lists(st.integers(0, 60), min_size=t, max_size=t)))
    return Case({"x": x}, {"positions": positions})


EXAMPLES = [Case({"x": np.random.default_rng(9).standard_normal((2, 3, 6))}, {"positions": (0, 1, 7)})]


def _rotate(x: np.ndarray, positions: tuple, theta: np.ndarray, sign: float = 1.0, half: bool = False) -> np.ndarray:
    """NumPy RoPE with variations, for recognising mistakes (sign −1 rotates backwards)."""
    d = x.shape[-1]
    angle = np.asarray(positions, dtype=float)[:, None] * theta  # (T, d/2)
    c, s = np.cos(angle), sign * np.sin(angle)
    first, second = (slice(0, d // 2), slice(d // 2, d)) if half else (slice(0, d, 2), slice(1, d, 2))
    a, b = x[..., first], x[..., second]
    y = np.empty_like(x)
    y[..., first] = a * c - b * s
    y[..., second] = a * s + b * c
    return y


def _theta(d: int) -> np.ndarray:
    return 10000.0 ** (-2.0 * np.arange(d // 2) / d)  # θ_i for i = 1 .. d/2


# ------------------------------------------------------------------------- properties
def norms_are_preserved(student: Student, case: Case) -> None:
    """Each rotated vector has the length of the original: ‖R_{Θ,m} x‖ = ‖x‖."""
    x = case.arrays["x"]
    y = student.forward("Rope", case)
    if y.shape == x.shape and not np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-9):
        raise CheckFailed(
            "the rotation changes the length of some vectors",
            ["each pair must be turned by a rotation [[c, −s], [s, c]] with c = cos mθ_i, s = sin mθ_i"],
        )


def scores_depend_only_on_relative_position(student: Student, case: Case) -> None:
    """⟨R_m q, R_n k⟩ is unchanged when both positions move by the same offset."""
    x = case.arrays["x"].reshape(-1, case.arrays["x"].shape[-1])
    q, k = x[0], x[-1]
    pair = np.stack([q, k])
    m, n = case.params["positions"][0], case.params["positions"][-1]
    scores = []
    for shift in (0, 5, 23):
        y = student.forward("Rope", Case({"x": pair}, {"positions": (m + shift, n + shift)}))
        scores.append(float(y[0] @ y[1]))
    if not np.allclose(scores, scores[0], rtol=1e-9, atol=1e-12):
        raise CheckFailed(
            f"⟨R_m q, R_n k⟩ changes when m = {m}, n = {n} are both shifted: {scores}",
            ["both vectors must be rotated with the same θ_i; only the angle m·θ_i may depend on the position"],
        )


def backward_undoes_the_rotation(student: Student, case: Case) -> None:
    """Backward applies Rᵀ = R⁻¹, so feeding it y = R x as the upstream gradient gives back x."""
    x = case.arrays["x"]
    y = student.forward("Rope", case)
    back = student.vjp("Rope", case, y)["x"]
    if back is not None and back.shape == x.shape and not np.allclose(back, x, atol=1e-9):
        hints = []
        if close(back, _rotate(y, case.params["positions"], _theta(x.shape[-1]))):
            hints.append("your backward rotates by +mθ again; it must rotate by −mθ (flip the sign of sin)")
        raise CheckFailed("backward(R x) ≠ x: the backward is not the inverse (transposed) rotation", hints)


PROPERTIES = (norms_are_preserved, scores_depend_only_on_relative_position, backward_undoes_the_rotation)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    x, positions = case.arrays["x"], case.params["positions"]
    d = x.shape[-1]
    theta = _theta(d)
    i = np.arange(1, d // 2 + 1)
    variants = (
        (
            _rotate(x, positions, theta, half=True),
            "you paired x_i with x_{i+d/2} (rotate-half); the lecture "
            "rotates ADJACENT pairs (x_1, x_2), (x_3, x_4), …: use x[..., 0::2] and x[..., 1::2]",
        ),
        (
            _rotate(x, positions, theta, sign=-1.0),
            "you rotate by −mθ_i: y_{2i−1} = a·cos − b·sin, y_{2i} = a·sin + b·cos",
        ),
        (
            _rotate(x, positions, 10000.0 ** (-2.0 * i / d)),
            "θ_i is off by one: θ_i = 10000^(−2(i−1)/d), so θ_1 = 1 (with 0-based k = i − 1: 10000^(−2k/d))",
        ),
        (
            _rotate(x, positions, 10000.0 ** (-np.arange(d // 2) / d)),
            "θ_i = 10000^(−2(i−1)/d): the factor 2 in the exponent is missing",
        ),
        (
            _rotate(x, tuple(range(x.shape[-2])), theta),
            "the positions are ignored: token t must be turned by m·θ_i with m = positions[t], the position it "
            f"was given (here {list(positions)}), not by its index 0..T−1 in the array",
        ),
        (x, "the output equals the input: no rotation was applied (y = R_{Θ,m} x with the angles m·θ_i)"),
    )
    for candidate, hint in variants:
        if close(mine, candidate) and not close(candidate, want):
            return [hint]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    x, positions = case.arrays["x"], case.params["positions"]
    if close(mine["x"], _rotate(g, positions, _theta(x.shape[-1]))) and not close(mine["x"], want["x"]):
        return ["your backward applies R again; it must apply Rᵀ = R_{−m}: the same formulas with sin → −sin"]
    return []
