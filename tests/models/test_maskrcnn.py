"""Mask R-CNN on the CPU with the shipped small nuclei model (no download)."""

import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.algorithms.image import Cancelled  # noqa: E402
from napari_segkit.algorithms.instances import (  # noqa: E402
    instance_areas,
    paint_instances,
    tile_plan,
)
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import devices, weights  # noqa: E402
from napari_segkit.models import maskrcnn as mr  # noqa: E402
from napari_segkit.models.paste import paste_masks  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return mr.load_model("nuclei", "cpu")


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, napari_segkit, napari_segkit.models, napari_segkit.models.maskrcnn, "
        "napari_segkit.models.devices, napari_segkit.models.weights, "
        "napari_segkit.models.checkpoints, napari_segkit.models.paste, "
        "napari_segkit.models.normalize, napari_segkit.models.unet, "
        "napari_segkit.algorithms.instances, napari_segkit.cli, napari_segkit.widgets.maskrcnn; "
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_shipped_model_metadata(model):
    assert model.architecture == "maskrcnn_resnet10_fpn_small"
    assert model.class_names == ["background", "nucleus"]
    assert model.normalization["percentiles"] == [1.0, 99.8]
    assert mr.SHIPPED_MODELS["nuclei"].stat().st_size < 10e6
    assert mr.load_model("nuclei", "cpu") is model  # cached in memory


#: the shipped nuclei model's working object diameter (pixels): no rescaling
W = 20.0


def test_detects_nuclei_on_a_fresh_image(model):
    img, truth = synthetic_nuclei(
        (256, 256), n_nuclei=60, radius=(6, 12), seed=2024, background_gradient=0.2
    )
    res = mr.predict_instances(img, model)
    score = match_instances(res.labels, truth, iou_threshold=0.5)
    assert score["f1"] >= 0.9, score
    assert score.mean_matched_iou >= 0.8, score


def test_crowded_touching_image_beyond_a_cap_of_100(model):
    img, truth = synthetic_nuclei((512, 512), n_nuclei=260, radius=(6, 12), touching=True, seed=77)
    res = mr.predict_instances(img, model, diameter=W)  # the model's own size: no rescaling
    assert res.params["max_detections"] == 256  # follows the area, not a fixed 100
    assert res.n_objects > 200
    score = match_instances(res.labels, truth, iou_threshold=0.5)
    assert score["f1"] >= 0.8, score
    capped = mr.predict_instances(img, model, diameter=W, max_detections=10)
    assert capped.n_objects == 10
    np.testing.assert_allclose(capped.table["score"], res.table["score"][:10], atol=1e-5)


def test_label_ids_follow_the_score_and_the_table_matches(model):
    img, _ = synthetic_nuclei((192, 192), n_nuclei=30, touching=True, seed=5)
    res = mr.predict_instances(img, model, score_threshold=0.3)
    t = res.table
    n = res.n_objects
    assert n > 10
    np.testing.assert_array_equal(t["label"], np.arange(1, n + 1))
    assert (np.diff(t["score"]) <= 0).all()  # ID 1 is the highest score
    assert (t["class_id"] == 1).all() and set(t["class_name"]) == {"nucleus"}
    np.testing.assert_array_equal(t["area"], instance_areas(res.labels, n))
    assert res.labels.dtype == np.int32 and res.labels.shape == img.shape
    # no instance silently dropped: those without pixels are listed and keep a row
    np.testing.assert_array_equal(res.empty_labels, t["label"][t["area"] == 0])
    assert set(np.unique(res.labels)) - {0} == set(t["label"][t["area"] > 0])
    for i in t["label"][t["area"] > 0][:10]:
        ys, xs = np.nonzero(res.labels == i)
        row = i - 1
        assert t["bbox_y0"][row] - 1.5 <= ys.min() and ys.max() <= t["bbox_y1"][row] + 1.5
        assert t["bbox_x0"][row] - 1.5 <= xs.min() and xs.max() <= t["bbox_x1"][row] + 1.5


def test_paste_masks_equals_numpy_painting():
    """Full masks on integer boxes cover exactly the box; overlaps go to the lowest ID."""
    rng = np.random.default_rng(0)
    h, w = 40, 50
    boxes, crops = [], []
    for _ in range(12):
        y0, x0 = rng.integers(-5, 35), rng.integers(-5, 45)
        bh, bw = rng.integers(3, 20, size=2)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
        crops.append(np.ones((bh, bw), bool))
    scores = rng.random(12)
    order = np.argsort(-scores, kind="stable")
    dets = {
        "boxes": torch.tensor(np.array(boxes)[order], dtype=torch.float32),
        "masks": torch.ones((12, 28, 28)),
        "ids": torch.arange(1, 13, dtype=torch.int32),
    }
    pasted = paste_masks([(0, dets, (0, 0))], 1, (h, w))[0].numpy()
    offsets = [(b[1], b[0]) for b in boxes]
    expected, _ = paint_instances(crops, scores, (h, w), offsets=offsets)
    np.testing.assert_array_equal(pasted, expected)
    # a tiny chunk budget (many chunks) and a region offset give the same pixels
    region = paste_masks([(0, dets, (10, 20))], 1, (30, 30), budget=64)[0].numpy()
    np.testing.assert_array_equal(region, expected[10:40, 20:50])


