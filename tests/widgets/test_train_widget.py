"""The Train dock widget in a real viewer: a few CPU steps of a tiny U-Net on generated pairs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.models.checkpoints import read_metadata, save_checkpoint  # noqa: E402
from napari_segkit.widgets import train as train_module  # noqa: E402

WIDGET = "Train"


@pytest.fixture(autouse=True)
def setup(tmp_path, monkeypatch):
    """User models in a temporary folder; one torch thread (tiny networks, a shared CI machine)."""
    monkeypatch.setenv("NAPARI_SEGKIT_MODELS", str(tmp_path / "models"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shown(monkeypatch):
    """Error notifications of the Train widget, in order."""
    out = []
    monkeypatch.setattr(train_module, "show_error", out.append)
    return out


def _tiny(widget, epochs=2):
    """A tiny new U-Net and short epochs (the widget's advanced settings)."""
    widget.start_from.value = train_module.SCRATCH
    widget.epochs.value = epochs
    widget.steps.value = 3
    widget.batch_size.value = 2
    widget.patch_size.value = 32
    widget.depth_box.value = 1
    widget.width_box.value = 4
    widget.learning_rate.value = 0.01
    widget.device.value = "cpu"


def _add_pairs(viewer, n=2, shape=(64, 64)):
    for i in range(n):
        img, lab = synthetic_nuclei(shape, n_nuclei=6, radius=(5, 8), seed=i)
        viewer.add_image(img, name=f"img{i}")
        viewer.add_labels(lab, name=f"lab{i}")


def test_train_pairs_plot_metadata_and_the_cnn_widget_lists_it(viewer, dock, qtbot, shown):
    cnn = dock("CNN")
    maskrcnn = dock("Mask R-CNN")
    _add_pairs(viewer)
    w = dock()
    assert w.object_size.value.startswith("median diameter")
    w.add_pair_of("img0", "lab0")
    w.add_pair_of("img1", "lab1")
    assert len(w.pair_list.choices) == 2
    _tiny(w)
    w.model_name.value = "my_nuclei"
    worker = w.train()
    assert worker is not None and w.running
    qtbot.waitUntil(lambda: not w.running, timeout=60000)
    assert shown == []
    path = w.model_path
    assert path.name == "my_nuclei.safetensors" and path.is_file()
    assert [e["epoch"] for e in w.history] == [1, 2]
    series = w.plot.series
    assert len(series["training loss"][0]) == 2 and len(series["validation AP@0.5"][0]) == 2
    meta = read_metadata(path)
    assert meta["family"] == "unet" and meta["architecture"]["depth"] == 1
    assert [i["name"] for i in meta["training"]["images"]] == ["img0", "img1"]
    # the CNN widget (docked before training) lists the new model at once; Mask R-CNN does not
    assert "my_nuclei" in cnn.model.choices
    assert "my_nuclei" not in maskrcnn.model.choices
    text = w.info.value
    assert "U-Net 2D, depth 1, width 4" in text and "img0 (64x64)" in text
    assert "object size" in text and "validation AP@0.5" in text and "version" in text
    assert w.status.value.startswith("done: my_nuclei saved")
    # never overwrite silently: the same name again is refused...
    w.model_name.value = "my_nuclei"
    assert w.train() is None and "exists" in shown[-1]
    # ... and the default name moved on
    w._name_edited = False
    w._suggest_name()
    assert w.model_name.value.startswith("img0_") and w.model_name.value != "my_nuclei"
    # a user Mask R-CNN appears in the Mask R-CNN widget's list when models change
    save_checkpoint(
        {"w": torch.ones(1)}, path.with_name("my_mrcnn.safetensors"), {"family": "maskrcnn"}
    )
    from napari_segkit.widgets.cnn import models_changed

    models_changed()
    assert "my_mrcnn" in maskrcnn.model.choices


def test_stop_keeps_the_best(viewer, dock, qtbot, shown):
    _add_pairs(viewer)
    w = dock()
    w.add_pair_of("img0", "lab0")
    w.add_pair_of("img1", "lab1")
    _tiny(w, epochs=200)
    w.model_name.value = "stopped"
    w.train()
    viewer.layers.remove("lab1")  # the data were read when training started
    qtbot.waitUntil(lambda: len(w.history) >= 2, timeout=60000)
    w.stop()
    qtbot.waitUntil(lambda: not w.running, timeout=60000)
    res = w.result
    assert shown == [] and res.stopped and len(res.history) in (2, 3)
    best = max(e["metric"] for e in res.history)
    assert res.best_metric == pytest.approx(best)
    assert read_metadata(w.model_path)["metrics"]["best"] == pytest.approx(best)
    assert w.status.value.startswith("stopped: stopped saved")


def test_region_partial_annotation_semantic_and_folder(viewer, dock, tmp_path, shown):
    import tifffile

    img, lab = synthetic_nuclei((64, 64), n_nuclei=8, radius=(5, 8), seed=3)
    viewer.add_image(img, name="img")
    viewer.add_labels(np.where(lab > 0, 1 + lab % 2, 0), name="classes")
    viewer.add_shapes([np.array([[0, 0], [0, 40], [63, 40], [63, 0]])], name="done here")
    w = dock()
    _tiny(w, epochs=1)
    w.image.value, w.labels_layer.value, w.region.value = "img", "classes", "done here"
    w.task.value = "semantic"
    w.val_fraction.value = 0.0
    w.model_name.value = "classes_model"
    res = w.train(blocking=True)
    assert shown == [] and res is not None
    meta = read_metadata(w.model_path)
    assert meta["task"] == "semantic" and meta["class_names"] == [
        "background",
        "class 1",
        "class 2",
    ]
    assert meta["training"]["images"][0]["annotated_pixels"] == 64 * 41  # the rectangle only
    # a folder of image/label files, partial annotation
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        im, la = synthetic_nuclei((64, 64), n_nuclei=6, radius=(5, 8), seed=10 + i)
        tifffile.imwrite(folder / f"cells{i}.tif", im)
        tifffile.imwrite(folder / f"cells{i}_labels.tif", la)
    w.source.value = "folder"
    w.folder.value = folder
    w.task.value = "instance"
    w.annotation_mode.value = "objects"
    w.model_name.value = "from_folder"
    res = w.train(blocking=True)
    assert shown == [] and res is not None
    meta = read_metadata(w.model_path)
    assert meta["training"]["annotation"] == "objects"
    assert [i["name"] for i in meta["training"]["images"]] == ["cells0.tif", "cells1.tif"]


def test_bad_inputs_are_notifications(viewer, dock, shown):
    w = dock()
    _tiny(w, epochs=1)
    assert w.train() is None and "no data" in shown[-1]
    img, lab = synthetic_nuclei((64, 64), n_nuclei=6, seed=0)
    viewer.add_image(img, name="img")
    viewer.add_labels(lab[:, :60], name="narrow")
    viewer.add_labels(np.zeros_like(lab), name="empty")
    cases = [("narrow", "different shapes"), ("empty", "labels are empty")]
    for labels, match in cases:
        w.image.value, w.labels_layer.value = "img", labels
        assert w.train() is None and match in shown[-1], shown[-1]
        assert w.status.value.startswith("error:") and not w.running
    w.labels_layer.value = "empty"
    viewer.layers["empty"].data = lab
    w.device.value = "cuda"
    if not torch.cuda.is_available():
        assert w.train() is None and "CUDA is not available" in shown[-1]
    w.device.value = "cpu"
    w.model_name.value = "bad/name"
    assert w.train() is None and "file name" in shown[-1]
    from napari_segkit.models.weights import user_models_dir

    assert not list(user_models_dir().glob("*.safetensors"))  # nothing was written


def test_fine_tune_the_shipped_nuclei_unet(viewer, dock, shown):
    """The default start: the shipped 2D nuclei U-Net keeps its architecture and object size."""
    _add_pairs(viewer, n=2, shape=(64, 64))
    w = dock()
    assert w.start_from.value == "nuclei"
    w.add_pair_of("img0", "lab0")
    w.add_pair_of("img1", "lab1")
    w.epochs.value, w.steps.value, w.batch_size.value = 1, 2, 2
    w.patch_size.value, w.device.value = 64, "cpu"
    w.model_name.value = "tuned"
    res = w.train(blocking=True)
    assert shown == [] and res is not None
    meta = read_metadata(w.model_path)
    assert meta["training"]["start_from"] == "nuclei"
    assert meta["architecture"]["depth"] == 4 and meta["object_diameter"] == 24.0
    assert res.initial_metric is not None and res.best_metric >= res.initial_metric
    assert "before training" in w.info.value


def test_out_of_memory_suggests_a_smaller_batch(viewer, dock, shown, monkeypatch):
    from napari_segkit.models import training

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training, "training_loss", oom)
    _add_pairs(viewer, n=1)
    w = dock()
    _tiny(w, epochs=1)
    w.val_fraction.value = 0.0
    w.model_name.value = "oom"
    assert w.train(blocking=True) is None
    assert "out of memory" in shown[-1] and "batch_size=1" in shown[-1]
    assert w.train_button.enabled and not w.running


def test_widget_defaults_are_the_engines(dock):
    """The widget trains with train()'s defaults (the fine-tuning benchmark relies on it)."""
    import inspect

    from napari_segkit.models import training

    defaults = {k: p.default for k, p in inspect.signature(training.train).parameters.items()}
    w = dock()
    kw = w.train_kwargs()
    for key in ("epochs", "steps_per_epoch", "batch_size", "patch_size", "learning_rate"):
        assert kw[key] == defaults[key], key
    for key in ("val_fraction", "annotation", "task", "model", "device", "max_seconds"):
        assert kw[key] == defaults[key], key
    assert kw["start_from"] == "nuclei" and "architecture" not in kw
