"""minigen.data: toy sets and metrics, shapes, rendered digits, file loaders, DataLoader."""

from __future__ import annotations

import gzip
import pickle
import re
import struct

import numpy as np
import pytest

import minigen as mg
from minigen.data import (
    DataLoader,
    TensorDataset,
    checkerboard,
    digits,
    eight_gaussian_centers,
    eight_gaussians,
    energy_distance,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    make_digits,
    make_shapes,
    mode_coverage,
    parse_idx,
    read_idx,
    spirals,
    swiss_roll,
    two_moons,
)

# ----------------------------------------------------------------------------- toy 2-D
TOY_SETS = {
    "eight_gaussians": eight_gaussians,
    "two_moons": two_moons,
    "swiss_roll": swiss_roll,
    "spirals": spirals,
    "checkerboard": checkerboard,
}


@pytest.mark.parametrize("name", sorted(TOY_SETS))
def test_toy_sets_shape_dtype_and_seeding(name: str) -> None:
    make = TOY_SETS[name]
    points = make(300, seed=1)
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert np.all(np.isfinite(points))
    np.testing.assert_array_equal(points, make(300, seed=1))
    assert not np.allclose(points, make(300, seed=2))
    assert make(0, seed=1).shape == (0, 2)


def test_toy_sets_leave_the_global_seed_alone() -> None:
    mg.manual_seed(5)
    expected = mg.randn(4).numpy()
    mg.manual_seed(5)
    eight_gaussians(100, seed=3)
    two_moons(100, seed=3)
    np.testing.assert_array_equal(mg.randn(4).numpy(), expected)


def test_eight_gaussians_points_sit_on_their_labelled_mode() -> None:
    points, labels = eight_gaussians(2000, std=0.02, radius=2.0, seed=0, return_labels=True)
    centers = eight_gaussian_centers(2.0)
    assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(8))
    distances = np.linalg.norm(points - centers[labels], axis=1)
    assert distances.max() < 0.02 * 6  # within 6 standard deviations
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.0, rtol=1e-6)
    assert abs(distances.std() - 0.02 * np.sqrt(2 - np.pi / 2)) < 0.003  # Rayleigh spread of a 2-D Gaussian


def test_two_moons_without_noise_lie_on_their_half_circles() -> None:
    points, labels = two_moons(400, noise=0.0, seed=0, return_labels=True)
    x, y = points[:, 0].astype(np.float64) + 0.5, points[:, 1].astype(np.float64) + 0.25
    upper, lower = labels == 0, labels == 1
    assert upper.sum() == 200 and lower.sum() == 200
    np.testing.assert_allclose(np.hypot(x[upper], y[upper]), 1.0, atol=1e-5)
    assert np.all(y[upper] >= -1e-6)
    np.testing.assert_allclose(np.hypot(x[lower] - 1.0, y[lower] - 0.5), 1.0, atol=1e-5)
    assert np.all(y[lower] <= 0.5 + 1e-6)


def test_swiss_roll_radius_is_the_position_along_the_roll() -> None:
    points, t = swiss_roll(500, noise=0.0, seed=0, return_t=True)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), t / 10.0, rtol=1e-5)
    assert t.min() >= 1.5 * np.pi and t.max() <= 4.5 * np.pi


def test_spirals_labels_are_arms() -> None:
    points, labels = spirals(600, n_arms=3, turns=1.0, noise=0.0, seed=0, return_labels=True)
    radius = np.linalg.norm(points, axis=1)
    angle = np.arctan2(points[:, 1], points[:, 0])
    # On arm a: angle = 2π·radius + 2πa/3 (mod 2π).
    residual = np.angle(np.exp(1j * (angle - 2 * np.pi * radius - 2 * np.pi * labels / 3)))
    assert np.abs(residual).max() < 1e-4
    assert set(np.unique(labels)) == {0, 1, 2}


