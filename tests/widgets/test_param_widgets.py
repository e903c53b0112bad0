"""Widgets built from the declarations: same defaults as the CLI, rules, recipes, huge values."""

import numpy as np
import pytest

from napari_segkit import params
from napari_segkit.cli import build_parser, method_parameters

WIDGETS = {
    "threshold": "Threshold",
    "edges": "Edges",
    "kmeans": "K-means",
    "maskrcnn": "Mask R-CNN",
}


@pytest.mark.parametrize("name", list(WIDGETS))
def test_widget_and_cli_defaults_are_the_same(name, viewer, dock, tmp_path):
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = dock(WIDGETS[name])
    spec = params.get(name)
    in_widget = spec.split(widget.params.values())[0]
    args = build_parser().parse_args([name, "in.tif", "-o", str(tmp_path / "o.tif")])
    cli = method_parameters(spec, args)
    if name == "maskrcnn":
        in_widget["model"] = widget.model.value
    assert in_widget == cli


def test_widget_shows_only_the_parameters_that_apply(viewer, dock):
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = dock("Threshold")
    assert widget.block_size.native.isHidden()  # hidden by its rule (the dock is not shown)
    widget.params["method"].value = "local"
    assert not widget.block_size.native.isHidden()
    assert set(widget.parameters()) >= {"block_size", "offset"}
    widget.output.value = "classes"
    assert "min_size" not in widget.parameters()


def test_set_values_round_trip(viewer, dock):
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget = dock("Edges")
    widget.params.set_values({"region_mode": "watershed", "min_distance": 7, "sigma": 2.5})
    got = widget.parameters()
    assert got["region_mode"] == "watershed" and got["min_distance"] == 7 and got["sigma"] == 2.5
    assert "filter" not in got
    with pytest.raises(ValueError, match="unknown parameter"):
        widget.params.set_values({"bogus": 1})


def test_manual_threshold_on_huge_int64_values(viewer, dock, errors, qtbot):
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) * 2**62).astype(np.int64)
    viewer.add_image(img, name="huge")
    widget = dock("Threshold")
    widget.params["method"].value = "manual"
    assert widget.value.value > 1e17  # the image's own units, not clipped to a fixed range
    layer = widget.run(blocking=True)
    assert errors == [] and layer is not None and layer.data.max() >= 1


def test_auto_stack_z_stack_is_3d_time_lapse_is_2d(viewer, dock):
    vol = np.zeros((4, 24, 24), np.uint8)
    vol[1:3, 6:14, 6:14] = 200  # one blob across two planes
    viewer.add_image(vol, name="z")
    viewer.add_image(vol, name="t", axis_labels=("t", "y", "x"))
    widget = dock("Threshold")
    widget.min_size.value = 0
    widget.image.value = viewer.layers["z"]
    assert widget.run(blocking=True).data.max() == 1
    assert "z-stack" in widget.status.value
    widget.image.value = viewer.layers["t"]
    assert widget.run(blocking=True).data.max() == 2
    assert "time" in widget.status.value
