"""Exercise 7: causal scaled dot-product attention, forward and backward."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.attention import scaled_dot_product_attention
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "attention"
TITLE = "causal scaled dot-product attention: forward and backward"
TOPIC = "transformers: attention and the causal mask"

TEMPLATE = '''"""Exercise: causal scaled dot-product attention, forward and backward.

The maths
---------
    S = Q Kᵀ / √d                        scores, (T, T): how well query i matches key j
    M_ij = 0 if j ≤ i, −∞ if j > i       the causal mask: position i sees only positions ≤ i
    A = softmax(S + M)                   row by row; A_ij = 0 exactly where j > i
    O = A V                              each output row is a weighted average of values

(d is the width of queries and keys. Dividing by √d keeps the scores' variance near 1,
so the softmax does not saturate.)

Backward, with G = ∂L/∂O, following the forward steps in reverse:

    ∂L/∂V = Aᵀ G
    ∂L/∂A = G Vᵀ
    ∂L/∂S = A ⊙ (∂L/∂A − rowsum(∂L/∂A ⊙ A))       (the softmax backward, row by row)
    ∂L/∂Q = ∂L/∂S K / √d
    ∂L/∂K = (∂L/∂S)ᵀ Q / √d

The mask needs no backward of its own: A_ij = 0 where j > i makes ∂L/∂S_ij = 0 there,
so no gradient flows from query i to a later key or value. Use the MASKED A from the
forward in backward; recomputing an unmasked softmax lets gradient leak from the future.

Shapes
------
    q, k: (..., T, d)    v: (..., T, d_v)    leading (batch) axes are the same for all three
    output: (..., T, d_v);  backward returns (∂L/∂q, ∂L/∂k, ∂L/∂v) with their shapes

How a minigen Function works
----------------------------
* forward(self, q, k, v) receives Tensors; compute on .data with xp = q.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
  Useful: a @ b (batched matmul), a.swapaxes(-1, -2), xp.tril(xp.ones((T, T), dtype=bool)),
  xp.where(mask, S, -xp.inf), a.max(axis=-1, keepdims=True).
* backward(self, grad) receives G as a Tensor and returns three Tensors.

Check your work:
    python -m minigen.exercises check attention THIS_FILE
"""

import math

from minigen import Function, Tensor


class CausalAttention(Function):
    """O = softmax(Q Kᵀ/√d + M) V with the causal mask M."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor):
        raise NotImplementedError("not implemented yet: CausalAttention.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: CausalAttention.backward")
