import numpy as np
import pytest

from napari_segkit.algorithms.objects import classes_to_objects, label_objects, remove_small


def test_label_objects_connectivity():
    diag = np.eye(3, dtype=bool)
    assert label_objects(diag, connectivity=1).max() == 3
    assert label_objects(diag, connectivity=2).max() == 1
    with pytest.raises(ValueError, match="connectivity must be between 1"):
        label_objects(diag, connectivity=3)


def test_label_objects_3d_connectivity():
    vol = np.zeros((2, 2, 2), bool)
    vol[0, 0, 0] = vol[1, 1, 1] = True
    assert label_objects(vol, connectivity=1).max() == 2
    assert label_objects(vol, connectivity=3).max() == 1


def test_min_size_and_renumbering():
    m = np.zeros((5, 8), bool)
    m[0, 0] = True  # 1 px
    m[2:4, 2:4] = True  # 4 px
    m[0, 6:8] = True  # 2 px
    lab = label_objects(m, min_size=2)
    assert sorted(np.unique(lab)) == [0, 1, 2]
    assert (lab[2:4, 2:4] > 0).all() and lab[0, 0] == 0


def test_remove_small_in_place_and_validates():
    lab = np.array([[1, 1, 2, 3, 3, 3]], np.int32)
    out = remove_small(lab, 2)
    assert out is lab
    np.testing.assert_array_equal(lab, [[1, 1, 0, 2, 2, 2]])
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        remove_small(lab, -1)


def test_fill_holes():
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    assert (label_objects(ring, fill_holes=True) == 1).all()
    assert label_objects(ring)[2, 2] == 0


def test_classes_to_objects_separates_classes():
    classes = np.array([[1, 1, 2, 2, 0, 1]], np.uint8)
    lab = classes_to_objects(classes)
    assert lab.max() == 3
    assert lab[0, 0] == lab[0, 1] != lab[0, 2] == lab[0, 3]
    assert lab[0, 4] == 0


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("shape", [(1, 9), (2, 3), (4, 50), (37, 29), (3, 5, 7), (8, 1, 6)])
def test_label_rows_equals_scipy_label(shape, threads):
    from scipy import ndimage as ndi

    from napari_segkit.algorithms.objects import label_rows

    rng = np.random.default_rng(len(shape) * threads)
    for p in (0.0, 0.3, 0.55, 0.8, 1.0):
        m = rng.random(shape) < p
        for connectivity in range(1, len(shape) + 1):
            structure = ndi.generate_binary_structure(len(shape), connectivity)
            expected, n = ndi.label(m, structure)
            out = np.empty(shape, np.int32)
            assert label_rows(lambda r0, r1, m=m: m[r0:r1], structure, out, threads=threads) == n
            # the same IDs, not only the same objects: numbered in raster order, as scipy does
            np.testing.assert_array_equal(out, expected)


def test_remove_small_in_chunks(monkeypatch):
    from napari_segkit.algorithms import objects

    monkeypatch.setattr(objects, "_CHUNK", 7)
    lab = np.array([[1, 1, 2, 3, 3, 3], [4, 0, 0, 0, 0, 5]], np.int32)
    remove_small(lab, 2)
    np.testing.assert_array_equal(lab, [[1, 1, 0, 2, 2, 2], [0, 0, 0, 0, 0, 0]])
    view = np.zeros((4, 6), np.int32)[:, ::2]  # not contiguous
    view[:] = [[1, 1, 2]] * 4
    remove_small(view, 5)
    np.testing.assert_array_equal(view, [[1, 1, 0]] * 4)


# --- split_touching -------------------------------------------------------------------------


def _disks(shape, centres, r):
    yy, xx = np.indices(shape)
    out = np.zeros(shape, bool)
    for cy, cx in centres:
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def test_split_touching_separates_a_row_of_disks():
    from napari_segkit.algorithms.objects import split_touching

    m = _disks((60, 140), [(30, 20), (30, 38), (30, 56), (30, 110)], 10)
    assert label_objects(m).max() == 2
    lab = split_touching(m)
    assert lab.dtype == np.int32 and lab.max() == 4
    assert (lab > 0).sum() == m.sum()  # every foreground pixel kept
    for cy, cx in [(30, 20), (30, 38), (30, 56), (30, 110)]:
        assert lab[cy, cx] > 0
    assert len({lab[30, 20], lab[30, 38], lab[30, 56], lab[30, 110]}) == 4
    # a given diameter gives the same answer; a far too large one does not split
    np.testing.assert_array_equal(split_touching(m, diameter=20), lab)
    assert split_touching(m, diameter=120).max() == 2


def test_split_touching_keeps_single_ellipses_whole():
    from napari_segkit.algorithms.objects import split_touching

    yy, xx = np.indices((80, 80))
    m = ((yy - 40) / 12) ** 2 + ((xx - 40) / 30) ** 2 <= 1
    m |= (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    assert split_touching(m).max() == 2


def test_split_touching_respects_labels_and_spacing():
    from napari_segkit.algorithms.objects import split_touching

    lab = np.zeros((40, 40), np.int32)
    lab[5:20, 5:35] = 1
    lab[20:35, 5:35] = 2  # two touching squares with different IDs stay apart
    out = split_touching(lab, diameter=15)
    for a in (1, 2):
        assert len(np.unique(out[lab == a])) >= 1
        assert not set(np.unique(out[lab == 1])) & set(np.unique(out[lab == 2]))
    # 3D, anisotropic: two balls touching in x, sampled every 2 um in z
    zz, yy, xx = np.indices((12, 40, 70))

    def ball(x0):
        return (2 * (zz - 6)) ** 2 + (yy - 20) ** 2 + (xx - x0) ** 2 <= 100

    vol = ball(22) | ball(40)
    out3 = split_touching(vol, spacing=(2, 1, 1))
    assert out3.max() == 2 and out3[6, 20, 22] != out3[6, 20, 40]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"diameter": 0}, "diameter"),
        ({"diameter": -5}, "diameter"),
        ({"diameter": np.nan}, "diameter"),
        ({"diameter": 1e4}, "larger than the image"),
        ({"spacing": (1, 0)}, "spacing"),
        ({"neck_ratio": 0}, "neck_ratio"),
    ],
)
def test_split_touching_rejects(kwargs, match):
    from napari_segkit.algorithms.objects import split_touching

    with pytest.raises(ValueError, match=match):
        split_touching(np.ones((10, 10), bool), **kwargs)


def test_split_touching_empty_and_neck_merge():
    from napari_segkit.algorithms.objects import split_touching

    assert split_touching(np.zeros((5, 5), bool)).max() == 0
    m = _disks((60, 100), [(30, 30), (30, 48)], 10)  # wide contact
    assert split_touching(m).max() == 2
    assert split_touching(m, neck_ratio=0.3).max() == 1  # merge all but the narrowest necks
