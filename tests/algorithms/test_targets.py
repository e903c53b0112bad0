"""Training targets: classes, distances, annotation masks (tiny arrays, exact answers)."""

import numpy as np
import pytest

from napari_segkit.algorithms.targets import (
    annotation_mask,
    check_labels,
    instance_targets,
    median_diameter,
    object_boundaries,
    rasterize_region,
    semantic_targets,
)
from napari_segkit.algorithms.watershed import instances_from_maps
from napari_segkit.metrics import match_instances


def test_classes_of_two_touching_objects_exact():
    lab = np.zeros((6, 8), int)
    lab[1:5, 1:4] = 1
    lab[1:5, 4:7] = 3
    classes, distance = instance_targets(lab)
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(classes, expected)
    assert classes.dtype == np.uint8 and distance.dtype == np.float32
    # each object's distance peaks at exactly 1 and is 0 outside, > 0 inside
    for i in (1, 3):
        assert distance[lab == i].max() == pytest.approx(1.0)
        assert (distance[lab == i] > 0).all()
    assert (distance[lab == 0] == 0).all()
    # the contact pixels of object 1 are as far from object 3 as from the background
    np.testing.assert_allclose(distance[2, 1:4], [0.5, 1.0, 0.5])


def test_boundary_width_and_image_edge():
    lab = np.zeros((1, 9), int)
    lab[0, 0:7] = 1  # touches the left edge of the image: not a boundary there
    assert object_boundaries(lab).astype(int).tolist() == [[0, 0, 0, 0, 0, 0, 1, 0, 0]]
    assert object_boundaries(lab, width=2).astype(int).tolist() == [[0, 0, 0, 0, 0, 1, 1, 0, 0]]
    block = np.zeros((7, 11), int)
    block[1:6, 1:8] = 1
    classes, _ = instance_targets(block, boundary_width=2)
    assert classes[3].tolist() == [0, 2, 2, 1, 1, 1, 2, 2, 0, 0, 0]
    assert classes[:, 4].tolist() == [0, 2, 2, 1, 2, 2, 0]


def test_3d_and_spacing():
    lab = np.zeros((5, 7, 7), int)
    lab[1:4, 1:6, 1:6] = 2
    classes, distance = instance_targets(lab)
    assert classes[2, 3, 3] == 1 and classes[1, 3, 3] == 2 and classes[0, 3, 3] == 0
    assert distance[2, 3, 3] == pytest.approx(1.0)
    # a coarse z (spacing 4): the boundary is one plane in z, and in-plane width scales with it
    classes_s, distance_s = instance_targets(lab, spacing=(4.0, 1.0, 1.0), boundary_width=2)
    assert classes_s[2, 3, 3] == 1 and classes_s[2, 2, 3] == 2 and classes_s[2, 3, 2] == 2
    assert distance_s.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="spacing"):
        instance_targets(lab, spacing=(1.0, 1.0))


def _touching_cells(seed, n=70, size=128, radius=8):
    """Touching convex cells: the Voronoi cells of random points, cut to discs around them."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[:size, :size]
    d = np.stack([(yy - p[0]) ** 2 + (xx - p[1]) ** 2 for p in pts])
    return np.where(d.min(0) < radius**2, d.argmin(0) + 1, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ndim", [2, 3])
def test_targets_invert_to_the_objects(seed, ndim):
    """The inference's watershed on the exact targets gives back every object of a crowded image."""
    lab = _touching_cells(seed)
    if ndim == 3:
        lab = np.repeat(lab[None], 6, axis=0)
        lab[[0, -1]] = 0
    classes, distance = instance_targets(lab)
    interior = (classes == 1).astype(np.float32)
    boundary = (classes == 2).astype(np.float32)
    back = instances_from_maps(interior, boundary, distance, min_size=1)
    r = match_instances(back, lab)
    assert r.recall == 1.0 and r.precision >= 0.97 and r.mean_matched_iou >= 0.95


