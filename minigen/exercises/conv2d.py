"""Exercise 4: the backward of a 2-D convolution, for the input and the weight."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen import autograd
from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.conv import conv2d
from minigen.tensor import Tensor
from minigen.testing import arrays

NAME = "conv2d"
TITLE = "conv2d backward: gradients for the input and the weight"
TOPIC = "convolutional networks"

TEMPLATE = '''"""Exercise: the backward pass of a 2-D convolution (the forward is given).

The maths
---------
x (N, C, H, W) is zero-padded by p on each side (x_pad), then the filter W
(O, C, k_H, k_W) slides over it with stride s (a cross-correlation, as in PyTorch):

    y[n, o, h, w] = Σ_c Σ_i Σ_j  W[o, c, i, j] · x_pad[n, c, h·s + i, w·s + j]

    H_out = ⌊(H + 2p − k_H) / s⌋ + 1,   W_out likewise.

The forward below loops over the kernel offsets (i, j): for each offset, the strided
slice x_pad[:, :, i : i + s·(H_out−1) + 1 : s, j : ... : s] holds, for every output
pixel at once, the input element that W[:, :, i, j] multiplies.

Backward, with G = ∂L/∂y (N, O, H_out, W_out). y is linear in x and in W, so:

    ∂L/∂W[o, c, i, j] = Σ_n Σ_h Σ_w  G[n, o, h, w] · x_pad[n, c, h·s + i, w·s + j]
    ∂L/∂x_pad[n, c, h·s + i, w·s + j]  +=  Σ_o  G[n, o, h, w] · W[o, c, i, j]

and ∂L/∂x is ∂L/∂x_pad with the padding cut off again. Loop over the offsets (i, j)
as the forward does. Note the "+=": where windows overlap (k > s), one input element
is used by several windows and receives the sum of their gradients. ∂L/∂W sums over
the whole batch. (In this "scatter" form nothing is flipped; the flipped kernel only
appears when ∂L/∂x is rewritten as a convolution of G.)

Shapes
------
    x: (N, C, H, W)   weight: (O, C, k_H, k_W)   y, G: (N, O, H_out, W_out)
    backward returns (∂L/∂x, ∂L/∂weight) with the shapes of x and weight

Useful: xp.einsum("nohw,oc->nchw", G, W[:, :, i, j]) and
xp.einsum("nohw,nchw->oc", G, patch), where xp = grad.xp (never numpy directly).

Check your work:
    python -m minigen.exercises check conv2d THIS_FILE
