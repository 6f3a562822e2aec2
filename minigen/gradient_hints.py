"""What the pattern of a wrong result says about the mistake: the hints, in one place.

``gradcheck`` compares an analytical gradient with a numerical one; the exercises'
checker compares a student's output or gradient with the engine's. Both explain a
disagreement with the functions here, so a hint reads the same wherever it appears:

* ``constant_ratio`` / ``ratio_hint``: got = c × want everywhere, a factor or sign error;
* ``shape_hints``: a gradient of the wrong shape (a missing unbroadcast, swapped axes);
* ``pattern_hints``: which elements are wrong: only at odd indices of an axis, only
  for some samples, only where the input is negative, ...;
* ``gradient_hints``: all of the above for a gradient, plus the gradient-only patterns
  (it never flowed, it leaks where the output does not depend on the input, a path is
  missing, it is transposed).

Each returns plain sentences for a student; an empty list means nothing recognisable.
"""

from __future__ import annotations

import numpy as np

NEVER_FLOWED = (
    "the analytical gradient is all zero but the numerical one is not: the gradient never "
    "flowed (backward returns zeros, or the graph was cut by .detach() / .data / a NumPy call)"
)
IGNORES_UPSTREAM = (
    "the gradient ignores the incoming g: doubling the upstream gradient g = ∂L/∂output leaves "
    "it unchanged. By the chain rule backward must multiply by grad (∂L/∂x = g · ∂y/∂x)"
)


def unbroadcast_hint(expected: tuple[int, ...]) -> str:
    return (
        "a missing unbroadcast: the input was broadcast in forward, so its gradient must be summed "
        f"over the broadcast axes back to {tuple(expected)} (grad.sum_to(shape))"
    )


def constant_ratio(
    got: np.ndarray, want: np.ndarray, rtol: float = 1e-6, atol: float = 1e-9, min_count: int = 1
) -> float | None:
    """c when got = c × want everywhere (to ``rtol``/``atol``), else None.

    c is read off the elements where ``want`` is not negligible (at least ``min_count``
    of them), then checked on every element.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return None
    scale = float(np.abs(want).max(initial=0.0))
    significant = np.abs(want) > 1e-3 * max(scale, 1e-300)
    if significant.sum() < max(min_count, 1) or scale == 0.0:
        return None
    c = float(np.median(got[significant] / want[significant]))
    if np.allclose(got, c * want, rtol=rtol, atol=atol):
        return c
    return None


def ratio_hint(c: float, got: str = "analytical", want: str = "numerical") -> str | None:
    """The sentence for got = c × want (None for c ≈ 1 or c ≈ 0, which say nothing)."""
    if abs(c - 1) < 1e-3 or abs(c) < 1e-12:
        return None
    if abs(c + 1) < 1e-3:
        return f"{got} = −1 × {want} everywhere: a sign error"
    if abs(c - 2) < 1e-3 or abs(c - 0.5) < 1e-3:
        return f"{got} = {c:.4g} × {want} everywhere: a factor of 2 is missing or extra"
    return (
        f"{got} = {c:.6g} × {want} everywhere: a constant factor is wrong "
        "(e.g. a missing 1/N of a mean, 1/√d of attention, or a scale in the forward)"
    )


def shape_hints(returned: tuple[int, ...], expected: tuple[int, ...]) -> list[str]:
    """Why a gradient may have the shape ``returned`` instead of its input's ``expected``."""
    returned, expected = tuple(returned), tuple(expected)
    try:
        broadcast = np.broadcast_shapes(returned, expected)
    except ValueError:
        broadcast = None
    if broadcast == returned and returned != expected:
        return [unbroadcast_hint(expected)]
    if sorted(returned) == sorted(expected) and returned != expected:
        return ["the axes are in the wrong order: a transpose is missing or extra"]
    return []


def _describe_indices(indices: list[int], size: int) -> str:
    if len(indices) >= 2 and indices == list(range(1, size, 2)):
        return "the odd indices (1, 3, 5, …)"
    if len(indices) >= 2 and indices == list(range(0, size, 2)):
        return "the even indices (0, 2, 4, …)"
    if len(indices) <= 5:
        return ("index " if len(indices) == 1 else "indices ") + ", ".join(str(i) for i in indices)
    return f"{len(indices)} of its {size} indices"


