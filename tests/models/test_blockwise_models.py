"""Mask R-CNN and the CNN block by block (models/blockwise.py): the shipped models on CPU."""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
da = pytest.importorskip("dask.array")

from napari_segkit.algorithms.chunked import blockwise_problem  # noqa: E402
from napari_segkit.datasets import synthetic_nuclei  # noqa: E402
from napari_segkit.metrics import match_instances  # noqa: E402
from napari_segkit.models import maskrcnn as mr  # noqa: E402
from napari_segkit.models.blockwise import (  # noqa: E402
    BlockPredictor,
    pin_workers,
    segment_model_blockwise,
    worker_device,
)
from napari_segkit.models.cnn import segment_cnn  # noqa: E402
from napari_segkit.models.normalize import fixed_range, normalization_range  # noqa: E402

CPU = {"device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nuclei():
    img, _ = synthetic_nuclei((512, 512), n_nuclei=130, seed=1)
    return img


def lazy(img):
    return da.from_array(img, chunks=256)


def test_unet_instances_match_in_memory(nuclei):
    ref = segment_cnn(nuclei, **CPU)
    res = segment_model_blockwise(lazy(nuclei), "cnn", CPU, chunk=200)
    lab = res.labels.compute()
    assert res.kind == "instance" and lab.dtype == np.int32
    assert res.diameter == pytest.approx(ref.measured["diameter"], abs=0.1)
    assert res.halo == int(np.ceil(2 * res.diameter)) + 8
    assert match_instances(lab, ref.labels).f1 >= 0.95
    assert int(lab.max()) == len(np.unique(lab)) - 1  # consecutive IDs


def test_maskrcnn_matches_in_memory():
    # windows of about the model's tile (the default chunk): Mask R-CNN's proposals per image
    # are fixed, so much smaller windows than its tiles change what it detects
    img, truth = synthetic_nuclei((768, 768), n_nuclei=300, seed=1)
    params = {**CPU, "tile_size": 384}
    ref = mr.predict_instances(img, **params)
    res = segment_model_blockwise(lazy(img), "maskrcnn", params)
    assert res.diameter == pytest.approx(ref.diameter, rel=0.02)
    assert 384 < res.chunk < 768  # 2 x 2 blocks
    lab = res.labels.compute()
    assert match_instances(lab, ref.labels).f1 >= 0.95
    assert match_instances(lab, truth).f1 >= match_instances(ref.labels, truth).f1 - 0.01


def test_cnn_semantic_cores(nuclei):
    params = {**CPU, "output": "semantic", "diameter": 17.0}
    ref = segment_cnn(nuclei, **params).labels
    res = segment_model_blockwise(lazy(nuclei), "cnn", params, chunk=200)
    lab = res.labels.compute()
    assert res.kind == "semantic" and lab.dtype == np.uint8
    assert np.mean(lab == ref) > 0.995


def test_stack_ids_unique_over_planes():
    img = np.stack([synthetic_nuclei((256, 256), n_nuclei=30, seed=s)[0] for s in range(2)])
    res = segment_model_blockwise(img, "cnn", {**CPU, "diameter": 17.0}, chunk=128)
    lab = res.labels.compute()
    assert lab.shape == img.shape
    a, b = set(np.unique(lab[0])) - {0}, set(np.unique(lab[1])) - {0}
    assert len(a) > 20 and len(b) > 20 and not a & b


def test_distributed_cluster_equals_threads():
    distributed = pytest.importorskip("distributed")
    img, _ = synthetic_nuclei((320, 320), n_nuclei=50, seed=2)
    params = {**CPU, "diameter": 17.0}
    ref = segment_model_blockwise(img, "cnn", params, chunk=160).labels.compute()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert pin_workers(client) == ({} if not torch.cuda.is_available() else pin_workers(client))
        lab = segment_model_blockwise(img, "cnn", params, chunk=160, scheduler=client)
        assert np.array_equal(lab.labels.compute(), ref)


def test_predictor_pickles_without_its_model():
    pred = BlockPredictor("cnn", {"model": "nuclei", "device": "cpu", "diameter": 17.0})
    pred(np.zeros((64, 64, 1), np.float32), ())  # loads (and caches) the model
    again = pickle.loads(pickle.dumps(pred))
    assert len(pickle.dumps(pred)) < 10_000
    assert again(np.zeros((64, 64, 1), np.float32), ()).shape == (64, 64)


def test_worker_device_outside_a_worker():
    assert worker_device("cpu") == torch.device("cpu")


def test_what_is_not_blockwise():
    assert "link_frames" in blockwise_problem("maskrcnn", {"link_frames": True})
    assert "panoptic" in blockwise_problem("cnn", {"output": "panoptic"})
    assert blockwise_problem("maskrcnn", {}) is None and blockwise_problem("cnn", {}) is None
    with pytest.raises(ValueError, match="panoptic"):
        segment_model_blockwise(np.zeros((64, 64)), "cnn", {"output": "panoptic"})


def test_fixed_normalization_range():
    img = np.linspace(0, 1000, 100 * 100).reshape(100, 100, 1)
    norm = fixed_range(img)
    lo, scale = normalization_range(img[:10], norm)  # a dark corner: scaled as the whole
    lo_all, scale_all = normalization_range(img)
    assert np.allclose(lo, lo_all) and np.allclose(scale, scale_all)
    with pytest.raises(ValueError, match="channel"):
        normalization_range(np.zeros((4, 4, 3)), norm)


@pytest.mark.gpu
def test_one_worker_per_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("distributed")
    from napari_segkit.models.blockwise import gpu_cluster

    img, _ = synthetic_nuclei((1024, 1024), n_nuclei=300, seed=3)
    params = {"device": "auto", "diameter": 17.0}
    ref = segment_model_blockwise(img, "cnn", params, chunk=384).labels.compute()
    client = gpu_cluster()
    try:
        gpus = pin_workers(client)
        assert sorted(gpus.values()) == list(range(torch.cuda.device_count()))
        lab = segment_model_blockwise(img, "cnn", params, chunk=384, scheduler=client)
        assert match_instances(lab.labels.compute(), ref).f1 >= 0.99
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def test_unet_3d_with_voxel_spacing_matches_in_memory():
    from napari_segkit.datasets import realistic_nuclei_3d

    vol, _, spacing = realistic_nuclei_3d((24, 96, 96), seed=3, return_spacing=True)
    params = {**CPU, "diameter": 16.0}
    ref = segment_cnn(vol, spatial_ndim=3, spacing=spacing, **params)
    res = segment_model_blockwise(
        lazy(vol), "cnn", params, chunk=64, spatial_ndim=3, spacing=spacing
    )
    lab = np.asarray(res.labels)
    assert res.chunk == 64 and ref.labels.max() > 10 and lab.shape == vol.shape  # 3 x 3 blocks
    assert match_instances(lab, ref.labels).f1 >= 0.9
    with pytest.raises(ValueError, match="spacing"):
        segment_model_blockwise(lazy(vol), "cnn", params, spatial_ndim=3, spacing=(1, 1))


def test_maskrcnn_z_stack_matches_in_memory():
    """A 2D model on a z-stack block by block: per-plane detections built into 3D objects in each
    window, the windows stitched; against the same call in memory."""
    img, _ = synthetic_nuclei((12, 192, 192), n_nuclei=30, radius=(6, 9), seed=5)
    vol = img[::2]  # slices 2 px apart
    params = {**CPU, "diameter": 16.0}
    ref = mr.predict_instances(vol, spatial_ndim=3, spacing=(2.0, 1.0, 1.0), **params)
    res = segment_model_blockwise(
        lazy(vol), "maskrcnn", params, chunk=64, spatial_ndim=3, spacing=(2.0, 1.0, 1.0)
    )
    lab = np.asarray(res.labels)
    assert res.chunk == 64 and ref.labels.max() > 10 and lab.shape == vol.shape  # 3 x 3 blocks
    assert match_instances(lab, ref.labels).f1 >= 0.9
