import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_segkit.algorithms.size import diameter_from_labels, equivalent_diameters
from napari_segkit.datasets import realistic_nuclei, realistic_nuclei_3d


def touching_fraction(labels):
    """Fraction of objects that share a border (face neighbours) with another object."""
    touch = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        x, y = a[:-1], a[1:]
        sel = (x != y) & (x > 0) & (y > 0)
        touch.update(x[sel].tolist())
        touch.update(y[sel].tolist())
    return len(touch) / max(int(labels.max()), 1)


@pytest.mark.parametrize("config", ["train", "holdout"])
def test_realistic_nuclei_deterministic_and_typed(config):
    img, lab = realistic_nuclei((96, 128), config=config, seed=4)
    img2, lab2 = realistic_nuclei((96, 128), config=config, seed=4)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert img.shape == lab.shape == (96, 128)
    assert img.dtype == np.uint16 and lab.dtype == np.int32
    img3, _ = realistic_nuclei((96, 128), config=config, seed=5)
    assert not np.array_equal(img, img3)
    # labels are 1..N without gaps
    assert set(np.unique(lab)) == set(range(int(lab.max()) + 1))
    f, _ = realistic_nuclei((96, 128), config=config, seed=4, dtype=np.float32)
    u8, _ = realistic_nuclei((96, 128), config=config, seed=4, dtype=np.uint8)
    assert f.dtype == np.float32 and 0 <= f.min() and 0.5 < np.percentile(f, 99.9) < 1.5
    assert u8.dtype == np.uint8 and u8.max() > 100


def test_train_and_holdout_differ():
    a, _ = realistic_nuclei((64, 64), config="train", seed=1)
    b, _ = realistic_nuclei((64, 64), config="holdout", seed=1)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("config", ["train", "holdout"])
def test_nuclei_brighter_than_their_surroundings(config):
    brighter, total = 0, 0
    for seed in range(4):
        img, lab = realistic_nuclei((192, 192), config=config, seed=seed, dtype=np.float32)
        n = int(lab.max())
        inside = ndi.mean(img, lab, np.arange(1, n + 1))
        # a ring 2-6 px outside each nucleus, on background pixels only
        grown = ndi.grey_dilation(lab, size=13)
        near = ndi.grey_dilation(lab, size=5)
        ring = np.where((lab == 0) & (near == 0), grown, 0)
        with np.errstate(invalid="ignore"):  # nuclei without background around them: NaN
            outside = ndi.mean(img, ring, np.arange(1, n + 1))
        ok = np.isfinite(outside)
        brighter += int((inside[ok] > outside[ok]).sum())
        total += int(ok.sum())
    assert total > 20
    assert brighter / total > 0.85


@pytest.mark.parametrize("diameter, shape", [(8, (256, 256)), (20, (256, 256)), (60, (512, 512))])
@pytest.mark.parametrize("config", ["train", "holdout"])
def test_diameter_control(config, diameter, shape):
    for seed in range(2):
        _, lab = realistic_nuclei(shape, config=config, diameter=diameter, seed=seed)
        assert abs(diameter_from_labels(lab) / diameter - 1) <= 0.2


def test_train_varies_size_and_coverage_and_clumps():
    cover, diam, touch = [], [], []
    for seed in range(16):
        _, lab = realistic_nuclei((256, 256), seed=seed)
        cover.append((lab > 0).mean())
        diam.append(diameter_from_labels(lab))
        touch.append(touching_fraction(lab))
    cover, diam = np.array(cover), np.array(diam)
    assert cover.min() >= 0.02 and cover.max() <= 0.6
    assert cover.min() < 0.15 and cover.max() > 0.3
    assert diam.min() < 16 and diam.max() > 35  # log-uniform 10-60 px medians
    # most nuclei touch another one in clumps
    assert np.mean(touch) > 0.5 and min(touch) >= 0


def test_spread_inside_one_image():
    _, lab = realistic_nuclei((256, 256), diameter=20, seed=2)
    d = equivalent_diameters(lab)
    d = d[np.isfinite(d)]
    assert 0.05 < np.std(np.log(d)) < 0.4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"config": "test"}, "config must be one of"),
        ({"diameter": 0}, "diameter must be a positive"),
        ({"shape": (4, 64)}, "shape must be 2 sizes"),
        ({"dtype": np.complex64}, "dtype must be"),
    ],
)
def test_realistic_nuclei_rejects(kwargs, match):
    kwargs = {"shape": (32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        realistic_nuclei(**kwargs)


@pytest.mark.parametrize("config", ["train", "holdout"])
def test_realistic_nuclei_3d(config):
    img, lab, spacing = realistic_nuclei_3d(
        (24, 64, 64), config=config, seed=3, return_spacing=True
    )
    img2, lab2 = realistic_nuclei_3d((24, 64, 64), config=config, seed=3)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    assert img.shape == lab.shape == (24, 64, 64) and img.dtype == np.uint16
    assert lab.dtype == np.int32 and lab.max() >= 1
    assert spacing[1:] == (1.0, 1.0)
    assert (1.0 <= spacing[0] <= 2.0) if config == "train" else (2.0 <= spacing[0] <= 4.0)
    inside = img[lab > 0].astype(float).mean()
    assert inside > np.median(img[lab == 0])


def test_realistic_nuclei_3d_sizes_counts_and_sparsity():
    counts, touch = [], []
    for seed in range(8):
        _, lab = realistic_nuclei_3d(seed=seed)
        counts.append(int(lab.max()))
        touch.append(touching_fraction(lab))
        if lab.max() == 0:
            continue
        boxes = ndi.find_objects(lab)
        # nuclei not cut by the crop: z extent 2 x 6..21 slices (a little more with the bumps)
        for box in boxes:
            if box is None or box[0].start == 0 or box[0].stop == lab.shape[0]:
                continue
            assert 8 <= box[0].stop - box[0].start <= 50
    assert max(counts) <= 40 and min(counts) >= 1
    assert np.median(counts) < 20  # sparser than dense on average
    assert max(touch) > 0  # some touching clumps


def test_realistic_nuclei_3d_diameter():
    _, lab = realistic_nuclei_3d((32, 128, 128), diameter=30, seed=1)
    boxes = [b for b in ndi.find_objects(lab) if b is not None]
    widths = [max(b[1].stop - b[1].start, b[2].stop - b[2].start) for b in boxes]
    assert 20 <= np.median(widths) <= 45
