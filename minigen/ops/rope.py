"""Rotary position embedding (RoPE), exactly as the lecture defines it.

A query or key vector x ∈ ℝᵈ at position m is rotated by the block-diagonal matrix

    R_{Θ,m} = blockdiag( [[cos mθ_i, −sin mθ_i],
                          [sin mθ_i,  cos mθ_i]] ),   i = 1 .. d/2,
    θ_i = base^(−2(i−1)/d)                            (base = 10000),

so each ADJACENT pair of coordinates (x₁, x₂), (x₃, x₄), … is a point in the plane
turned by the angle mθ_i. Rotations keep lengths, and because R_mᵀ R_n = R_{n−m},

    ⟨R_m q, R_n k⟩ = qᵀ R_{n−m} k :

the attention score depends on the positions only through their difference n − m.

Two forms are provided:

* ``rope_matrix(m, d)`` builds R_{Θ,m} explicitly: a d×d matrix, for reading and tests.
* ``rope(x)`` is the efficient elementwise form g(x; Θ) used in models. Writing the
  pair (x_{2i−1}, x_{2i}) as (a, b) and c = cos mθ_i, s = sin mθ_i:

      g(x)_{2i−1} = a·c − b·s,      g(x)_{2i} = a·s + b·c,

  which is R_{Θ,m} x without ever forming the matrix (O(d) instead of O(d²)).

**Not the "rotate-half" convention.** Many libraries (GPT-NeoX, LLaMA code in
Hugging Face ``transformers``) pair coordinate i with i + d/2 instead of with its
neighbour. That is the same rotation conjugated by a fixed permutation P of the
coordinates (P moves coordinate i + d/2 next to coordinate i): RotateHalf_m = Pᵀ R_{Θ,m} P.
Scores keep the relative-position property either way, but for the same input the
numbers differ, because different pairs of coordinates share each frequency θ_i. A
checkpoint trained with one convention only works with the other after permuting the
rows of its query and key projection weights by P.

The backward of a rotation is the inverse rotation: ∂L/∂x = R_mᵀ g = R_{−m} g, i.e. the
same op with sin replaced by −sin. Since that is again a rotation (a linear map), its own
derivative is known, and second derivatives (``create_graph=True``) work.
"""

from __future__ import annotations

from typing import Any

from minigen import backend
from minigen.autograd import Function
from minigen.backend import Device
from minigen.tensor import Tensor


def _check_even(d: int, where: str, shape: Any = None) -> None:
    if d % 2 != 0 or d <= 0:
        detail = f" (input shape {tuple(shape)})" if shape is not None else ""
        raise ValueError(
            f"{where}: RoPE rotates pairs of coordinates, so the last dimension must be even and "
            f"positive, got d = {d}{detail}"
        )


def rope_frequencies(d: int, base: float = 10000.0, device: Any = "cpu") -> Tensor:
    """θ_i = base^(−2(i−1)/d) for i = 1 .. d/2, in float64: shape (d/2,)."""
    _check_even(d, "rope_frequencies")
    xp = backend.xp_for(device)
    two_i = xp.arange(0, d, 2, dtype="float64")  # 2(i−1) for i = 1 .. d/2
    return Tensor(base ** (-two_i / d))


