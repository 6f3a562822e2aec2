"""conv2d and conv_transpose2d: forward against slow direct NumPy loops, gradcheck and
gradgradcheck (groups, stride, padding, dilation), the batch-chunked and batch-last
code paths, errors, and PyTorch as oracle (including a WGAN-GP style double backward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigen as mg
from minigen.kernels import conv as conv_kernels
from minigen.ops import conv as conv_module
from minigen.ops.conv import conv2d, conv2d_reference, conv_output_size, conv_transpose2d
from minigen.testing import arrays


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


# ------------------------------------------------------------ slow reference loops
def reference_conv2d(x, w, b, stride, padding, dilation, groups):
    """The definition, one output pixel at a time:
    y[n, o, h, w] = b[o] + Σ_{c,i,j} W[o, c, i, j] x_pad[n, g·C_g + c, h·s + i·d, w·s + j·d]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c_in, h, w_len = x.shape
    c_out, c_group, kh, kw = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w_len + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, c_out, h_out, w_out))
    per_group = c_out // groups
    for o in range(c_out):
        g = o // per_group
        for r in range(h_out):
            for q in range(w_out):
                window = x_pad[
                    :,
                    g * c_group : (g + 1) * c_group,
                    r * sh : r * sh + dh * (kh - 1) + 1 : dh,
                    q * sw : q * sw + dw * (kw - 1) + 1 : dw,
                ]
                y[:, o, r, q] = (window * w[o]).sum(axis=(1, 2, 3)) + (0.0 if b is None else b[o])
    return y


