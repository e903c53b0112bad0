"""The CNN widget in a real viewer, on a tiny U-Net trained during the test run."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.algorithms import panoptic  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.widgets._output import KEY  # noqa: E402
from tiny_unet import TINY_DIAMETER  # noqa: E402

WIDGET = "CNN"


def test_instance_semantic_panoptic_from_the_widget(viewer, dock, errors, qtbot, tiny_unet_path):
    img, truth = synthetic_nuclei((128, 128), n_nuclei=15, radius=(4, 8), seed=3)
    viewer.add_image(img, name="nuclei")
    widget = dock()
    widget.model.value = "file"
    widget.checkpoint.value = str(tiny_unet_path)
    widget.device.value = "cpu"
    widget.diameter.value = TINY_DIAMETER
    worker = widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert errors == [] and worker is not None
    inst = viewer.layers["nuclei CNN"]
    instance_labels = np.array(inst.data)
    assert match_instances(instance_labels, truth).f1 >= 0.85
    assert inst.metadata[KEY]["params"]["output"] == "instance"
    assert {"label", "area"} <= set(inst.features.columns)

    widget.output.value = "panoptic"
    layer = widget.run(blocking=True)
    classes, instances = panoptic.decode(
        layer.data, layer.metadata[KEY].get("measured", {}).get("label_divisor", 1000)
    )
    assert set(np.unique(classes)) == {0, 1} and instances.max() == instance_labels.max()

    widget.output.value = "semantic"
    widget.show_probabilities.value = True
    layer = widget.run(blocking=True)
    assert set(np.unique(layer.data)) <= {0, 1}
    assert any(lay.name.startswith("nuclei CNN probabilities") for lay in viewer.layers)


def test_missing_checkpoint_is_a_message(viewer, dock, errors):
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = dock()
    widget.model.value = "file"
    assert widget.run(blocking=True) is None
    assert errors and "checkpoint" in errors[-1]


def test_z_stack_uses_the_layer_scale_as_voxel_spacing(viewer, dock, errors, monkeypatch):
    from napari_segkit.datasets import realistic_nuclei_3d

    infos = []
    monkeypatch.setattr("napari_segkit.widgets._base.show_info", infos.append)
    vol, truth, spacing = realistic_nuclei_3d((24, 64, 64), seed=4, return_spacing=True)
    viewer.add_image(vol, name="zstack", scale=(2.0 * spacing[0], 2.0, 2.0))  # um, say
    widget = dock()
    widget.device.value = "cpu"
    widget.diameter.value = 20.0
    layer = widget.run(blocking=True)
    assert errors == [] and layer is not None
    assert layer.metadata[KEY]["params"]["spatial_ndim"] == 3
    # the shipped 3D U-Net saw the volume with cubic voxels
    assert any(f"voxel spacing {spacing[0]:g} x 1 x 1" in m for m in infos), infos
    assert layer.data.shape == vol.shape and layer.data.max() > 0
