"""Normalisation: layer, group and batch norm against NumPy, gradcheck, gradgradcheck,
running statistics, error messages, and PyTorch as oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.normalization import batch_norm, group_norm, layer_norm
from minigen.testing import arrays, noncontiguous


def on(device: str, array: np.ndarray, requires_grad: bool = False) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


def np_standardize(a: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = a.mean(axis=axes, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=axes, keepdims=True)
    return (a - mean) / np.sqrt(var + eps)


# Values spread enough that the variance is well away from zero (no ill-conditioned σ).
def spread(shape) -> st.SearchStrategy:
    return noncontiguous(arrays(shape, low=-3.0, high=3.0)).filter(lambda a: a.std() > 0.3)


# --------------------------------------------------------------------------- layer norm
@given(data=st.data(), k=st.integers(1, 2), affine=st.booleans())
def test_layer_norm(device, data, k, affine):
    lead = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    normalized = tuple(data.draw(st.lists(st.integers(2, 4), min_size=k, max_size=k)))
    x = data.draw(spread(tuple(lead) + normalized))
    axes = tuple(range(x.ndim - k, x.ndim))
    assume(x.std(axis=axes).min() > 0.2)  # every normalised slice is spread out (σ not near 0)
    w = data.draw(arrays(st.just(normalized), low=0.5, high=2.0)) if affine else None
    b = data.draw(arrays(st.just(normalized))) if affine else None
    expected = np_standardize(x, axes, 1e-5)
    if affine:
        expected = expected * w + b
    params = [] if not affine else [on(device, w, True), on(device, b, True)]

    def fn(a, *wb):
        return layer_norm(a, normalized, *wb)

    np.testing.assert_allclose(host(fn(on(device, x), *params)), expected, rtol=1e-9, atol=1e-10)
    out32 = layer_norm(on(device, x.astype(np.float32)), normalized)
    assert out32.dtype == np.float32
    mg.gradcheck(fn, on(device, x, True), *params)
    mg.gradgradcheck(fn, on(device, x, True), *params)


def test_layer_norm_backward_formula(device):
    """∂L/∂x = (1/σ)(g − mean(g) − x̂·mean(g·x̂)), checked directly."""
    rng = np.random.default_rng(0)
    a, g = rng.standard_normal((2, 3, 6))
    x = on(device, a, True)
    layer_norm(x, 6).backward(on(device, g))
    sigma = np.sqrt(a.var(axis=-1, keepdims=True) + 1e-5)
    xhat = (a - a.mean(axis=-1, keepdims=True)) / sigma
    expected = (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) / sigma
    np.testing.assert_allclose(host(x.grad), expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- group norm
@given(data=st.data(), groups=st.sampled_from([1, 2, 4]), affine=st.booleans())
def test_group_norm(device, data, groups, affine):
    n = data.draw(st.integers(1, 2))
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    x = data.draw(spread((n, 4) + spatial))
    group_std = x.reshape(n, groups, -1).std(axis=2)
    assume(x.size // (n * groups) == 1 or group_std.min() > 0.2)  # σ of every group away from 0
    w = data.draw(arrays(st.just((4,)), low=0.5, high=2.0)) if affine else None
    b = data.draw(arrays(st.just((4,)))) if affine else None
    grouped = x.reshape(n, groups, -1)
    expected = np_standardize(grouped, (2,), 1e-5).reshape(x.shape)
    if affine:
        shape = (1, 4) + (1,) * len(spatial)
        expected = expected * w.reshape(shape) + b.reshape(shape)
    params = [] if not affine else [on(device, w, True), on(device, b, True)]

    def fn(a, *wb):
        return group_norm(a, groups, *wb)

    np.testing.assert_allclose(host(fn(on(device, x), *params)), expected, rtol=1e-9, atol=1e-10)
    mg.gradcheck(fn, on(device, x, True), *params)
    mg.gradgradcheck(fn, on(device, x, True), *params)


# --------------------------------------------------------------------------- batch norm
@given(data=st.data(), affine=st.booleans())
def test_batch_norm_training(device, data, affine):
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    n = data.draw(st.integers(2, 3))
    x = data.draw(spread((n, 3) + spatial))
    axes = (0,) + tuple(range(2, x.ndim))
    assume(x.std(axis=axes).min() > 0.2)  # σ of every channel away from 0
    w = data.draw(arrays(st.just((3,)), low=0.5, high=2.0)) if affine else None
    b = data.draw(arrays(st.just((3,)))) if affine else None
    expected = np_standardize(x, axes, 1e-5)
    if affine:
        shape = (1, 3) + (1,) * len(spatial)
        expected = expected * w.reshape(shape) + b.reshape(shape)
    params = [] if not affine else [on(device, w, True), on(device, b, True)]

    def fn(a, *wb):
        return batch_norm(a, None, None, *wb, training=True)

    np.testing.assert_allclose(host(fn(on(device, x), *params)), expected, rtol=1e-9, atol=1e-10)
    mg.gradcheck(fn, on(device, x, True), *params)
    mg.gradgradcheck(fn, on(device, x, True), *params)


def test_batch_norm_running_statistics(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    rm, rv = on(device, np.zeros(3)), on(device, np.ones(3))
    batch_norm(on(device, x), rm, rv, training=True, momentum=0.25)
    count = x.size // 3
    mean = x.mean(axis=(0, 2, 3))
    unbiased = x.var(axis=(0, 2, 3)) * count / (count - 1)
    np.testing.assert_allclose(host(rm), 0.75 * 0 + 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(host(rv), 0.75 * 1 + 0.25 * unbiased, rtol=1e-12)
    # Evaluation uses the running estimates, not the batch's own statistics.
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    y = batch_norm(on(device, x), rm, rv, on(device, w), on(device, b), training=False)
    shape = (1, 3, 1, 1)
    expected = (x - host(rm).reshape(shape)) / np.sqrt(host(rv).reshape(shape) + 1e-5) * w.reshape(shape)
    np.testing.assert_allclose(host(y), expected + b.reshape(shape), rtol=1e-12)
    before = host(rm).copy()
    batch_norm(on(device, x), rm, rv, training=False)
    np.testing.assert_array_equal(host(rm), before)  # eval leaves the running statistics alone


def test_batch_norm_eval_gradients(device):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 2))
    rm, rv = on(device, rng.standard_normal(3)), on(device, rng.uniform(0.5, 2, 3))
    w, b = on(device, rng.uniform(0.5, 2, 3), True), on(device, rng.standard_normal(3), True)
    mg.gradcheck(lambda a, w_, b_: batch_norm(a, rm, rv, w_, b_, training=False), on(device, x, True), w, b)


def test_batch_norm_keeps_float32_running_stats(device):
    x = on(device, np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32))
    rm, rv = on(device, np.zeros(2, np.float32)), on(device, np.ones(2, np.float32))
    y = batch_norm(x, rm, rv, training=True)
    assert y.dtype == np.float32 and rm.dtype == np.float32 and rv.dtype == np.float32


# ------------------------------------------------------------------------------ errors
def test_error_messages():
    x = mg.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(3,\) must match.*\(2, 3, 4\)"):
        layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\), expected \(4,\)"):
        layer_norm(x, 4, weight=mg.ones(3))
    with pytest.raises(ValueError, match=r"group_norm: num_groups=2 must divide the number of channels 3"):
        group_norm(x, 2)
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel when training"):
        batch_norm(mg.zeros(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean has shape \(2,\), expected \(3,\)"):
        batch_norm(x, mg.zeros(2), mg.ones(2))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm(x, None, None, training=False)
    with pytest.raises(RuntimeError, match="batch_norm: running_mean is on standin but the input is on cpu"):
        batch_norm(x, mg.zeros(3).to("standin"), mg.ones(3).to("standin"), training=True)


# ------------------------------------------------------------------------ PyTorch oracle
@pytest.mark.torch
@pytest.mark.parametrize("affine", [False, True])
def test_layer_and_group_norm_against_pytorch(affine):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 4, 3, 5))
    g = rng.standard_normal(a.shape)
    cases = [
        (
            lambda x, w, b: layer_norm(x, (3, 5), w, b, eps=1e-3),
            lambda x, w, b: F.layer_norm(x, (3, 5), w, b, eps=1e-3),
            (3, 5),
        ),
        (lambda x, w, b: group_norm(x, 2, w, b), lambda x, w, b: F.group_norm(x, 2, w, b), (4,)),
    ]
    for ours, theirs, pshape in cases:
        w_np = rng.uniform(0.5, 2, pshape) if affine else None
        b_np = rng.standard_normal(pshape) if affine else None
        x = mg.tensor(a, requires_grad=True)
        w = None if w_np is None else mg.tensor(w_np, requires_grad=True)
        b = None if b_np is None else mg.tensor(b_np, requires_grad=True)
        y = ours(x, w, b)
        y.backward(mg.tensor(g))
        xt = torch.tensor(a, requires_grad=True)
        wt = None if w_np is None else torch.tensor(w_np, requires_grad=True)
        bt = None if b_np is None else torch.tensor(b_np, requires_grad=True)
        yt = theirs(xt, wt, bt)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        if affine:
            np.testing.assert_allclose(host(w.grad), wt.grad.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(host(b.grad), bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 4)])
def test_batch_norm_against_pytorch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a = rng.standard_normal(shape) * 2 + 0.5
    g = rng.standard_normal(shape)
    w_np, b_np = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    rm, rv = mg.tensor(rng.standard_normal(3)), mg.tensor(rng.uniform(0.5, 2, 3))
    rmt, rvt = torch.tensor(rm.numpy()), torch.tensor(rv.numpy())
    for training in (True, True, False):  # two training steps update the stats, then evaluation uses them
        x, w, b = (mg.tensor(v, requires_grad=True) for v in (a, w_np, b_np))
        y = batch_norm(x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-4)
        y.backward(mg.tensor(g))
        xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (a, w_np, b_np))
        yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=training, momentum=0.3, eps=1e-4)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(host(rm), rmt.numpy(), rtol=1e-12)
        np.testing.assert_allclose(host(rv), rvt.numpy(), rtol=1e-12)
        for ours, theirs in ((x, xt), (w, wt), (b, bt)):
            np.testing.assert_allclose(host(ours.grad), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
        a = a * 0.5 + 1.0  # a different batch for the next step


# ------------------------------------------------------------------------- float16
HALF = np.array([300.0, -300.0, 0.0, 1.0])  # (x − μ)² = 90 000 > 65 504, float16's largest value


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
def test_float16_statistics_are_computed_in_float32(device, kind):
    """Half inputs: normalised in float32 and rounded back, as PyTorch does (the float16
    variance would overflow, and 1/√∞ = 0 would make every output 0)."""
    x64 = np.tile(HALF, 4).reshape(2, 2, 4) if kind != "layer" else np.tile(HALF, 2).reshape(2, 4)
    x = on(device, x64.astype(np.float16), requires_grad=True)
    params = [on(device, np.full(2 if kind != "layer" else 4, 1.5, np.float16), True) for _ in range(2)]
    if kind == "layer":
        y, axes = layer_norm(x, 4, *params), (-1,)
        expected = np_standardize(x64, axes, 1e-5) * 1.5 + 1.5
    elif kind == "group":
        y = group_norm(x, 1, *params)
        expected = np_standardize(x64, (1, 2), 1e-5) * 1.5 + 1.5
    else:
        y = batch_norm(x, None, None, *params, training=True)
        expected = np_standardize(x64, (0, 2), 1e-5) * 1.5 + 1.5
    assert y.dtype == np.float16
    np.testing.assert_allclose(host(y).astype(np.float64), expected, rtol=2e-3, atol=2e-3)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float16)
    y.backward(on(device, g))
    assert x.grad.dtype == np.float16 and params[0].grad.dtype == np.float16
    assert np.all(np.isfinite(host(x.grad))) and np.abs(host(x.grad)).max() > 0


@pytest.mark.torch
def test_float16_layer_norm_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([[300.0, -300.0, 0.0, 1.0], [5.0, 6.0, -7.0, 8.0]], dtype=np.float16)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float16)
    ours = on("cpu", x, True)
    theirs = torch.tensor(x, requires_grad=True)
    y, ty = layer_norm(ours, 4), torch.nn.functional.layer_norm(theirs, (4,))
    np.testing.assert_allclose(host(y).astype(np.float32), ty.detach().numpy().astype(np.float32), atol=2e-3)
    y.backward(on("cpu", g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(host(ours.grad).astype(np.float32), theirs.grad.numpy().astype(np.float32), atol=3e-3)


def test_float16_running_statistics(device):
    x = on(device, np.array([[100.0, -100.0, 0.0, 1.0], [-100.0, 100.0, 2.0, 3.0]], np.float16))
    mean, var = on(device, np.zeros(4, np.float16)), on(device, np.ones(4, np.float16))
    batch_norm(x, mean, var, training=True, momentum=0.5)
    assert mean.dtype == var.dtype == np.float16
    np.testing.assert_allclose(host(mean).astype(np.float64), [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(host(var).astype(np.float64), [10000.5, 10000.5, 1.5, 1.5], rtol=1e-3)
