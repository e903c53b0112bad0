"""Evaluate widget in a real napari viewer: the table, the error layers, clear errors."""

import numpy as np
import pytest

from napari_segkit.widgets import evaluate as evaluate_module
from napari_segkit.widgets._output import KEY
from napari_segkit.widgets.evaluate import EvaluateWidget, evaluate, table_to_csv


@pytest.fixture
def shown(monkeypatch):
    """The messages the widget shows as napari error notifications, in order."""
    messages: list[str] = []
    monkeypatch.setattr(evaluate_module, "show_error", messages.append)
    return messages


@pytest.fixture
def truth():
    t = np.zeros((40, 50), np.int32)
    t[2:12, 3:13] = 1
    t[20:30, 5:15] = 2
    t[5:15, 30:45] = 3
    return t


def _widget(viewer, pred, truth, **pred_kwargs):
    viewer.add_labels(truth, name="truth", **pred_kwargs)
    viewer.add_labels(pred, name="pred", **pred_kwargs)
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.prediction.value = viewer.layers["pred"]
    widget.truth.value = viewer.layers["truth"]
    return widget


def test_perfect_prediction_scores_one_and_has_no_errors(viewer, truth, shown):
    pred = np.where(truth > 0, truth + 10, 0)  # other ids, same objects
    widget = _widget(viewer, pred, truth, scale=(2, 0.5), translate=(5, -3))
    report = widget.run(blocking=True)
    assert not shown
    table = report.table
    n = len(table["iou_threshold"]) - 1  # the last row is the mean
    assert table["ap"][:n] == [1.0] * n and table["f1"][:n] == [1.0] * n
    assert table["iou_threshold"][-1] == "mean 0.5:0.95" and table["ap"][-1] == 1.0
    # the table widget shows the same numbers
    assert widget.table.column_headers[:4] == ("iou_threshold", "tp", "fp", "fn")
    ap_col = widget.table.column_headers.index("ap")
    assert [row[ap_col] for row in widget.table.data.to_list()] == ["1"] * (n + 1)
    assert "AP 1.000" in widget.status.value and "false negative" in widget.status.value
    errors = viewer.layers["pred errors"]
    assert errors._type_string == "labels" and not errors.data.any()
    np.testing.assert_array_equal(errors.scale, (2, 0.5))
    np.testing.assert_array_equal(errors.translate, (5, -3))
    assert errors.metadata[KEY]["params"]["truth"] == "truth"
    points = viewer.layers["pred error centroids"]
    assert len(points.data) == 0 and not widget.next_error.enabled
    np.testing.assert_allclose(widget.plot.series["ap"][1], 1.0)


def test_a_missing_object_is_marked_as_false_negative(viewer, truth, shown):
    pred = truth.copy()
    pred[pred == 2] = 0
    pred[35:38, 40:44] = 9  # and one spurious object
    widget = _widget(viewer, pred, truth, scale=(2, 3))
    report = widget.run(blocking=True)
    assert not shown
    row = report.table["iou_threshold"].index(0.5)
    assert (report.table["tp"][row], report.table["fp"][row], report.table["fn"][row]) == (2, 1, 1)
    assert report.table["ap"][row] == pytest.approx(2 / 4)
    errors = viewer.layers["pred errors"].data
    np.testing.assert_array_equal(errors == 2, truth == 2)
    np.testing.assert_array_equal(errors == 1, pred == 9)
    points = viewer.layers["pred error centroids"]
    assert points.features["kind"].tolist() == ["false positive", "false negative"]
    assert points.features["label"].tolist() == [9, 2]
    np.testing.assert_allclose(points.data, [[36, 41.5], [24.5, 9.5]])
    np.testing.assert_array_equal(points.scale, (2, 3))
    # "Next error" walks through them, in world coordinates
    assert widget.next_error.enabled
    widget.next_error.clicked.emit()
    widget.next_error.clicked.emit()
    np.testing.assert_allclose(viewer.camera.center[-2:], (24.5 * 2, 9.5 * 3))
    assert "false negative (label 2)" in widget.status.value
    # a rerun updates its own layers instead of adding new ones
    n_layers = len(viewer.layers)
    widget.iou_threshold.value = 0.9
    widget.run(blocking=True)
    assert len(viewer.layers) == n_layers


def test_shape_mismatch_is_a_notification_and_the_widget_stays_usable(viewer, truth, shown):
    widget = _widget(viewer, truth[:30], truth)
    assert widget.run(blocking=True) is None
    assert len(shown) == 1
    assert "'pred' has shape (30, 50) but 'truth' has shape (40, 50)" in shown[0]
    assert "error" in widget.status.value and widget.call_button.enabled
    assert "pred errors" not in viewer.layers
    # the button path reports the same, without raising
    widget.call_button.clicked.emit()
    assert len(shown) == 2 and not widget.running
    widget.prediction.value = viewer.layers["truth"]
    assert widget.run(blocking=True).table["ap"][0] == 1.0


