"""Exercise 2: batched matrix multiplication with broadcasting, and the unbroadcast step."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from minigen.exercises.checker import Case, CheckFailed, Op, Student, close
from minigen.ops.matmul import matmul
from minigen.tensor import Tensor
from minigen.testing import arrays, broadcastable_shapes

NAME = "matmul"
TITLE = "matmul with broadcasting: forward and backward (unbroadcast)"
TOPIC = "backpropagation through linear maps; broadcasting"

TEMPLATE = '''"""Exercise: batched matrix multiplication with broadcasting, forward and backward.

The maths
---------
For matrices, C = A B with A (n, k), B (k, m) and C (n, m). With G = ∂L/∂C:

    ∂L/∂A = G Bᵀ        (n, m)(m, k) -> (n, k)
    ∂L/∂B = Aᵀ G        (k, n)(n, m) -> (k, m)

(check the shapes: each gradient has the shape of its input).

Batches broadcast like NumPy: A (..., n, k) and B (..., k, m) multiply matrix by matrix
over their leading "batch" axes, which broadcast against each other. For example
A (2, 1, n, k) and B (3, k, m) give C (2, 3, n, m): B is reused for both values of the
first axis, A for all three values of the second.

The unbroadcast step: an input that was reused (broadcast) in forward receives the SUM
of the gradients of all its copies. So G Bᵀ, of shape (2, 3, n, k), must be summed over
the broadcast axes back to A's shape (2, 1, n, k). minigen has one helper for that:

    grad_a = (G @ Bᵀ).sum_to(a.shape)

Shapes
------
    a: (..., n, k)    b: (..., k, m)    both at least 2-D, batch axes broadcast
    output: (broadcast batch, n, m);  ∂L/∂a: a's shape;  ∂L/∂b: b's shape

How a minigen Function works
----------------------------
* forward(self, a, b) receives Tensors; compute on a.data, b.data with xp = a.xp (never
  numpy directly), keep what backward needs in self.saved and return the ARRAY.
* backward(self, grad) receives G = ∂L/∂C as a Tensor and returns (∂L/∂a, ∂L/∂b) as
  Tensors. Tensor operations you may use: g @ h, t.mT (transpose of the last two axes),
  t.sum_to(shape).

Check your work:
    python -m minigen.exercises check matmul THIS_FILE
"""

from minigen import Function, Tensor


class MatMul(Function):
    """C = A B, batched and broadcast;  ∂L/∂A = sum_to(G Bᵀ),  ∂L/∂B = sum_to(Aᵀ G)."""

    def forward(self, a: Tensor, b: Tensor):
        raise NotImplementedError("not implemented yet: MatMul.forward")

    def backward(self, grad: Tensor):
        raise NotImplementedError("not implemented yet: MatMul.backward")
'''


def reference_matmul(a: Tensor, b: Tensor) -> Tensor:
    return matmul(a, b)


OPS = (Op("MatMul", inputs=("a", "b"), differentiable=("a", "b"), reference=reference_matmul),)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A (batch_a, n, k) and B (batch_b, k, m) with broadcastable batch shapes (maybe none)."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(broadcastable_shapes(2, min_dims=0, max_dims=2, max_side=3))
    a = draw(arrays(batch_a + (n, k), low=-2.0, high=2.0))
    b = draw(arrays(batch_b + (k, m), low=-2.0, high=2.0))
    return Case({"a": a, "b": b})


_rng = np.random.default_rng(2)
EXAMPLES = [
    Case({"a": _rng.standard_normal((3, 4)), "b": _rng.standard_normal((4, 2))}),  # plain, not square
    Case({"a": _rng.standard_normal((2, 1, 3, 4)), "b": _rng.standard_normal((3, 4, 2))}),  # both broadcast
    Case({"a": _rng.standard_normal((2, 3, 3)), "b": _rng.standard_normal((3, 3))}),  # square, b reused
]


def broadcast_gradient_is_the_sum_over_copies(student: Student, case: Case) -> None:
    """The gradient of a broadcast input equals the sum of the gradients of its explicit copies."""
    a, b = case.arrays["a"], case.arrays["b"]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if batch == a.shape[:-2] and batch == b.shape[:-2]:
        return  # nothing is broadcast in this case
    g = student.upstream("MatMul", case)
    grads = student.vjp("MatMul", case, g)
    # The same product with the copies made explicit: nothing is broadcast any more.
    explicit = case.with_arrays(
        a=np.broadcast_to(a, batch + a.shape[-2:]).copy(), b=np.broadcast_to(b, batch + b.shape[-2:]).copy()
    )
    copies = student.vjp("MatMul", explicit, g)
    for name, x in (("a", a), ("b", b)):
        if grads[name] is None or copies[name] is None:
            continue
        lead = len(batch) + 2 - x.ndim
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(x.shape[:-2]) if s == 1 and batch[lead + i] != 1
        )
        summed = copies[name].sum(axis=axes, keepdims=True).reshape(x.shape)
        if grads[name].shape == x.shape and not np.allclose(grads[name], summed, atol=1e-9):
            raise CheckFailed(
                f"the gradient of {name} (broadcast in forward) is not the sum of the gradients of its copies",
                ["each copy of a broadcast input contributes its own gradient: sum them (grad.sum_to(shape))"],
            )


PROPERTIES = (broadcast_gradient_is_the_sum_over_copies,)


def diagnose_backward(op: str, case: Case, g: np.ndarray, mine: dict, want: dict) -> list[str]:
    """Recognise a transposed gradient (possible with square matrices)."""
    hints = []
    for name, formula in (("a", "G Bᵀ"), ("b", "Aᵀ G")):
        d = mine[name]
        if d is not None and d.shape[-1] == d.shape[-2] and close(np.swapaxes(d, -1, -2), want[name]):
            hints.append(f"∂L/∂{name} = {formula}; yours is its transpose (check which operand is transposed)")
    return hints
