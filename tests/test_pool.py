"""max_pool2d and avg_pool2d: forward against direct NumPy loops, the one-hot routing of
max-pool gradients (and its tie rule), gradcheck and gradgradcheck, errors, and PyTorch
as oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigen as mg
from minigen.ops.pool import avg_pool2d, max_pool2d
from minigen.testing import arrays, distinct_arrays


def on(device: str, array: np.ndarray, requires_grad: bool = True) -> mg.Tensor:
    return mg.Tensor(np.array(array), device=device, requires_grad=requires_grad)


def host(t: mg.Tensor) -> np.ndarray:
    return t.detach().numpy()


@dataclass
class Pool:
    shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple = (1, 1)
    ceil_mode: bool = False

    def out_size(self, a: int) -> int:
        span = self.shape[2 + a] + 2 * self.padding[a] - self.dilation[a] * (self.kernel[a] - 1) - 1
        out = (math.ceil(span / self.stride[a]) if self.ceil_mode else span // self.stride[a]) + 1
        if self.ceil_mode and (out - 1) * self.stride[a] >= self.shape[2 + a] + self.padding[a]:
            out -= 1
        return out

    def windows(self):
        """(h, w, list of (i, j, row, col) for the window's real input positions), one per output."""
        for h in range(self.out_size(0)):
            for w in range(self.out_size(1)):
                cells = []
                for i in range(self.kernel[0]):
                    for j in range(self.kernel[1]):
                        r = h * self.stride[0] - self.padding[0] + i * self.dilation[0]
                        c = w * self.stride[1] - self.padding[1] + j * self.dilation[1]
                        cells.append((i, j, r, c))
                yield h, w, cells


def inside(pool: Pool, r: int, c: int) -> bool:
    return 0 <= r < pool.shape[2] and 0 <= c < pool.shape[3]


def reference_max(x: np.ndarray, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima and, per output, the flat input index of the first maximum in window order."""
    n, c = x.shape[:2]
    y = np.full((n, c, pool.out_size(0), pool.out_size(1)), -np.inf)
    where = np.zeros(y.shape, dtype=np.int64)
    for h, w, cells in pool.windows():
        for _, _, r, q in cells:
            if inside(pool, r, q):
                better = x[:, :, r, q] > y[:, :, h, w]
                y[:, :, h, w] = np.where(better, x[:, :, r, q], y[:, :, h, w])
                where[:, :, h, w] = np.where(better, r * pool.shape[3] + q, where[:, :, h, w])
    return y, where


def reference_avg(x: np.ndarray, pool: Pool, count_include_pad: bool) -> np.ndarray:
    n, c = x.shape[:2]
    y = np.zeros((n, c, pool.out_size(0), pool.out_size(1)))
    for h, w, cells in pool.windows():
        total = sum(x[:, :, r, q] for _, _, r, q in cells if inside(pool, r, q))
        if count_include_pad:  # padding counts, the ceil-mode overhang beyond it does not
            limit = (pool.shape[2] + pool.padding[0], pool.shape[3] + pool.padding[1])
            count = sum(1 for _, _, r, q in cells if r < limit[0] and q < limit[1])
        else:
            count = sum(1 for _, _, r, q in cells if inside(pool, r, q))
        y[:, :, h, w] = total / count
    return y


@st.composite
def pools(draw, dilation: bool = True) -> Pool:
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    low = [max(1, dil[a] * (kernel[a] - 1) + 1 - 2 * padding[a]) for a in range(2)]
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 2)),
        draw(st.integers(low[0], low[0] + 4)),
        draw(st.integers(low[1], low[1] + 4)),
    )
    pool = Pool(shape, kernel, stride, padding, dil, draw(st.booleans()))
    # With dilation a window can fall entirely into the padding (max = −inf, and the
    # "index" of its maximum means nothing, in PyTorch too): leave those out.
    assume(all(any(inside(pool, r, q) for _, _, r, q in cells) for _, _, cells in pool.windows()))
    return pool


def run_max(pool: Pool, x, **kwargs):
    return max_pool2d(x, pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, **kwargs)


def run_avg(pool: Pool, x, count_include_pad=True):
    return avg_pool2d(x, pool.kernel, pool.stride, pool.padding, pool.ceil_mode, count_include_pad)


# ---------------------------------------------------------------------- max pool
@given(data=st.data(), pool=pools())
def test_max_pool_forward_and_indices(device, data, pool):
    x = data.draw(distinct_arrays(pool.shape))
    y, indices = run_max(pool, on(device, x), return_indices=True)
    expected, where = reference_max(x, pool)
    np.testing.assert_array_equal(host(y), expected)
    np.testing.assert_array_equal(indices.numpy(), where)
    assert indices.dtype == np.int64


@given(data=st.data(), pool=pools())
def test_max_pool_gradient_is_one_hot_per_window(device, data, pool):
    """Each window sends its gradient, whole, to its maximum: ∂L/∂x = Σ_windows g·e_argmax."""
    x = data.draw(distinct_arrays(pool.shape))
    g = np.random.default_rng(0).standard_normal((*pool.shape[:2], pool.out_size(0), pool.out_size(1)))
    xs = on(device, x)
    run_max(pool, xs).backward(on(device, g, requires_grad=False))
    _, where = reference_max(x, pool)
    expected = np.zeros(pool.shape)
    n, c = pool.shape[:2]
    for b in range(n):
        for ch in range(c):
            flat = expected[b, ch].reshape(-1)
            np.add.at(flat, where[b, ch].reshape(-1), g[b, ch].reshape(-1))
    np.testing.assert_allclose(host(xs.grad), expected, atol=1e-12)
    # Total gradient is conserved and lands only on window maxima.
    np.testing.assert_allclose(host(xs.grad).sum(), g.sum(), atol=1e-9)


def test_max_pool_tie_goes_to_first_in_window_order(device):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 5.0  # a tie inside the top-left window: (1, 0) comes first
    xs = on(device, x)
    max_pool2d(xs, 2).sum().backward()
    grad = host(xs.grad)[0, 0]
    assert grad[1, 0] == 1.0 and grad[1, 1] == 0.0
    # Windows of zeros tie everywhere: the top-left element of each gets the gradient.
    assert grad[0, 2] == 1.0 and grad[2, 0] == 1.0 and grad[2, 2] == 1.0
    assert grad.sum() == 4.0


def test_max_pool_propagates_nan(device):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = host(max_pool2d(on(device, x, requires_grad=False), 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@given(data=st.data(), pool=pools())
def test_max_pool_gradcheck(device, data, pool):
    x = data.draw(distinct_arrays(pool.shape))
    mg.gradcheck(lambda t: run_max(pool, t), on(device, x))


@pytest.mark.parametrize(
    "pool", [Pool((1, 2, 5, 5), (3, 3), (2, 2), (1, 1)), Pool((2, 1, 5, 4), (2, 2), (1, 2), (1, 0), (2, 1), True)]
)
def test_max_pool_gradgradcheck(device, pool):
    # Squared, so the first derivative depends on x and the second derivative flows
    # through the scatter's backward (a gather) and the gather's backward (a scatter).
    x = np.random.default_rng(1).permutation(int(np.prod(pool.shape))).reshape(pool.shape) * 0.1 - 1.0
    mg.gradgradcheck(lambda t: run_max(pool, t) ** 2, on(device, x))


# ---------------------------------------------------------------------- avg pool
@given(data=st.data(), pool=pools(dilation=False), include=st.booleans())
def test_avg_pool_forward(device, data, pool, include):
    x = data.draw(arrays(pool.shape))
    np.testing.assert_allclose(host(run_avg(pool, on(device, x), include)), reference_avg(x, pool, include), atol=1e-12)


@given(data=st.data(), pool=pools(dilation=False), include=st.booleans())
def test_avg_pool_gradcheck(device, data, pool, include):
    x = data.draw(arrays(pool.shape))
    mg.gradcheck(lambda t: run_avg(pool, t, include), on(device, x))


def test_avg_pool_gradgradcheck(device):
    pool = Pool((1, 2, 5, 4), (3, 2), (2, 2), (1, 1), ceil_mode=True)
    x = np.random.default_rng(2).standard_normal(pool.shape)
    mg.gradgradcheck(lambda t: run_avg(pool, t, False) ** 2, on(device, x))


def test_avg_pool_divisor_override_and_float32(device):
    x = on(device, np.ones((1, 1, 4, 4), np.float32))
    y = avg_pool2d(x, 2, divisor_override=2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(host(y), 2 * np.ones((1, 1, 2, 2)))
    assert max_pool2d(x, 2).dtype == np.float32


def test_unbatched_input(device):
    x = np.arange(2 * 4 * 4.0).reshape(2, 4, 4)
    np.testing.assert_array_equal(host(max_pool2d(on(device, x), 2)), x.reshape(2, 2, 2, 2, 2).max(axis=(2, 4)))
    np.testing.assert_allclose(host(avg_pool2d(on(device, x), 2)), x.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4)))


# A dilated window wider than the padded input: floor mode has no window, ceil mode (as
# PyTorch) one, whose real elements are those that fall inside the input.
WIDER_THAN_INPUT = [
    Pool((1, 2, 4, 4), (3, 3), (2, 2), (1, 1), (3, 3), ceil_mode=True),
    Pool((2, 1, 3, 5), (3, 3), (3, 2), (1, 1), (3, 3), ceil_mode=True),
]


@pytest.mark.parametrize("pool", WIDER_THAN_INPUT)
def test_ceil_mode_window_wider_than_the_padded_input(device, pool):
    x = np.random.default_rng(0).standard_normal(pool.shape)
    y = run_max(pool, on(device, x))
    assert y.shape[2:] == (1, 1)
    expected, _ = reference_max(x, pool)
    np.testing.assert_array_equal(host(y), expected)
    x_t = on(device, x)
    run_max(pool, x_t).sum().backward()
    np.testing.assert_array_equal(host(x_t.grad).sum(axis=(2, 3)), np.ones(pool.shape[:2]))  # one winner each
    with pytest.raises(ValueError, match="output would be empty"):
        max_pool2d(on(device, x), pool.kernel, pool.stride, pool.padding, pool.dilation, ceil_mode=False)


def test_a_window_wholly_in_the_padding_gives_minus_infinity_and_no_gradient(device):
    """Every tap of the one (ceil-mode) window reads padding: −∞, and nothing to route the
    gradient to. (PyTorch also returns −∞ here, with an index outside the channel.)"""
    x = on(device, np.ones((1, 1, 3, 5)))
    y = max_pool2d(x, (2, 3), (3, 2), (1, 1), (4, 3), ceil_mode=True)
    assert np.all(host(y)[:, :, 0, 0] == -np.inf)
    y.backward(on(device, np.ones(y.shape), requires_grad=False))
    np.testing.assert_array_equal(host(x.grad), np.zeros((1, 1, 3, 5)))


@pytest.mark.torch
@pytest.mark.parametrize("pool", WIDER_THAN_INPUT)
def test_ceil_mode_window_wider_than_the_padded_input_matches_torch(device, pool):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal(pool.shape)
    _torch_compare(
        lambda t: run_max(pool, t),
        lambda t: torch.nn.functional.max_pool2d(t, pool.kernel, pool.stride, pool.padding, pool.dilation, True),
        x,
        device,
    )


# ------------------------------------------------------------------------ errors
def test_errors(device):
    x = on(device, np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"4-D input.*\(4, 4\)"):
        max_pool2d(on(device, np.zeros((4, 4))), 2)
    with pytest.raises(ValueError, match=r"padding \(2, 2\) should be at most half of kernel_size \(3, 3\)"):
        avg_pool2d(x, 3, padding=2)
    with pytest.raises(ValueError, match="output would be empty"):
        max_pool2d(x, 3, dilation=3)
    with pytest.raises(ValueError, match="must be positive"):
        max_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="floating-point"):
        max_pool2d(mg.Tensor(np.zeros((1, 1, 4, 4), np.int64), device=device), 2)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        avg_pool2d(x, (2, 2, 2))


# ------------------------------------------------------------------ PyTorch oracle
def _torch_compare(fn_mg, fn_torch, x: np.ndarray, device: str) -> None:
    torch = pytest.importorskip("torch")
    mine, theirs = on(device, x), torch.tensor(x, requires_grad=True)
    y, ty = fn_mg(mine), fn_torch(theirs)
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(on(device, g, requires_grad=False))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(host(mine.grad), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@given(data=st.data(), pool=pools(), ties=st.booleans())
def test_max_pool_matches_torch(device, data, pool, ties):
    torch = pytest.importorskip("torch")
    # With ties (small integers) the gradient routing must follow PyTorch's rule too.
    x = data.draw(arrays(pool.shape, -2, 2).map(np.round) if ties else distinct_arrays(pool.shape))
    _torch_compare(
        lambda t: run_max(pool, t),
        lambda t: torch.nn.functional.max_pool2d(
            t, pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode
        ),
        x,
        device,
    )
    _, indices = run_max(pool, on(device, x), return_indices=True)
    _, their_indices = torch.nn.functional.max_pool2d(
        torch.tensor(x), pool.kernel, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True
    )
    np.testing.assert_array_equal(indices.numpy(), their_indices.numpy())


@pytest.mark.torch
@given(data=st.data(), pool=pools(dilation=False), include=st.booleans(), override=st.sampled_from([None, 3]))
def test_avg_pool_matches_torch(device, data, pool, include, override):
    torch = pytest.importorskip("torch")
    x = data.draw(arrays(pool.shape))
    _torch_compare(
        lambda t: avg_pool2d(t, pool.kernel, pool.stride, pool.padding, pool.ceil_mode, include, override),
        lambda t: torch.nn.functional.avg_pool2d(
            t, pool.kernel, pool.stride, pool.padding, pool.ceil_mode, include, override
        ),
        x,
        device,
    )