def reference_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """The definition as a scatter: every input pixel adds x[n, c, h, w] · W[c, :, :, :]
    onto the output window at (h·s − p, w·s − p) with dilation d."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, c_in, h, w_len = x.shape
    _, c_group_out, kh, kw = w.shape
    h_out = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    w_out = (w_len - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    full = np.zeros((n, c_group_out * groups, ph + h_out + dh * kh + sh * h, pw + w_out + dw * kw + sw * w_len))
    in_group = c_in // groups
    for c in range(c_in):
        g = c // in_group
        for r in range(h):
            for q in range(w_len):
                full[
                    :,
                    g * c_group_out : (g + 1) * c_group_out,
                    r * sh : r * sh + dh * (kh - 1) + 1 : dh,
                    q * sw : q * sw + dw * (kw - 1) + 1 : dw,
                ] += x[:, c, r, q][:, None, None, None] * w[c][None]
    y = full[:, :, ph : ph + h_out, pw : pw + w_out]
    return y + (0.0 if b is None else b.reshape(1, -1, 1, 1))


# ---------------------------------------------------------------- configurations
@dataclass
class Config:
    n: int
    c_in: int
    c_out: int
    hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    output_padding: tuple = (0, 0)


@st.composite
def conv_configs(draw, transpose: bool = False) -> Config:
    """Small valid conv configurations; output sizes are at least 1."""
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    if transpose:
        hw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        for a in range(2):
            size = (hw[a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + output_padding[a] + 1
            assume(size >= 1)
    else:
        output_padding = (0, 0)
        low = [max(1, dilation[a] * (kernel[a] - 1) + 1 - 2 * padding[a]) for a in range(2)]
        hw = (draw(st.integers(low[0], low[0] + 3)), draw(st.integers(low[1], low[1] + 3)))
    return Config(draw(st.integers(1, 2)), c_in, c_out, hw, kernel, stride, padding, dilation, groups, output_padding)


def conv_arrays(draw, cfg: Config, transpose: bool = False, bias: bool = True):
    x = draw(arrays((cfg.n, cfg.c_in, *cfg.hw)))
    w_shape = (
        (cfg.c_in, cfg.c_out // cfg.groups, *cfg.kernel)
        if transpose
        else (cfg.c_out, cfg.c_in // cfg.groups, *cfg.kernel)
    )
    w = draw(arrays(w_shape))
    b = draw(arrays((cfg.c_out,))) if bias and draw(st.booleans()) else None
    return x, w, b


def run_conv(cfg: Config, x, w, b=None):
    return conv2d(x, w, b, stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups)


def run_transpose(cfg: Config, x, w, b=None):
    return conv_transpose2d(
        x,
        w,
        b,
        stride=cfg.stride,
        padding=cfg.padding,
        output_padding=cfg.output_padding,
        groups=cfg.groups,
        dilation=cfg.dilation,
    )


# ------------------------------------------------------------------------ forward
@given(data=st.data(), cfg=conv_configs())
def test_conv2d_forward_matches_direct_loops(device, data, cfg):
    x, w, b = conv_arrays(data.draw, cfg)
    y = run_conv(cfg, on(device, x), on(device, w), None if b is None else on(device, b))
    expected = reference_conv2d(x, w, b, cfg.stride, cfg.padding, cfg.dilation, cfg.groups)
    assert y.shape == expected.shape
    for a in range(2):
        assert y.shape[2 + a] == conv_output_size(
            cfg.hw[a], cfg.kernel[a], cfg.stride[a], cfg.padding[a], cfg.dilation[a]
        )
    np.testing.assert_allclose(host(y), expected, rtol=1e-10, atol=1e-10)


@given(data=st.data(), cfg=conv_configs(transpose=True))
def test_conv_transpose2d_forward_matches_scatter_loops(device, data, cfg):
    x, w, b = conv_arrays(data.draw, cfg, transpose=True)
    y = run_transpose(cfg, on(device, x), on(device, w), None if b is None else on(device, b))
    expected = reference_conv_transpose2d(
        x, w, b, cfg.stride, cfg.padding, cfg.output_padding, cfg.dilation, cfg.groups
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(host(y), expected, rtol=1e-10, atol=1e-10)


def test_conv2d_float32_stays_float32(device):
    x = on(device, np.ones((1, 2, 5, 5), np.float32))
    w = on(device, np.ones((3, 2, 3, 3), np.float32))
    b = on(device, np.ones(3, np.float32))
    assert conv2d(x, w, b, padding=1).dtype == np.float32
    assert conv_transpose2d(x, on(device, np.ones((2, 3, 3, 3), np.float32)), b, stride=2).dtype == np.float32


def test_docstring_worked_examples(device):
    # A 3×3 filter over a 6×6 image padded by 1 keeps the size; stride 2 gives 3×3.
    image = on(device, np.arange(36.0).reshape(1, 1, 6, 6))
    kernel = on(device, np.ones((1, 1, 3, 3)))
    assert conv2d(image, kernel, padding=1).shape == (1, 1, 6, 6)
    assert conv2d(image, kernel, padding=1, stride=2).shape == (1, 1, 3, 3)
    # Centre pixel (2, 2) sums its 3×3 neighbourhood; corner (0, 0) only sees 4 real pixels.
    y = host(conv2d(image, kernel, padding=1))[0, 0]
    assert y[2, 2] == np.arange(36.0).reshape(6, 6)[1:4, 1:4].sum()
    assert y[0, 0] == 0 + 1 + 6 + 7
    tiny = on(device, np.arange(1.0, 10.0).reshape(1, 1, 3, 3))
    diagonal = on(device, np.array([[[[1.0, 0.0], [0.0, -1.0]]]]))
    np.testing.assert_array_equal(host(conv2d(tiny, diagonal)), -4 * np.ones((1, 1, 2, 2)))


def test_unbatched_input(device):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    y = conv2d(on(device, x), on(device, w), padding=1)
    assert y.shape == (3, 5, 5)
    np.testing.assert_allclose(host(y), reference_conv2d(x[None], w, None, (1, 1), (1, 1), (1, 1), 1)[0], atol=1e-12)
    wt = rng.standard_normal((2, 4, 2, 2))
    assert conv_transpose2d(on(device, x), on(device, wt), stride=2).shape == (4, 10, 10)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), (2, 3), ((2, 3), (2, 1))])
def test_padding_same_and_valid(device, kernel, dilation):
    rng = np.random.default_rng(1)
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    x, w = rng.standard_normal((2, 2, 7, 6)), rng.standard_normal((3, 2, *k))
    same = conv2d(on(device, x), on(device, w), padding="same", dilation=dilation)
    assert same.shape == (2, 3, 7, 6)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    # An odd total padding puts the extra row/column at the end (PyTorch's rule).
    total = [d[a] * (k[a] - 1) for a in range(2)]
    x_pad = np.pad(
        x, ((0, 0), (0, 0), (total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, total[1] - total[1] // 2))
    )
    expected = reference_conv2d(x_pad, w, None, (1, 1), (0, 0), d, 1)
    np.testing.assert_allclose(host(same), expected, atol=1e-12)
    valid = conv2d(on(device, x), on(device, w), padding="valid", dilation=dilation)
    np.testing.assert_allclose(host(valid), reference_conv2d(x, w, None, (1, 1), (0, 0), d, 1), atol=1e-12)


# ------------------------------------------------------- chunking and data layouts
def test_batch_chunks_agree(device, monkeypatch):
    """Tiny batch chunks (with a remainder) give the same numbers as one chunk."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 2))
    wt = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((5, 6, 3, 6))
    gt = rng.standard_normal((5, 6, 11, 10))
    monkeypatch.setattr(conv_kernels, "CPU_CHUNK_ELEMENTS", 900)  # 1 to 3 samples per chunk
    results = []
    for chunked in (True, False):
        if not chunked:
            monkeypatch.setattr(conv_kernels, "CPU_CHUNK_ELEMENTS", 1 << 30)
        xs, ws, wts = on(device, x), on(device, w), on(device, wt)
        y = conv2d(xs, ws, stride=(2, 1), padding=1, groups=2)
        y.backward(on(device, g, requires_grad=False))
        yt = conv_transpose2d(xs, wts, stride=2, padding=1, groups=2, output_padding=(0, 1))
        yt.backward(on(device, gt, requires_grad=False))
        results.append([host(y), host(yt), host(xs.grad), host(ws.grad), host(wts.grad)])
    expected_y = reference_conv2d(x, w, None, (2, 1), (1, 1), (1, 1), 2)
    np.testing.assert_allclose(results[0][0], expected_y, atol=1e-12)
    for chunked, whole in zip(*results):
        np.testing.assert_allclose(chunked, whole, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation",
    [
        (3, 1, 1, 1),  # "same": one gap column shared by neighbouring rows
        (5, 1, 2, 1),
        (1, 1, 0, 1),  # no gap at all
        (3, 1, 4, 1),  # padding wider than the kernel reaches: outputs that read only zeros
        (3, (2, 1), (2, 1), 2),
        (4, 2, 1, 1),  # the DCGAN layers: four phases
        ((2, 3), 3, (1, 0), 1),
        (3, 2, 0, 2),
    ],
)
def test_phase_grid_in_chunks_matches_direct_loops(device, monkeypatch, kernel, stride, padding, dilation):
    """conv2d and conv_transpose2d through the phase grid (``grid_im2col``/``grid_col2im`` in minigen/kernels/conv.py),
    one image per chunk and several per chunk, against the direct loops, with the same
    gradients either way."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 4, 7, 6))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = rng.standard_normal((6, 2, kh, kw))
    s, pad, d = (_as_pair(v) for v in (stride, padding, dilation))
    out_hw = [conv_output_size(n, k, si, pi, di) for n, k, si, pi, di in zip((7, 6), (kh, kw), s, pad, d)]
    g = rng.standard_normal((5, 6, *out_hw))
    extra = tuple(
        n - ((o - 1) * si - 2 * pi + di * (k - 1) + 1)
        for n, o, si, pi, di, k in zip((7, 6), out_hw, s, pad, d, (kh, kw))
    )
    results = []
    for budget in (1, 4000, 1 << 30):  # one image per chunk; a few (with a remainder); everything at once
        monkeypatch.setattr(conv_kernels, "CPU_CHUNK_ELEMENTS", budget)
        xs, ws = on(device, x), on(device, w)
        y = conv2d(xs, ws, stride=stride, padding=padding, dilation=dilation, groups=2)
        y.backward(on(device, g, requires_grad=False))
        gs = on(device, g)  # conv_transpose2d maps y's shape back to x's (output_padding: the rows stride skips)
        xt = conv_transpose2d(
            gs, on(device, w), stride=stride, padding=padding, dilation=dilation, groups=2, output_padding=extra
        )
        results.append([host(y), host(xs.grad), host(ws.grad), host(xt)])
    expected_y = reference_conv2d(x, w, None, s, pad, d, 2)
    np.testing.assert_allclose(results[0][0], expected_y, atol=1e-12)
    # conv_transpose2d is the adjoint of conv2d in x: ⟨conv2d(x), g⟩ = ⟨x, conv_transpose2d(g)⟩,
    # so it is also ∂⟨y, g⟩/∂x, the gradient that backward computed.
    np.testing.assert_allclose(np.sum(results[0][3] * x), np.sum(expected_y * g), rtol=1e-10)
    np.testing.assert_allclose(results[0][3], results[0][1], atol=1e-12)
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_allclose(a, b, atol=1e-12)


def _as_pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


# ---------------------------------------------------------------------- gradients
@given(data=st.data(), cfg=conv_configs())
def test_conv2d_gradcheck(device, data, cfg):
    x, w, b = conv_arrays(data.draw, cfg)
    inputs = [on(device, x), on(device, w)] + ([] if b is None else [on(device, b)])
    mg.gradcheck(lambda *t: run_conv(cfg, *t), *inputs)


@given(data=st.data(), cfg=conv_configs(transpose=True))
def test_conv_transpose2d_gradcheck(device, data, cfg):
    x, w, b = conv_arrays(data.draw, cfg, transpose=True)
    inputs = [on(device, x), on(device, w)] + ([] if b is None else [on(device, b)])
    mg.gradcheck(lambda *t: run_transpose(cfg, *t), *inputs)


SECOND_ORDER = [
    Config(1, 2, 2, (4, 5), (3, 2), (2, 1), (1, 1), (1, 1), 2),
    Config(2, 1, 2, (5, 4), (2, 2), (1, 2), (0, 1), (2, 1), 1),
    Config(1, 2, 4, (3, 3), (3, 3), (2, 2), (1, 1), (1, 1), 2, (1, 0)),
]


@pytest.mark.parametrize("cfg", SECOND_ORDER)
def test_conv2d_gradgradcheck(device, cfg):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((cfg.n, cfg.c_in, *cfg.hw))
    w = rng.standard_normal((cfg.c_out, cfg.c_in // cfg.groups, *cfg.kernel))
    b = rng.standard_normal(cfg.c_out)
    mg.gradgradcheck(lambda *t: run_conv(cfg, *t), on(device, x), on(device, w), on(device, b))


@pytest.mark.parametrize("cfg", SECOND_ORDER)
def test_conv_transpose2d_gradgradcheck(device, cfg):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((cfg.n, cfg.c_in, *cfg.hw))
    w = rng.standard_normal((cfg.c_in, cfg.c_out // cfg.groups, *cfg.kernel))
    mg.gradgradcheck(lambda *t: run_transpose(cfg, *t), on(device, x), on(device, w))


def test_weight_grad_op_gradgradcheck(device):
    """The weight-gradient op is itself differentiable in both x and g."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((2, 1, 2, 3))
    g = rng.standard_normal((2, 2, 2, 2))

    def weight_grad(x_, g_):
        return conv_module.Conv2dWeightGrad.apply(
            x_, g_, kernel=(2, 3), stride=(2, 2), pad=(0, 1), dilation=(1, 1), groups=2
        )

    # It is the weight gradient of conv2d with that geometry ...
    xs, ws = on(device, x), on(device, w)
    conv2d(xs, ws, stride=2, padding=(0, 1), groups=2).backward(on(device, g, requires_grad=False))
    np.testing.assert_allclose(host(weight_grad(on(device, x), on(device, g))), host(ws.grad), atol=1e-12)
    # ... and differentiable, to second order, in both of its inputs.
    mg.gradcheck(weight_grad, on(device, x), on(device, g))
    mg.gradgradcheck(lambda a, b: weight_grad(a, b) ** 2, on(device, x), on(device, g))


