"""The backend: devices, transfers, scatter-add, RNG, and the stand-in GPU's strictness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen import backend
from minigen.testing.standin import StandInArray, _StandInUfunc


def test_device_parsing():
    assert mg.Device("cpu") == "cpu" and mg.Device("cpu").type == "cpu"
    cuda = mg.Device("cuda")
    assert cuda == "cuda:0" and cuda.type == "cuda" and cuda.index == 0
    assert mg.Device("cuda:3").index == 3
    with pytest.raises(ValueError, match="invalid device"):
        mg.Device("cuda:x")


def test_xp_of_and_transfers_round_trip():
    host = np.arange(6.0).reshape(2, 3)
    dev = backend.to_device(host, "standin")
    assert isinstance(dev, StandInArray) and backend.device_of(dev) == "standin"
    assert backend.xp_of(dev) is not np
    back = backend.asnumpy(dev)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)


def test_standin_refuses_numpy_calls_mixing_and_implicit_conversion():
    dev = backend.to_device(np.ones(3), "standin")
    with pytest.raises(TypeError):
        np.exp(dev)
    with pytest.raises(TypeError):
        np.sum(dev)
    with pytest.raises(TypeError, match="mix a device array with a NumPy array"):
        dev + np.ones(3)
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(dev)
    # but scalars and its own module are fine, as with CuPy
    xp = backend.xp_of(dev)
    out = xp.exp(dev * 2.0 + np.float32(1))
    assert isinstance(out, StandInArray)
    assert isinstance(dev.sum(), StandInArray)  # reductions stay on the device (0-d)


def test_tensor_ops_stay_on_the_standin_device():
    x = mg.randn(3, 4, device="standin", requires_grad=True)
    y = (x @ x.T).relu().sum(dim=0).logsumexp(dim=0)
    y.backward()
    assert isinstance(x.grad.data, StandInArray)
    assert x.grad.device == "standin"


@pytest.mark.parametrize("device", ["cpu", "standin"])
def test_scatter_add_accumulates_repeated_indices(device):
    target = backend.to_device(np.zeros((4, 2)), device)
    index = backend.to_device(np.array([0, 2, 0, 0]), device)
    values = backend.to_device(np.arange(8.0).reshape(4, 2), device)
    backend.scatter_add(target, index, values)
    np.testing.assert_array_equal(backend.asnumpy(target), [[0 + 4 + 6, 1 + 5 + 7], [0, 0], [2, 3], [0, 0]])


def test_scatter_add_with_boolean_and_multi_axis_keys():
    target = np.zeros((3, 3))
    backend.scatter_add(target, (np.array([0, 0, 2]), np.array([1, 1, 2])), np.array([1.0, 2.0, 3.0]))
    assert target[0, 1] == 3 and target[2, 2] == 3
    mask = np.eye(3, dtype=bool)
    backend.scatter_add(target, mask, np.ones(3))
    assert target[1, 1] == 1


def test_cuda_is_optional():
    assert isinstance(mg.cuda.is_available(), bool)
    if not mg.cuda.is_available():
        assert mg.cuda.device_count() == 0


def test_module_to_numpy_is_the_only_way_back():
    t = mg.ones(2, device="standin")
    assert isinstance(t.numpy(), np.ndarray)
    assert t.sum().item() == 2.0


@pytest.mark.parametrize("device", ["cpu", "standin"])
def test_randperm_is_a_seeded_permutation_on_every_device(device):
    mg.manual_seed(3)
    first = backend.asnumpy(mg.randperm(50, device=device).data)
    mg.manual_seed(3)
    again = backend.asnumpy(mg.randperm(50, device=device).data)
    assert sorted(first.tolist()) == list(range(50))
    np.testing.assert_array_equal(first, again)


def test_randperm_without_a_permutation_method_sorts_uniform_draws(monkeypatch):
    """CuPy's Generator may have no permutation(); the fallback must still give one."""

    class DrawsOnly:  # a generator that can only draw uniform numbers, like the fallback expects
        def __init__(self) -> None:
            self._rng = np.random.default_rng(7)

        def random(self, size, dtype):
            return self._rng.random(size, dtype=dtype)

    monkeypatch.setitem(backend._generators, backend.Device("cpu"), DrawsOnly())
    order = backend.random_permutation(1000, "cpu")
    assert sorted(order.tolist()) == list(range(1000))
    assert not np.array_equal(order, np.arange(1000))  # shuffled, not the identity


# ------------------------------------------------------------- the stand-in plugs in
def test_backend_reads_as_numpy_or_cupy_with_one_plug_in_point():
    """The test device is named in one small section of backend.py, not in every function."""
    source = (Path(backend.__file__)).read_text()
    assert "StandInArray" not in source and "minigen.standin" not in source
    assert source.count("minigen.testing.standin") == 1  # the lazy import, and nothing else
    assert not hasattr(backend, "device_context")  # dead code, removed
    x = backend.to_device(np.arange(3.0), "standin")
    assert backend.xp_of(x) is backend.xp_for("standin") and backend.xp_of(x).ndarray is StandInArray
    assert backend.device_of(x) == "standin" and not backend.is_host_array(x) and not backend.is_cuda_array(x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scatter_add_on_a_device_is_cupys_add_at(monkeypatch, dtype):
    """On a GPU-like device scatter_add is ``xp.add.at`` (cupyx.scatter_add is deprecated), for every key kind."""
    calls = []
    at = _StandInUfunc.at

    def recording_at(self, a, indices, b=None):
        calls.append(self._name)
        return at(self, a, indices, b)

    monkeypatch.setattr(_StandInUfunc, "at", recording_at)
    rng = np.random.default_rng(0)
    keys = {
        "duplicates": np.array([0, 2, 0, 0, 3]),
        "tuple": (np.array([0, 1, 1, 0]), np.array([2, 2, 2, 0])),
        "boolean": rng.random((4, 3)) > 0.5,
    }
    for name, key in keys.items():
        target = np.zeros((4, 3), dtype=dtype)
        values = rng.normal(size=np.zeros((4, 3))[key].shape).astype(dtype)
        expected = target.copy()
        np.add.at(expected, key, values)
        on_device = backend.to_device(target, "standin")
        device_key = tuple(backend.to_device(k, "standin") for k in key) if isinstance(key, tuple) else key
        device_key = backend.to_device(device_key, "standin") if isinstance(key, np.ndarray) else device_key
        backend.scatter_add(on_device, device_key, backend.to_device(values, "standin"))
        np.testing.assert_allclose(backend.asnumpy(on_device), expected, rtol=1e-3, err_msg=name)
        assert backend.asnumpy(on_device).dtype == dtype
    assert calls == ["add"] * 3


def test_assignable_moves_host_data_to_the_targets_device():
    target = backend.to_device(np.zeros(3, dtype=np.float32), "standin")
    moved = backend.assignable([1, 2, 3], target)
    assert isinstance(moved, StandInArray) and moved.dtype == np.float32
    assert backend.assignable(2.5, target) == 2.5  # scalars pass unchanged
    host = np.zeros(3)
    assert backend.assignable([1, 2, 3], host) == [1, 2, 3]  # NumPy takes host data as it is
