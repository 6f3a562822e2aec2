"""Autograd semantics: accumulation, retain_graph, no_grad, long chains, freeing, hooks,
higher-order gradients and ``mg.grad``."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import minigen as mg


def test_gradients_accumulate_across_backward_calls():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])


def test_shared_subexpression_gets_both_paths():
    x = mg.tensor(2.0, requires_grad=True)
    y = x * x
    z = y + y * x  # dz/dx = 2x + 3x^2
    z.backward()
    assert x.grad.item() == pytest.approx(2 * 2 + 3 * 4)


def test_second_backward_through_freed_graph_raises_clear_error():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_no_grad_records_nothing_and_enable_grad_reenables():
    x = mg.tensor([1.0], requires_grad=True)
    with mg.no_grad():
        y = x * 2
        with mg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None


def test_ten_thousand_op_chain_backward_is_iterative():
    x = mg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**10_000, rel=1e-3)


def test_graph_is_freed_after_backward():
    x = mg.tensor(np.ones(1000), requires_grad=True)
    hidden = x.exp()
    y = (hidden * hidden).sum()
    ref = weakref.ref(hidden)
    del hidden
    assert ref() is not None  # the graph keeps the intermediate alive for backward
    y.backward()
    gc.collect()
    assert ref() is None  # released once backward has used it


def test_retain_grad_and_hooks():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    x.register_hook(lambda g: g * 10)  # a leaf hook may replace the gradient
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [6, 12])
    np.testing.assert_allclose(seen[0], [6, 12])
    np.testing.assert_allclose(x.grad.numpy(), [180, 360])


def test_second_derivative_of_x_cubed():
    x = mg.tensor(2.0, requires_grad=True)
    (dy,) = mg.grad(x**3, x, create_graph=True)
    assert dy.item() == pytest.approx(12.0)  # 3x^2
    (d2y,) = mg.grad(dy, x)
    assert d2y.item() == pytest.approx(12.0)  # 6x


def test_third_derivative_through_exp_and_sin():
    x = mg.tensor(0.7, dtype=mg.float64, requires_grad=True)
    g1 = mg.grad(x.sin() * x.exp(), x, create_graph=True)[0]
    g2 = mg.grad(g1, x, create_graph=True)[0]
    g3 = mg.grad(g2, x)[0]
    # d³/dx³ (eˣ sin x) = 2eˣ(cos x − sin x)
    assert g3.item() == pytest.approx(2 * np.exp(0.7) * (np.cos(0.7) - np.sin(0.7)), rel=1e-10)


def test_grad_returns_without_touching_dot_grad_and_handles_non_leaves():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    y = (h * 3).sum()
    gx, gh = mg.grad(y, [x, h])
    np.testing.assert_allclose(gx.numpy(), [6, 12])
    np.testing.assert_allclose(gh.numpy(), [3, 3])
    assert x.grad is None


def test_grad_unused_input_needs_allow_unused():
    x = mg.tensor([1.0], requires_grad=True)
    unused = mg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused"):
        mg.grad((x * 2).sum(), [x, unused])
    assert mg.grad((x * 2).sum(), [x, unused], allow_unused=True)[1] is None


def test_create_graph_false_records_nothing_in_backward():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (g,) = mg.grad((x**3).sum(), x)
    assert not g.requires_grad and g.grad_fn is None


def test_gradient_argument_for_non_scalar_backward():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * 2).backward(gradient=mg.tensor([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2, 0, -2])


def test_branch_without_gradient_does_not_block_the_rest():
    # A node whose consumer returns no gradient for it must not stall the walk.
    x = mg.tensor([1.0, -2.0], requires_grad=True)
    y = x * 2
    z = mg.where(y > 0, y, mg.zeros(2)) + y.detach() + y
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4, 2])


def test_float32_stays_float32_through_backward():
    x = mg.randn(3, 4, requires_grad=True)
    w = mg.randn(4, 2, requires_grad=True)
    ((x @ w).tanh() * 0.5 + 1).mean().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_manual_seed_repeats_random_tensors_on_each_device():
    for device in ("cpu", "standin"):
        mg.manual_seed(3)
        a = mg.randn(5, device=device).numpy()
        mg.manual_seed(3)
        b = mg.randn(5, device=device).numpy()
        np.testing.assert_array_equal(a, b)
    mg.manual_seed(3)
    cpu = mg.randn(5).numpy()
    mg.manual_seed(3)
    np.testing.assert_array_equal(cpu, mg.randn(5, device="standin").numpy())
