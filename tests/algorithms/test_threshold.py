"""Threshold algorithms: exact expectations on tiny arrays, scikit-image as the reference."""

import dask.array as da
import numpy as np
import pytest
from skimage import data, filters, measure

from napari_segkit.algorithms.threshold import (
    histogram,
    multilevel_thresholds,
    parse_cut_points,
    threshold_plane,
    threshold_segment,
    threshold_value,
)
from napari_segkit.datasets import synthetic_nuclei

COINS = data.coins()
REFERENCE = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "yen": filters.threshold_yen,
    "triangle": filters.threshold_triangle,
    "isodata": filters.threshold_isodata,
    "mean": filters.threshold_mean,
}


@pytest.mark.parametrize("method", sorted(REFERENCE))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_global_thresholds_match_scikit_image(method, dtype):
    img = COINS.astype(dtype)
    if dtype == np.uint16:
        img = img * np.uint16(200)
    if np.dtype(dtype).kind == "f":
        img = img / 255
    assert threshold_value(img, method) == pytest.approx(float(REFERENCE[method](img)), rel=1e-6)


def test_mean_threshold_exact():
    img = np.array([[0, 0, 10, 10]], np.uint8)
    assert threshold_value(img, "mean") == 5.0
    np.testing.assert_array_equal(
        threshold_plane(img, method="mean", output="classes"), [[0, 0, 1, 1]]
    )


def test_manual_threshold_needs_value():
    with pytest.raises(ValueError, match="needs a finite value"):
        threshold_value(COINS, "manual")
    assert threshold_value(COINS, "manual", value=3) == 3.0
    with pytest.raises(ValueError, match="method must be one of"):
        threshold_value(COINS, "magic")


def test_nan_pixels_are_ignored_and_background():
    img = np.array([[0.0, 0.0, np.nan, 1.0, 1.0]])
    assert threshold_value(img, "mean") == 0.5
    lab = threshold_segment(img, method="otsu", output="classes")
    np.testing.assert_array_equal(lab, [[0, 0, 0, 1, 1]])
    with pytest.raises(ValueError, match="no finite value"):
        threshold_segment(np.full((3, 3), np.nan))


def test_constant_image_gives_no_object():
    lab = threshold_segment(np.full((4, 4), 7, np.uint16))
    assert lab.max() == 0


def test_histogram_matches_skimage_for_ints_and_floats():
    from skimage.exposure import histogram as skhist

    for img in (COINS, COINS.astype(np.uint16) * 100, COINS / 255.0, COINS.astype(np.int16) - 100):
        counts, centers = histogram(img)
        ref_counts, ref_centers = skhist(img, source_range="image")
        np.testing.assert_array_equal(counts, ref_counts)
        np.testing.assert_allclose(centers, ref_centers)


def test_cut_points_give_classes_as_in_the_tutorial():
    img = np.linspace(0, 1, 100).reshape(10, 10)  # 0..1 image, mean 0.5
    cuts = multilevel_thresholds(img, cut_points=["mean", 0.5, 0.25])
    np.testing.assert_allclose(cuts, [0.25, 0.5])  # mean == 0.5: duplicates merge
    lab = threshold_segment(
        img, method="cut_points", cut_points="mean, 0.75, 0.25", output="classes"
    )
    assert sorted(np.unique(lab)) == [0, 1, 2, 3]  # 3 cut points -> 4 classes
    assert (lab[img <= 0.25] == 0).all() and (lab[img > 0.75] == 3).all()
    assert ((lab == 1) == ((img > 0.25) & (img <= 0.5))).all()


@pytest.mark.parametrize(
    "text, expected",
    [("mean, 0.5, 0.25", ["mean", 0.5, 0.25]), ("1;2", [1.0, 2.0]), (" otsu ", ["otsu"])],
)
def test_parse_cut_points(text, expected):
    assert parse_cut_points(text) == expected


@pytest.mark.parametrize(
    "text, match", [("", "no cut point"), ("0.5, banana", "banana"), ("manual", "neither")]
)
def test_parse_cut_points_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        parse_cut_points(text)


def test_multiotsu_matches_scikit_image():
    np.testing.assert_allclose(
        multilevel_thresholds(COINS, classes=3), filters.threshold_multiotsu(COINS, classes=3)
    )
    lab = threshold_segment(COINS, method="multiotsu", classes=4, output="classes")
    assert sorted(np.unique(lab)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="classes must be between 2 and 10"):
        multilevel_thresholds(COINS, classes=11)
    with pytest.raises(ValueError, match="too few for 3 classes"):
        multilevel_thresholds(np.array([[0, 1]]), classes=3)


