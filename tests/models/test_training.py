"""The U-Net training engine on the CPU, with tiny networks and generated images."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.algorithms.image import Cancelled  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.models import training as tr  # noqa: E402
from napari_segkit.models.checkpoints import read_metadata  # noqa: E402
from napari_segkit.models.unet import load_unet  # noqa: E402

TINY = {"depth": 2, "width": 8, "norm": "group"}
FAST = dict(
    architecture=TINY,
    batch_size=4,
    patch_size=48,
    steps_per_epoch=20,
    learning_rate=1e-2,
    device="cpu",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks gain nothing from threads, and threads spin on a shared CI machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def pairs():
    return [
        synthetic_nuclei((96, 96), n_nuclei=12, radius=(5, 8), noise=0.03, seed=s) for s in range(4)
    ]


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    """One short training shared by several tests (4 epochs of 20 steps)."""
    path = tmp_path_factory.mktemp("train") / "model.safetensors"
    epochs = []
    res = tr.train(pairs, epochs=4, checkpoint=path, on_epoch=epochs.append, **FAST)
    return res, epochs


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_improves_the_validation_metric(trained):
    res, epochs = trained
    assert res.metric_name == "AP@0.5"
    assert res.initial_metric is not None and res.initial_metric < 0.2  # an untrained network
    assert res.best_metric >= 0.7 and res.best_metric > res.initial_metric + 0.5
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs == res.history
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    for e in epochs:
        assert set(e) >= {"loss", "val_loss", "metric", "seconds", "best", "best_metric", "lr"}
    best = max(epochs, key=lambda e: (e["metric"], -e["val_loss"]))
    assert res.best_epoch == best["epoch"] and best["best"]


def test_checkpoint_round_trip(trained, pairs):
    res, _ = trained
    meta = read_metadata(res.checkpoint)
    assert meta["family"] == "unet" and meta["task"] == "instance"
    assert meta["architecture"] == {
        "ndim": 2,
        "in_channels": 1,
        "out_channels": 4,
        **TINY,
    }
    assert meta["class_names"] == ["background", "object"]
    assert meta["metrics"]["best"] == pytest.approx(res.best_metric)
    assert meta["metrics"]["best_epoch"] == res.best_epoch
    assert len(meta["training"]["images"]) == 4
    assert meta["training"]["images"][0]["shape"] == [96, 96]
    assert meta["object_diameter"] == pytest.approx(meta["training"]["diameter"])  # no rescaling
    assert meta["outputs"]["distance_activation"] == "sigmoid"
    assert meta["normalization"]["percentiles"] == [1.0, 99.8]
    assert meta["version"] and meta["date"][:2] == "20"
    loaded = load_unet(res.checkpoint, "cpu")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(x).numpy(), res.model(x).numpy(), atol=1e-5)
    # half precision halves the file and loads back as float32
    half = tr.save_unet_checkpoint(
        loaded.module,
        res.checkpoint.with_name("half.safetensors"),
        architecture=loaded.config,
        task="instance",
        class_names=["background", "nucleus"],
        half=True,
    )
    again = load_unet(half, "cpu")
    assert next(again.module.parameters()).dtype == torch.float32
    assert again.class_names == ["background", "nucleus"]


def test_fine_tuning_starts_from_the_checkpoint(trained, pairs, tmp_path):
    res, _ = trained
    out = tmp_path / "tuned.safetensors"
    # a different architecture asked for is ignored: the checkpoint's is kept
    tuned = tr.train(
        pairs, start_from=res.checkpoint, epochs=0, checkpoint=out, **{**FAST, "architecture": {}}
    )
    a, b = _state(res.checkpoint), _state(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert tuned.initial_metric == pytest.approx(res.best_metric)
    meta = read_metadata(out)
    assert meta["training"]["start_from"] == str(res.checkpoint)
    # and one epoch of training moves on from there
    more = tr.train(pairs, start_from=res.checkpoint, epochs=1, checkpoint=out, **FAST)
    assert more.initial_metric == pytest.approx(res.best_metric)
    assert more.best_metric >= more.initial_metric


def test_stop_from_on_epoch_keeps_the_best(pairs, tmp_path):
    stop = threading.Event()
    seen = []

    def on_epoch(entry):
        seen.append(entry)
        if entry["epoch"] == 2:
            stop.set()

    res = tr.train(
        pairs,
        epochs=10,
        checkpoint=tmp_path / "m.safetensors",
        on_epoch=on_epoch,
        stop=stop,
        **{**FAST, "steps_per_epoch": 5},
    )
    assert res.stopped and len(seen) == 2 and len(res.history) == 2
    best = max(e["metric"] for e in seen)  # a new network: the random start never competes
    assert res.best_metric == pytest.approx(best)
    meta = read_metadata(res.checkpoint)
    assert meta["metrics"]["best"] == pytest.approx(best)
    saved = _state(res.checkpoint)
    for k, v in res.model.state_dict().items():
        assert torch.equal(saved[k], v), k


def test_an_exception_mid_epoch_leaves_a_good_checkpoint(pairs, tmp_path):
    path = tmp_path / "m.safetensors"
    total = {}

    def progress(done, n):
        total["n"] = n
        if done == 8:  # in the middle of epoch 2
            raise Cancelled

    kw = {**FAST, "steps_per_epoch": 5}
    with pytest.raises(Cancelled):
        tr.train(pairs, epochs=3, checkpoint=path, progress=progress, **kw)
    assert total["n"] == 15
    meta = read_metadata(path)
    assert meta["metrics"]["best_epoch"] == 1
    assert [e["epoch"] for e in meta["metrics"]["history"]] == [1]
    load_unet(path, "cpu")  # complete and loadable
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_loss_ignores_pixels_outside_the_mask():
    out = torch.randn(2, 4, 8, 8, requires_grad=True)
    classes = torch.randint(0, 3, (2, 8, 8))
    distance = torch.rand(2, 8, 8)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 3:6] = True
    tr.training_loss(out, classes, distance, mask).backward()
    grad = out.grad.abs().sum(1)
    assert (grad[~mask] == 0).all() and (grad[mask] > 0).all()
    # the targets outside the mask do not change the loss
    other = torch.where(mask, classes, (classes + 1) % 3)
    a = tr.training_loss(out, classes, distance, mask)
    b = tr.training_loss(out, other, torch.where(mask, distance, 1 - distance), mask)
    assert float(a.detach()) == float(b.detach())


def test_labels_outside_the_annotation_do_not_influence_training(pairs, tmp_path):
    """Partial annotation: scribbling over the unannotated half changes nothing."""
    img, lab = pairs[0]
    lab = lab.copy()
    lab[:, 40:48] = 0  # no object crosses the edge of the annotated part
    mask = np.zeros(lab.shape, bool)
    mask[:, :40] = True
    noisy = lab.copy()
    noisy[:, 48:] = np.random.default_rng(0).integers(0, 50, size=noisy[:, 48:].shape)
    kw = dict(FAST, epochs=1, steps_per_epoch=5, val_fraction=0, diameter=12.0)
    a = tr.train([(img, lab, mask)], checkpoint=tmp_path / "a.safetensors", **kw)
    b = tr.train([(img, noisy, mask)], checkpoint=tmp_path / "b.safetensors", **kw)
    sa, sb = _state(a.checkpoint), _state(b.checkpoint)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # while labels inside the annotated part do change it
    changed = lab.copy()
    changed[:, :20] = 0
    c = tr.train([(img, changed, mask)], checkpoint=tmp_path / "c.safetensors", **kw)
    sc = _state(c.checkpoint)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_partial_annotation_objects_mode_and_a_single_image(tmp_path):
    """One image, a few objects labelled: objects mode, validation on a part of the image."""
    img, lab = synthetic_nuclei((128, 96), n_nuclei=25, radius=(5, 8), seed=11)
    keep = np.isin(lab, np.unique(lab)[1:12])  # the user corrected 11 of the nuclei
    partial = np.where(keep, lab, 0)
    res = tr.train(
        [(img, partial)],
        annotation="objects",
        epochs=1,
        checkpoint=tmp_path / "p.safetensors",
        **FAST,
    )
    meta = res.metadata["training"]
    assert meta["annotation"] == "objects"
    assert meta["validation_images"] == ["image 0 (validation part)"]
    assert meta["images"][0]["annotated_pixels"] < 0.8 * img.size
    assert res.history[0]["metric"] is not None


def test_semantic_3d_rgb_and_multichannel(tmp_path):
    rng = np.random.default_rng(0)
    img, lab = synthetic_nuclei((64, 64), n_nuclei=8, seed=2)
    classes = np.where(lab > 0, 1 + (lab % 2), 0)
    res = tr.train(
        [(img, classes)] * 2,
        task="semantic",
        epochs=1,
        checkpoint=tmp_path / "s.safetensors",
        **{**FAST, "steps_per_epoch": 2},
    )
    assert res.metric_name == "IoU" and res.model.config["out_channels"] == 3
    assert res.metadata["class_names"] == ["background", "class 1", "class 2"]
    # 3D volumes
    vol, vlab = synthetic_nuclei((24, 40, 40), n_nuclei=6, radius=(4, 7), seed=3)
    res3 = tr.train(
        [(vol, vlab)] * 2,
        ndim=3,
        epochs=1,
        checkpoint=tmp_path / "v.safetensors",
        **{**FAST, "steps_per_epoch": 2, "batch_size": 1, "patch_size": 24},
    )
    assert res3.model.config["ndim"] == 3 and res3.history[0]["metric"] is not None
    # RGB uint8 (channels last) and multichannel float (channels first)
    rgb = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    chk = tr.check_pairs([(rgb, lab)])
    assert chk[0][0].shape == (3, 64, 64)
    multi = rng.random((2, 64, 64), dtype=np.float32)
    assert tr.check_pairs([(multi, lab)])[0][0].shape == (2, 64, 64)
    # a 2D model trained on a time stack: one sample per plane, unlabelled planes dropped
    stack_lab = np.stack([lab, np.zeros_like(lab), lab])
    stack = np.stack([img] * 3)
    assert [p[3] for p in tr.check_pairs([(stack, stack_lab)])] == ["image 0 [0]", "image 0 [2]"]


@pytest.mark.parametrize(
    "pairs, kwargs, match",
    [
        ([(np.zeros((64, 64)), np.zeros((64, 60), int))], {}, "differ"),
        ([(np.zeros((64, 64)), np.zeros((64, 64), int))], {}, "labels are empty"),
        ([(np.zeros((64, 64)), np.full((64, 64), 0.5))], {}, "non-integer"),
        ([(np.zeros((64, 64)), -np.ones((64, 64), int))], {}, "negative"),
        ([(np.zeros((3, 64)), np.ones((3, 64), int))], {}, "too small"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"ndim": 3}, "at least 3"),
        ([], {}, "pairs is empty"),
        ([(np.zeros((64, 64)),)], {}, "expected"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int), np.ones((64, 64)))], {}, "bool"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"model": "sam"}, "model must be"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"epochs": -1}, "epochs"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"val_fraction": 1.0}, "val_fraction"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"annotation": "some"}, "annotation"),
        ([(np.zeros((64, 64)), np.ones((64, 64), int))], {"start_from": "nope.st"}, "nope"),
        (
            [
                (np.zeros((64, 64)), np.ones((64, 64), int)),
                (np.zeros((64, 64, 3)), np.ones((64, 64), int)),
            ],
            {},
            "channel",
        ),
    ],
)
def test_bad_input(pairs, kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        tr.train(pairs, checkpoint=tmp_path / "x.safetensors", **{**FAST, **kwargs})


def test_a_single_object_is_allowed(tmp_path):
    lab = np.zeros((64, 64), int)
    lab[20:32, 20:32] = 1
    img = (lab * 100 + 10).astype(np.uint16)
    res = tr.train(
        [(img, lab)],
        epochs=1,
        checkpoint=tmp_path / "one.safetensors",
        **{**FAST, "steps_per_epoch": 2},
    )
    assert res.metadata["object_diameter"] == pytest.approx(2 * np.sqrt(144 / np.pi))


def test_out_of_memory_gives_a_clear_message(pairs, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "training_loss", oom)
    with pytest.raises(MemoryError, match="batch_size=2"):
        tr.train(pairs, epochs=1, checkpoint=tmp_path / "m.safetensors", val_fraction=0, **FAST)


def test_maskrcnn_fine_tuning_through_the_same_loop(tmp_path):
    from napari_segkit.models import maskrcnn as mr

    pairs = [synthetic_nuclei((128, 128), n_nuclei=15, seed=s) for s in (5, 6)]
    out = tmp_path / "mrcnn.safetensors"
    epochs = []
    res = tr.train(
        pairs,
        model="maskrcnn",
        start_from="nuclei",
        epochs=1,
        steps_per_epoch=1,
        batch_size=1,
        patch_size=128,
        device="cpu",
        checkpoint=out,
        on_epoch=epochs.append,
    )
    # the shipped nuclei model already segments these: fine-tuning never ends below the start
    assert res.initial_metric > 0.5 and res.best_metric >= res.initial_metric
    assert len(epochs) == 1 and epochs[0]["metric_name"] == "AP@0.5"
    assert epochs[0]["val_loss"] is None
    model = mr.load_checkpoint(out, "cpu")
    assert model.class_names == ["background", "nucleus"]  # kept from the start model
    assert model.metadata["extra"]["metrics"]["best"] == pytest.approx(res.best_metric)
    assert mr.predict_instances(pairs[0][0], model, device="cpu").n_objects > 5
    with pytest.raises(ValueError, match="completely"):
        tr.train(pairs, model="maskrcnn", annotation="objects", checkpoint=out)
    with pytest.raises(ValueError, match="2D"):
        tr.train(pairs, model="maskrcnn", ndim=3, checkpoint=out)