'''


def reference_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return scaled_dot_product_attention(q, k, v, is_causal=True)


OPS = (Op("CausalAttention", inputs=("q", "k", "v"), differentiable=("q", "k", "v"), reference=reference_attention),)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Batch axes (0 to 2 of them), T = 1..4 positions, d, d_v = 1..4."""
    batch = tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2)))
    t, d, dv = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    q = draw(arrays(batch + (t, d), low=-2.0, high=2.0))
    k = draw(arrays(batch + (t, d), low=-2.0, high=2.0))
    v = draw(arrays(batch + (t, dv), low=-2.0, high=2.0))
    return Case({"q": q, "k": k, "v": v})


_rng = np.random.default_rng(8)
EXAMPLES = [
    Case(
        {
            "q": _rng.standard_normal((2, 4, 3)),
            "k": _rng.standard_normal((2, 4, 3)),
            "v": _rng.standard_normal((2, 4, 2)),
        }
    )
]


def _steps(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """The lecture's intermediate results in NumPy, for recognising mistakes."""
    t, d = q.shape[-2], q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    mask = np.tril(np.ones((t, t), dtype=bool))
    e = np.exp(np.where(mask, scores, -np.inf) - scores.max(axis=-1, keepdims=True))
    a = e / e.sum(axis=-1, keepdims=True)
    da = g @ np.swapaxes(v, -1, -2)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))
    ds_wrong_axis = a * (da - (da * a).sum(axis=-2, keepdims=True))
    return {"A": a, "dS": ds, "dS summed over the wrong axis": ds_wrong_axis}


# ------------------------------------------------------------------------- properties
def outputs_do_not_depend_on_the_future(student: Student, case: Case) -> None:
    """Changing the keys and values at positions after i leaves output i unchanged."""
    q, k, v = case.arrays["q"], case.arrays["k"], case.arrays["v"]
    t = q.shape[-2]
    out = student.forward("CausalAttention", case)
    rng = np.random.default_rng(0)
    for i in range(t - 1):
        k2, v2 = k.copy(), v.copy()
        k2[..., i + 1 :, :] = rng.standard_normal(k2[..., i + 1 :, :].shape)
        v2[..., i + 1 :, :] = rng.standard_normal(v2[..., i + 1 :, :].shape)
        changed = student.forward("CausalAttention", case.with_arrays(k=k2, v=v2))
        if not np.allclose(changed[..., : i + 1, :], out[..., : i + 1, :], atol=1e-12):
            raise CheckFailed(
                f"output position {i} changed when only keys/values at positions > {i} changed",
                ["apply the causal mask: scores S_ij with j > i must be −∞ before the softmax"],
            )


def no_gradient_leaks_into_the_future(student: Student, case: Case) -> None:
    """The gradient of output i reaches no key or value at a position after i."""
    q = case.arrays["q"]
    t = q.shape[-2]
    out_shape = student.reference("CausalAttention", case).shape
    rng = np.random.default_rng(1)
    for i in range(t - 1):
        g = np.zeros(out_shape)
        g[..., i, :] = rng.standard_normal(g[..., i, :].shape)  # only output i matters
        grads = student.vjp("CausalAttention", case, g)
        for name in ("k", "v"):
            d = grads[name]
            if d is None or d.shape != case.arrays[name].shape:
                continue
            future = np.abs(d[..., i + 1 :, :])
            if future.max(initial=0.0) > 1e-12:
                j = i + 1 + int(np.unravel_index(int(future.argmax()), future.shape)[-2])
                raise CheckFailed(
                    f"gradient leaks through the causal mask: output {i} sends gradient to {name} at position {j} "
                    f"(|∂L/∂{name}| = {float(future.max()):.3g}), which it cannot see",
                    [
                        "use the masked attention weights A from the forward pass in backward (A_ij = 0 for j > i); "
                        "a softmax recomputed without the mask lets gradient flow into the future"
                    ],
                )


def stable_for_large_scores(student: Student, case: Case) -> None:
    """Scores around ±800 give finite, correct outputs (each row's maximum score is subtracted before e^S)."""
    q = np.array([[[24.0, 24.0], [24.0, -24.0], [-24.0, 24.0]]])
    k = np.array([[[24.0, 24.0], [-24.0, 24.0], [24.0, 23.0]]])
    v = np.arange(6.0).reshape(1, 3, 2)
    large = case.with_arrays(q=q, k=k, v=v)  # S_00 = 1152/√2 ≈ 815, S_11 ≈ −815
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = student.forward("CausalAttention", large)
    want = student.reference("CausalAttention", large)
    if out.shape == want.shape and not (np.all(np.isfinite(out)) and np.allclose(out, want, atol=1e-9)):
        raise CheckFailed(
            f"CausalAttention of scores around ±800 gives {out.tolist()}, expected {want.tolist()}",
            [
                "e^800 overflows (and e^−800 underflows to 0, so a row can sum to 0): subtract each row's "
                "maximum score before the exponential; the softmax does not change"
            ],
            case=f"q {q.tolist()}, k {k.tolist()}, v {v.tolist()}",
        )


PROPERTIES = (outputs_do_not_depend_on_the_future, no_gradient_leaks_into_the_future, stable_for_large_scores)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    q, k, v = case.arrays["q"], case.arrays["k"], case.arrays["v"]
    d = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2)
    for scale, hint in ((1.0, "the scores are not divided by √d"), (1.0 / d, "divide the scores by √d, not by d")):
        s = scores * scale
        mask = np.tril(np.ones(s.shape[-2:], dtype=bool))
        e = np.exp(np.where(mask, s, -np.inf) - s.max(axis=-1, keepdims=True))
        if d > 1 and close(mine, (e / e.sum(axis=-1, keepdims=True)) @ v):
            return [hint]
    e = np.exp(scores / math.sqrt(d) - (scores / math.sqrt(d)).max(axis=-1, keepdims=True))
    if close(mine, (e / e.sum(axis=-1, keepdims=True)) @ v):
        return ["the causal mask is missing: set S_ij = −∞ for j > i before the softmax"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    q, k, v = case.arrays["q"], case.arrays["k"], case.arrays["v"]
    d = q.shape[-1]
    hints = []
    if d > 1 and (close(mine["q"], want["q"] * math.sqrt(d)) or close(mine["k"], want["k"] * math.sqrt(d))):
        hints.append(f"∂L/∂Q and ∂L/∂K need the factor 1/√d (= 1/√{d}) of the scores too; yours miss it")
    if d > 1 and (close(mine["q"], want["q"] / math.sqrt(d)) or close(mine["k"], want["k"] / math.sqrt(d))):
        hints.append("∂L/∂Q or ∂L/∂K has the factor 1/√d twice")
    steps = _steps(q, k, v, g)
    if close(mine["k"], steps["dS"] @ q / math.sqrt(d)) and not close(mine["k"], want["k"]):
        hints.append("∂L/∂K = (∂L/∂S)ᵀ Q / √d: the transpose of ∂L/∂S is missing")
    if close(mine["v"], steps["A"] @ g) and not close(mine["v"], want["v"]):
        hints.append("∂L/∂V = Aᵀ G: the transpose of A is missing")
    wrong_axis = steps["dS summed over the wrong axis"]
    if close(mine["q"], wrong_axis @ k / math.sqrt(d)) and not close(mine["q"], want["q"]):
        hints.append(
            "the softmax backward sums over the wrong axis: ∂L/∂S_ij = A_ij (∂L/∂A_ij − Σ_k ∂L/∂A_ik A_ik) sums "
            "along each ROW of A (over the keys k, axis −1), not down a column"
        )
    return hints
