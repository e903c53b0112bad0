"""K-means widget in a real napari viewer, docked through the manifest."""

import threading

import numpy as np
from skimage import data

from napari_segkit.algorithms.kmeans import kmeans_segment
from napari_segkit.widgets._output import KEY

WIDGET = "K-means"


def test_button_runs_in_a_worker_and_orders_labels(viewer, dock, qtbot):
    img = np.zeros((40, 40), np.uint8)
    img[:, :15] = 200
    img[:, 15:30] = 30
    img[:, 30:] = 120
    viewer.add_image(img, name="bands", scale=(2, 3))
    widget = dock()
    assert widget.image.value is viewer.layers["bands"]
    widget.k.value = 3
    widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    out = viewer.layers["bands kmeans"]
    assert out._type_string == "labels"
    assert (out.data[0, 0], out.data[0, 20], out.data[0, 35]) == (3, 1, 2)  # 1 = darkest
    np.testing.assert_array_equal(out.scale, (2, 3))
    meta = out.metadata[KEY]
    assert meta["method"] == "kmeans" and meta["params"]["k"] == 3


def test_rgb_labels_and_cluster_color_layer(viewer, dock):
    astro = data.astronaut()[::4, ::4]
    viewer.add_image(astro, name="astro", rgb=True)
    widget = dock()
    widget.k.value = 4
    widget.seed.value = 2
    widget.cluster_colors.value = True
    out = widget.run(blocking=True)
    expected, centers = kmeans_segment(astro, k=4, seed=2, return_centers=True)
    np.testing.assert_array_equal(out.data, expected)
    colors = viewer.layers["astro kmeans cluster colors"]
    assert colors._type_string == "image" and colors.rgb
    assert colors.data.shape == astro.shape and colors.data.dtype == np.uint8
    np.testing.assert_array_equal(colors.data[0, 0], np.rint(centers[expected[0, 0] - 1]))
    # a rerun with the same seed gives the same labels, updating both own layers in place
    n = len(viewer.layers)
    again = widget.run(blocking=True)
    assert again is out and len(viewer.layers) == n
    np.testing.assert_array_equal(again.data, expected)


def test_multichannel_stack_uses_all_channels(viewer, dock):
    stack = np.zeros((2, 3, 16, 16), np.uint16)  # (channel, z, y, x)
    stack[0, :, :, 8:] = 1000
    stack[1, :, 8:, :] = 50
    viewer.add_image(stack, name="mc")
    widget = dock()
    widget.channel_axis.value = 0
    widget.k.value = 4
    widget.cluster_colors.value = True
    out = widget.run(blocking=True)
    assert out.data.shape == (3, 16, 16)
    assert len(np.unique(out.data)) == 4
    np.testing.assert_array_equal(out.data[0], out.data[2])  # one model for the whole stack
    assert viewer.layers["mc kmeans cluster colors"].data.shape == (3, 16, 16)


def test_bad_input_is_a_notification_not_a_crash(viewer, dock, errors):
    img = np.zeros((10, 10), np.uint8)
    img[:5] = 255
    viewer.add_image(img, name="two")
    widget = dock()
    widget.k.value = 5
    assert widget.run(blocking=True) is None
    assert errors and "distinct color" in errors[0]
    assert "error" in widget.status.value
    widget.k.value = 2  # still usable
    out = widget.run(blocking=True)
    assert out is not None and set(np.unique(out.data)) == {1, 2}


def test_two_channels_last_in_a_shown_viewer(make_napari_viewer, qtbot):
    """Issue 9: Run on a float32 (64, 64, 2) image in a shown viewer ended in a RecursionError
    in the Qt event loop. napari shows that image as 64 planes of 64 x 2; segmented plane by
    plane it gave ~200 progress reports; queued while the GUI thread was busy, each was
    delivered inside the previous one's progress-bar update (napari's bar processes Qt events),
    nesting until the recursion limit, and the result was lost."""
    viewer = make_napari_viewer(show=True)
    img = np.random.default_rng(0).random((64, 64, 2)).astype(np.float32)
    viewer.add_image(img, name="two")
    _, widget = viewer.window.add_plugin_dock_widget("napari-segkit", WIDGET)
    assert widget.channel_axis.value == 2  # a short last axis is channels: a 2D image
    widget.cluster_colors.value = True
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert viewer.layers["two kmeans"].data.shape == (64, 64)
    assert viewer.layers["two kmeans cluster colors"].data.shape == (64, 64)

    # read as napari shows it, plane by plane, while the GUI thread is busy: every progress
    # report is queued meanwhile (pytest-qt fails the test on an exception in the event loop)
    widget.channel_axis.value = None
    widget.stack.value = 2
    computed = threading.Event()
    compute = widget.compute

    def compute_then_signal(*args):
        try:
            return compute(*args)
        finally:
            computed.set()

    widget.compute = compute_then_signal
    widget.run()
    assert computed.wait(60)
    qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert viewer.layers["two kmeans"].data.shape == (64, 64, 2)
    assert "error" not in widget.status.value
