"""Dropout, embedding and linear: forward against NumPy, gradcheck, the random mask's
statistics, repeated-index accumulation, error messages, and PyTorch as oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.dropout import dropout
from minigen.ops.embedding import embedding
from minigen.ops.linear import linear
from minigen.testing import arrays, noncontiguous, shapes


def on(device: str, array: np.ndarray, requires_grad: bool = False) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


# ------------------------------------------------------------------------------- dropout
@given(x=arrays(shapes(max_side=4)), data=st.data(), p=st.sampled_from([0.2, 0.5, 0.9]))
def test_dropout_with_explicit_mask(device, x, data, p):
    mask = data.draw(st.lists(st.booleans(), min_size=x.size, max_size=x.size).map(lambda m: np.reshape(m, x.shape)))
    m = on(device, mask)
    y = dropout(on(device, x), p=p, mask=m)
    np.testing.assert_allclose(host(y), x * mask / (1 - p), rtol=1e-12)
    mg.gradcheck(lambda a: dropout(a, p=p, mask=m), on(device, x, True))
    # a 0/1 float mask means the same thing as a bool mask
    np.testing.assert_array_equal(host(dropout(on(device, x), p=p, mask=on(device, mask.astype(np.float64)))), host(y))


def test_dropout_random_mask_statistics(device):
    x = on(device, np.ones((200, 250), np.float32), True)
    y = dropout(x, p=0.3)
    values = host(y)
    kept = values != 0
    assert y.dtype == np.float32
    assert abs(kept.mean() - 0.7) < 0.01  # 50,000 draws: the standard error is 0.002
    np.testing.assert_allclose(values[kept], 1 / 0.7, rtol=1e-6)  # inverted dropout: E[y] = x
    y.sum().backward()
    np.testing.assert_array_equal(host(x.grad), values)  # the gradient uses the same mask and scale


def test_dropout_is_repeatable_with_manual_seed(device):
    x = on(device, np.ones((8, 9)))
    mg.manual_seed(123)
    first = host(dropout(x, p=0.5))
    mg.manual_seed(123)
    np.testing.assert_array_equal(host(dropout(x, p=0.5)), first)
    assert not np.array_equal(host(dropout(x, p=0.5)), first)


def test_dropout_gradcheck_with_random_mask(device):
    # gradcheck re-seeds before every evaluation, so the random mask stays the same
    mg.gradcheck(lambda a: dropout(a, p=0.4), on(device, np.random.default_rng(0).standard_normal((4, 5)), True))


def test_dropout_edge_cases(device):
    x = on(device, np.arange(1.0, 7.0).reshape(2, 3))
    assert dropout(x, p=0.5, training=False) is x
    assert dropout(x, p=0.0) is x
    np.testing.assert_array_equal(host(dropout(x, p=1.0)), np.zeros((2, 3)))
    row_mask = on(device, np.array([True, False, True]))  # broadcast over rows
    np.testing.assert_array_equal(host(dropout(x, p=0.5, mask=row_mask)), host(x) * [2.0, 0.0, 2.0])


def test_dropout_errors():
    x = mg.ones(2, 3)
    with pytest.raises(ValueError, match=r"dropout: probability p must be in \[0, 1\], got 1.5"):
        dropout(x, p=1.5)
    with pytest.raises(ValueError, match=r"dropout: mask shape \(4,\) does not broadcast to input shape \(2, 3\)"):
        dropout(x, mask=mg.ones(4))
    with pytest.raises(ValueError, match=r"mask shape \(5, 2, 3\) does not broadcast"):
        dropout(x, mask=mg.ones(5, 2, 3))
    with pytest.raises(RuntimeError, match="dropout: mask is on standin but the input is on cpu"):
        dropout(x, mask=mg.ones(2, 3).to("standin"))


# ----------------------------------------------------------------------------- embedding
@given(data=st.data())
def test_embedding(device, data):
    vocab, dim = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3))
    idx_shape = data.draw(shapes(min_dims=0, max_dims=2, max_side=4))
    idx = np.array(
        data.draw(
            st.lists(st.integers(0, vocab - 1), min_size=int(np.prod(idx_shape)), max_size=int(np.prod(idx_shape)))
        )
    )
    idx = idx.reshape(idx_shape).astype(np.int64)
    w = data.draw(arrays(st.just((vocab, dim))))
    i = on(device, idx)
    out = embedding(i, on(device, w))
    assert out.shape == idx_shape + (dim,)
    np.testing.assert_array_equal(host(out), w[idx])
    mg.gradcheck(lambda table: embedding(i, table), on(device, w, True))
    mg.gradgradcheck(lambda table: embedding(i, table) ** 2, on(device, w, True))


def test_embedding_repeated_indices_accumulate(device):
    w = on(device, np.arange(12.0).reshape(4, 3), True)
    idx = on(device, np.array([[1, 3, 1], [1, 0, 3]]))
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    embedding(idx, w).backward(on(device, g))
    expected = np.zeros((4, 3))
    for position, row in np.ndenumerate(host(idx)):
        expected[row] += g[position]
    np.testing.assert_allclose(host(w.grad), expected, rtol=1e-12)
    assert np.all(host(w.grad)[2] == 0)  # a row never looked up gets no gradient


def test_embedding_padding_idx_gets_no_gradient(device):
    w = on(device, np.random.default_rng(1).standard_normal((5, 2)), True)
    idx = on(device, np.array([0, 2, 2, 4, 0]))
    out = embedding(idx, w, padding_idx=2)
    np.testing.assert_array_equal(host(out)[1], host(w)[2])  # the forward still looks it up
    out.sum().backward()
    np.testing.assert_array_equal(host(w.grad), [[2, 2], [0, 0], [0, 0], [0, 0], [1, 1]])


def test_embedding_errors():
    w = mg.zeros(4, 3)
    with pytest.raises(TypeError, match=r"embedding: indices must be an integer tensor, got dtype float32"):
        embedding(mg.tensor([0.0, 1.0]), w)
    with pytest.raises(IndexError, match=r"embedding: index 4 is out of range for a table of 4 embeddings"):
        embedding(mg.tensor([0, 4]), w)
    with pytest.raises(IndexError, match="index -1 is out of range"):
        embedding(mg.tensor([-1]), w)
    with pytest.raises(RuntimeError, match="embedding: indices are on cpu but weight is on standin"):
        embedding(mg.tensor([0]), w.to("standin"))


# -------------------------------------------------------------------------------- linear
@given(data=st.data(), with_bias=st.booleans())
def test_linear(device, data, with_bias):
    lead = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x = data.draw(noncontiguous(arrays(lead + (n_in,))))
    w = data.draw(arrays(st.just((n_out, n_in))))
    b = data.draw(arrays(st.just((n_out,)))) if with_bias else None
    params = [on(device, w, True)] + ([on(device, b, True)] if with_bias else [])
    expected = x @ w.T + (b if with_bias else 0)
    out = linear(on(device, x), *params)
    assert out.shape == lead + (n_out,)
    np.testing.assert_allclose(host(out), expected, rtol=1e-12, atol=1e-12)
    assert linear(on(device, x.astype(np.float32)), on(device, w.astype(np.float32))).dtype == np.float32
    mg.gradcheck(linear, on(device, x, True), *params)
    mg.gradgradcheck(linear, on(device, x, True), *params)


def test_linear_errors():
    with pytest.raises(ValueError, match=r"linear: input shape \(2, 3\) does not end in in_features=4"):
        linear(mg.zeros(2, 3), mg.zeros(5, 4))
    with pytest.raises(ValueError, match=r"linear: bias shape \(4,\) does not match out_features=5"):
        linear(mg.zeros(2, 4), mg.zeros(5, 4), mg.zeros(4))
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        linear(mg.zeros(2, 4), mg.zeros(4))


# ------------------------------------------------------------------------ PyTorch oracle
@pytest.mark.torch
def test_against_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    # linear on a 3-D input
    a, w_np, b_np = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    g = rng.standard_normal((2, 3, 5))
    x, w, b = (mg.tensor(v, requires_grad=True) for v in (a, w_np, b_np))
    linear(x, w, b).backward(mg.tensor(g))
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (a, w_np, b_np))
    F.linear(xt, wt, bt).backward(torch.tensor(g))
    for ours, theirs in ((x, xt), (w, wt), (b, bt)):
        np.testing.assert_allclose(host(ours.grad), theirs.grad.numpy(), rtol=1e-12, atol=1e-14)
    # embedding with repeats and padding_idx
    table = rng.standard_normal((6, 3))
    idx = rng.integers(0, 6, size=(4, 5))
    g = rng.standard_normal((4, 5, 3))
    for padding_idx in (None, 2):
        w = mg.tensor(table, requires_grad=True)
        embedding(mg.tensor(idx), w, padding_idx=padding_idx).backward(mg.tensor(g))
        wt = torch.tensor(table, requires_grad=True)
        F.embedding(torch.tensor(idx), wt, padding_idx=padding_idx).backward(torch.tensor(g))
        np.testing.assert_allclose(host(w.grad), wt.grad.numpy(), rtol=1e-12, atol=1e-14)
    # dropout with the same mask: PyTorch's output equals x * mask / (1 - p) where it kept
    xt = torch.tensor(rng.standard_normal((50, 40)))
    yt = F.dropout(xt, p=0.25)
    mask = (yt != 0).numpy()
    y = dropout(mg.tensor(xt.numpy()), p=0.25, mask=mg.tensor(mask))
    np.testing.assert_allclose(host(y), yt.numpy(), rtol=1e-14)
