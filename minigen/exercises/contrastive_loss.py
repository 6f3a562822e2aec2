"""Exercise 13: the symmetric contrastive (InfoNCE) loss of CLIP, forward and backward."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen import autograd
from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.models.clip import clip_loss, l2_normalize
from minigen.ops.loss import cross_entropy
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "contrastive_loss"
TITLE = "CLIP's symmetric contrastive loss (InfoNCE): forward and backward"
TOPIC = "text meets images (CLIP)"

TEMPLATE = '''"""Exercise: CLIP's symmetric contrastive loss (InfoNCE), forward and backward.

The maths
---------
A batch holds B pairs (image i, caption i). The encoders give features x_i (images) and
y_i (captions), of the same width D. CLIP compares directions only, so it first
normalises every row to unit length:

    u_i = x_i / ‖x_i‖,        v_j = y_j / ‖y_j‖

The similarity matrix, scaled by the learned temperature (stored as its log, t, so
the scale s = e^t = 1/τ is always positive):

    S_ij = s · ⟨u_i, v_j⟩                     (B × B: rows images, columns captions)

Image i belongs with caption i: the targets are the diagonal. The loss is the
cross-entropy of each row (image → text) AND of each column (text → image), averaged:

    L_i→t = −(1/B) Σ_i log softmax(S_i,:)_i          (row i: which caption is image i's?)
    L_t→i = −(1/B) Σ_j log softmax(S_:,j)_j          (column j: which image is caption j's?)
    L     = ½ (L_i→t + L_t→i)

Backward (g = ∂L/∂L, the upstream scalar). With P = softmax of each row of S and
Q = softmax of each column of S (each column sums to 1), and I the identity:

    G = ∂L/∂S = g / (2B) · [(P − I) + (Q − I)]
    ∂L/∂u = s · G V,      ∂L/∂v = s · Gᵀ U          (U, V: the rows u_i, v_j)
    ∂L/∂t = Σ_ij G_ij S_ij                            (∂S/∂t = S, since S = e^t ⟨u, v⟩)

and through the normalisation u = x/‖x‖ (per row; only the part of ∂L/∂u across u
survives, since moving x along u does not change u):

    ∂L/∂x = (∂L/∂u − u ⟨u, ∂L/∂u⟩) / ‖x‖          (and the same for y, v)

Stability: subtract each row's (column's) maximum before the exponentials.

Shapes
------
    ContrastiveLoss: image_features x (B, D), text_features y (B, D), logit_scale t (a 0-d
                     array, shape ())  ->  L, a scalar (shape ())
                     backward returns (∂L/∂x, ∂L/∂y, ∂L/∂t)

How a minigen Function works
----------------------------
* forward(self, ...) receives Tensors; compute on .data with xp = x.xp (never numpy
  directly), keep what backward needs in self.saved and return the ARRAY.
  Useful: xp.sqrt, xp.exp, a.max(axis=1, keepdims=True), xp.eye(B, dtype=a.dtype),
  a @ b.T, xp.log, a.diagonal().
* backward(self, grad) receives ∂L/∂output as a Tensor and returns one Tensor per input.
  Wrap arrays with Tensor(array).

Check your work:
    python -m minigen.exercises check contrastive_loss THIS_FILE
"""

from minigen import Function, Tensor


class ContrastiveLoss(Function):
    """L = ½ [CE(S, diag) + CE(Sᵀ, diag)],  S = e^t · (x/‖x‖)(y/‖y‖)ᵀ."""

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor):
        raise NotImplementedError("not implemented yet: ContrastiveLoss.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: ContrastiveLoss.backward")
'''


# ------------------------------------------------------------------------ references
def reference_contrastive_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    return clip_loss(l2_normalize(image_features), l2_normalize(text_features), logit_scale)


OPS = (
    Op(
        "ContrastiveLoss",
        inputs=("image_features", "text_features", "logit_scale"),
        differentiable=("image_features", "text_features", "logit_scale"),
        reference=reference_contrastive_loss,
    ),
)


# ----------------------------------------------------------------------------- inputs
def _features(shape: tuple[int, int]) -> st.SearchStrategy:
    """Rows of length 0.5 to 2 in random directions (never near 0, where x/‖x‖ has no direction)."""
    return (
        st.tuples(arrays(shape, low=-1.0, high=1.0), arrays((shape[0], 1), low=0.5, high=2.0))
        .filter(lambda pair: bool((np.linalg.norm(pair[0], axis=1) > 0.2).all()))
        .map(lambda pair: pair[0] / np.linalg.norm(pair[0], axis=1, keepdims=True) * pair[1])
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A batch of B = 2-5 pairs of D = 2-4 features, and a logit scale t in [0, 2.5]."""
    b, d = draw(st.integers(2, 5)), draw(st.integers(2, 4))
    x, y = draw(_features((b, d))), draw(_features((b, d)))
    t = np.array(draw(st.floats(0.0, 2.5)), dtype=np.float64)
    return Case({"image_features": x, "text_features": y, "logit_scale": t})


_rng = np.random.default_rng(16)
EXAMPLES = [
    Case(
        {
            "image_features": _rng.normal(size=(4, 3)),
            "text_features": _rng.normal(size=(4, 3)),
            "logit_scale": np.array(np.log(1 / 0.07)),
        }
    )
]


# ------------------------------------------------------------------ typical mistakes
# Each wrong formula, written with minigen ops so that its value AND its gradient can be
# compared with the student's: (hint, keyword arguments of _variant).
_SHIFT_HINT = (
    "the labels are off by one: the diagonal is shifted. Image i belongs with caption i, so the "
    "target of row i (and of column i) is i itself (labels = arange(B)), not i ± 1"
)
_AFTER_SOFTMAX_HINT = (
    "the temperature is applied after the softmax: scale the similarities FIRST, S = e^t · ⟨u, v⟩, "
    "then take the softmax / cross-entropy of S (a scale after the softmax does not sharpen it)"
)
VARIANTS: tuple[tuple[str, dict], ...] = (
    (
        "one direction only: your loss is the image → text cross-entropy (the rows of S) alone; "
        "CLIP averages it with the text → image one (the columns, Sᵀ): L = ½ (L_i→t + L_t→i)",
        {"direction": "image"},
    ),
    (
        "one direction only: your loss is the text → image cross-entropy (the columns of S) alone; "
        "CLIP averages it with the image → text one (the rows): L = ½ (L_i→t + L_t→i)",
        {"direction": "text"},
    ),
    ("you added the two directions: the loss is their AVERAGE, ½ (L_i→t + L_t→i)", {"direction": "sum"}),
    (
        "no L2 normalisation: CLIP compares directions, u = x/‖x‖ and v = y/‖y‖, before the "
        "similarities S = e^t ⟨u, v⟩ (the raw dot product ⟨x, y⟩ grows with the features' length)",
        {"normalise": False},
    ),
    (_AFTER_SOFTMAX_HINT, {"temperature": "times_loss"}),
    (_AFTER_SOFTMAX_HINT, {"temperature": "times_probability"}),
    (
        "the logit scale is stored as its logarithm t: multiply the similarities by s = e^t, not by t",
        {"temperature": "t_not_exp"},
    ),
    (_SHIFT_HINT, {"shift": 1}),
    (_SHIFT_HINT, {"shift": -1}),
)


def _variant(
    x: Tensor,
    y: Tensor,
    t: Tensor,
    direction: str = "both",
    normalise: bool = True,
    temperature: str = "logits",
    shift: int = 0,
) -> Tensor:
    """The contrastive loss as the lecture writes it (the defaults) or with one mistake."""
    u, v = (l2_normalize(x), l2_normalize(y)) if normalise else (x, y)
    similarity = u @ v.mT
    b = similarity.shape[0]
    logits = {"logits": t.exp() * similarity, "t_not_exp": t * similarity}.get(temperature, similarity)
    labels = Tensor((np.arange(b) + shift) % b)
    rows, columns = cross_entropy(logits, labels), cross_entropy(logits.mT, labels)
    loss = {"both": 0.5 * (rows + columns), "image": rows, "text": columns, "sum": rows + columns}[direction]
    if temperature == "times_loss":  # s · (−log softmax(⟨u, v⟩))
        loss = t.exp() * loss
    elif temperature == "times_probability":  # −log(s · softmax(⟨u, v⟩))
        loss = loss - t
    return loss


def _inputs(case: Case, requires_grad: bool = False) -> list[Tensor]:
    names = ("image_features", "text_features", "logit_scale")
    return [Tensor(np.array(case.arrays[n], dtype=np.float64), requires_grad=requires_grad) for n in names]


def diagnose_forward(op: str, case: Case, mine: np.ndarray, want: np.ndarray) -> list[str]:
    with autograd.no_grad():
        return [hint for hint, kw in VARIANTS if close(mine, _variant(*_inputs(case), **kw).numpy())][:1]


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    """Whose gradient is the student's? A wrong formula's, or the right one with the normalisation
    treated as a constant (∂L/∂x = ∂L/∂u / ‖x‖, missing the projection)."""
    names = ("image_features", "text_features", "logit_scale")
    got = [mine[n] for n in names]
    hints = []
    for hint, kw in VARIANTS:
        inputs = _inputs(case, requires_grad=True)
        grads = autograd.grad(_variant(*inputs, **kw), inputs, grad_outputs=Tensor(np.array(g)))
        if all(m is not None and close(m, w.numpy()) for m, w in zip(got, grads)):
            hints.append(f"your backward is the gradient of a wrong loss: {hint}")
    if hints:
        return hints[:1]
    x, y, t = _inputs(case)
    u, v = l2_normalize(x).detach().requires_grad_(True), l2_normalize(y).detach().requires_grad_(True)
    t.requires_grad_(True)
    grad_u, grad_v = autograd.grad(clip_loss(u, v, t), [u, v], grad_outputs=Tensor(np.array(g)))[:2]
    norms = [np.linalg.norm(case.arrays[n], axis=1, keepdims=True) for n in names[:2]]
    if got[0] is not None and close(got[0], grad_u.numpy() / norms[0]):
        return [
            "the normalisation's backward is missing its projection: u = x/‖x‖ depends on x through ‖x‖ too, "
            "so ∂L/∂x = (∂L/∂u − u ⟨u, ∂L/∂u⟩) / ‖x‖, not ∂L/∂u / ‖x‖"
        ]
    if got[1] is not None and close(got[1], grad_v.numpy() / norms[1]):
        return [
            "the normalisation's backward is missing its projection: v = y/‖y‖ depends on y through ‖y‖ too, "
            "so ∂L/∂y = (∂L/∂v − v ⟨v, ∂L/∂v⟩) / ‖y‖, not ∂L/∂v / ‖y‖"
        ]
    if got[2] is not None and want["logit_scale"] is not None and close(got[2], want["logit_scale"] / np.exp(t.item())):
        return ["∂L/∂t is missing the factor e^t: ∂S/∂t = e^t ⟨u, v⟩ = S, so ∂L/∂t = Σ G_ij S_ij"]
    return []


# ------------------------------------------------------------------------- properties
def _loss(student: Student, case: Case, **arrays: np.ndarray) -> float:
    return float(student.forward("ContrastiveLoss", case.with_arrays(**arrays)))


def loss_is_symmetric_in_images_and_texts(student: Student, case: Case) -> None:
    """Swapping the images and the captions leaves the loss unchanged (both directions count)."""
    x, y = case.arrays["image_features"], case.arrays["text_features"]
    forward, swapped = _loss(student, case), _loss(student, case, image_features=y, text_features=x)
    if not np.isclose(forward, swapped, rtol=1e-9, atol=1e-12):
        raise CheckFailed(
            f"the loss is {forward:.10g}, but {swapped:.10g} with images and captions swapped",
            [
                "the loss must treat images and captions alike: average the image → text cross-entropy "
                "(rows of S) and the text → image one (columns of S)"
            ],
        )


def loss_ignores_the_length_of_the_features(student: Student, case: Case) -> None:
    """Scaling the image features by 3 and the text features by ½ changes nothing (L2 normalisation)."""
    x, y = case.arrays["image_features"], case.arrays["text_features"]
    before, after = _loss(student, case), _loss(student, case, image_features=3.0 * x, text_features=0.5 * y)
    if not np.isclose(before, after, rtol=1e-9, atol=1e-12):
        raise CheckFailed(
            f"the loss changes from {before:.10g} to {after:.10g} when the features are scaled by 3 and ½",
            ["normalise each row first, u = x/‖x‖ and v = y/‖y‖: CLIP compares directions, not lengths"],
        )


def chance_level_is_log_batch(student: Student, case: Case) -> None:
    """When every image is equally similar to every caption, each softmax is uniform and L = log B."""
    x = case.arrays["image_features"]
    b = x.shape[0]
    same = np.broadcast_to(x[:1], x.shape).copy()  # every image and caption the same vector
    value = _loss(student, case, image_features=same, text_features=same.copy())
    if not np.isclose(value, np.log(b), rtol=1e-9):
        t = float(case.arrays["logit_scale"])
        hints = []
        if np.isclose(value, np.exp(t) * np.log(b), rtol=1e-9) or np.isclose(value, np.log(b) - t, rtol=1e-9):
            hints = [_AFTER_SOFTMAX_HINT]
        raise CheckFailed(
            f"with all similarities equal the loss is {value:.10g}, expected log B = log {b} = {np.log(b):.10g}",
            hints or ["equal logits give a uniform softmax over the B candidates: −log(1/B) per row and column"],
        )


def matched_pairs_give_a_small_loss(student: Student, case: Case) -> None:
    """Identical, orthogonal pairs (x_i = y_i = e_i) at scale 100 give a loss near 0: the diagonal is the target."""
    b = 3
    eye = np.eye(b)
    arrays = {"image_features": eye, "text_features": eye.copy(), "logit_scale": np.array(np.log(100.0))}
    value = float(student.forward("ContrastiveLoss", Case(arrays)))
    if not value < 1e-6:
        raise CheckFailed(
            f"the loss of perfectly matched pairs is {value:.6g}, expected ≈ 0",
            [_SHIFT_HINT] if value > 50 else ["the target of image i is caption i: the diagonal of S"],
            case="image_features = text_features = identity (3, 3), logit_scale = log 100",
        )


PROPERTIES = (
    loss_is_symmetric_in_images_and_texts,
    loss_ignores_the_length_of_the_features,
    chance_level_is_log_batch,
    matched_pairs_give_a_small_loss,
)
