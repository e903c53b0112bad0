"""segment_blockwise: any window predictor, block by block, stitched (numpy predictors here)."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_segkit.algorithms.blockwise import halo_for_diameter, segment_blockwise
from napari_segkit.algorithms.image import Cancelled


def _discs(shape, n, seed, radius=(3, 9)):
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        r = rng.integers(*radius)
        centre = [rng.integers(0, s) for s in shape]
        rr, cc = disk(centre, r, shape=shape)
        img[rr, cc] = 1.0
    return img


class Label:
    """Threshold and connected components: a picklable predictor."""

    def __call__(self, window, index):
        return ndi.label(np.asarray(window) > 0.5)[0]


class ReversedLabel(Label):
    """As Label, numbered backwards (a predictor's IDs mean nothing across windows)."""

    def __call__(self, window, index):
        lab = super().__call__(window, index)
        n = lab.max()
        return np.where(lab > 0, n + 1 - lab, 0)


class Channel1(Label):
    def __call__(self, window, index):
        return super().__call__(window[..., 1], index)


def same_up_to_renumbering(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    assert len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("predict", [Label(), ReversedLabel()])
def test_equals_whole_image_up_to_renumbering(predict):
    img = _discs((300, 400), 60, seed=0)
    ref = ndi.label(img > 0.5)[0]
    lab = segment_blockwise(img, predict, halo=halo_for_diameter(18), chunk=64)
    same_up_to_renumbering(ref, lab.compute())
    assert lab.dtype == np.int32
    assert int(lab.max().compute()) == ref.max()  # consecutive IDs


def test_objects_crossing_borders_get_one_id():
    img = np.zeros((128, 128), np.float32)
    img[28:36, 28:36] = 1  # across the corner of 4 blocks of 32
    img[10:20, 60:70] = 1  # across a vertical border
    img[90:94, 95:99] = 1  # inside one block
    lab = segment_blockwise(img, Label(), halo=20, chunk=32).compute()
    assert len(np.unique(lab[28:36, 28:36])) == 1 and lab[30, 30] > 0
    assert len(np.unique(lab[10:20, 60:70])) == 1
    assert sorted(np.unique(lab)) == [0, 1, 2, 3]


def test_deterministic_whatever_the_scheduler():
    img = _discs((200, 200), 40, seed=1)
    a = segment_blockwise(img, Label(), halo=30, chunk=48).compute()
    b = segment_blockwise(img, Label(), halo=30, chunk=48, scheduler="sync").compute()
    c = segment_blockwise(img, Label(), halo=30, chunk=48, workers=2).compute()
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_distributed_local_cluster():
    distributed = pytest.importorskip("distributed")
    img = _discs((160, 160), 30, seed=2)
    ref = segment_blockwise(img, Label(), halo=30, chunk=48).compute()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lab = segment_blockwise(img, Label(), halo=30, chunk=48, scheduler=client).compute()
    assert np.array_equal(ref, lab)


def test_progress_and_cancel():
    img = _discs((128, 128), 20, seed=3)
    seen = []
    segment_blockwise(img, Label(), halo=20, chunk=32, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (48, 48)  # 16 blocks, three passes
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Cancelled):
        segment_blockwise(img, Label(), halo=20, chunk=32, cancel=cancel, scheduler="sync")


def test_stack_of_planes_unique_ids():
    img = np.stack([_discs((120, 150), 25, seed=s) for s in range(3)])
    lab = segment_blockwise(img, Label(), halo=30, chunk=40).compute()
    assert lab.shape == img.shape
    for t in range(3):
        same_up_to_renumbering(ndi.label(img[t] > 0.5)[0], lab[t])
    ids = [set(np.unique(lab[t])) - {0} for t in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])


def test_volume():
    vol = np.zeros((40, 60, 60), np.float32)
    zz, yy, xx = np.indices(vol.shape)
    for c, r in (((20, 30, 30), 8), ((10, 12, 45), 5), ((30, 48, 14), 6)):
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 1
    lab = segment_blockwise(vol, Label(), halo=20, chunk=16, spatial_ndim=3).compute()
    same_up_to_renumbering(ndi.label(vol > 0.5)[0], lab)
    assert lab.max() == 3


def test_channels_last():
    img = np.stack([np.zeros((100, 100)), _discs((100, 100), 20, seed=4)], axis=-1)
    lab = segment_blockwise(img, Channel1(), halo=30, chunk=32, channels=True).compute()
    same_up_to_renumbering(ndi.label(img[..., 1] > 0.5)[0], lab)


class Smoothed:
    """Classes from a smoothed image: exact on blocks when the halo covers the filter."""

    def __call__(self, window, index):
        s = ndi.uniform_filter(np.asarray(window, np.float32), 9, mode="nearest")
        return (s > 0.3).astype(np.uint8) + (s > 0.7)


def test_semantic_cores_from_windows():
    img = _discs((150, 170), 30, seed=5)
    ref = Smoothed()(img, ())
    lab = segment_blockwise(img, Smoothed(), kind="semantic", halo=8, chunk=32)
    assert lab.dtype == np.uint8
    assert np.array_equal(lab.compute(), ref)


def test_zarr_output_and_overwrite(tmp_path):
    img = _discs((64, 64), 5, seed=6)
    out = tmp_path / "lab.zarr"
    segment_blockwise(img, Label(), halo=16, chunk=32, out=out)
    with pytest.raises(ValueError, match="exists"):
        segment_blockwise(img, Label(), halo=16, chunk=32, out=out)
    lab = segment_blockwise(img, Label(), halo=16, chunk=32, out=out, overwrite=True)
    assert lab.chunks == ((32, 32), (32, 32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "panoptic"}, "kind"),
        ({"halo": -1}, "halo"),
        ({"chunk": 8}, "chunk"),
        ({"iou": 0}, "iou"),
        ({"spatial_ndim": 4}, "spatial_ndim"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_blockwise(np.zeros((32, 32)), Label(), **kwargs)


def test_predictor_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        segment_blockwise(np.zeros((40, 40)), lambda w, i: np.zeros((3, 3), int), chunk=16)


def test_halo_for_diameter():
    assert halo_for_diameter(17) == 42
    with pytest.raises(ValueError, match="diameter"):
        halo_for_diameter(0)
