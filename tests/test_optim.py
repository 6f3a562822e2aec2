"""Optimisers, gradient clipping and LR schedules, checked against PyTorch and closed forms."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

from minigen import optim, serialization
from minigen.tensor import Tensor
from minigen.testing import forbid_host_reads

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (4,), (2, 2, 2)]


def _params_pair(seed: int = 0, device: str = "cpu") -> tuple[list[Tensor], list]:
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    ours = [Tensor(v.copy(), device=device, requires_grad=True) for v in values]
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in values]
    return ours, theirs


def _run_both(make_ours, make_theirs, steps: int = 6, device: str = "cpu") -> tuple[list[Tensor], list]:
    """Step both optimisers with the same random gradients; return the final parameters."""
    ours, theirs = _params_pair(device=device)
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad = Tensor(g.copy(), device=device)
            q.grad = torch.tensor(g.copy())
        opt_ours.step()
        opt_theirs.step()
    return ours, theirs


def _assert_same(ours: list[Tensor], theirs: list) -> None:
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.3},
        {"momentum": 0.8, "nesterov": True},
        {"momentum": 0.9, "weight_decay": 0.05},
        {"weight_decay": 0.1},
    ],
)
def test_sgd_matches_pytorch(kwargs: dict) -> None:
    ours, theirs = _run_both(
        lambda ps: optim.SGD(ps, lr=0.1, **kwargs), lambda ps: torch.optim.SGD(ps, lr=0.1, **kwargs)
    )
    _assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [{}, {"betas": (0.8, 0.99), "eps": 1e-6}, {"weight_decay": 0.1}])
def test_adam_matches_pytorch(kwargs: dict) -> None:
    ours, theirs = _run_both(
        lambda ps: optim.Adam(ps, lr=0.01, **kwargs), lambda ps: torch.optim.Adam(ps, lr=0.01, **kwargs)
    )
    _assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.3, "betas": (0.5, 0.9)}])
def test_adamw_matches_pytorch(kwargs: dict) -> None:
    ours, theirs = _run_both(
        lambda ps: optim.AdamW(ps, lr=0.05, **kwargs), lambda ps: torch.optim.AdamW(ps, lr=0.05, **kwargs)
    )
    _assert_same(ours, theirs)


def test_adam_and_adamw_differ_only_by_weight_decay_coupling() -> None:
    a, _ = _run_both(lambda ps: optim.Adam(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05))
    w, _ = _run_both(lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.0), lambda ps: torch.optim.Adam(ps, lr=0.05))
    _assert_same(a, [t.detach() for t in w])
    d, _ = _run_both(lambda ps: optim.AdamW(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05))
    assert not np.allclose(a[0].detach().numpy(), d[0].detach().numpy())


def test_param_groups_have_their_own_settings() -> None:
    def ours(ps):
        return optim.SGD([{"params": ps[:1], "lr": 0.5}, {"params": ps[1:], "momentum": 0.9}], lr=0.1)

    def theirs(ps):
        return torch.optim.SGD([{"params": ps[:1], "lr": 0.5}, {"params": ps[1:], "momentum": 0.9}], lr=0.1)

    o, t = _run_both(ours, theirs)
    _assert_same(o, t)
    opt = ours(_params_pair()[0])
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.0
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": o[:1]}, {"params": o[:2]}], lr=0.1)
    with pytest.raises(TypeError, match="not a single Tensor"):
        optim.SGD(o[0], lr=0.1)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.1)])
def test_step_updates_in_place_and_leaves_gradients_alone(make) -> None:
    ours, _ = _params_pair()
    opt = make(ours)
    arrays = [p.data for p in ours]
    shared = Tensor(np.ones(SHAPES[0]))
    ours[0].grad = shared
    ours[1].grad = None  # a parameter without a gradient is skipped
    ours[2].grad = Tensor(np.ones(SHAPES[2]))
    before = [p.detach().numpy().copy() for p in ours]
    opt.step()
    assert all(p.data is a for p, a in zip(ours, arrays))  # the same arrays, updated in place
    np.testing.assert_array_equal(shared.numpy(), np.ones(SHAPES[0]))  # the gradient is untouched
    np.testing.assert_array_equal(ours[1].detach().numpy(), before[1])
    assert not np.allclose(ours[0].detach().numpy(), before[0])


def test_zero_grad() -> None:
    ours, _ = _params_pair()
    opt = optim.SGD(ours, lr=0.1)
    for p in ours:
        p.grad = Tensor(np.ones(p.shape))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in ours)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_step_and_clipping_run_on_the_device_without_host_reads(name: str, device: str) -> None:
    make = {
        "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "adam": lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.01),
        "adamw": lambda ps: optim.AdamW(ps, lr=0.1),
    }[name]
    expected, _ = _params_pair()
    ours, _ = _params_pair(device=device)
    cpu_opt, dev_opt = make(expected), make(ours)
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(3)]
    for step_grads in grads:
        for p, g in zip(expected, step_grads):
            p.grad = Tensor(g)
        optim.clip_grad_norm_(expected, 1.0)
        cpu_opt.step()
    device_grads = [[Tensor(g, device=device) for g in step_grads] for step_grads in grads]
    # On the stand-in GPU every read of a device value back to the host raises.
    with forbid_host_reads() if device == "standin" else contextlib.nullcontext():
        for step_grads in device_grads:
            for p, g in zip(ours, step_grads):
                p.grad = g
            optim.clip_grad_norm_(ours, 1.0)
            dev_opt.step()
    for p, q in zip(ours, expected):
        assert p.device == device
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_pytorch(norm_type: float, max_norm: float) -> None:
    ours, theirs = _params_pair()
    rng = np.random.default_rng(5)
    for p, q in zip(ours, theirs):
        g = rng.standard_normal(p.shape)
        p.grad = Tensor(g.copy())
        q.grad = torch.tensor(g.copy())
    total = optim.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, Tensor)
    np.testing.assert_allclose(total.numpy(), expected.numpy(), rtol=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_scales_a_shared_gradient_once() -> None:
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    (a + b).sum().backward()  # autograd hands both leaves the same gradient array
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    np.testing.assert_allclose(total.numpy(), 2.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 0.5], rtol=1e-5)


def test_clip_grad_value_matches_pytorch() -> None:
    ours, theirs = _params_pair()
    for p, q in zip(ours, theirs):
        g = np.linspace(-2, 2, p.numel()).reshape(p.shape)
        p.grad, q.grad = Tensor(g.copy()), torch.tensor(g.copy())
    optim.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy())


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda o: optim.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
        ),
        (lambda o: optim.StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (
            lambda o: optim.LinearLR(o, 0.1, 1.0, 4),
            lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 4),
        ),
        (
            lambda o: optim.LambdaLR(o, lambda t: 0.9**t),
            lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.9**t),
        ),
    ],
)
def test_schedules_match_pytorch(ours, theirs) -> None:
    p, q = _params_pair()
    opt_ours, opt_theirs = optim.SGD(p, lr=0.5), torch.optim.SGD(q, lr=0.5)
    ours_lrs = _lrs(ours(opt_ours), opt_ours, 14)
    theirs_lrs = _lrs(theirs(opt_theirs), opt_theirs, 14)
    np.testing.assert_allclose(ours_lrs, theirs_lrs, rtol=1e-9, atol=1e-12)


def test_warmup_cosine_closed_form() -> None:
    opt = optim.AdamW(_params_pair()[0], lr=1.0)
    scheduler = optim.warmup_cosine(opt, warmup_steps=4, total_steps=12, eta_min=0.1)
    lrs = _lrs(scheduler, opt, 15)
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])  # linear warmup, non-zero from the start
    for t in range(4, 13):
        expected = 0.1 + 0.9 * (1 + math.cos(math.pi * (t - 4) / 8)) / 2
        assert lrs[t] == pytest.approx(expected)
    assert lrs[8] == pytest.approx(0.55)  # half way down the cosine
    assert lrs[12:] == pytest.approx([0.1] * 3)  # stays at eta_min after total_steps
    assert opt.param_groups[0]["lr"] == scheduler.get_last_lr()[0]


def test_linear_warmup_and_per_group_lambdas() -> None:
    params = _params_pair()[0]
    opt = optim.SGD([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.1}])
    scheduler = optim.LinearWarmup(opt, warmup_steps=3)
    lrs = [scheduler.get_last_lr()]
    for _ in range(4):
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    np.testing.assert_allclose(lrs, [[1 / 3, 1 / 30], [2 / 3, 2 / 30], [1.0, 0.1], [1.0, 0.1], [1.0, 0.1]])
    opt2 = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=1.0)
    lambdas = optim.LambdaLR(opt2, [lambda t: 1.0, lambda t: 0.5**t])
    lambdas.step()
    assert lambdas.get_last_lr() == [1.0, 0.5]


def test_optimizer_state_dict_resumes_exactly(tmp_path) -> None:
    def train(opt, params, grads):
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = Tensor(g)
            opt.step()

    rng = np.random.default_rng(7)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(6)]
    straight, _ = _params_pair()
    opt = optim.AdamW(straight, lr=0.01, betas=(0.8, 0.9))
    train(opt, straight, grads)

    first, _ = _params_pair()
    opt_first = optim.AdamW(first, lr=0.01, betas=(0.8, 0.9))
    train(opt_first, first, grads[:3])
    serialization.save({"optimizer": opt_first.state_dict(), "params": first}, tmp_path / "ckpt.npz")

    checkpoint = serialization.load(tmp_path / "ckpt.npz")
    resumed = [Tensor(t.data, requires_grad=True) for t in checkpoint["params"]]
    opt_resumed = optim.AdamW(resumed, lr=0.5)  # settings come from the state dict
    opt_resumed.load_state_dict(checkpoint["optimizer"])
    assert opt_resumed.param_groups[0]["lr"] == 0.01 and opt_resumed.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt_resumed.state[resumed[0]]["step"] == 3
    train(opt_resumed, resumed, grads[3:])
    for p, q in zip(resumed, straight):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_invalid_settings_are_rejected() -> None:
    params = _params_pair()[0]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(params, lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(params, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
