"""A real photo the models were never trained on: scikit-image's coins, with the automatic size.

The first release's nuclei Mask R-CNN cut every coin into 5-10 pieces (it only knew the nuclei
sizes of its own generator). With the automatic object size each coin must be one object.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from skimage import data  # noqa: E402

from napari_segkit.algorithms.threshold import threshold_segment  # noqa: E402
from napari_segkit.models.cnn import segment_cnn  # noqa: E402
from napari_segkit.models.maskrcnn import predict_instances  # noqa: E402


@pytest.fixture(scope="module")
def coins():
    """The photo and its coins: Otsu objects away from the top border's background blobs."""
    photo = data.coins()
    ref = threshold_segment(photo, min_size=300)
    areas = np.bincount(ref.ravel())
    top = set(np.unique(ref[:5]).tolist())
    ids = [i for i in range(1, int(ref.max()) + 1) if 500 < areas[i] < 12000 and i not in top]
    assert len(ids) >= 20  # 24 coins, one may touch the border's blobs
    return photo, ref, ids


def _pieces(labels, ref, ids):
    """For each coin, the predicted objects that have most of their pixels inside it."""
    total = np.bincount(labels.ravel())
    out = []
    for i in ids:
        found, counts = np.unique(labels[ref == i], return_counts=True)
        out.append(sum(1 for k, n in zip(found, counts, strict=True) if k and n > total[k] / 2))
    return np.array(out)


@pytest.mark.parametrize("model", ["maskrcnn", "unet"])
def test_each_coin_is_one_object_with_the_automatic_size(coins, model):
    photo, ref, ids = coins
    if model == "maskrcnn":
        res = predict_instances(photo, device="cpu")
        diameter = res.diameter
    else:
        res = segment_cnn(photo, device="cpu")
        diameter = res.measured["diameter"]
    pieces = _pieces(res.labels, ref, ids)
    assert 35 < diameter < 60  # coins are ~45 px wide
    assert (pieces == 1).all(), pieces
