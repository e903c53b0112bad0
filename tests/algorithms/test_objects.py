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
