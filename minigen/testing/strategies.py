"""Hypothesis strategies for property-testing ops.

The values they generate are kept where finite differences are trustworthy:
finite and bounded, no subnormals, optionally away from kinks (``away_from``) and
zero denominators (``positive_arrays``), or all distinct (``distinct_arrays``), so that
max and sort have no ties. Tolerances never need loosening.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigen.tensor import Tensor


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    """Array shapes, e.g. (3,), (2, 4), (1, 3, 2)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    num_shapes: int = 2, min_dims: int = 0, max_dims: int = 3, max_side: int = 4
) -> st.SearchStrategy:
    """Tuples of shapes that broadcast together, e.g. ((2, 1, 3), (4, 3))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side
    ).map(lambda result: tuple(result.input_shapes))


@st.composite
def matmul_shapes(draw: Any, max_batch_dims: int = 2, max_side: int = 4) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape pairs valid for ``a @ b``: 1-D cases, plain matrices and broadcast batches."""
    n, k, m = (draw(st.integers(1, max_side)) for _ in range(3))
    kind = draw(st.sampled_from(["vv", "mv", "vm", "mm", "batched"]))
    if kind == "vv":
        return (k,), (k,)
    if kind == "mv":
        return (n, k), (k,)
    if kind == "vm":
        return (k,), (k, m)
    if kind == "mm":
        return (n, k), (k, m)
    batch_a, batch_b = draw(broadcastable_shapes(2, min_dims=1, max_dims=max_batch_dims, max_side=3))
    return batch_a + (n, k), batch_b + (k, m)


def _elements(low: float, high: float) -> st.SearchStrategy:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def arrays(shape: Any, low: float = -3.0, high: float = 3.0, dtype: Any = np.float64) -> st.SearchStrategy:
    """Finite, bounded float arrays without subnormals. ``shape`` may be a strategy."""
    return hnp.arrays(dtype, shape, elements=_elements(low, high)).map(lambda a: a + 0.0)


def positive_arrays(shape: Any, low: float = 0.5, high: float = 3.0) -> st.SearchStrategy:
    """Arrays bounded away from zero, for log, sqrt and denominators."""
    return arrays(shape, low, high)


def away_from(
    shape: Any, points: Sequence[float] = (0.0,), gap: float = 0.05, low: float = -3.0, high: float = 3.0
) -> st.SearchStrategy:
    """Arrays whose values keep at least ``gap`` from every kink in ``points`` (relu at 0, clamp bounds...)."""

    def far_enough(a: np.ndarray) -> bool:
        return all(bool(np.all(np.abs(a - p) >= gap)) for p in points)

    return arrays(shape, low, high).filter(far_enough)


@st.composite
def distinct_arrays(draw: Any, shape: Any, gap: float = 0.05, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Arrays whose values differ pairwise by at least ``gap``: no ties for max, sort, pooling."""
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    size = int(np.prod(shape))
    span = high - low
    assume(size * gap < span)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Evenly spaced values with jitter smaller than half the spacing, randomly placed.
    spacing = span / max(size, 1)
    values = (
        low + spacing * (np.arange(size) + 0.5) + rng.uniform(-0.25, 0.25, size) * min(spacing - gap, spacing) * 0.5
    )
    return rng.permutation(values).reshape(shape)


@st.composite
def noncontiguous(draw: Any, array_strategy: st.SearchStrategy) -> np.ndarray:
    """The same values as ``array_strategy`` draws, but as a non-contiguous view
    (transposed, or every other element of a larger array)."""
    a = draw(array_strategy)
    if a.ndim >= 2 and draw(st.booleans()):
        return np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)  # a transposed view
    bigger = np.repeat(a[..., None], 2, axis=-1).reshape(a.shape[:-1] + (2 * a.shape[-1],)) if a.ndim else a
    return bigger[..., ::2] if a.ndim else a


def tensors(array_strategy: st.SearchStrategy, device: Any = "cpu", requires_grad: bool = True) -> st.SearchStrategy:
    """Tensors on ``device`` built from an array strategy."""
    return array_strategy.map(lambda a: Tensor(np.array(a), device=device, requires_grad=requires_grad))
