"""Exercise 5: the backward of 2-D max pooling (the gradient is routed one-hot)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.pool import max_pool2d
from minigen.tensor import Tensor
from minigen.testing import distinct_arrays

NAME = "max_pool"
TITLE = "max-pool backward: route the gradient to each window's maximum"
TOPIC = "convolutional networks: pooling"

TEMPLATE = '''"""Exercise: the backward pass of 2-D max pooling (the forward is given).

The maths
---------
A k×k window moves over each channel of x (N, C, H, W) with stride s:

    y[n, c, h, w] = max_{0 ≤ i, j < k}  x[n, c, h·s + i, w·s + j]

    H_out = ⌊(H − k) / s⌋ + 1,   W_out likewise.

The max is a selection: only the element that won the window affects y[n, c, h, w],
so the gradient is ROUTED, one-hot, to that element:

    ∂L/∂x[n, c, h·s + i*, w·s + j*]  +=  G[n, c, h, w]     (i*, j*) = the window's argmax

and every other element of the window gets nothing from it. It is not spread over the
window (that is average pooling). With overlapping windows (s < k) one element can win
several windows and then receives the SUM of their gradients: use +=, not =.

The forward below records, for every output, which offset t = i·k + j won its window
(``argmax``, shape (N, C, H_out, W_out)). Like the forward, loop over the offsets
(i, j) and use the strided slice x[:, :, i : i + s·(H_out−1) + 1 : s, j : ... : s].

Shapes
------
    x: (N, C, H, W)     y, G = ∂L/∂y: (N, C, H_out, W_out)     ∂L/∂x: (N, C, H, W)

Useful: xp = grad.xp (never numpy directly), xp.zeros(shape, dtype=...),
xp.where(condition, a, b).

Check your work:
    python -m minigen.exercises check max_pool THIS_FILE
"""

from minigen import Function, Tensor


class MaxPool2d(Function):
    """y = the maximum of each k×k window (stride s);  ∂L/∂x = G routed to each window's argmax."""

    def forward(self, x: Tensor, kernel_size: int = 2, stride: int = 2):
        xp = x.xp
        k, s = kernel_size, stride
        n, c, h, w = x.shape
        h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
        y = xp.full((n, c, h_out, w_out), -xp.inf, dtype=x.dtype)
        argmax = xp.zeros((n, c, h_out, w_out), dtype=xp.int64)
        for i in range(k):
            for j in range(k):
                candidate = x.data[:, :, i : i + s * (h_out - 1) + 1 : s, j : j + s * (w_out - 1) + 1 : s]
                wins = candidate > y  # strictly greater: on a tie the first offset keeps the max
                y = xp.where(wins, candidate, y)
                argmax = xp.where(wins, i * k + j, argmax)
        self.saved = (argmax, x.shape, k, s)
        return y

    def backward(self, grad: Tensor):
        argmax, x_shape, k, s = self.saved
        raise NotImplementedError("not implemented yet: MaxPool2d.backward")
