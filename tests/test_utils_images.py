"""minigen.utils: image grids, GIFs, charts, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import minigen as mg
from minigen.utils import (
    atomic_write,
    bar_chart,
    colorbar,
    colormap,
    ema,
    heatmap,
    hstack,
    labelled_grid,
    line_plot,
    make_grid,
    moving_average,
    save_gif,
    save_image_grid,
    scatter_plot,
)
from minigen.utils.images import grid_shape


# ------------------------------------------------------------------------------- grids
@pytest.mark.parametrize(
    ("n", "nrow", "expected"), [(10, 4, (3, 4)), (8, 8, (1, 8)), (3, 8, (1, 3)), (9, 3, (3, 3)), (1, 5, (1, 1))]
)
def test_grid_shape(n: int, nrow: int, expected: tuple[int, int]) -> None:
    assert grid_shape(n, nrow) == expected


def test_make_grid_size_and_tile_placement() -> None:
    images = np.zeros((10, 1, 8, 6), np.float32)
    images[5] = 1.0  # tile 5 sits in row 1, column 1 of a 4-wide grid
    grid = make_grid(images, nrow=4, padding=2, pad_value=0.5)
    assert grid.shape == (3 * (8 + 2) + 2, 4 * (6 + 2) + 2, 3) and grid.dtype == np.uint8
    top, left = 2 + 1 * (8 + 2), 2 + 1 * (6 + 2)
    assert np.all(grid[top : top + 8, left : left + 6] == 255)
    assert np.all(grid[top - 1, left : left + 6] == 128)  # padding between tiles
    assert np.all(grid[2:10, 2:8] == 0)  # tile 0
    assert np.all(grid[-10:, -16:] == 128)  # the unused slots of the last row stay padding


def test_make_grid_colour_grayscale_and_value_handling() -> None:
    rgb = np.zeros((2, 3, 4, 4), np.float32)
    rgb[:, 0] = 1.0
    grid = make_grid(rgb, nrow=2, padding=0)
    assert grid.shape == (4, 8, 3) and np.all(grid[..., 0] == 255) and np.all(grid[..., 1:] == 0)
    gray = make_grid(np.full((1, 4, 4), 2.0), padding=0)  # (N, H, W), clipped to 1
    assert np.all(gray == 255)
    signed = np.stack([np.full((1, 2, 2), -1.0), np.full((1, 2, 2), 1.0)])
    normalized = make_grid(signed, padding=0, normalize=True)
    assert normalized[0, 0, 0] == 0 and normalized[0, 2, 0] == 255
    ranged = make_grid(signed, padding=0, value_range=(-1, 1))
    np.testing.assert_array_equal(ranged, normalized)
    assert make_grid(np.full((1, 1, 2, 2), 200, np.uint8), padding=0)[0, 0, 0] == 200
    assert make_grid(np.zeros((1, 1, 2, 3)), padding=0, scale=3).shape == (6, 9, 3)


def test_make_grid_takes_tensors_from_any_device() -> None:
    t = mg.ones(2, 1, 3, 3, device="standin", requires_grad=True)
    assert np.all(make_grid(t, padding=0) == 255)


def test_make_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_grid(np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="empty"):
        make_grid(np.zeros((0, 1, 5, 5)))


def test_save_image_grid_upscales_small_images(tmp_path) -> None:
    images = np.random.default_rng(0).random((12, 1, 16, 16)).astype(np.float32)
    path = save_image_grid(images, tmp_path / "out" / "grid.png", nrow=6)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        # 16x16 tiles are enlarged 4x: (2 rows, 6 columns) of 16 + 2 padding, plus 2, times 4.
        assert saved.size == ((6 * 18 + 2) * 4, (2 * 18 + 2) * 4)
        pixels = np.asarray(saved.convert("RGB"))
    np.testing.assert_array_equal(pixels, make_grid(images, nrow=6, scale=4))
    with Image.open(save_image_grid(images, tmp_path / "small.png", scale=1)) as saved:
        assert saved.size == (8 * 18 + 2, 2 * 18 + 2)


def test_save_gif_frames_and_size(tmp_path) -> None:
    frames = [np.full((8, 8), v, np.float32) for v in np.linspace(0, 1, 5)]
    frames.append(mg.zeros(3, 8, 8))  # a (C, H, W) tensor frame
    path = save_gif(frames, tmp_path / "anim.gif", duration=80, scale=2)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (16, 16)
        assert gif.n_frames == 6 and gif.info["duration"] == 80
        gif.seek(4)
        assert np.asarray(gif.convert("L")).min() == 255
    batch_frames = [np.random.default_rng(i).random((4, 1, 6, 6)) for i in range(3)]
    with Image.open(save_gif(batch_frames, tmp_path / "grid.gif", scale=1)) as gif:
        assert gif.size == (4 * 8 + 2, 8 + 2) and gif.n_frames == 3
    with Image.open(save_gif(batch_frames, tmp_path / "auto.gif")) as gif:  # 6-pixel tiles grow 11x to 66
        assert gif.size == ((4 * 8 + 2) * 11, (8 + 2) * 11)
    with pytest.raises(ValueError, match="same size"):
        save_gif([np.zeros((4, 4)), np.zeros((5, 5))], tmp_path / "bad.gif")


def test_labelled_grid_keeps_the_tiles_and_adds_text_around_them(tmp_path) -> None:
    images = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    plain = make_grid(images, nrow=3, padding=2, scale=8)
    labelled = np.asarray(
        labelled_grid(images, nrow=3, scale=8, title="t", row_labels=["class 0", "class 1"], col_labels="abc")
    )
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    # The tiles are copied unchanged: the plain grid appears as one block in the picture.
    matches = np.argwhere((labelled[:, :, 0] == plain[0, 0, 0]) & (labelled[:, :, 1] == plain[0, 0, 1]))
    found = any(
        np.array_equal(labelled[r : r + plain.shape[0], c : c + plain.shape[1]], plain)
        for r, c in matches
        if r + plain.shape[0] <= labelled.shape[0] and c + plain.shape[1] <= labelled.shape[1]
    )
    assert found
    left_margin = labelled[:, : labelled.shape[1] - plain.shape[1] - 6]
    assert (left_margin < 128).any()  # the row labels are drawn in dark ink to the left of the grid


def test_labelled_grid_captions_add_a_band_under_every_row(tmp_path) -> None:
    images = np.ones((4, 1, 8, 8), np.float32)
    without = labelled_grid(images, nrow=2, scale=8, title="x")
    with_captions = labelled_grid(images, nrow=2, scale=8, title="x", captions=["7 -> 1", "2 -> 3", "a", "b"])
    assert with_captions.width == without.width and with_captions.height > without.height + 2 * 10
    path = save_image_grid(images, tmp_path / "captioned.png", nrow=2, captions=["1", "2", "3", "4"])
    with Image.open(path) as saved:
        assert saved.size == labelled_grid(images, nrow=2, captions=["1", "2", "3", "4"]).size


def test_labelled_grid_wants_one_label_per_row_column_and_image() -> None:
    images = np.zeros((6, 1, 4, 4))
    with pytest.raises(ValueError, match="3 row labels for 2"):
        labelled_grid(images, nrow=3, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="2 column labels for 3"):
        labelled_grid(images, nrow=3, col_labels=["a", "b"])
    with pytest.raises(ValueError, match="5 captions for 6"):
        labelled_grid(images, nrow=3, captions=list("abcde"))


def test_hstack_puts_pictures_side_by_side() -> None:
    red, blue = Image.new("RGB", (3, 5), (255, 0, 0)), Image.new("RGB", (4, 2), (0, 0, 255))
    row = np.asarray(hstack([red, blue], gap=2))
    assert row.shape == (5, 3 + 2 + 4, 3)
    assert (row[:, :3] == (255, 0, 0)).all() and (row[:2, 5:] == (0, 0, 255)).all()
    assert (row[2:, 5:] == 255).all() and (row[:, 3:5] == 255).all()  # background below the shorter one, and the gap
    with pytest.raises(ValueError, match="no pictures"):
        hstack([])


def test_colorbar_runs_from_high_at_the_top_to_low_at_the_bottom() -> None:
    bar = np.asarray(colorbar(-1.0, 1.0, 200, "coolwarm", "cosine similarity", top=30))
    assert bar.shape[0] == 30 + 200 + 8
    column = bar[30 + 4 : 30 + 196, 8 + 7].astype(int)  # down the middle of the ramp
    top, bottom = colormap(np.array([1.0, 0.0]), "coolwarm").astype(int)
    assert np.abs(column[0] - top).max() < 25 and np.abs(column[-1] - bottom).max() < 25
    assert (bar[:20] == 255).all()  # nothing above ``top``
    with pytest.raises(ValueError, match="high must be above low"):
        colorbar(1.0, 1.0, 100)


# ------------------------------------------------------------------------- atomic writes
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grid.png"
    save_image_grid(np.zeros((1, 1, 4, 4)), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image_grid(np.ones((1, 1, 4, 4)), path)
    with pytest.raises(OSError, match="disk full"):
        line_plot({"loss": [3, 2, 1]}, tmp_path / "loss.png")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary files left behind


def test_atomic_write_creates_folders_and_replaces(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()  # nothing appears before the block succeeds
    with atomic_write(target) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("three")
        raise RuntimeError
    assert target.read_text() == "two" and len(list(target.parent.iterdir())) == 1


def test_unknown_extension_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="image format"):
        save_image_grid(np.zeros((1, 1, 2, 2)), tmp_path / "grid.unknownext")


# ------------------------------------------------------------------------------ charts
def _colours(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).reshape(-1, 3)


def _has_colour(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(pixels.astype(int) - rgb).max(axis=1) < tolerance).sum())


def test_scatter_plot_draws_each_set_in_its_colour(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data, samples = rng.standard_normal((300, 2)), rng.standard_normal((200, 2)) + 3
    path = scatter_plot(
        [data, mg.tensor(samples)],
        tmp_path / "scatter.png",
        colors=[(220, 30, 30), (30, 30, 220)],
        labels=["data", "samples"],
        title="two sets",
        alpha=1.0,
    )
    pixels = _colours(path)
    assert pixels.shape[0] == 560 * 560
    assert _has_colour(pixels, (220, 30, 30)) > 300 and _has_colour(pixels, (30, 30, 220)) > 300
    assert len(np.unique(pixels, axis=0)) > 50  # text, grid, dots: not a blank image
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        scatter_plot(np.zeros((5, 3)), tmp_path / "bad.png")


def test_scatter_plot_limits_crop_points(tmp_path) -> None:
    points = np.array([[0.0, 0.0], [100.0, 100.0]])
    far = scatter_plot(points, tmp_path / "a.png", colors=["red"], limits=(-1, 1), point_size=6, alpha=1)
    assert 0 < _has_colour(_colours(far), (255, 0, 0)) < 2000  # only the point at the origin is drawn


def test_line_plot_linear_and_log(tmp_path) -> None:
    steps = np.arange(200)
    losses = 2.0 * np.exp(-steps / 50) + 0.01
    linear = line_plot(
        {"train": losses, "test": (steps[::20], losses[::20] + 0.1)},
        tmp_path / "loss.png",
        title="loss",
        ylabel="loss",
        colors=[(0, 150, 0), (150, 0, 150)],
    )
    pixels = _colours(linear)
    assert pixels.shape[0] == 640 * 420
    assert _has_colour(pixels, (0, 150, 0)) > 200 and _has_colour(pixels, (150, 0, 150)) > 200
    logged = line_plot({"train": losses}, tmp_path / "log.png", logy=True, smooth=0.9)
    assert _has_colour(_colours(logged), (31, 119, 180)) > 200
    noisy = np.array([1.0, np.nan, 3.0, 2.0, -1.0])
    line_plot({"with gaps": noisy}, tmp_path / "gaps.png", logy=True)  # NaN and <= 0 are skipped
    with pytest.raises(ValueError, match="no series"):
        line_plot({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="positive"):
        line_plot({"neg": [-1.0, -2.0]}, tmp_path / "neg.png", logy=True)


def test_moving_average_is_centred_so_it_does_not_lag() -> None:
    ramp = np.arange(50, dtype=np.float64)
    np.testing.assert_allclose(moving_average(ramp, 0.9), ramp)  # a straight line comes out unchanged
    falling = 2.0 * np.exp(-np.arange(300) / 40.0)
    noisy = falling + np.random.default_rng(0).normal(0.0, 0.05, 300)
    smoothed = moving_average(noisy, 0.9)
    # A trailing average (ema) sits above a falling curve; the centred one follows it.
    assert np.mean(ema(noisy, 0.9)[20:100] - falling[20:100]) > 0.1
    assert abs(np.mean(smoothed[20:100] - falling[20:100])) < 0.02
    assert np.std(smoothed - falling) < 0.5 * np.std(noisy - falling)  # and it still smooths
    np.testing.assert_allclose(smoothed[[0, -1]], noisy[[0, -1]])  # the window shrinks to stay centred
    gaps = moving_average([1.0, np.nan, 3.0, 5.0], 0.5)
    assert np.isnan(gaps[1]) and gaps[2] == pytest.approx(4.0)  # missing values stay missing, are left out
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        moving_average([1.0], 1.0)


def test_ema_is_bias_corrected() -> None:
    np.testing.assert_allclose(ema([5.0, 5.0, 5.0], 0.9), [5.0, 5.0, 5.0])
    smoothed = ema([0.0, 10.0], 0.5)
    assert smoothed[0] == 0.0 and smoothed[1] == pytest.approx(10.0 * 0.5 / 0.75)


def test_heatmap_size_grows_with_the_matrix_and_shows_values(tmp_path) -> None:
    confusion = np.diag([50, 40, 30]) + 1
    small = heatmap(confusion, tmp_path / "cm.png", row_labels=["a", "b", "c"], col_labels=["a", "b", "c"])
    large = heatmap(np.random.default_rng(0).standard_normal((64, 64)), tmp_path / "big.png", cmap="coolwarm")
    with Image.open(small) as s, Image.open(large) as b:
        assert s.size[0] >= 240 and b.size[0] > 400
    pixels = _colours(small)
    top, bottom = colormap(np.array([1.0, 0.0]), "viridis")
    assert _has_colour(pixels, tuple(top), 6) > 500 and _has_colour(pixels, tuple(bottom), 6) > 500
    with pytest.raises(ValueError, match="labels"):
        heatmap(confusion, tmp_path / "bad.png", row_labels=["a"])


def test_heatmap_annotations_change_the_picture(tmp_path) -> None:
    matrix = np.arange(9).reshape(3, 3)
    plain = _colours(heatmap(matrix, tmp_path / "plain.png", annotate=False))
    annotated = _colours(heatmap(matrix, tmp_path / "annotated.png", annotate=True))
    assert plain.shape == annotated.shape and (plain != annotated).any(axis=1).sum() > 50


def test_colormap_endpoints_and_nan() -> None:
    rgb = colormap(np.array([0.0, 1.0, np.nan, 2.0]), "gray")
    np.testing.assert_array_equal(rgb, [[0, 0, 0], [255, 255, 255], [220, 220, 220], [255, 255, 255]])
    with pytest.raises(ValueError, match="colour map"):
        colormap(np.zeros(2), "jet")


def test_bar_chart(tmp_path) -> None:
    path = bar_chart({"a": 3, "b": 7, "c": 0}, tmp_path / "bars.png", color=(200, 100, 0), title="counts")
    assert _has_colour(_colours(path), (200, 100, 0), 10) > 2000
    bar_chart([1.5, -2.0, 0.5], tmp_path / "signed.png", labels=["x", "y", "z"])
    with pytest.raises(ValueError, match="labels"):
        bar_chart([1, 2], tmp_path / "bad.png", labels=["only one"])


def test_charts_work_with_the_bitmap_fallback_font(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFont

    from minigen.utils import plots

    bitmap = getattr(ImageFont, "load_default_imagefont", None)
    if bitmap is None:
        pytest.skip("this Pillow has no separate bitmap default font")

    def load_default(size=None):  # Pillow < 10.1: no size argument
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap()

    monkeypatch.setattr(ImageFont, "load_default", load_default)
    plots._font.cache_clear()
    try:
        path = line_plot({"loss": [3.0, 2.0, 1.0]}, tmp_path / "loss.png", title="loss", ylabel="loss")
        heatmap(np.eye(3), tmp_path / "eye.png", col_labels=["alpha", "beta", "gamma"])
    finally:
        plots._font.cache_clear()
    pixels = _colours(path)
    assert _has_colour(pixels, (40, 40, 40), 30) > 100  # text was drawn, at a readable size
