"""Toy 2-D distributions for GANs, VAEs, flows and diffusion, and metrics to compare samples.

All sets are host NumPy ``float32`` arrays of shape ``(n, 2)``, drawn from their own
``numpy.random.Generator(seed)``, so the same arguments give the same points and the
global ``minigen.manual_seed`` is left untouched.

* ``eight_gaussians``: a ring of 8 tight modes; the classic test of GAN mode collapse.
* ``two_moons``: two interleaving half circles.
* ``swiss_roll``: a 2-D spiral sheet, the usual diffusion warm-up.
* ``spirals``: interleaved spiral arms, each one a class.
* ``checkerboard``: uniform squares on alternate cells of a 4x4 board.

Metrics (host NumPy):

* ``energy_distance(x, y)``: 0 exactly for identical sets, symmetric, grows with shift.
* ``mode_coverage(samples, centers, radius)``: how many samples landed on each mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigen.utils.images import to_numpy


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_n(n: int, name: str) -> int:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name}: n must be a non-negative int, got {n!r}")
    return int(n)


# ------------------------------------------------------------------------------ sets
def eight_gaussian_centers(radius: float = 2.0, n_modes: int = 8) -> np.ndarray:
    """The ``(n_modes, 2)`` mode centres of ``eight_gaussians``: evenly spaced on a circle."""
    angles = 2.0 * np.pi * np.arange(n_modes) / n_modes
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def eight_gaussians(
    n: int,
    std: float = 0.02,
    radius: float = 2.0,
    seed: int | None = 0,
    return_labels: bool = False,
    n_modes: int = 8,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n`` points from a mixture of ``n_modes`` isotropic Gaussians on a circle.

    Mode k is centred at ``radius * (cos 2πk/8, sin 2πk/8)`` (see
    ``eight_gaussian_centers``) with standard deviation ``std``; each point's mode is
    uniform. ``return_labels=True`` also returns the int64 mode of every point.
    """
    n = _check_n(n, "eight_gaussians")
    rng = _rng(seed)
    labels = rng.integers(0, n_modes, size=n)
    centers = eight_gaussian_centers(radius, n_modes).astype(np.float64)
    points = (centers[labels] + std * rng.standard_normal((n, 2))).astype(np.float32)
    return (points, labels.astype(np.int64)) if return_labels else points


