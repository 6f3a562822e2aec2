"""The image-to-image digit sets: four paired tasks, the unpaired thin/thick set, the edge
detector (against a direct NumPy correlation, gradient-checked) and the demo metrics."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

import minigen as mg
from minigen.data import load_digits
from minigen.data.translation import (
    CLASS_HUES,
    DIGIT_NOISE,
    EDGE_KERNEL_H,
    EDGE_KERNEL_V,
    HOLE_FILL,
    PAIRED_TASKS,
    THICK_ABOVE,
    THIN_BELOW,
    class_colours,
    edge_magnitude,
    edges2digits,
    grey2colour,
    hue_accuracy,
    lowres2highres,
    masked2full,
    paired_digits,
    rgb_to_hue,
    sharpness,
    thin_thick_digits,
    to_grey,
)

N = 40


def _correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded 3×3 cross-correlation, one output pixel at a time (the lecture's definition)."""
    padded = np.pad(image, 1)
    out = np.zeros_like(image)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = (padded[i : i + 3, j : j + 3] * kernel).sum()
    return out


# ----------------------------------------------------------------------- edge detector
def test_edge_kernels_are_the_lectures():
    np.testing.assert_array_equal(EDGE_KERNEL_H, [[1, 1, 1], [0, 0, 0], [-1, -1, -1]])
    np.testing.assert_array_equal(EDGE_KERNEL_V, EDGE_KERNEL_H.T)


def test_edge_magnitude_matches_a_direct_correlation(device):
    images = np.random.default_rng(0).random((3, 2, 6, 7))
    got = edge_magnitude(mg.tensor(images, device=device)).numpy()
    for n in range(3):
        for c in range(2):
            gh, gv = _correlate(images[n, c], EDGE_KERNEL_H), _correlate(images[n, c], EDGE_KERNEL_V)
            np.testing.assert_allclose(got[n, c], np.sqrt(gh**2 + gv**2), rtol=1e-5, atol=1e-6)


def test_edge_magnitude_gradcheck():
    # random values keep both responses away from 0, where √· has its kink
    images = mg.tensor(np.random.default_rng(1).random((2, 1, 4, 4)), dtype=mg.float64, requires_grad=True)
    mg.gradcheck(edge_magnitude, images)


# -------------------------------------------------------------------------- paired tasks
@pytest.mark.parametrize("task", list(PAIRED_TASKS))
def test_paired_tasks_are_seeded_pairs_of_the_same_digit(task):
    train = paired_digits(task, N, "train")
    channels_out = 3 if task == "grey2colour" else 1
    assert train.inputs.shape == (N, 1, 16, 16) and train.targets.shape == (N, channels_out, 16, 16)
    assert train.inputs.dtype == train.targets.dtype == np.float32
    for images in train.arrays:
        assert images.min() >= 0.0 and images.max() <= 1.0
    digits = load_digits("train", n=N, size=16, noise=DIGIT_NOISE)
    np.testing.assert_array_equal(train.labels, digits.labels)
    np.testing.assert_array_equal(to_grey(train.targets), digits.images)  # the target is the rendered digit
    again = paired_digits(task, N, "train")
    np.testing.assert_array_equal(again.inputs, train.inputs)
    assert not np.array_equal(paired_digits(task, N, "test").targets, train.targets)
    assert len(train.subset(slice(0, 5))) == 5 and train.task == task


def test_edges2digits_draws_the_outline_of_the_clean_digit():
    pairs = edges2digits(N)
    clean = load_digits("train", n=N, size=16, noise=0.0).images
    edges = np.stack([np.hypot(_correlate(im[0], EDGE_KERNEL_H), _correlate(im[0], EDGE_KERNEL_V)) for im in clean])
    edges /= edges.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(pairs.inputs[:, 0], edges, atol=1e-5)
    # an outline: bright on the strokes' flanks, dark along their middle
    middle = clean[:, 0] > 0.95
    assert pairs.inputs[:, 0][middle].mean() < 0.5 * pairs.inputs[:, 0][(clean[:, 0] > 0.2) & ~middle].mean()


