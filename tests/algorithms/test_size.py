import numpy as np
import pytest
from skimage.segmentation import clear_border

from napari_segkit.algorithms.size import (
    check_diameter,
    consistent_diameter,
    diameter_from_labels,
    diameter_from_mask,
    equivalent_diameters,
    estimate_diameter,
    foreground_mask,
    rescale,
    resize_labels,
)
from napari_segkit.datasets import realistic_nuclei, realistic_nuclei_3d


def disk(shape, centre, r):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_diameter_from_labels_2d_3d_and_empty():
    lab = np.zeros((40, 40), np.int32)
    lab[disk(lab.shape, (10, 10), 5)] = 1
    lab[disk(lab.shape, (28, 28), 8)] = 3  # ID 2 absent
    d = equivalent_diameters(lab)
    assert np.isnan(d[1]) and d[0] == pytest.approx(10, rel=0.05)
    assert diameter_from_labels(lab) == pytest.approx((d[0] + d[2]) / 2)
    vol = np.zeros((10, 10, 10), np.int32)
    vol[2:6, 2:6, 2:6] = 1  # 64 voxels: sphere-equivalent diameter cbrt(6 * 64 / pi)
    assert diameter_from_labels(vol) == pytest.approx(np.cbrt(6 * 64 / np.pi))
    assert diameter_from_labels(vol, spacing=(2, 1, 1)) == pytest.approx(np.cbrt(12 * 64 / np.pi))
    assert np.isnan(diameter_from_labels(np.zeros((5, 5), np.int32)))
    with pytest.raises(ValueError, match="integer"):
        diameter_from_labels(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="spacing"):
        diameter_from_labels(vol, spacing=(1, 1))


@pytest.mark.parametrize(
    "bad, match",
    [(0, "> 0"), (-3, "> 0"), (np.nan, "> 0"), (np.inf, "> 0"), ("big", "number"), (500, "larger")],
)
def test_check_diameter_rejects(bad, match):
    with pytest.raises(ValueError, match=f"diameter.*{match}|{match}.*diameter"):
        check_diameter(bad, shape=(100, 200))


def test_diameter_from_mask_counts_touching_disks():
    m = np.zeros((80, 120), bool)
    for x in (20, 40, 60, 95):  # three touching disks and one alone, radius 10
        m |= disk(m.shape, (40, x), 10)
    assert diameter_from_mask(m) == pytest.approx(20, rel=0.15)
    assert np.isnan(diameter_from_mask(np.zeros((8, 8), bool)))


def truth_diameter(lab):
    inner = clear_border(lab)
    if len(np.unique(inner)) > 3:
        return diameter_from_labels(inner)
    return diameter_from_labels(lab)


SHAPE = {5: 256, 8: 256, 12: 256, 20: 256, 35: 256, 60: 512, 100: 768}


@pytest.mark.parametrize("diameter", [5, 8, 12, 20, 35, 60, 100])
@pytest.mark.parametrize("config", ["train", "holdout"])
def test_estimate_diameter_on_generated_images(config, diameter):
    """Median over 3 images within +-20 % of the truth, each image within +-45 %.

    Truth: the median equivalent diameter of the labels not cut by the image border.
    """
    n = SHAPE[diameter]
    errors = []
    for seed in range(3):
        img, lab = realistic_nuclei((n, n), config=config, diameter=diameter, seed=seed)
        errors.append(estimate_diameter(img) / truth_diameter(lab) - 1)
    errors = np.array(errors)
    assert abs(np.median(errors)) <= 0.2, errors
    assert np.abs(errors).max() <= 0.45, errors


def test_estimate_diameter_dark_stack_and_3d():
    img, lab = realistic_nuclei((192, 192), diameter=20, seed=7, dtype=np.float32)
    truth = truth_diameter(lab)
    assert estimate_diameter(1 - img, dark=True) == pytest.approx(estimate_diameter(img), rel=0.1)
    stack = np.stack([img, img[::-1]])  # a time stack: measured over both planes
    assert estimate_diameter(stack) == pytest.approx(truth, rel=0.2)
    vol, vlab, spacing = realistic_nuclei_3d(seed=2, return_spacing=True)
    est = estimate_diameter(vol, spatial_ndim=3, spacing=spacing)
    assert est == pytest.approx(diameter_from_labels(vlab, spacing=spacing), rel=0.35)
    assert np.isnan(estimate_diameter(np.zeros((32, 32))))
    with pytest.raises(ValueError, match="spatial_ndim"):
        estimate_diameter(img, spatial_ndim=4)


