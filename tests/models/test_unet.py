"""U-Net checkpoints and inference on the CPU, with a tiny U-Net trained here on generated nuclei."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")


from napari_segkit.algorithms.image import Cancelled  # noqa: E402
from napari_segkit.algorithms.watershed import _median_diameter  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import unet  # noqa: E402
from napari_segkit.models.checkpoints import save_checkpoint  # noqa: E402
from tiny_unet import TINY_DIAMETER  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tiny models run much faster than on 2 threads that other
    processes compete for (a small CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DIAMETER = TINY_DIAMETER


@pytest.fixture(scope="module")
def tiny_path(tiny_unet_path):
    return tiny_unet_path


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return unet.load_unet(tiny_path, "cpu")


def _fg_iou(a, b):
    return ((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum()


# ---- accuracy ------------------------------------------------------------------------------


def test_tiny_unet_finds_nuclei_on_a_fresh_image(tiny):
    img, truth = synthetic_nuclei((192, 192), n_nuclei=40, radius=(4, 8), touching=True, seed=99)
    res = unet.predict_unet(img, tiny, diameter=DIAMETER)
    assert res.labels.dtype == np.int32 and res.labels.shape == img.shape
    assert _fg_iou(res.labels, truth) >= 0.85
    score = match_instances(res.labels, truth)
    assert score["f1"] >= 0.85, score
    # table: one row per object, IDs 1..N, score = mean interior probability
    t = res.table
    np.testing.assert_array_equal(t["label"], np.arange(1, res.n_objects + 1))
    assert set(np.unique(res.labels)) - {0} == set(t["label"])
    assert ((t["score"] > 0.3) & (t["score"] <= 1)).all()
    assert (t["class_name"] == "nucleus").all()
    i = int(t["label"][0])
    ys, xs = np.nonzero(res.labels == i)
    assert t["area"][0] == ys.size
    assert (t["bbox_y0"][0], t["bbox_y1"][0]) == (ys.min(), ys.max() + 1)
    assert abs(t["centroid_x"][0] - xs.mean()) < 1e-3


def test_semantic_output_of_an_instance_model(tiny):
    img, truth = synthetic_nuclei((128, 128), n_nuclei=15, radius=(4, 8), seed=5)
    res = unet.predict_unet(img, tiny, output="semantic", diameter=DIAMETER)
    assert res.labels.dtype == np.uint8 and set(np.unique(res.labels)) <= {0, 1}
    assert _fg_iou(res.labels, truth) >= 0.85
    assert res.class_names == ["background", "nucleus"]
    assert res.table["area"][1] == (res.labels == 1).sum()


@pytest.mark.parametrize("output", ["semantic", "instance"])
def test_maps_reduced_on_the_device_equal_the_whole_maps(tiny, output):
    """Without probabilities only what the output needs leaves the device (the classes; the
    maps but the background): the same labels and table as from the whole maps."""
    img, _ = synthetic_nuclei((2, 96, 96), n_nuclei=12, radius=(4, 8), seed=6)
    kw = dict(output=output, diameter=DIAMETER)
    whole = unet.predict_unet(img, tiny, return_probabilities=True, **kw)
    reduced = unet.predict_unet(img, tiny, **kw)
    assert reduced.probabilities is None and reduced.labels.max() > 0
    np.testing.assert_array_equal(reduced.labels, whole.labels)
    for k in whole.table:
        np.testing.assert_array_equal(reduced.table[k], whole.table[k])


# ---- tiling ----------------------------------------------------------------------------------


def test_tiles_are_blended_without_seams(tiny):
    img, _ = synthetic_nuclei((200, 180), n_nuclei=50, radius=(4, 8), seed=7)
    whole = unet.predict_unet(img, tiny, diameter=DIAMETER, return_probabilities=True)
    assert whole.probabilities.shape == (200, 180, 4)
    assert whole.probability_names == ["background", "interior", "boundary", "distance"]
    tiled = unet.predict_unet(
        img, tiny, diameter=DIAMETER, tile_size=96, tile_overlap=32, return_probabilities=True
    )
    diff = np.abs(tiled.probabilities - whole.probabilities)
    assert diff.max() < 0.1, diff.max()
    assert diff.mean() < 1e-3
    assert match_instances(tiled.labels, whole.labels)["f1"] >= 0.98
    # without overlap the tile borders show (the check above can fail)
    hard = unet.predict_unet(
        img, tiny, diameter=DIAMETER, tile_size=96, tile_overlap=0, return_probabilities=True
    )
    assert np.abs(hard.probabilities - whole.probabilities).max() > 0.1


def test_stack_is_batched_with_unique_ids(tiny):
    planes = [synthetic_nuclei((96, 96), n_nuclei=8, radius=(4, 8), seed=s)[0] for s in (1, 2, 3)]
    stack = np.stack(planes)
    res = unet.predict_unet(stack, tiny, diameter=DIAMETER, batch_size=2)
    assert res.labels.shape == stack.shape
    offset = 0
    for k, plane in enumerate(planes):
        single = unet.predict_unet(plane, tiny, diameter=DIAMETER)
        expected = np.where(single.labels > 0, single.labels + offset, 0)
        np.testing.assert_array_equal(res.labels[k], expected)
        assert (res.table["axis0"] == k).sum() == single.n_objects
        offset += single.n_objects
    np.testing.assert_array_equal(res.table["label"], np.arange(1, offset + 1))


def test_2d_model_on_a_volume_assembles_objects_in_3d(tiny):
    img, _ = synthetic_nuclei((96, 96), n_nuclei=10, radius=(4, 8), seed=4)
    vol = np.stack([img] * 5)
    flat = unet.predict_unet(img, tiny, diameter=DIAMETER)
    res = unet.predict_unet(vol, tiny, diameter=DIAMETER, spatial_ndim=3)
    assert res.labels.shape == vol.shape
    assert res.n_objects == flat.n_objects  # each nucleus is one tube through the planes
    assert "centroid_z" in res.table and "bbox_z1" in res.table
    for z in range(5):
        assert match_instances(res.labels[z], flat.labels)["f1"] == 1.0


def test_3d_unet_blocks_blend_like_the_whole_volume():
    torch.manual_seed(1)
    net = unet.build_unet(ndim=3, in_channels=1, out_channels=4, depth=2, width=4)
    model = unet.LoadedUNet(
        net.eval(), net.config, "instance", ["background", "object"], {}, None, "random 3d"
    )
    model = unet._ready(model, "cpu")
    vol = np.random.default_rng(0).random((20, 40, 44)).astype(np.float32)
    whole = unet.predict_unet(vol, model, spatial_ndim=3, return_probabilities=True)
    blocks = unet.predict_unet(
        vol, model, spatial_ndim=3, tile_size=24, tile_overlap=8, return_probabilities=True
    )
    assert whole.probabilities.shape == (20, 40, 44, 4)
    diff = np.abs(blocks.probabilities - whole.probabilities)
    assert diff.mean() < 2e-3 and diff.max() < 0.1, (diff.mean(), diff.max())
    with pytest.raises(ValueError, match="3D U-Net"):
        unet.predict_unet(vol, model)  # spatial_ndim=2


def _recording_3d_unet(object_diameter):
    """A random 3D U-Net that records the shape of every batch it sees."""
    torch.manual_seed(1)
    net = unet.build_unet(ndim=3, in_channels=1, out_channels=4, depth=2, width=4)
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return self.net(x)

    model = unet.LoadedUNet(
        Recording().eval(),
        net.config,
        "instance",
        ["background", "object"],
        {},
        object_diameter,
        "recording 3d",
    )
    return unet._ready(model, "cpu"), seen


def test_anisotropic_voxels_are_made_cubic_for_a_3d_unet():
    """z slices 2x further apart than the pixels: the network sees z stretched 2x (and every
    axis scaled by model diameter / diameter), the maps come back on the volume's grid."""
    model, seen = _recording_3d_unet(object_diameter=10)
    vol = np.random.default_rng(0).random((16, 40, 48)).astype(np.float32)
    res = unet.predict_unet(
        vol, model, spatial_ndim=3, diameter=20, spacing=(2.0, 1.0, 1.0), min_size=0
    )
    assert seen == [(16, 20, 24)]  # z: 16 * 2 * 0.5; y, x: * 0.5
    assert res.labels.shape == vol.shape and res.scale == pytest.approx(0.5)
    assert res.params["spacing"] == [2.0, 1.0, 1.0]
    assert any("voxel spacing 2 x 1 x 1" in m for m in res.messages)
    # spacing in any unit (um): only the ratios count; square voxels are the default
    seen.clear()
    unet.predict_unet(vol, model, spatial_ndim=3, diameter=20, spacing=(0.5, 0.25, 0.25))
    assert seen == [(16, 20, 24)]
    seen.clear()
    unet.predict_unet(vol, model, spatial_ndim=3, diameter=20, spacing=(1, 1, 1))
    unet.predict_unet(vol, model, spatial_ndim=3, diameter=20)
    assert seen == [(8, 20, 24), (8, 20, 24)]
    for bad in [(1.0, 1.0), (0, 1, 1), (float("nan"), 1, 1), "z"]:
        with pytest.raises(ValueError, match="spacing"):
            unet.predict_unet(vol, model, spatial_ndim=3, diameter=20, spacing=bad)