def test_checkerboard_points_fill_alternate_cells() -> None:
    points = checkerboard(2000, seed=0)
    cells = np.floor(points + 2.0).astype(int)  # 4x4 board of unit cells
    assert cells.min() >= 0 and cells.max() <= 3
    parity = (cells[:, 0] + cells[:, 1]) % 2
    assert np.all(parity == parity[0])
    assert len({tuple(c) for c in cells}) == 8


def test_energy_distance_properties() -> None:
    x = eight_gaussians(300, std=0.1, seed=0)
    y = eight_gaussians(400, std=0.1, seed=1)
    assert energy_distance(x, x) == 0.0
    assert energy_distance(x, x.copy()) == 0.0
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)
    shifts = [energy_distance(x, y + np.float32(s)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert shifts[0] < 0.2 < shifts[1] and all(a < b for a, b in zip(shifts, shifts[1:]))
    # Two single points at distance d: sqrt(2d − 0 − 0).
    assert energy_distance([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(np.sqrt(10.0))


def test_energy_distance_blocks_agree_with_the_direct_formula() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((1500, 2)), rng.standard_normal((1100, 2)) + 0.2  # more rows than one block

    def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, None] - b[None], axis=-1).mean())

    direct = np.sqrt(2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y))
    assert energy_distance(x, y) == pytest.approx(direct, rel=1e-9)


def test_energy_distance_matches_scipy_in_one_dimension() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(60), rng.standard_normal(80) + 0.4
    assert energy_distance(u, v) == pytest.approx(stats.energy_distance(u, v), rel=1e-9)


def test_energy_distance_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="columns"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))


def test_mode_coverage_counts_samples_near_each_mode() -> None:
    centers = eight_gaussian_centers(2.0)
    samples = np.concatenate([np.repeat(centers[:3], [5, 2, 1], axis=0) + 0.01, [[0.0, 0.0], [10.0, 10.0]]])
    counts = mode_coverage(samples, centers, radius=0.1)
    np.testing.assert_array_equal(counts, [5, 2, 1, 0, 0, 0, 0, 0])
    assert counts.dtype == np.int64
    assert mode_coverage(np.zeros((0, 2)), centers, 0.1).sum() == 0
    # A collapsed generator covers one mode; a good one covers all eight.
    good = eight_gaussians(800, seed=0)
    assert (mode_coverage(good, centers, 0.1) > 0).sum() == 8
    assert mode_coverage(good, centers, 0.1).sum() == 800