def test_semantic_targets():
    out = semantic_targets(np.array([[0, 1], [2, 2]], np.int64))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1], [2, 2]]
    assert semantic_targets(np.array([[0, 300]])).dtype == np.uint16
    with pytest.raises(ValueError, match="n_classes is 2"):
        semantic_targets(np.array([[0, 2]]), n_classes=2)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([[0, 1.5]]), "non-integer"),
        (np.array([[0, -1]]), "negative"),
        (np.array([[0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "dtype"),
        (np.zeros((0, 3), int), "empty"),
        (None, "None"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels)


def test_whole_float_labels_and_bool_are_accepted():
    assert check_labels(np.array([[0.0, 2.0]])).tolist() == [[0, 2]]
    assert check_labels(np.array([[False, True]])).tolist() == [[0, 1]]


def test_median_diameter():
    lab = np.zeros((30, 30), int)
    lab[0:2, 0:2] = 1  # area 4
    lab[10:20, 10:20] = 2  # area 100
    lab[25:28, 25:28] = 3  # area 9 (the median)
    assert median_diameter(lab) == pytest.approx(2 * np.sqrt(9 / np.pi))
    assert median_diameter(np.zeros((4, 4), int)) == 0.0
    ball = np.zeros((5, 5, 5), int)
    ball[1:3, 1:3, 1:3] = 1
    assert median_diameter(ball) == pytest.approx(np.cbrt(6 * 8 / np.pi))


def test_annotation_mask_complete_and_regions():
    lab = np.zeros((4, 6), int)
    lab[1, 1] = 1
    assert annotation_mask(lab).all()
    rect = annotation_mask(lab, region=np.s_[0:2, 2:5])
    assert rect.sum() == 6 and rect[0, 2] and not rect[2, 2]
    # a napari Shapes rectangle (y, x vertices) rasterized like the slices above
    poly = np.array([[0, 2], [0, 4.99], [1.99, 4.99], [1.99, 2]])
    np.testing.assert_array_equal(rasterize_region(poly, lab.shape), rect)
    both = annotation_mask(lab, region=[np.s_[0:1, :], np.s_[3:4, :]])
    assert both.sum() == 12
    mask = np.zeros_like(lab, bool)
    mask[2:, :] = True
    np.testing.assert_array_equal(annotation_mask(lab, region=mask), mask)


def test_polygon_in_a_volume():
    shape = (3, 5, 5)
    tri = np.array([[0, 0], [0, 4], [4, 0]])
    every = rasterize_region(tri, shape)
    assert every.shape == shape and (every[0] == every[2]).all() and every[0].any()
    one = rasterize_region(np.c_[np.full(3, 1), tri], shape)
    assert one[1].any() and not one[0].any() and not one[2].any()
    with pytest.raises(ValueError, match="one plane"):
        rasterize_region(np.array([[0, 0, 0], [1, 0, 4], [1, 4, 0]]), shape)


def test_annotation_mask_objects_mode_is_a_ring():
    lab = np.zeros((9, 9), int)
    lab[4, 4] = 5
    m = annotation_mask(lab, mode="objects", margin=2)
    # the object and the pixels within Euclidean distance 2 of it
    yy, xx = np.mgrid[:9, :9]
    np.testing.assert_array_equal(m, (yy - 4) ** 2 + (xx - 4) ** 2 <= 4)
    # the default margin: half the median diameter, at least 2
    assert annotation_mask(lab, mode="objects").sum() == m.sum()
    big = np.zeros((40, 40), int)
    big[10:20, 10:20] = 1  # diameter 11.3: margin 5.6
    ring = annotation_mask(big, mode="objects")
    assert ring[10, 5] and not ring[10, 4] and not ring[30, 30]
    # with a completely annotated region as well
    with_region = annotation_mask(big, mode="objects", region=np.s_[30:, 30:])
    assert with_region[35, 35] and not with_region[25, 25]
    assert annotation_mask(big, mode="objects", margin=0).sum() == 100


def test_annotation_mask_bad_input():
    lab = np.zeros((4, 4), int)
    with pytest.raises(ValueError, match="mode"):
        annotation_mask(lab, mode="partial")
    with pytest.raises(ValueError, match="margin"):
        annotation_mask(lab, mode="objects", margin=-1)
    with pytest.raises(ValueError, match="shape"):
        annotation_mask(lab, region=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="region must be"):
        annotation_mask(lab, region="everything")
