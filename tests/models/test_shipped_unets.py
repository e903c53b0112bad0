"""The shipped nuclei U-Nets: their metadata, the CNN method's defaults on them, and the
conversion of first-format checkpoints (CPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import checkpoints, unet, weights  # noqa: E402
from napari_segkit.models.cnn import segment_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, ndim, diameter", [("nuclei", 2, 24.0), ("nuclei_3d", 3, 20.0)])
def test_shipped_metadata(name, ndim, diameter):
    meta = checkpoints.read_metadata(weights.shipped_path("unet", name))
    assert meta["family"] == "unet" and meta["task"] == "instance"
    assert meta["architecture"]["ndim"] == ndim
    assert meta["object_diameter"] == diameter
    assert meta["class_names"] == ["background", "nucleus"]
    assert meta["outputs"]["distance_activation"] == "sigmoid"
    assert meta["normalization"]["percentiles"] == [1.0, 99.8]
    assert 0 < meta["metrics"]["best"] <= 1 and "holdout" in meta["metrics"]
    assert meta["training"]["trained_by"] == "scripts/train_nuclei_unet.py"


def test_segment_cnn_defaults_find_generated_nuclei():
    """The CNN method with every default (the shipped 2D U-Net, diameter estimated)."""
    img, truth = synthetic_nuclei((160, 160), n_nuclei=20, seed=5)
    res = segment_cnn(img, device="cpu")
    assert res.measured["diameter"] > 0
    assert match_instances(res.labels, truth).ap >= 0.9


def test_convert_first_format(tmp_path):
    """A U-Net file of the first training format becomes the one format, facts kept."""
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", ROOT / "scripts" / "convert_checkpoint.py"
    )
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    net = unet.build_unet(depth=1, width=4)
    old = {
        "format": "napari-segkit/unet",
        "family": "unet",
        "architecture": json.dumps(net.config),
        "task": "instance",
        "class_names": json.dumps(["background", "nucleus"]),
        "outputs": json.dumps(unet.INSTANCE_OUTPUTS),
        "normalization": json.dumps({"percentiles": [1.0, 99.8]}),
        "object_diameter": "null",
        "target_diameter": "24.0",
        "training": json.dumps({"steps": 7}),
        "metrics": json.dumps({"best": 0.5}),
        "version": "0.0.1",
        "date": "2020-01-01T00:00:00+00:00",
    }
    src = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(src), metadata=old)
    with pytest.raises(ValueError, match="first-format"):
        conv.read_old(conv.convert(src, tmp_path / "new.safetensors"))
    model = unet.load_unet(tmp_path / "new.safetensors", "cpu", cache=False)
    assert model.object_diameter == 24.0 and model.class_names == ["background", "nucleus"]
    assert model.metadata["training"]["steps"] == 7 and model.metadata["metrics"]["best"] == 0.5
    assert model.metadata["date"] == "2020-01-01T00:00:00+00:00"
    for k, v in net.state_dict().items():
        assert torch.equal(model.module.state_dict()[k], v), k