# ------------------------------------------------------------------------------- shapes
def test_shapes_shape_range_and_determinism() -> None:
    images, labels = make_shapes(60, size=16, seed=3)
    assert images.shape == (60, 3, 16, 16) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1, 2}
    assert images.min() >= 0.0 and images.max() <= 1.0
    again, labels_again = make_shapes(60, size=16, seed=3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    prefix, _ = make_shapes(20, size=16, seed=3)
    np.testing.assert_array_equal(prefix, images[:20])
    assert not np.array_equal(make_shapes(60, size=16, seed=4)[0], images)
    gray, _ = make_shapes(5, size=32, seed=0, grayscale=True)
    assert gray.shape == (5, 1, 32, 32)


def test_shape_labels_match_the_drawn_geometry() -> None:
    """Compactness area / (max distance from the centroid)² separates the classes:
    circle π ≈ 3.14, square 2, equilateral triangle 3√3/4 ≈ 1.30."""
    images, labels = make_shapes(150, size=32, seed=0)
    predictions = []
    for image in images:
        background = image[:, 0, 0]
        mask = np.abs(image - background[:, None, None]).max(axis=0) > 0.25
        rows, cols = np.nonzero(mask)
        centroid = rows.mean(), cols.mean()
        reach = np.sqrt((rows - centroid[0]) ** 2 + (cols - centroid[1]) ** 2).max() + 0.5
        compactness = mask.sum() / reach**2
        predictions.append(0 if compactness > 2.55 else (1 if compactness > 1.65 else 2))
    assert np.mean(np.array(predictions) == labels) > 0.95


# ------------------------------------------------------------------------------- digits
def test_digits_shape_range_determinism_and_prefix() -> None:
    data = make_digits(50, size=16, seed=7)
    assert data.images.shape == (50, 1, 16, 16) and data.images.dtype == np.float32
    assert data.labels.dtype == np.int64 and data.thickness.shape == (50,)
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert np.all(data.images.reshape(50, -1).max(axis=1) > 0.9)  # every digit has a bright stroke
    again = make_digits(50, size=16, seed=7)
    np.testing.assert_array_equal(data.images, again.images)
    np.testing.assert_array_equal(data.thickness, again.thickness)
    more = make_digits(2100, size=16, seed=7)  # more than one rendering chunk (2048)
    np.testing.assert_array_equal(more.images[:50], data.images)
    np.testing.assert_array_equal(more.labels[:50], data.labels)
    assert not np.array_equal(make_digits(50, size=16, seed=8).images, data.images)


@pytest.mark.parametrize("size", [8, 28])
def test_digits_other_sizes(size: int) -> None:
    data = make_digits(20, size=size, seed=0)
    assert data.images.shape == (20, 1, size, size)
    # Ink sits in the middle like MNIST: the border rows and columns are nearly dark.
    border = np.concatenate([data.images[..., 0, :], data.images[..., -1, :]], axis=-1)
    middle = data.images[..., size // 4 : -size // 4, size // 4 : -size // 4]
    assert border.mean() < 0.05 and middle.mean() > 4 * border.mean()


def test_digits_reject_unknown_size() -> None:
    with pytest.raises(ValueError, match="size"):
        make_digits(3, size=20)
    with pytest.raises(ValueError, match="split"):
        load_digits("validation", n=3)


def test_digit_splits_are_disjoint_and_fixed() -> None:
    train = load_digits("train", n=1000, size=16)
    test = load_digits("test", n=300, size=16)
    train_keys = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_keys for image in test.images)
    assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))
    np.testing.assert_array_equal(load_digits("test", n=300, size=16).images, test.images)
    assert len(load_digits("test", size=8)) == 2000  # the default test size


def test_digit_results_are_copies_of_the_cache() -> None:
    first = load_digits("train", n=40, size=8, seed=11)
    first.images[:] = 0.0
    second = load_digits("train", n=40, size=8, seed=11)
    assert second.images.max() > 0.9
    smaller = load_digits("train", n=10, size=8, seed=11)  # served from the larger cached set
    np.testing.assert_array_equal(smaller.images, second.images[:10])


def test_digit_thickness_metadata_tracks_ink() -> None:
    data = make_digits(1500, size=16, seed=0)
    images, labels, thickness = data.images, data.labels, data.thickness
    ink = images.reshape(len(images), -1).sum(axis=1)
    # Within each digit class, the thicker half has clearly more ink than the thinner half.
    for digit in range(10):
        mask = labels == digit
        median = np.median(thickness[mask])
        assert ink[mask & (thickness > median)].mean() > 1.2 * ink[mask & (thickness <= median)].mean()
    assert 0.3 < thickness.min() and thickness.max() < 4.0


def test_digits_are_learnable_by_a_linear_classifier() -> None:
    train = load_digits("train", n=2000, size=16)
    test = load_digits("test", n=500, size=16)
    a = np.c_[train.images.reshape(len(train), -1), np.ones(len(train))]
    b = np.c_[test.images.reshape(len(test), -1), np.ones(len(test))]
    weights = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(10)[train.labels])
    accuracy = np.mean((b @ weights).argmax(axis=1) == test.labels)
    assert accuracy > 0.9, accuracy


