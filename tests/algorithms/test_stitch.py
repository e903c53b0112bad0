import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from napari_segkit.algorithms.image import stack_mode
from napari_segkit.algorithms.stitch import link_frames, objects_from_plane_maps
from napari_segkit.datasets import realistic_nuclei_3d


def iou_matrix(truth, pred):
    nt, npred = int(truth.max()), int(pred.max())
    pair = truth.astype(np.int64) * (npred + 1) + pred
    inter = np.bincount(pair.ravel(), minlength=(nt + 1) * (npred + 1)).reshape(nt + 1, npred + 1)
    union = inter.sum(1)[1:, None] + inter.sum(0)[None, 1:] - inter[1:, 1:]
    return inter[1:, 1:] / np.maximum(union, 1)


def matched(truth, pred, thresh=0.5):
    """Objects of ``truth`` matched one to one to a predicted object with IoU >= thresh."""
    iou = iou_matrix(truth, pred)
    if iou.size == 0:
        return 0
    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] >= thresh).sum())


def flickering_planes(labels, rng):
    """What a 2D model gives plane by plane: outlines 1 px too small or too large in a quarter of
    the planes each, 10 % of the objects missing from each plane, noise, a little blur."""
    fg = np.empty(labels.shape, np.float32)
    for z in range(labels.shape[0]):
        plane = labels[z] > 0
        r = rng.random()
        if r < 0.25:
            plane = ndi.binary_erosion(plane)
        elif r < 0.5:
            plane = ndi.binary_dilation(plane)
        missing = rng.random(int(labels.max()) + 1) < 0.1
        missing[0] = False
        fg[z] = plane & ~missing[labels[z]]
    fg += rng.normal(0, 0.15, fg.shape).astype(np.float32)
    return np.clip(ndi.gaussian_filter(fg, (0, 1, 1)), 0, 1)


def test_objects_from_plane_maps_one_id_per_3d_object():
    found = total = found_cc = 0
    for seed in range(4):
        _, truth, spacing = realistic_nuclei_3d(seed=seed, return_spacing=True)
        fg = flickering_planes(truth, np.random.default_rng(seed))
        lab = objects_from_plane_maps(fg, spacing=spacing)
        assert lab.dtype == np.int32 and lab.shape == truth.shape
        found += matched(truth, lab)
        found_cc += matched(truth, ndi.label(fg > 0.5)[0])
        total += int(truth.max())
    assert found / total >= 0.9
    assert found > found_cc  # better than 3D connected components of the same mask


def test_objects_from_plane_maps_checks_and_options():
    fg = np.zeros((6, 20, 20), np.float32)
    assert objects_from_plane_maps(fg).max() == 0
    fg[1:5, 5:15, 5:15] = 1
    assert objects_from_plane_maps(fg, diameter=10).max() == 1
    assert objects_from_plane_maps(fg, min_size=10_000).max() == 0
    assert objects_from_plane_maps(fg > 0.5).max() == 1  # bool accepted
    for kwargs, match in [
        ({"threshold": 1.0}, "threshold"),
        ({"diameter": 0}, "diameter"),
        ({"diameter": 1e6}, "larger"),
        ({"spacing": (1, 1)}, "spacing"),
        ({"min_size": -1}, "min_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            objects_from_plane_maps(fg, **kwargs)
    with pytest.raises(ValueError, match="3D"):
        objects_from_plane_maps(fg[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        objects_from_plane_maps(fg * 5)


def test_link_frames_keeps_ids_and_gives_new_ones():
    t = np.zeros((4, 20, 20), np.int32)
    t[0, 2:6, 2:6] = 7  # A
    t[0, 10:14, 10:14] = 3  # B
    t[1, 3:7, 2:6] = 1  # A moved
    t[1, 10:14, 11:15] = 2  # B moved
    t[2, 3:7, 3:7] = 5  # A; B gone
    t[2, 15:19, 0:4] = 6  # C new
    t[3, 10:14, 11:15] = 9  # B back after a gap: a new track
    out = link_frames(t)
    a, b, c = out[0, 3, 3], out[0, 11, 11], out[2, 16, 1]
    assert a == out[1, 4, 3] == out[2, 4, 4]
    assert b == out[1, 11, 12]
    assert len({a, b, c}) == 3
    assert out[3, 11, 12] not in {a, b, c}
    assert out.dtype == np.int32 and ((out > 0) == (t > 0)).all()
    # a low overlap is not a match
    u = np.zeros((2, 10, 10), np.int32)
    u[0, 0:4, 0:4] = 1
    u[1, 3:7, 3:7] = 1
    assert len(np.unique(link_frames(u, min_iou=0.3))) == 3
    assert len(np.unique(link_frames(u, min_iou=0.01))) == 2


def test_link_frames_4d_and_checks():
    t = np.zeros((3, 4, 8, 8), np.int32)
    t[:, 1:3, 2:5, 2:5] = [[[[1]]], [[[4]]], [[[2]]]]
    out = link_frames(t)
    assert len(np.unique(out)) == 2
    calls = []
    link_frames(t, progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (3, 3)
    with pytest.raises(ValueError, match="min_iou"):
        link_frames(t, min_iou=0)
    with pytest.raises(ValueError, match="integer"):
        link_frames(t.astype(float))
    with pytest.raises(ValueError, match="T, Y, X"):
        link_frames(t[0, 0])


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [
        ((64, 64), {}, (2, "2D image")),
        ((64, 64, 3), {"rgb": True}, (2, "2D image")),
        ((10, 64, 64), {}, (3, "3D image: z-stack")),
        ((10, 64, 64), {"axis_labels": ("0", "1", "2")}, (3, "3D image: z-stack")),
        ((10, 64, 64), {"axis_labels": ("t", "y", "x")}, (2, "time axis 't'")),
        ((10, 64, 64), {"axis_labels": ("Frame", "y", "x")}, (2, "time axis 'Frame'")),
        ((10, 64, 64), {"axis_labels": ("z", "t", "x")}, (3, "3D image: z-stack")),
        ((2, 10, 64, 64), {"channel_axis": 0}, (3, "3D image: z-stack")),
        (
            (5, 2, 10, 64, 64),
            {"axis_labels": ("TIME", "c", "z", "y", "x"), "channel_axis": 1},
            (3, "time axis 'TIME': a z-stack per time point"),
        ),
        (
            (5, 10, 64, 64),
            {"axis_labels": ("time", "z", "y", "x")},
            (3, "time axis 'time': a z-stack per time point"),
        ),
        ((5, 64, 64, 3), {"rgb": True, "axis_labels": ("t", "y", "x", "c")}, (2, "time axis 't'")),
    ],
)
def test_stack_mode(shape, kwargs, expected):
    nd, reason = stack_mode(shape, **kwargs)
    assert nd == expected[0] and reason.split(":")[0].lower() in expected[1].lower()