def objects_on_core_borders(truth, plan):
    """Ground-truth IDs whose pixels straddle a border between two tile cores."""
    out = set()
    for t in plan:
        cy0, cx0, cy1, cx1 = t.core
        for i in np.unique(truth):
            if i == 0:
                continue
            ys, xs = np.nonzero(truth == i)
            inside = (ys >= cy0) & (ys < cy1) & (xs >= cx0) & (xs < cx1)
            if inside.any() and not inside.all():
                out.add(int(i))
    return out


def test_tiling_merges_objects_on_tile_borders(model):
    img, truth = synthetic_nuclei((320, 320), n_nuclei=90, radius=(6, 11), seed=31)
    plan = tile_plan(img.shape, 160, 40)
    assert len(plan) == 9
    straddling = objects_on_core_borders(truth, plan)
    assert len(straddling) >= 10
    whole = mr.predict_instances(img, model, diameter=W)
    tiled = mr.predict_instances(
        img, model, diameter=W, tile_size=160, tile_overlap=40, batch_size=4
    )
    # the same objects, one ID each, as without tiles
    assert match_instances(tiled.labels, whole.labels)["f1"] >= 0.97
    score = match_instances(tiled.labels, truth)
    assert score["f1"] >= 0.9, score
    for i in straddling:
        gt = truth == i
        ids, counts = np.unique(tiled.labels[gt], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        best = ids[np.argmax(counts)]
        iou = (gt & (tiled.labels == best)).sum() / (gt | (tiled.labels == best)).sum()
        assert iou >= 0.6, (i, iou)  # not cut in two at the border
        others = counts[ids != best]
        assert (others < 0.2 * gt.sum()).all(), (i, ids, counts)  # not duplicated
    np.testing.assert_array_equal(
        np.unique(tiled.table["label"]), np.arange(1, tiled.n_objects + 1)
    )


def test_stack_ids_are_unique_and_planes_match_single_runs(model):
    planes = [synthetic_nuclei((160, 160), n_nuclei=25, seed=s)[0] for s in (1, 2, 3)]
    stack = np.stack(planes)
    res = mr.predict_instances(stack, model, diameter=18, batch_size=2)  # batches straddle planes
    assert res.labels.shape == stack.shape
    offset = 0
    for k, plane in enumerate(planes):
        single = mr.predict_instances(plane, model, diameter=18)
        ids = set(np.unique(res.labels[k])) - {0}
        assert min(ids) > offset
        expected = np.where(single.labels > 0, single.labels + offset, 0)
        np.testing.assert_array_equal(res.labels[k], expected)
        rows = res.table["axis0"] == k
        assert rows.sum() == single.n_objects
        offset += single.n_objects
    np.testing.assert_array_equal(res.table["label"], np.arange(1, offset + 1))


def test_input_dtypes_and_dask_give_the_same_objects(model):
    img16, _ = synthetic_nuclei((160, 160), n_nuclei=25, seed=8)
    ref = mr.predict_instances(img16, model).labels
    as_float = img16.astype(np.float32) / 40000.0
    assert match_instances(mr.predict_instances(as_float, model).labels, ref)["f1"] >= 0.95
    import dask.array as da

    lazy = da.from_array(np.stack([img16, img16]), chunks=(1, 80, 80))
    res = mr.predict_instances(lazy, model)
    n = int(ref.max())
    np.testing.assert_array_equal(res.labels[0], ref)
    np.testing.assert_array_equal(res.labels[1], np.where(ref > 0, ref + n, 0))
    rgb = np.repeat(np.clip(img16 / 200, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    assert match_instances(mr.predict_instances(rgb, model).labels, ref)["f1"] >= 0.9


def test_class_filter_progress_and_cancel(model):
    img, _ = synthetic_nuclei((128, 128), n_nuclei=10, seed=4)
    assert mr.predict_instances(img, model, classes=[1]).n_objects > 0
    with pytest.raises(ValueError, match="classes"):
        mr.predict_instances(img, model, classes=[3])
    calls = []
    stack = np.stack([img] * 3)
    mr.predict_instances(stack, model, batch_size=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)

    def stop(done, total):
        if done >= 1:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        mr.predict_instances(stack, model, batch_size=1, progress=stop)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"mask_threshold": -0.1}, "mask_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"batch_size": 0}, "batch_size"),
        ({"tile_size": 8}, "tile_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mr.predict_instances(np.zeros((64, 64), np.uint16), "nuclei", **{"device": "cpu", **kwargs})


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        devices.resolve_device("cuda")


# ---- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_round_trips(model, tmp_path):
    img, _ = synthetic_nuclei((128, 128), n_nuclei=12, seed=9)
    # the saved copies record no object_diameter: they work at the image's own resolution, as
    # the shipped model does for diameter=W (its own size)
    ref = mr.predict_instances(img, model, diameter=W).labels
    st = model.module.state_dict()
    safe = mr.save_checkpoint(
        model.module,
        tmp_path / "m.safetensors",
        architecture=model.architecture,
        class_names=["background", "nucleus"],
        normalization=model.normalization,
    )
    wrapped = tmp_path / "m.pt"
    torch.save(
        {
            "state_dict": st,
            "metadata": {"class_names": ["nucleus"], "normalization": model.normalization},
        },
        wrapped,
    )
    plain = tmp_path / "plain.pth"
    torch.save({f"model.{k}": v for k, v in st.items()}, plain)  # a Lightning-style prefix
    for path in (safe, wrapped, plain):
        loaded = mr.load_checkpoint(path, "cpu")
        assert loaded.architecture == "maskrcnn_resnet10_fpn_small"
        labels = mr.predict_instances(img, loaded).labels
        if path is plain:  # no metadata: default normalization, names inferred
            assert loaded.class_names == ["background", "class 1"]
        else:
            assert loaded.class_names == ["background", "nucleus"]
            np.testing.assert_array_equal(labels, ref)


class Hostile:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Hostile(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="could not be loaded safely"):
        mr.load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="evil.pt"):
        mr.load_model(path, "cpu")
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_corrupt_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match=f"broken{suffix}"):
        mr.load_checkpoint(path)
    with pytest.raises(ValueError, match="does not exist"):
        mr.load_checkpoint(tmp_path / "missing.safetensors")


def test_mismatched_checkpoint_is_a_clear_error(model, tmp_path):
    st = dict(model.module.state_dict())
    path = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    st2 = {k: v.clone() for k, v in st.items() if not k.startswith("roi_heads.mask_head")}
    save_file(st2, str(path), metadata={"architecture": "maskrcnn_resnet10_fpn_small"})
    with pytest.raises(ValueError, match="does not match"):
        mr.load_checkpoint(path)
    save_file({k: v.clone() for k, v in st.items()}, str(path), metadata={"num_classes": "5"})
    with pytest.raises(ValueError, match="5 classes"):
        mr.load_checkpoint(path)
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a Mask R-CNN"):
        mr.load_checkpoint(path)


# ---- COCO weights offline -------------------------------------------------------------------


def test_offline_without_cached_weights_says_what_to_do(hub):
    with pytest.raises(weights.WeightsUnavailableError) as info:
        mr.load_model("maskrcnn_resnet50_fpn", "cpu")
    msg = str(info.value)
    path = weights.cached_weights_path("maskrcnn_resnet50_fpn")
    assert str(path) in msg and str(hub) in msg
    assert "segkit weights download maskrcnn_resnet50_fpn" in msg
    assert "https://download.pytorch.org/models/" in msg
    assert "checkpoint file" in msg


def test_failed_download_is_reported(hub, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(weights.WeightsUnavailableError, match="URLError"):
        weights.download_weights("maskrcnn_resnet50_fpn_v2")
    assert not weights.weights_available("maskrcnn_resnet50_fpn_v2")


def test_cached_coco_weights_load_without_network(hub, monkeypatch):
    """A file in the hub cache is used as is (here: random weights saved under the COCO name)."""
    path = weights.cached_weights_path("maskrcnn_resnet50_fpn")
    path.parent.mkdir(parents=True)
    torch.save(mr.build_architecture("maskrcnn_resnet50_fpn", 91).state_dict(), path)

    def no_network(*args, **kwargs):
        raise AssertionError("tried the network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    loaded = mr.load_coco("maskrcnn_resnet50_fpn", "cpu")
    assert loaded.num_classes == 91 and loaded.class_names[1] == "person"
    assert Path(weights.download_weights("maskrcnn_resnet50_fpn")) == path


@pytest.mark.gpu
def test_gpu_half_matches_cpu(model):
    img, _ = synthetic_nuclei((512, 512), n_nuclei=150, seed=11)
    cpu = mr.predict_instances(img, model).labels
    gpu = mr.predict_instances(img, "nuclei", device="cuda", half=True).labels
    assert match_instances(gpu, cpu)["f1"] >= 0.97