@pytest.mark.slow
def test_digits_reach_97_percent_with_a_small_mlp() -> None:
    train, test = load_digits("train", size=16), load_digits("test", size=16)
    x, y = train.images.reshape(len(train), -1), train.labels
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((x.shape[1], 256)) * np.sqrt(2 / x.shape[1])
    w2 = rng.standard_normal((256, 10)) * np.sqrt(1 / 256)
    b1, b2 = np.zeros(256), np.zeros(10)
    for _ in range(10):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            h = np.maximum(x[idx] @ w1 + b1, 0)
            logits = h @ w2 + b2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            g = p / len(idx)
            gh = (g @ w2.T) * (h > 0)
            w2 -= 0.1 * h.T @ g
            b2 -= 0.1 * g.sum(0)
            w1 -= 0.1 * x[idx].T @ gh
            b1 -= 0.1 * gh.sum(0)
    hidden = np.maximum(test.images.reshape(len(test), -1) @ w1 + b1, 0)
    assert np.mean((hidden @ w2 + b2).argmax(1) == test.labels) > 0.97


@pytest.fixture
def old_pillow_font(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be Pillow < 10.1: load_default() takes no size and gives the bitmap font."""
    from PIL import ImageFont

    bitmap = getattr(ImageFont, "load_default_imagefont", None)
    if bitmap is None:
        pytest.skip("this Pillow has no separate bitmap default font")

    def load_default(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap()

    monkeypatch.setattr(ImageFont, "load_default", load_default)
    digits._glyph_templates.cache_clear()
    digits._blurred_templates.cache_clear()
    yield
    digits._glyph_templates.cache_clear()  # later tests render with the real font again
    digits._blurred_templates.cache_clear()


def test_digits_fall_back_to_the_bitmap_font(old_pillow_font) -> None:
    train = make_digits(1500, size=16, seed=0)
    test = make_digits(400, size=16, seed=1)
    assert train.images.max() == 1.0 and np.all(np.isfinite(train.thickness))
    a = np.c_[train.images.reshape(len(train), -1), np.ones(len(train))]
    b = np.c_[test.images.reshape(len(test), -1), np.ones(len(test))]
    weights = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(10)[train.labels])
    assert np.mean((b @ weights).argmax(axis=1) == test.labels) > 0.8


def test_digits_disk_cache_round_trip(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = load_digits("test", n=30, size=8, seed=21, disk_cache=True, cache_dir=tmp_path)
    files = list(tmp_path.glob("digits-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob(".*.tmp"))
    digits._memory_cache.clear()

    def no_rendering(*args, **kwargs):
        raise AssertionError("should have been read from the disk cache")

    monkeypatch.setattr(digits, "make_digits", no_rendering)
    cached = load_digits("test", n=30, size=8, seed=21, disk_cache=True, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.images, fresh.images)
    np.testing.assert_array_equal(cached.thickness, fresh.thickness)


def test_digits_disk_cache_uses_env_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIGEN_CACHE", str(tmp_path / "cache"))
    assert digits.default_cache_dir() == tmp_path / "cache"
    load_digits("test", n=5, size=8, seed=22, disk_cache=True)
    assert len(list((tmp_path / "cache").glob("digits-*.npz"))) == 1


def _damage(path, how: str) -> None:
    """Damage a digits cache file the ways a full disk, another program or a bug would."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"not a zip" * 100)
    elif how == "missing key":
        np.savez(path, images=np.zeros((30, 1, 8, 8), np.float32), labels=np.zeros(30, np.int64))
    elif how == "wrong shape":
        np.savez(
            path,
            images=np.zeros((30, 1, 16, 16), np.float32),
            labels=np.zeros(30, np.int64),
            thickness=np.zeros(30, np.float32),
        )
    elif how == "bad values":
        images = np.full((30, 1, 8, 8), np.nan, np.float32)
        np.savez(path, images=images, labels=np.zeros(30, np.int64), thickness=np.zeros(30, np.float32))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "missing key", "wrong shape", "bad values"])
