"""Scaled dot-product attention, MultiheadAttention and the transformer block.

Forward against a NumPy transcription of softmax(QKᵀ/√d + M)V, gradcheck and
gradgradcheck with and without masks, the causal property (the future cannot change
or receive gradient from the past), fully masked rows, and PyTorch as an oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.nn.attention import MultiheadAttention
from minigen.nn.transformer import TransformerBlock
from minigen.ops.attention import merge_heads, split_heads
from minigen.ops.attention import scaled_dot_product_attention as sdpa
from minigen.testing import arrays, to_device_like


def reference_attention(q, k, v, mask=None, causal=False):
    """softmax(Q Kᵀ/√d + M) V in plain NumPy (float64)."""
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    if causal:
        scores = scores + np.where(np.tril(np.ones(scores.shape[-2:], bool)), 0.0, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    return weights @ v, weights


@st.composite
def attention_inputs(draw, max_len=4):
    """(q, k, v) with a broadcast batch/head prefix, T_q ≠ T_k allowed (cross attention)."""
    batch = draw(st.sampled_from([(), (2,), (2, 3), (1, 2)]))
    t_q, t_k = draw(st.integers(1, max_len)), draw(st.integers(1, max_len))
    d_k, d_v = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    q = draw(arrays(batch + (t_q, d_k), -2, 2))
    k = draw(arrays(batch + (t_k, d_k), -2, 2))
    v = draw(arrays(batch + (t_k, d_v), -2, 2))
    return q, k, v


def allowed_mask(draw, t_q, t_k, leading=()):
    """A random boolean mask (True = may attend) with at least one key per query."""
    mask = np.array(draw(st.lists(st.booleans(), min_size=t_q * t_k, max_size=t_q * t_k))).reshape(t_q, t_k)
    mask[np.arange(t_q), np.array(draw(st.lists(st.integers(0, t_k - 1), min_size=t_q, max_size=t_q)))] = True
    return mask.reshape(leading + (t_q, t_k))


# ------------------------------------------------------------------- forward values
@given(inputs=attention_inputs(), data=st.data())
def test_forward_matches_the_formula(device, inputs, data):
    q, k, v = inputs
    kind = data.draw(st.sampled_from(["none", "bool", "float", "causal"]))
    mask = None
    if kind == "bool":
        mask = allowed_mask(data.draw, q.shape[-2], k.shape[-2])
    elif kind == "float":
        mask = data.draw(arrays((q.shape[-2], k.shape[-2]), -1, 1))
    causal = kind == "causal"
    expected, expected_weights = reference_attention(q, k, v, mask, causal)
    tq, tk, tv = (to_device_like(a, device) for a in (q, k, v))
    out, weights = sdpa(
        tq, tk, tv, None if mask is None else to_device_like(mask, device), is_causal=causal, return_weights=True
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-12)


def test_scale_argument_and_float32(device):
    q, k, v = (mg.randn(2, 3, 4, device=device) for _ in range(3))
    out = sdpa(q, k, v, scale=0.3)
    expected, _ = reference_attention(*(t.numpy().astype(np.float64) * f for t, f in ((q, 0.3 * 2), (k, 1), (v, 1))))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"same d_k.*\(2, 3, 4\).*\(2, 3, 5\)"):
        sdpa(mg.randn(2, 3, 4), mg.randn(2, 3, 5), mg.randn(2, 3, 5))
    with pytest.raises(ValueError, match="same length T_k"):
        sdpa(mg.randn(2, 3, 4), mg.randn(2, 3, 4), mg.randn(2, 5, 4))


# ----------------------------------------------------------------------- gradients
@given(inputs=attention_inputs(max_len=3), data=st.data())
def test_sdpa_gradcheck_and_gradgradcheck(device, inputs, data):
    q, k, v = (to_device_like(a, device, requires_grad=True) for a in inputs)
    kind = data.draw(st.sampled_from(["none", "bool", "float", "causal"]))
    mask = None
    if kind == "bool":
        mask = to_device_like(allowed_mask(data.draw, q.shape[-2], k.shape[-2]), device)
    elif kind == "float":
        mask = to_device_like(data.draw(arrays((q.shape[-2], k.shape[-2]), -1, 1)), device)

    def attend(q, k, v):
        return sdpa(q, k, v, attn_mask=mask, is_causal=kind == "causal")

    mg.gradcheck(attend, q, k, v)
    mg.gradgradcheck(attend, q, k, v)


def test_learned_float_mask_receives_gradient():
    q, k, v = (mg.randn(2, 3, 4, dtype=mg.float64) for _ in range(3))
    bias = mg.randn(3, 3, dtype=mg.float64, requires_grad=True)
    mg.gradcheck(lambda b: sdpa(q, k, v, attn_mask=b), bias)


# ------------------------------------------------------------------------ causality
@given(data=st.data())
def test_causal_future_tokens_cannot_change_the_past(device, data):
    """Changing inputs after position t leaves outputs 0..t bitwise unchanged."""
    T, d = 6, 4
    t = data.draw(st.integers(0, T - 2))
    q, k, v = (data.draw(arrays((2, T, d))) for _ in range(3))
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    for a in (q2, k2, v2):
        a[:, t + 1 :] = data.draw(arrays((2, T - t - 1, d)))
    out = sdpa(*(to_device_like(a, device) for a in (q, k, v)), is_causal=True).numpy()
    out2 = sdpa(*(to_device_like(a, device) for a in (q2, k2, v2)), is_causal=True).numpy()
    np.testing.assert_array_equal(out[:, : t + 1], out2[:, : t + 1])


@given(data=st.data())
def test_causal_no_gradient_from_past_outputs_to_future_inputs(device, data):
    T, d = 5, 3
    t = data.draw(st.integers(0, T - 2))
    q, k, v = (to_device_like(data.draw(arrays((2, T, d))), device, requires_grad=True) for _ in range(3))
    out = sdpa(q, k, v, is_causal=True)
    out[:, : t + 1].sum().backward()
    for x in (q, k, v):
        assert np.all(x.grad.numpy()[:, t + 1 :] == 0.0)
    assert np.all(v.grad.numpy()[:, : t + 1] > 0.0)  # the past itself does get gradient


def test_causal_transformer_block_is_causal(device):
    """The same two properties through a whole block (projections, MLP, LayerNorms)."""
    mg.manual_seed(0)
    block = TransformerBlock(8, 2, causal=True, rope=True).to(device)
    x = mg.randn(2, 6, 8, device=device)
    x2 = x.detach().clone()
    x2.data[:, 4:] = mg.randn(2, 2, 8, device=device).data
    with mg.no_grad():
        np.testing.assert_array_equal(block(x).numpy()[:, :4], block(x2).numpy()[:, :4])
    x.requires_grad_()
    block(x)[:, :4].sum().backward()
    assert np.all(x.grad.numpy()[:, 4:] == 0.0)


def test_fully_masked_row_gives_zero_not_nan(device):
    q, k, v = (mg.randn(2, 3, 4, dtype=mg.float64, device=device, requires_grad=True) for _ in range(3))
    mask = np.ones((3, 3), bool)
    mask[1] = False  # query 1 may look nowhere
    out, weights = sdpa(q, k, v, attn_mask=to_device_like(mask, device), return_weights=True)
    assert not np.isnan(out.detach().numpy()).any()
    np.testing.assert_array_equal(out.detach().numpy()[:, 1], 0.0)
    np.testing.assert_array_equal(weights.detach().numpy()[:, 1], 0.0)
    out.sum().backward()
    for x in (q, k, v):
        assert np.isfinite(x.grad.numpy()).all()
    np.testing.assert_array_equal(q.grad.numpy()[:, 1], 0.0)
    mg.gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=to_device_like(mask, device)), q, k, v)
    float_mask = np.where(mask, 0.0, -np.inf)
    out = sdpa(q, k, v, attn_mask=to_device_like(float_mask, device))
    np.testing.assert_array_equal(out.detach().numpy()[:, 1], 0.0)


# ------------------------------------------------------------- modules: gradients
def test_multihead_attention_gradcheck(device):
    mg.manual_seed(1)
    mha = MultiheadAttention(4, 2).to(device)
    x = mg.randn(2, 3, 4, device=device, requires_grad=True)
    mem = mg.randn(2, 5, 4, device=device, requires_grad=True)
    mg.gradcheck(lambda x: mha(x, x, x, is_causal=True)[0], x)
    mg.gradcheck(lambda x, m: mha(x, m, m, need_weights=False)[0], x, mem)  # cross attention
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True  # True = ignore this key (PyTorch's key_padding_mask)
    forbid = np.zeros((3, 5), bool)
    forbid[0, 1] = True  # True = not allowed (PyTorch's boolean attn_mask for MHA)
    masks = {"key_padding_mask": to_device_like(pad, device), "attn_mask": to_device_like(forbid, device)}
    mg.gradcheck(lambda x, m: mha(x, m, m, **masks)[0], x, mem)
    with mg.no_grad():
        _, weights = mha(x, mem, mem, **masks)
    assert np.all(weights.numpy()[1, :, 3:] == 0) and np.all(weights.numpy()[:, 0, 1] == 0)


def test_multihead_attention_module_gradcheck_checks_its_parameters():
    mg.manual_seed(2)
    mha = MultiheadAttention(4, 2, kdim=3, vdim=5)
    q, k, v = mg.randn(2, 3, 4), mg.randn(2, 2, 3), mg.randn(2, 2, 5)
    result = mg.gradcheck(mha, q, k, v)
    names = {r.name for r in result.inputs}
    assert {"parameter q_proj_weight", "parameter k_proj_weight", "parameter out_proj.weight"} <= names


def test_transformer_block_gradcheck():
    mg.manual_seed(3)
    block = TransformerBlock(4, 2, mlp_ratio=2, causal=True, rope=True)
    x = mg.randn(2, 3, 4)
    mg.gradcheck(block, x)


def test_transformer_block_returns_attention_rows_that_sum_to_one():
    block = TransformerBlock(8, 4)
    with mg.no_grad():
        out, weights = block(mg.randn(2, 5, 8), return_attention=True)
    assert out.shape == (2, 5, 8) and weights.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(weights.detach().numpy().sum(-1), 1.0, rtol=1e-5)


def test_multihead_attention_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(6, 4)
    mha = MultiheadAttention(4, 2)
    x = mg.randn(2, 3, 4)
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, x, x, key_padding_mask=mg.zeros(2, 4).bool())


# ------------------------------------------------------------------ PyTorch oracle
torch_marker = pytest.mark.torch


@torch_marker
@pytest.mark.parametrize("kind", ["none", "bool", "float", "causal", "causal_cross", "broadcast_bool", "dead_row"])
def test_sdpa_matches_pytorch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    t_q, t_k = (5, 7) if kind == "causal_cross" else (6, 6)
    q, k, v = (rng.standard_normal((2, 3, t, 4)) for t in (t_q, t_k, t_k))
    grad = rng.standard_normal((2, 3, t_q, 4))
    mask = None
    if kind == "bool":
        mask = rng.random((t_q, t_k)) < 0.6
        mask[:, 0] = True
    elif kind == "broadcast_bool":  # key padding: (B, 1, 1, T_k)
        mask = np.ones((2, 1, 1, t_k), bool)
        mask[1, ..., 4:] = False
    elif kind == "float":
        mask = rng.standard_normal((2, 1, t_q, t_k))
    elif kind == "dead_row":  # query 2 may attend nowhere: PyTorch's math path also gives 0
        mask = rng.random((t_q, t_k)) < 0.6
        mask[:, 0] = True
        mask[2] = False
    causal = kind.startswith("causal")

    mine = [mg.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = sdpa(*mine, attn_mask=None if mask is None else mg.tensor(mask), is_causal=causal)
    out.backward(mg.tensor(grad))

    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(
        *theirs, attn_mask=None if mask is None else torch.tensor(mask), is_causal=causal
    )
    expected.backward(torch.tensor(grad))
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12)


def _torch_mha_pair(torch, embed_dim=8, num_heads=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, **kwargs).double()
    with torch.no_grad():  # non-zero biases, so that a misplaced bias would show
        for name, p in theirs.named_parameters():
            if "bias" in name:
                p.normal_()
    mine = MultiheadAttention(embed_dim, num_heads, batch_first=True, **kwargs).double()
    mine.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    return mine, theirs


@torch_marker
@pytest.mark.parametrize(
    "case", ["self", "cross", "key_padding", "bool_mask", "float_mask", "per_head_weights", "kdim_vdim", "causal"]
)
def test_multihead_attention_matches_pytorch_state_dict(case):
    torch = pytest.importorskip("torch")
    kwargs = {"kdim": 3, "vdim": 5} if case == "kdim_vdim" else {}
    mine, theirs = _torch_mha_pair(torch, **kwargs)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    rng = np.random.default_rng(1)
    t_k = 4 if case in ("cross", "kdim_vdim") else 5
    query = rng.standard_normal((2, 5, 8))
    key = rng.standard_normal((2, t_k, kwargs.get("kdim", 8)))
    value = rng.standard_normal((2, t_k, kwargs.get("vdim", 8)))
    if case in ("self", "key_padding", "bool_mask", "float_mask", "per_head_weights", "causal"):
        key = value = query
    options: dict = {}
    if case == "key_padding":
        pad = np.zeros((2, 5), bool)
        pad[1, 3:] = True  # True = ignore this key
        options["key_padding_mask"] = pad
    elif case == "bool_mask":
        forbid = rng.random((5, 5)) < 0.4
        forbid[:, 2] = False
        options["attn_mask"] = forbid
    elif case == "float_mask":
        options["attn_mask"] = rng.standard_normal((2 * 2, 5, 5))
    elif case == "per_head_weights":
        options["average_attn_weights"] = False
    elif case == "causal":
        options["attn_mask"] = ~np.tril(np.ones((5, 5), bool))
        options["is_causal"] = True

    x_mine = [mg.tensor(a, requires_grad=True) for a in (query, key, value)]
    x_theirs = [torch.tensor(a, requires_grad=True) for a in (query, key, value)]
    if case in ("self", "key_padding", "bool_mask", "float_mask", "per_head_weights", "causal"):
        x_mine = [x_mine[0]] * 3
        x_theirs = [x_theirs[0]] * 3
    out, weights = mine(*x_mine, **{k: (mg.tensor(v) if k != "is_causal" else v) for k, v in options.items()})
    out_t, weights_t = theirs(
        *x_theirs, **{k: (torch.tensor(v) if k != "is_causal" else v) for k, v in options.items()}
    )
    np.testing.assert_allclose(out.detach().numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.detach().numpy(), weights_t.detach().numpy(), rtol=1e-10, atol=1e-12)

    grad = rng.standard_normal(out.shape)
    (out * mg.tensor(grad)).sum().backward()
    (out_t * torch.tensor(grad)).sum().backward()
    np.testing.assert_allclose(x_mine[0].grad.numpy(), x_theirs[0].grad.numpy(), rtol=1e-9, atol=1e-12)
    if case in ("cross", "kdim_vdim"):
        np.testing.assert_allclose(x_mine[1].grad.numpy(), x_theirs[1].grad.numpy(), rtol=1e-9, atol=1e-12)
    mine_params = dict(mine.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(mine_params[name].grad.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12)


@torch_marker
def test_multihead_attention_sequence_first_matches_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 4).double()  # PyTorch's default: (T, B, E)
    mine = MultiheadAttention(8, 4, batch_first=False).double()
    mine.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((5, 2, 8))
    with mg.no_grad():
        out, weights = mine(mg.tensor(x), mg.tensor(x), mg.tensor(x))
    out_t, weights_t = theirs(*(torch.tensor(x),) * 3)
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), weights_t.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- heads split and merge
@given(data=st.data(), heads=st.integers(1, 3))
def test_split_and_merge_heads(device, data, heads):
    """split_heads gives head j the features j·d_k … (j + 1)·d_k − 1; merge_heads undoes it."""
    d_k = data.draw(st.integers(1, 3))
    x = data.draw(arrays((2, 3, heads * d_k)))
    split = split_heads(mg.Tensor(x, device=device, requires_grad=True), heads)
    assert split.shape == (2, heads, 3, d_k)
    for j in range(heads):
        np.testing.assert_array_equal(split.detach().numpy()[:, j], x[:, :, j * d_k : (j + 1) * d_k])
    np.testing.assert_array_equal(merge_heads(split).detach().numpy(), x)
    mg.gradcheck(lambda t: merge_heads(split_heads(t, heads) * 2.0), mg.Tensor(x, device=device, requires_grad=True))
    with pytest.raises(ValueError, match=r"split_heads: the width 5 .* not divisible by 2 heads"):
        split_heads(mg.zeros(1, 2, 5), 2)
