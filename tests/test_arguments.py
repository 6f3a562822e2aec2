"""Arguments validated in one place (minigen/arguments.py), grad mode per thread, hooks,
and the edge cases of issue 11 that used to give silent wrong results or bare crashes."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.nn as nn
from minigen.testing import to_device_like


def _ones(shape, device) -> mg.Tensor:
    return to_device_like(np.ones(shape, dtype=np.float32), device)


# ----------------------------------------------------------------------------------- dims
@given(ndim=st.integers(0, 4), dim=st.integers(-7, 7), new_axis=st.booleans())
def test_normalize_dim_accepts_exactly_the_valid_range(ndim, dim, new_axis) -> None:
    from minigen.arguments import normalize_dim

    size = ndim + 1 if new_axis else max(ndim, 1)
    if -size <= dim < size:
        assert normalize_dim(dim, ndim, "op", new_axis=new_axis) == dim % size
    else:
        message = f"op: dim {dim} is out of range for a tensor with {ndim} dimensions (expected {-size} … {size - 1})"
        with pytest.raises(IndexError) as caught:
            normalize_dim(dim, ndim, "op", new_axis=new_axis)
        assert str(caught.value) == message


def test_cat_dim_error_text_is_exact() -> None:
    a, b = mg.ones(2, 3), mg.ones(2, 3)
    for dim in (2, -3):  # before: (4, 3) for dim=2, and dim=-3 joined along dim 1
        with pytest.raises(IndexError) as caught:
            mg.cat([a, b], dim=dim)
        assert str(caught.value) == f"cat: dim {dim} is out of range for a tensor with 2 dimensions (expected -2 … 1)"


OUT_OF_RANGE = [  # (name, call on a (2, 3) tensor x, op named in the error, dim, expected range)
    ("stack", lambda x: mg.stack([x, x], dim=3), "stack", 3, "-3 … 2"),
    ("stack-negative", lambda x: mg.stack([x, x], dim=-4), "stack", -4, "-3 … 2"),
    ("squeeze", lambda x: x.squeeze(2), "squeeze", 2, "-2 … 1"),
    ("unsqueeze", lambda x: x.unsqueeze(3), "unsqueeze", 3, "-3 … 2"),
    ("unsqueeze-negative", lambda x: x.unsqueeze(-4), "unsqueeze", -4, "-3 … 2"),
    ("flatten", lambda x: x.flatten(0, 2), "flatten", 2, "-2 … 1"),
    ("unflatten", lambda x: x.unflatten(-3, (3, 1)), "unflatten", -3, "-2 … 1"),
    ("split", lambda x: x.split(1, dim=2), "split", 2, "-2 … 1"),
    ("chunk", lambda x: x.chunk(2, dim=4), "chunk", 4, "-2 … 1"),
    ("transpose", lambda x: x.transpose(0, 2), "transpose", 2, "-2 … 1"),
    ("permute", lambda x: x.permute(0, 2), "permute", 2, "-2 … 1"),
    ("argmax", lambda x: x.argmax(dim=5), "argmax", 5, "-2 … 1"),
    ("argmin", lambda x: x.argmin(dim=-3), "argmin", -3, "-2 … 1"),
    ("max", lambda x: x.max(dim=2), "max", 2, "-2 … 1"),
    ("mean", lambda x: x.mean(dim=(0, 2)), "mean", 2, "-2 … 1"),
    ("var", lambda x: x.var(dim=2), "var", 2, "-2 … 1"),
    ("softmax", lambda x: x.softmax(dim=2), "softmax", 2, "-2 … 1"),
    ("log_softmax", lambda x: x.log_softmax(dim=-3), "log_softmax", -3, "-2 … 1"),
    ("size", lambda x: x.size(2), "size", 2, "-2 … 1"),
    ("any", lambda x: (x > 0).any(dim=2), "any", 2, "-2 … 1"),
    ("nn.Flatten", lambda x: nn.Flatten(start_dim=2)(x), "flatten", 2, "-2 … 1"),
    ("nn.Unflatten", lambda x: nn.Unflatten(2, (1, 3))(x), "unflatten", 2, "-2 … 1"),
]


@pytest.mark.parametrize("call, op, dim, valid", [case[1:] for case in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE])
def test_every_dim_argument_is_range_checked(device, call, op, dim, valid) -> None:
    x = _ones((2, 3), device)
    pattern = f"{op}: dim {dim} is out of range for a tensor with 2 dimensions (expected {valid})"
    with pytest.raises(IndexError) as caught:
        call(x)
    assert pattern in str(caught.value)


def test_valid_negative_dims_work_and_other_bad_arguments_are_named(device) -> None:
    x = to_device_like(np.arange(6, dtype=np.float32).reshape(2, 3), device)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(mg.cat([x, x], dim=-2).numpy(), np.concatenate([host, host], axis=0))
    np.testing.assert_array_equal(mg.stack([x, x], dim=-1).numpy(), np.stack([host, host], axis=-1))
    np.testing.assert_array_equal(x.unsqueeze(-1).numpy(), host[..., None])
    np.testing.assert_array_equal(x.transpose(-1, -2).numpy(), host.T)
    np.testing.assert_array_equal(x.argmax(dim=-1).numpy(), host.argmax(axis=-1))
    assert [p.shape for p in x.chunk(2, dim=-1)] == [(2, 2), (2, 1)]
    assert x.size(-1) == 3

    with pytest.raises(ValueError, match=r"permute: \(0, 0\) is not a permutation of the 2 dims"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match=r"permute: \(1,\) is not a permutation"):
        x.permute(1)
    with pytest.raises(ValueError, match="flatten: start_dim 1 comes after end_dim 0"):
        x.flatten(1, 0)
    with pytest.raises(ValueError, match=r"unflatten: sizes \(2, 2\) do not split dim 1 of size 3"):
        x.unflatten(1, (2, 2))
    assert x.unflatten(1, (-1, 1)).shape == (2, 3, 1)
    with pytest.raises(ValueError, match=r"split: sizes \[4, -1\] must be non-negative ints adding up to 3"):
        x.split([4, -1], dim=1)
    with pytest.raises(ValueError, match="chunk: chunks must be a positive int, got 0"):
        x.chunk(0)
    with pytest.raises(IndexError, match=r"sum: dims \(1, -1\) name the same axis twice"):
        x.sum(dim=(1, -1))
    with pytest.raises(TypeError, match=r"sum: dim must be an int, got 1.0"):
        x.sum(dim=1.0)


def test_zero_dim_tensors_take_dim_0_and_minus_1_as_in_pytorch() -> None:
    s = mg.tensor(3.0)
    assert s.sum(dim=0).shape == () and s.squeeze(0).shape == () and s.unsqueeze(-1).shape == (1,)
    assert s.argmax(dim=0).item() == 0 and s.flatten().shape == (1,)
    with pytest.raises(IndexError, match="expected -1 … 0"):
        s.sum(dim=1)


def test_cat_of_0d_tensors_raises_as_pytorch_does() -> None:
    a, b = mg.tensor(1.0), mg.tensor(2.0)
    with pytest.raises(RuntimeError, match=r"cat: zero-dimensional tensor \(at position 0\) cannot be concatenated"):
        mg.cat([a, b])  # before: ZeroDivisionError
    np.testing.assert_array_equal(mg.stack([a, b]).numpy(), [1.0, 2.0])  # the way to join 0-d tensors


# -------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("bad", ["gpu", "b", "e", "d", "f", "cuda:x", "tpu"])
def test_tensor_to_refuses_what_is_neither_a_device_nor_a_dtype_name(bad) -> None:
    t = mg.ones(2)
    with pytest.raises(ValueError, match=rf"to: '{bad}' is neither a device .*'cpu', 'cuda', 'cuda:N'.*float32"):
        t.to(bad)


@pytest.mark.parametrize("bad", ["b", "e", "d", "gpu"])
def test_module_to_refuses_bad_strings_and_keeps_its_weights(bad) -> None:
    layer = nn.Linear(2, 2)
    before = layer.weight.detach().numpy().copy()
    with pytest.raises(ValueError, match="neither a device"):
        layer.to(bad)  # before: "b" made the weights int8, "e" float16, "d" float64
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.detach().numpy(), before)


def test_dtypes_are_accepted_as_objects_or_full_names() -> None:
    t = mg.ones(2)
    assert t.to("float64").dtype == np.float64
    assert t.to(mg.float16).dtype == np.float16
    assert t.to(np.dtype("int32")).dtype == np.int32
    assert t.to("cpu", "float64").dtype == np.float64
    assert nn.Linear(2, 2).to(mg.float64).weight.dtype == np.float64
    assert mg.zeros(2, dtype="int64").dtype == np.int64
    assert mg.tensor([1, 2], dtype=float).dtype == np.float64
    for bad in ("f", "d", "<f4", "i4", "float", "str", object, 5):
        with pytest.raises(ValueError, match="is not a dtype minigen supports.*float32"):
            mg.zeros(2, dtype=bad)
    with pytest.raises(ValueError, match="tensor: 'e' is not a dtype"):
        mg.tensor([1.0], dtype="e")


def test_device_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="tensor: invalid device 'gpu'"):
        mg.Tensor([1.0], device="gpu")
    with pytest.raises(ValueError, match=r"expected a device .*got 0 \(int\)"):
        mg.Tensor([1.0], device=0)
    with pytest.raises(TypeError, match="at most a device and a dtype"):
        mg.ones(2).to("cpu", mg.float32, "cpu")


def test_demo_device_flag_uses_the_same_parser() -> None:
    import argparse

    from minigen.arguments import parse_device_argument

    assert parse_device_argument("cuda:1") == "cuda:1" and parse_device_argument("cpu") == "cpu"
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", type=parse_device_argument)
    with pytest.raises(argparse.ArgumentTypeError, match="invalid device 'gpu'.*'cuda:N'"):
        parse_device_argument("gpu")
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])


# ----------------------------------------------------------------------- grad mode per thread
def _in_thread(work) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_no_grad_in_another_thread_does_not_switch_recording_off_here() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with mg.no_grad():
            inside.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert inside.wait(timeout=30)
        assert mg.is_grad_enabled()  # before: False while the other thread sat in no_grad
        x = mg.ones(2, requires_grad=True)
        assert (x * 2).requires_grad
    finally:
        release.set()
        thread.join(timeout=30)


def test_a_new_thread_starts_with_grad_enabled() -> None:
    seen = []
    with mg.no_grad():
        _in_thread(lambda: seen.append(mg.is_grad_enabled()))
    assert seen == [True]


def test_interleaved_no_grad_blocks_cannot_leave_recording_off() -> None:
    main_in, other_in, main_out = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        assert main_in.wait(timeout=30)
        with mg.no_grad():
            other_in.set()
            assert main_out.wait(timeout=30)  # leave after the main thread has left its block

    thread = threading.Thread(target=other)
    thread.start()
    with mg.no_grad():
        main_in.set()
        assert other_in.wait(timeout=30)
    main_out.set()
    thread.join(timeout=30)
    assert mg.is_grad_enabled()  # before: the other thread restored "off" last, for good


# ------------------------------------------------------------------------------------ hooks
def test_a_leaf_hook_returning_a_0d_gradient_is_refused_by_name() -> None:
    x = mg.ones(3, requires_grad=True)

    def to_scalar(grad):
        return grad.sum()

    x.register_hook(to_scalar)
    with pytest.raises(RuntimeError, match=r"hook '.*to_scalar' returned a gradient of shape \(\) .* shape \(3,\)"):
        (x * 2).sum().backward()  # before: x.grad silently got shape ()
    assert x.grad is None
    # Hooks that return a gradient of the same shape, or None, work as before.
    y = mg.ones(3, requires_grad=True)
    y.register_hook(lambda g: g * 2)
    h = y * 3
    h.register_hook(lambda g: None)
    h.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [6.0, 6.0, 6.0])


def test_a_non_leaf_hook_returning_the_wrong_shape_is_named() -> None:
    x = mg.ones(2, 3, requires_grad=True)
    h = x * 2

    def wrong_shape(grad):
        return grad[0]

    h.register_hook(wrong_shape)
    with pytest.raises(RuntimeError, match=r"hook '.*wrong_shape' returned a gradient of shape \(3,\)") as caught:
        (h * h).sum().backward()
    assert "SumTo" not in str(caught.value)


# ------------------------------------------------------------------------- var/std with N − 1 = 0
def test_var_and_std_with_no_degrees_of_freedom_are_nan() -> None:
    one = mg.tensor([2.0], requires_grad=True)
    assert np.isnan(one.var().item()) and np.isnan(one.std().item())  # before: 0
    rows = mg.tensor([[1.0], [3.0]])
    assert np.isnan(rows.var(dim=1).numpy()).all()
    np.testing.assert_allclose(rows.var(dim=1, correction=0).numpy(), [0.0, 0.0])
    np.testing.assert_allclose(rows.std(dim=0).numpy(), [np.sqrt(2.0)], rtol=1e-6)
    one.var().backward()
    assert np.isnan(one.grad.numpy()).all()


def test_var_and_std_match_pytorch_at_the_edge() -> None:
    torch = pytest.importorskip("torch")
    for values, kwargs in (([2.0], {}), ([[1.0], [3.0]], {"dim": 1}), ([1.0], {"correction": 2})):
        mine = mg.tensor(values, dtype=mg.float64)
        theirs = torch.tensor(values, dtype=torch.float64)
        for name in ("var", "std"):
            got = getattr(mine, name)(**kwargs).numpy()
            with warnings.catch_warnings():  # PyTorch warns that no degrees of freedom are left
                warnings.simplefilter("ignore")
                want = getattr(theirs, name)(**kwargs).numpy()
            assert np.isnan(got).tolist() == np.isnan(want).tolist()
