"""Losses: forward against NumPy, gradcheck, reductions, ignore_index, label smoothing,
stability at huge logits, error messages, and PyTorch as oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.loss import (
    PickClass,
    PlaceClass,
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)
from minigen.testing import arrays, shapes


def on(device: str, array: np.ndarray, requires_grad: bool = False) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


def np_log_softmax(a: np.ndarray, axis: int) -> np.ndarray:
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_cross_entropy(logits, target, weight, ignore_index, reduction, smoothing):
    """Reference with explicit loops over positions: PyTorch's definition, written plainly."""
    logp = np_log_softmax(logits, axis=1)
    classes = logits.shape[1]
    logp = np.moveaxis(logp, 1, -1).reshape(-1, classes)
    t = target.reshape(-1)
    w = np.ones(classes) if weight is None else weight
    losses, weights = np.zeros(len(t)), np.zeros(len(t))
    for i, c in enumerate(t):
        if c == ignore_index:
            continue
        weights[i] = w[c]
        losses[i] = (1 - smoothing) * -w[c] * logp[i, c] + smoothing / classes * -(w * logp[i]).sum()
    if reduction == "none":
        return losses.reshape(target.shape)
    return losses.sum() if reduction == "sum" else losses.sum() / weights.sum()


@st.composite
def classification(draw, max_extra_dims: int = 2):
    """Logits (N, C, d...) and integer targets (N, d...) with some positions ignored (-100)."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(2, 4))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=max_extra_dims)))
    logits = draw(arrays((n, c) + extra, low=-4.0, high=4.0))
    target = np.array(
        draw(st.lists(st.integers(0, c - 1), min_size=n * int(np.prod(extra)), max_size=n * int(np.prod(extra))))
    )
    target = target.reshape((n,) + extra)
    if target.size > 1 and draw(st.booleans()):
        target.reshape(-1)[0] = -100  # one ignored position, the rest count
    return logits, target.astype(np.int64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=classification(), weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.2]))
def test_cross_entropy_against_numpy_and_gradcheck(device, reduction, data, weighted, smoothing):
    logits, target = data
    weight = np.linspace(0.5, 2.0, logits.shape[1]) if weighted else None
    w = None if weight is None else on(device, weight)
    t = on(device, target)

    def fn(x):
        return cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=smoothing)

    expected = np_cross_entropy(logits, target, weight, -100, reduction, smoothing)
    np.testing.assert_allclose(host(fn(on(device, logits))), expected, rtol=1e-10, atol=1e-12)
    mg.gradcheck(fn, on(device, logits, requires_grad=True))


def test_pick_and_place_class_are_each_others_backward(device):
    index = on(device, np.array([2, 0, 2, 1])).data
    x = on(device, np.random.default_rng(4).standard_normal((4, 3)), requires_grad=True)
    np.testing.assert_array_equal(host(PickClass.apply(x, index=index)), host(x)[np.arange(4), [2, 0, 2, 1]])
    g = on(device, np.array([1.0, 2.0, 3.0, 4.0]), requires_grad=True)
    placed = PlaceClass.apply(g, index=index, classes=3)
    np.testing.assert_array_equal(host(placed), [[0, 0, 1], [2, 0, 0], [0, 0, 3], [0, 4, 0]])
    mg.gradcheck(lambda a: PickClass.apply(a, index=index), x)
    mg.gradgradcheck(lambda a: PickClass.apply(a, index=index) ** 2, x)
    mg.gradcheck(lambda a: PlaceClass.apply(a, index=index, classes=3), g)
    mg.gradgradcheck(lambda a: PlaceClass.apply(a, index=index, classes=3) ** 2, g)


def test_cross_entropy_second_order(device):
    logits = np.random.default_rng(0).standard_normal((3, 4))
    t = on(device, np.array([2, 0, 3]))
    mg.gradgradcheck(lambda x: cross_entropy(x, t, label_smoothing=0.1), on(device, logits, requires_grad=True))


@given(data=classification(max_extra_dims=1), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_nll_loss_picks_the_target_log_probability(device, data, reduction):
    logits, target = data
    logp = np_log_softmax(logits, axis=1)
    t = on(device, target)

    def fn(x):
        return nll_loss(x, t, reduction=reduction)

    expected = np_cross_entropy(logits, target, None, -100, reduction, 0.0)
    np.testing.assert_allclose(host(fn(on(device, logp))), expected, rtol=1e-10, atol=1e-12)
    mg.gradcheck(fn, on(device, logp, requires_grad=True))


def test_cross_entropy_with_class_probabilities(device):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3))
    probs = rng.dirichlet(np.ones(3), size=4)
    loss = cross_entropy(on(device, logits), on(device, probs))
    np.testing.assert_allclose(host(loss), -(probs * np_log_softmax(logits, 1)).sum(1).mean(), rtol=1e-12)
    mg.gradcheck(
        lambda x, p: cross_entropy(x, p, label_smoothing=0.1), on(device, logits, True), on(device, probs, True)
    )


def test_cross_entropy_gradient_is_softmax_minus_one_hot(device):
    logits = np.random.default_rng(2).standard_normal((5, 4))
    target = np.array([0, 3, 1, 1, 2])
    x = on(device, logits, requires_grad=True)
    cross_entropy(x, on(device, target), reduction="sum").backward()
    softmax = np.exp(np_log_softmax(logits, 1))
    np.testing.assert_allclose(host(x.grad), softmax - np.eye(4)[target], rtol=1e-12, atol=1e-15)


def test_ignored_positions_get_no_gradient_and_do_not_count(device):
    logits = np.random.default_rng(3).standard_normal((4, 3))
    target = np.array([1, -100, 2, -100])
    x = on(device, logits, requires_grad=True)
    loss = cross_entropy(x, on(device, target))
    loss.backward()
    np.testing.assert_allclose(host(loss), -(np_log_softmax(logits, 1)[[0, 2], [1, 2]]).mean(), rtol=1e-12)
    assert np.all(host(x.grad)[[1, 3]] == 0)
    custom = cross_entropy(on(device, logits), on(device, np.array([1, 0, 2, 0])), ignore_index=0)
    np.testing.assert_allclose(host(custom), host(loss), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(device, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    target = np.array([0, 0, 2])
    x = on(device, logits, requires_grad=True)
    losses = cross_entropy(x, on(device, target), reduction="none")
    losses.sum().backward()
    assert losses.dtype == dtype
    np.testing.assert_allclose(host(losses), [0.0, 2e4 + np.log(2.0), np.log(3.0)], rtol=1e-6)
    expected_grad = np.exp(np_log_softmax(logits.astype(np.float64), 1)) - np.eye(3)[target]
    np.testing.assert_allclose(host(x.grad), expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_for_huge_logits(device, dtype):
    logits = np.array([1e4, -1e4, 1e4, -1e4, 0.0], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    x = on(device, logits, requires_grad=True)
    losses = binary_cross_entropy_with_logits(x, on(device, target), reduction="none")
    losses.sum().backward()
    np.testing.assert_allclose(host(losses), [0.0, 0.0, 1e4, 1e4, np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(host(x.grad), [0.0, 0.0, 1.0, -1.0, -0.5], atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(x=arrays(shapes(max_side=3), low=-6.0, high=6.0), data=st.data())
def test_bce_with_logits_against_numpy(device, reduction, x, data):
    y = data.draw(arrays(st.just(x.shape), low=0.0, high=1.0))
    pos = data.draw(st.sampled_from([None, 2.5]))
    weight = data.draw(arrays(st.just(x.shape[-1:]), low=0.5, high=2.0))
    p = 1.0 if pos is None else pos
    sig = 1 / (1 + np.exp(-x))
    expected = -(p * y * np.log(sig) + (1 - y) * np.log(1 - sig)) * weight
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    pw = None if pos is None else on(device, np.full(x.shape[-1:], pos))
    w, t = on(device, weight), on(device, y)

    def fn(a):
        return binary_cross_entropy_with_logits(a, t, weight=w, reduction=reduction, pos_weight=pw)

    np.testing.assert_allclose(host(fn(on(device, x))), expected, rtol=1e-9, atol=1e-12)
    mg.gradcheck(fn, on(device, x, requires_grad=True))
    mg.gradcheck(
        lambda target: binary_cross_entropy_with_logits(on(device, x), target, pos_weight=pw), on(device, y, True)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(x=arrays(shapes(max_side=3)), data=st.data())
def test_mse_and_l1(device, reduction, x, data):
    y = data.draw(arrays(st.just(x.shape)).filter(lambda y: np.all(np.abs(y - x) > 0.05)))  # away from l1's kink
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    for loss_fn, np_fn in ((mse_loss, lambda d: d * d), (l1_loss, np.abs)):
        np.testing.assert_allclose(
            host(loss_fn(on(device, x), on(device, y), reduction=reduction)), reduce(np_fn(x - y)), rtol=1e-12
        )
        mg.gradcheck(lambda a, b, f=loss_fn: f(a, b, reduction=reduction), on(device, x, True), on(device, y, True))


def test_losses_keep_float32(device):
    x = on(device, np.zeros((2, 3), np.float32))
    t = on(device, np.array([0, 2]))
    assert cross_entropy(x, t).dtype == np.float32
    assert cross_entropy(x, t, weight=on(device, np.ones(3)), label_smoothing=0.1).dtype == np.float32
    assert binary_cross_entropy_with_logits(x, x).dtype == np.float32
    assert mse_loss(x, x).dtype == np.float32 and l1_loss(x, x).dtype == np.float32


# ------------------------------------------------------------------------------ errors
def test_error_messages_name_the_op_and_shapes():
    x = mg.zeros(4, 3)
    with pytest.raises(
        IndexError, match=r"cross_entropy: target 3 is out of range for 3 classes \(input shape \(4, 3\)"
    ):
        cross_entropy(x, mg.tensor([0, 1, 3, 2]))
    with pytest.raises(IndexError, match="target -1 is out of range"):
        nll_loss(x, mg.tensor([0, 1, -1, 2]))
    with pytest.raises(TypeError, match=r"nll_loss: target must hold integer class indices.*got dtype float32"):
        nll_loss(x, mg.zeros(4))
    with pytest.raises(ValueError, match=r"cross_entropy: a floating-point target holds class probabilities.*\(4, 3\)"):
        cross_entropy(x, mg.zeros(4))
    with pytest.raises(
        ValueError, match=r"expected target shape \(4,\) for input shape \(4, 3\).*got target shape \(4, 1\)"
    ):
        cross_entropy(x, mg.tensor([[0], [1], [2], [0]]))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        cross_entropy(x, mg.tensor([0, 1, 2, 0]), weight=mg.ones(4))
    with pytest.raises(ValueError, match="reduction must be one of"):
        mse_loss(x, x, reduction="average")
    with pytest.raises(ValueError, match=r"target shape \(4, 1\) must be the same as input shape \(4, 3\)"):
        binary_cross_entropy_with_logits(x, mg.zeros(4, 1))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        cross_entropy(x, mg.tensor([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.warns(UserWarning, match="mse_loss: target shape"):
        mse_loss(x, mg.zeros(3))


def test_target_on_another_device_is_an_error():
    x = mg.zeros(2, 3)
    with pytest.raises(RuntimeError, match="target is on standin but the input is on cpu"):
        cross_entropy(x, mg.tensor([0, 1]).to("standin"))


# ------------------------------------------------------------------------ PyTorch oracle
CE_CASES = [
    dict(reduction="mean"),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=True),
    dict(weight=True, reduction="sum"),
    dict(ignore_index=1),
    dict(ignore_index=-100, label_smoothing=0.1),
    dict(weight=True, label_smoothing=0.25),
    dict(weight=True, ignore_index=2, label_smoothing=0.3, reduction="none"),
    dict(weight=True, ignore_index=2, label_smoothing=0.3, reduction="mean"),
]


@pytest.mark.torch
@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("case", range(len(CE_CASES)))
def test_cross_entropy_and_nll_against_pytorch(case, spatial):
    torch = pytest.importorskip("torch")
    kwargs = dict(CE_CASES[case])
    rng = np.random.default_rng(case)
    shape = (3, 4, 2, 3) if spatial else (6, 4)
    logits = rng.standard_normal(shape) * 3
    target = rng.integers(0, 4, size=(shape[0],) + shape[2:])
    target.reshape(-1)[:2] = kwargs.get("ignore_index", -100)
    weight = rng.uniform(0.5, 2.0, size=4) if kwargs.pop("weight", False) else None
    g_shape = target.shape if kwargs.get("reduction") == "none" else ()
    g = rng.standard_normal(g_shape)
    for name in ("cross_entropy", "nll_loss"):
        if name == "nll_loss":
            kwargs.pop("label_smoothing", None)
        ours = {"cross_entropy": cross_entropy, "nll_loss": nll_loss}[name]
        x = mg.tensor(logits, requires_grad=True)
        w = None if weight is None else mg.tensor(weight)
        y = ours(x, mg.tensor(target), weight=w, **kwargs)
        y.backward(mg.tensor(g))
        xt = torch.tensor(logits, requires_grad=True)
        wt = None if weight is None else torch.tensor(weight)
        yt = getattr(torch.nn.functional, name)(xt, torch.tensor(target), weight=wt, **kwargs)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_probabilities_against_pytorch(smoothing):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((3, 4, 2))
    probs = rng.dirichlet(np.ones(4), size=(3, 2)).transpose(0, 2, 1)
    weight = rng.uniform(0.5, 2, size=4)
    x, p = mg.tensor(logits, requires_grad=True), mg.tensor(probs, requires_grad=True)
    cross_entropy(x, p, weight=mg.tensor(weight), label_smoothing=smoothing).backward()
    xt, pt = torch.tensor(logits, requires_grad=True), torch.tensor(probs, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, pt, weight=torch.tensor(weight), label_smoothing=smoothing).backward()
    np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(host(p.grad), pt.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("extras", [(), ("weight",), ("pos_weight",), ("weight", "pos_weight")])
def test_bce_with_logits_against_pytorch(reduction, extras):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits = rng.uniform(-30, 30, size=(5, 3))
    target = rng.uniform(0, 1, size=(5, 3))
    kwargs_np = {}
    if "weight" in extras:
        kwargs_np["weight"] = rng.uniform(0.5, 2, size=(5, 1))
    if "pos_weight" in extras:
        kwargs_np["pos_weight"] = rng.uniform(0.5, 3, size=3)
    g = rng.standard_normal((5, 3) if reduction == "none" else ())
    x, y = mg.tensor(logits, requires_grad=True), mg.tensor(target, requires_grad=True)
    out = binary_cross_entropy_with_logits(x, y, reduction=reduction, **{k: mg.tensor(v) for k, v in kwargs_np.items()})
    out.backward(mg.tensor(g))
    xt, yt = torch.tensor(logits, requires_grad=True), torch.tensor(target, requires_grad=True)
    out_t = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, yt, reduction=reduction, **{k: torch.tensor(v) for k, v in kwargs_np.items()}
    )
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(host(out), out_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(host(y.grad), yt.grad.numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses_against_pytorch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 4, 3))
    g = rng.standard_normal((4, 3) if reduction == "none" else ())
    for ours, name in ((mse_loss, "mse_loss"), (l1_loss, "l1_loss")):
        x, y = mg.tensor(a, requires_grad=True), mg.tensor(b, requires_grad=True)
        ours(x, y, reduction=reduction).backward(mg.tensor(g))
        xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        getattr(torch.nn.functional, name)(xt, yt, reduction=reduction).backward(torch.tensor(g))
        np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(host(y.grad), yt.grad.numpy(), rtol=1e-12)
