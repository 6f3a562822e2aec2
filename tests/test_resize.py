"""interpolate: nearest and (bi/tri)linear resizing against their definitions, known
exact cases (pixel repetition, 2×2 block averages, linear ramps), gradcheck and
gradgradcheck, errors, and PyTorch as oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.resize import interpolate
from minigen.testing import arrays

LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


def reference_nearest(x: np.ndarray, out_sizes: tuple) -> np.ndarray:
    """src = ⌊dst · in/out⌋ along each spatial axis, one axis at a time (size-given rule)."""
    for a, n_out in enumerate(out_sizes):
        n_in = x.shape[2 + a]
        source = [
            min(int(np.floor(np.float32(o) * (np.float32(n_in) / np.float32(n_out)))), n_in - 1) for o in range(n_out)
        ]
        x = np.take(x, source, axis=2 + a)
    return x


def reference_linear(x: np.ndarray, out_sizes: tuple, align_corners: bool) -> np.ndarray:
    """1-D linear interpolation at the source coordinates, one spatial axis at a time."""
    for a, n_out in enumerate(out_sizes):
        n_in = x.shape[2 + a]
        if n_in == n_out:
            continue
        pieces = []
        for o in range(n_out):
            if align_corners:
                s = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
            else:
                s = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i = min(int(np.floor(s)), n_in - 1)
            lam = s - i
            j = min(i + 1, n_in - 1)
            pieces.append((1 - lam) * np.take(x, [i], axis=2 + a) + lam * np.take(x, [j], axis=2 + a))
        x = np.concatenate(pieces, axis=2 + a)
    return x


@st.composite
def resize_cases(draw, max_spatial: int = 2):
    n_spatial = draw(st.integers(1, max_spatial))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + tuple(
        draw(st.integers(1, 4)) for _ in range(n_spatial)
    )
    out_sizes = tuple(draw(st.integers(1, 6)) for _ in range(n_spatial))
    return shape, out_sizes


# ------------------------------------------------------------------------ forward
@given(data=st.data(), case=resize_cases(max_spatial=3))
def test_nearest_matches_index_rule(device, data, case):
    shape, out_sizes = case
    x = data.draw(arrays(shape))
    y = interpolate(on(device, x), size=out_sizes)
    np.testing.assert_array_equal(host(y), reference_nearest(x, out_sizes))


@given(data=st.data(), case=resize_cases(max_spatial=3), align_corners=st.booleans())
def test_linear_matches_definition(device, data, case, align_corners):
    shape, out_sizes = case
    x = data.draw(arrays(shape))
    y = interpolate(on(device, x), size=out_sizes, mode=LINEAR[len(out_sizes)], align_corners=align_corners)
    np.testing.assert_allclose(host(y), reference_linear(x, out_sizes, align_corners), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, (2, 1), (1, 4)])
def test_integer_nearest_upscale_repeats_pixels(device, factor):
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    fh, fw = factor if isinstance(factor, tuple) else (factor, factor)
    y = interpolate(on(device, x), scale_factor=factor)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(host(y), x.repeat(fh, axis=2).repeat(fw, axis=3))


def test_bilinear_exact_cases(device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 8))
    # Halving with align_corners=False samples halfway between pixel pairs: 2×2 block means.
    half = interpolate(on(device, x), scale_factor=0.5, mode="bilinear")
    np.testing.assert_allclose(host(half), x.reshape(1, 2, 3, 2, 4, 2).mean(axis=(3, 5)), atol=1e-12)
    # A linear ramp stays a linear ramp with align_corners=True, corners included.
    ramp = np.add.outer(np.arange(4.0), 10 * np.arange(5.0))[None, None]
    big = interpolate(on(device, ramp), size=(7, 9), mode="bilinear", align_corners=True)
    expected = np.add.outer(np.linspace(0, 3, 7), 10 * np.linspace(0, 4, 9))[None, None]
    np.testing.assert_allclose(host(big), expected, atol=1e-12)
    # A constant image stays constant.
    const = interpolate(on(device, np.full((1, 1, 3, 3), 2.5)), scale_factor=1.7, mode="bilinear")
    np.testing.assert_allclose(host(const), 2.5, atol=1e-12)


def test_nearest_is_exact_with_infinities(device):
    x = np.array([[[1.0, np.inf, -np.inf]]])
    np.testing.assert_array_equal(host(interpolate(on(device, x, False), size=5)), x[..., [0, 0, 1, 1, 2]])


# ---------------------------------------------------------------------- gradients
@given(data=st.data(), case=resize_cases(), mode=st.sampled_from(["nearest", "nearest-exact", "linear"]))
def test_gradcheck(device, data, case, mode):
    shape, out_sizes = case
    x = data.draw(arrays(shape))
    mode = LINEAR[len(out_sizes)] if mode == "linear" else mode
    mg.gradcheck(lambda t: interpolate(t, size=out_sizes, mode=mode), on(device, x))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(scale_factor=2),
        dict(size=(5, 3)),
        dict(scale_factor=1.5, mode="bilinear"),
        dict(size=(2, 5), mode="bilinear", align_corners=True),
    ],
)
def test_gradgradcheck(device, kwargs):
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4))
    mg.gradgradcheck(lambda t: interpolate(t, **kwargs) ** 2, on(device, x))


def test_nearest_gradient_sums_copies(device):
    """Upscaling by 2 copies each pixel 4 times, so each pixel's gradient sums its 2×2 block."""
    x = on(device, np.zeros((1, 1, 2, 3)))
    g = np.arange(24.0).reshape(1, 1, 4, 6)
    interpolate(x, scale_factor=2).backward(on(device, g, requires_grad=False))
    np.testing.assert_array_equal(host(x.grad), g.reshape(1, 1, 2, 2, 3, 2).sum(axis=(3, 5)))