def test_otsu_objects_on_coins_matches_skimage_pipeline():
    lab = threshold_segment(COINS, method="otsu", min_size=0, fill_holes=False)
    ref = measure.label(COINS > filters.threshold_otsu(COINS), connectivity=1)
    assert lab.max() == ref.max()
    np.testing.assert_array_equal(lab > 0, ref > 0)


def test_local_threshold_handles_uneven_illumination():
    img, truth = synthetic_nuclei(
        (192, 192), n_nuclei=25, background_gradient=1.5, noise=0.01, seed=3
    )
    glob = threshold_segment(img, method="otsu", min_size=20)
    local = threshold_segment(img, method="local", block_size=51, offset=-500, min_size=20)
    n_true = truth.max()
    assert abs(int(local.max()) - n_true) <= 2
    assert abs(int(glob.max()) - n_true) > abs(int(local.max()) - n_true)
    with pytest.raises(ValueError, match="block_size must be odd"):
        threshold_segment(img, method="local", block_size=50)


def test_objects_recover_generated_nuclei():
    img, truth = synthetic_nuclei((128, 128), n_nuclei=12, seed=5)
    lab = threshold_segment(img, method="otsu", fill_holes=True, min_size=10)
    assert lab.max() == truth.max()
    # each found object overlaps exactly one true nucleus (blurred rims add background pixels)
    for i in range(1, lab.max() + 1):
        hit = np.unique(truth[lab == i])
        assert len(hit[hit > 0]) == 1


def test_defaults_drop_specks_and_fill_holes():
    img = np.zeros((40, 40))
    img[5:15, 5:15] = 1
    img[9:11, 9:11] = 0  # a hole
    img[30, 30] = 1  # a speck of one pixel
    lab = threshold_segment(img)
    assert lab.max() == 1 and (lab[5:15, 5:15] == 1).all() and lab[30, 30] == 0


def test_dark_objects():
    img = np.full((6, 6), 200, np.uint8)
    img[1:3, 1:3] = 10
    lab = threshold_segment(img, method="otsu", dark=True, min_size=0)
    assert lab.max() == 1 and (lab[1:3, 1:3] == 1).all() and lab.sum() == 4


def test_rgb_and_multichannel_and_stacks():
    rgb = np.zeros((2, 16, 16, 3), np.uint8)  # a time stack of RGB frames
    rgb[:, 4:8, 4:8] = 255
    rgb[1, 10:12, 10:12] = 255
    lab = threshold_segment(rgb, method="otsu", min_size=0)
    assert lab.shape == (2, 16, 16)
    assert lab.max() == 3  # IDs unique across the stack: 1 + 2 objects
    assert set(np.unique(lab[1])) == {0, 2, 3}
    multi = np.zeros((3, 16, 16), np.uint16)  # (C, Y, X): object only in channel 1
    multi[1, 2:5, 2:5] = 1000
    assert threshold_segment(multi, channel_axis=0, channel=1, min_size=0).max() == 1
    assert threshold_segment(multi, channel_axis=0, channel=0).max() == 0


def test_volume_mode_uses_3d_connectivity_and_one_threshold():
    vol = np.zeros((4, 8, 8), np.float32)
    vol[1:3, 2:5, 2:5] = 1.0  # one blob across two slices
    assert threshold_segment(vol, spatial_ndim=3, min_size=0).max() == 1
    assert (
        threshold_segment(vol, spatial_ndim=2, min_size=0).max() == 2
    )  # one per slice, unique IDs


def test_dask_input_gives_same_result():
    img, _ = synthetic_nuclei((3, 64, 64), n_nuclei=5, seed=1)
    lazy = da.from_array(img, chunks=(1, 64, 64))
    np.testing.assert_array_equal(threshold_segment(lazy), threshold_segment(img))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "nope"}, "method must be one of"),
        ({"output": "blobs"}, "output must be one of"),
        ({"method": "manual"}, "needs a finite value"),
        ({"method": "cut_points", "cut_points": ""}, "no cut point"),
        ({"spatial_ndim": 1}, "spatial_ndim must be 2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        threshold_segment(COINS, **kwargs)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(10), np.zeros((2, 2), complex)])
def test_bad_images(bad):
    with pytest.raises(ValueError):
        threshold_segment(bad)
