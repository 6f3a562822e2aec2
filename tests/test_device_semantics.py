"""Where a GPU behaves differently from the CPU, and what minigen does about it.

These are the rows of the CuPy 14 audit (issue 13) that can be tested without a GPU, on
the stand-in device, which imitates CuPy (out-of-range indices wrap, no host data in
slice assignment, CuPy's random Generator API):

* an out-of-range class target or token id: the CPU raises; a GPU cannot check without
  a host sync, so the loss (or the embedding row) is NaN, computed on the device;
* host data assigned into a device tensor is moved to the device on the way in;
* ``rand(dtype=float16)`` works, below 1, on every device;
* Python numbers in expressions are written on the device once and shared;
* comparing a device run with a CPU run draw for draw needs the CPU's numbers on both.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen import backend
from minigen.testing import (
    check_shared_numbers,
    count_host_uploads,
    cpu_random_numbers_on_every_device,
    forbid_host_reads,
)
from minigen.testing.standin import StandInGenerator, standin_xp

GPU_LIKE = "standin"


# ------------------------------------------------------------ out-of-range targets and ids
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_out_of_range_target_makes_the_loss_nan_on_a_gpu_without_a_host_read(reduction):
    logits = mg.randn(4, 3, device=GPU_LIKE, requires_grad=True)
    target = mg.tensor([0, 2, 7, 1], device=GPU_LIKE)  # 7: there are only 3 classes
    with forbid_host_reads():  # the check must not read anything back
        loss = F.cross_entropy(logits, target, reduction=reduction)
        loss.backward()
    assert math.isnan(loss.item())
    assert np.isnan(logits.grad.numpy()).any()  # the gradient carries the NaN too


def test_out_of_range_target_is_nan_only_where_it_is_wrong():
    logits = mg.randn(4, 3, device=GPU_LIKE)
    target = mg.tensor([0, -3, 2, -100], device=GPU_LIKE)  # -3: out of range; -100: ignore_index
    per_position = F.cross_entropy(logits, target, reduction="none").numpy()
    assert np.isnan(per_position).tolist() == [False, True, False, False]
    assert per_position[3] == 0.0  # ignored positions stay 0
    smoothed = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.1).numpy()
    assert np.isnan(smoothed).tolist() == [False, True, False, False]
    weighted = F.nll_loss(logits, target, weight=mg.ones(3, device=GPU_LIKE))
    assert math.isnan(weighted.item())


def test_valid_targets_give_the_same_loss_on_the_gpu_path_as_on_the_cpu():
    logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    target = np.array([3, 0, -100, 1, 2])
    cpu = F.cross_entropy(mg.tensor(logits), mg.tensor(target)).item()
    gpu = F.cross_entropy(mg.tensor(logits, device=GPU_LIKE), mg.tensor(target, device=GPU_LIKE)).item()
    assert gpu == pytest.approx(cpu, rel=1e-6) and not math.isnan(gpu)


def test_out_of_range_target_still_raises_on_the_cpu():
    with pytest.raises(IndexError, match="target 7 is out of range for 3 classes"):
        F.cross_entropy(mg.randn(4, 3), mg.tensor([0, 2, 7, 1]))


def test_out_of_range_embedding_id_gives_nan_rows_on_a_gpu_and_raises_on_the_cpu():
    weight = mg.randn(5, 3, device=GPU_LIKE, requires_grad=True)
    ids = mg.tensor([[0, 6], [4, -9]], device=GPU_LIKE)  # 6 and -9 are outside 0..4
    with forbid_host_reads():
        rows = F.embedding(ids, weight)
        rows.sum().backward()
    values = rows.detach().numpy()
    assert np.isnan(values).all(axis=-1).tolist() == [[False, True], [False, True]]
    assert not np.isnan(values[:, 0]).any()
    np.testing.assert_array_equal(values[0, 0], weight.detach().numpy()[0])
    with pytest.raises(IndexError, match="index 6 is out of range for a table of 5 embeddings"):
        F.embedding(mg.tensor([[0, 6]]), mg.randn(5, 3))


# ------------------------------------------------------------- host data into device tensors
def test_assigning_host_data_into_a_device_tensor_moves_it_there_first():
    t = mg.zeros(2, 3, device=GPU_LIKE)
    t[0] = [1.0, 2.0, 3.0]  # a list into a basic slice: CuPy itself refuses this
    t[1, 1:] = np.array([5.0, 6.0])  # a host array into a basic slice
    t[1, 0] = 4.0  # a scalar stays a scalar
    np.testing.assert_array_equal(t.numpy(), [[1, 2, 3], [4, 5, 6]])
    assert t.dtype == np.float32
    with count_host_uploads() as uploads:
        t[0] = [7.0, 8.0, 9.0]
        t[1, 0] = 1.5
    assert [shape for shape, _ in uploads.arrays] == [(3,)] and uploads.scalars == 0
    with pytest.raises(TypeError, match="Python list in item assignment"):
        t.data[0] = [1.0, 2.0, 3.0]  # the raw array: refused, as CuPy refuses it


# ----------------------------------------------------------------------------- float16 rand
@pytest.mark.parametrize("device", ["cpu", GPU_LIKE])
def test_rand_and_randn_in_float16_work_on_every_device(device):
    u = mg.rand(1000, dtype=mg.float16, device=device)
    n = mg.randn(1000, dtype=mg.float16, device=device)
    assert u.dtype == np.float16 and n.dtype == np.float16 and u.device == device
    values = u.numpy()
    assert values.min() >= 0 and values.max() < 1
    mg.manual_seed(5)
    cpu = mg.rand(50, dtype=mg.float16).numpy()
    mg.manual_seed(5)
    np.testing.assert_array_equal(mg.rand(50, dtype=mg.float16, device=device).numpy(), cpu)


def test_float16_rand_stays_below_one_when_the_float32_draw_rounds_up(monkeypatch):
    class AlmostOne:
        def random(self, size, dtype):
            return np.full(size, np.nextafter(np.float32(1), np.float32(0)), dtype=dtype)

    monkeypatch.setitem(backend._generators, backend.Device("cpu"), AlmostOne())
    assert np.float16(np.nextafter(np.float32(1), np.float32(0))) == 1.0  # the trap
    u = mg.rand(4, dtype=mg.float16).numpy()
    assert u.max() < 1 and u.dtype == np.float16


# ---------------------------------------------------------------------- numbers on the device
def test_python_numbers_are_written_on_the_device_once_and_shared():
    t = mg.ones(3, device=GPU_LIKE)
    a = backend.scalar_array(0.5, np.float32, t.data)
    b = backend.scalar_array(0.5, np.float32, t.data)
    assert a is b and float(a) == 0.5 and a.dtype == np.float32
    assert backend.scalar_array(0.5, np.float64, t.data) is not a  # per dtype
    minus_zero = backend.scalar_array(-0.0, np.float32, t.data)
    assert math.copysign(1, float(minus_zero)) == -1  # -0.0 is not 0.0 (1/x would differ)
    assert backend.scalar_array(0.5, np.float32, np.ones(2)) is not backend.scalar_array(0.5, np.float32, np.ones(2))
    np.testing.assert_array_equal((t * 0.5 - 1.0).numpy(), [-0.5, -0.5, -0.5])


def test_the_shared_numbers_table_is_bounded(monkeypatch):
    monkeypatch.setattr(backend, "_MAX_DEVICE_SCALARS", 8)
    monkeypatch.setattr(backend, "_device_scalars", {})
    t = mg.ones(2, device=GPU_LIKE)
    for step in range(20):  # an LR schedule: a new number every step
        (t * (0.1 + step)).numpy()
    assert 0 < len(backend._device_scalars) <= 8


def test_shared_numbers_are_never_written_to_by_training_steps():
    from minigen.models import gpt, vae

    backend._device_scalars.clear()
    model = gpt.GPT(vocab_size=11, block_size=6, d_model=16, n_layers=1, n_heads=2).to(GPU_LIKE)
    autoencoder = vae.MLPVAE((1, 4, 4), 2, (8,)).to(GPU_LIKE)
    parameters = list(model.parameters()) + list(autoencoder.parameters())
    optimizer = mg.optim.AdamW(parameters, lr=1e-2, weight_decay=0.1)
    idx, x = mg.randint(0, 11, (2, 6), device=GPU_LIKE), mg.rand(3, 1, 4, 4, device=GPU_LIKE)
    for _ in range(3):
        out = autoencoder(x)
        loss = F.cross_entropy(model(idx).reshape(-1, 11), idx.reshape(-1))
        loss = loss + vae.vae_loss(out.x_hat, x, out.mu, out.logvar).loss
        optimizer.zero_grad()
        loss.backward()
        mg.optim.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
    assert check_shared_numbers() >= 4  # 0.5, 1.0, -0.5, ... were shared, and still hold their values


# ---------------------------------------------------------------- the CPU's numbers on a device
def test_cpu_random_numbers_on_every_device_gives_a_device_the_cpus_draws(monkeypatch):
    """Make the stand-in draw another stream (as CuPy's XORWOW does); the helper restores the CPU's."""

    class OtherStream(StandInGenerator):
        def __init__(self, seed):
            super().__init__(seed + 1000)

    monkeypatch.setattr(standin_xp.random, "default_rng", OtherStream)

    def draws(device: str) -> np.ndarray:
        mg.manual_seed(4)
        return np.concatenate([mg.randn(3, device=device).numpy(), mg.rand(3, device=device).numpy()])

    assert not np.array_equal(draws(GPU_LIKE), draws("cpu"))  # the GPU-like stream differs
    with cpu_random_numbers_on_every_device():
        np.testing.assert_array_equal(draws(GPU_LIKE), draws("cpu"))
        mg.manual_seed(4)
        perm = mg.randperm(10, device=GPU_LIKE).numpy()
        mg.manual_seed(4)
        np.testing.assert_array_equal(perm, mg.randperm(10).numpy())
        assert mg.randn(2, device=GPU_LIKE).device == GPU_LIKE
    assert not np.array_equal(draws(GPU_LIKE), draws("cpu"))  # restored on exit
    assert backend.generator is not None and all(
        type(gen).__name__ != "_HostDraws" for gen in backend._generators.values()
    )


def test_check_shared_numbers_catches_a_write(monkeypatch):
    monkeypatch.setattr(backend, "_device_scalars", {})
    t = mg.ones(2, device=GPU_LIKE)
    shared = backend.scalar_array(0.25, np.float32, t.data)
    assert check_shared_numbers() == 1
    shared[...] = 7.0  # the bug the check is for
    with pytest.raises(AssertionError, match="shared number 0.25 on standin now holds 7"):
        check_shared_numbers()
