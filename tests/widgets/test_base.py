"""The shared widget machinery: one error policy for every path, measured values, input choices."""

import logging

import numpy as np
import pytest
from skimage import data

from napari_segkit.algorithms.threshold import threshold_value
from napari_segkit.widgets._output import KEY

WIDGET = "Threshold"


def boom(*_args, **_kwargs):
    raise KeyError("boom")


@pytest.mark.parametrize("blocking", [True, False])
def test_unexpected_error_is_one_line_logged_and_the_widget_stays_usable(
    viewer, dock, errors, qtbot, caplog, blocking
):
    from napari_segkit.widgets.threshold import ThresholdWidget

    viewer.add_image(data.coins()[:64, :64], name="coins")
    widget = dock()
    patch = pytest.MonkeyPatch()
    patch.setattr(ThresholdWidget, "compute", boom)
    with caplog.at_level(logging.ERROR, logger="napari_segkit"):
        widget.run(blocking=blocking)
        qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert errors == ["threshold failed: KeyError: 'boom' (details in the log)"]
    assert widget.status.value == "error: KeyError: 'boom' (details in the log)"
    record = next(r for r in caplog.records if r.exc_info)
    assert record.exc_info[0] is KeyError  # the traceback is in the log, not on screen
    assert [layer.name for layer in viewer.layers] == ["coins"]
    patch.undo()
    widget.run(blocking=blocking)
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert len(errors) == 1 and viewer.layers["coins threshold"].data.max() > 0


def test_expected_error_shows_its_message_only(viewer, dock, errors, caplog):
    viewer.add_image(np.zeros((2, 16, 16)), name="two")
    widget = dock()
    widget.channel_axis.value = 0
    widget.channel.value = 5
    with caplog.at_level(logging.ERROR, logger="napari_segkit"):
        assert widget.run(blocking=True) is None
    assert errors == ["threshold failed: channel=5 is out of range: axis 0 has 2 channels (0..1)"]
    assert not [r for r in caplog.records if r.exc_info]  # nothing to log: the user can act


def test_error_while_publishing_in_the_worker_path(viewer, dock, errors, qtbot):
    """The result arrives in a Qt callback: an error there is a notification, not a traceback
    (pytest-qt fails the test on an exception in the Qt event loop)."""
    viewer.add_image(data.coins()[:64, :64], name="coins")
    widget = dock()
    widget._publish = boom
    widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert len(errors) == 1 and "KeyError" in errors[0]
    assert widget.call_button.enabled


def test_measured_threshold_in_status_metadata_and_manual_value(viewer, dock):
    coins = data.coins()
    viewer.add_image(coins, name="coins")
    widget = dock()
    layer = widget.run(blocking=True)
    otsu = threshold_value(coins, "otsu")
    assert layer.metadata[KEY]["measured"] == {"threshold (otsu)": otsu}
    assert f"threshold (otsu): {otsu:.4g}" in widget.status.value
    assert widget.value.value == pytest.approx(otsu)  # "Manual value" starts from it
    widget.params["method"].value = "local"
    assert "measured" not in widget.run(blocking=True).metadata[KEY]  # a threshold per pixel


def test_channel_axis_choices_and_guess(viewer, dock):
    viewer.add_image(np.zeros((3, 64, 64, 2), np.float32), name="last")
    viewer.add_image(np.zeros((2, 64, 64), np.float32), name="first")
    widget = dock()
    widget.image.value = viewer.layers["last"]
    assert list(widget.channel_axis.choices) == [None, 0, 1, 3]
    assert widget.channel_axis.value == 3  # a short last axis: channels
    assert not widget.channel.native.isHidden()
    widget.image.value = viewer.layers["first"]
    assert widget.channel_axis.value is None  # two channels or two planes: the user says
    assert widget.run(blocking=True).data.shape == (2, 64, 64)
