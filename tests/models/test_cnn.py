"""CNN segmentation: one entry point, semantic / instance / panoptic output (CPU, tiny models)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_segkit.algorithms import panoptic  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import weights  # noqa: E402
from napari_segkit.models.cnn import _divisor, segment_cnn  # noqa: E402
from tiny_unet import TINY_DIAMETER  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image():
    return synthetic_nuclei((128, 128), n_nuclei=15, radius=(4, 8), seed=11)


def test_three_outputs_of_an_instance_unet_agree(tiny_unet_path, image):
    img, truth = image
    kw = dict(model=str(tiny_unet_path), diameter=TINY_DIAMETER, device="cpu")
    inst = segment_cnn(img, output="instance", **kw)
    sem = segment_cnn(img, output="semantic", **kw)
    pan = segment_cnn(img, output="panoptic", **kw)
    assert match_instances(inst.labels, truth).f1 >= 0.85
    assert set(np.unique(sem.labels)) <= {0, 1}
    classes, instances = panoptic.decode(pan.labels, pan.label_divisor)
    np.testing.assert_array_equal(classes, (inst.labels > 0).astype(classes.dtype))
    assert match_instances(instances, inst.labels).f1 == 1.0  # same objects, renumbered
    assert set(pan.table["class_id"]) == {1} and len(pan.table["label"]) == inst.labels.max()


def test_auto_diameter_is_reported(tiny_unet_path, image):
    res = segment_cnn(image[0], model=str(tiny_unet_path), device="cpu")
    assert "diameter" in res.measured and res.measured["diameter"] > 0


def test_semantic_network_things_and_stuff(hub):
    """A torchvision semantic model (random stand-in weights in the hub cache): panoptic ids
    decode to its classes, and instance output is the connected regions of the thing classes."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    path = weights.cached_weights_path("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    kw = dict(model="lraspp_mobilenet_v3_large", device="cpu", rgb=True)
    sem = segment_cnn(img, output="semantic", **kw)
    pan = segment_cnn(img, output="panoptic", **kw)
    inst = segment_cnn(img, output="instance", thing_classes="1, 2", **kw)
    classes, _ = panoptic.decode(pan.labels, pan.label_divisor)
    np.testing.assert_array_equal(classes, sem.labels)
    np.testing.assert_array_equal(inst.labels > 0, np.isin(sem.labels, [1, 2]))
    assert set(inst.table["class_id"]) <= {1, 2}


def test_missing_weights_say_what_to_do(hub, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(weights.WeightsUnavailableError, match="segkit weights download fcn"):
        segment_cnn(np.zeros((32, 32), np.uint8), model="fcn_resnet50", device="cpu")


def test_bad_parameters():
    with pytest.raises(ValueError, match="output must be one of"):
        segment_cnn(np.zeros((8, 8)), output="everything")
    with pytest.raises(ValueError, match="diameter must be >= 2"):
        segment_cnn(np.zeros((8, 8)), diameter=0.5)


def test_label_divisor_holds_every_object():
    assert _divisor(5) == 1000 and _divisor(999) == 1000 and _divisor(1000) == 10000
