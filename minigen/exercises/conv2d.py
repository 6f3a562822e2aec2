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


def _coverage(case: Case) -> np.ndarray:
    """How many windows use each input pixel: (H, W), from the geometry alone."""
    x, weight = case.arrays["x"], case.arrays["weight"]
    s, p = case.params["stride"], case.params["padding"]
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    h_out, w_out = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    count = np.zeros((h + 2 * p, w + 2 * p))
    for i in range(kh):
        for j in range(kw):
            count[i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s] += 1
    return count[p : p + h, p : p + w]


# ------------------------------------------------------------------------- properties
def every_window_sends_gradient_to_its_pixels(student: Student, case: Case) -> None:
    """With W = 1 and G = 1, ∂L/∂x counts the windows covering each pixel (times O)."""
    x, weight = case.arrays["x"], case.arrays["weight"]
    ones = case.with_arrays(weight=np.ones_like(weight))
    g = np.ones(student.reference("Conv2d", ones).shape)
    dx = student.vjp("Conv2d", ones, g)["x"]
    want = weight.shape[0] * np.broadcast_to(_coverage(case), x.shape)
    if dx is not None and dx.shape == x.shape and not np.allclose(dx, want):
        hints = []
        if np.all(dx <= want + 1e-9) and np.allclose(dx[..., _coverage(case) == 1], want[..., _coverage(case) == 1]):
            hints.append(
                "pixels used by several windows get too little gradient: accumulate with += (each window adds "
                "its share), do not assign with ="
            )
        raise CheckFailed("some input pixels do not receive the gradient of every window that uses them", hints)


PROPERTIES = (every_window_sends_gradient_to_its_pixels,)


# ------------------------------------------------------------------ typical mistakes
def _reference_grads(case: Case, g: np.ndarray, x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xt, wt = Tensor(x, requires_grad=True), Tensor(weight, requires_grad=True)
    out = conv2d(xt, wt, stride=case.params["stride"], padding=case.params["padding"])
    dx, dw = autograd.grad(out, [xt, wt], grad_outputs=Tensor(g))
    return dx.numpy(), dw.numpy()


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    x, weight = case.arrays["x"], case.arrays["weight"]
    hints = []
    flipped_dx, _ = _reference_grads(case, g, x, weight[:, :, ::-1, ::-1].copy())
    if weight.shape[2] * weight.shape[3] > 1 and close(mine["x"], flipped_dx) and not close(mine["x"], want["x"]):
        hints.append(
            "∂L/∂x matches the kernel flipped: in the scatter form each G[n, o, h, w] goes back through the same "
            "W[o, c, i, j] that produced it; flip the kernel only when writing ∂L/∂x as a convolution of G"
        )
    if x.shape[0] > 1:
        _, first_dw = _reference_grads(case, g[:1], x[:1], weight)
        if close(mine["weight"], first_dw):
            hints.append("∂L/∂W matches the first sample only: the weight is shared by the batch, sum over all n")
    if not hints and mine["x"] is not None and mine["x"].shape == x.shape:
        wrong = ~np.isclose(mine["x"], want["x"], rtol=1e-6, atol=1e-9)
        shared = np.broadcast_to(_coverage(case) > 1, x.shape)
        if wrong.any() and not (wrong & ~shared).any():
            hints.append(
                "∂L/∂x is wrong only at pixels used by several windows: accumulate their gradients with +=, not ="
            )
    return hints
