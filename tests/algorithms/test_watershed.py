"""Objects from interior/boundary/distance maps (the inverse of the U-Net training targets)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_segkit.algorithms.watershed import (
    _median_diameter,
    instances_from_maps,
    objects_table,
)
from napari_segkit.metrics import match_instances


def _disks(shape, centres, radius):
    grids = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for i, c in enumerate(centres, 1):
        d2 = sum((g - x) ** 2 for g, x in zip(grids, c, strict=True))
        lab[(d2 <= radius**2) & (lab == 0)] = i
    return lab


def _perfect_maps(lab):
    """The maps a perfect network would predict for ``lab``."""
    rim = np.zeros(lab.shape, bool)
    for i in range(1, lab.max() + 1):
        m = lab == i
        rim |= m & ~ndi.binary_erosion(m)
    interior = ((lab > 0) & ~rim).astype(np.float32)
    dist = np.zeros(lab.shape, np.float32)
    for i in range(1, lab.max() + 1):
        d = ndi.distance_transform_edt(np.pad(lab == i, 1))[(slice(1, -1),) * lab.ndim]
        dist += (d / d.max()).astype(np.float32) * (lab == i)
    return interior, rim.astype(np.float32), dist


def test_touching_disks_are_separated():
    lab = _disks((60, 80), [(30, 25), (30, 44), (12, 60)], 10)  # the first two touch
    interior, boundary, dist = _perfect_maps(lab)
    out = instances_from_maps(interior, boundary, dist, min_size=5)
    assert out.dtype == np.int32 and out.max() == 3
    assert match_instances(out, lab).mean_matched_iou > 0.97
    # soft, noisy maps still give the same objects
    rng = np.random.default_rng(0)
    soft = [
        np.clip(ndi.gaussian_filter(m, 1) + rng.normal(0, 0.05, m.shape), 0, 1)
        for m in (interior, boundary)
    ]
    out2 = instances_from_maps(soft[0], soft[1], dist + rng.normal(0, 0.05, dist.shape))
    score = match_instances(out2, lab)
    assert score["tp"] == 3 and score["fp"] == 0, score


@pytest.mark.parametrize(
    ("shape", "centres"),
    [
        ((60, 120), [(30, 20), (30, 38), (30, 70), (15, 100), (45, 100), (10, 60)]),
        ((30, 40, 90), [(15, 20, 12), (15, 20, 28), (15, 20, 50), (15, 20, 75)]),
    ],
)
def test_only_shared_components_are_flooded_with_the_same_result(shape, centres):
    """Components with one seed are taken whole and only those with several are flooded: the
    labels of one plain watershed over the whole foreground."""
    from skimage.segmentation import watershed

    lab = _disks(shape, centres, 10 if len(shape) == 2 else 8)  # touching pairs and loners
    interior, boundary, dist = _perfect_maps(lab)
    rng = np.random.default_rng(1)  # continuous heights: no ties for the queue to break
    dist = dist + 0.01 * ndi.gaussian_filter(rng.random(shape), 1).astype(np.float32)
    out = instances_from_maps(interior, boundary, dist, min_size=0)
    fg = (interior + boundary) > 0.5
    st = ndi.generate_binary_structure(len(shape), 1)
    markers, n = ndi.label(fg & (interior > 0.5) & (dist > 0.4), st)
    ref = watershed(-dist, markers, mask=fg, connectivity=1)
    # both kinds of component are there: one seed (taken whole) and several (flooded)
    comps = ndi.label(fg, st)[0]
    pairs = np.unique(np.stack([comps[markers > 0], markers[markers > 0]]), axis=1)
    seeds_per_comp = np.bincount(pairs[0])[1:]
    assert (seeds_per_comp == 1).any() and (seeds_per_comp >= 2).any()
    np.testing.assert_array_equal(out, ref)
    assert match_instances(out, lab).f1 == 1.0


def test_3d_and_spacing_without_distance():
    lab = _disks((20, 40, 40), [(10, 20, 12), (10, 20, 28)], 8)
    interior, boundary, dist = _perfect_maps(lab)
    out = instances_from_maps(interior, boundary, dist)
    assert out.shape == lab.shape and out.max() == 2
    assert match_instances(out, lab).mean_matched_iou > 0.95
    # no distance map: the distance transform of the interior (with the voxel size) replaces it
    out2 = instances_from_maps(interior, boundary, None, spacing=(1.0, 1.0, 1.0))
    assert match_instances(out2, lab)["tp"] == 2


def test_min_size_unseeded_foreground_and_ids():
    interior = np.zeros((30, 30), np.float32)
    interior[2:10, 2:10] = 1
    interior[20:22, 20:22] = 1  # 4 pixels
    boundary = np.zeros_like(interior)
    boundary[15:18, 2:12] = 0.9  # foreground without any seed: still an object
    dist = np.where(interior > 0, 1.0, 0.0).astype(np.float32)
    out = instances_from_maps(interior, boundary, dist, min_size=5)
    assert sorted(np.unique(out).tolist()) == [0, 1, 2]
    assert (out[20:22, 20:22] == 0).all()
    assert len(np.unique(out[15:18, 2:12])) == 1 and out[16, 5] > 0
    assert instances_from_maps(interior * 0, boundary * 0, dist, min_size=0).max() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_size": -1}, "min_size"),
        ({"seed_threshold": 1.5}, "seed_threshold"),
        ({"distance_threshold": -0.1}, "distance_threshold"),
        ({"foreground_threshold": 2}, "foreground_threshold"),
    ],
)
def test_bad_parameters(kwargs, match):
    m = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=match):
        instances_from_maps(m, m, m, **kwargs)


def test_bad_maps():
    m = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="boundary_prob has shape"):
        instances_from_maps(m, np.zeros((8, 9)), m)
    with pytest.raises(ValueError, match="interior_prob must be 2D or 3D"):
        instances_from_maps(np.zeros(8), np.zeros(8), None)
    with pytest.raises(ValueError, match="spacing"):
        instances_from_maps(m, m, None, spacing=(1, 0))


def test_objects_table_2d_3d():
    lab = np.zeros((4, 6, 6), np.int32)
    lab[1:3, 1:3, 2:5] = 4
    score = np.full(lab.shape, 0.5, np.float32)
    t = objects_table(lab, score, class_names=["bg", "cell"])
    assert list(t)[:5] == ["label", "class_id", "class_name", "score", "area"]
    assert t["label"].tolist() == [4] and t["area"].tolist() == [12]
    assert (t["bbox_z0"][0], t["bbox_z1"][0], t["bbox_x1"][0]) == (1, 3, 5)
    assert t["centroid_x"][0] == pytest.approx(3.0)
    empty = objects_table(np.zeros((5, 5), int))
    assert empty["label"].size == 0 and "bbox_y1" in empty and "bbox_z0" not in empty


def test_median_diameter():
    lab = _disks((100, 100), [(20, 20), (70, 70)], 10)
    assert _median_diameter(lab) == pytest.approx(20, rel=0.05)
    assert _median_diameter(np.zeros((5, 5), int)) is None
    ball = _disks((30, 30, 30), [(15, 15, 15)], 8)
    assert _median_diameter(ball) == pytest.approx(16, rel=0.05)
