"""nn.Module: registration, traversal order, modes, devices, state dicts and containers."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen.tensor import Tensor


class Affine(nn.Module):
    """y = x A + c, with a persistent buffer, a non-persistent buffer and a plain attribute."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.A = nn.Parameter(mg.randn(n_in, n_out))
        self.c = nn.Parameter(mg.zeros(n_out))
        self.register_buffer("calls", mg.zeros((), dtype=mg.int64))
        self.register_buffer("scratch", mg.ones(n_out), persistent=False)
        self.note = mg.ones(3)  # a plain tensor attribute: not registered

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.A + self.c

    def extra_repr(self) -> str:
        return f"{self.A.shape[0]} -> {self.A.shape[1]}"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(mg.ones(1))
        self.first = Affine(3, 4)
        self.blocks = nn.ModuleList([Affine(4, 4), Affine(4, 2)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x) * self.scale
        for block in self.blocks:
            x = block(x).tanh()
        return x


def test_parameter_is_a_leaf_tensor_that_requires_grad() -> None:
    p = nn.Parameter(mg.randn(2, 3))
    assert isinstance(p, nn.Parameter) and isinstance(p, Tensor)
    assert p.requires_grad and p.is_leaf
    assert not isinstance(mg.randn(2), nn.Parameter)
    (p * p).sum().backward()  # autograd treats it as a leaf
    np.testing.assert_allclose(p.grad.numpy(), 2 * p.detach().numpy())
    assert repr(p).startswith("Parameter containing:\ntensor(")
    frozen = nn.Parameter(mg.zeros(2), requires_grad=False)
    assert not frozen.requires_grad


def test_registration_puts_each_kind_in_its_place() -> None:
    m = Affine(3, 4)
    assert list(m._parameters) == ["A", "c"]
    assert list(m._buffers) == ["calls", "scratch"]
    assert "note" not in m._parameters and "note" not in m._buffers
    assert m.A is m._parameters["A"]  # attribute access finds registered entries
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing  # noqa: B018
    with pytest.raises(TypeError, match="nn.Parameter"):
        m.A = mg.randn(3, 4)  # a plain tensor cannot silently replace a parameter
    m.c = None  # a parameter slot may be emptied, e.g. to drop a bias
    assert m.c is None and [n for n, _ in m.named_parameters()] == ["A"]
    del m.A
    assert list(m._parameters) == ["c"]


def test_assigning_before_init_gives_a_hint() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(mg.ones(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__\\(\\)"):
        Broken()


def test_named_parameters_order_and_names() -> None:
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["scale", "first.A", "first.c", "blocks.0.A", "blocks.0.c", "blocks.1.A", "blocks.1.c"]
    assert [p for p in net.parameters()] == [p for _, p in net.named_parameters()]
    assert [name for name, _ in net.named_modules()] == ["", "first", "blocks", "blocks.0", "blocks.1"]
    assert [type(c).__name__ for c in net.children()] == ["Affine", "ModuleList"]
    assert [name for name, _ in net.named_buffers()] == [
        "first.calls",
        "first.scratch",
        "blocks.0.calls",
        "blocks.0.scratch",
        "blocks.1.calls",
        "blocks.1.scratch",
    ]
    assert [name for name, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert net.num_parameters() == 1 + (12 + 4) + (16 + 4) + (8 + 2)
    assert net.get_submodule("blocks.1") is net.blocks[1]


def test_shared_parameters_and_modules_are_listed_once() -> None:
    shared = Affine(2, 2)
    outer = nn.Sequential(shared, nn.Sequential(shared))
    assert len(list(outer.parameters())) == 2
    assert len(list(outer.modules())) == 3
    # state_dict lists a shared module under each of its names, as PyTorch does
    assert list(outer.state_dict()) == ["0.A", "0.c", "0.calls", "1.0.A", "1.0.c", "1.0.calls"]


def test_deep_nesting_does_not_recurse() -> None:
    inner: nn.Module = Affine(1, 1)
    for _ in range(3000):  # deeper than Python's recursion limit
        inner = nn.Sequential(inner)
    assert len(list(inner.parameters())) == 2


def test_train_eval_propagate_to_every_submodule() -> None:
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.blocks.train()
    assert not net.training and not net.first.training and all(b.training for b in net.blocks)
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_and_requires_grad_() -> None:
    net = Net()
    net(mg.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0.0 for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.first.requires_grad_(False)
    net(mg.randn(5, 3)).sum().backward()
    assert net.first.A.grad is None and net.blocks[0].A.grad is not None


def test_apply_visits_children_before_parents() -> None:
    visited = []
    Net().apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Affine", "Affine", "Affine", "ModuleList", "Net"]


def test_to_standin_moves_parameters_buffers_and_grads_in_place() -> None:
    net = Net()
    net(mg.randn(2, 3)).sum().backward()
    params = list(net.parameters())
    expected = {name: t.numpy() for name, t in net.state_dict().items()}
    assert net.to("standin") is net
    assert list(net.parameters()) == params  # the same Parameter objects (an optimiser keeps working)
    assert all(p.device == "standin" and p.grad.device == "standin" for p in net.parameters())
    assert all(b.device == "standin" for b in net.buffers())  # non-persistent buffers move too
    for name, t in net.state_dict().items():
        np.testing.assert_array_equal(t.numpy(), expected[name])
    out = net(mg.randn(2, 3, device="standin"))  # the forward runs on the device
    assert out.device == "standin"
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())


def test_to_dtype_casts_floating_point_only() -> None:
    net = Net().to(mg.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.first.calls.dtype == np.int64  # an integer counter stays an integer
    assert net.first.scratch.dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to("standin", mg.float64)
    assert all(p.device == "standin" and p.dtype == np.float64 for p in net.parameters())


def test_repr_is_nested_like_pytorch() -> None:
    text = repr(Net())
    assert text == (
        "Net(\n"
        "  (first): Affine(3 -> 4)\n"
        "  (blocks): ModuleList(\n"
        "    (0): Affine(4 -> 4)\n"
        "    (1): Affine(4 -> 2)\n"
        "  )\n"
        ")"
    )


def test_state_dict_order_and_round_trip() -> None:
    source, target = Net(), Net()
    source.first.calls.fill_(7)
    state = source.state_dict()
    assert list(state)[:4] == ["scale", "first.A", "first.c", "first.calls"]
    assert "first.scratch" not in state  # non-persistent
    assert all(not t.requires_grad for t in state.values())
    weight_before = target.first.A
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.first.A is weight_before  # loaded in place
    for name, t in target.state_dict().items():
        np.testing.assert_array_equal(t.numpy(), state[name].numpy())
    x = mg.randn(4, 3)
    np.testing.assert_allclose(target(x).detach().numpy(), source(x).detach().numpy(), rtol=1e-6)
    # The module copies the values: changing the state dict afterwards does not touch it.
    state["first.A"].fill_(0.0)
    assert float(target.first.A.abs().sum()) > 0


def test_load_state_dict_moves_values_to_the_module_device_and_dtype() -> None:
    source = Net()
    host_state = {k: v.numpy() for k, v in source.state_dict().items()}
    target = Net().to("standin", mg.float64)
    target.load_state_dict({k: mg.tensor(v, device="standin") for k, v in host_state.items()})
    cpu_target = Net().to(mg.float64)
    cpu_target.load_state_dict({k: mg.tensor(v, device="standin") for k, v in host_state.items()})
    for net in (target, cpu_target):
        for name, t in net.state_dict().items():
            assert t.dtype == (np.int64 if name.endswith("calls") else np.float64)
            np.testing.assert_allclose(t.numpy(), host_state[name], rtol=1e-6)
    assert all(p.device == "standin" for p in target.parameters())
    assert all(p.device == "cpu" for p in cpu_target.parameters())
    # NumPy arrays are accepted as values too
    Net().load_state_dict(host_state)


def test_load_state_dict_reports_every_problem_in_one_error() -> None:
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    state = dict(Net().state_dict())
    del state["first.c"]
    state["extra.weight"] = mg.zeros(2)
    state["blocks.1.A"] = mg.zeros(5, 5)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "missing keys: first.c" in message
    assert "unexpected keys: extra.weight" in message
    assert "blocks.1.A: checkpoint (5, 5), model (4, 2)" in message
    for k, v in net.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(v.numpy(), before[k])

    # strict=False tolerates missing and unexpected keys, but never a wrong shape
    with pytest.raises(RuntimeError, match="shape mismatches") as info:
        net.load_state_dict(state, strict=False)
    assert "missing keys" not in str(info.value)
    del state["blocks.1.A"]
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["first.c", "blocks.1.A"] and result.unexpected_keys == ["extra.weight"]


@pytest.mark.parametrize(
    ("bad_value", "says"),
    [
        ("three", "dtype <U5 is not numeric"),
        (np.array(2.5), "not whole numbers cannot be loaded into int64"),
        (np.array(np.nan), "not whole numbers"),
        (np.array(1 + 2j), "imaginary part"),
    ],
)
def test_load_state_dict_is_all_or_nothing_when_the_last_entry_is_unusable(bad_value, says) -> None:
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    state = {k: mg.full(tuple(v.shape), 9.0, dtype=v.dtype) for k, v in Net().state_dict().items()}
    last = list(state)[-1]
    assert last == "blocks.1.calls"  # every other entry would be copied before this one
    state[last] = bad_value
    with pytest.raises(RuntimeError, match=f"nothing was loaded(.|\n)*unusable values: blocks.1.calls: .*{says}"):
        net.load_state_dict(state)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    state[last] = np.array(4.0)  # a whole number stored as a float is fine
    net.load_state_dict(state)
    assert net.blocks[1].calls.item() == 4 and net.blocks[1].calls.dtype == np.int64


def test_load_state_dict_refuses_something_that_is_not_a_dict() -> None:
    with pytest.raises(TypeError, match="expected a dict of name -> tensor.*got list"):
        Net().load_state_dict([mg.ones(1)])


def test_sequential_indexing_slicing_and_forward() -> None:
    a, b, c = Affine(3, 4), Affine(4, 4), Affine(4, 2)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    x = mg.randn(2, 3)
    np.testing.assert_allclose(seq(x).detach().numpy(), c(b(a(x))).detach().numpy(), rtol=1e-6)
    replacement = Affine(4, 4)
    seq[1] = replacement
    assert list(seq) == [a, replacement, c]  # replaced in place, order kept
    with pytest.raises(IndexError, match="out of range"):
        seq[3]  # noqa: B018
    named = nn.Sequential(OrderedDict([("encode", Affine(3, 4)), ("decode", Affine(4, 3))]))
    assert [n for n, _ in named.named_parameters()] == ["encode.A", "encode.c", "decode.A", "decode.c"]
    assert named.encode is named[0]
    seq.append(Affine(2, 1))
    assert seq(x).shape == (2, 1)


def test_module_list_and_dict_register_their_entries() -> None:
    layers = nn.ModuleList([Affine(1, 1) for _ in range(3)])
    layers.insert(0, Affine(2, 2))
    del layers[2]
    assert [n for n, _ in layers.named_modules()][1:] == ["0", "1", "2"]
    assert layers[0].A.shape == (2, 2)
    layers += [Affine(5, 5)]
    assert len(layers) == 4 and len(layers[1:]) == 3
    with pytest.raises(NotImplementedError, match="iterate"):
        layers(mg.ones(1))

    heads = nn.ModuleDict({"cls": Affine(2, 3), "reg": Affine(2, 1)})
    heads["aux"] = Affine(2, 2)
    assert list(heads) == ["cls", "reg", "aux"] and "reg" in heads
    assert [n for n, _ in heads.named_parameters()][:2] == ["cls.A", "cls.c"]
    with pytest.raises(KeyError, match="no module 'nope'"):
        heads["nope"]  # noqa: B018


def test_gradients_flow_to_every_parameter() -> None:
    net = Net().to(mg.float64)
    x = mg.randn(3, 3, dtype=mg.float64)
    mg.gradcheck(net, x)


def test_deepcopy_makes_an_independent_model() -> None:
    # e.g. an EMA copy of a diffusion model
    net = Net()
    twin = copy.deepcopy(net)
    assert all(isinstance(p, nn.Parameter) for p in twin.parameters())
    assert all(p is not q and p.data is not q.data for p, q in zip(twin.parameters(), net.parameters()))
    x = mg.randn(2, 3)
    np.testing.assert_array_equal(twin(x).detach().numpy(), net(x).detach().numpy())
    with mg.no_grad():  # a parameter is changed in place only outside the graph, as in PyTorch
        twin.first.A.fill_(0.0)
    assert float(net.first.A.abs().sum()) > 0