def test_foreground_mask_matches_truth_on_a_clean_image():
    img, lab = realistic_nuclei((192, 192), diameter=24, seed=3)
    m = foreground_mask(img)
    truth = lab > 0
    assert (m & truth).sum() / (m | truth).sum() > 0.6


def test_rescale_shapes_axes_and_range():
    img = np.random.default_rng(0).random((3, 40, 60)).astype(np.float32)
    assert rescale(img, 0.5).shape == (3, 20, 30)  # leading axis (time) untouched
    assert rescale(img, 0.5, spatial_ndim=3).shape == (2, 20, 30)
    assert rescale(img, (1, 2), spatial_ndim=2).shape == (3, 40, 120)
    rgb = np.zeros((40, 60, 3), np.uint8)
    assert rescale(rgb, 0.5, channel_axis=-1).shape == (20, 30, 3)
    const = np.full((20, 20), 7, np.uint16)
    out = rescale(const, 0.3)
    assert out.dtype == np.float32 and np.allclose(out, 7)
    for bad in (0, -1, np.nan):
        with pytest.raises(ValueError, match="factor"):
            rescale(img, bad)


def test_rescale_and_resize_labels_are_aligned():
    lab = np.zeros((40, 40), np.int32)
    lab[disk(lab.shape, (12.3, 25.7), 7)] = 1
    small = resize_labels(lab, (20, 20))
    img_small = rescale(lab.astype(float), 0.5)
    # the rescaled indicator and the resized labels agree on the small grid
    assert ((img_small > 0.5) == (small == 1)).mean() > 0.97
    back = resize_labels(small, lab.shape)
    com = np.array(np.nonzero(back == 1)).mean(1)
    np.testing.assert_allclose(com, np.array(np.nonzero(lab == 1)).mean(1), atol=0.5)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("config", ["train", "holdout"])
@pytest.mark.parametrize("factor", [0.5, 0.33])
def test_resize_labels_round_trip(config, factor):
    """Down then up: objects >= 10 px wide at the small scale keep IoU >= 0.8 (smooth boundaries,
    not blocky); objects >= 10 px at full resolution keep IoU >= 0.8 on average."""
    for seed, diameter in ((0, 20), (1, 40)):
        _, lab = realistic_nuclei((256, 256), config=config, diameter=diameter, seed=seed)
        small_shape = tuple(int(round(s * factor)) for s in lab.shape)
        back = resize_labels(resize_labels(lab, small_shape), lab.shape)
        d = equivalent_diameters(lab)
        ious = np.array(
            [
                iou(lab == i, back == i) if d[i - 1] >= 10 else np.nan
                for i in range(1, int(lab.max()) + 1)
            ]
        )
        big = d * factor >= 10
        assert np.all(ious[big] >= 0.8)
        assert np.nanmean(ious) >= 0.8
    # smoother than nearest neighbour: an upscaled disk's outline is not a staircase
    lab = np.zeros((16, 16), np.int32)
    lab[disk(lab.shape, (8, 8), 5)] = 1
    up = resize_labels(lab, (128, 128))
    # the ideal: a disk of the same area, centred on the object ((8 + 0.5) * 8 - 0.5)
    ref = disk((128, 128), (67.5, 67.5), np.sqrt(lab.sum() / np.pi) * 8)
    nearest = np.kron(lab, np.ones((8, 8), np.int32))
    assert iou(up == 1, ref) > 0.88
    assert iou(up == 1, ref) > iou(nearest == 1, ref)


