"""Exercise 14: cross-attention with a key-padding mask, forward and backward (latent diffusion)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.cross_attention import cross_attention
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "cross_attention"
TITLE = "cross-attention (Q from x, K and V from a context) with a key-padding mask: forward and backward"
TOPIC = "latent diffusion: text to image"

TEMPLATE = '''"""Exercise: cross-attention with a key-padding mask, forward and backward.

The maths
---------
In latent diffusion the U-Net's features x (N positions of an image) read a caption's
features c (M tokens). Queries come from x, keys and values from the context c:

    Q = x W_Qᵀ         (N, d)        x: (N, d_x),  W_Q: (d, d_x)
    K = c W_Kᵀ         (M, d)        c: (M, d_c),  W_K: (d, d_c)
    V = c W_Vᵀ         (M, d_v)                    W_V: (d_v, d_c)
    S = Q Kᵀ / √d      (N, M)        how well position i matches token j
    S_ij = −∞ where token j is padding (key_padding_mask[j] is True): a COLUMN of S
    A = softmax(S)     row by row: position i's distribution over the M tokens
    O = A V            (N, d_v)

N and M are unrelated (an 8×8 image has N = 64 positions, a caption M = 16 tokens), so
S and A are N×M, not square. The padding mask hides tokens, i.e. keys: A_ij = 0 for a
padded j, so padding changes nothing and must receive no gradient.

Backward, with G = ∂L/∂O, following the forward steps in reverse:

    ∂L/∂V = Aᵀ G                  ∂L/∂A = G Vᵀ
    ∂L/∂S = A ⊙ (∂L/∂A − rowsum(∂L/∂A ⊙ A))         (the softmax backward, row by row)
    ∂L/∂Q = ∂L/∂S K / √d          ∂L/∂K = (∂L/∂S)ᵀ Q / √d
    ∂L/∂x = ∂L/∂Q W_Q             ∂L/∂W_Q = (∂L/∂Q)ᵀ x
    ∂L/∂c = ∂L/∂K W_K + ∂L/∂V W_V (c feeds both K and V)
    ∂L/∂W_K = (∂L/∂K)ᵀ c          ∂L/∂W_V = (∂L/∂V)ᵀ c

Use the MASKED A of the forward pass: A_ij = 0 at padded tokens makes ∂L/∂V_j and
∂L/∂K_j zero there. With a batch axis in front, the weight gradients are summed over it.

Shapes
------
    x: (B, N, d_x)   context: (B, M, d_c)   w_q: (d, d_x)   w_k: (d, d_c)   w_v: (d_v, d_c)
    key_padding_mask: (B, M) bool, True = padding (ignore); each row has a token that is not
    output: (B, N, d_v); backward returns (∂L/∂x, ∂L/∂context, ∂L/∂w_q, ∂L/∂w_k, ∂L/∂w_v, None)

How a minigen Function works
----------------------------
* forward(self, x, context, w_q, w_k, w_v, key_padding_mask) receives Tensors; compute on
  .data with xp = x.xp (never numpy directly), keep what backward needs in self.saved and
  return the ARRAY. Useful: a @ b (batched matmul), a.swapaxes(-1, -2), w.T, m[:, None, :],
  xp.where(mask, -xp.inf, S), a.max(axis=-1, keepdims=True), a.sum(axis=0).
* backward(self, grad) receives G as a Tensor and returns six values: five Tensors and None
  for the mask (it needs no gradient).

Check your work:
    python -m minigen.exercises check cross_attention THIS_FILE
"""

import math

from minigen import Function, Tensor


class CrossAttention(Function):
    """O = softmax((x W_Qᵀ)(c W_Kᵀ)ᵀ/√d + M_pad) (c W_Vᵀ), the padded tokens' columns −∞."""

    def forward(self, x: Tensor, context: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, key_padding_mask: Tensor):
        raise NotImplementedError("not implemented yet: CrossAttention.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: CrossAttention.backward")
