"""Threshold widget in a real napari viewer, docked through the manifest."""

import dask.array as da
import numpy as np
import pytest
from skimage import data

from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.widgets._output import KEY

WIDGET = "Threshold"


def shown(widget) -> bool:
    """Not hidden by the widget's own logic (the test window itself is never shown)."""
    return not widget.native.isHidden()


def test_button_runs_in_a_worker_and_writes_labels(viewer, dock, qtbot):
    viewer.add_image(data.coins(), name="coins", scale=(2, 3), translate=(5, 7))
    widget = dock()
    assert widget.image.value is viewer.layers["coins"]
    widget.call_button.clicked.emit()
    assert widget.running  # off the GUI thread
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    out = viewer.layers["coins threshold"]
    assert out._type_string == "labels"
    expected = threshold_segment(data.coins(), method="otsu", min_size=20, fill_holes=True)
    np.testing.assert_array_equal(out.data, expected)  # the widget's defaults
    np.testing.assert_array_equal(out.scale, (2, 3))
    np.testing.assert_array_equal(out.translate, (5, 7))
    meta = out.metadata[KEY]
    assert meta["method"] == "threshold" and meta["params"]["method"] == "otsu"
    assert meta["version"]


def test_rerun_updates_own_layer_but_never_an_edited_one(viewer, dock):
    viewer.add_image(data.coins(), name="coins")
    widget = dock()
    first = widget.run(blocking=True)
    widget.min_size.value = 100
    second = widget.run(blocking=True)
    assert second is first and len(viewer.layers) == 2  # unedited: updated in place
    assert first.metadata[KEY]["params"]["min_size"] == 100

    # the user paints a correction with the brush
    first.paint((10, 10), 77, refresh=True)
    edited = first.data.copy()
    widget.min_size.value = 0
    third = widget.run(blocking=True)
    assert third is not first and len(viewer.layers) == 3
    np.testing.assert_array_equal(first.data, edited)  # the correction survived
    assert third.name.startswith("coins threshold")

    # a further rerun updates the new (unedited) layer, not the edited one
    fourth = widget.run(blocking=True)
    assert fourth is third and len(viewer.layers) == 3


def test_never_writes_into_a_layer_it_did_not_create(viewer, dock):
    viewer.add_image(data.coins(), name="coins")
    mine = viewer.add_labels(np.zeros(data.coins().shape, np.int32), name="coins threshold")
    widget = dock()
    out = widget.run(blocking=True)
    assert out is not mine and mine.data.max() == 0


def test_rgb_3d_and_multichannel_images(viewer, dock):
    viewer.add_image(data.astronaut(), name="astro", rgb=True)
    widget = dock()
    widget.image.value = viewer.layers["astro"]
    assert not shown(widget.channel_axis) and not shown(widget.stack)  # RGB 2D: nothing to pick
    out = widget.run(blocking=True)
    assert out.data.shape == (512, 512) and out.data.max() > 1

    vol = np.zeros((5, 32, 32), np.uint16)
    vol[1:4, 8:16, 8:16] = 1000
    viewer.add_image(vol, name="vol")
    widget.image.value = viewer.layers["vol"]
    assert shown(widget.stack) and shown(widget.channel_axis) and not shown(widget.channel)
    widget.min_size.value = 0
    widget.stack.value = 3
    out = widget.run(blocking=True)
    assert out.data.shape == vol.shape and out.data.max() == 1  # one 3D object
    widget.stack.value = 2
    out = widget.run(blocking=True)
    assert out.data.max() == 3  # one object per slice, unique IDs

    multi = np.zeros((2, 32, 32), np.float32)  # (C, Y, X), not split into layers
    multi[1, 4:9, 4:9] = 1.0
    viewer.add_image(multi, name="multi", scale=(1, 0.5, 0.5))
    widget.image.value = viewer.layers["multi"]
    widget.channel_axis.value = 0
    assert shown(widget.channel) and not shown(widget.stack)  # (C, Y, X): a 2D image
    widget.channel.value = 1
    out = widget.run(blocking=True)
    assert out.data.shape == (32, 32) and out.data.max() == 1
    np.testing.assert_array_equal(out.scale, (0.5, 0.5))  # channel axis dropped


def test_dask_and_multiscale_layers(viewer, dock):
    img = data.coins()
    viewer.add_image(da.from_array(img, chunks=64), name="lazy")
    viewer.add_image([img, img[::2, ::2]], name="pyramid", multiscale=True)
    widget = dock()
    expected = threshold_segment(img, min_size=20, fill_holes=True)
    for name in ("lazy", "pyramid"):
        widget.image.value = viewer.layers[name]
        out = widget.run(blocking=True)
        np.testing.assert_array_equal(out.data, expected)


