"""RoPE: the rotation R_{Θ,m} of the lecture, in its matrix and elementwise forms.

All checks in float64 to 1e-10: rotations keep norms, scores depend on m − n only,
R_0 = I, d = 2 is complex multiplication, the two forms agree, and the op is
differentiable (gradcheck, gradgradcheck) on every device.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.nn.attention import RotaryEmbedding
from minigen.ops.rope import rope, rope_cos_sin, rope_frequencies, rope_matrix
from minigen.testing import arrays, to_device_like

TOL = 1e-10
half_dims = st.integers(1, 4)  # d = 2 .. 8


def rotated(x: np.ndarray, device: str, positions=None, base: float = 10000.0) -> np.ndarray:
    return rope(to_device_like(x, device), positions, base).numpy()


@given(data=st.data(), half=half_dims, length=st.integers(1, 5))
def test_rope_preserves_norms(device, data, half, length):
    x = data.draw(arrays((2, length, 2 * half)))
    y = rotated(x, device)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=0, atol=TOL)


@given(data=st.data(), half=half_dims, m=st.integers(0, 50), n=st.integers(0, 50), shift=st.integers(-20, 60))
def test_scores_depend_only_on_relative_position(device, data, half, m, n, shift):
    """⟨R_m q, R_n k⟩ = ⟨R_{m+s} q, R_{n+s} k⟩ for any shift s."""
    d = 2 * half
    q = data.draw(arrays((1, 1, d)))
    k = data.draw(arrays((1, 1, d)))

    def score(a: int, b: int) -> float:
        qa = rotated(q, device, positions=[a])
        kb = rotated(k, device, positions=[b])
        return float((qa * kb).sum())

    assert abs(score(m, n) - score(m + shift, n + shift)) < TOL


def test_position_zero_is_the_identity(device):
    x = np.random.default_rng(0).standard_normal((3, 1, 8))
    np.testing.assert_array_equal(rotated(x, device, positions=[0]), x)
    np.testing.assert_array_equal(rope_matrix(0, 8).numpy(), np.eye(8))


@given(x=arrays((5, 2)), base=st.sampled_from([10000.0, 100.0, 2.0]))
def test_two_dimensions_is_complex_multiplication(device, x, base):
    """For d = 2, θ₁ = 1, and rotating (a, b) by m is (a + ib)·e^{im}."""
    y = rotated(x, device, base=base)
    z = (x[:, 0] + 1j * x[:, 1]) * np.exp(1j * np.arange(5))
    np.testing.assert_allclose(y[:, 0], z.real, rtol=0, atol=TOL)
    np.testing.assert_allclose(y[:, 1], z.imag, rtol=0, atol=TOL)


def test_frequencies_follow_the_lecture():
    """θ_i = 10000^(−2(i−1)/d): θ₁ = 1, geometrically decreasing."""
    d = 8
    expected = [10000.0 ** (-2 * (i - 1) / d) for i in range(1, d // 2 + 1)]
    np.testing.assert_allclose(rope_frequencies(d).numpy(), expected, rtol=1e-15)


@given(data=st.data(), half=half_dims, length=st.integers(1, 6))
def test_elementwise_form_equals_the_matrix(device, data, half, length):
    d = 2 * half
    x = data.draw(arrays((2, length, d)))
    y = rotated(x, device)
    for m in range(length):
        R = rope_matrix(m, d).numpy()
        np.testing.assert_allclose(y[:, m], x[:, m] @ R.T, rtol=0, atol=TOL)


def test_matrix_is_block_diagonal_over_adjacent_pairs():
    m, d = 3, 6
    R = rope_matrix(m, d).numpy()
    theta = rope_frequencies(d).numpy()
    for i in range(d // 2):
        c, s = np.cos(m * theta[i]), np.sin(m * theta[i])
        np.testing.assert_allclose(R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2], [[c, -s], [s, c]], atol=TOL)
    off_block = R.copy()
    for i in range(d // 2):
        off_block[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = 0
    assert np.all(off_block == 0)
    np.testing.assert_allclose(R.T @ R, np.eye(d), atol=TOL)  # a rotation: Rᵀ R = I


def test_not_the_rotate_half_convention():
    """The rotate-half form pairs i with i + d/2: the same rotation after a permutation P."""
    d = 8
    x = np.random.default_rng(1).standard_normal((1, 4, d))
    ours = rotated(x, "cpu")
    cos, sin = (t.numpy() for t in rope_cos_sin(4, d, dtype="float64"))
    cos2, sin2 = np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)
    halves = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    rotate_half = x * cos2 + halves * sin2
    assert np.abs(ours - rotate_half).max() > 1e-3  # different numbers for the same input
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])  # adjacent pairs -> halves
    x_perm = x[..., perm]
    rotate_half_perm = x_perm * cos2 + np.concatenate([-x_perm[..., d // 2 :], x_perm[..., : d // 2]], -1) * sin2
    np.testing.assert_allclose(rotate_half_perm, ours[..., perm], atol=TOL)  # ... but equal up to P


def test_explicit_and_broadcast_positions(device):
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 6))
    per_batch = np.array([[5, 6, 7, 8], [0, 2, 4, 6]])[:, None, :]  # (B, 1, T) broadcasts over heads
    y = rope(to_device_like(x, device), positions=mg.tensor(per_batch, device=device)).numpy()
    for b in range(2):
        for t in range(4):
            R = rope_matrix(int(per_batch[b, 0, t]), 6).numpy()
            np.testing.assert_allclose(y[b, :, t], x[b, :, t] @ R.T, atol=TOL)


@given(data=st.data(), half=half_dims, length=st.integers(1, 4))
def test_rope_gradcheck_and_gradgradcheck(device, data, half, length):
    x = to_device_like(data.draw(arrays((2, length, 2 * half))), device, requires_grad=True)
    mg.gradcheck(lambda t: rope(t), x)
    mg.gradgradcheck(lambda t: rope(t) * rope(t), x)


def test_rope_float32_stays_float32(device):
    x = mg.randn(2, 3, 4, device=device)
    assert rope(x).dtype == np.float32


@pytest.mark.parametrize("shape", [(2, 3, 5), (4, 7), (3,)])
def test_odd_or_missing_dimension_gives_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"rope: .*(even|\(\.\.\., T, d\))"):
        rope(mg.randn(*shape))


def test_rotary_embedding_module_caches_and_matches_rope(device):
    module = RotaryEmbedding(8)
    x = mg.randn(2, 4, 5, 8, device=device)
    np.testing.assert_allclose(module(x).numpy(), rope(x).numpy(), atol=1e-6)
    cos_first = module.cos_sin(5, x.device, x.dtype)[0]
    module(x)
    assert module.cos_sin(5, x.device, x.dtype)[0] is cos_first  # cached, not recomputed
    assert list(module.parameters()) == [] and len(module.state_dict()) == 0
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


def test_positions_that_do_not_fit_x_give_a_clear_error():
    with pytest.raises(ValueError, match=r"rope: .*do not broadcast"):
        rope(mg.randn(2, 3, 4), positions=[0, 1, 2, 3, 4])