'''


def reference_max_pool(x: Tensor, kernel_size: int, stride: int) -> Tensor:
    return max_pool2d(x, kernel_size, stride)


OPS = (
    Op(
        "MaxPool2d",
        inputs=("x",),
        differentiable=("x",),
        reference=reference_max_pool,
        params=("kernel_size", "stride"),
    ),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Distinct values (no ties), k = 2..3, stride 1..k, images up to 6×6."""
    k = draw(st.integers(2, 3))
    stride = draw(st.integers(1, k))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(k, 6)), draw(st.integers(k, 6))
    x = draw(distinct_arrays((n, c, h, w), gap=0.02))
    return Case({"x": x}, {"kernel_size": k, "stride": stride})


def _peaked() -> np.ndarray:
    """A 5×5 image whose largest value sits in the middle: it wins all nine 3×3 windows."""
    x = np.random.default_rng(5).permutation(25).reshape(1, 1, 5, 5) / 10.0
    x[0, 0, 2, 2] = 3.0
    return x


EXAMPLES = [
    Case({"x": np.random.default_rng(6).permutation(32).reshape(2, 1, 4, 4) / 10.0}, {"kernel_size": 2, "stride": 2}),
    Case({"x": _peaked()}, {"kernel_size": 3, "stride": 1}),  # overlapping windows share a winner
]


def _wins(case: Case) -> np.ndarray:
    """How many windows each input element wins (the reference's routing with G = 1)."""
    k, s = case.params["kernel_size"], case.params["stride"]
    x = case.arrays["x"]
    h_out, w_out = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    count = np.zeros(x.shape)
    for h in range(h_out):
        for w in range(w_out):
            window = x[:, :, h * s : h * s + k, w * s : w * s + k].reshape(x.shape[0], x.shape[1], -1)
            best = window.argmax(axis=-1)
            for n in range(x.shape[0]):
                for c in range(x.shape[1]):
                    i, j = divmod(int(best[n, c]), k)
                    count[n, c, h * s + i, w * s + j] += 1
    return count


# ------------------------------------------------------------------------- properties
def gradient_is_routed_one_hot(student: Student, case: Case) -> None:
    """The gradient of one output goes, whole, to the single element that won its window."""
    k, s = case.params["kernel_size"], case.params["stride"]
    x = case.arrays["x"]
    y_shape = student.reference("MaxPool2d", case).shape
    for flat in range(min(int(np.prod(y_shape)), 6)):  # a few outputs, one at a time
        position = np.unravel_index(flat, y_shape)
        g = np.zeros(y_shape)
        g[position] = 1.0
        dx = student.vjp("MaxPool2d", case, g)["x"]
        if dx is None or dx.shape != x.shape:
            return  # the gradient-shape check reports this
        n, c, h, w = (int(v) for v in position)
        window = x[n, c, h * s : h * s + k, w * s : w * s + k]
        i, j = np.unravel_index(int(window.argmax()), window.shape)
        want = np.zeros(x.shape)
        want[n, c, h * s + i, w * s + j] = 1.0
        if not np.allclose(dx, want):
            touched = int((np.abs(dx) > 1e-12).sum())
            hints = []
            if touched == k * k and np.allclose(dx[np.abs(dx) > 1e-12], 1.0 / (k * k)):
                hints.append(
                    "you spread the gradient evenly over the window (the average-pool backward); max pooling "
                    "sends all of it to the window's maximum"
                )
            elif touched == 0:
                hints.append(
                    "the gradient was lost: writing dx[...] = ... for a later offset overwrites what an earlier "
                    "offset wrote; accumulate with += instead"
                )
            elif touched == 1:
                hints.append("the gradient went to one element, but not to the window's maximum: check the indices")
            raise CheckFailed(
                f"the gradient of output {tuple(int(v) for v in position)} reached {touched} input element(s); "
                f"it must go only to its window's maximum at {(n, c, h * s + int(i), w * s + int(j))}",
                hints,
            )


PROPERTIES = (gradient_is_routed_one_hot,)


# ------------------------------------------------------------------ typical mistakes
def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    dx = mine["x"]
    if dx is None or dx.shape != want["x"].shape:
        return []
    wrong = ~np.isclose(dx, want["x"], rtol=1e-6, atol=1e-9)
    if wrong.any() and not (wrong & (_wins(case) < 2)).any():
        return [
            "∂L/∂x is wrong only at elements that win several (overlapping) windows: they must receive the sum "
            "of those windows' gradients, so accumulate with +=, not ="
        ]
    k = case.params["kernel_size"]
    if case.params["stride"] == k:  # non-overlapping: the average-pool gradient is easy to recognise
        spread = np.repeat(np.repeat(g, k, axis=2), k, axis=3) / (k * k)
        spread_full = np.zeros_like(dx)
        spread_full[..., : spread.shape[2], : spread.shape[3]] = spread
        if close(dx, spread_full):
            return ["you spread G evenly over each window (average pooling); max pooling routes it to the maximum"]
    return []