@pytest.mark.torch
def test_unchanged_axis_with_scale_factor_in_1d(device):
    """3 samples × 1.3 → 3 samples that read [0, 0, 1] (PyTorch's 1-D and 3-D kernels do
    this; its 2-D kernel copies instead). PyTorch's own backward routes this case as a
    copy, inconsistent with its forward; ours is the true gradient of the forward."""
    torch = pytest.importorskip("torch")
    x = np.array([[[1.0, 2.0, 4.0]]])
    y = interpolate(on(device, x), scale_factor=1.3)
    ty = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=1.3)
    np.testing.assert_array_equal(host(y), ty.numpy())
    np.testing.assert_array_equal(host(y), [[[1.0, 1.0, 2.0]]])
    mg.gradcheck(lambda t: interpolate(t, scale_factor=1.3), on(device, x))
    image = np.arange(12.0).reshape(1, 1, 3, 4)  # the 2-D kernel copies the unchanged height
    np.testing.assert_array_equal(
        host(interpolate(on(device, image), scale_factor=1.3)),
        torch.nn.functional.interpolate(torch.tensor(image), scale_factor=1.3).numpy(),
    )


# ------------------------------------------------------------------------- errors
def test_errors(device):
    x = on(device, np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        interpolate(x)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="unsupported mode 'bicubic'"):
        interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners can only be set with the linear modes"):
        interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match=r"mode 'trilinear' needs a 5-D input.*\(1, 1, 4, 4\)"):
        interpolate(x, scale_factor=2, mode="trilinear")
    with pytest.raises(ValueError, match="size needs 2 values"):
        interpolate(x, size=(3, 3, 3))
    with pytest.raises(ValueError, match="scale_factor must be positive"):
        interpolate(x, scale_factor=-1.0)
    with pytest.raises(ValueError, match="output size"):
        interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match=r"3-D, 4-D or 5-D input.*\(4, 4\)"):
        interpolate(on(device, np.zeros((4, 4))), scale_factor=2)


# ---------------------------------------------------------------- PyTorch oracle
ORACLE_CASES = [
    ((2, 3, 5), dict(scale_factor=2)),
    ((2, 3, 5), dict(scale_factor=1.7)),
    ((2, 3, 5), dict(size=3)),
    ((2, 2, 4, 7), dict(scale_factor=2)),
    ((2, 2, 4, 7), dict(scale_factor=3)),
    ((2, 2, 4, 7), dict(scale_factor=1.5)),
    ((2, 2, 4, 7), dict(scale_factor=0.5)),
    ((2, 2, 4, 7), dict(scale_factor=1.2)),  # height keeps its size, width grows
    ((2, 2, 4, 7), dict(scale_factor=(1.3, 0.7))),
    ((2, 2, 4, 7), dict(size=(7, 3))),
    ((2, 2, 4, 7), dict(scale_factor=1.7, recompute_scale_factor=True)),
    ((1, 2, 3, 4, 5), dict(scale_factor=2)),
    ((1, 2, 3, 4, 5), dict(scale_factor=1.5)),
    ((1, 2, 3, 4, 5), dict(size=(2, 5, 7))),
]


@pytest.mark.torch
@pytest.mark.parametrize("shape,kwargs", ORACLE_CASES)
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "linear", "linear-corners"])
def test_matches_torch(device, shape, kwargs, mode):
    torch = pytest.importorskip("torch")
    extra = {}
    if mode.startswith("linear"):
        extra = dict(mode=LINEAR[len(shape) - 2], align_corners=mode == "linear-corners")
    else:
        extra = dict(mode=mode)
    x = np.random.default_rng(4).standard_normal(shape)
    mine, theirs = on(device, x), torch.tensor(x, requires_grad=True)
    y = interpolate(mine, **kwargs, **extra)
    ty = torch.nn.functional.interpolate(theirs, **kwargs, **extra)
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(5).standard_normal(y.shape)
    y.backward(on(device, g, requires_grad=False))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(host(mine.grad), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)