def test_a_damaged_digits_cache_is_named_and_rendered_again(how: str, tmp_path) -> None:
    fresh = load_digits("test", n=30, size=8, seed=23, disk_cache=True, cache_dir=tmp_path)
    (path,) = tmp_path.glob("digits-*.npz")
    _damage(path, how)
    digits._memory_cache.clear()
    with pytest.warns(UserWarning, match=f"digits cache file {path} is damaged"):
        again = load_digits("test", n=30, size=8, seed=23, disk_cache=True, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.images, fresh.images)
    np.testing.assert_array_equal(again.labels, fresh.labels)
    digits._memory_cache.clear()
    repaired = digits._read_cache(path, 30, 8)  # the damaged file was replaced by a good one
    assert repaired is not None
    np.testing.assert_array_equal(repaired.images, fresh.images)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary files left


def test_an_unwritable_digits_cache_is_only_a_warning(tmp_path) -> None:
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    digits._memory_cache.clear()
    with pytest.warns(UserWarning, match="could not write the digits cache file"):
        data = load_digits("test", n=5, size=8, seed=24, disk_cache=True, cache_dir=blocker / "cache")
    assert data.images.shape == (5, 1, 8, 8)


def test_digits_unpack_like_a_pair() -> None:
    data = make_digits(4, size=8)
    images, labels = data
    assert images is data.images and labels is data.labels
    assert len(data.subset(slice(1, 3))) == 2