def two_moons(
    n: int, noise: float = 0.05, seed: int | None = 0, return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn's ``make_moons``, centred at the origin).

    The upper moon is the unit half circle, the lower one is it flipped and shifted by
    (1, 0.5); the whole set is then shifted by (-0.5, -0.25) so its mean is near 0.
    Gaussian noise of standard deviation ``noise`` is added. Labels: 0 upper, 1 lower.
    """
    n = _check_n(n, "two_moons")
    rng = _rng(seed)
    n_upper = n // 2 + n % 2
    labels = np.concatenate([np.zeros(n_upper, np.int64), np.ones(n - n_upper, np.int64)])
    t = np.pi * rng.random(n)
    x = np.where(labels == 0, np.cos(t), 1.0 - np.cos(t))
    y = np.where(labels == 0, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x - 0.5, y - 0.25], axis=1) + noise * rng.standard_normal((n, 2))
    order = rng.permutation(n)  # mix the two moons so any prefix holds both
    points, labels = points[order].astype(np.float32), labels[order]
    return (points, labels) if return_labels else points


def swiss_roll(
    n: int, noise: float = 0.05, seed: int | None = 0, return_t: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A 2-D Swiss roll: the spiral ``t (cos t, sin t) / 10`` with t in [1.5π, 4.5π].

    This is scikit-learn's ``make_swiss_roll`` seen from the side, scaled into about
    [-1.5, 1.5]^2, as in diffusion-model tutorials. ``noise`` is the standard
    deviation of added Gaussian noise. ``return_t=True`` also returns each point's
    position ``t`` along the roll (float32), handy for colouring.
    """
    n = _check_n(n, "swiss_roll")
    rng = _rng(seed)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 10.0 + noise * rng.standard_normal((n, 2))
    points = points.astype(np.float32)
    return (points, t.astype(np.float32)) if return_t else points


def spirals(
    n: int,
    n_arms: int = 2,
    turns: float = 1.5,
    noise: float = 0.03,
    seed: int | None = 0,
    return_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n_arms`` interleaved spiral arms of ``turns`` turns each, reaching radius 1.

    Arm a is the Archimedean spiral ``r = s, θ = 2π·turns·s + 2πa/n_arms`` for s in
    [0.05, 1], plus Gaussian noise of standard deviation ``noise``; the label is the arm.
    """
    n = _check_n(n, "spirals")
    if n_arms < 1:
        raise ValueError(f"spirals: n_arms must be at least 1, got {n_arms}")
    rng = _rng(seed)
    labels = rng.integers(0, n_arms, size=n)
    # sqrt spreads the points evenly along the arm's length (it grows with the radius).
    s = 0.05 + 0.95 * np.sqrt(rng.random(n))
    theta = 2.0 * np.pi * turns * s + 2.0 * np.pi * labels / n_arms
    points = np.stack([s * np.cos(theta), s * np.sin(theta)], axis=1) + noise * rng.standard_normal((n, 2))
    points = points.astype(np.float32)
    return (points, labels.astype(np.int64)) if return_labels else points


def checkerboard(n: int, seed: int | None = 0, size: float = 4.0) -> np.ndarray:
    """Uniform points on the dark squares of a 4x4 checkerboard spanning [-size/2, size/2]^2."""
    n = _check_n(n, "checkerboard")
    rng = _rng(seed)
    cell = size / 4.0
    column = rng.integers(0, 4, size=n)
    row = 2 * rng.integers(0, 2, size=n) + (column % 2)  # alternate cells per column
    offsets = rng.random((n, 2))
    points = np.stack([column + offsets[:, 0], row + offsets[:, 1]], axis=1) * cell - size / 2
    return points.astype(np.float32)


# --------------------------------------------------------------------------- metrics
def _as_points(x: Any, name: str) -> np.ndarray:
    array = to_numpy(x).astype(np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"energy_distance: {name} must be a non-empty (n, d) array, got shape {array.shape}")
    return array


def _mean_pairwise_distance(a: np.ndarray, b: np.ndarray, block: int = 1024) -> float:
    """E‖a_i − b_j‖ over all pairs, in blocks so 10k x 10k pairs need little memory."""
    total = 0.0
    b_sq = (b * b).sum(axis=1)
    for start in range(0, len(a), block):
        chunk = a[start : start + block]
        # ‖u − v‖² = ‖u‖² + ‖v‖² − 2 u·v; clip the tiny negatives that rounding produces.
        sq = (chunk * chunk).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * chunk @ b.T
        total += float(np.sqrt(np.maximum(sq, 0.0)).sum())
    return total / (len(a) * len(b))


def energy_distance(x: Any, y: Any) -> float:
    """The energy distance between two sample sets ``x`` (n, d) and ``y`` (m, d).

        D(X, Y) = sqrt( 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ )

    with the expectations taken over all pairs of the given samples (the V-statistic,
    which is never negative). It is 0 exactly when the sets are identical, symmetric
    in x and y, and grows with a shift between them (about sqrt(2‖shift‖) for large
    shifts). As with SciPy's ``energy_distance``, the square root is returned.
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"energy_distance: x has {x.shape[1]} columns but y has {y.shape[1]}")
    if np.array_equal(x, y):  # the same samples: exactly 0, whatever the rounding
        return 0.0
    xx = _mean_pairwise_distance(x, x)
    yy = _mean_pairwise_distance(y, y)
    xy = _mean_pairwise_distance(x, y)
    return float(np.sqrt(max(2.0 * xy - xx - yy, 0.0)))


def mode_coverage(samples: Any, centers: Any, radius: float) -> np.ndarray:
    """How many samples lie within ``radius`` of each centre: int64 counts, one per mode.

    A sample counts for its nearest centre only, and only if it is within ``radius``
    of it. From the counts::

        counts = mode_coverage(fake, eight_gaussian_centers(), radius=0.1)
        modes_hit = (counts > 0).sum()                # mode collapse shows as < 8
        quality = counts.sum() / len(fake)            # share of samples near any mode
    """
    points = to_numpy(samples).astype(np.float64)
    centers = to_numpy(centers).astype(np.float64)
    if points.ndim != 2 or centers.ndim != 2 or points.shape[1] != centers.shape[1]:
        raise ValueError(
            f"mode_coverage: samples {points.shape} and centers {centers.shape} must both be (n, d) with the same d"
        )
    if len(points) == 0:
        return np.zeros(len(centers), dtype=np.int64)
    distances = np.linalg.norm(points[:, None, :] - centers[None, :, :], axis=-1)
    nearest = distances.argmin(axis=1)
    close = distances[np.arange(len(points)), nearest] <= radius
    return np.bincount(nearest[close], minlength=len(centers)).astype(np.int64)
