"""Version counters: a gradient is never computed from saved values changed in place.

Every in-place change (``t[...] = v``, ``fill_``, ``zero_``, ``add_`` ..., an optimiser
step) bumps the version of the tensor and of every view of its memory. A Function notes
the versions of what it saved; backward raises, naming the op and the changed input, if
one changed. These are the silent wrong gradients of issue 11, each now an error, and
the legitimate patterns around them, each still working.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.nn as nn
from minigen.testing import arrays, noncontiguous, shapes, to_device_like

STALE = "was changed in place after"


def _leaf(values, device, requires_grad=True) -> mg.Tensor:
    return to_device_like(np.asarray(values, dtype=np.float32), device, requires_grad=requires_grad)


# ------------------------------------------------------------------ the cases of the issue
def test_optimizer_step_between_forward_and_backward_raises(device) -> None:
    x = _leaf([1.0, 2.0, 3.0], device)
    w = nn.Parameter(mg.ones(3, device=device))
    y = (x * w).sum()
    w.grad = mg.ones(3, device=device)
    mg.optim.SGD([w], lr=1.0).step()
    with pytest.raises(RuntimeError, match=STALE) as caught:
        y.backward()  # before: x.grad silently [0, 0, 0]; correct is [1, 1, 1]
    message = str(caught.value)
    assert "Mul.backward" in message and "input 1" in message and "shape (3,)" in message
    assert "now at version 1, but was at version 0" in message
    assert "backward() before" in message and "optimizer.step()" in message and "forward pass again" in message


def test_setitem_under_no_grad_on_a_saved_leaf_raises(device) -> None:
    x = _leaf([1.0, 2.0, 3.0], device)
    y = (x * x).sum()
    with mg.no_grad():
        x[0] = 100.0  # before: the gradient used 100 (200 in x.grad)
    with pytest.raises(RuntimeError, match=r"Mul.backward: its input 0 and 1 \(shape \(3,\), float32\)"):
        y.backward()


def test_fill_on_a_saved_non_leaf_raises_at_backward(device) -> None:
    x = _leaf([1.0, 2.0, 3.0], device)
    h = x * 2.0
    y = (h * h).sum()
    with mg.no_grad():
        h.fill_(0.0)  # before: the gradient silently became zeros
    with pytest.raises(RuntimeError, match="Mul.backward: its input 0 and 1.*now at version 1"):
        y.backward()


def test_in_place_change_of_a_non_leaf_in_the_graph_is_refused_at_once(device) -> None:
    # minigen does not rewrite grad_fn as PyTorch does for in-place ops on non-leaves:
    # it refuses, so the graph can never silently disagree with the data.
    x = _leaf([1.0, 2.0, 3.0], device)
    h = x * 2.0
    for change in (lambda: h.fill_(0.0), lambda: h.add_(1.0), lambda: h.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match=r"computed by Mul and is part of the graph.*out-of-place"):
            change()
    assert h._version == 0


def test_zero_and_fill_on_a_leaf_that_requires_grad_raise_outside_no_grad(device) -> None:
    w = nn.Parameter(mg.ones(3, device=device))
    for change in (w.zero_, lambda: w.fill_(2.0), lambda: w.add_(1.0), lambda: w.mul_(2.0)):
        with pytest.raises(RuntimeError, match=r"a leaf tensor that requires grad \(shape \(3,\)\).*mg.no_grad"):
            change()
    np.testing.assert_array_equal(w.detach().numpy(), np.ones(3))
    with mg.no_grad():  # initialising a parameter is fine outside the graph
        w.fill_(2.0)
    np.testing.assert_array_equal(w.detach().numpy(), np.full(3, 2.0))
    assert w._version == 1


def test_setitem_advice_no_longer_leads_into_the_bug() -> None:
    x = mg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place assignment") as caught:
        x[0] = 5.0
    message = str(caught.value)
    assert "or assign under mg.no_grad()" not in message  # the old advice, which led to a silent wrong gradient
    assert "mg.where" in message and "optimizer.step()" in message


def _gan(device):
    mg.manual_seed(0)
    G = nn.Linear(2, 2).to(device)
    D = nn.Linear(2, 1).to(device)
    return G, D, mg.optim.SGD(G.parameters(), lr=0.1), mg.optim.SGD(D.parameters(), lr=0.1)


def test_gan_stepping_d_before_g_backward_raises(device) -> None:
    G, D, opt_g, opt_d = _gan(device)
    z = mg.randn(4, 2, device=device)
    fake = G(z)
    loss_g = -D(fake).mean()  # built through D
    loss_d = D(fake.detach()).mean()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()  # D's weights change before G's loss is backpropagated
    opt_g.zero_grad()
    with pytest.raises(RuntimeError, match=r"MatMul.backward: its input 1 \(shape \(2, 1\).*changed in place"):
        loss_g.backward()


def test_gan_backpropagating_g_before_stepping_d_passes(device) -> None:
    G, D, opt_g, opt_d = _gan(device)
    z = mg.randn(4, 2, device=device)
    fake = G(z)
    loss_g = -D(fake).mean()
    opt_g.zero_grad()
    loss_g.backward()  # right order: G's gradient is taken through D's current weights
    grads = [p.grad.numpy().copy() for p in G.parameters()]
    # dL/dW_G for L = −mean(D(G(z))) with linear G and D: −(1/N) Σ_n w_Dᵀ z_nᵀ
    w_d = D.weight.detach().numpy()  # (1, 2)
    expected_w = -(w_d.T @ np.ones((1, 4))) @ z.numpy() / 4
    np.testing.assert_allclose(grads[0], expected_w, rtol=1e-5, atol=1e-6)
    opt_g.step()
    loss_d = D(fake.detach()).mean()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    assert all(p._version == 1 for p in [*G.parameters(), *D.parameters()])  # each step was recorded
    loss_g2 = -D(G(z)).mean()  # the next step: a new graph after both updates
    opt_g.zero_grad()
    loss_g2.backward()
    assert all(p.grad is not None for p in G.parameters())


# ----------------------------------------------------------------- what carries a version
@pytest.mark.parametrize(
    "make_view",
    [
        lambda x: x.reshape(2, 2),
        lambda x: x.T,
        lambda x: x[0],
        lambda x: x[:, 1:],
        lambda x: x.detach(),
        lambda x: x.unsqueeze(0),
    ],
    ids=["reshape", "T", "index", "slice", "detach", "unsqueeze"],
)
def test_a_change_through_a_view_is_seen(device, make_view) -> None:
    x = _leaf([[1.0, 2.0], [3.0, 4.0]], device)
    y = (x * x).sum()
    view = make_view(x)
    with mg.no_grad():
        view.mul_(3.0)
    assert x._version == 1 and view._version == 1
    with pytest.raises(RuntimeError, match=STALE):
        y.backward()


def test_a_change_of_the_base_is_seen_by_a_saved_view(device) -> None:
    x = _leaf([[1.0, 2.0], [3.0, 4.0]], device)
    row = x[0]
    y = (row * row).sum()
    with mg.no_grad():
        x.zero_()
    with pytest.raises(RuntimeError, match=STALE):
        y.backward()


def test_copies_have_their_own_version(device) -> None:
    x = _leaf([[1.0, 2.0], [3.0, 4.0]], device)
    y = (x * x).sum()
    with mg.no_grad():
        for copy in (x.clone(), x[[0, 1]], x * 1.0, x.to(mg.float64)):
            copy.add_(1.0)  # a copy changes, x does not: no false alarm
    assert x._version == 0
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([[1.0, 2.0], [3.0, 4.0]]))


def test_a_saved_output_changed_in_place_is_seen(device) -> None:
    x = _leaf([0.5, 1.0], device)
    y = x.exp()  # Exp saves its output: ∂L/∂x = g · y
    z = y.sum()
    with mg.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match=r"Exp.backward: its output \(shape \(2,\)\) was changed"):
        z.backward()


def test_a_changed_mask_is_seen_even_though_it_needs_no_gradient(device) -> None:
    x = _leaf([1.0, -2.0, 3.0], device)
    mask = x > 0
    y = mg.where(mask, x, x * 0.0).sum()
    with mg.no_grad():
        mask[0] = False  # the gradient would go to the wrong elements
    with pytest.raises(
        RuntimeError, match=r"Where.backward: one of its inputs that needs no gradient \(shape \(3,\), bool\)"
    ):
        y.backward()


def test_a_change_to_a_tensor_the_op_did_not_save_is_allowed(device) -> None:
    # Add saves only shapes, so changing its input after the forward pass cannot affect
    # its gradient: PyTorch allows this, and so does minigen.
    x = _leaf([1.0, 2.0], device)
    y = (x + 1.0).sum()
    with mg.no_grad():
        x.add_(5.0)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_retained_graph_checks_again_on_the_second_backward(device) -> None:
    x = _leaf([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    with mg.no_grad():
        x.sub_(1.0)
    with pytest.raises(RuntimeError, match=STALE):
        y.backward()


def test_mg_grad_checks_versions_too(device) -> None:
    x = _leaf([1.0, 2.0], device)
    y = (x * x).sum()
    with mg.no_grad():
        x.div_(2.0)
    with pytest.raises(RuntimeError, match=STALE):
        mg.grad(y, x)


@pytest.mark.parametrize("optimizer", ["SGD", "momentum", "Adam", "AdamW"])
def test_every_optimizer_step_bumps_the_versions(device, optimizer) -> None:
    w = nn.Parameter(mg.ones(3, device=device))
    make = {
        "SGD": lambda: mg.optim.SGD([w], lr=0.1),
        "momentum": lambda: mg.optim.SGD([w], lr=0.1, momentum=0.9),
        "Adam": lambda: mg.optim.Adam([w], lr=0.1),
        "AdamW": lambda: mg.optim.AdamW([w], lr=0.1),
    }[optimizer]
    opt = make()
    y = (w * w).sum()
    w.grad = mg.ones(3, device=device)
    opt.step()
    assert w._version == 1
    with pytest.raises(RuntimeError, match=STALE):
        y.backward()


def test_training_in_the_right_order_never_raises(device) -> None:
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).to(device)
    opt = mg.optim.Adam(model.parameters(), lr=0.01)
    x = mg.randn(8, 3, device=device)
    for _ in range(3):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        mg.optim.clip_grad_norm_(model.parameters(), 1.0)  # changes .grad, not the parameters
        opt.step()
    assert all(p._version == 3 for p in model.parameters())


# -------------------------------------------------------------------- the in-place methods
def test_in_place_methods_compute_and_bump_once_each(device) -> None:
    t = _leaf([1.0, -2.0, 3.0], device, requires_grad=False)
    expected = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    steps = [
        (lambda: t.add_(1.0), lambda e: e + 1.0),
        (lambda: t.add_(_leaf([1.0, 1.0, 1.0], device, False), alpha=2.0), lambda e: e + 2.0),
        (lambda: t.sub_(0.5), lambda e: e - 0.5),
        (lambda: t.mul_(_leaf([2.0, 2.0, 2.0], device, False)), lambda e: e * 2.0),
        (lambda: t.div_(4.0), lambda e: e / 4.0),
        (lambda: t.clamp_(min=0.0, max=1.0), lambda e: np.clip(e, 0.0, 1.0)),
        (lambda: t.copy_(mg.tensor([7.0, 8.0, 9.0])), lambda e: np.array([7.0, 8.0, 9.0])),  # from the host
        (lambda: t.fill_(mg.tensor(4.0, device=device)), lambda e: np.full(3, 4.0)),
        (lambda: t.zero_(), lambda e: np.zeros(3)),
    ]
    for version, (change, reference) in enumerate(steps, start=1):
        assert change() is t
        expected = reference(expected)
        np.testing.assert_allclose(t.numpy(), expected, rtol=1e-6)
        assert t._version == version


def test_in_place_methods_refuse_bad_values(device) -> None:
    t = _leaf([1.0, 2.0, 3.0], device, requires_grad=False)
    with pytest.raises(ValueError, match=r"add_: a value of shape \(2,\) cannot be broadcast to this tensor's shape"):
        t.add_(_leaf([1.0, 2.0], device, False))
    with pytest.raises(ValueError, match=r"fill_: expects a number or a 0-d tensor"):
        t.fill_(_leaf([1.0, 2.0, 3.0], device, False))
    with pytest.raises(TypeError, match="cannot write float32 values into a tensor of dtype int64"):
        mg.tensor([1, 2, 3]).to(device).add_(_leaf([1.0, 1.0, 1.0], device, False))
    assert t._version == 0


def test_writing_a_value_that_requires_grad_in_place_is_refused(device) -> None:
    buffer = mg.zeros(3, device=device)
    x = _leaf([1.0, 2.0, 3.0], device)
    for change in (lambda: buffer.__setitem__(0, x[1]), lambda: buffer.copy_(x), lambda: buffer.add_(x)):
        with pytest.raises(RuntimeError, match="requires grad, but an in-place write is not recorded"):
            change()
    with mg.no_grad():
        buffer[0] = x[1]  # no gradient wanted: allowed
    assert buffer.numpy()[0] == 2.0


def test_data_is_the_documented_unchecked_escape_hatch() -> None:
    doc = inspect.getdoc(mg.Tensor.data)  # help(mg.Tensor) shows it too
    assert "escape hatch" in doc and "no version" in doc
    x = mg.ones(2, requires_grad=True)
    y = (x * x).sum()
    x.data[0] = 3.0  # unchecked, as in PyTorch
    y.backward()
    assert x._version == 0


def test_the_saved_version_is_named_even_after_many_changes(device) -> None:
    x = _leaf([1.0, 2.0], device)
    y = (x * x).sum()
    with mg.no_grad():
        for _ in range(3):
            x.add_(1.0)
    with pytest.raises(RuntimeError, match="now at version 3, but was at version 0 when saved"):
        y.backward(retain_graph=True)
    with mg.no_grad():
        for _ in range(97):  # more changes than a version keeps the times of
            x.add_(1.0)
    with pytest.raises(RuntimeError, match=r"now at version 100, but was at version \d+ or less when saved"):
        y.backward()


def test_a_change_through_a_view_of_a_saved_output_is_seen(device) -> None:
    x = _leaf([0.5, 1.0], device)
    y = x.exp()
    z = y.sum()
    first = y[0]  # a view made after the forward pass: it shares y's version
    with mg.no_grad():
        first.fill_(0.0)
    with pytest.raises(RuntimeError, match=r"Exp.backward: its output \(shape \(2,\)\) was changed"):
        z.backward()


@given(data=st.data())
def test_clone_is_a_differentiable_copy_with_its_own_version(device, data) -> None:
    values = data.draw(noncontiguous(arrays(shapes())))
    x = mg.Tensor(values, device=device, requires_grad=True)
    copy = x.clone()
    np.testing.assert_array_equal(copy.detach().numpy(), values)
    mg.gradcheck(lambda t: t.clone() * 2.0, x)
    mg.gradgradcheck(lambda t: t.clone() * t, x)
    with mg.no_grad():
        copy.detach().add_(1.0)
    assert copy._version == 1 and x._version == 0  # its own memory, its own version
    np.testing.assert_array_equal(x.detach().numpy(), values)


def test_loading_weights_or_ema_averages_invalidates_graphs_built_with_the_old_weights():
    # A forward pass saved the old weights; overwriting them (load_state_dict, EMA.copy_to)
    # must make that backward refuse, as an optimiser step does.
    model = mg.nn.Linear(3, 2)
    x = mg.randn(4, 3, requires_grad=True)
    loss = model(x).sum()
    model.load_state_dict({k: v.detach() * 2 for k, v in model.state_dict().items()})
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()

    ema = mg.optim.EMA(model, decay=0.5)
    loss = model(x).sum()
    ema.copy_to(model)
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()
