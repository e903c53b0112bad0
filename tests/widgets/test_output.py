"""The nothing-lost rule, on a ViewerModel (no Qt), also through napari's PublicOnlyProxy; the
Qt-free layer builders; the widget modules' doctests."""

import doctest
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.utils._proxies import PublicOnlyProxy

from napari_segkit.widgets._output import (
    KEY,
    boxes_layer,
    checksum,
    cluster_color_layer,
    format_measured,
    is_own_unedited,
    placement,
    publish,
)


@pytest.fixture(params=["plain", "proxy"])
def viewer(request):
    model = ViewerModel()
    return model if request.param == "plain" else PublicOnlyProxy(model)


def test_publish_reuses_only_unedited_own_layers(viewer):
    src = viewer.add_image(np.zeros((4, 4)), name="img")
    a, reused = publish(viewer, np.ones((4, 4), np.int32), source=src, method="m", params={"k": 1})
    assert not reused and a.name == "img m" and a.metadata[KEY]["params"] == {"k": 1}
    b, reused = publish(viewer, np.full((4, 4), 2, np.int32), source=src, method="m", params={})
    assert reused and b is a and (a.data == 2).all()
    a.data[0, 0] = 9  # edited in place, as the brush does
    c, reused = publish(viewer, np.zeros((4, 4), np.int32), source=src, method="m", params={})
    assert not reused and c is not a and a.data[0, 0] == 9
    assert len(viewer.layers) == 3


def test_other_methods_and_sources_are_separate(viewer):
    src = viewer.add_image(np.zeros((4, 4)), name="img")
    a, _ = publish(viewer, np.ones((4, 4), np.int32), source=src, method="m", params={})
    b, reused = publish(viewer, np.ones((4, 4), np.int32), source=src, method="other", params={})
    assert not reused and b is not a


def test_is_own_unedited_and_checksum():
    model = ViewerModel()
    src = model.add_image(np.zeros((3, 3)), name="img")
    foreign = model.add_labels(np.zeros((3, 3), np.int32))
    assert not is_own_unedited(foreign)
    own, _ = publish(model, np.zeros((3, 3), np.int32), source=src, method="m", params={})
    assert is_own_unedited(own)
    own.data = np.ones((3, 3), np.int32)  # data replaced
    assert not is_own_unedited(own)
    assert checksum(np.zeros(3, np.uint8)) != checksum(np.zeros(3, np.int8))


def test_placement_drops_the_channel_axis():
    model = ViewerModel()
    src = model.add_image(np.zeros((2, 5, 5)), scale=(1, 2, 3), translate=(0, 4, 5))
    assert placement(src, 0) == {"scale": [2, 3], "translate": [4, 5]}
    assert placement(src, None)["scale"] == [1, 2, 3]


def test_checksum_of_empty_data():
    assert checksum(np.zeros((0, 2))) == ((0, 2), "float64", 0)
    assert checksum(np.zeros((0, 2))) != checksum(np.zeros((0, 3)))


def test_layer_building_is_qt_free():
    """The layer builders and the nothing-lost rule import without Qt (or napari)."""
    code = (
        "import sys\n"
        "from napari_segkit.widgets import _output\n"
        "assert _output.boxes_layer and _output.cluster_color_layer\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'vispy', 'magicgui'))\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("module", ["_output", "_base"])
def test_widget_module_doctests(module):
    """The widget modules' examples (pytest's doctest collection skips widgets/: Qt)."""
    mod = importlib.import_module(f"napari_segkit.widgets.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_measured_values_in_metadata():
    model = ViewerModel()
    src = model.add_image(np.zeros((3, 3)), name="img")
    measured = {"diameter (auto)": (np.float32(23.5), "px"), "n": np.int64(3)}
    layer, _ = publish(
        model, np.zeros((3, 3), np.int32), source=src, method="m", params={}, measured=measured
    )
    assert layer.metadata[KEY]["measured"] == {"diameter (auto)": [23.5, "px"], "n": 3}
    assert type(layer.metadata[KEY]["measured"]["n"]) is int
    assert format_measured(measured) == "diameter (auto): 23.5 px, n: 3"
    plain, _ = publish(model, np.zeros((3, 3), np.int32), source=src, method="m2", params={})
    assert "measured" not in plain.metadata[KEY]


def test_cluster_color_layer_rgb_grey_and_dtype():
    labels = np.array([[1, 2], [0, 2]], np.uint8)
    centers = np.array([[10.0, 20.0, 30.0], [200.0, 100.0, 0.0]])
    data, kwargs, kind = cluster_color_layer(labels, centers, rgb=True, dtype=np.uint8)
    assert kind == "image" and kwargs["rgb"] and data.dtype == np.uint8
    np.testing.assert_array_equal(data[0, 1], [200, 100, 0])
    np.testing.assert_array_equal(data[1, 0], [0, 0, 0])  # label 0: NaN pixels
    grey, kwargs, _ = cluster_color_layer(labels, centers, rgb=False, dtype=np.float64)
    assert grey.dtype == np.float32 and grey.shape == (2, 2) and not kwargs["rgb"]
    np.testing.assert_allclose(grey[0], [20.0, 100.0])  # the mean over the channels
    assert kwargs["contrast_limits"] == [20.0, 100.0]


def test_boxes_layer_of_a_stack():
    table = {
        "axis0": [0, 1],
        "label": [1, 2],
        "class_name": ["a", "b"],
        "score": [0.5, 0.9],
        "bbox_y0": [1, 2],
        "bbox_x0": [1, 2],
        "bbox_y1": [3, 4],
        "bbox_x1": [5, 6],
    }
    corners, kwargs, kind = boxes_layer(table)
    assert kind == "shapes" and len(corners) == 2
    np.testing.assert_array_equal(corners[1][0], [1, 2, 2])  # plane 1, (y0, x0)
    assert kwargs["features"]["label"] == [1, 2]