def test_run_button_uses_a_worker_then_copy_and_save(viewer, truth, shown, qtbot, tmp_path):
    from qtpy.QtWidgets import QApplication

    pred = truth.copy()
    pred[pred == 3] = 0
    widget = _widget(viewer, pred, truth)
    with pytest.raises(ValueError, match="press Run first"):
        widget.save_csv(tmp_path / "none.csv")
    widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert not shown and widget.report is not None
    text = widget.copy_table()
    assert QApplication.clipboard().text() == text
    lines = text.splitlines()
    assert lines[0] == "iou_threshold,tp,fp,fn,precision,recall,f1,ap,mean_matched_iou"
    assert lines[1] == "0.5,2,0,1,1,0.666667,0.8,0.666667,1"
    assert lines[-1].startswith("mean 0.5:0.95,") and lines[-1].endswith(",0.666667,")
    path = widget.save_csv(tmp_path / "scores.csv")
    assert path.read_text(encoding="utf-8") == text


def test_classes_and_panoptic_modes(viewer, truth, shown):
    pred = truth.copy()
    pred[pred == 3] = 1  # class 3 predicted as class 1
    widget = _widget(viewer, pred, truth)
    widget.mode.value = "classes"

    def shown_in(w):
        return w.native.isVisibleTo(widget.native)

    assert shown_in(widget.ignore_index) and not shown_in(widget.iou_threshold)
    report = widget.run(blocking=True)
    assert report.table["class"][:4] == [0, 1, 2, 3]
    assert report.table["iou"][2] == 1.0 and report.table["iou"][3] == 0.0
    assert report.table["iou"][1] == pytest.approx(100 / 250)
    assert "pred errors" not in viewer.layers  # no objects to match in classes mode
    assert set(widget.plot.series) == {"IoU", "Dice"}

    # panoptic with classes from the layers' features tables
    inst_pred = np.where(pred > 0, truth, 0)  # the same objects; object 3 is called class 1
    viewer.layers["pred"].data = inst_pred
    viewer.layers["pred"].features = {"label": [1, 2, 3], "class_id": [1, 2, 1]}
    viewer.layers["truth"].features = {"label": [1, 2, 3], "class_id": [1, 2, 3]}
    widget.mode.value = "panoptic"
    report = widget.run(blocking=True)
    assert not shown
    assert report.table["class"] == [1, 2, 3, "all (mean)"]
    np.testing.assert_allclose(report.table["pq"][:3], [2 / 3, 1.0, 0.0])
    assert "means over classes" in widget.status.value
    # without features on one layer: class-agnostic
    viewer.layers["truth"].features = {}
    report = widget.run(blocking=True)
    assert report.table["class"] == ["all"] and report.table["pq"] == [1.0]


def test_3d_errors_and_next_error_sets_the_slice(viewer, shown):
    truth = np.zeros((6, 20, 20), np.uint16)
    truth[1:3, 2:8, 2:8] = 1
    truth[4:6, 10:16, 10:16] = 2
    pred = truth.copy()
    pred[pred == 2] = 0
    widget = _widget(viewer, pred, truth, scale=(4, 1, 1))
    widget.run(blocking=True)
    np.testing.assert_allclose(viewer.layers["pred error centroids"].data, [[4.5, 12.5, 12.5]])
    assert widget.go_to_error() == 0
    assert viewer.dims.point[0] == pytest.approx(18, abs=4)  # z = 4.5 * 4, on a slice of 4
    assert not shown


def test_evaluate_and_csv_without_a_viewer():
    t = np.array([[1, 1, 0, 2, 2]])
    r = evaluate(t, np.zeros_like(t))
    assert r.table["fp"][0] == 2 and r.errors.labels.tolist() == [[1, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match="mode must be"):
        evaluate(t, t, mode="nope")
    assert table_to_csv({"a": [float("nan"), 1], "b": ["x"]}) == "a,b\nnan,x\n1,\n"


def test_works_with_the_viewer_proxy_that_plugins_get(viewer, truth, shown):
    from napari.utils._proxies import PublicOnlyProxy

    pred = truth.copy()
    pred[pred == 1] = 0
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(pred, name="pred", scale=(2, 2))
    widget = EvaluateWidget(PublicOnlyProxy(viewer))
    assert widget.prediction.value.name == "pred" and widget.truth.value.name == "truth"
    report = widget.run(blocking=True)
    assert not shown and report.table["fn"][0] == 1
    assert widget.go_to_error() == 0
    np.testing.assert_allclose(viewer.camera.center[-2:], (6.5 * 2, 7.5 * 2))
