"""Pure instance functions: score order, painting, tiles, the table."""

import numpy as np
import pytest

from napari_segkit.algorithms.instances import (
    FEATURE_COLUMNS,
    auto_max_detections,
    features_table,
    instance_areas,
    owned_by_core,
    paint_instances,
    score_order,
    tile_plan,
)


def test_score_order_is_descending_and_stable():
    np.testing.assert_array_equal(score_order(np.array([0.2, 0.9, 0.2, 0.5])), [1, 3, 0, 2])


def test_paint_highest_score_wins_and_ids_follow_score():
    a = np.zeros((4, 4), bool)
    a[0:3, 0:3] = True
    b = np.zeros((4, 4), bool)
    b[1:4, 1:4] = True
    c = np.zeros((4, 4), bool)
    c[1:2, 1:2] = True  # entirely under a and b
    labels, order = paint_instances([a, b, c], np.array([0.5, 0.8, 0.1]), (4, 4))
    np.testing.assert_array_equal(order, [1, 0, 2])
    expected = np.array([[2, 2, 2, 0], [2, 1, 1, 1], [2, 1, 1, 1], [0, 1, 1, 1]], dtype=np.int32)
    np.testing.assert_array_equal(labels, expected)
    areas = instance_areas(labels, 3)
    np.testing.assert_array_equal(areas, [9, 5, 0])  # c is left with no pixel: reported as area 0


def test_paint_crops_with_offsets_are_clipped_at_the_edges():
    crop = np.ones((3, 3), bool)
    labels, _ = paint_instances(
        [crop, crop], np.array([0.9, 0.3]), (4, 4), offsets=[(-1, -1), (2, 2)]
    )
    expected = np.zeros((4, 4), np.int32)
    expected[0:2, 0:2] = 1
    expected[2:4, 2:4] = 2
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"masks": [np.ones((2, 2), bool)], "scores": np.array([0.1, 0.2]), "shape": (2, 2)},
            "scores",
        ),
        (
            {
                "masks": [np.ones((2, 2), bool)],
                "scores": np.array([0.1]),
                "shape": (2, 2),
                "offsets": [],
            },
            "offsets",
        ),
    ],
)
def test_paint_checks_its_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paint_instances(**kwargs)


def test_auto_max_detections_follows_the_area():
    assert auto_max_detections((1024, 1024)) == 1024  # 500 nuclei fit under the cap
    assert auto_max_detections((2048, 2048)) == 4096
    assert auto_max_detections((100, 100)) == 100
    with pytest.raises(ValueError, match="pixels_per_object"):
        auto_max_detections((10, 10), pixels_per_object=0)


@pytest.mark.parametrize("shape", [(100, 50), (1000, 777), (257, 1024), (64, 64)])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (200, 32), (1024, 64)])
def test_tile_plan_cores_partition_the_image(shape, tile, overlap):
    plan = tile_plan(shape, tile, overlap)
    owner = np.zeros(shape, np.int32)
    size = (plan[0].y1 - plan[0].y0, plan[0].x1 - plan[0].x0)
    assert all(s <= min(tile, n) for s, n in zip(size, shape, strict=True))
    for t in plan:
        assert (t.y1 - t.y0, t.x1 - t.x0) == size  # equal tiles: they batch together
        assert 0 <= t.y0 and t.y1 <= shape[0] and 0 <= t.x0 and t.x1 <= shape[1]
        cy0, cx0, cy1, cx1 = t.core
        # the core lies inside its tile, at least overlap/2 from every inner tile edge
        assert t.y0 <= cy0 and cy1 <= t.y1 and t.x0 <= cx0 and cx1 <= t.x1
        if cy0 > 0:
            assert cy0 - t.y0 >= overlap // 2
        if cy1 < shape[0]:
            assert t.y1 - cy1 >= overlap // 2
        owner[cy0:cy1, cx0:cx1] += 1
    assert (owner == 1).all()  # every pixel has exactly one owning tile


def test_tile_plan_shrinks_tiles_for_a_plane_a_little_larger_than_one():
    """A 1024 image rescaled by 1.2 for the object size: 4 tiles of 650, not 4 of 1024."""
    plan = tile_plan((1235, 1235), 1024, 64)
    assert len(plan) == 4 and (plan[0].y1 - plan[0].y0) == 650
    assert sum((t.y1 - t.y0) * (t.x1 - t.x0) for t in plan) < 1.4 * 1235**2
    assert len(tile_plan((1024, 1024), 1024, 64)) == 1


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "match"),
    [
        ((10,), 64, 8, "shape"),
        ((100, 100), 16, 4, "tile_size"),
        ((100, 100), 64, 32, "overlap"),
        ((100, 100), 64, -1, "overlap"),
    ],
)
def test_tile_plan_checks_its_inputs(shape, tile, overlap, match):
    with pytest.raises(ValueError, match=match):
        tile_plan(shape, tile, overlap)


def test_owned_by_core_uses_the_box_centre():
    boxes = np.array([[0, 0, 10, 10], [45, 45, 55, 55], [48, 0, 51, 2], [49, 0, 51, 2]])
    np.testing.assert_array_equal(owned_by_core(boxes, (0, 0, 50, 50)), [True, False, True, False])


def test_features_table_columns_and_checks():
    t = features_table(
        np.array([1, 2]),
        np.array([1, 2]),
        ["bg", "a", "b"],
        np.array([0.9, 0.8]),
        np.array([10, 0]),
        np.array([[1, 2, 3, 4], [5, 6, 7, 8]]),
        index=np.array([[0], [3]]),
    )
    assert list(t) == ["axis0", *FEATURE_COLUMNS]
    assert t["class_name"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(t["bbox_y0"], [2, 6])
    np.testing.assert_array_equal(t["bbox_x1"], [3, 7])
    np.testing.assert_array_equal(t["axis0"], [0, 3])
    with pytest.raises(ValueError, match="class_ids"):
        features_table(
            np.array([1]),
            np.array([5]),
            ["bg", "a"],
            np.array([0.5]),
            np.array([1]),
            np.zeros((1, 4)),
        )
    with pytest.raises(ValueError, match="scores"):
        features_table(
            np.array([1]),
            np.array([1]),
            ["bg", "a"],
            np.array([0.5, 0.1]),
            np.array([1]),
            np.zeros((1, 4)),
        )
