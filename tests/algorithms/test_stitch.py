"""3D objects from per-plane foreground maps, and IDs kept from frame to frame."""

import numpy as np
import pytest

from napari_segkit.algorithms.instances import match_instances
from napari_segkit.algorithms.stitch import link_frames, objects_from_plane_maps


def ellipsoid(shape, centre, radii):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1


def test_touching_balls_are_separated_and_apart_ones_kept():
    shape = (24, 64, 96)
    truth = np.zeros(shape, np.int32)
    centres = [(12, 32, 20), (12, 32, 35), (12, 32, 72)]  # the first two touch (radius 8)
    for i, c in enumerate(centres, start=1):
        truth[ellipsoid(shape, c, (8, 8, 8)) & (truth == 0)] = i
    fg = (truth > 0) * 0.95
    lab = objects_from_plane_maps(fg, diameter=16)
    score = match_instances(lab, truth)
    assert score["tp"] == 3 and score["fp"] == 0, score
    assert score["mean_iou"] > 0.85


def test_weaker_evidence_on_a_shared_border_separates_objects():
    """Two flat-sided halves of a block (no neck) split where the evidence dips."""
    fg = np.zeros((8, 20, 40), np.float32)
    fg[1:7, 2:18, 2:19] = 0.9
    fg[1:7, 2:18, 21:38] = 0.9
    fg[1:7, 2:18, 19:21] = 0.55  # the two masks' edges meet: lower probability
    lab = objects_from_plane_maps(fg, diameter=16, threshold=0.25)
    assert lab.max() == 2
    assert lab[4, 10, 8] != lab[4, 10, 30]


def test_spacing_is_respected():
    """Balls sampled every 4th plane: with spacing (4, 1, 1) they are the right 3D objects."""
    shape = (96, 48, 48)
    truth = np.zeros(shape, np.int32)
    truth[ellipsoid(shape, (30, 24, 24), (12, 12, 12))] = 1
    truth[ellipsoid(shape, (53, 24, 24), (12, 12, 12)) & (truth == 0)] = 2  # touches 1 in z
    sub = truth[::4]
    lab = objects_from_plane_maps((sub > 0) * 0.9, diameter=24, spacing=(4, 1, 1))
    score = match_instances(lab, sub)
    assert score["tp"] == 2 and score["fp"] == 0 and score["mean_iou"] > 0.9, score


def test_gaps_in_one_plane_do_not_split_an_object():
    """A plane where the 2D model missed the object (a hole through it) does not cut it in two."""
    shape = (20, 40, 40)
    ball = ellipsoid(shape, (10, 20, 20), (8, 8, 8))
    fg = ball * 0.9
    fg[10] = 0.0  # one missed plane
    lab = objects_from_plane_maps(fg, diameter=16)
    # the evidence is smoothed across the missing plane: one object
    assert lab.max() == 1


def test_small_and_empty():
    assert objects_from_plane_maps(np.zeros((4, 10, 10)), diameter=5).max() == 0
    speck = np.zeros((6, 30, 30), np.float32)
    speck[3, 5, 5] = 1.0
    big = ellipsoid((6, 30, 30), (3, 18, 18), (3, 6, 6)) * 0.9
    lab = objects_from_plane_maps(np.maximum(speck, big), diameter=12, threshold=0.3)
    assert lab.max() == 1 and lab[3, 18, 18] == 1 and lab[3, 5, 5] == 0
    lab = objects_from_plane_maps(np.maximum(speck, big), diameter=12, threshold=0.1, min_size=0)
    assert lab.dtype == np.int32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"diameter": 0}, "diameter"),
        ({"diameter": float("nan")}, "diameter"),
        ({"diameter": 10, "spacing": (1, 1)}, "spacing"),
        ({"diameter": 10, "spacing": (1, 0, 1)}, "spacing"),
        ({"diameter": 10, "threshold": 1.5}, "threshold"),
        ({"diameter": 10, "min_size": -1}, "min_size"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        objects_from_plane_maps(np.zeros((3, 8, 8)), **kwargs)
    with pytest.raises(ValueError, match="foreground"):
        objects_from_plane_maps(np.zeros(8), diameter=3)


def test_link_frames_keeps_ids_and_counts_new_objects():
    # frame 0: objects 1, 2; frame 1: 3 overlaps 1, 4 is new; frame 2: 5 overlaps 3 (so 1),
    # 6 overlaps 4; object 2 vanished
    lab = np.zeros((3, 10, 20), np.int32)
    lab[0, 1:4, 1:4] = 1
    lab[0, 6:9, 10:13] = 2
    lab[1, 1:4, 2:5] = 3
    lab[1, 5:8, 15:18] = 4
    lab[2, 2:5, 2:5] = 5
    lab[2, 5:8, 16:19] = 6
    out = link_frames(lab)
    assert out[0, 2, 2] == out[1, 2, 3] == out[2, 3, 3] == 1
    assert out[0, 7, 11] == 2
    assert out[1, 6, 16] == out[2, 6, 17] == 3
    assert set(np.unique(out)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(out > 0, lab > 0)
    # IDs that repeat in every frame (unique only within a frame) link the same way
    per_frame = np.where(lab > 0, lab - np.array([0, 2, 4])[:, None, None], 0)
    np.testing.assert_array_equal(link_frames(per_frame), out)


def test_link_frames_needs_enough_overlap_and_one_to_one():
    lab = np.zeros((2, 4, 12), np.int32)
    lab[0, :, 0:6] = 1
    lab[1, :, 0:3] = 2  # IoU 0.5 with 1
    lab[1, :, 3:6] = 3  # IoU 0.5 with 1 too: only one of them keeps the ID
    out = link_frames(lab)
    assert sorted(np.unique(out[1])[1:].tolist()) == [1, 2]
    assert link_frames(lab, min_iou=0.6)[1].max() == 3  # too little overlap: new IDs
    with pytest.raises(ValueError, match="min_iou"):
        link_frames(lab, min_iou=0)
    with pytest.raises(ValueError, match="labels_t"):
        link_frames(lab[0])
