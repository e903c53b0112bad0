"""Recipe buttons of the method widgets, large dask layers block by block, the Batch widget."""

import csv

import dask.array as da
import numpy as np
import pytest
import tifffile
import yaml

from napari_segkit.algorithms.edges import edge_segment
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.recipes import load_recipe, save_recipe
from napari_segkit.widgets import _chunked
from napari_segkit.widgets._output import KEY
from napari_segkit.widgets.batch import BatchWidget

WIDGET = "Threshold"


def test_save_and_load_a_recipe(viewer, dock, tmp_path, errors):
    widget = dock()
    texts = [
        w.text for row in widget if hasattr(row, "__iter__") for w in row if hasattr(w, "text")
    ]
    assert "Save recipe..." in texts and "Load recipe..." in texts
    widget.params["method"].value = "local"
    widget.block_size.value = 51
    widget.min_size.value = 7
    widget.stack.value = 2
    path = widget.save_recipe(tmp_path / "mine")
    assert path.name == "mine.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["method"] == "threshold" and data["parameters"]["block_size"] == 51
    assert data["input"]["stack"] == "planes"

    from napari_segkit.widgets.threshold import ThresholdWidget

    other = ThresholdWidget(viewer)  # a second, fresh threshold widget
    assert other.params["method"].value == "otsu"
    recipe = other.load_recipe(path)
    assert other.params["method"].value == "local" and other.block_size.value == 51
    assert other.min_size.value == 7 and other.stack.value == 2
    assert other.parameters() == widget.parameters() == recipe.params

    # a multichannel image: the channel options are saved and loaded too
    viewer.add_image(np.zeros((2, 32, 32), np.float32), name="multi")
    widget.image.value = viewer.layers["multi"]
    widget.channel_axis.value = 0
    widget.channel.value = 1
    data = yaml.safe_load(widget.save_recipe(tmp_path / "multi.yaml").read_text())
    assert data["input"]["channel_axis"] == 0 and data["input"]["channel"] == 1

    kmeans = save_recipe(tmp_path / "k.yaml", "kmeans", {"k": 4})
    with pytest.raises(ValueError, match="is a kmeans recipe, not one for Threshold"):
        other.load_recipe(kmeans)
    assert other.params["method"].value == "local"  # unchanged


def test_a_recipe_from_the_output_layer_reproduces_it(viewer, dock, tmp_path):
    from napari_segkit.recipes import recipe_from_metadata

    img, _ = synthetic_nuclei((64, 64), n_nuclei=6, seed=0)
    viewer.add_image(img, name="cells")
    widget = dock("Edges")
    widget.params["filter"].value = "sobel"
    layer = widget.run(blocking=True)
    recipe = recipe_from_metadata(layer.metadata)
    recipe.save(tmp_path / "edges.yaml")
    np.testing.assert_array_equal(load_recipe(tmp_path / "edges.yaml").run(img).labels, layer.data)


def test_a_large_dask_layer_goes_block_by_block(viewer, dock, monkeypatch):
    img, _ = synthetic_nuclei((160, 150), n_nuclei=30, touching=True, seed=2)
    monkeypatch.setattr(_chunked.settings, "min_pixels", 10_000)
    monkeypatch.setattr(_chunked.settings, "chunk", 48)
    viewer.add_image(da.from_array(img, chunks=64), name="big")
    widget = dock()  # the defaults: touching objects split, block by block too
    out = widget.run(blocking=True)
    assert isinstance(out.data, da.Array)  # lazy, from the zarr array on disk
    expected = threshold_segment(img)
    assert expected.max() > threshold_segment(img, split_touching=False).max()
    got = np.asarray(out.data)
    np.testing.assert_array_equal(got > 0, expected > 0)
    assert len(np.unique(got)) == len(np.unique(expected))
    assert f"{expected.max()} label(s)" in widget.status.value
    assert out.metadata[KEY]["params"]["method"] == "otsu"
    again = widget.run(blocking=True)
    assert again is out  # an unedited own layer is updated, as for in-memory results
    # an image below the size stays in memory
    viewer.add_image(da.from_array(img[:50, :50], chunks=25), name="small")
    widget.image.value = viewer.layers["small"]
    assert isinstance(widget.run(blocking=True).data, np.ndarray)


@pytest.fixture
def batch_folder(tmp_path):
    src, gt, out = tmp_path / "in", tmp_path / "gt", tmp_path / "out"
    src.mkdir()
    gt.mkdir()
    for i in range(3):
        img, truth = synthetic_nuclei((64, 64), n_nuclei=5, seed=i, noise=0.0)
        tifffile.imwrite(src / f"img{i}.tif", img)
        tifffile.imwrite(gt / f"img{i}_mask.tif", truth)
    (src / "zz_broken.tif").write_bytes(b"not an image")
    recipe = save_recipe(tmp_path / "r.yaml", "edges", {"filter": "sobel"})
    return recipe, src, gt, out


def _fill(widget, recipe, src, out, gt=None):
    widget.recipe.value = recipe
    widget.inputs.value = src
    widget.output.value = out
    if gt is not None:
        widget.ground_truth.value = gt


def test_batch_widget_runs_in_a_worker_with_a_status_table(viewer, qtbot, batch_folder):
    recipe, src, gt, out = batch_folder
    widget = BatchWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _fill(widget, recipe, src, out, gt)
    widget.run_button.clicked.emit()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    rows = widget.table.data.to_list()
    assert [r[0] for r in rows] == ["img0.tif", "img1.tif", "img2.tif", "zz_broken.tif"]
    assert [r[1] for r in rows] == ["done", "done", "done", "failed"]
    assert rows[3][5] and float(rows[0][4]) > 0  # the error, a score
    assert widget.progress.value == widget.progress.max == 4
    assert "3 done, 0 already done, 1 failed" in widget.status.value
    expected = edge_segment(tifffile.imread(src / "img1.tif"), filter="sobel")
    np.testing.assert_array_equal(tifffile.imread(out / "img1_labels.tif"), expected)
    with open(out / "batch_scores.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4  # three files and the mean
    # run again: everything finished is skipped
    report = widget.run(blocking=True)
    assert [r.status for r in report.results] == ["skipped"] * 3 + ["failed"]


def test_batch_widget_cancel_and_missing_inputs(viewer, batch_folder, monkeypatch):
    import napari_segkit.widgets.batch as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    recipe, src, _, out = batch_folder
    widget = BatchWidget(viewer)
    assert widget.run(blocking=True) is None
    assert "choose a recipe file" in shown[-1] and "choose a recipe" in widget.status.value
    _fill(widget, recipe, src, out)
    widget._cancel.set()  # as if Cancel was pressed during the first file
    monkeypatch.setattr(widget._cancel, "clear", lambda: None)
    assert widget.run(blocking=True) is None
    assert "cancelled" in widget.status.value
    widget.scheduler.value = "tcp://127.0.0.1:1"
    assert _chunked.settings.scheduler == "tcp://127.0.0.1:1"
    widget.scheduler.value = ""
    assert _chunked.settings.scheduler is None