def test_min_size_counts_voxels_of_the_given_spacing():
    # a typical 10 px object: pi/6 * 1000 px^3; in voxels 2x longer in z, half as many
    assert unet._min_size(None, 10.0, 3) == 52
    assert unet._min_size(None, 10.0, 3, (2.0, 1.0, 1.0)) == 26
    assert unet._min_size(None, 10.0, 2, (2.0, 1.0, 1.0)) == 7  # planes: y, x only
    assert unet._min_size(7, 10.0, 3, (2.0, 1.0, 1.0)) == 7


# ---- object size -------------------------------------------------------------------------------


def test_diameter_is_estimated_and_the_image_rescaled(tiny):
    img, truth = synthetic_nuclei((192, 192), n_nuclei=25, radius=(9, 16), seed=8)
    res = unet.predict_unet(img, tiny)  # diameter=None: first pass at native scale
    true_d = _median_diameter(truth)
    assert abs(res.diameter - true_d) / true_d < 0.25, (res.diameter, true_d)
    assert res.scale == pytest.approx(DIAMETER / res.diameter)
    assert 0.4 < res.scale < 0.65
    assert any("estimated object diameter" in m for m in res.messages)
    assert match_instances(res.labels, truth)["f1"] >= 0.85
    # the maps are resized back before the watershed: full-resolution labels, smooth outlines
    assert res.labels.shape == img.shape
    given = unet.predict_unet(img, tiny, diameter=2 * DIAMETER)
    assert given.scale == pytest.approx(0.5) and given.diameter == 2 * DIAMETER
    assert match_instances(given.labels, truth)["f1"] >= 0.85