def test_gradient_penalty_double_backward(device):
    """WGAN-GP: the penalty (‖∂D/∂x‖ − 1)² is differentiated with respect to D's weights."""
    rng = np.random.default_rng(6)
    x = on(device, rng.standard_normal((1, 2, 6, 6)), requires_grad=False)
    w1 = on(device, rng.standard_normal((3, 2, 3, 3)) * 0.3)
    w2 = on(device, rng.standard_normal((3, 2, 2, 2)) * 0.3)

    def penalty(x_, w1_, w2_):
        # gradcheck evaluates fn under no_grad; the inner gradient needs a graph.
        with mg.enable_grad():
            x_ = x_.detach().requires_grad_()
            critic = conv2d(conv_transpose2d(conv2d(x_, w1_, stride=2, padding=1).tanh(), w2_, stride=2), w1_).sum()
            (grad_x,) = mg.grad(critic, x_, create_graph=True)
            norm = (grad_x * grad_x).sum().sqrt()
            return (norm - 1.0) ** 2

    result = mg.gradcheck(penalty, x, w1, w2)
    assert [r.name for r in result.inputs] == ["input 1", "input 2"]


# ------------------------------------------------------- the readable reference
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
SLIDE_IMAGE = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 2, 2, 1, 0],
        [0, 2, 4, 4, 2, 0],
        [0, 1, 3, 3, 1, 0],
        [0, 1, 2, 3, 1, 0],
        [0, 0, 1, 1, 0, 0],
    ],
    dtype=np.float64,
)


