"""Property tests for the primitive ops: forward against NumPy, gradcheck, gradgradcheck.

Each test runs on every device of the ``device`` fixture (cpu, the stand-in GPU, cuda).
Values come from ``minigen.testing`` strategies that avoid kinks, ties and zero
denominators, so the default tolerances hold.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.testing import (
    arrays,
    away_from,
    broadcastable_shapes,
    distinct_arrays,
    matmul_shapes,
    noncontiguous,
    positive_arrays,
    shapes,
)


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(array, device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


def check_op(fn, np_fn, device, *arrays_in, second_order: bool = True, rtol: float = 1e-6):
    """Forward equals NumPy (float32 and float64), then gradcheck and gradgradcheck."""
    expected = np_fn(*arrays_in)
    out64 = fn(*(on(device, a) for a in arrays_in))
    np.testing.assert_allclose(host(out64), expected, rtol=rtol, atol=1e-9)
    out32 = fn(*(on(device, a.astype(np.float32), requires_grad=False) for a in arrays_in))
    assert out32.dtype == np.float32, "float32 inputs must stay float32"
    np.testing.assert_allclose(host(out32), expected, rtol=1e-4, atol=1e-4)
    inputs = [on(device, a) for a in arrays_in]
    mg.gradcheck(fn, *inputs)
    if second_order:
        mg.gradgradcheck(fn, *inputs)


# ------------------------------------------------------------------- elementwise, unary
UNARY = {
    "neg": (lambda x: -x, np.negative, arrays),
    "exp": (lambda x: x.exp(), np.exp, arrays),
    "log": (lambda x: x.log(), np.log, positive_arrays),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, positive_arrays),
    "abs": (lambda x: x.abs(), np.abs, away_from),
    "sin": (lambda x: x.sin(), np.sin, arrays),
    "cos": (lambda x: x.cos(), np.cos, arrays),
    "tanh": (lambda x: x.tanh(), np.tanh, arrays),
    "sigmoid": (lambda x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), arrays),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0), away_from),
    "pow_scalar": (lambda x: x**3, lambda a: a**3, arrays),
    "pow_fraction": (lambda x: x**0.5, np.sqrt, positive_arrays),
    "square": (lambda x: x**2, np.square, arrays),
    "reciprocal": (lambda x: 1.0 / x, np.reciprocal, positive_arrays),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_ops(name, device, data):
    fn, np_fn, strategy = UNARY[name]
    x = data.draw(strategy(shapes()))
    check_op(fn, np_fn, device, x)


@given(data=st.data(), bounds=st.sampled_from([(-1.0, 1.0), (None, 0.5), (-0.5, None)]))
def test_clamp(device, data, bounds):
    low, high = bounds
    kinks = [b for b in bounds if b is not None]
    x = data.draw(away_from(shapes(), points=kinks))
    check_op(lambda t: t.clamp(low, high), lambda a: np.clip(a, low, high), device, x)


# ---------------------------------------------------------------- elementwise, binary
BINARY = {
    "add": (lambda a, b: a + b, np.add, arrays),
    "sub": (lambda a, b: a - b, np.subtract, arrays),
    "mul": (lambda a, b: a * b, np.multiply, arrays),
    "div": (lambda a, b: a / b, np.divide, positive_arrays),
    "pow_tensor": (lambda a, b: a**b, np.power, positive_arrays),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_ops_broadcast(name, device, data):
    fn, np_fn, strategy = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_shapes())
    a = data.draw(strategy(shape_a))
    b = data.draw(strategy(shape_b))
    check_op(fn, np_fn, device, a, b)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
@given(data=st.data())
def test_maximum_minimum(op, device, data):
    shape_a, shape_b = data.draw(broadcastable_shapes())
    size = int(np.prod(shape_a)) + int(np.prod(shape_b))
    values = data.draw(distinct_arrays((size,)))  # no ties between a and b
    a = values[: int(np.prod(shape_a))].reshape(shape_a)
    b = values[int(np.prod(shape_a)) :].reshape(shape_b)
    check_op(getattr(mg, op), getattr(np, op), device, a, b)


def test_maximum_splits_gradient_at_ties(device):
    a = on(device, np.array([1.0, 2.0, 3.0]))
    b = on(device, np.array([1.0, 5.0, 0.0]))
    mg.maximum(a, b).sum().backward()
    np.testing.assert_allclose(host(a.grad), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(host(b.grad), [0.5, 1.0, 0.0])


@given(data=st.data())
def test_where(device, data):
    shape_c, shape_a, shape_b = data.draw(broadcastable_shapes(3))
    cond = data.draw(arrays(shape_c)) > 0
    a, b = data.draw(arrays(shape_a)), data.draw(arrays(shape_b))
    condition = mg.Tensor(cond, device=device)
    check_op(lambda x, y: mg.where(condition, x, y), lambda x, y: np.where(cond, x, y), device, a, b)


def test_scalars_keep_float32():
    x = mg.ones(3)
    for y in (x * 2.5, 2.5 * x, x + 1, x / 3.0, x - 0.5, x**2, 2.0**x, x.clamp(0.5, 2.0)):
        assert y.dtype == np.float32


# ----------------------------------------------------------------------- reductions
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@given(data=st.data(), keepdim=st.booleans())
def test_sum_mean(reduction, device, data, keepdim):
    x = data.draw(noncontiguous(arrays(shapes())))
    dim = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1) | st.just(tuple(range(x.ndim))[:2]))
    np_dim = dim if not isinstance(dim, int) else dim % x.ndim
    check_op(
        lambda t: getattr(t, reduction)(dim=dim, keepdim=keepdim),
        lambda a: getattr(np, reduction)(a, axis=np_dim, keepdims=keepdim),
        device,
        x,
    )


@given(data=st.data(), keepdim=st.booleans())
def test_max_min_with_distinct_values(device, data, keepdim):
    x = data.draw(distinct_arrays(shapes()))
    dim = data.draw(st.integers(0, x.ndim - 1))
    check_op(lambda t: t.max(dim=dim, keepdim=keepdim).values, lambda a: a.max(axis=dim, keepdims=keepdim), device, x)
    check_op(lambda t: t.min(dim=dim, keepdim=keepdim).values, lambda a: a.min(axis=dim, keepdims=keepdim), device, x)
    check_op(lambda t: t.max(), lambda a: a.max(), device, x)


def test_max_tie_rule_splits_equally(device):
    x = on(device, np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]))
    out = x.max(dim=1)
    out.values.sum().backward()
    np.testing.assert_allclose(host(x.grad), [[0, 0.5, 0.5], [1, 0, 0]])
    np.testing.assert_array_equal(out.indices.numpy(), [1, 0])  # indices: the first maximum


@given(data=st.data(), keepdim=st.booleans())
def test_var(device, data, keepdim):
    x = data.draw(arrays(shapes(min_side=2)))
    dim = data.draw(st.none() | st.integers(0, x.ndim - 1))
    check_op(lambda t: t.var(dim=dim, keepdim=keepdim), lambda a: a.var(axis=dim, ddof=1, keepdims=keepdim), device, x)


@given(data=st.data(), keepdim=st.booleans())
def test_logsumexp(device, data, keepdim):
    x = data.draw(arrays(shapes()))
    dim = data.draw(st.integers(0, x.ndim - 1))

    def reference(a):
        m = a.max(axis=dim, keepdims=True)
        out = np.log(np.exp(a - m).sum(axis=dim, keepdims=True)) + m
        return out if keepdim else out.squeeze(dim)

    check_op(lambda t: t.logsumexp(dim=dim, keepdim=keepdim), reference, device, x)


def test_logsumexp_is_stable_for_huge_logits():
    x = mg.tensor([[1e4, 1e4 - 1.0, -1e4]])
    out = x.logsumexp(dim=1)
    assert np.isfinite(out.numpy()).all()
    np.testing.assert_allclose(out.numpy(), [1e4 + np.log1p(np.exp(-1.0))], rtol=1e-6)


# --------------------------------------------------------------------------- matmul
@given(data=st.data())
def test_matmul_batched_broadcast_and_vectors(device, data):
    shape_a, shape_b = data.draw(matmul_shapes())
    a, b = data.draw(arrays(shape_a)), data.draw(arrays(shape_b))
    check_op(lambda x, y: x @ y, np.matmul, device, a, b)


# ------------------------------------------------------------------------ shape ops
@given(data=st.data())
def test_reshape_flatten_squeeze_unsqueeze(device, data):
    x = data.draw(noncontiguous(arrays(shapes())))
    check_op(lambda t: t.reshape(-1), lambda a: a.reshape(-1), device, x)
    check_op(lambda t: t.flatten(), lambda a: a.reshape(-1), device, x)
    check_op(lambda t: t.unsqueeze(1).squeeze(1), lambda a: a, device, x)
    check_op(lambda t: t.unsqueeze(0), lambda a: a[None], device, x)


@given(data=st.data())
def test_permute_transpose(device, data):
    x = data.draw(arrays(shapes(min_dims=2)))
    dims = tuple(data.draw(st.permutations(range(x.ndim))))
    check_op(lambda t: t.permute(dims), lambda a: a.transpose(dims), device, x)
    check_op(lambda t: t.transpose(0, -1), lambda a: np.swapaxes(a, 0, -1), device, x)


@given(data=st.data())
def test_expand_and_sum_to(device, data):
    small, big = data.draw(broadcastable_shapes())
    target = np.broadcast_shapes(small, big)
    x = data.draw(arrays(small))
    check_op(lambda t: t.expand(target), lambda a: np.broadcast_to(a, target), device, x)
    y = data.draw(arrays(target))
    summed = np.sum(y, axis=tuple(range(len(target) - len(small))))
    summed = summed.sum(axis=tuple(i for i, s in enumerate(small) if s == 1), keepdims=True).reshape(small)
    check_op(lambda t: t.sum_to(small), lambda a: summed, device, y)


# ------------------------------------------------------------------------- indexing
@given(data=st.data())
def test_basic_indexing(device, data):
    x = data.draw(arrays(shapes(min_dims=2, min_side=2)))
    key = (slice(None, None, 2), 0) if data.draw(st.booleans()) else (Ellipsis, slice(1, None), None)
    check_op(lambda t: t[key], lambda a: a[key], device, x)


@given(data=st.data())
def test_advanced_indexing_with_repeats(device, data):
    x = data.draw(arrays(shapes(min_dims=2)))
    idx = np.array(data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=6)))
    index = mg.Tensor(idx, device=device)
    check_op(lambda t: t[index], lambda a: a[idx], device, x)
    mask = data.draw(arrays(x.shape)) > 0
    mask_t = mg.Tensor(mask, device=device)
    check_op(lambda t: t[mask_t], lambda a: a[mask], device, x)


def test_repeated_index_accumulates_gradient(device):
    x = on(device, np.arange(4.0))
    x[mg.tensor([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(host(x.grad), [0, 3, 0, 1])


# ------------------------------------------------------------------- join and split
@given(data=st.data())
def test_cat_stack_split_chunk(device, data):
    shape = data.draw(shapes(min_dims=1))
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape))
    dim = data.draw(st.integers(0, len(shape) - 1))
    check_op(lambda x, y: mg.cat([x, y * 2], dim=dim), lambda x, y: np.concatenate([x, y * 2], axis=dim), device, a, b)
    check_op(lambda x, y: mg.stack([x, y], dim=dim), lambda x, y: np.stack([x, y], axis=dim), device, a, b)
    check_op(lambda x: x.split(1, dim=dim)[-1], lambda x: np.split(x, x.shape[dim], axis=dim)[-1], device, a)
    check_op(lambda x: x.chunk(2, dim=dim)[0], lambda x: np.array_split(x, 2, axis=dim)[0], device, a)


@given(data=st.data())
def test_pad(device, data):
    x = data.draw(arrays(shapes(min_dims=2)))
    widths = data.draw(st.lists(st.integers(0, 2), min_size=2, max_size=4).filter(lambda w: len(w) % 2 == 0))
    np_widths = [(0, 0)] * x.ndim
    for i in range(len(widths) // 2):
        np_widths[x.ndim - 1 - i] = (widths[2 * i], widths[2 * i + 1])
    check_op(lambda t: mg.pad(t, widths, value=0.5), lambda a: np.pad(a, np_widths, constant_values=0.5), device, x)


# ------------------------------------------------------------------ device transfer
def test_to_device_and_dtype_are_differentiable(device):
    x = on("cpu", np.array([1.0, 2.0, 3.0]))
    y = x.to(device).to(mg.float32) * 2
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])
    assert x.grad.dtype == np.float64 and x.grad.device == "cpu"


def test_sigmoid_is_accurate_far_into_both_tails():
    x = np.array([-700.0, -40.0, -30.0, -1.0, 0.0, 30.0, 700.0])
    expected = np.exp(-np.logaddexp(0.0, -x))
    np.testing.assert_allclose(mg.tensor(x).sigmoid().numpy(), expected, rtol=1e-14, atol=0)