'''


def reference_cross_attention(
    x: Tensor, context: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, key_padding_mask: Tensor
) -> Tensor:
    return cross_attention(x, context, w_q, w_k, w_v, key_padding_mask=key_padding_mask)


INPUTS = ("x", "context", "w_q", "w_k", "w_v", "key_padding_mask")
OPS = (Op("CrossAttention", inputs=INPUTS, differentiable=INPUTS[:5], reference=reference_cross_attention),)


def _padding(draw: st.DrawFn, batch: int, m: int) -> np.ndarray:
    """A key-padding mask (B, M) whose first token is never padding (every caption has a word)."""
    pad = np.array(draw(st.lists(st.booleans(), min_size=batch * m, max_size=batch * m)), bool).reshape(batch, m)
    pad[:, 0] = False
    return pad


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """B = 1..2, N and M = 1..4 drawn independently, widths 1..3."""
    b, n, m = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d_x, d_c, d, d_v = (draw(st.integers(1, 3)) for _ in range(4))
    return Case(
        {
            "x": draw(arrays((b, n, d_x), -2.0, 2.0)),
            "context": draw(arrays((b, m, d_c), -2.0, 2.0)),
            "w_q": draw(arrays((d, d_x), -1.0, 1.0)),
            "w_k": draw(arrays((d, d_c), -1.0, 1.0)),
            "w_v": draw(arrays((d_v, d_c), -1.0, 1.0)),
            "key_padding_mask": _padding(draw, b, m),
        }
    )


_rng = np.random.default_rng(12)


def _example(n: int, m: int, d_x: int, d_c: int, padded: list[list[bool]]) -> Case:
    b, d, d_v = 2, 3, 2
    return Case(
        {
            "x": _rng.standard_normal((b, n, d_x)),
            "context": _rng.standard_normal((b, m, d_c)),
            "w_q": _rng.standard_normal((d, d_x)),
            "w_k": _rng.standard_normal((d, d_c)),
            "w_v": _rng.standard_normal((d_v, d_c)),
            "key_padding_mask": np.array(padded, bool),
        }
    )


# First an example where N = M and d_x = d_c, so that even a wrong choice of sources or
# of the mask's axis runs and can be recognised; then one with N ≠ M.
EXAMPLES = [
    _example(4, 4, 3, 3, [[False, False, False, True], [False, True, True, True]]),
    _example(5, 3, 2, 4, [[False, False, True], [False, False, False]]),
]


# ------------------------------------------------------------------ the maths in NumPy
def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def _forward(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, pad: np.ndarray | None, scale: float, mask_rows: bool = False
) -> np.ndarray:
    """softmax(Q Kᵀ · scale, masked) V, with the mask on the keys (columns) or, wrongly, on the queries (rows)."""
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if pad is not None:
        hidden = pad[:, :, None] if mask_rows else pad[:, None, :]
        scores = np.where(hidden, -np.inf, scores)
    return _softmax_rows(scores) @ v


def _same(mine: np.ndarray, wrong: np.ndarray) -> bool:
    """Equal shapes, the same NaN entries, and close values elsewhere."""
    if mine.shape != wrong.shape:
        return False
    nan_mine, nan_wrong = np.isnan(mine), np.isnan(wrong)
    return bool(np.array_equal(nan_mine, nan_wrong)) and close(
        np.where(nan_mine, 0.0, mine), np.where(nan_wrong, 0.0, wrong)
    )


def _arrays(case: Case) -> tuple[np.ndarray, ...]:
    a = case.arrays
    return a["x"], a["context"], a["w_q"], a["w_k"], a["w_v"], a["key_padding_mask"]


# ------------------------------------------------------------------------- properties
def padded_context_tokens_change_nothing(student: Student, case: Case) -> None:
    """New values in the padded context tokens leave the output unchanged."""
    x, c, *_, pad = _arrays(case)
    if not pad.any():
        return
    out = student.forward("CrossAttention", case)
    changed = c.copy()
    changed[pad] = np.random.default_rng(3).standard_normal(changed[pad].shape) * 3.0
    again = student.forward("CrossAttention", case.with_arrays(context=changed))
    if not np.allclose(again, out, atol=1e-12, equal_nan=True):
        raise CheckFailed(
            "the output changed when only padded context tokens changed",
            [
                "apply the key-padding mask: S_ij = −∞ for every padded token j (a column of S, "
                "key_padding_mask[:, None, :]) before the softmax, so that A_ij = 0 there"
            ],
        )


def no_gradient_reaches_padded_tokens(student: Student, case: Case) -> None:
    """∂L/∂context is exactly 0 at every padded token."""
    *_, pad = _arrays(case)
    if not pad.any():
        return
    grads = student.vjp("CrossAttention", case, student.upstream("CrossAttention", case))
    d = grads["context"]
    if d is None or d.shape != case.arrays["context"].shape:
        return  # the gradient-shape check reports it
    leak = np.abs(d[pad])
    if leak.max(initial=0.0) > 1e-12:
        b, j = (int(i) for i in np.argwhere(pad)[int(np.argmax(leak.max(axis=-1)))])
        raise CheckFailed(
            f"gradient flows into padded tokens: ∂L/∂context[{b}, {j}] is not 0 (|∂L/∂c| up to "
            f"{float(leak.max()):.3g}), though token {j} of sample {b} is padding",
            [
                "use the masked attention weights A of the forward pass in backward (A_ij = 0 at padded j, so "
                "∂L/∂V_j = Σ_i A_ij G_i = 0 and ∂L/∂K_j = 0); a softmax recomputed without the mask sends "
                "gradient into the padding"
            ],
        )


def works_when_m_differs_from_n(student: Student, case: Case) -> None:
    """With N = 3 image positions and M = 5 tokens (d_x ≠ d_c) the output is (B, N, d_v) and correct."""
    rng = np.random.default_rng(5)
    odd = case.with_arrays(
        x=rng.standard_normal((2, 3, 2)),
        context=rng.standard_normal((2, 5, 4)),
        w_q=rng.standard_normal((3, 2)),
        w_k=rng.standard_normal((3, 4)),
        w_v=rng.standard_normal((2, 4)),
        key_padding_mask=np.array([[False, False, False, True, True], [False] * 5]),
    )
    hints = [
        "Q comes from x (N positions), K and V from the context (M tokens): S = Q Kᵀ is N × M, and the "
        "mask (B, M) hides columns: key_padding_mask[:, None, :]"
    ]
    try:
        out = student.forward("CrossAttention", odd)
    except (ValueError, IndexError) as error:
        raise CheckFailed(f"CrossAttention fails when M ≠ N: {error}", hints, case=odd.describe()) from None
    want = student.reference("CrossAttention", odd)
    if out.shape != want.shape or not np.allclose(out, want, rtol=1e-6, atol=1e-8):
        raise CheckFailed(
            f"with N = 3 positions and M = 5 tokens the output (shape {out.shape}) differs from the "
            f"reference (shape {want.shape})",
            hints,
            case=odd.describe(),
        )


PROPERTIES = (padded_context_tokens_change_nothing, no_gradient_reaches_padded_tokens, works_when_m_differs_from_n)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    x, c, w_q, w_k, w_v, pad = _arrays(case)
    d = w_q.shape[0]
    q, k, v = x @ w_q.T, c @ w_k.T, c @ w_v.T
    scale = 1.0 / math.sqrt(d)
    variants: list[tuple[str, np.ndarray]] = []
    if d > 1:
        variants.append(("the scores are not divided by √d: S = Q Kᵀ / √d", _forward(q, k, v, pad, 1.0)))
        variants.append(("divide the scores by √d, not by d", _forward(q, k, v, pad, 1.0 / d)))
    sources = "keys and values come from the CONTEXT (K = c W_Kᵀ, V = c W_Vᵀ), queries from x (Q = x W_Qᵀ)"
    if x.shape == c.shape:  # only then does the wrong source run at all
        kx, vx = x @ w_k.T, x @ w_v.T
        variants.append((f"K is computed from x: {sources}", _forward(q, kx, v, pad, scale)))
        variants.append((f"V is computed from x: {sources}", _forward(q, k, vx, pad, scale)))
        variants.append((f"K and V are computed from x: {sources}", _forward(q, kx, vx, pad, scale)))
        variants.append((f"Q is computed from the context: {sources}", _forward(c @ w_q.T, k, v, pad, scale)))
    wrong_axis = (
        "the mask is applied along the wrong axis: it hides tokens, i.e. KEYS, the columns j of S "
        "(key_padding_mask[:, None, :]), not the queries' rows"
    )
    if pad.any():
        variants.append(
            ("the key-padding mask is not applied: S_ij = −∞ for padded tokens j", _forward(q, k, v, None, scale))
        )
        variants.append(
            (
                "the mask is inverted: True in key_padding_mask marks padding to IGNORE (−∞), False a real token",
                _forward(q, k, v, ~pad, scale),
            )
        )
        if x.shape[1] == c.shape[1]:
            variants.append((wrong_axis, _forward(q, k, v, pad, scale, mask_rows=True)))
            big = np.where(pad[:, :, None], -1e9, q @ np.swapaxes(k, -1, -2) * scale)  # a finite "−∞"
            variants.append((wrong_axis, _softmax_rows(big) @ v))
    return list(dict.fromkeys(hint for hint, wrong in variants if _same(mine, wrong)))


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    x, c, w_q, w_k, w_v, pad = _arrays(case)
    d = w_q.shape[0]
    hints = []
    if d > 1 and (close(mine["x"], want["x"] * math.sqrt(d)) or close(mine["w_q"], want["w_q"] * math.sqrt(d))):
        hints.append(f"∂L/∂Q and ∂L/∂K need the factor 1/√d (= 1/√{d}) of the scores too; yours miss it")
    if d > 1 and (close(mine["x"], want["x"] / math.sqrt(d)) or close(mine["w_q"], want["w_q"] / math.sqrt(d))):
        hints.append("∂L/∂Q or ∂L/∂K has the factor 1/√d twice")
    if mine["context"] is not None and mine["context"].shape == c.shape and pad.any():
        if np.abs(mine["context"][pad]).max() > 1e-12:
            hints.append(
                "gradient flows into padded tokens: use the masked A of the forward pass in backward "
                "(A_ij = 0 at padded tokens j)"
            )
    if mine["w_k"] is not None and want["w_k"] is not None and close(mine["context"], want["context"]) is False:
        q, k, v = x @ w_q.T, c @ w_k.T, c @ w_v.T
        a = _softmax_rows(np.where(pad[:, None, :], -np.inf, q @ np.swapaxes(k, -1, -2) / math.sqrt(d)))
        grad_v = np.swapaxes(a, -1, -2) @ g
        grad_a = g @ np.swapaxes(v, -1, -2)
        grad_s = a * (grad_a - (grad_a * a).sum(axis=-1, keepdims=True))
        grad_k = np.swapaxes(grad_s, -1, -2) @ q / math.sqrt(d)
        if close(mine["context"], grad_v @ w_v) or close(mine["context"], grad_k @ w_k):
            hints.append("the context feeds both K and V: ∂L/∂c = ∂L/∂K W_K + ∂L/∂V W_V, the sum of both paths")
    return hints
