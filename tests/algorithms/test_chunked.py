"""Block-by-block segmentation with dask equals the in-memory methods (IDs up to renumbering)."""

import numpy as np
import pytest

from napari_segkit.algorithms.chunked import (
    blockwise_problem,
    chunked_object_table,
    method_overlap,
    segment_chunked,
)
from napari_segkit.algorithms.edges import edge_segment
from napari_segkit.algorithms.image import Cancelled
from napari_segkit.algorithms.kmeans import kmeans_segment
from napari_segkit.algorithms.tables import object_table
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.datasets import synthetic_nuclei

CHUNK = 32

#: the objects as found, not split (the split has tests of its own below)
NOSPLIT = {"split_touching": False}


def assert_same_objects(got, expected):
    """Equal up to renumbering: the same foreground, and a bijection between the IDs."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got > 0, expected > 0)
    fg = expected > 0
    pairs = np.unique(np.stack([got[fg], expected[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "one chunked ID covers several objects"
    assert len(np.unique(pairs[1])) == pairs.shape[1], "one object got several chunked IDs"


def crossing_seams(labels, chunk):
    """How many objects cross a block border of the grid."""
    seams = [slice(c - 1, c + 1) for c in range(chunk, max(labels.shape), chunk)]
    ids = set()
    for s in seams:
        for band in (labels[s, :], labels[:, s]):
            for a, b in zip(band[0].ravel(), band[1].ravel(), strict=True):
                if a and a == b:
                    ids.add(int(a))
    return len(ids)


@pytest.fixture(scope="module")
def nuclei():
    img, _ = synthetic_nuclei((150, 140), n_nuclei=40, seed=3)
    return img


@pytest.mark.parametrize(
    "params",
    [
        {
            "method": "otsu",
            "split_touching": False,
        },  # global threshold from the summed histogram, holes, min size
        {"method": "li", "connectivity": 2, "fill_holes": False, "split_touching": False},
        {
            "method": "local",
            "block_size": 21,
            "min_size": 5,
            "split_touching": False,
        },  # overlap from the block size
        {"method": "mean", "output": "classes", "split_touching": False},
    ],
)
def test_threshold_equals_in_memory(nuclei, params):
    expected = threshold_segment(nuclei, **params)
    got = segment_chunked(nuclei, "threshold", params, chunk=CHUNK)
    assert got.chunks[0][0] == CHUNK  # the zarr array on disk, read lazily
    if params.get("output") == "classes":
        np.testing.assert_array_equal(got, expected)
        return
    assert crossing_seams(expected, CHUNK) >= 10  # many objects cross the block borders
    assert_same_objects(got, expected)


@pytest.mark.parametrize(
    ("shape", "chunk", "params"),
    [
        ((300, 260), 64, {}),  # the widget's defaults: split touching objects, automatic size
        ((256, 200), 48, {"diameter": 14.0, "min_size": 5}),
        ((256, 256), 96, {"method": "local", "block_size": 31}),
    ],
)
def test_split_touching_objects_block_by_block_equals_in_memory(shape, chunk, params):
    from napari_segkit.datasets import realistic_nuclei

    img, _ = realistic_nuclei(shape, diameter=18, seed=7)
    expected = threshold_segment(img, **params)
    unsplit = threshold_segment(img, **{**params, "split_touching": False})
    assert expected.max() > unsplit.max() + 5  # clumps were split
    assert crossing_seams(expected, chunk) >= 5  # split objects cross the block borders
    assert blockwise_problem("threshold", params) is None
    got = segment_chunked(img, "threshold", params, chunk=chunk)
    assert_same_objects(got, expected)


def test_split_touching_block_by_block_in_3d_and_in_a_stack():
    vol, _ = synthetic_nuclei((24, 96, 96), n_nuclei=30, radius=(5, 9), touching=True, seed=5)
    expected = threshold_segment(vol, spatial_ndim=3)
    assert_same_objects(segment_chunked(vol, "threshold", {}, chunk=48, spatial_ndim=3), expected)
    planes = np.stack(
        [synthetic_nuclei((96, 96), n_nuclei=25, touching=True, seed=s)[0] for s in (1, 2)]
    )
    expected = threshold_segment(planes, spatial_ndim=2)
    got = segment_chunked(planes, "threshold", {}, chunk=40, spatial_ndim=2)
    assert_same_objects(got, expected)  # IDs unique over the stack


@pytest.fixture(scope="module")
def anisotropic():
    from napari_segkit.datasets import realistic_nuclei_3d

    vol, _, spacing = realistic_nuclei_3d(
        (24, 96, 96), config="holdout", seed=2, return_spacing=True
    )
    return vol, spacing


@pytest.mark.parametrize(
    ("spacing", "params"),
    [
        ("true", {}),  # the widget's defaults: smoothing, split touching objects, automatic size
        ((0.5, 1.0, 1.0), {}),  # z finer than x: the split's crop is wider in z
        ((3.0, 1.0, 1.0), {"smoothing": 2.0, "diameter": 14.0}),
    ],
)
def test_threshold_with_voxel_spacing_equals_in_memory(anisotropic, spacing, params):
    """A z-stack with long voxels: the per-axis smoothing and the split in physical space give
    block by block (16-voxel blocks) what they give in memory."""
    vol, true_spacing = anisotropic
    spacing = true_spacing if spacing == "true" else spacing
    expected = threshold_segment(vol, spatial_ndim=3, spacing=spacing, **params)
    square = threshold_segment(vol, spatial_ndim=3, **params)
    assert not np.array_equal(expected > 0, square > 0)  # the spacing changes the objects
    got = segment_chunked(vol, "threshold", params, chunk=48, spatial_ndim=3, spacing=spacing)
    assert_same_objects(got, expected)


def test_voxel_spacing_is_checked_block_by_block(anisotropic):
    vol, _ = anisotropic
    for bad in [(0, 1, 1), (1, 1), (np.nan, 1, 1)]:
        with pytest.raises(ValueError, match="spacing"):
            segment_chunked(vol, "threshold", NOSPLIT, chunk=48, spatial_ndim=3, spacing=bad)
    with pytest.raises(ValueError, match="spacing: edges takes no voxel spacing"):
        segment_chunked(vol, "edges", {}, chunk=48, spatial_ndim=3, spacing=(2, 1, 1))


def test_threshold_multilevel_classes_and_holes():
    rng = np.random.default_rng(0)
    img = np.full((96, 90), 20, np.uint8)
    img[10:80, 10:40] = 120  # class 1, with a class-2 blob and a background hole inside
    img[30:50, 15:35] = 220
    img[60:70, 20:30] = 20
    img[5:90, 50:85] = 220  # a class-2 ring around background: filled
    img[30:60, 60:75] = 20
    img += rng.integers(0, 5, img.shape, dtype=np.uint8)
    params = {"method": "cut_points", "cut_points": "80, 180", "min_size": 3, **NOSPLIT}
    expected = threshold_segment(img, **params)
    got = segment_chunked(img, "threshold", params, chunk=16)
    assert_same_objects(got, expected)
    assert int(expected[40, 65]) == int(expected[10, 60]) > 0  # the ring's hole is filled


@pytest.mark.parametrize(
    "params",
    [
        {},  # Canny: per-slice range, weak/strong edges, hysteresis across blocks
        {"filter": "sobel", "sigma": 1.5, "closing": 2},  # Otsu of the response
        {"filter": "laplace", "sigma": 2.0, "min_size": 40},
    ],
)
def test_edges_fill_equals_in_memory(nuclei, params):
    expected = edge_segment(nuclei, **params)
    got = segment_chunked(nuclei, "edges", params, chunk=CHUNK)
    assert crossing_seams(expected, CHUNK) >= 4
    assert_same_objects(got, expected)


def test_kmeans_equals_in_memory():
    img, _ = synthetic_nuclei((80, 70), n_nuclei=12, seed=2)
    for params in ({"k": 3}, {"k": 3, "smoothing": 1.5, "spatial_weight": 0.5}):
        expected = kmeans_segment(img, **params)
        got = segment_chunked(img, "kmeans", params, chunk=CHUNK)
        np.testing.assert_array_equal(got, expected)  # the same model: the same labels


def test_volume_and_time_stack():
    vol, _ = synthetic_nuclei((12, 48, 44), n_nuclei=8, seed=5)
    expected = threshold_segment(vol, spatial_ndim=3, **NOSPLIT)
    got = segment_chunked(vol, "threshold", NOSPLIT, chunk=64, spatial_ndim=3)  # 16-voxel blocks
    assert got.chunks[1][0] == 16
    assert_same_objects(got, expected)
    planes = threshold_segment(vol[:3], spatial_ndim=2, **NOSPLIT)
    got = segment_chunked(vol[:3], "threshold", NOSPLIT, chunk=CHUNK, spatial_ndim=2)
    assert_same_objects(got, planes)  # IDs unique over the stack


def test_dask_and_zarr_inputs_and_out(tmp_path, nuclei):
    import dask.array as da

    expected = threshold_segment(nuclei, **NOSPLIT)
    src = da.from_array(nuclei, chunks=50)
    src.to_zarr(str(tmp_path / "in.zarr"))
    out = tmp_path / "labels.zarr"
    got = segment_chunked(tmp_path / "in.zarr", "threshold", NOSPLIT, chunk=CHUNK, out=out)
    assert_same_objects(got, expected)
    assert_same_objects(da.from_zarr(str(out)), expected)
    with pytest.raises(ValueError, match="exists"):
        segment_chunked(src, "threshold", NOSPLIT, chunk=CHUNK, out=out)
    got = segment_chunked(src, "threshold", NOSPLIT, chunk=CHUNK, out=out, overwrite=True)
    assert_same_objects(got, expected)
    assert not list(tmp_path.glob(".segkit-work-*"))  # the intermediate maps are gone


def test_progress_and_cancel(nuclei):
    seen = []
    segment_chunked(
        nuclei, "threshold", NOSPLIT, chunk=64, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1][0] == seen[-1][1] > 0
    assert all(d <= t for d, t in seen)

    def stop(done, total):
        if done >= 3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        segment_chunked(nuclei, "threshold", NOSPLIT, chunk=64, progress=stop)


def test_not_blockwise_and_bad_arguments(nuclei):
    assert "watershed" in blockwise_problem("edges", {"region_mode": "watershed"})
    assert "quantiles" in blockwise_problem("edges", {"use_quantiles": True})
    assert "not available block by block" in blockwise_problem("watershed", {})
    assert blockwise_problem("maskrcnn", {}) is None  # through models.blockwise
    with pytest.raises(ValueError, match="segment_model_blockwise"):
        segment_chunked(nuclei, "maskrcnn", {})
    with pytest.raises(ValueError, match="floods the whole image"):
        segment_chunked(nuclei, "edges", {"region_mode": "watershed"})
    with pytest.raises(ValueError, match="unknown parameter"):
        segment_chunked(nuclei, "threshold", {"sigma": 1, **NOSPLIT})
    with pytest.raises(ValueError, match="chunk must be an integer >= 16"):
        segment_chunked(nuclei, "threshold", NOSPLIT, chunk=4)
    with pytest.raises(ValueError, match="overlap=40 must be smaller than the block side"):
        segment_chunked(nuclei, "threshold", NOSPLIT, chunk=32, overlap=40)
    with pytest.raises(ValueError, match="scheduler must be"):
        segment_chunked(nuclei, "threshold", NOSPLIT, scheduler=3.5)
    assert method_overlap("threshold", {"method": "otsu"}) == 0
    assert method_overlap("kmeans", {"smoothing": 2.0}) == 8


def test_object_table_of_a_large_array(nuclei):
    import dask.array as da

    labels = threshold_segment(nuclei, **NOSPLIT)
    got = chunked_object_table(da.from_array(labels, chunks=CHUNK))
    expected = object_table(labels)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_local_cluster(nuclei):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        expected = threshold_segment(nuclei, method="yen", **NOSPLIT)
        got = segment_chunked(
            nuclei, "threshold", {"method": "yen", **NOSPLIT}, chunk=48, scheduler=client
        )
        assert_same_objects(got, expected)
        expected = edge_segment(nuclei, filter="sobel")
        got = segment_chunked(nuclei, "edges", {"filter": "sobel"}, chunk=48, scheduler=client)
        assert_same_objects(got, expected)


@pytest.mark.parametrize(
    ("shape", "spatial_ndim"),
    [((2 * CHUNK + 2, 40), 2), ((3, 80, 70), 3)],
)
def test_smoothing_with_blocks_thinner_than_its_reach(shape, spatial_ndim):
    """The threshold's smoothing (1 px: a 4-pixel reach) on a last block 2 px thin and on a
    3-plane volume: blocks stay aligned with the grid and the result equals in memory."""
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 50).astype(np.uint16)
    img[..., 10:30, 5:25] += 400
    img[..., -3:, :] += 400  # an object in the thin last rows
    got = segment_chunked(img, "threshold", NOSPLIT, chunk=CHUNK, spatial_ndim=spatial_ndim)
    assert_same_objects(got, threshold_segment(img, spatial_ndim=spatial_ndim, **NOSPLIT))