# -------------------------------------------------------------------------- IDX files
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes for ``array`` (the format MNIST is distributed in)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
    codes.update({np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E})
    big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, codes[big_endian.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big_endian.tobytes()


def write_mnist(folder, split: str, n: int = 6, gz: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_for_every_element_type(dtype, tmp_path) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x.idx").write_bytes(idx_bytes(array))
    back = read_idx(tmp_path / "x.idx")
    assert back.shape == array.shape and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_plain_and_gzipped_files(gz: bool, tmp_path) -> None:
    images, labels = write_mnist(tmp_path, "test", n=5, gz=gz)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_finds_torchvision_layout_and_fashion(tmp_path) -> None:
    images, _ = write_mnist(tmp_path / "MNIST" / "raw", "train", n=3, gz=True)
    np.testing.assert_allclose(load_mnist(tmp_path, "train")[0][:, 0] * 255, images, atol=1e-4)
    fashion, _ = write_mnist(tmp_path / "fashion", "test", n=4, seed=1)
    np.testing.assert_allclose(load_fashion_mnist(tmp_path / "fashion", "test")[0][:, 0] * 255, fashion, atol=1e-4)


def test_missing_mnist_files_name_what_is_expected(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, "test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path) in message and "download=True" in message
    write_mnist(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing train-labels-idx1-ubyte"):
        load_mnist(tmp_path, "train")


def test_bad_magic_number_is_reported(tmp_path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(ValueError, match="bad magic number 12340803"):
        read_idx(path)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"")


def test_truncated_idx_files_are_reported(tmp_path) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="truncated IDX data"):
        parse_idx(data[:-10], "images")
    with pytest.raises(ValueError, match="truncated IDX header"):
        parse_idx(data[:9], "images")
    with pytest.raises(ValueError, match="unexpected bytes"):
        parse_idx(data + b"\x00", "images")
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_mismatched_image_and_label_counts(tmp_path) -> None:
    write_mnist(tmp_path, "test", n=5)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        load_mnist(tmp_path, "test")


def test_float_idx_labels_with_nan_or_fractions_are_refused(tmp_path) -> None:
    write_mnist(tmp_path, "test", n=5)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([1, 2, np.nan, 4, 5], np.float32)))
    with pytest.raises(
        ValueError,
        match="t10k-labels-idx1-ubyte: labels must be whole numbers 0-9; 1 are not, the first is label 2 = nan",
    ):
        load_mnist(tmp_path, "test")
    labels.write_bytes(idx_bytes(np.array([1, 2, 3.5, 4, 5], np.float64)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*label 2 = 3.5"):
        load_mnist(tmp_path, "test")
    labels.write_bytes(idx_bytes(np.array([1, 2, 3, 4, 5], np.float32)))  # whole numbers stored as floats: fine
    np.testing.assert_array_equal(load_mnist(tmp_path, "test")[1], [1, 2, 3, 4, 5])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_integer_idx_images_of_any_width_are_scaled_to_the_unit_range(dtype, tmp_path) -> None:
    images, _ = write_mnist(tmp_path, "test", n=4)
    wide = images.astype(dtype) if dtype != np.int8 else (images // 2).astype(np.int8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(wide))
    x, _ = load_mnist(tmp_path, "test")
    assert x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_allclose(x[:, 0] * 255, wide, atol=1e-4)


def test_idx_images_outside_the_pixel_range_are_refused(tmp_path) -> None:
    write_mnist(tmp_path, "test", n=2)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.full((2, 28, 28), 1000, np.int32)))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: integer pixels must lie in 0-255, found 1000..1000"):
        load_mnist(tmp_path, "test")
    path.write_bytes(idx_bytes(np.full((2, 28, 28), 200.0, np.float32)))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: floating-point pixels must lie in \\[0, 1\\]"):
        load_mnist(tmp_path, "test")
    path.write_bytes(idx_bytes(np.full((2, 28, 28), np.nan, np.float32)))
    with pytest.raises(ValueError, match="1568 pixels are NaN"):
        load_mnist(tmp_path, "test")
    path.write_bytes(idx_bytes(np.full((2, 28, 28), 0.5, np.float64)))  # float pixels in [0, 1]: fine
    assert load_mnist(tmp_path, "test")[0].dtype == np.float32


# ----------------------------------------------------------------------------- CIFAR-10
def write_cifar_batch(path, n: int, seed: int = 0, protocol: int = 2) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return data, labels


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_load_cifar10_test_batch(protocol: int, tmp_path) -> None:
    data, labels = write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", 4, protocol=protocol)
    images, y = load_cifar10(tmp_path, "test")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.float32
    np.testing.assert_array_equal(y, labels)
    # Channel-first layout: the first 1024 values of a row are the red plane.
    np.testing.assert_allclose(images[2, 0].reshape(-1) * 255, data[2, :1024], atol=1e-3)
    np.testing.assert_allclose(images[2, 2, 1, 5] * 255, data[2, 2048 + 32 + 5], atol=1e-3)


def test_load_cifar10_train_concatenates_five_batches(tmp_path) -> None:
    expected = []
    for i in range(1, 6):
        expected += write_cifar_batch(tmp_path / f"data_batch_{i}", 2, seed=i)[1]  # folder given directly
    images, labels = load_cifar10(tmp_path, "train")
    assert images.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(labels, expected)


def test_missing_cifar_files_are_named(tmp_path) -> None:
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1", 2)
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path, "train")
    assert "data_batch_5" in str(info.value) and "cifar-10-batches-py" in str(info.value)


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ([1.0, 2.7], "labels must be whole numbers 0-9; 1 are not, the first is label 1 = 2.7"),
        ([1.0, float("nan")], "label 1 = nan"),
        (["cat", "dog"], "labels must be integers 0-9, found <U3 values such as 'cat'"),
        ([1, None], "found object values"),
        ([[1], [2, 3]], "flat list of integers"),
    ],
)
def test_cifar_labels_that_are_not_class_indices_are_refused_naming_the_file(labels, says, tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match="test_batch: .*" + re.escape(says)):
        load_cifar10(tmp_path, "test")


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_loader_refuses_foreign_pickles(tmp_path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": [0]}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_cifar10(tmp_path, "test")
    assert "must never run" not in capsys.readouterr().out
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-5])
    with pytest.raises(ValueError, match="not a readable CIFAR-10 batch"):
        load_cifar10(tmp_path, "test")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_cifar10(tmp_path, "test")