"""

from minigen import Function, Tensor


class Conv2d(Function):
    """y = conv2d(x, W) with stride s and zero padding p (no bias)."""

    def forward(self, x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0):
        xp = x.xp
        s, p = stride, padding
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        x_pad = xp.pad(x.data, ((0, 0), (0, 0), (p, p), (p, p)))
        h_out = (h + 2 * p - kh) // s + 1
        w_out = (w + 2 * p - kw) // s + 1
        y = xp.zeros((n, o, h_out, w_out), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                patch = x_pad[:, :, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s]
                y += xp.einsum("nchw,oc->nohw", patch, weight.data[:, :, i, j])
        self.saved = (x_pad, weight.data, s, p, x.shape)
        return y

    def backward(self, grad: Tensor):
        x_pad, weight, s, p, x_shape = self.saved
        raise NotImplementedError("not implemented yet: Conv2d.backward")
'''


def reference_conv2d(x: Tensor, weight: Tensor, stride: int, padding: int) -> Tensor:
    return conv2d(x, weight, stride=stride, padding=padding)


OPS = (
    Op(
        "Conv2d",
        inputs=("x", "weight"),
        differentiable=("x", "weight"),
        reference=reference_conv2d,
        params=("stride", "padding"),
    ),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """N ≤ 2, C ≤ 2, O ≤ 3, kernels 1..3, stride 1..2, padding 0..1, images up to 6×6."""
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    x = draw(arrays((n, c, h, w), low=-2.0, high=2.0))
    weight = draw(arrays((o, c, kh, kw), low=-2.0, high=2.0))
    return Case({"x": x, "weight": weight}, {"stride": stride, "padding": padding})


_rng = np.random.default_rng(4)
EXAMPLES = [
    # overlapping windows (k = 3 > s = 1), padding, a batch of 2
    Case(
        {"x": _rng.standard_normal((2, 2, 5, 5)), "weight": _rng.standard_normal((3, 2, 3, 3))},
        {"stride": 1, "padding": 1},
    ),
    # stride 2: windows overlap on every other row and column
    Case(
        {"x": _rng.standard_normal((1, 2, 5, 6)), "weight": _rng.standard_normal((2, 2, 3, 2))},
        {"stride": 2, "padding": 0},
    ),
]


def _padded_coverage(case: Case) -> np.ndarray:
    """How many windows use each pixel of the PADDED input: (H + 2p, W + 2p), from the geometry alone."""
    x, weight = case.arrays["x"], case.arrays["weight"]
    s, p = case.params["stride"], case.params["padding"]
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    h_out, w_out = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    count = np.zeros((h + 2 * p, w + 2 * p))
    for i in range(kh):
        for j in range(kw):
            count[i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s] += 1
    return count


def _coverage(case: Case) -> np.ndarray:
    """How many windows use each input pixel: (H, W) (the padding cropped off)."""
    p = case.params["padding"]
    h, w = case.arrays["x"].shape[2:]
    return _padded_coverage(case)[p : p + h, p : p + w]


CROP_HINT = (
    "∂L/∂x is ∂L/∂x_pad cropped at the wrong place: the padding adds p = {p} pixels on EVERY side, so "
    "the input's gradient is dx_pad[:, :, p:p+H, p:p+W], not dx_pad[:, :, :H, :W]"
)
ACCUMULATE_HINT = (
    "pixels used by several windows keep only the last window's gradient: accumulate with += (each "
    "window adds its share), do not assign with ="
)


# ------------------------------------------------------------------------- properties
def every_window_sends_gradient_to_its_pixels(student: Student, case: Case) -> None:
    """With W = 1 and G = 1, ∂L/∂x counts the windows covering each pixel (times O)."""
    x, weight = case.arrays["x"], case.arrays["weight"]
    p, o = case.params["padding"], weight.shape[0]
    ones = case.with_arrays(weight=np.ones_like(weight))
    g = np.ones(student.reference("Conv2d", ones).shape)
    dx = student.vjp("Conv2d", ones, g)["x"]
    coverage = _coverage(case)
    want = o * np.broadcast_to(coverage, x.shape)
    if dx is not None and dx.shape == x.shape and not np.allclose(dx, want):
        hints = []
        h, w = x.shape[2:]
        if p > 0 and np.allclose(dx, o * np.broadcast_to(_padded_coverage(case)[:h, :w], x.shape)):
            hints.append(CROP_HINT.format(p=p))
        elif (coverage > 1).any() and np.allclose(dx, o * np.broadcast_to(coverage > 0, x.shape)):
            hints.append(ACCUMULATE_HINT)
        raise CheckFailed("some input pixels do not receive the gradient of every window that uses them", hints)


PROPERTIES = (every_window_sends_gradient_to_its_pixels,)


# ------------------------------------------------------------------ typical mistakes
def _reference_grads(
    g: np.ndarray, x: np.ndarray, weight: np.ndarray, stride: int, padding: int
) -> tuple[np.ndarray, np.ndarray]:
    xt, wt = Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)
    out = conv2d(xt, wt, stride=stride, padding=padding)
    dx, dw = autograd.grad(out, [xt, wt], grad_outputs=Tensor(g))
    return dx.numpy(), dw.numpy()


def _assigned_dx(case: Case, g: np.ndarray, i_outer: bool) -> np.ndarray:
    """∂L/∂x when each offset's contribution is assigned with = (the last one wins), loops in either order."""
    x, weight = case.arrays["x"], case.arrays["weight"]
    s, p = case.params["stride"], case.params["padding"]
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    h_out, w_out = g.shape[2:]
    dx_pad = np.zeros(x.shape[:2] + (h + 2 * p, w + 2 * p))
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    for i, j in offsets if i_outer else sorted(offsets, key=lambda ij: (ij[1], ij[0])):
        window = (slice(None), slice(None), slice(i, i + s * (h_out - 1) + 1, s), slice(j, j + s * (w_out - 1) + 1, s))
        dx_pad[window] = np.einsum("nohw,oc->nchw", g, weight[:, :, i, j])
    return dx_pad[:, :, p : p + h, p : p + w]


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    x, weight = case.arrays["x"], case.arrays["weight"]
    s, p = case.params["stride"], case.params["padding"]
    dx = mine["x"]
    if dx is not None and close(dx, want["x"]):
        dx = None  # ∂L/∂x is right: only ∂L/∂W can hold the mistake
    hints = []
    if dx is not None and p > 0:
        x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        dx_pad, _ = _reference_grads(g, x_pad, weight, s, 0)
        if close(dx, dx_pad[:, :, : x.shape[2], : x.shape[3]]):
            hints.append(CROP_HINT.format(p=p))
    flipped_dx, _ = _reference_grads(g, x, weight[:, :, ::-1, ::-1].copy(), s, p)
    if dx is not None and weight.shape[2] * weight.shape[3] > 1 and close(dx, flipped_dx):
        hints.append(
            "∂L/∂x matches the kernel flipped: in the scatter form each G[n, o, h, w] goes back through the same "
            "W[o, c, i, j] that produced it; flip the kernel only when writing ∂L/∂x as a convolution of G"
        )
    if dx is not None and (close(dx, _assigned_dx(case, g, True)) or close(dx, _assigned_dx(case, g, False))):
        hints.append(ACCUMULATE_HINT)
    if x.shape[0] > 1:
        _, first_dw = _reference_grads(g[:1], x[:1], weight, s, p)
        if close(mine["weight"], first_dw):
            hints.append("∂L/∂W matches the first sample only: the weight is shared by the batch, sum over all n")
    return hints
