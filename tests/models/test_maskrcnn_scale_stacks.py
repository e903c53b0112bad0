"""Mask R-CNN at the objects' size (diameter) and on stacks (z-stacks, time-lapses); CPU, small."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import maskrcnn as mr  # noqa: E402
from napari_segkit.models.paste import paste_masks, paste_scores  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return mr.load_model("nuclei", "cpu")


#: the shipped nuclei model's working object diameter (pixels)
W = 20.0


def upscale(img, lab, k):
    return np.repeat(np.repeat(img, k, 0), k, 1), np.repeat(np.repeat(lab, k, 0), k, 1)


def test_shipped_model_knows_its_size(model, tmp_path):
    assert mr.object_diameter(model) == W == 20.0  # recorded in the shipped checkpoint
    assert mr.LEGACY_NUCLEI_DIAMETER == 16.0  # the first release's file, without the key
    path = mr.save_checkpoint(
        model.module,
        tmp_path / "m.safetensors",
        architecture=model.architecture,
        class_names=model.class_names,
        object_diameter=24.5,
    )
    assert mr.object_diameter(mr.load_checkpoint(path)) == 24.5
    plain = mr.save_checkpoint(
        model.module,
        tmp_path / "p.safetensors",
        architecture=model.architecture,
        class_names=model.class_names,
    )
    assert mr.object_diameter(mr.load_checkpoint(plain)) is None


def test_rescaled_round_trip_keeps_the_grid(model):
    img, truth = synthetic_nuclei((100, 130), n_nuclei=12, radius=(6, 9), seed=3)
    for diameter, scale in ((W / 2, 2.0), (2 * W, 0.5), (W, 1.0)):
        res = mr.predict_instances(img, model, diameter=diameter)
        assert res.labels.shape == img.shape and res.labels.dtype == np.int32
        assert res.diameter == diameter and res.params["scale"] == pytest.approx(scale)
        t = res.table
        assert (t["bbox_x1"] <= 130 + 1).all() and (t["bbox_y1"] <= 100 + 1).all()
        np.testing.assert_array_equal(np.unique(res.labels)[1:], np.sort(t["label"][t["area"] > 0]))
    plane = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10, 1)
    assert mr.resize_plane(plane, (24, 5)).shape == (24, 5, 1)


def test_upscaled_image_gives_the_same_objects_with_auto_size(model):
    img, truth = synthetic_nuclei((160, 160), n_nuclei=35, radius=(6, 10), seed=41)
    big, big_truth = upscale(img, truth, 2)
    res = mr.predict_instances(big, model)  # diameter=None: estimated
    score = match_instances(res.labels, big_truth)
    assert score["f1"] >= 0.8, score
    true_d = np.median(2 * np.sqrt(np.bincount(big_truth.ravel())[1:] / np.pi))
    assert 0.75 < res.diameter / true_d < 1.33, (res.diameter, true_d)
    assert res.params["diameter_estimated"] and res.params["scale"] < 0.7
    # smooth outlines at full resolution, not blocks of the rescaled grid: masks pasted from
    # continuous probabilities follow the (2x-blocky) truth to within a pixel or so
    assert score.mean_matched_iou >= 0.8, score
    small = mr.predict_instances(img, model)
    assert abs(res.n_objects - small.n_objects) <= 0.1 * small.n_objects + 1


@pytest.mark.parametrize(
    ("diameter", "match"),
    [
        (0, "diameter"),
        (-3.0, "diameter"),
        (float("nan"), "diameter"),
        (float("inf"), "diameter"),
        (500.0, "diameter=500 pixels is larger than the image"),
        ("big", "diameter"),
    ],
)
def test_bad_diameters_are_named(model, diameter, match):
    with pytest.raises(ValueError, match=match):
        mr.predict_instances(np.zeros((64, 80), np.uint16), model, diameter=diameter)


def test_a_model_without_a_size_takes_no_diameter(model, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(model.module.state_dict(), path)
    plain = mr.load_checkpoint(path)
    img, _ = synthetic_nuclei((96, 96), n_nuclei=8, seed=2)
    with pytest.raises(ValueError, match="records no object_diameter"):
        mr.predict_instances(img, plain, diameter=20)
    res = mr.predict_instances(img, plain)  # auto: the image's own resolution
    assert res.diameter is None and res.params["scale"] == 1.0 and res.n_objects > 0


def test_paste_scores_agree_with_paste_masks():
    g = torch.Generator().manual_seed(0)
    dets = {
        "boxes": torch.tensor([[2.0, 3.0, 20.0, 18.0], [10.0, 8.0, 30.0, 25.0], [0, 0, 5, 5]]),
        "masks": torch.rand((3, 28, 28), generator=g),
        "scores": torch.tensor([0.9, 0.7, 0.6]),
        "labels": torch.tensor([1, 2, 1]),
        "ids": torch.tensor([1, 2, 3], dtype=torch.int32),
    }
    fg, cls = paste_scores([(0, dets, (0, 0))], 1, (28, 32))
    fg, cls = fg[0].numpy(), cls[0].numpy()
    assert fg.shape == (28, 32) and 0 <= fg.min() and fg.max() <= 0.9 + 1e-6
    # each detection alone: its pasted probability x score, where its mask is above threshold
    for k in range(3):
        one = {key: v[k : k + 1] for key, v in dets.items()}
        lab = paste_masks([(0, one, (0, 0))], 1, (28, 32), 0.5)[0].numpy()
        single, _ = paste_scores([(0, one, (0, 0))], 1, (28, 32))
        single = single[0].numpy()
        inside = lab > 0
        assert (single[inside] > 0.5 * float(dets["scores"][k]) - 1e-5).all()
        assert (fg >= single - 1e-5).all()  # the max over detections
    winner = np.argmax(
        np.stack(
            [
                paste_scores(
                    [(0, {k: v[i : i + 1] for k, v in dets.items()}, (0, 0))], 1, (28, 32)
                )[0][0].numpy()
                for i in range(3)
            ]
        ),
        axis=0,
    )
    covered = fg > 0
    np.testing.assert_array_equal(cls[covered], dets["labels"].numpy()[winner[covered]])
    assert (cls[~covered] == 0).all()


# ---- stacks --------------------------------------------------------------------------------


def test_z_stack_gives_one_id_per_3d_object(model):
    img, truth = synthetic_nuclei((14, 96, 96), n_nuclei=10, radius=(6, 9), seed=5)
    res = mr.predict_instances(img, model, spatial_ndim=3, batch_size=4)
    assert res.labels.shape == truth.shape
    score = match_instances(res.labels, truth, iou_threshold=0.5)
    assert score["tp"] >= 0.8 * score["n_true"], score
    assert score["fp"] <= 2, score
    t = res.table
    for col in ("bbox_z0", "bbox_z1", "centroid_z", "centroid_y", "centroid_x", "score"):
        assert col in t
    np.testing.assert_array_equal(np.sort(t["label"]), np.unique(res.labels)[1:])
    assert set(t["class_name"]) == {"nucleus"}
    lab1 = res.labels == t["label"][0]
    zs = np.nonzero(lab1.any(axis=(1, 2)))[0]
    assert t["bbox_z0"][0] == zs.min() and t["bbox_z1"][0] == zs.max() + 1
    assert t["area"][0] == lab1.sum()
    # plane by plane (a time-lapse) the same stack gets a new ID in every plane
    flat = mr.predict_instances(img, model, diameter=res.diameter, spatial_ndim=2)
    assert flat.n_objects > 3 * score["n_true"]


def test_two_z_stacks_get_unique_ids_and_their_index(model):
    img, _ = synthetic_nuclei((6, 64, 64), n_nuclei=5, radius=(6, 8), seed=8)
    stack = np.stack([img, img])
    res = mr.predict_instances(stack, model, diameter=14, spatial_ndim=3)
    n = int(res.labels[0].max())
    assert n > 0
    np.testing.assert_array_equal(res.labels[1], np.where(res.labels[0] > 0, res.labels[0] + n, 0))
    assert res.table["axis0"].tolist() == [0] * n + [1] * n


def test_time_lapse_keeps_ids_with_link_frames(model):
    img, _ = synthetic_nuclei((80, 80), n_nuclei=10, radius=(6, 9), seed=12)
    # nothing at the edges; 128 x 128: no padding to the network's stride, so the frames differ only
    # by the drift
    img = np.pad(img, 24, constant_values=int(np.median(img)))
    frames = np.stack([np.roll(img, 2 * k, axis=1) for k in range(3)])  # drifting right
    res = mr.predict_instances(frames, model, diameter=W)
    assert len(set(np.unique(res.labels[0])) & set(np.unique(res.labels[1]))) == 1  # just 0
    linked = mr.predict_instances(frames, model, diameter=W, link_frames=True)
    n0 = set(np.unique(linked.labels[0])) - {0}
    t = linked.table
    for k in (1, 2):
        # every object found again where frame 0's object moved to carries frame 0's ID (the
        # detector itself may split or merge a few overlapping nuclei differently per frame)
        moved = np.roll(linked.labels[0], 2 * k, axis=1)
        same = match_instances(linked.labels[k], moved)
        assert same.tp >= 0.8 * len(n0), same
        np.testing.assert_array_equal(same.pairs[:, 0], same.pairs[:, 1])
        assert set(t["label"][t["axis0"] == k]) == set(np.unique(linked.labels[k])) - {0}
    # the same pixels as without linking: only the IDs change
    np.testing.assert_array_equal(linked.labels > 0, res.labels > 0)


def test_blank_images_and_planes(model):
    blank = mr.predict_instances(np.zeros((64, 64), np.uint16), model)  # nothing to measure
    assert blank.n_objects == 0 and blank.diameter == mr.object_diameter(model)
    img, _ = synthetic_nuclei((64, 64), n_nuclei=5, seed=1)
    res = mr.predict_instances(np.stack([img, np.zeros_like(img)]), model, diameter=16)
    assert res.n_objects > 0 and set(res.table["axis0"]) == {0}
    vol = mr.predict_instances(np.zeros((3, 64, 64), np.uint16), model, spatial_ndim=3)
    assert vol.n_objects == 0 and "bbox_z0" in vol.table


def test_stack_arguments_are_checked(model):
    img = np.zeros((64, 64), np.uint16)
    with pytest.raises(ValueError, match="spatial_ndim"):
        mr.predict_instances(img, model, spatial_ndim=4)
    with pytest.raises(ValueError, match="z-stack"):
        mr.predict_instances(img, model, spatial_ndim=3)
    with pytest.raises(ValueError, match="spacing"):
        mr.predict_instances(np.stack([img] * 3), model, spatial_ndim=3, spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        mr.predict_instances(np.stack([img] * 3), model, spatial_ndim=3, spacing=(0, 1, 1))


def test_declared_parameters_reach_widget_and_cli():
    spec = mr.SPEC
    assert spec.supports_volume
    p = spec["diameter"]
    assert p.optional and p.default is None and p.none_label == "auto" and p.min == 2
    assert spec["link_frames"].default is False