def rope_cos_sin(
    positions: Any, d: int, base: float = 10000.0, device: Any = None, dtype: Any = "float32"
) -> tuple[Tensor, Tensor]:
    """cos(mθ_i) and sin(mθ_i) for every position m in ``positions`` and i = 1 .. d/2.

    ``positions`` is an int (meaning 0 .. positions−1), a sequence, or a Tensor of
    positions (any shape). Returns two Tensors of shape ``positions.shape + (d/2,)``,
    computed in float64 and then cast to ``dtype``.
    """
    _check_even(d, "rope_cos_sin")
    if isinstance(positions, Tensor):
        device = positions.device if device is None else Device(device)
        m = backend.to_device(positions.data, device).astype("float64")
    else:
        device = Device(device or "cpu")
        xp = backend.xp_for(device)
        m = xp.arange(positions, dtype="float64") if isinstance(positions, int) else xp.asarray(positions, "float64")
    theta = rope_frequencies(d, base, device).data
    angles = m[..., None] * theta  # m θ_i, shape (..., d/2)
    xp = backend.xp_of(angles)
    return Tensor(xp.cos(angles).astype(dtype)), Tensor(xp.sin(angles).astype(dtype))


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """True when an array of ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


class Rope(Function):
    """y = R_{Θ,m} x on every adjacent pair;  ∂L/∂x = R_{Θ,m}ᵀ g = (the same op with −sin)(g).

    Inputs: x (..., T, d); cos and sin (..., T, d/2) broadcastable against x's pairs.
    cos and sin are constants (positions are not learned), so they get no gradient.
    """

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor):
        a = x.data[..., 0::2]  # x₁, x₃, x₅, … (the first of each pair)
        b = x.data[..., 1::2]  # x₂, x₄, x₆, …
        c, s = cos.data.astype(x.dtype, copy=False), sin.data.astype(x.dtype, copy=False)
        pairs_shape = x.shape[:-1] + (x.shape[-1] // 2,)
        if not _broadcasts_to(c.shape, pairs_shape):
            raise ValueError(f"rope: cos/sin of shape {tuple(c.shape)} do not broadcast to x's pairs {pairs_shape}")
        self.saved = (cos, sin)
        y = x.xp.empty(x.shape, dtype=x.dtype)
        y[..., 0::2] = a * c - b * s  # x_{2i-1} cos mθ_i − x_{2i} sin mθ_i
        y[..., 1::2] = a * s + b * c  # x_{2i-1} sin mθ_i + x_{2i} cos mθ_i
        return y

    def backward(self, grad: Tensor):
        cos, sin = self.saved
        # The transpose of a rotation by mθ is the rotation by −mθ: cos stays, sin flips sign.
        return Rope.apply(grad, cos, Tensor(-sin.data)), None, None


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the adjacent pairs of ``x`` (..., T, d) by precomputed cos/sin (T, d/2) (or broadcastable)."""
    _check_even(x.shape[-1], "rope", x.shape)
    if cos.shape[-1] != x.shape[-1] // 2 or cos.shape != sin.shape:
        raise ValueError(
            f"rope: cos and sin must both end in d/2 = {x.shape[-1] // 2}, got {tuple(cos.shape)} and "
            f"{tuple(sin.shape)} for x of shape {tuple(x.shape)}"
        )
    return Rope.apply(x, cos, sin)


def rope(x: Tensor, positions: Any = None, base: float = 10000.0) -> Tensor:
    """g(x; Θ): rotate each adjacent pair (x_{2i−1}, x_{2i}) of x by the angle mθ_i.

    ``x`` has shape (..., T, d) with d even. ``positions`` gives the position m of each
    token: by default 0 .. T−1 along the second-to-last axis; otherwise a sequence or
    Tensor whose shape broadcasts against ``x.shape[:-1]`` (e.g. (T,) or (B, 1, T)).
    Differentiable in x (twice and more).
    """
    if x.ndim < 2:
        raise ValueError(f"rope: expected x of shape (..., T, d), got shape {tuple(x.shape)}")
    _check_even(x.shape[-1], "rope", x.shape)
    if positions is None:
        positions = x.shape[-2]
    cos, sin = rope_cos_sin(positions, x.shape[-1], base, device=x.device, dtype=x.dtype)
    return apply_rope(x, cos, sin)


def rope_matrix(m: float, d: int, base: float = 10000.0, dtype: Any = "float64", device: Any = "cpu") -> Tensor:
    """The explicit d×d rotation R_{Θ,m} = blockdiag([[cos mθ_i, −sin mθ_i], [sin mθ_i, cos mθ_i]]).

    For reading and checking: ``rope_matrix(m, d) @ x`` equals ``rope`` of x at position m.
    """
    _check_even(d, "rope_matrix")
    xp = backend.xp_for(device)
    theta = rope_frequencies(d, base, device).data
    c, s = xp.cos(m * theta), xp.sin(m * theta)
    R = xp.zeros((d, d), dtype="float64")
    even = xp.arange(0, d, 2)  # the row/column of the first coordinate of each pair
    R[even, even] = c
    R[even, even + 1] = -s
    R[even + 1, even] = s
    R[even + 1, even + 1] = c
    return Tensor(R.astype(dtype))
