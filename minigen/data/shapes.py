"""Procedural pictures of circles, squares and triangles: a tiny, offline image data set.

Each image shows one filled shape in a random colour on a random dark background, at a
random size, position and rotation. Shapes are drawn with signed distances, all
images at once: a pixel's coverage is ``clip(0.5 − d / pixel, 0, 1)``, where ``d`` is
its centre's signed distance to the shape's edge (negative inside). This gives
anti-aliased edges without drawing each image separately.
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue, saturation, value in [0, 1] -> (n, 3) RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + 6.0 * h[:, None]) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _polygon_distance(
    px: np.ndarray, py: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray, sides: int
) -> np.ndarray:
    """Signed distance (approximate outside the corners) to a regular polygon.

    The polygon has circumradius ``radius``, so its edges lie at the apothem
    ``radius·cos(π/sides)`` from the centre. The distance is the largest of the
    distances past each edge's line, exact inside and along the edges.
    """
    apothem = radius * np.cos(np.pi / sides)
    distance = np.full(np.broadcast_shapes(px.shape, cx.shape), -np.inf)
    for k in range(sides):
        normal = angle + 2.0 * np.pi * (k + 0.5) / sides  # edge normals sit between vertices
        projection = (px - cx) * np.cos(normal) + (py - cy) * np.sin(normal)
        distance = np.maximum(distance, projection - apothem)
    return distance


def make_shapes(n: int, size: int = 32, seed: int | None = 0, grayscale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images with one shape each, and their labels.

    Returns ``images`` float32 ``(n, 3, size, size)`` in [0, 1] (``(n, 1, ...)`` when
    ``grayscale``) and ``labels`` int64 ``(n,)`` indexing ``SHAPE_NAMES``
    (0 circle, 1 square, 2 triangle). The shape's circumradius is 18-40% of the
    image size, its centre keeps it inside the frame, squares and triangles are rotated at
    random, and the shape is a bright, saturated colour on a dark background, so the
    shape stands out in every channel mix. Same arguments, same images.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"make_shapes: n must be a non-negative int, got {n!r}")
    if size < 8:
        raise ValueError(f"make_shapes: size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    u = rng.random((n, 10))  # one row per image, so a smaller n gives a prefix of the set
    labels = np.minimum((u[:, 0] * 3).astype(np.int64), 2)
    radius = (0.18 + 0.22 * u[:, 1]) * size
    # Keep the whole shape inside the frame (with a one-pixel margin).
    room = size / 2 - radius - 1.0
    cx = size / 2 + (2 * u[:, 2] - 1) * room
    cy = size / 2 + (2 * u[:, 3] - 1) * room
    angle = 2.0 * np.pi * u[:, 4]
    foreground = _hsv_to_rgb(u[:, 5], 0.55 + 0.45 * u[:, 6], 0.75 + 0.25 * u[:, 7])
    background = _hsv_to_rgb(u[:, 8], 0.2 + 0.5 * u[:, 9], 0.05 + 0.25 * u[:, 9])

    foreground, background = foreground.astype(np.float32), background.astype(np.float32)
    if grayscale:  # brightness = HSV value, so every hue keeps its contrast with the background
        foreground = foreground.max(axis=1, keepdims=True)
        background = background.max(axis=1, keepdims=True)

    images = np.empty((n, foreground.shape[1], size, size), np.float32)
    centres = np.arange(size, dtype=np.float32) + 0.5
    py, px = np.meshgrid(centres, centres, indexing="ij")
    chunk = 1024
    for start in range(0, n, chunk):
        s = slice(start, min(start + chunk, n))
        distance = np.empty((s.stop - s.start, size, size), np.float32)
        # Every shape fits in the circle of radius r (its circumcircle), so none leaves the frame.
        for label in range(len(SHAPE_NAMES)):
            rows = np.flatnonzero(labels[s] == label) + start
            c_x, c_y = cx[rows, None, None], cy[rows, None, None]
            r, a = radius[rows, None, None], angle[rows, None, None]
            if label == 0:
                d = np.hypot(px - c_x, py - c_y) - r
            else:
                d = _polygon_distance(px, py, c_x, c_y, r, a, sides=4 if label == 1 else 3)
            distance[rows - start] = d
        coverage = np.clip(0.5 - distance, 0.0, 1.0)[:, None]  # (m, 1, H, W)
        images[s] = background[s, :, None, None] * (1 - coverage) + foreground[s, :, None, None] * coverage
    return images, labels
