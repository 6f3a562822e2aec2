"""Each backward's raw-array fast path (minigen/kernels) computes what its readable formula does.

A backward states the formula in minigen ops and reaches the fast path through one line,
taken when no graph is recorded. With ``kernels.fast_paths(False)`` every backward runs
its formula, so the formulas are gradient-checked here in first order too (the
``gradgradcheck`` tests run them with create_graph), and both paths must give the same
gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minigen as mg
import minigen.nn.functional as F
from minigen import kernels
from minigen.ops.activation import Gelu, GeluTanh, Softmax
from minigen.ops.conv import ConvTranspose2d, conv2d, conv_transpose2d
from minigen.ops.normalization import Normalize, batch_norm, group_norm, layer_norm
from minigen.testing import arrays, noncontiguous


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def gradients(fn, inputs: list[mg.Tensor], upstream: np.ndarray, device: str) -> list[np.ndarray]:
    for t in inputs:
        t.grad = None
    fn(*inputs).backward(on(device, upstream, requires_grad=False))
    return [t.grad.numpy() for t in inputs]


def both_paths_agree(fn, inputs: list[mg.Tensor], device: str, op: type) -> None:
    """The same gradients with the fast paths on and off; the op is in the graph; and the
    readable formula alone passes gradcheck."""
    out = fn(*inputs)
    assert _ops_in_graph(out) & {op.__name__}, f"{op.__name__} is not in the graph of this call"
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    fast = gradients(fn, inputs, upstream, device)
    with kernels.fast_paths(False):
        readable = gradients(fn, inputs, upstream, device)
        mg.gradcheck(fn, *inputs)
    for a, b in zip(fast, readable):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def _ops_in_graph(out: mg.Tensor) -> set[str]:
    names, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, mg.Tensor):
            continue
        names.add(type(node).__name__)
        stack.extend(node.parents)
    return names


def spread(shape) -> st.SearchStrategy:
    return noncontiguous(arrays(shape)).filter(lambda a: a.std() > 0.3)


@given(data=st.data(), dim=st.integers(-2, 1))
def test_softmax(device, data, dim):
    x = data.draw(arrays(st.sampled_from([(3, 4), (2, 5)])))
    both_paths_agree(lambda a: F.softmax(a, dim=dim), [on(device, x)], device, Softmax)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@given(data=st.data())
def test_gelu(device, approximate, data):
    x = data.draw(noncontiguous(arrays(st.sampled_from([(4,), (2, 3)]))))
    op = Gelu if approximate == "none" else GeluTanh
    both_paths_agree(lambda a: F.gelu(a, approximate=approximate), [on(device, x)], device, op)


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
@settings(max_examples=6)  # each example gradchecks up to 80 elements
@given(data=st.data(), affine=st.booleans())
def test_normalize(device, kind, data, affine):
    x = data.draw(spread((3, 4, 2, 2)))
    assume(x.reshape(3, 2, -1).std(axis=-1).min() > 0.2 and x.std(axis=(0, 2, 3)).min() > 0.2)
    params = []
    if affine:
        shape = (4, 2, 2) if kind == "layer" else (4,)
        params = [on(device, data.draw(arrays(shape, low=0.5, high=2.0))), on(device, data.draw(arrays(shape)))]

    def fn(a, *wb):
        if kind == "layer":
            return layer_norm(a, (4, 2, 2), *wb)
        if kind == "group":
            return group_norm(a, 2, *wb)
        return batch_norm(a, None, None, *wb, training=True)

    both_paths_agree(fn, [on(device, x), *params], device, Normalize)


@settings(max_examples=6)  # each example gradchecks 27 elements through three convolutions
@given(data=st.data(), stride=st.sampled_from([1, 2]), padding=st.integers(0, 1))
def test_conv_transpose2d(device, data, stride, padding):
    x = data.draw(arrays((2, 2, 2, 2)))
    w = data.draw(arrays((2, 1, 3, 2)))
    b = data.draw(arrays((1,)))

    def fn(a, weight, bias):
        return conv_transpose2d(a, weight, bias, stride=stride, padding=padding)

    both_paths_agree(fn, [on(device, x), on(device, w), on(device, b)], device, ConvTranspose2d)


def test_conv2d_backward_runs_through_conv_transpose2d_fast_path(device):
    """conv2d's ∂L/∂x is a ConvTranspose2d node: its second-order graph works either way."""
    rng = np.random.default_rng(0)
    x, w = on(device, rng.standard_normal((2, 2, 5, 5))), on(device, rng.standard_normal((3, 2, 3, 3)))
    mg.gradgradcheck(lambda a, k: conv2d(a, k, stride=2, padding=1), x, w)


def test_the_switch_and_grad_mode_decide_the_path():
    with mg.no_grad():  # as during backward with create_graph=False
        assert kernels.fast_path()
        with pytest.raises(KeyError), kernels.fast_paths(False):
            assert not kernels.fast_path()
            raise KeyError("an error inside the block")
        assert kernels.fast_path()  # restored after the error
    assert not kernels.fast_path()  # a graph is being recorded


def test_no_fast_path_while_a_graph_is_recorded(device):
    """create_graph=True must run the formula in minigen ops: a raw array is a constant."""
    x = on(device, np.array([0.3, -1.2, 2.0]))
    (g,) = mg.grad(F.gelu(x).sum(), [x], create_graph=True)
    assert g.requires_grad  # a graph of minigen ops, differentiable again
    (gg,) = mg.grad(g.sum(), [x])
    assert np.all(np.abs(gg.numpy()) > 0)
