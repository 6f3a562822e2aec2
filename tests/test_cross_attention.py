"""Cross-attention (``F.cross_attention``, ``nn.CrossAttention``): Q from x (N×d), K and V from a
context (M×d), with a key-padding mask.

Forward against a NumPy transcription of softmax(x W_Qᵀ (c W_Kᵀ)ᵀ/√d + M_pad) c W_Vᵀ with
M ≠ N, gradcheck and gradgradcheck, padding that changes nothing and receives no gradient,
clear errors, and PyTorch's ``nn.MultiheadAttention(bias=False, kdim, vdim)`` as the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.testing import arrays, to_device_like


def reference_cross_attention(x, c, w_q, w_k, w_v, w_o=None, pad=None, heads=1):
    """The formula in NumPy (float64): per head softmax(Q Kᵀ/√d_h + M_pad) V, heads concatenated, then W_O."""
    q, k, v = x @ w_q.T, c @ w_k.T, c @ w_v.T
    b, n, d = q.shape
    m, dv = k.shape[1], v.shape[-1]
    q = q.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)
    k = k.reshape(b, m, heads, d // heads).transpose(0, 2, 1, 3)
    v = v.reshape(b, m, heads, dv // heads).transpose(0, 2, 1, 3)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d // heads)
    if pad is not None:
        scores = scores + np.where(pad[:, None, None, :], -np.inf, 0.0)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    a = e / e.sum(-1, keepdims=True)
    out = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, dv)
    return (out if w_o is None else out @ w_o.T), a


@st.composite
def cross_inputs(draw, max_len=4):
    """x (B, N, d_x), context (B, M, d_c) with N and M drawn independently, weights for h heads,
    and a key-padding mask that leaves each row's first token visible (like a caption's words)."""
    b = draw(st.integers(1, 2))
    n, m = draw(st.integers(1, max_len)), draw(st.integers(1, max_len))
    heads = draw(st.sampled_from([1, 2]))
    d_x, d_c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d, d_v = heads * draw(st.integers(1, 2)), heads * draw(st.integers(1, 2))
    x = draw(arrays((b, n, d_x), -2, 2))
    c = draw(arrays((b, m, d_c), -2, 2))
    w_q, w_k = draw(arrays((d, d_x), -1, 1)), draw(arrays((d, d_c), -1, 1))
    w_v = draw(arrays((d_v, d_c), -1, 1))
    pad = np.array(draw(st.lists(st.booleans(), min_size=b * m, max_size=b * m))).reshape(b, m)
    pad[:, 0] = False
    return x, c, w_q, w_k, w_v, pad, heads


# ------------------------------------------------------------------- forward values
@given(inputs=cross_inputs(), use_mask=st.booleans(), out_proj=st.booleans())
def test_forward_matches_the_formula_with_m_not_n(device, inputs, use_mask, out_proj):
    x, c, w_q, w_k, w_v, pad, heads = inputs
    w_o = np.linspace(-1, 1, 3 * w_v.shape[0]).reshape(3, w_v.shape[0]) if out_proj else None
    pad = pad if use_mask else None
    expected, expected_a = reference_cross_attention(x, c, w_q, w_k, w_v, w_o, pad, heads)
    t = [to_device_like(a, device) for a in (x, c, w_q, w_k, w_v)]
    out, weights = F.cross_attention(
        *t,
        None if w_o is None else to_device_like(w_o, device),
        key_padding_mask=None if pad is None else to_device_like(pad, device),
        num_heads=heads,
        return_weights=True,
    )
    assert out.shape == (x.shape[0], x.shape[1], 3 if out_proj else w_v.shape[0])
    assert weights.shape == (x.shape[0], heads, x.shape[1], c.shape[1])  # N × M, not square
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), expected_a, rtol=1e-10, atol=1e-12)
    if pad is not None:
        assert np.all(weights.numpy()[np.broadcast_to(pad[:, None, None, :], weights.shape)] == 0.0)


@given(inputs=cross_inputs(), data=st.data())
def test_padded_context_tokens_change_nothing(device, inputs, data):
    """New values at padded positions, or more padding appended, leave the output bitwise the same."""
    x, c, w_q, w_k, w_v, pad, heads = inputs
    args = [to_device_like(a, device) for a in (x, w_q, w_k, w_v)]

    def attend(context, mask):
        return F.cross_attention(
            args[0], to_device_like(context, device), *args[1:], key_padding_mask=mask, num_heads=heads
        ).numpy()

    before = attend(c, pad)
    changed = c.copy()
    changed[pad] = data.draw(arrays((int(pad.sum()), c.shape[-1]), -5, 5))
    np.testing.assert_array_equal(attend(changed, pad), before)
    longer = np.concatenate([c, np.full((c.shape[0], 2, c.shape[2]), 7.0)], axis=1)
    longer_pad = np.concatenate([pad, np.ones((pad.shape[0], 2), bool)], axis=1)
    np.testing.assert_allclose(attend(longer, longer_pad), before, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------- gradients
@given(inputs=cross_inputs(max_len=3))
def test_gradcheck_and_gradgradcheck(device, inputs):
    x, c, w_q, w_k, w_v, pad, heads = inputs
    tensors = [to_device_like(a, device, requires_grad=True) for a in (x, c, w_q, w_k, w_v)]
    mask = to_device_like(pad, device)

    def attend(x, c, w_q, w_k, w_v):
        return F.cross_attention(x, c, w_q, w_k, w_v, key_padding_mask=mask, num_heads=heads)

    mg.gradcheck(attend, *tensors)
    mg.gradgradcheck(attend, *tensors)


@given(inputs=cross_inputs())
def test_no_gradient_reaches_padded_tokens(device, inputs):
    x, c, w_q, w_k, w_v, pad, heads = inputs
    xt, ct = to_device_like(x, device, requires_grad=True), to_device_like(c, device, requires_grad=True)
    w = [to_device_like(a, device) for a in (w_q, w_k, w_v)]
    out = F.cross_attention(xt, ct, *w, key_padding_mask=to_device_like(pad, device), num_heads=heads)
    out.backward(mg.ones_like(out))
    grad = ct.grad.numpy()
    assert np.all(grad[pad] == 0.0)
    assert np.any(grad[~pad] != 0.0) or not np.any(w_k) or not np.any(w_v)


def test_module_is_a_biasless_multihead_attention_with_context_width():
    layer = nn.CrossAttention(8, num_heads=2, context_dim=5)
    assert isinstance(layer, nn.MultiheadAttention)
    assert sorted(layer.state_dict()) == ["k_proj_weight", "out_proj.weight", "q_proj_weight", "v_proj_weight"]
    assert layer.k_proj_weight.shape == (8, 5) and layer.v_proj_weight.shape == (8, 5)
    out, weights = layer(mg.randn(3, 7, 8), mg.randn(3, 2, 5), need_weights=True)
    assert out.shape == (3, 7, 8) and weights.shape == (3, 2, 7, 2)
    np.testing.assert_allclose(weights.detach().numpy().sum(-1), 1.0, rtol=1e-6)


# -------------------------------------------------------------------------- errors
def test_errors_name_the_argument_and_the_valid_values():
    layer = nn.CrossAttention(8, num_heads=2, context_dim=5)
    x, c = mg.randn(2, 4, 8), mg.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"context must have shape \(B, M, context_dim\) = \(B, M, 5\).*\(2, 3, 6\)"):
        layer(x, mg.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, embed_dim\) = \(B, N, 8\)"):
        layer(mg.randn(2, 4, 7), c)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, M\) = \(2, 3\).*\(2, 4\)"):
        layer(x, c, key_padding_mask=mg.zeros(2, 4).bool())
    with pytest.raises(TypeError, match="key_padding_mask must be boolean"):
        layer(x, c, key_padding_mask=mg.zeros(2, 3))
    w = mg.randn(8, 8)
    with pytest.raises(ValueError, match=r"context has width 5 but W_K \(8, 8\) expects context width d_c = 8"):
        F.cross_attention(x, c, w, w, w)
    with pytest.raises(ValueError, match="same batch size"):
        F.cross_attention(x, mg.randn(3, 3, 8), w, w, w)


# ------------------------------------------------------------------ PyTorch oracle
@pytest.mark.torch
@pytest.mark.parametrize(("heads", "padded"), [(1, False), (2, True), (4, True)])
def test_matches_pytorch_multihead_attention_without_biases(heads, padded):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, heads, bias=False, kdim=5, vdim=5, batch_first=True).double()
    mine = nn.CrossAttention(8, heads, context_dim=5).double()
    assert list(mine.state_dict()) == list(theirs.state_dict())
    mine.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 3, 5))  # N = 6 queries, M = 3 tokens
    pad = np.zeros((2, 3), bool)
    if padded:
        pad[1, 1:] = True
    grad = rng.standard_normal((2, 6, 8))

    xm, cm = mg.tensor(x, requires_grad=True), mg.tensor(c, requires_grad=True)
    out, weights = mine(xm, cm, key_padding_mask=mg.tensor(pad), need_weights=True)
    out.backward(mg.tensor(grad))
    xt, ct = torch.tensor(x, requires_grad=True), torch.tensor(c, requires_grad=True)
    out_t, weights_t = theirs(xt, ct, ct, key_padding_mask=torch.tensor(pad), average_attn_weights=False)
    out_t.backward(torch.tensor(grad))

    np.testing.assert_allclose(out.detach().numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.detach().numpy(), weights_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cm.grad.numpy(), ct.grad.numpy(), rtol=1e-9, atol=1e-12)
    params = dict(mine.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12)