@pytest.mark.parametrize(
    "padding, expected",
    [
        (0, [[0, -1, -1, 0], [-2, -5, -5, -2], [2, -2, -1, 2], [-1, 0, -5, 0]]),  # the slide prints 3 at (3, 4)
        (
            1,
            [
                [0, 1, 2, 2, 1, 0],
                [1, 0, -1, -1, 0, 1],
                [2, -2, -5, -5, -2, 2],
                [1, 2, -2, -1, 2, 1],
                [1, -1, 0, -5, 0, 1],
                [0, 2, -1, 0, 2, 0],
            ],
        ),
    ],
)
def test_reference_and_conv2d_on_the_slides_example(device, padding, expected):
    """The slide's 6×6 image and 3×3 Laplacian: the reference's docstring example."""
    x = on(device, SLIDE_IMAGE[None, None], requires_grad=False)
    w = on(device, LAPLACIAN[None, None], requires_grad=False)
    np.testing.assert_array_equal(host(conv2d_reference(x, w, padding=padding))[0, 0], expected)
    np.testing.assert_array_equal(host(conv2d(x, w, padding=padding))[0, 0], expected)


@given(data=st.data(), cfg=conv_configs())
def test_reference_matches_conv2d_values_and_gradients(device, data, cfg):
    """conv2d (im2col, one big product) and conv2d_reference (one product per kernel
    offset, in minigen ops) compute the same convolution, forward and backward."""
    assume(cfg.groups == 1)
    x, w, b = conv_arrays(data.draw, cfg)
    geometry = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation)
    fast = [on(device, a) for a in (x, w, b) if a is not None]
    slow = [on(device, a) for a in (x, w, b) if a is not None]
    y, y_ref = conv2d(*fast, **geometry), conv2d_reference(*slow, **geometry)
    np.testing.assert_allclose(host(y), host(y_ref), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(on(device, g, requires_grad=False))
    y_ref.backward(on(device, g, requires_grad=False))
    for a, r in zip(fast, slow):
        np.testing.assert_allclose(host(a.grad), host(r.grad), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["phase grid", "channels-last"])
@given(data=st.data(), cfg=conv_configs())
def test_both_im2col_layouts_match_the_reference(monkeypatch, algorithm, data, cfg):
    """Each im2col layout of ``kernels/conv.py``, forced for every shape (the rule in
    ``prefers_channels_last`` picks one per shape), against ``conv2d_reference``: the
    values, ∂L/∂x (through conv_transpose2d and its stride-1 conv2d) and ∂L/∂W."""
    assume(cfg.groups == 1)
    channels_last = algorithm == "channels-last"
    monkeypatch.setattr(
        conv_kernels, "prefers_channels_last", lambda x, kernel, pad, groups, out_hw: channels_last and min(pad) >= 0
    )
    monkeypatch.setattr(conv_kernels, "CPU_CHUNK_ELEMENTS", data.draw(st.sampled_from([1, 200, 1 << 20])))
    x, w, b = conv_arrays(data.draw, cfg)
    geometry = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation)
    fast = [on("cpu", a) for a in (x, w, b) if a is not None]
    slow = [on("cpu", a) for a in (x, w, b) if a is not None]
    y, y_ref = conv2d(*fast, **geometry), conv2d_reference(*slow, **geometry)
    np.testing.assert_allclose(host(y), host(y_ref), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(4).standard_normal(y.shape)
    y.backward(on("cpu", g, requires_grad=False))
    y_ref.backward(on("cpu", g, requires_grad=False))
    for a, r in zip(fast, slow):
        np.testing.assert_allclose(host(a.grad), host(r.grad), rtol=1e-10, atol=1e-10)


def test_the_layout_rule_follows_the_measurements():
    """Channels-last for kernels of up to 16 taps on outputs up to 8×8 with 8 or more input
    channels, on the CPU; the phase grid for 5×5 kernels, 16×16 outputs, one or two input
    channels, groups, cropping (negative padding) and other devices."""
    x = np.zeros((2, 8, 8, 8), np.float32)
    rule = conv_kernels.prefers_channels_last
    assert (
        rule(x, (3, 3), (1, 1), 1, (8, 8)) and rule(x, (3, 3), (1, 1), 1, (4, 4)) and rule(x, (1, 1), (0, 0), 1, (8, 8))
    )
    assert rule(x, (4, 4), (1, 1), 1, (4, 4))
    assert not rule(x, (5, 5), (2, 2), 1, (8, 8))
    assert not rule(x, (3, 3), (1, 1), 1, (16, 16))
    assert not rule(x[:, :2], (3, 3), (1, 1), 1, (8, 8))
    assert not rule(x, (3, 3), (1, 1), 2, (8, 8))
    assert not rule(x, (3, 3), (-1, 1), 1, (8, 8))
    assert not rule(mg.backend.to_device(x, "standin"), (3, 3), (1, 1), 1, (8, 8))


# ------------------------------------------------------------------ empty batches
@pytest.mark.parametrize("transpose", [False, True])
def test_backward_on_an_empty_batch(device, transpose):
    """No samples: the outputs are empty and ∂L/∂W, a sum over no samples, is zero (as PyTorch)."""
    x = on(device, np.zeros((0, 3, 5, 5)))
    w = on(device, np.random.default_rng(0).standard_normal((3, 4, 3, 3) if transpose else (4, 3, 3, 3)))
    b = on(device, np.zeros(4))
    y = conv_transpose2d(x, w, b, stride=2) if transpose else conv2d(x, w, b, padding=1)
    assert y.shape == ((0, 4, 11, 11) if transpose else (0, 4, 5, 5))
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(host(w.grad), np.zeros(w.shape))
    np.testing.assert_array_equal(host(b.grad), np.zeros(4))


# ------------------------------------------------------------------------- errors
def test_errors_name_the_problem(device):
    x = on(device, np.zeros((1, 3, 5, 5)))
    w = on(device, np.zeros((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"4-D input.*\(5, 5\)"):
        conv2d(on(device, np.zeros((5, 5))), w)
    with pytest.raises(ValueError, match=r"4-D weight.*\(4, 3, 3\)"):
        conv2d(x, on(device, np.zeros((4, 3, 3))))
    with pytest.raises(ValueError, match=r"input has 3 channels.*\(4, 2, 3, 3\).*expects 2 × 1 = 2"):
        conv2d(x, on(device, np.zeros((4, 2, 3, 3))))
    with pytest.raises(
        ValueError, match=r"kernel.*7×7.*larger than the padded input \(7×7\)|larger than the padded input"
    ):
        conv2d(x, on(device, np.zeros((4, 3, 7, 7))), padding=0)
    with pytest.raises(ValueError, match=r"groups=2 must divide.*input channels \(3\)"):
        conv2d(x, on(device, np.zeros((4, 1, 3, 3))), groups=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        conv2d(x, w, on(device, np.zeros(3)))
    with pytest.raises(ValueError, match="stride must be positive"):
        conv2d(x, w, stride=0)
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        conv2d(x, w, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        conv2d(x, w, padding="same", stride=2)
    with pytest.raises(TypeError, match="float64.*float32|dtype"):
        conv2d(x, on(device, np.zeros((4, 3, 3, 3), np.float32)))
    wt = on(device, np.zeros((3, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be smaller than either stride"):
        conv_transpose2d(x, wt, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"input has 3 channels.*\(2, 2, 3, 3\) expects 2"):
        conv_transpose2d(x, on(device, np.zeros((2, 2, 3, 3))))
    with pytest.raises(ValueError, match="output size"):
        conv_transpose2d(on(device, np.zeros((1, 3, 1, 1))), wt, padding=2)
    with pytest.raises(ValueError, match=r"kernel size must be positive.*\(4, 3, 0, 0\)"):
        conv2d(x, on(device, np.zeros((4, 3, 0, 0))))


def test_device_mismatch_is_reported():
    x = mg.Tensor(np.zeros((1, 1, 3, 3)))
    w = mg.Tensor(np.zeros((1, 1, 2, 2)), device="standin")
    with pytest.raises(RuntimeError, match="cpu.*standin|standin.*cpu"):
        conv2d(x, w)


# ---------------------------------------------------------------- PyTorch oracle
def _torch_compare(fn_mg, fn_torch, arrays_, device):
    torch = pytest.importorskip("torch")
    mine = [on(device, a) for a in arrays_]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays_]
    y, ty = fn_mg(*mine), fn_torch(*theirs)
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(7).standard_normal(y.shape)
    y.backward(on(device, g, requires_grad=False))
    ty.backward(torch.tensor(g))
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(host(m.grad), t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.torch
@given(data=st.data(), cfg=conv_configs())
def test_conv2d_matches_torch(device, data, cfg):
    torch = pytest.importorskip("torch")
    x, w, b = conv_arrays(data.draw, cfg)
    arrays_ = [x, w] + ([] if b is None else [b])

    def theirs(x_, w_, b_=None):
        return torch.nn.functional.conv2d(x_, w_, b_, cfg.stride, cfg.padding, cfg.dilation, cfg.groups)

    _torch_compare(lambda *t: run_conv(cfg, *t), theirs, arrays_, device)


@pytest.mark.torch
@given(data=st.data(), cfg=conv_configs(transpose=True))
def test_conv_transpose2d_matches_torch(device, data, cfg):
    torch = pytest.importorskip("torch")
    x, w, b = conv_arrays(data.draw, cfg, transpose=True)

    def theirs(x_, w_, b_=None):
        return torch.nn.functional.conv_transpose2d(
            x_, w_, b_, cfg.stride, cfg.padding, cfg.output_padding, cfg.groups, cfg.dilation
        )

    _torch_compare(lambda *t: run_transpose(cfg, *t), theirs, [x, w] + ([] if b is None else [b]), device)


@pytest.mark.torch
@pytest.mark.parametrize("kernel,dilation", [(4, 1), (3, 2), ((2, 5), (1, 1))])
def test_padding_same_matches_torch(device, kernel, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    arrays_ = [rng.standard_normal((2, 2, 7, 8)), rng.standard_normal((3, 2, *k))]
    _torch_compare(
        lambda x, w: conv2d(x, w, padding="same", dilation=dilation),
        lambda x, w: torch.nn.functional.conv2d(x, w, padding="same", dilation=dilation),
        arrays_,
        device,
    )


@pytest.mark.torch
def test_gradient_penalty_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    arrays_ = [rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((3, 4, 4, 4))]

    def mine(x, w1, w2):
        critic = conv_transpose2d(conv2d(x, w1, stride=2, padding=1).tanh(), w2, stride=2, padding=1).sum()
        (grad_x,) = mg.grad(critic, x, create_graph=True)
        return (grad_x * grad_x).sum()

    def theirs(x, w1, w2):
        critic = torch.nn.functional.conv_transpose2d(
            torch.tanh(torch.nn.functional.conv2d(x, w1, stride=2, padding=1)), w2, stride=2, padding=1
        ).sum()
        (grad_x,) = torch.autograd.grad(critic, x, create_graph=True)
        return (grad_x * grad_x).sum()

    _torch_compare(mine, theirs, arrays_, device)
