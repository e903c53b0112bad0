"""Mask R-CNN widget in a real napari viewer, docked through the manifest (CPU, shipped model)."""

import re
import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.algorithms.instances import parse_classes  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.widgets._output import KEY  # noqa: E402


def dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-segkit", "Mask R-CNN")
    widget.device.value = "cpu"
    return widget


def test_run_in_a_worker_gives_labels_features_and_boxes(viewer, qtbot):
    img, truth = synthetic_nuclei((192, 192), n_nuclei=30, seed=123)
    viewer.add_image(img, name="nuclei", scale=(0.5, 0.5))
    widget = dock(viewer)
    widget.boxes.value = True
    widget.call_button.clicked.emit()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    out = viewer.layers["nuclei Mask R-CNN"]
    assert out._type_string == "labels"
    np.testing.assert_array_equal(out.scale, (0.5, 0.5))
    assert match_instances(out.data, truth).f1 >= 0.9
    feats = out.features
    n = len(feats)
    assert n == out.data.max() and list(feats["label"]) == list(range(1, n + 1))
    assert {"class_id", "class_name", "score", "area", "bbox_y0", "bbox_x1"} <= set(feats.columns)
    assert (feats["class_name"] == "nucleus").all()
    assert out.selected_label == n + 1  # a hand-painted object gets a new ID
    meta = out.metadata[KEY]
    assert meta["method"] == "Mask R-CNN" and meta["params"]["model"] == "nuclei"
    boxes = viewer.layers["nuclei Mask R-CNN boxes"]
    assert boxes._type_string == "shapes" and len(boxes.data) == n
    assert re.fullmatch(r"nucleus [01]\.\d\d", str(boxes.text.values[0]))


def test_stack_gets_unique_ids(viewer):
    stack = np.stack([synthetic_nuclei((128, 128), n_nuclei=12, seed=s)[0] for s in (1, 2)])
    viewer.add_image(stack, name="stack")
    widget = dock(viewer)
    widget.stack.value = 2  # plane by plane, as a time-lapse
    out = widget.run(blocking=True)
    ids0 = set(np.unique(out.data[0])) - {0}
    ids1 = set(np.unique(out.data[1])) - {0}
    assert ids0 and ids1 and not ids0 & ids1
    assert set(out.features["axis0"]) == {0, 1}


def test_z_stack_is_segmented_in_3d_with_the_layer_scale(viewer):
    img, truth = synthetic_nuclei((12, 80, 80), n_nuclei=6, radius=(6, 9), seed=5)
    viewer.add_image(img[::2], name="zstack", scale=(2.0, 1.0, 1.0))
    widget = dock(viewer)
    assert not widget.stack.native.isHidden()  # Mask R-CNN supports volumes
    out = widget.run(blocking=True)
    assert "z-stack" in widget.status.value and "diameter" in widget.status.value
    assert {"bbox_z0", "bbox_z1", "centroid_z"} <= set(out.features.columns)
    assert match_instances(out.data, truth[::2])["f1"] >= 0.8
    assert out.metadata[KEY]["params"]["spatial_ndim"] == 3


def test_checkpoint_choice_without_a_file_is_a_message(viewer):
    viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    widget = dock(viewer)
    widget.model.value = "file"
    assert not widget.checkpoint.native.isHidden()
    assert widget.run(blocking=True) is None
    assert "choose a checkpoint file" in widget.status.value
    widget.model.value = "nuclei"  # still usable
    assert widget.run(blocking=True) is not None


def test_offline_coco_model_tells_the_user_what_to_do(viewer, hub, monkeypatch, errors, qtbot):
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    widget = dock(viewer)
    widget.model.value = "maskrcnn_resnet50_fpn"
    assert not widget.download.native.isHidden()
    assert widget.run(blocking=True) is None
    assert "segkit weights download maskrcnn_resnet50_fpn" in widget.status.value

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    widget.download_weights(blocking=True)
    assert widget.status.value.startswith("error:")
    assert "download" in errors[-1] and "\n" not in errors[-1] and "Traceback" not in errors[-1]
    # the button's path: the same worker helper as Run, the same error policy
    n = len(errors)
    widget.download.clicked.emit()
    assert widget.running and not widget.call_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert len(errors) == n + 1 and errors[-1] == errors[-2]
    assert widget.call_button.enabled


def test_parse_classes():
    assert parse_classes("") is None
    assert parse_classes("2, 5") == [2, 5]
    assert parse_classes("cat, 1", ["bg", "person", "cat"]) == [2, 1]
    with pytest.raises(ValueError, match="dog"):
        parse_classes("dog", ["bg", "cat"])


def test_cancel_stops_the_worker_and_adds_nothing(viewer, qtbot):
    stack = np.stack([synthetic_nuclei((128, 128), n_nuclei=12, seed=s)[0] for s in range(12)])
    viewer.add_image(stack, name="stack")
    widget = dock(viewer)
    widget.call_button.clicked.emit()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.status.value == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.call_button.enabled  # usable again


def test_a_tiny_first_image_does_not_spoil_the_cached_model(viewer):
    from napari_segkit.models import maskrcnn as mr

    mr.clear_model_cache()
    try:
        viewer.add_image(np.array([[7]], np.uint8), name="tiny")
        widget = dock(viewer)
        assert widget.run(blocking=True).data.shape == (1, 1)
        img, truth = synthetic_nuclei((128, 128), n_nuclei=12, seed=1)
        viewer.add_image(img, name="nuclei")
        widget.image.value = viewer.layers["nuclei"]
        out = widget.run(blocking=True)
        assert match_instances(out.data, truth)["f1"] >= 0.9
    finally:
        mr.clear_model_cache()  # the next tests get a model that is not spoilt


def test_stack_with_an_empty_plane(viewer):
    """A plane without any detection once crashed the per-object table of a stack."""
    nuclei = synthetic_nuclei((96, 96), n_nuclei=8, seed=3)[0]
    stack = np.stack([nuclei, np.zeros_like(nuclei)])
    viewer.add_image(stack, name="stack")
    widget = dock(viewer)
    out = widget.run(blocking=True)
    assert out is not None and out.data.shape == stack.shape
    assert out.data[0].max() > 0 and out.data[1].max() == 0
    # a 3D grey image is a z-stack by default: 3D objects, all of them in the first plane
    assert set(out.features["centroid_z"]) == {0}
    # as planes (a time-lapse), the table says which plane each object is in
    widget.stack.value = 2  # "2D, plane by plane"
    out = widget.run(blocking=True)
    assert out.data[0].max() > 0 and out.data[1].max() == 0
    assert set(out.features["axis0"]) == {0}
