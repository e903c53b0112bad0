"""The nothing-lost rule, on a ViewerModel (no Qt), also through napari's PublicOnlyProxy."""

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.utils._proxies import PublicOnlyProxy

from napari_segkit.widgets._output import KEY, checksum, is_own_unedited, placement, publish


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