def test_resize_labels_keeps_objects_apart_and_checks():
    lab = np.array([[1, 1, 2, 2]], np.int32)
    up = resize_labels(lab, (2, 8))
    np.testing.assert_array_equal(up[0], [1, 1, 1, 1, 2, 2, 2, 2])
    assert set(np.unique(resize_labels(lab, (1, 2)))) <= {0, 1, 2}
    with pytest.raises(ValueError, match="shape"):
        resize_labels(lab, (4,))
    with pytest.raises(ValueError, match="integer"):
        resize_labels(lab.astype(float), (2, 8))


# ---- consistent_diameter: the model's own size agrees with the size it was shown at ------------


def _model_like(true_d: float, slope: float = 0.3):
    """A measurement that is right near the true size and merges (too big a guess) or splits
    (too small a guess) elsewhere: m(g) = true * (g / true) ** slope."""
    calls = []

    def measure(g):
        calls.append(g)
        return true_d * (g / true_d) ** slope

    return measure, calls


@pytest.mark.parametrize("true_d", [5.0, 11.0, 24.0, 60.0, 100.0])
@pytest.mark.parametrize("first", [24.0, 8.0, 90.0])
def test_consistent_diameter_finds_the_size_from_either_side(true_d, first):
    measure, calls = _model_like(true_d)
    d, passes = consistent_diameter(measure, first, bounds=(2, 500), max_passes=6)
    assert abs(d - true_d) / true_d < 0.2, (d, passes)  # the bar for object size: +-20 %
    assert len(calls) == len(passes) <= 6


def test_consistent_diameter_stops_when_the_first_guess_agrees():
    measure, calls = _model_like(20.0)
    d, passes = consistent_diameter(measure, 20.5, bounds=(2, 500))
    assert len(calls) == 1 and d == pytest.approx(20.5)  # the guess itself: its pass is reusable


def test_consistent_diameter_does_not_trust_a_guess_out_of_bounds():
    """A classical guess that failed (2 px on noise) is not the start: the fallback (the
    model's own size) is, and the model's passes find the size from there."""
    measure, calls = _model_like(24.0)
    d, passes = consistent_diameter(measure, 2.0, bounds=(10, 100), fallback=20.0)
    assert calls[0] == pytest.approx(20.0) and abs(d - 24.0) / 24.0 < 0.1
    measure, calls = _model_like(24.0)
    consistent_diameter(measure, 2.0, bounds=(10, 100))  # no fallback: clipped to the bound
    assert calls[0] == pytest.approx(10.0)
    measure, calls = _model_like(24.0)
    consistent_diameter(measure, 30.0, bounds=(10, 100), fallback=20.0)  # in bounds: trusted
    assert calls[0] == pytest.approx(30.0)


def test_consistent_diameter_nothing_found_and_bounds():
    d, passes = consistent_diameter(lambda g: None, 20.0, bounds=(2, 500))
    assert d is None and len(passes) == 1
    # the true size is outside the bounds: stops at the bound, best measurement returned
    measure, calls = _model_like(300.0)
    d, passes = consistent_diameter(measure, 20.0, bounds=(2, 80), max_passes=6)
    assert max(g for g, _ in passes) == pytest.approx(80.0)
    assert d > 80  # the measurement at the bound, not the bound
    with pytest.raises(ValueError, match="bounds"):
        consistent_diameter(measure, 20.0, bounds=(10, 5))
    with pytest.raises(ValueError, match="max_passes"):
        consistent_diameter(measure, 20.0, bounds=(2, 50), max_passes=0)


@pytest.mark.parametrize("slope", [1.0, 1.5])
def test_consistent_diameter_does_not_chase_a_diverging_model(slope):
    """A model biased 15 % small at every scale (slope 1), or one whose objects shrink faster
    than the guess (slope 1.5: it fragments more the more the image is zoomed in), has no
    self-consistent size below the first guess: the search stops after two passes and keeps the
    measurement of the more consistent one instead of running to the lower bound."""
    calls = []

    def measure(g):
        calls.append(g)
        return 0.85 * 16.0 * (g / 16.0) ** slope

    d, passes = consistent_diameter(measure, 16.0, bounds=(2, 500), max_passes=4)
    assert len(passes) == 2 and d == pytest.approx(0.85 * 16.0)
