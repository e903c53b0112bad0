"""torchvision semantic models offline: random stand-in weights in a temporary torch hub cache."""

import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.models import semantic as sm  # noqa: E402
from napari_segkit.models import unet, weights  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tiny models run much faster than on 2 threads that other
    processes compete for (a small CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stand_in(architecture, seed=0):
    """A randomly initialised model saved under the pretrained weights' file name in the cache."""
    path = weights.cached_weights_path(architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = sm.build_architecture(architecture, 21, aux_loss=not architecture.startswith("lraspp"))
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def no_network(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)


@pytest.mark.parametrize(
    "architecture", ["fcn_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large"]
)
def test_offline_message_says_what_to_do(hub, no_network, architecture):
    with pytest.raises(weights.WeightsUnavailableError) as info:
        sm.load_semantic(architecture, "cpu")
    msg = str(info.value)
    path = weights.cached_weights_path(architecture)
    assert str(path) in msg and str(hub) in msg
    assert f"segkit weights download {architecture}" in msg
    assert "https://download.pytorch.org/models/" in msg
    assert "local checkpoint file" in msg
    with pytest.raises(weights.WeightsUnavailableError, match="URLError"):
        sm.load_semantic(architecture, "cpu", download=True)
    assert not weights.weights_available(architecture)


def test_stand_in_weights_load_and_predict(hub, no_network):
    path = _stand_in("lraspp_mobilenet_v3_large")
    assert weights.weights_available("lraspp_mobilenet_v3_large")
    model = sm.load_semantic("lraspp_mobilenet_v3_large", "cpu")
    assert sm.load_semantic("lraspp_mobilenet_v3_large", "cpu") is model  # cached
    assert model.num_classes == 21 and model.class_names[15] == "person"
    rgb = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    res = sm.predict_semantic(rgb, model, return_probabilities=True)
    assert res.labels.shape == (70, 90) and res.labels.dtype == np.uint8
    assert res.probabilities.shape == (70, 90, 21)
    np.testing.assert_allclose(res.probabilities.sum(-1), 1, atol=1e-4)
    np.testing.assert_array_equal(res.labels, res.probabilities.argmax(-1))
    assert res.table["area"].sum() == 70 * 90 and res.class_names == model.class_names
    # the same model built by hand gives the same probabilities (ImageNet normalization of /255)
    ref = sm.build_architecture("lraspp_mobilenet_v3_large", 21)
    ref.load_state_dict(torch.load(path, weights_only=True))
    x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)[None]
    mean = torch.tensor(sm.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(sm.IMAGENET_STD)[None, :, None, None]
    x = torch.nn.functional.pad((x - mean) / std, (0, 6, 0, 26), mode="reflect")  # to 96 x 96
    with torch.inference_mode():
        expected = torch.softmax(ref.eval()(x)["out"], 1)[0, :, :70, :90]
    np.testing.assert_allclose(res.probabilities, expected.permute(1, 2, 0).numpy(), atol=1e-4)


def test_aux_head_weights_load(hub, no_network):
    _stand_in("deeplabv3_mobilenet_v3_large", seed=1)  # its weights hold an aux_classifier
    model = sm.load_semantic("deeplabv3_mobilenet_v3_large", "cpu")
    assert model.module.aux_classifier is None  # not run at inference
    assert sm.predict_semantic(np.zeros((32, 32), np.uint8), model).labels.shape == (32, 32)


def test_grey_multichannel_and_stacks(hub, no_network):
    _stand_in("lraspp_mobilenet_v3_large", seed=1)
    model = sm.load_semantic("lraspp_mobilenet_v3_large", "cpu")
    rng = np.random.default_rng(1)
    grey16 = (rng.random((2, 48, 64)) * 4000).astype(np.uint16)
    res = sm.predict_semantic(grey16, model, tile_size=32, tile_overlap=8)
    assert res.labels.shape == (2, 48, 64)
    single = sm.predict_semantic(grey16[1], model, tile_size=32, tile_overlap=8)
    np.testing.assert_array_equal(res.labels[1], single.labels)
    multi = np.stack([grey16[0], grey16[0] // 2], axis=0).astype(np.float32)
    chosen = sm.predict_semantic(multi, model, channel_axis=0, channel=0)
    as_grey = sm.predict_semantic(grey16[0].astype(np.float32), model)
    np.testing.assert_array_equal(chosen.labels, as_grey.labels)


def test_fine_tuned_checkpoint_and_semantic_unet(hub, tmp_path):
    net = sm.build_architecture("lraspp_mobilenet_v3_large", 3)
    path = sm.save_semantic(
        net,
        tmp_path / "mine.safetensors",
        architecture="lraspp_mobilenet_v3_large",
        class_names=["bg", "tissue", "vessel"],
    )
    model = sm.load_semantic(path, "cpu")
    assert isinstance(model, sm.LoadedSemantic) and model.class_names == ["bg", "tissue", "vessel"]
    img = np.random.default_rng(2).random((40, 40)).astype(np.float32)
    assert sm.predict_semantic(img, model).labels.max() <= 2
    # a semantic U-Net checkpoint goes through predict_unet
    u = unet.build_unet(out_channels=3, depth=2, width=4)
    upath = unet.save_unet(
        u, tmp_path / "u.safetensors", task="semantic", class_names=["a", "b", "c"]
    )
    res = sm.predict_semantic(img, upath, device="cpu", return_probabilities=True)
    assert res.class_names == ["a", "b", "c"] and res.probabilities.shape == (40, 40, 3)
    with pytest.raises(ValueError, match="neither a torchvision architecture"):
        sm.load_semantic("deeplab_v9", "cpu")
    with pytest.raises(ValueError, match="spatial_ndim"):
        sm.predict_semantic(np.zeros((4, 32, 32)), model, spatial_ndim=3)


def test_mismatched_cached_weights_name_the_file(hub):
    path = weights.cached_weights_path("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    torch.save(sm.build_architecture("lraspp_mobilenet_v3_large", 5).state_dict(), path)
    with pytest.raises(ValueError, match=path.name):
        sm.load_torchvision("lraspp_mobilenet_v3_large", "cpu")
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        sm.load_torchvision("lraspp_mobilenet_v3_large", "cpu")