def test_grey2colour_paints_each_class_in_its_hue():
    pairs = grey2colour(N)
    np.testing.assert_allclose(to_grey(pairs.targets), pairs.inputs, atol=1e-6)
    strokes = pairs.inputs[:, 0] > 0.5
    hues = rgb_to_hue(pairs.targets)
    expected = CLASS_HUES[pairs.labels][:, None, None] * np.ones_like(hues)
    np.testing.assert_allclose(hues[strokes], expected[strokes], atol=1e-5)
    assert hue_accuracy(pairs.targets, pairs.targets, pairs.labels) == 1.0
    assert hue_accuracy(pairs.targets, pairs.targets, (pairs.labels + 1) % 10) == 0.0
    assert len(np.unique(class_colours().round(3), axis=0)) == 10


def test_lowres2highres_keeps_only_the_coarse_picture():
    pairs = lowres2highres(N)
    blocks = lambda a: a.reshape(N, 4, 4, 4, 4).mean(axis=(2, 4))  # noqa: E731  (4×4 block means)
    assert np.abs(blocks(pairs.inputs[:, 0]) - blocks(pairs.targets[:, 0])).mean() < 0.05
    assert sharpness(pairs.inputs, pairs.targets) < 0.5  # the detail is gone
    with pytest.raises(ValueError, match="divisible by 4"):
        lowres2highres(4, size=10)
    assert lowres2highres(4, size=28).inputs.shape == (4, 1, 28, 28)


def test_masked2full_hides_one_square():
    pairs = masked2full(N)
    hidden = pairs.inputs != pairs.targets
    for n in range(N):
        hole = np.argwhere(pairs.inputs[n, 0] == np.float32(HOLE_FILL))
        top, left = hole.min(axis=0)
        assert tuple(hole.max(axis=0) - hole.min(axis=0) + 1) == (6, 6) and len(hole) >= 36 - 1
        assert 2 <= top <= 16 - 2 - 6 and 2 <= left <= 16 - 2 - 6
        outside = np.ones((16, 16), bool)
        outside[top : top + 6, left : left + 6] = False
        assert not hidden[n, 0][outside].any()  # the rest is the target itself


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'edges2handbags'; choose one of edges2digits, grey2colour"):
        paired_digits("edges2handbags", 4)


# ------------------------------------------------------------------------- unpaired set
def test_thin_thick_digits_are_two_unpaired_domains():
    data = thin_thick_digits(60)
    assert len(data.a) == len(data.b) == 60
    assert data.a.thickness.max() < THIN_BELOW and data.b.thickness.min() > THICK_ABOVE
    # two independent samples: no image of A reappears in B, and the classes are mixed in both
    distances = np.abs(data.a.images.reshape(60, 1, -1) - data.b.images.reshape(1, 60, -1)).mean(axis=2)
    assert distances.min() > 0.01
    assert len(np.unique(data.a.labels)) == len(np.unique(data.b.labels)) == 10
    # thick strokes cover more pixels
    assert (data.b.images > 0.5).mean() > 1.5 * (data.a.images > 0.5).mean()
    np.testing.assert_array_equal(thin_thick_digits(60).a.images, data.a.images)
    assert not np.array_equal(thin_thick_digits(60, split="test").a.images, data.a.images)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        thin_thick_digits(5, split="valid")


# ------------------------------------------------------------------------------ metrics
def test_rgb_to_hue_matches_colorsys():
    pixels = np.random.default_rng(2).random((5, 3, 2, 3))
    hue = rgb_to_hue(pixels)
    for n, i, j in np.ndindex(5, 2, 3):
        np.testing.assert_allclose(hue[n, i, j], colorsys.rgb_to_hsv(*pixels[n, :, i, j])[0], atol=1e-9)


def test_sharpness_is_one_for_the_targets_and_lower_when_blurred():
    targets = load_digits("test", n=20, size=16).images
    assert sharpness(targets, targets) == pytest.approx(1.0)
    blurred = (targets + np.roll(targets, 1, axis=3) + np.roll(targets, 1, axis=2)) / 3
    assert sharpness(blurred, targets) < 0.9
    with pytest.raises(ValueError, match="same shape"):
        sharpness(targets[:, :, :8], targets)
