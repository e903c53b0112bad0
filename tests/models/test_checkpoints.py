"""Checkpoint files and weight locations shared by every model family (CPU, no download)."""

import json

import pytest

torch = pytest.importorskip("torch")

from napari_segkit.cli import main  # noqa: E402
from napari_segkit.models import checkpoints as ckpt  # noqa: E402
from napari_segkit.models import devices, weights  # noqa: E402


def test_round_trip_metadata_and_half(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "a.count": torch.tensor([7], dtype=torch.int64)}
    meta = {
        "family": "unet",
        "architecture": {"depth": 2},
        "class_names": ["background", "nucleus"],
        "normalization": {"percentiles": [1.0, 99.8]},
        "object_diameter": 17.5,
        "training": {"epochs": 3, "note": "x"},
    }
    path = ckpt.save_checkpoint(state, tmp_path / "sub" / "m.safetensors", meta)
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary left
    got, got_meta = ckpt.read_checkpoint(path, family="unet")
    from napari_segkit import __version__

    assert got_meta.pop("version") == __version__
    assert got_meta.pop("date").startswith("20")
    assert got_meta == meta
    assert {k: v for k, v in ckpt.read_metadata(path).items() if k in meta} == meta
    torch.testing.assert_close(got["a.weight"], state["a.weight"])
    assert got["a.count"].dtype == torch.int64
    half = ckpt.save_checkpoint(state, tmp_path / "h.safetensors", meta, half=True)
    h, _ = ckpt.read_checkpoint(half)
    assert h["a.weight"].dtype == torch.float16 and h["a.count"].dtype == torch.int64
    assert half.stat().st_size < path.stat().st_size


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint({"w": torch.ones(2)}, tmp_path / "m.safetensors", {"family": "x"})
    before = path.read_bytes()
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"w": torch.zeros(2)}, path, {"family": "x"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "m.pt"}, "safetensors"),
        ({"metadata": {}}, "family"),
        ({"metadata": {"family": "x", "bad": object()}}, "JSON"),
        ({"state_dict": {}}, "empty"),
    ],
)
def test_save_checks_its_arguments(tmp_path, kwargs, match):
    args = {
        "state_dict": {"w": torch.ones(1)},
        "path": "m.safetensors",
        "metadata": {"family": "x"},
        **kwargs,
    }
    args["path"] = tmp_path / args["path"]
    with pytest.raises(ValueError, match=match):
        ckpt.save_checkpoint(args["state_dict"], args["path"], args["metadata"])


def test_reading_pt_files_safely(tmp_path):
    st = {"w": torch.ones(2)}
    wrapped = tmp_path / "w.pth"
    torch.save(
        {
            "model_state_dict": {f"module.{k}": v for k, v in st.items()},
            "segkit": {"family": "unet"},
        },
        wrapped,
    )
    state, meta = ckpt.read_checkpoint(wrapped)
    assert list(state) == ["w"] and meta == {"family": "unet"}
    with pytest.raises(ValueError, match="w.pth holds a 'unet' model, not a 'maskrcnn' one"):
        ckpt.read_checkpoint(wrapped, family="maskrcnn")
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="list.pt holds a list"):
        ckpt.read_checkpoint(listed)
    notensor = tmp_path / "n.pt"
    torch.save({"a": 1}, notensor)
    with pytest.raises(ValueError, match="n.pt holds no tensors"):
        ckpt.read_checkpoint(notensor)
    odd = tmp_path / "m.ckpt"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown file type"):
        ckpt.read_checkpoint(odd)


class Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": Hostile(marker)}, path)
    with pytest.raises(ValueError, match="evil.pt could not be loaded safely"):
        ckpt.read_checkpoint(path)
    assert not marker.exists()


def test_legacy_maskrcnn_header_is_read():
    meta = ckpt.read_metadata(weights.shipped_path("maskrcnn", "nuclei"))
    assert meta["family"] == "maskrcnn"
    assert meta["class_names"] == ["background", "nucleus"]
    assert meta["normalization"]["percentiles"] == [1.0, 99.8]


def test_british_normalisation_key_is_read(tmp_path):
    """Checkpoints written before the key became US spelling still give their normalization."""
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    old = {"family": "unet", "normalisation": {"percentiles": [2.0, 99.0]}}
    save_file({"w": torch.ones(1)}, str(path), metadata={"segkit": json.dumps(old)})
    meta = ckpt.read_metadata(path)
    assert meta["normalization"] == {"percentiles": [2.0, 99.0]} and "normalisation" not in meta


def test_segkit_header_that_is_not_json(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(1)}, str(path), metadata={"segkit": "{oops"})
    with pytest.raises(ValueError, match="bad.safetensors: its segkit metadata is not JSON"):
        ckpt.read_checkpoint(path)
    save_file({"w": torch.ones(1)}, str(path), metadata={"segkit": json.dumps([1])})
    with pytest.raises(ValueError, match="not a JSON object"):
        ckpt.read_metadata(path)


def test_user_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SEGKIT_MODELS", str(tmp_path / "m"))
    assert weights.user_models_dir() == tmp_path / "m"
    assert weights.list_user_models() == []  # the folder does not exist yet
    assert weights.user_models_dir(create=True).is_dir()
    ckpt.save_checkpoint({"w": torch.ones(1)}, tmp_path / "m" / "b.safetensors", {"family": "unet"})
    ckpt.save_checkpoint({"w": torch.ones(1)}, tmp_path / "m" / "a.safetensors", {"family": "x"})
    assert [(m.name, m.family) for m in weights.list_user_models()] == [("a", "x"), ("b", "unet")]
    assert weights.find_user_model("b", "unet") == tmp_path / "m" / "b.safetensors"
    assert weights.find_user_model("b", "maskrcnn") is None
    monkeypatch.delenv("NAPARI_SEGKIT_MODELS")
    assert weights.user_models_dir().name == "models"


def test_torchvision_names_and_shipped_registry(hub):
    for name in weights.TORCHVISION_WEIGHTS:
        path = weights.cached_weights_path(name)
        assert path.parent == hub / "checkpoints" and path.suffix == ".pth"
    assert len(weights.torchvision_weights("deeplabv3_resnet50").meta["categories"]) == 21
    with pytest.raises(ValueError, match="torchvision weights"):
        weights.torchvision_weights("resnet9000")
    with pytest.raises(ValueError, match="no shipped unet model named 'x'"):
        weights.shipped_path("unet", "x")
    with pytest.raises(ValueError, match="family"):
        weights.shipped_path("yolo", "x")


def test_cli_knows_the_semantic_weights(hub, capsys):
    assert main(["weights", "where", "fcn_resnet50", "lraspp_mobilenet_v3_large"]) == 0
    out = capsys.readouterr().out
    assert "fcn_resnet50" in out and "missing" in out and str(hub) in out


def test_devices():
    assert devices.resolve_device("cpu").type == "cpu"
    assert devices.use_half(devices.resolve_device("cpu"), True) is False
    with pytest.raises(ValueError, match="device"):
        devices.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            devices.resolve_device("cuda")
    devices.configure_cudnn(devices.resolve_device("cpu"))  # a no-op off CUDA
