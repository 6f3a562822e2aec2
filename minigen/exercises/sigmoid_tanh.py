"""Exercise 1: the forward and backward of sigmoid and tanh (lecture: backpropagation).

This is the simplest exercise module; the others follow the same layout (see
``minigen/exercises/checker.py`` for what each name is used for).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.activation import sigmoid, tanh
from minigen.tensor import Tensor
from minigen.testing import arrays, shapes

NAME = "sigmoid_tanh"
TITLE = "sigmoid and tanh: forward and backward"
TOPIC = "backpropagation through elementwise functions"

TEMPLATE = '''"""Exercise: sigmoid and tanh, forward and backward.

The maths
---------
    σ(x)    = 1 / (1 + e^(−x)),                 σ'(x)    = σ(x) (1 − σ(x))
    tanh(x) = (e^x − e^(−x)) / (e^x + e^(−x)),  tanh'(x) = 1 − tanh²(x)

Both act elementwise, so the chain rule is elementwise too: with y = f(x) and the
upstream gradient g = ∂L/∂y,

    ∂L/∂x = g ⊙ f'(x).

Both derivatives are cheapest written with the OUTPUT y (σ' = y(1 − y), tanh' = 1 − y²),
so save y in forward.

Numerical stability: e^(−x) overflows for x = −1000 (float64) or x = −100 (float32).
Use a form that never overflows, e.g. σ(x) = ½ (1 + tanh(x/2)), or treat x ≥ 0 and
x < 0 separately (σ(x) = e^x / (1 + e^x) for x < 0).

Shapes
------
    x: any shape (...)      y, ∂L/∂x: the same shape as x

How a minigen Function works
----------------------------
* forward(self, x) receives Tensors. Compute on the raw array x.data with the array
  module xp = x.xp (NumPy on the CPU, CuPy on a GPU; never call numpy directly on tensor
  data), keep what backward needs in self.saved, and return the result ARRAY.
* backward(self, grad) receives g = ∂L/∂y as a Tensor and returns ∂L/∂x as a Tensor
  (wrap an array with Tensor(array), or compute with Tensor operations).

Check your work:
    python -m minigen.exercises check sigmoid_tanh THIS_FILE
"""

from minigen import Function, Tensor


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e^(−x));  ∂L/∂x = g ⊙ y (1 − y)."""

    def forward(self, x: Tensor):
        raise NotImplementedError("not implemented yet: Sigmoid.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: Sigmoid.backward")


class Tanh(Function):
    """y = tanh(x);  ∂L/∂x = g ⊙ (1 − y²)."""

    def forward(self, x: Tensor):
        raise NotImplementedError("not implemented yet: Tanh.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: Tanh.backward")
'''


# ------------------------------------------------------------------------ references
def reference_sigmoid(x: Tensor) -> Tensor:
    return sigmoid(x)


def reference_tanh(x: Tensor) -> Tensor:
    return tanh(x)


OPS = (
    Op("Sigmoid", inputs=("x",), differentiable=("x",), reference=reference_sigmoid),
    Op("Tanh", inputs=("x",), differentiable=("x",), reference=reference_tanh),
)


# ----------------------------------------------------------------------------- inputs
@st.composite
def cases(draw: st.DrawFn) -> Case:
    """x of 1 to 3 dimensions, values in [−4, 4]."""
    return Case({"x": draw(arrays(shapes(1, 3, max_side=4), low=-4.0, high=4.0))})


EXAMPLES = [Case({"x": np.random.default_rng(0).uniform(-3, 3, (3, 4))})]


# ------------------------------------------------------------------------- properties
def symmetric(student: Student, case: Case) -> None:
    """σ(−x) = 1 − σ(x) and tanh(−x) = −tanh(x)."""
    x = case.arrays["x"]
    s, s_neg = student.forward("Sigmoid", case), student.forward("Sigmoid", case.with_arrays(x=-x))
    if not np.allclose(s_neg, 1.0 - s, atol=1e-12):
        raise CheckFailed("σ(−x) ≠ 1 − σ(x)")
    t, t_neg = student.forward("Tanh", case), student.forward("Tanh", case.with_arrays(x=-x))
    if not np.allclose(t_neg, -t, atol=1e-12):
        raise CheckFailed("tanh(−x) ≠ −tanh(x)")


def stable_for_large_inputs(student: Student, case: Case) -> None:
    """Inputs of ±1000 (float64) and ±100 (float32) give finite values, without overflow."""
    for dtype, big in ((np.float64, 1000.0), (np.float32, 100.0)):
        x = np.array([-big, -1.0, 0.0, 1.0, big])
        extreme = Case({"x": x})
        for name, want in (("Sigmoid", [0.0, 0.26894142, 0.5, 0.73105858, 1.0]), ("Tanh", np.tanh(x))):
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                try:
                    y = student.forward(name, extreme, dtype=dtype)
                except FloatingPointError as error:
                    raise CheckFailed(
                        f"{name} overflows for inputs like ±{big:g} ({np.dtype(dtype).name}): {error}",
                        [
                            "e^(−x) overflows for large negative x: use a form that never overflows, e.g. "
                            "σ(x) = ½(1 + tanh(x/2)), or compute e^(−|x|) and treat x ≥ 0 and x < 0 separately"
                        ],
                        case=f"x = {x.tolist()} ({np.dtype(dtype).name})",
                    ) from None
            if not np.allclose(y, want, atol=1e-6):
                raise CheckFailed(
                    f"{name} of {x.tolist()} gives {y.tolist()}, expected about {list(want)}",
                    case=f"x = {x.tolist()} ({np.dtype(dtype).name})",
                )


PROPERTIES = (symmetric, stable_for_large_inputs)


# ------------------------------------------------------------------ typical mistakes
def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    """Recognise f'(x) written with x where the formula needs the output y."""
    x, dx = case.arrays["x"], mine["x"]
    if op == "Tanh" and close(dx, g * (1.0 - x * x)):
        return ["you computed g ⊙ (1 − x²): the derivative is 1 − y² with the OUTPUT y = tanh(x), not the input x"]
    if op == "Sigmoid" and close(dx, g * x * (1.0 - x)):
        return ["you computed g ⊙ x(1 − x): the derivative is y(1 − y) with the OUTPUT y = σ(x), not the input x"]
    if op == "Sigmoid":
        y = 0.5 * (1.0 + np.tanh(0.5 * x))
        if close(dx, g * y):
            return ["you computed g ⊙ y: the derivative of σ is y(1 − y), the factor (1 − y) is missing"]
    return []
