"""Activations and the softmax family: forward against NumPy, gradcheck, gradgradcheck,
stability at huge logits, the backend-neutral normal CDF, errors, and PyTorch as oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen import backend
from minigen.ops.activation import (
    gelu,
    leaky_relu,
    log_softmax,
    normal_cdf_pdf,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from minigen.testing import arrays, away_from, noncontiguous, shapes


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


_erf = np.vectorize(math.erf)
_erfc = np.vectorize(math.erfc)


def np_gelu(a: np.ndarray) -> np.ndarray:
    return a * 0.5 * (1.0 + _erf(a / math.sqrt(2.0)))


def np_gelu_tanh(a: np.ndarray) -> np.ndarray:
    return 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3)))


def np_softmax(a: np.ndarray, dim: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def np_log_softmax(a: np.ndarray, dim: int) -> np.ndarray:
    shifted = a - a.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def check(fn, np_fn, device, x: np.ndarray, second_order: bool = True) -> None:
    """Forward equals NumPy in float64 and float32 (dtype kept), then gradcheck (+ gradgradcheck)."""
    expected = np_fn(x)
    np.testing.assert_allclose(host(fn(on(device, x))), expected, rtol=1e-10, atol=1e-12)
    out32 = fn(on(device, x.astype(np.float32), requires_grad=False))
    assert out32.dtype == np.float32, "float32 inputs must stay float32"
    np.testing.assert_allclose(host(out32), expected, rtol=2e-5, atol=2e-6)
    mg.gradcheck(fn, on(device, x))
    if second_order:
        mg.gradgradcheck(fn, on(device, x))


# ------------------------------------------------------------------------ normal CDF / erf
def test_normal_cdf_float64_is_accurate_everywhere():
    x = np.concatenate([np.linspace(-38, 38, 20001), np.logspace(-12, 1.5, 500), -np.logspace(-12, 1.5, 500)])
    cdf, pdf = normal_cdf_pdf(x)
    exact = 0.5 * _erfc(-x / math.sqrt(2.0))
    np.testing.assert_allclose(cdf, exact, rtol=0, atol=1e-15)
    lower = (x < 0) & (exact > 1e-300)  # the lower tail is computed directly: accurate relative to its size
    np.testing.assert_allclose(cdf[lower], exact[lower], rtol=5e-13, atol=0)
    np.testing.assert_allclose(pdf, np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi), rtol=1e-14, atol=0)
    assert np.all(np.diff(cdf[:20001]) >= 0), "Φ must be monotone"


def test_normal_cdf_float32_and_float16_are_accurate_to_their_precision():
    x = np.linspace(-12, 12, 100001)
    exact = 0.5 * _erfc(-x / math.sqrt(2.0))
    cdf32, pdf32 = normal_cdf_pdf(x.astype(np.float32))
    assert cdf32.dtype == np.float32 and pdf32.dtype == np.float32
    assert np.abs(cdf32 - exact).max() < 4e-7
    assert np.all((cdf32 >= 0) & (cdf32 <= 1))
    cdf16, _ = normal_cdf_pdf(x.astype(np.float16))
    assert cdf16.dtype == np.float16
    assert np.abs(cdf16.astype(np.float64) - exact).max() < 2e-3


def test_normal_cdf_runs_on_the_device(device):
    x = np.linspace(-6, 6, 41)
    cdf, pdf = normal_cdf_pdf(backend.to_device(x, device))
    assert backend.device_of(cdf) == mg.Device(device)
    np.testing.assert_allclose(backend.asnumpy(cdf), normal_cdf_pdf(x)[0], rtol=0, atol=0)


def test_normal_cdf_rejects_integers():
    with pytest.raises(TypeError, match="floating-point"):
        normal_cdf_pdf(np.arange(3))


# ------------------------------------------------------------------- property tests
SMOOTH = {
    "gelu": (gelu, np_gelu),
    "gelu_tanh": (lambda x: gelu(x, approximate="tanh"), np_gelu_tanh),
    "silu": (silu, lambda a: a / (1 + np.exp(-a))),
    "sigmoid": (sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    "tanh": (tanh, np.tanh),
    "softplus": (softplus, lambda a: np.logaddexp(0, a)),
    "softplus_beta": (lambda x: softplus(x, beta=2.0, threshold=5.0), lambda a: np.logaddexp(0, 2 * a) / 2),
}


@pytest.mark.parametrize("name", sorted(SMOOTH))
@given(data=st.data())
def test_smooth_activations(name, device, data):
    fn, np_fn = SMOOTH[name]
    # wide range (gelu's tails use the erfc series), kept below softplus_beta's threshold at 2.5
    x = data.draw(noncontiguous(arrays(shapes(max_side=3), low=-6.0, high=2.4)))
    check(fn, np_fn, device, x)


def test_softplus_threshold_switches_to_identity(device):
    x = on(device, np.array([-30.0, -1.0, 0.5, 2.0, 25.0, 40.0]))
    y = softplus(x, beta=1.0, threshold=20.0)
    expected = np.where(x.detach().numpy() > 20, x.detach().numpy(), np.logaddexp(0, x.detach().numpy()))
    np.testing.assert_allclose(host(y), expected, rtol=1e-15)
    y.sum().backward()
    slope = 1 / (1 + np.exp(-x.detach().numpy()))
    np.testing.assert_allclose(host(x.grad), np.where(x.detach().numpy() > 20, 1.0, slope), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("slope", [0.01, 0.2, 1.5])
@given(data=st.data())
def test_leaky_relu_and_relu(slope, device, data):
    x = data.draw(away_from(shapes(max_side=3)))
    check(lambda t: leaky_relu(t, slope), lambda a: np.where(a > 0, a, slope * a), device, x)
    check(relu, lambda a: np.maximum(a, 0), device, x, second_order=False)


def test_leaky_relu_slope_at_zero_is_the_negative_slope():
    x = mg.tensor([0.0, -1.0, 1.0], requires_grad=True)
    leaky_relu(x, 0.1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.array([0.1, 0.1, 1.0], dtype=np.float32))


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family(which, device, data):
    x = data.draw(noncontiguous(arrays(shapes(max_side=4))))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    fn, np_fn = (softmax, np_softmax) if which == "softmax" else (log_softmax, np_log_softmax)
    check(lambda t: fn(t, dim), lambda a: np_fn(a, dim), device, x)


def test_softmax_rows_sum_to_one_and_dtype_argument(device):
    x = on(device, np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32), requires_grad=False)
    s = softmax(x, dim=1)
    np.testing.assert_allclose(host(s).sum(axis=1), 1.0, rtol=1e-6)
    s64 = softmax(x, dim=1, dtype=mg.float64)
    assert s64.dtype == np.float64
    np.testing.assert_allclose(host(log_softmax(x, -1, dtype=mg.float64)), np.log(host(s64)), rtol=1e-12)


# --------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_stable_for_huge_logits(device, dtype):
    a = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4, -1e4]], dtype=dtype)
    g = np.array([[1.0, 2.0, -1.0, 0.5], [0.3, -0.2, 1.0, 2.0]], dtype=dtype)
    for fn, np_fn in ((softmax, np_softmax), (log_softmax, np_log_softmax)):
        x = on(device, a)
        y = fn(x, -1)
        y.backward(on(device, g, requires_grad=False))
        assert np.all(np.isfinite(host(y))) and np.all(np.isfinite(host(x.grad)))
        np.testing.assert_allclose(host(y), np_fn(a.astype(np.float64), -1), rtol=1e-6, atol=1e-30)
    # The largest logit's log-probability is −log(1 + e⁻¹): finite, not −inf or NaN.
    np.testing.assert_allclose(host(log_softmax(on(device, a), -1))[0, 0], -math.log1p(math.exp(-1)), rtol=1e-6)


def test_log_softmax_keeps_tiny_probabilities(device):
    x = on(device, np.array([0.0, -1e4]))
    np.testing.assert_allclose(host(log_softmax(x, 0)), [0.0, -1e4], rtol=1e-12)


def test_softmax_of_all_minus_infinity_row_is_nan_not_an_error():
    x = mg.tensor([[-np.inf, -np.inf], [0.0, -np.inf]])
    with np.errstate(divide="ignore", invalid="ignore"):  # NumPy warns about the 0/0, as it should
        s = softmax(x, dim=1).numpy()
    assert np.all(np.isnan(s[0]))
    np.testing.assert_array_equal(s[1], [1.0, 0.0])


@pytest.mark.parametrize("fn", [gelu, silu, softplus, sigmoid, tanh])
def test_activations_are_finite_at_huge_inputs(device, fn):
    x = on(device, np.array([-1e4, -50.0, 50.0, 1e4], dtype=np.float32))
    y = fn(x)
    y.sum().backward()
    assert np.all(np.isfinite(host(y))) and np.all(np.isfinite(host(x.grad)))


# ------------------------------------------------------------------------ second order
def test_gelu_second_derivative_is_exact(device):
    a = np.linspace(-4, 4, 17)
    x = on(device, a)
    (first,) = mg.grad(gelu(x).sum(), x, create_graph=True)
    (second,) = mg.grad(first.sum(), x)
    pdf = np.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(host(first), 0.5 * (1 + _erf(a / math.sqrt(2))) + a * pdf, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(host(second), (2 - a * a) * pdf, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------ errors
def test_error_messages():
    x = mg.tensor([[1.0, 2.0]])
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        gelu(x, approximate="erf")
    with pytest.raises(TypeError, match="softmax: pass dim explicitly"):
        softmax(x)
    with pytest.raises(IndexError, match="log_softmax: dim 2 is out of range"):
        log_softmax(x, 2)
    with pytest.raises(TypeError, match=r"softmax: needs a floating-point tensor, got dtype int64 \(shape \(2,\)\)"):
        softmax(mg.tensor([1, 2]), 0)
    with pytest.raises(TypeError, match="gelu: needs a floating-point tensor"):
        gelu(mg.tensor([1, 2]))


# ------------------------------------------------------------------------ PyTorch oracle
ORACLE = {
    "relu": (relu, "relu", {}),
    "leaky_relu": (lambda t: leaky_relu(t, 0.3), "leaky_relu", {"negative_slope": 0.3}),
    "gelu": (gelu, "gelu", {}),
    "gelu_tanh": (lambda t: gelu(t, approximate="tanh"), "gelu", {"approximate": "tanh"}),
    "silu": (silu, "silu", {}),
    "sigmoid": (sigmoid, "sigmoid", {}),
    "tanh": (tanh, "tanh", {}),
    "softplus": (softplus, "softplus", {}),
    "softplus_beta": (lambda t: softplus(t, beta=3.0, threshold=4.0), "softplus", {"beta": 3.0, "threshold": 4.0}),
    "softmax": (lambda t: softmax(t, 1), "softmax", {"dim": 1}),
    "softmax_dim0": (lambda t: softmax(t, 0), "softmax", {"dim": 0}),
    "log_softmax": (lambda t: log_softmax(t, -1), "log_softmax", {"dim": -1}),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ORACLE))
def test_against_pytorch(name):
    torch = pytest.importorskip("torch")
    fn, torch_name, kwargs = ORACLE[name]
    rng = np.random.default_rng(1)
    a = rng.uniform(-5, 5, size=(4, 3, 5))
    a[np.abs(a) < 0.05] = 0.5  # away from relu's kink
    g = rng.standard_normal(a.shape)
    x = mg.tensor(a, requires_grad=True)
    fn(x).backward(mg.tensor(g))
    xt = torch.tensor(a, requires_grad=True)
    yt = getattr(torch.nn.functional, torch_name)(xt, **kwargs)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(host(fn(mg.tensor(a))), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.torch
def test_float32_matches_pytorch_float32():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(2).uniform(-8, 8, size=(64, 33)).astype(np.float32)
    g = np.random.default_rng(3).standard_normal(a.shape).astype(np.float32)
    for fn, torch_fn in (
        (gelu, torch.nn.functional.gelu),
        (lambda t: softmax(t, -1), lambda t: torch.softmax(t, -1)),
        (lambda t: log_softmax(t, -1), lambda t: torch.log_softmax(t, -1)),
    ):
        x = mg.tensor(a, requires_grad=True)
        y = fn(x)
        y.backward(mg.tensor(g))
        xt = torch.tensor(a, requires_grad=True)
        yt = torch_fn(xt)
        yt.backward(torch.tensor(g))
        assert y.dtype == np.float32 and x.grad.dtype == np.float32
        np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-5, atol=2e-6)


# ------------------------------------------------------------------------ 0-d tensors
def _np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# name: (minigen function of a 0-d tensor, NumPy value, NumPy derivative at a)
ZERO_D = {
    "Tensor.sigmoid": (lambda t: t.sigmoid(), _np_sigmoid, lambda a: _np_sigmoid(a) * (1 - _np_sigmoid(a))),
    "F.sigmoid": (sigmoid, _np_sigmoid, lambda a: _np_sigmoid(a) * (1 - _np_sigmoid(a))),
    "F.silu": (silu, lambda a: a * _np_sigmoid(a), lambda a: _np_sigmoid(a) * (1 + a * (1 - _np_sigmoid(a)))),
    "F.softplus": (softplus, lambda a: np.log1p(np.exp(a)), _np_sigmoid),
    "F.gelu": (
        gelu,
        np_gelu,
        lambda a: 0.5 * (1 + _erf(a / math.sqrt(2))) + a * np.exp(-a * a / 2) / math.sqrt(2 * math.pi),
    ),
    "F.gelu tanh": (lambda t: gelu(t, approximate="tanh"), np_gelu_tanh, None),
    "F.softmax": (lambda t: softmax(t, 0), lambda a: 1.0, lambda a: 0.0),
    "F.softmax dim=-1": (lambda t: softmax(t, -1), lambda a: 1.0, lambda a: 0.0),
    "Tensor.softmax": (lambda t: t.softmax(-1), lambda a: 1.0, lambda a: 0.0),
    "F.log_softmax": (lambda t: log_softmax(t, 0), lambda a: 0.0, lambda a: 0.0),
    "F.binary_cross_entropy_with_logits": (
        lambda t: mg.nn.functional.binary_cross_entropy_with_logits(t, mg.tensor(1.0, dtype=t.dtype, device=t.device)),
        lambda a: np.log1p(np.exp(-a)),
        lambda a: _np_sigmoid(a) - 1.0,
    ),
}


@pytest.mark.parametrize("name", sorted(ZERO_D))
@pytest.mark.parametrize("value", [0.7, -1.3])
def test_zero_dimensional_tensors(device, name, value):
    """0-d inputs give 0-d outputs and gradients, as in PyTorch (NumPy hands back scalars
    for 0-d results, which the in-place forwards cannot write into)."""
    fn, np_value, np_derivative = ZERO_D[name]
    x = on(device, np.array(value))
    y = fn(x)
    assert y.shape == () and y.dtype == np.float64
    np.testing.assert_allclose(host(y), np_value(np.array(value)), rtol=1e-10, atol=1e-12)
    y.backward()
    assert x.grad.shape == ()
    if np_derivative is not None:
        np.testing.assert_allclose(host(x.grad), np_derivative(np.array(value)), rtol=1e-7, atol=1e-12)
    mg.gradcheck(fn, on(device, np.array(value)))
    with pytest.raises(IndexError, match="out of range"):
        softmax(x, 1)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ZERO_D))
def test_zero_dimensional_tensors_match_torch(name):
    torch = pytest.importorskip("torch")
    theirs = {
        "Tensor.sigmoid": lambda t: t.sigmoid(),
        "F.sigmoid": torch.sigmoid,
        "F.silu": torch.nn.functional.silu,
        "F.softplus": torch.nn.functional.softplus,
        "F.gelu": torch.nn.functional.gelu,
        "F.gelu tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "F.softmax": lambda t: torch.softmax(t, 0),
        "F.softmax dim=-1": lambda t: torch.softmax(t, -1),
        "Tensor.softmax": lambda t: t.softmax(-1),
        "F.log_softmax": lambda t: torch.log_softmax(t, 0),
        "F.binary_cross_entropy_with_logits": lambda t: torch.nn.functional.binary_cross_entropy_with_logits(
            t, torch.tensor(1.0, dtype=t.dtype)
        ),
    }[name]
    for dtype in (np.float32, np.float64):
        x = mg.tensor(np.array(0.7, dtype), requires_grad=True)
        xt = torch.tensor(np.array(0.7, dtype), requires_grad=True)
        y, yt = ZERO_D[name][0](x), theirs(xt)
        y.backward()
        yt.backward()
        assert y.shape == tuple(yt.shape) and x.grad.shape == tuple(xt.grad.shape) and y.dtype == dtype
        np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ one softmax op
def _graph_ops(out: mg.Tensor) -> list[str]:
    names, stack = [], [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and not isinstance(node, mg.Tensor):
            names.append(type(node).__name__)
            stack.extend(node.parents)
    return names


def test_every_spelling_of_softmax_builds_the_one_softmax_node(device):
    """A student stepping into backward lands in the same code whichever spelling they use."""
    x = on(device, np.random.default_rng(0).standard_normal((2, 3)))
    for spelling in (
        lambda t: softmax(t, -1),
        lambda t: t.softmax(-1),
        lambda t: mg.softmax(t, -1),
        lambda t: mg.nn.Softmax(dim=-1)(t),
    ):
        assert _graph_ops(spelling(x)) == ["Softmax"]
    for spelling in (lambda t: log_softmax(t, -1), lambda t: t.log_softmax(-1), lambda t: mg.nn.LogSoftmax(-1)(t)):
        assert _graph_ops(spelling(x)) == ["LogSoftmax"]
    np.testing.assert_array_equal(host(x.softmax(-1)), host(softmax(x, -1)))