def test_native_scale_is_reused_when_no_rescaling_is_needed(tiny):
    img, truth = synthetic_nuclei((128, 128), n_nuclei=20, radius=(4, 8), seed=21)
    calls = []
    res = unet.predict_unet(img, tiny, progress=lambda d, t: calls.append((d, t)))
    # the classical guess is already consistent with the model: one estimating pass, reused
    assert res.scale == pytest.approx(1.0, abs=0.1)
    assert calls[-1][0] == calls[-1][1] == 1  # one 128 x 128 tile in all, progress complete


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), 1e6, "big"])
def test_bad_diameter_names_itself(tiny, bad):
    with pytest.raises(ValueError, match="diameter"):
        unet.predict_unet(np.zeros((64, 64), np.uint16), tiny, diameter=bad)


# ---- inputs -------------------------------------------------------------------------------------


def test_dtypes_rgb_multichannel_and_dask(tiny):
    img16, truth = synthetic_nuclei((128, 128), n_nuclei=15, radius=(4, 8), seed=31)
    ref = unet.predict_unet(img16, tiny, diameter=DIAMETER).labels
    assert match_instances(ref, truth)["f1"] >= 0.85
    as_float = img16.astype(np.float32) / 40000.0
    as_u8 = np.clip(img16 / 160, 0, 255).astype(np.uint8)
    rgb = np.repeat(as_u8[..., None], 3, axis=-1)
    multi = np.stack([np.zeros_like(img16), img16, img16 // 2])  # channel axis first
    for kwargs, image in (
        ({}, as_float),
        ({}, as_u8),
        ({}, rgb),
        ({"channel_axis": 0, "channel": 1}, multi),
    ):
        out = unet.predict_unet(image, tiny, diameter=DIAMETER, **kwargs).labels
        assert out.shape == img16.shape
        assert match_instances(out, ref)["f1"] >= 0.9, kwargs
    import dask.array as da

    lazy = da.from_array(np.stack([img16, img16]), chunks=(1, 64, 64))
    res = unet.predict_unet(lazy, tiny, diameter=DIAMETER)
    np.testing.assert_array_equal(res.labels[0], ref)
    with pytest.raises(ValueError, match="channel"):
        unet.predict_unet(multi, tiny, channel_axis=0, channel=5)


def test_progress_and_cancel(tiny):
    stack = np.stack([synthetic_nuclei((64, 64), n_nuclei=4, seed=s)[0] for s in range(3)])
    calls = []
    unet.predict_unet(
        stack, tiny, diameter=DIAMETER, batch_size=1, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)

    def stop(done, total):
        if done >= 1:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        unet.predict_unet(stack, tiny, diameter=DIAMETER, batch_size=1, progress=stop)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": "panoptic"}, "output"),
        ({"tile_size": 8}, "tile_size"),
        ({"tile_overlap": 600}, "tile_overlap"),  # not below half the 1024 tile
        ({"batch_size": 0}, "batch_size"),
        ({"seed_threshold": 2}, "seed_threshold"),
        ({"min_size": -1}, "min_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_name_themselves(tiny_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        unet.predict_unet(np.zeros((64, 64), np.uint16), tiny_path, **{"device": "cpu", **kwargs})


# ---- semantic U-Net ------------------------------------------------------------------------------


def test_semantic_unet_classes_and_instances(tmp_path):
    torch.manual_seed(0)
    net = unet.build_unet(in_channels=3, out_channels=3, depth=2, width=4)
    path = unet.save_unet(
        net, tmp_path / "sem.safetensors", task="semantic", class_names=["bg", "a", "b"]
    )
    model = unet.load_unet(path, "cpu")
    assert model.task == "semantic" and model.class_names == ["bg", "a", "b"]
    rgb = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    sem = unet.predict_unet(rgb, model, output="semantic", return_probabilities=True)
    assert sem.labels.dtype == np.uint8 and sem.labels.shape == (64, 80)
    np.testing.assert_array_equal(sem.labels, sem.probabilities.argmax(-1))
    np.testing.assert_allclose(sem.probabilities.sum(-1), 1, atol=1e-4)
    alone = unet.predict_unet(rgb, model, output="semantic")  # classes taken on the device
    np.testing.assert_array_equal(alone.labels, sem.labels)
    inst = unet.predict_unet(rgb, model, output="instance", min_size=0)
    # every region of one class is one object with that class
    for i, c in zip(inst.table["label"], inst.table["class_id"], strict=True):
        assert (sem.labels[inst.labels == i] == c).all()


# ---- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_metadata(tiny, tiny_path, tmp_path):
    img, _ = synthetic_nuclei((96, 96), n_nuclei=10, radius=(4, 8), seed=3)
    ref = unet.predict_unet(img, tiny, diameter=DIAMETER).labels
    assert tiny.object_diameter == DIAMETER and tiny.task == "instance"
    assert tiny.class_names == ["background", "nucleus"]
    assert tiny.normalization["percentiles"] == [1.0, 99.8]
    assert tiny.config == dict(
        ndim=2, in_channels=1, out_channels=4, depth=2, width=8, norm="batch"
    )
    assert tiny.metadata["training"]["steps"] == 60
    assert unet.load_unet(tiny_path, "cpu") is tiny  # cached
    # a plain state dict (.pt, no metadata): architecture read from the tensors
    plain = tmp_path / "plain.pt"
    torch.save(tiny.module.state_dict(), plain)
    loaded = unet.load_unet(plain, "cpu")
    assert loaded.config == tiny.config and loaded.object_diameter is None
    # no metadata: the distance channel is read as the training engine writes it (sigmoid)
    assert loaded.distance_activation == "sigmoid" and tiny.distance_activation == "none"
    loaded.distance_activation = "none"  # read as the tiny model: the same weights, same objects
    np.testing.assert_array_equal(unet.predict_unet(img, loaded).labels, ref)


def test_user_models_by_name(tiny, tmp_path, monkeypatch):
    from napari_segkit.models import weights

    monkeypatch.setenv("NAPARI_SEGKIT_MODELS", str(tmp_path / "mine"))
    unet.save_unet(tiny.module, tmp_path / "mine" / "my_cells.safetensors", object_diameter=20)
    (tmp_path / "mine" / "junk.safetensors").write_bytes(b"not a checkpoint")
    found = weights.list_user_models("unet")
    assert [m.name for m in found] == ["my_cells"]
    assert found[0].metadata["object_diameter"] == 20
    assert weights.list_user_models("maskrcnn") == []
    assert unet.load_unet("my_cells", "cpu").object_diameter == 20
    with pytest.raises(ValueError, match="neither a shipped U-Net"):
        unet.load_unet("nobody", "cpu")


def test_missing_shipped_model_says_so(monkeypatch, tmp_path):
    from napari_segkit.models import weights

    monkeypatch.setitem(
        weights.SHIPPED_MODELS["unet"], "nuclei", tmp_path / "nuclei_unet_2d.safetensors"
    )
    with pytest.raises(ValueError, match="shipped unet model 'nuclei' is missing"):
        unet.load_unet("nuclei", "cpu")


def test_bad_checkpoints_name_the_file(tiny, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="broken.safetensors"):
        unet.load_unet(broken, "cpu")
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(ValueError, match="empty.pt is empty"):
        unet.load_unet(empty, "cpu")
    # metadata says width 16, the tensors are width 8
    meta = unet.unet_metadata({**tiny.config, "width": 16})
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(tiny.module.state_dict(), wrong, meta)
    with pytest.raises(ValueError, match="wrong.safetensors does not match a U-Net"):
        unet.load_unet(wrong, "cpu")
    # another family
    other = tmp_path / "maskrcnn.safetensors"
    save_checkpoint({"x": torch.zeros(2)}, other, {"family": "maskrcnn"})
    with pytest.raises(ValueError, match="maskrcnn.safetensors holds a 'maskrcnn' model"):
        unet.load_unet(other, "cpu")
    # not a U-Net at all
    alien = tmp_path / "alien.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, alien)
    with pytest.raises(ValueError, match="alien.pt is not a U-Net"):
        unet.load_unet(alien, "cpu")


def test_metadata_is_checked():
    cfg = dict(ndim=2, in_channels=1, out_channels=4, depth=2, width=8, norm="batch")
    with pytest.raises(ValueError, match="task"):
        unet.unet_metadata(cfg, task="panoptic")
    with pytest.raises(ValueError, match="object_diameter"):
        unet.unet_metadata(cfg, object_diameter=-1)
    with pytest.raises(ValueError, match="class_names"):
        unet.unet_metadata({**cfg, "out_channels": 3}, task="semantic", class_names=["a"])
    with pytest.raises(ValueError, match="4 output channels"):
        unet.unet_metadata({**cfg, "out_channels": 3}, task="instance")
    assert math.isclose(unet.unet_metadata(cfg, object_diameter=7)["object_diameter"], 7.0)
    with pytest.raises(ValueError, match="distance_threshold"):
        unet.unet_metadata(cfg, outputs={"distance_threshold": 1.5})


def test_watershed_thresholds_come_from_the_checkpoint(tiny, tmp_path, monkeypatch):
    """A checkpoint may recommend its own seed/distance thresholds (chosen for that model on
    validation images); a caller's values win; without a recommendation, 0.5 / 0.4."""
    from napari_segkit.algorithms import watershed as ws
    from napari_segkit.models.training import save_unet_checkpoint

    used = []
    real = ws.instances_from_maps

    def recording(*args, **kwargs):
        used.append((kwargs["seed_threshold"], kwargs["distance_threshold"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ws, "instances_from_maps", recording)
    img, _ = synthetic_nuclei((96, 96), n_nuclei=8, radius=(4, 8), seed=2)
    default = unet.predict_unet(img, tiny, diameter=DIAMETER)
    assert (default.params["seed_threshold"], default.params["distance_threshold"]) == (0.5, 0.4)
    path = save_unet_checkpoint(
        tiny.module,
        tmp_path / "strict.safetensors",
        architecture=tiny.config,
        task="instance",
        class_names=tiny.class_names,
        object_diameter=tiny.object_diameter,
        outputs={**unet.INSTANCE_OUTPUTS, "distance_threshold": 0.7},
    )
    strict = unet.load_unet(path, "cpu", cache=False)
    res = unet.predict_unet(img, strict, diameter=DIAMETER)
    assert res.params["distance_threshold"] == 0.7 and res.params["seed_threshold"] == 0.5
    mine = unet.predict_unet(img, strict, diameter=DIAMETER, distance_threshold=0.4)
    np.testing.assert_array_equal(mine.labels, default.labels)
    assert used == [(0.5, 0.4), (0.5, 0.7), (0.5, 0.4)]  # the watershed got them
    shipped = unet.load_unet("nuclei_3d", "cpu")
    assert shipped.watershed_threshold("distance_threshold") == 0.5


@pytest.mark.gpu
def test_gpu_half_matches_cpu(tiny, tiny_path):
    img, _ = synthetic_nuclei((512, 512), n_nuclei=150, radius=(4, 8), seed=11)
    cpu = unet.predict_unet(img, tiny, diameter=DIAMETER).labels
    gpu = unet.predict_unet(img, tiny_path, device="cuda", half=True, diameter=DIAMETER).labels
    assert match_instances(gpu, cpu)["f1"] >= 0.97


def test_threaded_post_processing_equals_one_thread(tiny, monkeypatch):
    """Planes' watersheds run on CPU threads while the network works; same labels and table."""
    planes = [synthetic_nuclei((96, 96), n_nuclei=8, radius=(4, 8), seed=s)[0] for s in range(5)]
    stack = np.stack(planes)
    monkeypatch.setattr(unet, "n_threads", lambda n: 1)
    one = unet.predict_unet(stack, tiny, diameter=DIAMETER, batch_size=2)
    monkeypatch.setattr(unet, "n_threads", lambda n: 3)
    three = unet.predict_unet(stack, tiny, diameter=DIAMETER, batch_size=2)
    np.testing.assert_array_equal(one.labels, three.labels)
    assert one.labels.max() > 5  # objects in several planes, IDs unique over the stack
    for key in one.table:
        np.testing.assert_array_equal(one.table[key], three.table[key])


@pytest.mark.parametrize(("shape", "sp"), [((3, 3), 2), ((1, 64), 2), ((4, 8, 8), 3)])
def test_images_too_small_for_the_automatic_diameter_still_run(shape, sp):
    """An image smaller than the objects the model works at: segmented at its own scale."""
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    res = unet.predict_unet(
        img, "nuclei_3d" if sp == 3 else "nuclei", spatial_ndim=sp, device="cpu"
    )
    assert res.labels.shape == shape
