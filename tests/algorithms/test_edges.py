"""Edge filters (exact numbers against hand arithmetic) and edge-to-region segmentation."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, draw, filters

from napari_segkit.algorithms.edges import (
    canny_edges,
    edge_map,
    edge_segment,
    edge_segment_with_map,
    laplace,
    sobel,
    sobel_h,
    sobel_magnitude,
    sobel_v,
)
from napari_segkit.datasets import synthetic_nuclei

# a tiny image with distinct values so that every kernel weight shows in the result
A = np.array([[1, 2, 4], [8, 16, 32], [64, 128, 255]], dtype=np.uint8)


def hand_correlate(img, kernel, i, j):
    """The correlation sum at (i, j) written out, with 'reflect' borders (edge pixel repeated)."""
    h, w = img.shape
    total = 0.0
    for a in range(3):
        for b in range(3):
            y, x = i + a - 1, j + b - 1
            y = -y - 1 if y < 0 else (2 * h - y - 1 if y >= h else y)
            x = -x - 1 if x < 0 else (2 * w - x - 1 if x >= w else x)
            total += kernel[a][b] * float(img[y, x])
    return total


# as correlation kernels (laid on the image as written); scikit-image writes the same filters as
# convolution kernels, flipped: [[1, 2, 1], [0, 0, 0], [-1, -2, -1]] and [[1, 0, -1], ...]
H = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
V = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
L8 = [[1, 1, 1], [1, -8, 1], [1, 1, 1]]


def test_sobel_h_centre_by_hand():
    # (64 + 2*128 + 255) - (1 + 2*2 + 4) = 575 - 9: the row below is brighter, positive
    assert sobel_h(A)[1, 1] == 566.0
    assert sobel_h(A).dtype == np.float32


def test_sobel_v_centre_by_hand():
    # (4 + 2*32 + 255) - (1 + 2*8 + 64) = 323 - 81
    assert sobel_v(A)[1, 1] == 242.0


@pytest.mark.parametrize("func, kernel", [(sobel_h, H), (sobel_v, V), (laplace, L8)])
def test_every_pixel_matches_direct_arithmetic(func, kernel):
    out = func(A)
    expected = np.array([[hand_correlate(A, kernel, i, j) for j in range(3)] for i in range(3)])
    np.testing.assert_array_equal(out, expected)


def test_laplace_centre_by_hand():
    neighbours = 1 + 2 + 4 + 8 + 32 + 64 + 128 + 255
    assert laplace(A)[1, 1] == neighbours - 8 * 16


def test_horizontal_sobel_responds_to_horizontal_edges_only():
    img = np.zeros((6, 6), np.float32)
    img[3:] = 10  # a horizontal edge, brighter below
    h, v = sobel_h(img), sobel_v(img)
    np.testing.assert_array_equal(v, 0)
    assert h[2, 3] == h[3, 3] == 40  # 0 above, (10 + 20 + 10) below; positive when brighter below
    np.testing.assert_array_equal(h[[0, 5]], 0)
    # the same sign as scikit-image's, which is this divided by 4
    np.testing.assert_array_equal(h, 4 * filters.sobel_h(img))
    np.testing.assert_array_equal(sobel_h(img[::-1]), -h[::-1])


def test_relations_to_scipy_and_skimage():
    img = data.camera()[100:160, 200:260]
    np.testing.assert_allclose(sobel_h(img), ndi.sobel(img.astype(float), axis=0), atol=1e-3)
    np.testing.assert_allclose(sobel_v(img), ndi.sobel(img.astype(float), axis=1), atol=1e-3)
    x = img / 255.0
    np.testing.assert_allclose(sobel_h(x), 4 * filters.sobel_h(x), atol=1e-5)
    np.testing.assert_allclose(sobel_v(x), 4 * filters.sobel_v(x), atol=1e-5)
    np.testing.assert_allclose(sobel_magnitude(x), 4 * np.sqrt(2) * filters.sobel(x), atol=1e-5)
    k8 = np.array(L8, float)
    np.testing.assert_allclose(laplace(img), ndi.correlate(img.astype(float), k8), atol=1e-3)


@pytest.mark.parametrize(
    "mode, cval", [("constant", 0), ("constant", 3), ("nearest", 0), ("mirror", 0), ("wrap", 0)]
)
def test_border_modes_match_a_direct_2d_correlation(mode, cval):
    img = A.astype(float)
    kw = {"mode": mode, "cval": cval}
    for func, k in [(laplace, L8), (sobel_v, V), (sobel_h, H)]:
        np.testing.assert_allclose(func(A, **kw), ndi.correlate(img, np.array(k, float), **kw))
    vol = np.arange(27.0).reshape(3, 3, 3) ** 1.5
    k26 = np.ones((3, 3, 3))
    k26[1, 1, 1] = -26
    np.testing.assert_allclose(laplace(vol, **kw), ndi.correlate(vol, k26, **kw), atol=1e-3)


def test_constant_border_by_hand():
    # zero outside: the corner sees only its 3 in-image neighbours
    assert laplace(A, mode="constant")[0, 0] == 2 + 8 + 16 - 8 * 1
    assert laplace(A, mode="constant", cval=1)[0, 0] == 2 + 8 + 16 + 5 - 8


def test_3d_laplace_is_26_neighbour_and_sobel_3d():
    vol = np.zeros((3, 3, 3), np.float32)
    vol[1, 1, 1] = 1
    out = laplace(vol, mode="constant")
    assert out[1, 1, 1] == -26 and out[0, 0, 0] == 1 and out.sum() == 0
    ramp = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 5, 5))
    # d/dz of a unit ramp: [-1, 0, 1] gives 2, the 3x3 smoothing [1,2,1]x[1,2,1] sums to 16
    assert sobel(ramp, axis=0)[2, 2, 2] == 32
    assert sobel_magnitude(ramp)[2, 2, 2] == 32


@pytest.mark.parametrize(
    "img",
    [
        A,
        A.astype(np.uint16) * 100,
        A.astype(np.int32) - 100,
        A.astype(np.float64) / 255,
        A > 16,
    ],
    ids=["uint8", "uint16", "int32", "float64", "bool"],
)
def test_dtypes_give_float32_and_exact_values(img):
    out = sobel_v(img)
    assert out.dtype == np.float32
    x = img.astype(np.float64)
    expected = ndi.correlate(x, np.array(V, float))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_nan_is_filled_from_neighbours_not_propagated():
    img = np.tile(np.arange(8, dtype=np.float32), (8, 1))
    img[3, 4] = np.nan
    out = sobel_magnitude(img)
    assert np.isfinite(out).all()
    # far from the NaN the result is untouched
    np.testing.assert_array_equal(
        out[:, :2], sobel_magnitude(np.tile(np.arange(8.0), (8, 1)))[:, :2]
    )
    labels = edge_segment(np.where(np.arange(64).reshape(8, 8) % 9 == 0, np.nan, 1.0))
    assert labels.shape == (8, 8)


def test_canny_2d_and_slice_by_slice():
    img = np.zeros((30, 30))
    img[8:22, 8:22] = 1
    e = canny_edges(img)
    assert e.dtype == bool and e[8, 15] and not e[15, 15]
    stack = np.stack([img, img.T * 0, img])
    es = canny_edges(stack)
    np.testing.assert_array_equal(es[0], e)
    assert not es[1].any()
    # the thresholds are fractions of the image's range: units do not matter
    np.testing.assert_array_equal(canny_edges(img * 5000 + 7), e)


def squares(n=3, size=64):
    img = np.zeros((size, size), np.uint8)
    for k in range(n):
        img[4 + 20 * k : 14 + 20 * k, 5 : 15 + 10 * k] = 200
    return img


@pytest.mark.parametrize("filter", ["canny", "sobel", "laplace"])
def test_fill_counts_known_objects(filter):
    img = squares(3)
    labels = edge_segment(img, filter=filter, min_size=10)
    assert labels.dtype == np.int32 and labels.max() == 3
    # each object is found where it is (it covers the square's interior)
    for k in range(3):
        assert len(np.unique(labels[6 + 20 * k : 12 + 20 * k, 7:12])) == 1
        assert labels[9 + 20 * k, 9] > 0
    assert labels[0, 0] == 0


def two_touching_disks():
    img = np.zeros((80, 120), np.uint8)
    gt = np.zeros(img.shape, np.int32)
    for k, (cy, cx) in enumerate([(40, 35), (40, 63)]):
        rr, cc = draw.disk((cy, cx), 15, shape=img.shape)
        img[rr, cc] = 200
        gt[rr, cc] = k + 1
    return img, gt


def test_touching_disks_one_in_fill_two_in_watershed():
    img, gt = two_touching_disks()
    assert edge_segment(img).max() == 1  # one closed contour around both
    ws = edge_segment(img, region_mode="watershed")
    assert ws.max() == 2
    # each disk's centre in its own region, and the split follows the disks
    assert ws[40, 35] != ws[40, 63] and ws[40, 35] > 0 and ws[40, 63] > 0
    agree = np.mean(ws[gt == 1] == ws[40, 35])
    assert agree > 0.9


def matched(gt, pred, iou=0.5):
    """How many ground-truth objects one predicted region covers with IoU > ``iou``."""
    hits = 0
    for g in range(1, int(gt.max()) + 1):
        sel = gt == g
        if not sel.any():
            continue
        ids, counts = np.unique(pred[sel], return_counts=True)
        best = ids[np.argmax(counts)]
        if best and counts.max() / np.count_nonzero(sel | (pred == best)) > iou:
            hits += 1
    return hits


def test_synthetic_nuclei_counts():
    img, gt = synthetic_nuclei((192, 192), n_nuclei=20, touching=False, seed=2)
    n = len(np.unique(gt)) - 1
    border = np.unique(np.r_[gt[0], gt[-1], gt[:, 0], gt[:, -1]])
    n_inner = n - np.count_nonzero(border)
    fill = edge_segment(img)
    # fill mode cannot close a contour that the image border cuts: the inner objects, at least
    assert n_inner < n and n_inner <= fill.max() <= n
    assert matched(gt, fill) >= n_inner
    ws = edge_segment(img, region_mode="watershed")
    assert ws.max() == n and matched(gt, ws) == n
    # local minima: one spurious extra seed is allowed (a noisy or elongated nucleus)
    lm = edge_segment(img, region_mode="watershed", markers="local_minima")
    assert n <= lm.max() <= n + 1 and matched(gt, lm) >= n - 1


def test_synthetic_touching_nuclei_watershed_separates_more():
    img, gt = synthetic_nuclei((256, 256), n_nuclei=30, touching=True, seed=3)
    fill = edge_segment(img).max()
    ws = edge_segment(img, region_mode="watershed").max()
    lm = edge_segment(img, region_mode="watershed", markers="local_minima").max()
    assert fill < ws <= 30 and fill < lm <= 30


def test_coins_about_24():
    # 24 coins. The tolerance: fill mode finds exactly 24 with the defaults; the watershed's Otsu
    # foreground also takes in a few bright background patches at the top of the image (2-5 small
    # extra regions), so we ask for the 24 large regions (>= 200 px, a coin has >= 600) and at
    # most 6 extra small ones.
    coins = data.coins()
    fill = edge_segment(coins)
    assert fill.max() == 24
    ws = edge_segment(coins, region_mode="watershed")
    sizes = np.bincount(ws.ravel())[1:]
    assert (sizes >= 200).sum() == 24
    assert 24 <= ws.max() <= 30


def test_edge_map_returned_and_its_kinds():
    img = squares(2)
    labels, emap = edge_segment_with_map(img)
    assert emap.dtype == np.uint8 and set(np.unique(emap)) <= {0, 1}
    labels, emap = edge_segment_with_map(img, filter="sobel", sigma=0)
    np.testing.assert_array_equal(emap, sobel_magnitude(img))
    labels, emap = edge_segment_with_map(img, region_mode="watershed", sigma=0)
    np.testing.assert_array_equal(emap, sobel_magnitude(img))
    np.testing.assert_array_equal(edge_map(img, filter="laplace"), laplace(img))


def test_stack_slice_by_slice_unique_ids_and_progress():
    img = squares(3)
    stack = np.stack([img, img[::-1], np.zeros_like(img)])
    calls = []
    labels, emap = edge_segment_with_map(
        stack, progress=lambda d, t: calls.append((d, t)), spatial_ndim=2
    )
    assert labels.shape == stack.shape and emap.shape == stack.shape
    assert labels[0].max() == 3 and len(np.unique(labels[1])) == 4
    assert set(np.unique(labels[1])) - {0} == {4, 5, 6}  # unique across the stack
    assert labels[2].max() == 0
    assert calls[-1] == (3, 3)
    np.testing.assert_array_equal(emap[0], canny_edges(img))


@pytest.mark.parametrize("filter", ["sobel", "canny"])
def test_3d_volume(filter):
    vol = np.zeros((20, 40, 40), np.float32)
    zz, yy, xx = np.ogrid[:20, :40, :40]
    vol[(zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 36] = 1
    vol[(zz - 10) ** 2 + (yy - 28) ** 2 + (xx - 28) ** 2 <= 36] = 1
    labels = edge_segment(vol, filter=filter, spatial_ndim=3, min_size=20)
    assert labels.max() == 2  # joined in 3D
    per_slice = edge_segment(vol, filter=filter, spatial_ndim=2, min_size=0)
    assert per_slice.max() > 2  # each slice gets its own IDs
    ws = edge_segment(vol, region_mode="watershed", spatial_ndim=3)
    assert ws.max() == 2


def test_rgb_and_channel_axis_and_dask():
    img = squares(2)
    rgb = np.stack([img, img, img], axis=-1)
    np.testing.assert_array_equal(edge_segment(rgb), edge_segment(img))
    multi = np.stack([np.zeros_like(img), img])
    np.testing.assert_array_equal(edge_segment(multi, channel_axis=0, channel=1), edge_segment(img))
    lazy = da.from_array(np.stack([img, img]), chunks=(1, 64, 64))
    assert edge_segment(lazy).max() == 4


def test_empty_constant_and_all_nan():
    assert edge_segment(np.zeros((16, 16))).max() == 0
    assert edge_segment(np.full((16, 16), 7.0), region_mode="watershed").max() == 0
    with pytest.raises(ValueError, match="empty"):
        edge_segment(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="no finite value"):
        edge_segment(np.full((8, 8), np.nan))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filter": "prewitt"}, "filter must be one of"),
        ({"region_mode": "grow"}, "region_mode must be one of"),
        ({"markers": "random"}, "markers must be one of"),
        ({"mode": "circular"}, "mode must be one of"),
        ({"sigma": -1}, "sigma must be"),
        ({"low_threshold": 0.5, "high_threshold": 0.2}, "must not exceed"),
        ({"use_quantiles": True, "high_threshold": 2}, "high_threshold must be <= 1"),
        ({"closing": -1}, "closing"),
        ({"min_size": -3}, "min_size"),
        ({"region_mode": "watershed", "min_distance": 0}, "min_distance"),
        ({"spatial_ndim": 4}, "spatial_ndim"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        edge_segment(squares(1), **kwargs)


def test_watershed_always_floods_the_sobel_gradient():
    img = squares(1)
    ref = edge_segment(img, region_mode="watershed", filter="sobel")
    np.testing.assert_array_equal(edge_segment(img, region_mode="watershed", filter="canny"), ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        edge_segment(np.zeros(10))
    with pytest.raises(ValueError, match="dtype"):
        edge_segment(np.zeros((4, 4), complex))
    with pytest.raises(ValueError, match="2D image"):
        sobel_h(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="axis=2"):
        sobel(np.zeros((4, 4)), axis=2)


# ---- the strip-by-strip filters equal a direct nD correlation -------------------------------------
def reference_kernel(name, ndim, axis=None):
    """The full nD kernel, for scipy.ndimage.correlate (the slow, obviously right way)."""
    if name == "laplace":
        k = np.ones((3,) * ndim)
        k[(1,) * ndim] -= 3**ndim
        return k
    k = np.ones((1,) * ndim)
    for ax in range(ndim):
        w = np.array([-1.0, 0.0, 1.0]) if ax == axis else np.array([1.0, 2.0, 1.0])
        k = k * w.reshape([3 if a == ax else 1 for a in range(ndim)])
    return k


def reference(name, img, mode, cval):
    x = np.asarray(img, dtype=np.float64)
    if name == "laplace":
        return ndi.correlate(x, reference_kernel("laplace", x.ndim), mode=mode, cval=cval)
    if name == "magnitude":
        sq = [reference(("sobel", ax), img, mode, cval) ** 2 for ax in range(x.ndim)]
        return np.sqrt(np.sum(sq, axis=0))
    return ndi.correlate(x, reference_kernel("sobel", x.ndim, name[1]), mode=mode, cval=cval)


def ours(name, img, mode, cval):
    if name == "laplace":
        return laplace(img, mode=mode, cval=cval)
    if name == "magnitude":
        return sobel_magnitude(img, mode=mode, cval=cval)
    return sobel(img, axis=name[1], mode=mode, cval=cval)


@pytest.mark.parametrize("strip_bytes", [1, 8 * 4 * 17, None], ids=["1row", "2rows", "default"])
@pytest.mark.parametrize("mode", ["reflect", "constant", "nearest", "mirror", "wrap"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 5), (5, 1), (13, 17), (3, 4, 5), (2, 1, 6)])
def test_fast_filters_equal_direct_correlation(shape, mode, strip_bytes, monkeypatch):
    from napari_segkit.algorithms import edges

    if strip_bytes is not None:
        monkeypatch.setattr(edges, "_STRIP_BYTES", strip_bytes)
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape).astype(np.uint8)  # integers: float32 sums are exact
    names = ["laplace", "magnitude"] + [("sobel", ax) for ax in range(len(shape))]
    for cval in (0, 7):
        for name in names:
            out = ours(name, img, mode, cval)
            assert out.dtype == np.float32 and out.shape == shape
            expected = reference(name, img, mode, cval)
            if name == "magnitude":
                np.testing.assert_allclose(out, expected, rtol=1e-6)
            else:
                np.testing.assert_array_equal(out, expected, err_msg=f"{name} {mode} {cval}")


@pytest.mark.parametrize("mode", ["reflect", "constant", "mirror", "wrap"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16, bool])
def test_fast_filters_any_dtype_with_nan(mode, dtype, monkeypatch):
    from napari_segkit.algorithms import edges

    monkeypatch.setattr(edges, "_STRIP_BYTES", 3 * 4 * 11)  # 3 rows a strip: 9 = 3 + 3 + 3
    rng = np.random.default_rng(1)
    values = rng.random((9, 11)) > 0.5 if dtype is bool else rng.normal(0, 300, (9, 11))
    img = values.astype(dtype)
    if np.dtype(dtype).kind == "f":
        img[2, 3] = img[7, 0] = np.nan
        img[4, 10] = np.inf
    # the reference: the same nearest-finite fill, then a float64 correlation
    filled, bad = edges._float32(img)
    assert (bad is not None) == (np.dtype(dtype).kind == "f")
    for name in ["laplace", "magnitude", ("sobel", 0), ("sobel", 1)]:
        out = ours(name, img, mode, 2.5)
        assert np.isfinite(out).all()
        expected = reference(name, filled, mode, 2.5)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3 * np.abs(expected).max())


def test_all_nan_and_float64_beyond_float32_are_not_finite():
    with pytest.raises(ValueError, match="no finite value"):
        sobel_magnitude(np.full((4, 4), np.nan))
    img = np.ones((4, 4))
    img[1, 1] = 1e300  # inf in float32: filled from its neighbours like a NaN
    np.testing.assert_array_equal(laplace(img), 0)


# ---- the watershed's fast internals equal scikit-image's / scipy's own calls ----------------------
def random_labels(rng, shape, smooth):
    noise = rng.random(shape)
    m = ndi.gaussian_filter(noise, 1.5) > 0.5 if smooth else noise > 0.6
    return ndi.label(m)


@pytest.mark.parametrize("seed", range(40))
def test_label_peaks_equal_peak_local_max(seed):
    from skimage.feature import peak_local_max

    from napari_segkit.algorithms import edges

    rng = np.random.default_rng(seed)
    nd = 3 if seed % 4 == 0 else 2
    shape = tuple(int(s) for s in rng.integers(1, 30 if nd == 2 else 10, nd))
    labels, n = random_labels(rng, shape, smooth=seed % 3 > 0)
    if n == 0:
        labels[(0,) * nd], n = 1, 1
    # integer scores have many ties; a distance transform has plateaus and flat objects
    if seed % 2:
        score = rng.integers(0, 4, shape).astype(np.float32)
    else:
        score = ndi.distance_transform_edt(labels > 0).astype(np.float32)
    min_distance = int(rng.integers(1, 6))
    expected = peak_local_max(score, min_distance=min_distance, labels=labels, exclude_border=False)
    starts, stops = edges._boxes(labels)
    ids = np.arange(1, n + 1, dtype=np.int32)
    got, got_labels = edges._label_peaks(
        score, labels, ids, starts, stops, min_distance, float(score.min())
    )
    np.testing.assert_array_equal(got, expected)  # same peaks, same order
    np.testing.assert_array_equal(got_labels, labels[tuple(got.T)])


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 33), (6, 7, 8)])
def test_fill_holes_and_dilate_equal_scipy(shape):
    from napari_segkit.algorithms import edges

    rng = np.random.default_rng(len(shape))
    for p in (0.2, 0.5, 0.8):
        m = rng.random(shape) < p
        np.testing.assert_array_equal(edges._fill_holes(m.copy()), ndi.binary_fill_holes(m))
        full = ndi.generate_binary_structure(m.ndim, m.ndim)
        np.testing.assert_array_equal(
            edges._dilate(m, 2), ndi.binary_dilation(m, full, iterations=2)
        )
        np.testing.assert_array_equal(edges._dilate(m, 1, square=False), ndi.binary_dilation(m))


def bare_watershed(img, markers="threshold", min_distance=10, min_size=20, sigma=1.0):
    """The watershed pipeline with plain scipy/scikit-image calls on whole images."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from napari_segkit.algorithms.objects import remove_small
    from napari_segkit.algorithms.threshold import threshold_value

    s = ndi.gaussian_filter(img.astype(np.float32), sigma, output=np.float32)
    emap = sobel_magnitude(s)
    fg = ndi.binary_fill_holes(s > threshold_value(s, "otsu"))
    comps, n = ndi.label(fg)
    if markers == "threshold":
        score = ndi.distance_transform_edt(fg).astype(np.float32)
    else:
        score = emap.max() - emap
    peaks = peak_local_max(score, min_distance=min_distance, labels=comps, exclude_border=False)
    mk = np.zeros(img.shape, np.int32)
    mk[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    if markers == "local_minima":
        plateau = (score == ndi.maximum_filter(score, size=3)) & fg
        flats, _ = ndi.label(plateau, ndi.generate_binary_structure(fg.ndim, fg.ndim))
        seeds = np.unique(flats[tuple(peaks.T)])
        seeds = seeds[seeds > 0]
        lut = np.zeros(flats.max() + 1, np.int32)
        lut[seeds] = np.arange(1, len(seeds) + 1)
        mk = lut[flats]
        peaks = np.argwhere(mk)
    missing = np.setdiff1d(np.arange(1, n + 1), comps[tuple(peaks.T)])
    top = mk.max()
    for k, pos in enumerate(ndi.maximum_position(score, comps, missing)):
        mk[pos] = top + k + 1
    top = mk.max()
    full = ndi.generate_binary_structure(fg.ndim, fg.ndim)
    mk[~ndi.binary_dilation(fg, full, iterations=2)] = top + 1
    labels = watershed(emap, mk).astype(np.int32)
    labels[labels == top + 1] = 0
    return remove_small(labels, min_size), mk


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((160, 200), {}),
        ((160, 200), {"min_distance": 3}),
        ((160, 200), {"markers": "local_minima"}),
        ((24, 48, 48), {}),
    ],
)
def test_watershed_equals_the_bare_pipeline(shape, kwargs, monkeypatch):
    from napari_segkit.algorithms import edges

    monkeypatch.setattr(edges, "_MARKER_PIXELS", 2000)  # many groups even on a small image
    monkeypatch.setattr(edges, "_FLOOD_PIXELS", 1000)
    img, _ = synthetic_nuclei(shape, n_nuclei=40, touching=True, seed=4)
    expected, mk = bare_watershed(img, **kwargs)
    s = ndi.gaussian_filter(img.astype(np.float32), 1.0, output=np.float32)
    fg = ndi.binary_fill_holes(s > edges.threshold_value(s, "otsu"))
    markers, min_distance = kwargs.get("markers", "threshold"), kwargs.get("min_distance", 10)
    seeded, ids = edges._markers(sobel_magnitude(s), fg, markers, min_distance)
    objects = np.where(mk == mk.max(), 0, mk)
    np.testing.assert_array_equal(np.flatnonzero(objects), seeded)  # the very same markers
    np.testing.assert_array_equal(objects.ravel()[seeded], ids)
    got = edge_segment(img, region_mode="watershed", spatial_ndim=len(shape), **kwargs)
    # flooding basin by basin may break exact ties between markers in another order than one
    # heap over the whole image; a noisy image has none, so the labels are the same
    np.testing.assert_array_equal(got, expected)
