"""Exercise 12: vector quantisation, the nearest code, the straight-through estimator and the VQ loss.

The two loss terms have the same value and different gradients, which is the whole point
of the stop-gradients: each term is a ``Function`` whose backward returns a gradient for
one input only. Their gradients ARE the derivatives of their forwards with respect to
that input, so ``gradcheck`` judges them. ``StraightThrough`` is different on purpose: its
backward (g to z_e) is not the derivative of its forward (the constant e), so no
finite-difference check can judge it; properties do (``straight_through_passes_the_
gradient_unchanged``), as they judge ``nearest_code`` and the whole ``vector_quantize``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

import minigen as mg
from minigen import autograd
from minigen.exercises.checker import Case, CheckFailed, Op, Student, close, constant_ratio
from minigen.models.vq import codebook_loss, commitment_loss, straight_through
from minigen.tensor import Tensor
from minigen.testing import arrays, distinct_arrays

NAME = "vector_quantize"
TITLE = "vector quantisation: the nearest code, straight-through, and the codebook and commitment losses"
TOPIC = "VQ-VAE and VQ-GAN"

TEMPLATE = '''"""Exercise: vector quantisation, forward and backward (the VQ-VAE's quantiser).

The maths
---------
An encoder gives M vectors z_i (the rows of z_e); the codebook holds K vectors e_k.
Each vector is replaced by its nearest code:

    k(i) = argmin_k ‖z_i − e_k‖²,      e = codebook[k]      (the chosen code of each row)

Compute all the distances with one matrix product, expanding the square:

    ‖z_i − e_k‖² = ‖z_i‖² − 2 z_i·e_k + ‖e_k‖²          (M, K) = (M, 1) − 2 (M, D)(D, K) + (1, K)

Ties go to the lowest index (argmin does that).

The straight-through estimator. argmin has no useful gradient (it is piecewise
constant), so the decoder's gradient is copied past the quantiser unchanged:

    z_q = z_e + sg(e − z_e)      value: e        ∂L/∂z_e = g (= ∂L/∂z_q),   ∂L/∂e = 0

(sg: stop-gradient, a constant for backward.)

The VQ loss, computed from z_e and e (BEFORE the straight-through substitution):

    L_VQ = ‖sg(z_e) − e‖² + β ‖z_e − sg(e)‖²              β = 0.25
           codebook term     commitment term

with ‖·‖² the MEAN over all n = M·D elements. Both terms have the same value; they
differ in which input gets the gradient:

    codebook term:    ∂/∂e   = 2 g (e − z_e) / n,   ∂/∂z_e = 0     (moves the codes)
    commitment term:  ∂/∂z_e = 2 g (z_e − e) / n,   ∂/∂e   = 0     (commits the encoder)

β weights the COMMITMENT term. Computing the losses from z_q (after the substitution)
or putting β on the codebook term gives the same loss VALUE and wrong gradients: the
two classic bugs this exercise checks for.

Shapes
------
    z_e (M, D) float, codebook (K, D) float, e (M, D): the chosen codes
    nearest_code(z_e, codebook)          -> indices (M,) int64
    StraightThrough.apply(z_e, e)        -> z_q (M, D); backward returns (∂L/∂z_e, None)
    CodebookLoss.apply(z_e, e)           -> a scalar; backward returns (None, ∂L/∂e)
    CommitmentLoss.apply(z_e, e)         -> a scalar; backward returns (∂L/∂z_e, None)
    vector_quantize(z_e, codebook, beta) -> (z_q, loss, indices)

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = z_e.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
* backward(self, grad) receives the upstream gradient as a Tensor and returns one Tensor
  (or None) per input. Wrap arrays with Tensor(array).
nearest_code and vector_quantize are plain functions of Tensors: use Tensor operations
(z @ codebook.t(), .square(), .sum(dim=1, keepdim=True), .argmin(dim=1)), pick the rows
of the codebook with minigen.nn.functional.embedding(indices, codebook) (its backward
sends each row's gradient to the code it came from), and put the pieces together with
your three Functions.

Check your work:
    python -m minigen.exercises check vector_quantize THIS_FILE
"""

import minigen as mg
import minigen.nn.functional as F
from minigen import Function, Tensor


def nearest_code(z_e: Tensor, codebook: Tensor) -> Tensor:
    """k(i) = argmin_k (‖z_i‖² − 2 z_i·e_k + ‖e_k‖²): an int64 tensor of shape (M,)."""
    raise NotImplementedError("not implemented yet: nearest_code")


class StraightThrough(Function):
    """z_q = z_e + sg(e − z_e): forward returns e; backward returns (g, None)."""

    def forward(self, z_e: Tensor, e: Tensor):
        raise NotImplementedError("not implemented yet: StraightThrough.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: StraightThrough.backward")


class CodebookLoss(Function):
    """L = mean (sg(z_e) − e)²;  ∂L/∂e = 2 g (e − z_e) / n, and nothing for z_e."""

    def forward(self, z_e: Tensor, e: Tensor):
        raise NotImplementedError("not implemented yet: CodebookLoss.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: CodebookLoss.backward")


class CommitmentLoss(Function):
    """L = mean (z_e − sg(e))²;  ∂L/∂z_e = 2 g (z_e − e) / n, and nothing for e."""

    def forward(self, z_e: Tensor, e: Tensor):
        raise NotImplementedError("not implemented yet: CommitmentLoss.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: CommitmentLoss.backward")


def vector_quantize(z_e: Tensor, codebook: Tensor, beta: float = 0.25):
    """(z_q, loss, indices): the nearest codes, z_q by straight-through, and
    L_VQ = codebook term + β · commitment term computed from z_e and e."""
    raise NotImplementedError("not implemented yet: vector_quantize")
'''


# ------------------------------------------------------------------------ references
def reference_codebook_loss(z_e: Tensor, e: Tensor) -> Tensor:
    return codebook_loss(z_e, e)


def reference_commitment_loss(z_e: Tensor, e: Tensor) -> Tensor:
    return commitment_loss(z_e, e)


OPS = (
    Op("CodebookLoss", inputs=("z_e", "e"), differentiable=("e",), reference=reference_codebook_loss),
    Op("CommitmentLoss", inputs=("z_e", "e"), differentiable=("z_e",), reference=reference_commitment_loss),
)
# Checked by a property, not by gradcheck: its backward is deliberately not its forward's derivative.
STRAIGHT_THROUGH = Op("StraightThrough", inputs=("z_e", "e"), differentiable=("z_e",), reference=straight_through)


# ----------------------------------------------------------------------------- inputs
@st.composite
def cases(draw: st.DrawFn) -> Case:
    """K = 2..5 codes of dimension D = 1..3, at least 0.6 apart; M = 1..6 vectors, each a code
    plus an offset of under a fifth of the codes' spacing (so its nearest code is unambiguous,
    with no ties); e = each vector's code; β = 0.25 or 0.4 (never 1, where the β mistake is invisible)."""
    k, d, m = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    codebook = draw(distinct_arrays((k, d), gap=0.6, low=-3.0, high=3.0))
    spacing = min(np.linalg.norm(a - b) for i, a in enumerate(codebook) for b in codebook[i + 1 :])
    owners = np.array(draw(st.lists(st.integers(0, k - 1), min_size=m, max_size=m)))
    offsets = draw(arrays((m, d), low=-1.0, high=1.0)) * (0.2 * spacing / np.sqrt(d))
    offsets = np.where(np.abs(offsets) < 1e-3, 1e-3, offsets)  # z_e ≠ e: every gradient is visible
    return Case(
        {"z_e": codebook[owners] + offsets, "e": codebook[owners].copy(), "codebook": codebook},
        {"beta": draw(st.sampled_from([0.25, 0.4]))},
    )


_codebook = np.array([[1.0, 0.0], [-1.0, 0.5], [0.2, -1.5], [0.0, 2.0]])
_owners = np.array([2, 0, 0, 3, 1])
_offsets = np.array([[0.1, -0.2], [-0.15, 0.1], [0.05, 0.2], [0.2, -0.1], [-0.1, -0.05]])
EXAMPLES = [
    Case(
        {"z_e": _codebook[_owners] + _offsets, "e": _codebook[_owners], "codebook": _codebook},
        {"beta": 0.25},
    )
]


# --------------------------------------------------------------------------- helpers
def _student_function(student: Student, name: str) -> Callable[..., object]:
    function = getattr(student.module, name, None)
    if not callable(function):
        raise CheckFailed(
            f"your file must define {name}", [f"start from the template: python -m minigen.exercises start {NAME} DIR"]
        )
    return function


def _brute_force(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    distances = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    return distances.argmin(axis=1)


def _indices(result: object, name: str) -> np.ndarray:
    if not isinstance(result, Tensor):
        raise CheckFailed(f"{name} must return a Tensor of code indices, got {type(result).__name__}")
    return result.numpy()


def _scatter(k: np.ndarray, rows: np.ndarray, num_codes: int) -> np.ndarray:
    """Σ_{i: k(i)=k} rows_i for each code, = onehot(k)ᵀ · rows: what the embedding's backward does."""
    onehot = np.arange(num_codes)[None, :] == k[:, None]  # (M, K)
    return onehot.T.astype(rows.dtype) @ rows


# ------------------------------------------------------------------------- properties
def nearest_code_is_the_closest_codebook_entry(student: Student, case: Case) -> None:
    """nearest_code picks argmin_k ‖z_i − e_k‖² for every row (checked against all the distances)."""
    function = _student_function(student, "nearest_code")
    z, codebook = case.arrays["z_e"], case.arrays["codebook"]
    with autograd.no_grad():
        mine = _indices(function(mg.tensor(z), mg.tensor(codebook)), "nearest_code")
    want = _brute_force(z, codebook)
    if mine.shape == want.shape and np.array_equal(mine, want):
        if mine.dtype.kind not in "iu":
            raise CheckFailed(f"nearest_code returned {mine.dtype} values; code indices are integers (int64)")
        return
    if mine.shape != want.shape:
        raise CheckFailed(
            f"nearest_code returned shape {mine.shape}, expected {want.shape} (one code per row of z_e)",
            ["take argmin over the codes, the last axis of the (M, K) distance matrix: .argmin(dim=1)"],
        )
    hints = []
    distances = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    if np.array_equal(mine, distances.argmax(axis=1)):
        hints.append("you picked the FARTHEST code: the nearest code is the argmin of the distances, not the argmax")
    elif np.array_equal(mine, (z @ codebook.T).argmax(axis=1)):
        hints.append(
            "you dropped ‖e_k‖² (or took the largest dot product z·e): only ‖z_i‖² is the same for every code and "
            "can be dropped; ‖e_k‖² differs between codes and decides which one is nearest"
        )
    elif np.array_equal(mine, ((codebook**2).sum(-1)[None, :] - z @ codebook.T).argmin(axis=1)):
        hints.append("the factor 2 is missing: ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²")
    raise CheckFailed(f"nearest_code gives codes {mine.tolist()}, the nearest codes are {want.tolist()}", hints)


def straight_through_passes_the_gradient_unchanged(student: Student, case: Case) -> None:
    """StraightThrough's value is e, and its backward gives z_e the upstream g unchanged and e nothing."""
    if not isinstance(getattr(student.module, "StraightThrough", None), type):
        raise CheckFailed("your file must define the class StraightThrough(Function)")
    e = case.arrays["e"]
    value = student.forward(STRAIGHT_THROUGH, case)
    if value.shape != e.shape or not np.allclose(value, e, rtol=1e-12, atol=1e-12):
        hints = []
        if value.shape == e.shape and np.allclose(value, case.arrays["z_e"]):
            hints.append("forward returned z_e: z_q = z_e + sg(e − z_e) has the VALUE of the code e")
        raise CheckFailed("StraightThrough.forward must return the codes e (z_q = z_e + (e − z_e))", hints)
    g = student.upstream(STRAIGHT_THROUGH, case)
    grads = student.vjp(STRAIGHT_THROUGH, case, g)
    to_encoder, to_codes = grads["z_e"], grads["e"]
    if to_encoder is None or not np.any(to_encoder):
        raise CheckFailed(
            "StraightThrough.backward sends no gradient to z_e",
            [
                "without the straight-through estimator the encoder gets no gradient from the decoder at all "
                "(argmin is piecewise constant): return the incoming gradient for z_e unchanged, ∂L/∂z_e = g"
            ],
        )
    if to_encoder.shape != g.shape or not np.allclose(to_encoder, g, rtol=1e-12, atol=1e-12):
        hints = []
        if (c := constant_ratio(to_encoder, g)) is not None:
            hints.append(f"your ∂L/∂z_e is {c:.4g} times g: straight-through copies g exactly (∂z_q/∂z_e = I)")
        raise CheckFailed("StraightThrough.backward must return ∂L/∂z_e = g, the upstream gradient unchanged", hints)
    if to_codes is not None and np.any(to_codes):
        raise CheckFailed(
            "StraightThrough.backward sends a gradient to e",
            [
                "z_q = z_e + sg(e − z_e): e is inside the stop-gradient, so ∂z_q/∂e = 0; return None for e (the "
                "codes learn from the codebook term, not from the decoder)"
            ],
        )


def codebook_term_updates_only_the_codes(student: Student, case: Case) -> None:
    """CodebookLoss's backward gives z_e nothing: ‖sg(z_e) − e‖² trains the codes only."""
    grads = student.vjp("CodebookLoss", case, student.upstream("CodebookLoss", case))
    if grads["z_e"] is not None and np.any(grads["z_e"]):
        raise CheckFailed(
            "CodebookLoss.backward returns a gradient for z_e",
            ["the codebook term is ‖sg(z_e) − e‖²: z_e is a constant there, so return None for z_e"],
        )


def commitment_term_updates_only_the_encoder(student: Student, case: Case) -> None:
    """CommitmentLoss's backward gives e nothing: ‖z_e − sg(e)‖² trains the encoder only."""
    grads = student.vjp("CommitmentLoss", case, student.upstream("CommitmentLoss", case))
    if grads["e"] is not None and np.any(grads["e"]):
        raise CheckFailed(
            "CommitmentLoss.backward returns a gradient for e",
            ["the commitment term is ‖z_e − sg(e)‖²: e is a constant there, so return None for e"],
        )


def _run_vector_quantize(student: Student, case: Case, device: str = "cpu") -> dict[str, np.ndarray | float | None]:
    """The student's vector_quantize on float64 leaves, with L = Σ G ⊙ z_q + loss backpropagated."""
    function = _student_function(student, "vector_quantize")
    z_e = mg.tensor(case.arrays["z_e"], device=device, requires_grad=True)
    codebook = mg.tensor(case.arrays["codebook"], device=device, requires_grad=True)
    result = function(z_e, codebook, beta=case.params["beta"])
    if not isinstance(result, tuple) or len(result) != 3:
        raise CheckFailed("vector_quantize must return a tuple (z_q, loss, indices)")
    z_q, loss, indices = result
    if not all(isinstance(t, Tensor) for t in result):
        raise CheckFailed("vector_quantize must return three Tensors (z_q, loss, indices)")
    if loss.shape != ():
        raise CheckFailed(f"the loss must be a scalar (shape ()), got shape {tuple(loss.shape)}")
    upstream = np.random.default_rng(3).standard_normal(case.arrays["z_e"].shape)
    total = (z_q * mg.tensor(upstream, device=device)).sum() + loss
    if total.requires_grad:
        total.backward()
    return {
        "z_q": z_q.detach().numpy(),
        "loss": float(loss.detach().numpy()),
        "indices": indices.numpy(),
        "G": upstream,
        "dz": None if z_e.grad is None else z_e.grad.numpy(),
        "dcodebook": None if codebook.grad is None else codebook.grad.numpy(),
    }


def vector_quantize_matches_the_lecture(student: Student, case: Case) -> None:
    """vector_quantize gives the nearest codes, z_q = e, L_VQ's value and the lecture's gradients.

    For L = Σ G ⊙ z_q + L_VQ: ∂L/∂z_e = G + 2β(z_e − e)/n and ∂L/∂e_k = Σ_{k(i)=k} 2(e_k − z_i)/n.
    """
    mine = _run_vector_quantize(student, case)
    z, codebook, beta = case.arrays["z_e"], case.arrays["codebook"], case.params["beta"]
    k = _brute_force(z, codebook)
    e, n, K, G = codebook[k], z.size, len(codebook), mine["G"]
    if mine["indices"].shape != k.shape or not np.array_equal(mine["indices"], k):
        raise CheckFailed(
            f"vector_quantize returned the codes {mine['indices'].tolist()}, the nearest are {k.tolist()}",
            ["fix nearest_code first (see its check), and return its indices"],
        )
    if mine["z_q"].shape != e.shape or not np.allclose(mine["z_q"], e, rtol=1e-9, atol=1e-12):
        raise CheckFailed("z_q must have the value of the chosen codes e", ["z_q = StraightThrough.apply(z_e, e)"])
    mse = float(np.mean((z - e) ** 2))
    want_loss = (1.0 + beta) * mse
    if not np.isclose(mine["loss"], want_loss, rtol=1e-9, atol=1e-12):
        values = {
            "the commitment term has no β: L_VQ = codebook term + β · commitment term": 2.0 * mse,
            "the codebook term is missing: L_VQ = ‖sg(z_e) − e‖² + β ‖z_e − sg(e)‖² (without it the codes never "
            "move)": beta * mse,
            "the commitment term is missing: L_VQ = ‖sg(z_e) − e‖² + β ‖z_e − sg(e)‖²": mse,
            "β multiplies both terms: only the commitment term is weighted": 2.0 * beta * mse,
        }
        hints = [hint for hint, value in values.items() if np.isclose(mine["loss"], value, rtol=1e-9, atol=1e-12)]
        raise CheckFailed(f"the loss is {mine['loss']:.10g}, the lecture's L_VQ is {want_loss:.10g}", hints[:1])

    def variant(dz_extra: np.ndarray, codes_rows: np.ndarray, with_g: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return (G if with_g else 0.0) + dz_extra, _scatter(k, codes_rows, K)

    pull = 2.0 * (z - e) / n  # the derivative of ‖z_e − e‖² with respect to z_e
    want = variant(beta * pull, -pull)
    variants = {
        "β is on the wrong term: it weights the commitment term ‖z_e − sg(e)‖² (the encoder's pull), not the "
        "codebook term; the loss value is the same, the gradients are not": variant(pull, -beta * pull),
        "the losses are computed after the straight-through substitution (from z_q instead of e): the value is "
        "the same, but z_q's gradient goes to z_e, so the codebook gets nothing and the encoder is pushed AWAY "
        "from its codes; compute both terms from z_e and e, then z_q": variant((beta - 1.0) * pull, 0.0 * pull),
        "no straight-through: z_q = e sends the decoder's gradient to the codebook and none to the encoder; use "
        "z_q = StraightThrough.apply(z_e, e)": (beta * pull, _scatter(k, G - pull, K)),
        "the codebook term sends no gradient to the codes: ∂/∂e = 2(e − z_e)/n (check CodebookLoss and that "
        "its e is the embedding of the codebook)": variant(beta * pull, 0.0 * pull),
        "the encoder gets no gradient from the decoder: z_q's gradient must reach z_e (straight-through)": variant(
            beta * pull, -pull, with_g=False
        ),
    }
    got = (
        np.zeros_like(z) if mine["dz"] is None else mine["dz"],
        np.zeros_like(codebook) if mine["dcodebook"] is None else mine["dcodebook"],
    )
    if close(got[0], want[0]) and close(got[1], want[1]):
        return
    hints = [hint for hint, (dz, dc) in variants.items() if close(got[0], dz) and close(got[1], dc)]
    wrong = [name for name, g, w in (("z_e", got[0], want[0]), ("the codebook", got[1], want[1])) if not close(g, w)]
    raise CheckFailed(
        f"the gradient of Σ G ⊙ z_q + L_VQ with respect to {' and '.join(wrong)} differs from the lecture's",
        hints[:1] or ["∂/∂z_e = G + 2β(z_e − e)/n and ∂/∂e_k = Σ_{i: k(i)=k} 2(e_k − z_i)/n (G: z_q's gradient)"],
    )


def vector_quantize_runs_on_the_gpu(student: Student, case: Case) -> None:
    """vector_quantize runs on the stand-in GPU (no NumPy on tensor data) and agrees with the CPU."""
    cpu, gpu = _run_vector_quantize(student, case), _run_vector_quantize(student, case, "standin")
    for name in ("z_q", "indices", "dz", "dcodebook"):
        a, b = cpu[name], gpu[name]
        if (a is None) != (b is None) or (a is not None and not np.allclose(a, b)):
            raise CheckFailed(f"vector_quantize gives a different {name} on the stand-in GPU than on the CPU")
    if not np.isclose(cpu["loss"], gpu["loss"]):
        raise CheckFailed("vector_quantize gives a different loss on the stand-in GPU than on the CPU")


PROPERTIES = (
    nearest_code_is_the_closest_codebook_entry,
    straight_through_passes_the_gradient_unchanged,
    codebook_term_updates_only_the_codes,
    commitment_term_updates_only_the_encoder,
    vector_quantize_matches_the_lecture,
    vector_quantize_runs_on_the_gpu,
)


# ------------------------------------------------------------------ typical mistakes
def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    diff = case.arrays["z_e"] - case.arrays["e"]
    if close(mine, np.sum(diff**2)):
        return ["you summed the squares: ‖·‖² here is the MEAN over all n = M·D elements"]
    if close(mine, np.mean(np.sum(diff**2, axis=-1))):
        return ["you averaged over the rows only: take the mean over all n = M·D elements (rows and dimensions)"]
    if close(mine, np.mean(np.abs(diff))):
        return ["the square is missing: the loss is the mean of (z_e − e)²"]
    return []


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    diff = case.arrays["z_e"] - case.arrays["e"]
    n = diff.size
    name = "e" if op == "CodebookLoss" else "z_e"
    got, expected = mine[name], want[name]
    if got is None:
        return []
    towards = "e towards z_e: ∂/∂e = 2 g (e − z_e)/n" if name == "e" else "z_e towards e: ∂/∂z_e = 2 g (z_e − e)/n"
    if close(got, -expected):
        return [f"the sign is wrong: the term pulls {towards}"]
    if close(got, expected / np.asarray(g)):
        return ["the upstream gradient g is ignored: multiply by g"]
    c = constant_ratio(got, expected)
    if c is not None and abs(c - 0.5) < 1e-6:
        return ["the factor 2 of the square's derivative is missing: d/dx x² = 2x"]
    if c is not None and abs(c - n) < 1e-6 * n:
        return [f"the 1/n of the mean is missing (n = M·D = {n} elements)"]
    if c is not None and abs(c - case.params["beta"]) < 1e-9:
        return ["β does not belong inside this Function: vector_quantize weights the commitment term"]
    return []