def pattern_hints(bad: np.ndarray, values: np.ndarray | None = None, fill: float = 0.6) -> list[str]:
    """Name the pattern of the wrong elements ``bad`` (a boolean mask).

    * Along an axis, the wrong elements sit at a few indices only (odd ones, even ones,
      some samples) and fill at least ``fill`` of those slices: a mistake that treats
      those positions differently (a sign slip on odd indices, a per-sample value).
    * With ``values`` (the input, same shape): wrong exactly where the input is
      negative (or non-negative): a wrong branch for those inputs.
    """
    bad = np.asarray(bad, dtype=bool)
    if bad.ndim == 0 or bad.sum() < 2 or bad.all():
        return []
    hints = []
    if values is not None and np.shape(values) == bad.shape:
        negative = np.asarray(values) < 0
        if negative.any() and not negative.all():
            if np.array_equal(bad, negative):
                hints.append(
                    "wrong exactly where the input is negative (x < 0) and right elsewhere: "
                    "check the branch (or formula) for negative inputs"
                )
            elif np.array_equal(bad, ~negative):
                hints.append(
                    "wrong exactly where the input is ≥ 0 and right where it is negative: "
                    "check the branch (or formula) for non-negative inputs"
                )
    for axis, size in enumerate(bad.shape):
        if size < 2:
            continue
        other_axes = tuple(a for a in range(bad.ndim) if a != axis)
        hit = bad.any(axis=other_axes) if other_axes else bad
        indices = [int(i) for i in np.flatnonzero(hit)]
        if len(indices) == size:
            continue  # wrong somewhere at every index of this axis: no pattern here
        slab = bad.size // size * len(indices)
        if bad.sum() < fill * slab:
            continue
        where = "the last axis" if axis == bad.ndim - 1 and bad.ndim > 1 else f"axis {axis}"
        hints.append(
            f"every wrong element has {_describe_indices(indices, size)} along {where} (size {size}); "
            "the other indices are right: look for what treats those positions differently"
        )
    return hints


def gradient_hints(
    analytical: np.ndarray,
    numerical: np.ndarray,
    bad: np.ndarray,
    atol: float,
    rtol: float,
    values: np.ndarray | None = None,
) -> list[str]:
    """Diagnose a wrong gradient from the pattern of its errors (``bad``: the wrong elements).

    ``values`` are the input's values at the same elements (for sign patterns).
    """
    if np.all(analytical == 0) and np.any(np.abs(numerical) > atol):
        return [NEVER_FLOWED]
    hints = []
    c = constant_ratio(analytical, numerical, rtol=max(rtol, 1e-3), atol=atol, min_count=2)
    said = ratio_hint(c) if c is not None else None
    if said:
        hints.append(said)
    if analytical.ndim >= 2 and analytical.shape[-1] == analytical.shape[-2] and analytical.shape[-1] > 1:
        transposed = np.swapaxes(analytical, -1, -2)
        if np.allclose(transposed, numerical, rtol=rtol, atol=atol) and not np.allclose(
            analytical, numerical, rtol=rtol, atol=atol
        ):
            hints.append(
                "the analytical gradient equals the numerical one transposed: "
                "a transpose is missing or extra (e.g. G Bᵀ vs Bᵀ G)"
            )
    scale = max(float(np.abs(numerical).max(initial=0.0)), atol)
    numerically_zero = np.abs(numerical) <= atol
    leaks = bad & numerically_zero & (np.abs(analytical) > atol)
    if leaks.any() and not numerically_zero.all():
        hints.append(
            f"{int(leaks.sum())} element(s) get gradient although the output does not depend on them "
            "(numerical gradient 0): a leak, gradient sent where there is none, e.g. into masked (future) "
            "positions, into values that were clipped or zeroed in forward, or through a term that "
            "should cancel"
        )
    # "No gradient" means none at all (exactly zero, to rounding), not merely a small one.
    exactly_zero = np.abs(analytical) <= 1e-12 * scale
    missed = bad & ~numerically_zero & exactly_zero
    if missed.any() and not exactly_zero.all():
        hints.append(
            f"{int(missed.sum())} element(s) get no gradient at all although the output depends on them: "
            "a path is missing from backward"
        )
    if not said:
        hints += pattern_hints(bad, values)
    return hints
