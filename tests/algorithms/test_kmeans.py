"""K-means segmentation: known clusters, ordering, determinism, scikit-learn agreement, bad input."""

import dask.array as da
import numpy as np
import pytest
from skimage import data, transform
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from napari_segkit.algorithms import kmeans as km
from napari_segkit.algorithms.kmeans import cluster_color_image, kmeans_segment

# four RGB colours of different luminance, in shuffled order
COLOURS = np.array([[200, 200, 40], [10, 20, 30], [220, 30, 30], [30, 90, 220]], np.uint8)
LUMA = COLOURS.astype(float) @ [0.2125, 0.7154, 0.0721]


def quadrants(colours, size=40, noise=6.0, seed=1):
    """Piecewise-constant image: one colour per quadrant, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    h = size // 2
    truth = np.zeros((size, size), np.int64)
    truth[:h, h:] = 1
    truth[h:, :h] = 2
    truth[h:, h:] = 3
    img = colours[truth].astype(float)
    img += rng.normal(0, noise, img.shape)
    return img, truth


def test_known_rgb_clusters_recovered_exactly_and_ordered_by_luminance():
    img, truth = quadrants(COLOURS)
    img = np.clip(img, 0, 255).astype(np.uint8)
    labels = kmeans_segment(img, k=4)
    assert labels.dtype == np.uint8 and labels.shape == truth.shape
    # expected label of each colour: its rank by luminance, 1 = darkest
    rank = np.argsort(np.argsort(LUMA)) + 1
    np.testing.assert_array_equal(labels, rank[truth])


def test_grey_ordering_darkest_is_one():
    img = np.zeros((30, 30), np.uint8)
    img[:10] = 180
    img[10:20] = 20
    img[20:] = 250
    labels = kmeans_segment(img, k=3)
    assert labels[0, 0] == 2 and labels[15, 0] == 1 and labels[25, 0] == 3


def test_doctest_example_and_centres_in_input_units():
    img = np.zeros((20, 20), np.uint8)
    img[:, 10:] = 200
    img[15:, :] = 90
    labels, centres = kmeans_segment(img, k=3, return_centers=True)
    assert (labels[0, 0], labels[16, 0], labels[0, 19]) == (1, 2, 3)
    np.testing.assert_allclose(centres[:, 0], [0, 90, 200], atol=1e-3)
    painted = cluster_color_image(labels, centres, dtype=np.uint8)
    np.testing.assert_array_equal(painted[..., 0], img)


def test_deterministic_with_seed_and_independent_of_chunking(monkeypatch):
    img = transform.resize(data.astronaut()[::4, ::4], (128, 128), preserve_range=True)
    a = kmeans_segment(img, k=5, seed=3, sample_size=2000)
    b = kmeans_segment(img, k=5, seed=3, sample_size=2000)
    np.testing.assert_array_equal(a, b)
    # tiny chunks (many strips) give the very same labels
    monkeypatch.setattr(km, "_CHUNK_VALUES", 1000)
    c = kmeans_segment(img, k=5, seed=3, sample_size=2000)
    np.testing.assert_array_equal(a, c)


def test_labels_independent_of_how_the_result_is_requested():
    img = data.coins()[::4, ::4]
    a = kmeans_segment(img, k=4, seed=7)
    b, centres = kmeans_segment(img, k=4, seed=7, return_centers=True)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(centres[:, 0]) > 0)  # centres follow the label order


@pytest.mark.parametrize("image", ["astronaut", "coins"])
def test_agrees_with_sklearn_full_fit(image):
    img = data.astronaut()[::4, ::4] if image == "astronaut" else data.coins()[::2, ::2]
    k = 5 if image == "astronaut" else 3
    pixels = img.reshape(img.shape[0] * img.shape[1], -1).astype(float)
    full = KMeans(n_clusters=k, n_init=4, random_state=0).fit(pixels)
    ours = kmeans_segment(img, k=k, sample_size=5000)  # a sample: fewer pixels than the image
    assert adjusted_rand_score(full.labels_, ours.ravel()) >= 0.95


@pytest.mark.parametrize(
    "dtype, scale", [(np.uint8, 1), (np.uint16, 250), (np.float32, 1 / 255), (np.int32, -3)]
)
def test_grey_dtypes(dtype, scale):
    img, truth = quadrants(np.array([[20], [80], [140], [200]]), noise=3)
    img = (img[..., 0] * scale).astype(dtype)
    labels = kmeans_segment(img, k=4)
    order = np.array([1, 2, 3, 4]) if scale > 0 else np.array([4, 3, 2, 1])
    np.testing.assert_array_equal(labels, order[truth])


def test_bool_image():
    img = np.zeros((10, 10), bool)
    img[:, 5:] = True
    labels = kmeans_segment(img, k=2)
    np.testing.assert_array_equal(labels, img.astype(np.uint8) + 1)


def test_multichannel_scaled_per_channel():
    # channel 0 (uint16, huge range) is pure noise; channel 1 (small range) holds the structure
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), int)
    truth[:, 20:] = 1
    img = np.empty((2, 40, 40), np.float64)
    img[0] = rng.uniform(0, 60000, truth.shape)
    img[1] = truth * 10 + rng.normal(0, 0.3, truth.shape)
    img[0] = np.where(truth == 1, 30000, img[0])  # keeps the structure findable per channel
    labels = kmeans_segment(img, k=2, channel_axis=0)
    assert labels.shape == (40, 40)
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.5
    # without per-channel scaling channel 0 would dominate; check the structured channel decides
    assert labels[:, 20:].min() == labels[:, 20:].max()


def test_nan_pixels_are_background_and_all_nan_raises():
    img, truth = quadrants(np.array([[0.0], [0.3], [0.6], [1.0]]), noise=0.01)
    img = img[..., 0]
    img[5, 5] = np.nan
    img[30, 30] = np.nan
    labels = kmeans_segment(img, k=4)
    assert labels[5, 5] == 0 and labels[30, 30] == 0
    keep = np.isfinite(img)
    np.testing.assert_array_equal(labels[keep], (truth + 1)[keep])
    # with smoothing too: NaN does not spread
    smoothed = kmeans_segment(img, k=4, smoothing=1.0)
    assert (smoothed == 0).sum() == 2
    with pytest.raises(ValueError, match="no finite value"):
        kmeans_segment(np.full((5, 5), np.nan), k=2)


def test_mostly_nan_image_still_samples_finite_pixels():
    img = np.full((100, 100), np.nan)
    img[:3, :3] = 1.0
    img[-3:, -3:] = 5.0
    labels = kmeans_segment(img, k=2, sample_size=50)
    assert labels[0, 0] == 1 and labels[-1, -1] == 2 and (labels > 0).sum() == 18


def test_stack_one_model_same_colour_same_label():
    # each slice holds a different subset of the colours; the same colour gets the same label
    rng = np.random.default_rng(0)
    values = np.array([10, 100, 200])
    stack = np.empty((3, 20, 20), np.uint8)
    stack[0] = values[0]
    stack[0, :, 10:] = values[1]
    stack[1] = values[1]
    stack[1, :10] = values[2]
    stack[2] = values[2]
    stack[2, 5:8, 5:8] = values[0]
    noisy = np.clip(stack + rng.normal(0, 3, stack.shape), 0, 255).astype(np.uint8)
    for spatial_ndim in (2, 3):
        labels = kmeans_segment(noisy, k=3, spatial_ndim=spatial_ndim)
        expected = np.searchsorted(values, stack) + 1
        np.testing.assert_array_equal(labels, expected)


def test_rgb_stack_and_dask_input_match_numpy():
    img, _ = quadrants(COLOURS, size=32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    stack = np.stack([img, img[::-1], img[:, ::-1]])
    labels = kmeans_segment(stack, k=4)
    assert labels.shape == (3, 32, 32)
    np.testing.assert_array_equal(labels[1], labels[0][::-1])
    lazy = da.from_array(stack, chunks=(1, 16, 32, 3))
    np.testing.assert_array_equal(kmeans_segment(lazy, k=4), labels)


def test_spatial_weight_makes_clusters_compact():
    # noise only: colour clusters are scattered; with position they become compact regions
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (40, 40))
    scattered = kmeans_segment(img, k=2)
    compact = kmeans_segment(img, k=2, spatial_weight=5.0)

    def boundary(lab):
        return int((lab[1:] != lab[:-1]).sum() + (lab[:, 1:] != lab[:, :-1]).sum())

    assert boundary(compact) < boundary(scattered) / 10
    assert set(np.unique(compact)) == {1, 2}


def test_smoothing_removes_salt_and_pepper():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), int)
    truth[:, 20:] = 1
    img = truth * 100.0 + rng.normal(0, 40, truth.shape)
    rough = kmeans_segment(img, k=2)
    smooth = kmeans_segment(img, k=2, smoothing=2.0)
    err = lambda lab: int(((lab - 1) != truth).sum())  # noqa: E731
    assert err(smooth) < err(rough) / 5


@pytest.mark.parametrize("k", [1, 33, 0, -2, 2.5, True, "3"])
def test_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must be"):
        kmeans_segment(np.arange(100).reshape(10, 10), k=k)


def test_k_larger_than_distinct_colours():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:5] = (255, 0, 0)
    with pytest.raises(ValueError, match=r"k=3 .* distinct color\(s\) in the image: 2"):
        kmeans_segment(img, k=3)
    assert kmeans_segment(img, k=2).max() == 2


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (np.zeros((0, 5)), {}, "empty"),
        (np.array(["a", "b"] * 8).reshape(4, 4), {}, "dtype"),
        (np.zeros((4, 4), complex), {}, "dtype"),
        (np.arange(5), {}, "dimension"),
        (np.arange(64).reshape(8, 8), {"sample_size": 1}, "sample_size"),
        (np.arange(64).reshape(8, 8), {"spatial_weight": -1}, "spatial_weight"),
        (np.arange(64).reshape(8, 8), {"smoothing": -1}, "smoothing"),
        (np.arange(64).reshape(8, 8), {"spatial_ndim": 4}, "spatial_ndim"),
        (np.arange(64).reshape(8, 8), {"n_init": 0}, "n_init"),
        (np.zeros((8, 8, 3)), {"rgb": True, "channel_axis": 0}, "exclusive"),
    ],
)
def test_bad_input(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans_segment(image, k=2, **kwargs)


def test_cluster_color_image_checks():
    with pytest.raises(ValueError, match="labels must be integers"):
        cluster_color_image(np.array([[3]]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="centers"):
        cluster_color_image(np.array([[1]]), np.zeros(3))
    out = cluster_color_image(np.array([[0, 1]]), np.array([[300.0]]), dtype=np.uint8)
    np.testing.assert_array_equal(out[..., 0], [[0, 255]])


def test_progress_reports_and_can_stop_the_work(monkeypatch):
    monkeypatch.setattr(km, "_CHUNK_VALUES", 2000)  # many strips
    img = data.coins()[::2, ::2]
    calls = []
    kmeans_segment(img, k=3, progress=lambda done, total: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 10

    class Stop(Exception):
        pass

    def stop(done, total):
        if done > total // 2:
            raise Stop

    with pytest.raises(Stop):
        kmeans_segment(img, k=3, progress=stop)


@pytest.mark.parametrize(
    "image, kwargs",
    [
        (data.astronaut()[::2, ::2], {}),  # RGB uint8: coarse cells, some computed pixel by pixel
        ((data.coins().astype(np.uint16) * 257), {}),  # uint16 grey: one cell per value
        (np.moveaxis(data.astronaut()[::4, ::4, :2], -1, 0), {"channel_axis": 0}),  # 2 x uint8
        ((data.astronaut()[::4, ::4].astype(np.uint16) * 200), {}),  # RGB uint16: big cells
    ],
)
def test_color_table_gives_the_direct_labels(image, kwargs, monkeypatch):
    fast = kmeans_segment(image, k=6, **kwargs)
    monkeypatch.setattr(km, "_color_table", lambda *a, **k: None)
    direct = kmeans_segment(image, k=6, **kwargs)
    np.testing.assert_array_equal(fast, direct)


def test_float64_with_a_large_offset():
    img, truth = quadrants(np.array([[0.0], [0.25], [0.5], [0.75]]), noise=0.01)
    labels = kmeans_segment(img[..., 0] + 1e9, k=4)
    np.testing.assert_array_equal(labels, truth + 1)
