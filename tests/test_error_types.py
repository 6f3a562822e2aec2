"""The engine errors that tools recognise have their own types (minigen/errors.py).

Each subclasses the built-in type raised before, so old ``except RuntimeError`` /
``except ValueError`` code still works, and carries the values a tool needs.
"""

from __future__ import annotations

import pytest

import minigen as mg
from minigen.errors import GradientShapeError, GraphFreedError, SumToShapeError, find_in_chain


def test_backward_twice_raises_graph_freed_error():
    x = mg.randn(3, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(GraphFreedError, match="second time") as info:
        y.backward()
    assert isinstance(info.value, RuntimeError) and info.value.op == "Sum"


def test_sum_to_a_shape_it_does_not_broadcast_from_keeps_the_shapes():
    with pytest.raises(SumToShapeError) as info:
        mg.randn(3, 4).sum_to((4, 3))
    assert isinstance(info.value, ValueError)
    original = find_in_chain(info.value, SumToShapeError)  # Function.apply re-raised it with the op's inputs
    assert original.shape == (3, 4) and original.target == (4, 3)


def test_gradient_of_the_wrong_shape_keeps_the_shapes():
    class Forgets(mg.Function):
        def forward(self, a):
            return a.data * 1.0

        def backward(self, grad):
            return grad.reshape(-1)

    x = mg.randn(2, 3, requires_grad=True)
    with pytest.raises(GradientShapeError) as info:
        Forgets.apply(x).sum().backward()
    error = info.value
    assert isinstance(error, RuntimeError)
    assert (error.op, error.index, error.shape, error.expected) == ("Forgets", 0, (6,), (2, 3))


def test_find_in_chain_returns_none_when_absent():
    assert find_in_chain(ValueError("x"), SumToShapeError) is None
