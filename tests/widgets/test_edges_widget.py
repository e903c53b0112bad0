"""Edges widget in a real napari viewer, docked through the manifest."""

import numpy as np
from skimage import data, draw

from napari_segkit.algorithms.edges import edge_segment, edge_segment_with_map
from napari_segkit.widgets._output import KEY

WIDGET = "Edges"


def test_button_runs_in_a_worker_labels_and_edge_map(viewer, dock, qtbot):
    coins = data.coins()
    viewer.add_image(coins, name="coins", scale=(2, 3))
    widget = dock()
    assert widget.image.value is viewer.layers["coins"]
    widget.call_button.clicked.emit()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    out = viewer.layers["coins edges"]
    assert out._type_string == "labels"
    expected, emap = edge_segment_with_map(coins)
    np.testing.assert_array_equal(out.data, expected)
    assert out.data.max() == 24  # the 24 coins
    np.testing.assert_array_equal(out.scale, (2, 3))
    meta = out.metadata[KEY]
    assert meta["method"] == "edges" and meta["params"]["filter"] == "canny"
    edges = viewer.layers["coins edges edge map"]
    assert edges._type_string == "image"
    np.testing.assert_array_equal(edges.data, emap)
    np.testing.assert_array_equal(edges.scale, (2, 3))


def test_watershed_from_the_widget_splits_touching_disks(viewer, dock):
    img = np.zeros((80, 120), np.uint8)
    for cy, cx in [(40, 35), (40, 63)]:
        rr, cc = draw.disk((cy, cx), 15, shape=img.shape)
        img[rr, cc] = 200
    viewer.add_image(img, name="disks")
    widget = dock()
    widget.show_edge_map.value = False
    assert widget.run(blocking=True).data.max() == 1  # fill: one contour around both
    widget.region_mode.value = "watershed"
    assert not widget.markers.native.isHidden() and widget.filter.native.isHidden()
    layer = widget.run(blocking=True)
    assert layer.data.max() == 2
    np.testing.assert_array_equal(layer.data, edge_segment(img, region_mode="watershed"))
    assert "disks edges edge map" not in viewer.layers  # not asked for
    assert layer.metadata[KEY]["params"]["markers"] == "threshold"


def test_stack_slice_by_slice_and_3d(viewer, dock):
    vol = np.zeros((10, 40, 40), np.float32)
    zz, yy, xx = np.ogrid[:10, :40, :40]
    vol[(zz - 5) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 16] = 1
    viewer.add_image(vol, name="vol")
    widget = dock()
    widget.filter.value = "sobel"
    widget.stack.value = 3
    layer = widget.run(blocking=True)
    assert layer.data.shape == vol.shape and layer.data.max() == 1
    widget.stack.value = 2
    widget.min_size.value = 0
    layer = widget.run(blocking=True)
    assert layer.data.max() > 1  # one ID per slice


def test_bad_input_is_a_notification_not_a_crash(viewer, dock, qtbot, errors):
    widget = dock()
    assert widget.run(blocking=True) is None
    assert "No image layer" in errors[-1]
    viewer.add_image(np.full((16, 16), np.nan, np.float32), name="nan")
    widget.image.value = viewer.layers["nan"]
    widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert "no finite value" in errors[-1]
    widget.low_threshold.value, widget.high_threshold.value = 0.5, 0.2
    viewer.add_image(data.coins(), name="coins")
    widget.image.value = viewer.layers["coins"]
    assert widget.run(blocking=True) is None
    assert "must not exceed" in errors[-1]
    widget.high_threshold.value = 0.6
    assert widget.run(blocking=True) is not None  # still usable