# --------------------------------------------------------------------------- DataLoader
def test_loader_batches_cover_every_sample_once() -> None:
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    y = np.arange(10, dtype=np.int64)
    loader = DataLoader((x, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    xb, yb = batches[0]
    assert isinstance(xb, mg.Tensor) and xb.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)


def test_loader_drop_last() -> None:
    loader = DataLoader(np.zeros((10, 2), np.float32), batch_size=4, drop_last=True)
    assert len(loader) == 2 and [len(b) for b in loader] == [4, 4]
    assert len(DataLoader(np.zeros((3, 2)), batch_size=4, drop_last=True)) == 0
    assert list(DataLoader(np.zeros((3, 2)), batch_size=4, drop_last=True)) == []


def test_loader_seeded_shuffle_repeats_and_changes_per_epoch() -> None:
    y = np.arange(50)

    def epochs(loader: DataLoader, count: int) -> list[np.ndarray]:
        return [np.concatenate([b.numpy() for b in loader]) for _ in range(count)]

    first = epochs(DataLoader(y, batch_size=8, shuffle=True, seed=3), 2)
    second = epochs(DataLoader(y, batch_size=8, shuffle=True, seed=3), 2)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])  # a new order every epoch
    assert not np.array_equal(first[0], y)
    np.testing.assert_array_equal(np.sort(first[0]), y)  # a permutation: nothing lost or repeated
    other = epochs(DataLoader(y, batch_size=8, shuffle=True, seed=4), 1)[0]
    assert not np.array_equal(other, first[0])


def test_loader_shuffle_leaves_the_global_stream_alone() -> None:
    mg.manual_seed(0)
    expected = mg.randn(5).numpy()
    mg.manual_seed(0)
    for _ in DataLoader(np.arange(100), batch_size=10, shuffle=True):
        pass
    np.testing.assert_array_equal(mg.randn(5).numpy(), expected)
    # Without its own seed, the loader follows manual_seed, so runs still repeat.
    mg.manual_seed(9)
    a = np.concatenate([b.numpy() for b in DataLoader(np.arange(30), batch_size=7, shuffle=True)])
    mg.manual_seed(9)
    b = np.concatenate([b.numpy() for b in DataLoader(np.arange(30), batch_size=7, shuffle=True)])
    np.testing.assert_array_equal(a, b)


def test_loader_puts_batches_on_the_device() -> None:
    data = make_digits(10, size=8)
    loader = DataLoader(data, batch_size=4, device="standin")
    xb, yb = next(iter(loader))
    assert xb.device == "standin" and yb.device == "standin"
    assert xb.shape == (4, 1, 8, 8)
    np.testing.assert_array_equal(xb.numpy(), data.images[:4])


def test_loader_batches_do_not_alias_the_data() -> None:
    x = np.zeros((6, 2), np.float32)
    batch = next(iter(DataLoader(x, batch_size=3)))
    batch.data[...] = 7.0
    assert x.max() == 0.0


def test_loader_accepts_map_style_datasets_and_tensors() -> None:
    class Squares:
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return np.full(2, i, np.float32), i * i

    xb, yb = next(iter(DataLoader(Squares(), batch_size=5)))
    np.testing.assert_array_equal(yb.numpy(), [0, 1, 4, 9, 16])
    assert xb.shape == (5, 2)
    t = mg.arange(12).reshape(6, 2)
    assert [b.shape for b in DataLoader(t, batch_size=4)] == [(4, 2), (2, 2)]
    dataset = TensorDataset(np.arange(4), np.arange(4) * 2)
    assert dataset[2] == (2, 4) and len(dataset) == 4


def test_loader_argument_errors() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="same first dimension"):
        DataLoader((np.zeros(3), np.zeros(4)), batch_size=2)
    with pytest.raises(TypeError, match="expected an array"):
        DataLoader(42, batch_size=2)
    with pytest.raises(ValueError, match="invalid device"):
        DataLoader(np.zeros(3), device="tpu")