@pytest.mark.parametrize("method", ["manual", "cut_points", "multiotsu", "local", "li"])
def test_every_method_from_the_widget(viewer, dock, method):
    viewer.add_image(data.coins(), name="coins")
    widget = dock()
    widget.params["method"].value = method
    widget.output.value = "classes"
    out = widget.run(blocking=True)
    assert out is not None and out.data.max() >= 1
    assert out.metadata[KEY]["params"]["method"] == method


def test_bad_input_is_a_notification_not_a_crash(viewer, dock, qtbot, errors):
    widget = dock()
    assert widget.run(blocking=True) is None  # no image at all
    assert "No image layer" in errors[-1]

    viewer.add_image(np.full((16, 16), np.nan, np.float32), name="nan")
    widget.image.value = viewer.layers["nan"]
    widget.call_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=10000)
    assert "no finite value" in errors[-1]

    viewer.add_image(data.coins(), name="coins")
    widget.image.value = viewer.layers["coins"]
    widget.params["method"].value = "cut_points"
    widget.cut_points.value = "0.5, banana"
    assert widget.run(blocking=True) is None
    assert "banana" in errors[-1]
    widget.cut_points.value = "100"
    assert widget.run(blocking=True) is not None  # the widget stays usable


def test_cancel_stops_a_stack(viewer, dock, qtbot, monkeypatch):
    import napari_segkit.widgets._base as base

    infos = []
    monkeypatch.setattr(base, "show_info", infos.append)
    viewer.add_image(np.random.default_rng(0).random((400, 64, 64)), name="stack")
    widget = dock()
    widget.params["method"].value = "local"
    widget.cancel()  # no-op when idle
    widget.call_button.clicked.emit()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=20000)
    assert widget.status.value == "cancelled"
    assert "stack threshold" not in viewer.layers


def _anisotropic_stack():
    from napari_segkit.datasets import realistic_nuclei_3d

    vol, _, _ = realistic_nuclei_3d((24, 64, 64), config="holdout", seed=7, return_spacing=True)
    return vol


def test_z_stack_uses_the_layer_scale_as_voxel_spacing(viewer, dock, errors):
    vol = _anisotropic_stack()
    viewer.add_image(vol, name="square")  # napari's default scale: cubic voxels
    viewer.add_image(vol, name="long z", scale=(3.0, 1.0, 1.0))
    widget = dock()
    widget.image.value = viewer.layers["square"]
    square = widget.run(blocking=True)
    widget.image.value = viewer.layers["long z"]
    aniso = widget.run(blocking=True)
    assert errors == [] and square is not None and aniso is not None
    assert square.metadata[KEY]["params"]["spatial_ndim"] == 3
    assert "spacing" not in square.metadata[KEY]["params"]
    assert aniso.metadata[KEY]["params"]["spacing"] == [3.0, 1.0, 1.0]
    np.testing.assert_array_equal(aniso.scale, (3, 1, 1))
    np.testing.assert_array_equal(square.data, threshold_segment(vol, spatial_ndim=3))
    expected = threshold_segment(vol, spatial_ndim=3, spacing=(3.0, 1.0, 1.0))
    np.testing.assert_array_equal(aniso.data, expected)
    assert not np.array_equal(aniso.data, square.data)
    # the recipe of the layer carries no spacing (recipes and batch read none)
    from napari_segkit.recipes import recipe_from_metadata

    assert recipe_from_metadata(aniso.metadata).stack == "volume"


def test_large_dask_z_stack_block_by_block_with_the_layer_scale(viewer, dock, errors, monkeypatch):
    from napari_segkit.widgets import _chunked

    monkeypatch.setattr(_chunked.settings, "min_pixels", 10_000)
    monkeypatch.setattr(_chunked.settings, "chunk", 48)
    vol = _anisotropic_stack()
    viewer.add_image(da.from_array(vol, chunks=(8, 32, 32)), name="lazy", scale=(6.0, 2.0, 2.0))
    widget = dock()
    layer = widget.run(blocking=True)
    assert errors == [] and isinstance(layer.data, da.Array) and "from-zarr" in layer.data.name
    assert layer.metadata[KEY]["params"]["spacing"] == [6.0, 2.0, 2.0]
    lab = np.asarray(layer.data)
    expected = threshold_segment(vol, spatial_ndim=3, spacing=(3.0, 1.0, 1.0))
    assert not np.array_equal(expected, threshold_segment(vol, spatial_ndim=3))
    np.testing.assert_array_equal(lab > 0, expected > 0)
    pairs = np.unique(np.stack([lab[lab > 0], expected[lab > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
