"""Large dask layers through the Mask R-CNN and CNN widgets go block by block (shipped models)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import maskrcnn as mr  # noqa: E402
from napari_segkit.widgets import _chunked  # noqa: E402
from napari_segkit.widgets._output import KEY  # noqa: E402


@pytest.fixture
def big(monkeypatch):
    monkeypatch.setattr(_chunked.settings, "min_pixels", 10_000)
    monkeypatch.setattr(_chunked.settings, "model_chunk", 128)
    img, truth = synthetic_nuclei((256, 256), n_nuclei=40, seed=5)
    return img, truth


def test_maskrcnn_widget_dask_layer_gives_zarr_labels(viewer, dock, errors, big):
    img, truth = big
    viewer.add_image(da.from_array(img, chunks=128), name="big")
    widget = dock("Mask R-CNN")
    widget.device.value = "cpu"
    layer = widget.run(blocking=True)
    assert errors == []
    assert isinstance(layer.data, da.Array) and "from-zarr" in layer.data.name
    lab = np.asarray(layer.data)
    assert match_instances(lab, truth).f1 >= 0.9
    assert match_instances(lab, mr.predict_instances(img, device="cpu").labels).f1 >= 0.9
    assert layer.selected_label == lab.max() + 1
    assert "diameter" in str(layer.metadata[KEY].get("measured", {}))


@pytest.mark.parametrize("output", ["instance", "semantic"])
def test_cnn_widget_dask_layer_gives_zarr_labels(viewer, dock, errors, big, output):
    img, truth = big
    viewer.add_image(da.from_array(img, chunks=128), name="big")
    widget = dock("CNN")
    widget.device.value = "cpu"
    widget.output.value = output
    layer = widget.run(blocking=True)
    assert errors == []
    assert isinstance(layer.data, da.Array) and "from-zarr" in layer.data.name
    lab = np.asarray(layer.data)
    if output == "instance":
        assert match_instances(lab, truth).f1 >= 0.9
    else:
        assert set(np.unique(lab)) == {0, 1}
        assert np.mean((lab > 0) == (truth > 0)) > 0.95


def test_cnn_panoptic_stays_in_memory(viewer, dock, big):
    img, _ = big
    viewer.add_image(da.from_array(img, chunks=128), name="big")
    widget = dock("CNN")
    widget.device.value = "cpu"
    widget.output.value = "panoptic"
    layer = widget.run(blocking=True)
    assert isinstance(layer.data, np.ndarray)
