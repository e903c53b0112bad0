"""K-means clustering segmentation: pixels grouped by color (and optionally position).

Fast and memory-bounded on large images and stacks: the model is fitted on a seeded random sample
of pixels drawn from the whole image (one model for a whole stack, so a label means the same thing
in every slice), then every pixel is assigned to its nearest center chunk by chunk, writing straight
into a preallocated ``uint8`` output. Pure numpy/scipy/scikit-learn; no napari, no Qt.

Features
--------
- **Color.** Grey: the value. RGB/RGBA: R, G, B (alpha dropped), all three divided by one common
  scale, so color distances are those of the classic "k-means on pixel colors" recipe.
  Multichannel: each channel divided by its own robust range, so that a uint16 channel does not
  outweigh a uint8 one. The robust range is the 1st to 99th percentile of the sampled values
  (the full sampled range if that is empty; 1 if the channel is constant).
- **Position** (``spatial_weight > 0``). The pixel's coordinates along the spatial axes (the last
  ``spatial_ndim`` axes), divided by the largest of those axes' lengths and multiplied by
  ``spatial_weight``: with ``spatial_weight=1`` crossing the whole image costs as much as crossing the
  whole color range, so clusters become spatially compact.
- **Smoothing** (``smoothing > 0``). A Gaussian of that sigma (pixels) over the spatial axes of each
  plane/volume before clustering; exact, computed in strips with a halo so memory stays bounded.

Speed: the fit uses scikit-learn's ``KMeans`` (float32) on the sample; the assignment computes
``argmin_j ||c_j||^2 - 2 x.c_j`` in float32 strips of about a million pixels, two strips at a time in
threads. For unsigned-integer color-only input (uint8/uint16 grey, RGB, up to 3 channels; no
smoothing, no position) a lookup table from color to label, exact by construction, replaces most
of that arithmetic.

Labels are ordered by center brightness: 1 is the darkest cluster, ``k`` the brightest. Brightness
is the luminance (0.2125 R + 0.7154 G + 0.0721 B) of the center color for RGB, the value for grey,
and the mean of the scaled channels for multichannel. Ties are broken by the center's features in
order. NaN pixels (any channel) are left out of the fit and labelled 0.
"""

from __future__ import annotations

import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..params import MethodSpec, Param, checked, register
from .image import (
    LUMA,
    ProgressCallback,
    check_memory,
    guess_rgb,
    iter_blocks,
    report,
    spatial_ndim_for,
    to_channels_last,
)

#: the range of k accepted
K_MIN, K_MAX = 2, 32

#: The one declaration of the k-means method's parameters (function, widget, CLI, docs).
SPEC = register(
    MethodSpec(
        name="kmeans",
        title="K-means",
        function="napari_segkit.algorithms.kmeans:kmeans_segment",
        description="k-means clustering of pixel colors: label 1 = darkest ... k = brightest.",
        uses_all_channels=True,
        params=(
            Param(
                "k",
                int,
                3,
                "Number of color clusters; label 1 = darkest, k = brightest.",
                label="clusters (k)",
                min=K_MIN,
                max=K_MAX,
            ),
            Param("seed", int, 0, "Same seed, same labels.", min=0, max=2**31 - 1),
            Param(
                "spatial_weight",
                float,
                0.0,
                "Weight of pixel position (0: color only); larger gives compact clusters.",
                min=0.0,
                max=100.0,
                step=0.1,
            ),
            Param(
                "smoothing",
                float,
                0.0,
                "Sigma (pixels) of a Gaussian blur before clustering (0: none).",
                label="smoothing (px)",
                min=0.0,
                max=50.0,
                step=0.5,
            ),
            Param(
                "sample_size",
                int,
                100_000,
                "Pixels used to fit the model (drawn at random from the whole image or stack); "
                "every pixel is then assigned to its nearest cluster.",
                label="sample (px)",
                min=2,
                max=100_000_000,
                step=10_000,
            ),
            Param(
                "n_init",
                int,
                3,
                "k-means++ initializations tried on the sample; the best is kept.",
                min=1,
                max=50,
            ),
            Param(
                "cluster_colors",
                bool,
                False,
                "Also show the cluster-color image: each pixel painted its cluster's mean color.",
                label="also show cluster colors",
                group="output",
            ),
        ),
    )
)
#: temporary float32 values per assignment chunk (about 32 MB): bounds the memory of the assignment
_CHUNK_VALUES = 1 << 23
#: threads assigning strips at the same time (each holds one strip's temporaries)
_THREADS = 2
#: cells of the color lookup table (2**18: 256 KB), its safety margin, its 'compute me' mark
_TABLE_BITS = 18
_TABLE_MARGIN = 1e-3
_UNSURE = 255


@dataclass(frozen=True)
class _Chunk:
    """A strip of rows ``r0:r1`` along the first spatial axis of the block at ``lead``."""

    lead: tuple[int, ...]
    r0: int
    r1: int
    start: int  # flat index (C order over the spatial shape) of the strip's first pixel
    size: int


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer between {K_MIN} and {K_MAX}; got k={k!r}")
    if not K_MIN <= int(k) <= K_MAX:
        raise ValueError(f"k must be between {K_MIN} and {K_MAX}; got k={k}")
    return int(k)


def _chunks(spatial: tuple[int, ...], sn: int, pixels: int) -> list[_Chunk]:
    block = spatial[len(spatial) - sn :]
    row = int(np.prod(block[1:]))
    rows = max(1, pixels // max(row, 1))
    out = []
    start = 0
    for lead in iter_blocks(spatial, sn):
        for r0 in range(0, block[0], rows):
            r1 = min(r0 + rows, block[0])
            out.append(_Chunk(lead, r0, r1, start, (r1 - r0) * row))
            start += (r1 - r0) * row
    return out


class _Reader:
    """Reads strips of the channels-last image as float32 feature rows (color part, unscaled)."""

    def __init__(self, chans: Any, sn: int, smoothing: float):
        self.chans = chans
        self.sn = sn
        self.smoothing = float(smoothing)
        self.rows = chans.shape[len(chans.shape) - 1 - sn]
        # scipy's Gaussian reaches int(4 * sigma + 0.5) pixels: a halo that wide makes strips exact
        self.halo = int(4.0 * self.smoothing + 0.5) if self.smoothing > 0 else 0
        self.is_float = np.dtype(chans.dtype).kind == "f"

    def raw(self, c: _Chunk) -> np.ndarray:
        """The strip's pixels as an ``(n, C)`` array in the input dtype (bool as uint8)."""
        arr = np.asarray(self.chans[c.lead + (slice(c.r0, c.r1),)])
        if arr.dtype == bool:
            arr = arr.view(np.uint8)
        return arr.reshape(-1, arr.shape[-1])

    def values(self, c: _Chunk) -> np.ndarray:
        """The strip's (smoothed) color values, ``(n, C)``, float32 when smoothed."""
        if not self.halo:
            return self.raw(c)
        a = max(0, c.r0 - self.halo)
        b = min(self.rows, c.r1 + self.halo)
        arr = np.asarray(self.chans[c.lead + (slice(a, b),)]).astype(np.float32)
        sigma = (self.smoothing,) * self.sn + (0.0,)
        finite = np.isfinite(arr) if self.is_float else None
        if finite is not None and not finite.all():
            # normalized convolution: NaN pixels neither spread nor count; they stay NaN
            weight = finite.astype(np.float32)
            arr[~finite] = 0
            num = ndi.gaussian_filter(arr, sigma, mode="nearest")
            den = ndi.gaussian_filter(weight, sigma, mode="nearest")
            with np.errstate(invalid="ignore", divide="ignore"):
                arr = num / den
            arr[~finite] = np.nan
        else:
            arr = ndi.gaussian_filter(arr, sigma, mode="nearest")
        arr = arr[c.r0 - a : c.r1 - a]
        return arr.reshape(-1, arr.shape[-1])

    def finite_count(self, c: _Chunk) -> int:
        if not self.is_float:
            return c.size
        return int(np.count_nonzero(np.isfinite(self.raw(c)).all(axis=1)))


def _coords(c: _Chunk, block: tuple[int, ...], factor: float) -> np.ndarray:
    """Scaled coordinates ``(n, sn)`` of the strip's pixels along the block's spatial axes."""
    axes = [np.arange(c.r0, c.r1, dtype=np.float32)] + [
        np.arange(n, dtype=np.float32) for n in block[1:]
    ]
    grids = np.meshgrid(*axes, indexing="ij", copy=False)
    out = np.empty((c.size, len(block)), dtype=np.float32)
    for j, g in enumerate(grids):
        out[:, j] = g.reshape(-1) if g.flags.c_contiguous else np.ravel(g)
    out *= np.float32(factor)
    return out


def _robust_scale(values: np.ndarray, joint: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (or, if ``joint``, common) offset and scale from sampled values ``(n, C)``."""
    cols = [values.reshape(-1)] if joint else [values[:, j] for j in range(values.shape[1])]
    lo, scale = [], []
    for col in cols:
        p1, p99 = np.percentile(col, [1, 99])
        span = p99 - p1
        if span <= 0:
            span = float(col.max() - col.min())
        lo.append(float(col.min()) if span > 0 else float(col[0]))
        scale.append(span if span > 0 else 1.0)
    n = values.shape[1]
    lo_arr = np.array(lo * n if joint else lo, dtype=np.float64)
    scale_arr = np.array(scale * n if joint else scale, dtype=np.float64)
    return lo_arr, scale_arr


def _brightness(colors: np.ndarray, rgb: bool) -> np.ndarray:
    """The ordering key of each center (rows of ``colors``, in scaled units)."""
    if rgb:
        return colors[:, :3] @ LUMA.astype(np.float64)
    return colors.mean(axis=1)


def _color_table(
    dtype: Any,
    n_chan: int,
    centers: np.ndarray,
    lo: np.ndarray,
    scale: np.ndarray,
    nearest: Any,
) -> tuple[int, int, np.ndarray] | None:
    """A lookup table from (coarsened) color to label, for unsigned-integer color-only features.

    The color is cut to ``bits`` per channel (dropping ``shift`` low bits) so the table has at most
    2**18 cells. When ``shift`` is 0 every cell is one color and its label is computed exactly as a
    pixel's is. Otherwise a cell gets a label only if its whole box of colors lies, with a margin,
    inside one center's Voronoi region (checked at the box corners, where the linear difference of
    two squared distances peaks); the other cells are marked unsure and their pixels are computed
    one by one. Either way the labels equal those of the direct computation.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if dtype.kind != "u" or dtype.itemsize > 2 or n_chan > 3:
        return None
    depth = 8 * dtype.itemsize
    bits = min(depth, _TABLE_BITS // n_chan)
    shift = depth - bits
    levels = np.arange(1 << bits, dtype=np.int64)
    grids = np.meshgrid(*([levels] * n_chan), indexing="ij")
    cells = np.stack([g.reshape(-1) for g in grids], axis=1)  # in code order
    if shift == 0:
        return 0, bits, nearest(cells.astype(dtype))
    # the box of each cell in scaled feature units
    box_lo = ((cells << shift) - lo) / scale
    box_hi = ((cells << shift) + ((1 << shift) - 1) - lo) / scale
    mid = (box_lo + box_hi) / 2
    cc = (centers**2).sum(axis=1)
    best = np.argmin(cc[None, :] - 2 * mid @ centers.T, axis=1)
    sure = np.ones(len(cells), dtype=bool)
    cb = centers[best]  # (n, C)
    for i in range(len(centers)):
        a = cb - centers[i]  # d_best - d_i = (|cb|^2 - |ci|^2) - 2 x.a, largest at a corner
        worst = cc[best] - cc[i] + np.maximum(-2 * a * box_lo, -2 * a * box_hi).sum(axis=1)
        sure &= (best == i) | (worst < -_TABLE_MARGIN)
    # the labels of sure cells, computed exactly as a pixel's (at the cell's first color)
    cell_lut = np.full(len(cells), _UNSURE, dtype=np.uint8)
    if sure.any():
        cell_lut[sure] = nearest((cells[sure] << shift).astype(dtype))
    return shift, bits, cell_lut


@checked(SPEC)
def kmeans_segment(
    image: Any,
    *,
    k: int = 3,
    seed: int | None = 0,
    sample_size: int = 100_000,
    n_init: int = 3,
    spatial_weight: float = 0.0,
    smoothing: float = 0.0,
    spatial_ndim: int = 2,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    progress: ProgressCallback | None = None,
    return_centers: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment an image by k-means clustering of its pixel colors.

    The model is fitted on a seeded random sample of at most ``sample_size`` pixels drawn from the
    whole image or stack, then every pixel is assigned to its nearest center in chunks, so memory
    stays bounded (the output plus a few tens of MB). See the module docstring for the features,
    their scaling and the ordering rule.

    Parameters
    ----------
    image : array-like
        Grey, RGB/RGBA (channels last) or multichannel; 2D, 3D or a time stack; numpy or dask (read
        strip by strip); any real dtype. NaN pixels are left out of the fit and labelled 0.
    k : int
        Number of clusters, 2 to 32.
    seed : int or None
        Seed of the pixel sample and of the k-means initialization; the same seed gives the same
        labels.
    sample_size : int
        Pixels used to fit the model (all of them if the image has fewer). Must be at least ``k``.
    n_init : int
        k-means++ initializations tried on the sample; the best is kept.
    spatial_weight : float
        Weight of the pixel coordinates (0: color only). Larger values give compact clusters.
    smoothing : float
        Sigma in pixels of a Gaussian applied over the spatial axes before clustering (0: none).
    spatial_ndim : {2, 3}
        The trailing axes that are spatial (for coordinates and smoothing): 2 for slice by slice,
        3 for a volume. Either way one model serves the whole stack.
    rgb, channel_axis
        How to read color/channels; see :func:`napari_segkit.algorithms.image.to_channels_last`.
    progress : callable, optional
        ``progress(done, total)`` after each chunk; it may raise to stop the work.
    return_centers : bool
        Also return the center colors.

    Returns
    -------
    labels : ndarray of uint8
        The image's shape without its channel axis; 1..k ordered from darkest to brightest, 0 for
        NaN pixels.
    centers : ndarray of float64, shape (k, C)
        Only with ``return_centers``: row ``i`` is the mean color (in the input's units, smoothed
        if ``smoothing``) of label ``i + 1``.

    Raises
    ------
    ValueError
        For k outside 2..32 or larger than the number of distinct colors, a bad ``sample_size``,
        ``n_init``, ``spatial_weight`` or ``smoothing``, or an empty, all-NaN or non-numeric image.

    Examples
    --------
    >>> img = np.zeros((20, 20), np.uint8); img[:, 10:] = 200; img[15:, :] = 90
    >>> labels = kmeans_segment(img, k=3)
    >>> labels[0, 0], labels[16, 0], labels[0, 19]
    (np.uint8(1), np.uint8(2), np.uint8(3))
    """
    from sklearn.cluster import KMeans

    k = _check_k(k)
    if isinstance(sample_size, bool) or not isinstance(sample_size, numbers.Integral):
        raise ValueError(f"sample_size must be an integer; got sample_size={sample_size!r}")
    if sample_size < k:
        raise ValueError(f"sample_size must be at least k={k}; got sample_size={sample_size}")
    if isinstance(n_init, bool) or not isinstance(n_init, numbers.Integral) or n_init < 1:
        raise ValueError(f"n_init must be a positive integer; got n_init={n_init!r}")
    if not np.isfinite(spatial_weight) or spatial_weight < 0:
        raise ValueError(f"spatial_weight must be >= 0; got spatial_weight={spatial_weight}")
    if not np.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 (a sigma in pixels); got smoothing={smoothing}")

    if rgb is None and channel_axis is None and hasattr(image, "shape"):
        rgb = guess_rgb(tuple(image.shape))
    chans = to_channels_last(image, rgb=rgb, channel_axis=channel_axis)
    spatial = tuple(int(n) for n in chans.shape[:-1])
    n_chan = int(chans.shape[-1])
    sn = spatial_ndim_for(len(spatial), spatial_ndim)
    block = spatial[len(spatial) - sn :]
    use_xy = spatial_weight > 0
    n_feat = n_chan + (sn if use_xy else 0)
    check_memory(int(np.prod(spatial)), "the labels")

    reader = _Reader(chans, sn, smoothing)
    chunks = _chunks(spatial, sn, max(1, _CHUNK_VALUES // (n_feat + k + 2)))
    total = (2 if reader.is_float else 1) * len(chunks) + 1 + len(chunks)
    done = 0
    report(progress, done, total)

    # 1. the sample: uniform over valid (finite) pixels of the whole stack, seeded
    if reader.is_float:
        counts = []
        for c in chunks:
            counts.append(reader.finite_count(c))
            done += 1
            report(progress, done, total)
    else:
        counts = [c.size for c in chunks]
    n_valid = int(sum(counts))
    if n_valid == 0:
        raise ValueError("image has no finite value (all NaN or infinite)")
    rng = np.random.default_rng(seed)
    m = min(int(sample_size), n_valid)
    ranks = np.arange(n_valid) if m == n_valid else np.sort(rng.choice(n_valid, m, replace=False))
    sample = np.empty((m, n_feat), dtype=np.float64)
    cum = np.concatenate([[0], np.cumsum(counts)])
    filled = 0
    for i, c in enumerate(chunks):
        lo_i, hi_i = np.searchsorted(ranks, [cum[i], cum[i + 1]])
        if hi_i > lo_i:
            local = ranks[lo_i:hi_i] - cum[i]
            vals = reader.values(c)
            if reader.is_float:
                positions = np.flatnonzero(np.isfinite(vals).all(axis=1))[local]
            else:
                positions = local
            sample[filled : filled + len(local), :n_chan] = vals[positions]
            if use_xy:
                sample[filled : filled + len(local), n_chan:] = _coords(c, block, 1.0)[positions]
            filled += len(local)
        done += 1
        report(progress, done, total)
    sample = sample[:filled]
    if reader.halo and reader.is_float:  # a NaN-free pixel cannot become NaN by smoothing, but:
        sample = sample[np.isfinite(sample).all(axis=1)]

    # 2. scaling, distinct colors, the fit
    lo, scale = _robust_scale(sample[:, :n_chan], joint=bool(rgb))
    sample[:, :n_chan] -= lo
    sample[:, :n_chan] /= scale
    xy_factor = float(spatial_weight) / max(block) if use_xy else 0.0
    if use_xy:
        sample[:, n_chan:] *= xy_factor
    distinct = len(np.unique(sample, axis=0))
    if distinct < k:
        what = "distinct color(s)" if not use_xy else "distinct color-and-position feature(s)"
        where = "the image" if m == n_valid else f"a sample of {m} pixels of the image"
        raise ValueError(f"k={k} is larger than the number of {what} in {where}: {distinct}")
    # float32 fits about twice as fast; the scaled features are O(1), so nothing is lost
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(sample.astype(np.float32))
    centers = model.cluster_centers_.astype(np.float64)
    done += 1
    report(progress, done, total)

    # 3. order: 1 = darkest ... k = brightest; ties by the center's features in order
    keys = [centers[:, j] for j in range(n_feat - 1, -1, -1)]
    order = np.lexsort(keys + [_brightness(centers[:, :n_chan], bool(rgb))])
    lut = np.zeros(k, dtype=np.uint8)
    lut[order] = np.arange(1, k + 1, dtype=np.uint8)

    # 4. assign every pixel in chunks: argmin ||c||^2 - 2 x.c, in float32; x = (v - lo) / scale,
    # with the 1 / scale folded into the centers so a chunk costs one cast-and-subtract pass
    weights = centers.T * -2.0
    weights[:n_chan] /= scale[:, None]
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    cc = (centers**2).sum(axis=1).astype(np.float32)
    # subtract the offset in float32 where that is exact (small integers, float32 input)
    small = np.dtype(chans.dtype).itemsize <= 2 or np.dtype(chans.dtype) == np.float32
    lo32 = lo.astype(np.float32) if small else lo
    labels = np.zeros(spatial, dtype=np.uint8)

    def nearest(values: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        """Ordered labels (uint8) of feature rows: color ``values`` (n, C), scaled ``coords``."""
        x = np.empty((len(values), n_feat), dtype=np.float32)
        np.subtract(values, lo32, out=x[:, :n_chan], casting="unsafe")
        if coords is not None:
            x[:, n_chan:] = coords
        d = x @ weights
        d += cc
        out = lut[np.argmin(d, axis=1)]
        if reader.is_float:
            out[~np.isfinite(x[:, :n_chan]).all(axis=1)] = 0
        return out

    table = None
    if not use_xy and not reader.halo:
        table = _color_table(chans.dtype, n_chan, centers, lo, scale, nearest)

    def assign(c: _Chunk) -> None:
        out = labels[c.lead + (slice(c.r0, c.r1),)].reshape(-1)  # a view: strips are contiguous
        if table is None:
            coords = _coords(c, block, xy_factor) if use_xy else None
            out[:] = nearest(reader.values(c), coords)
            return
        raw = reader.raw(c)
        shift, bits, cell_lut = table
        code = np.right_shift(raw[:, 0], shift, dtype=np.int32)
        for f in range(1, n_chan):
            code <<= bits
            code |= np.right_shift(raw[:, f], shift, dtype=np.int32)
        np.take(cell_lut, code, out=out)
        if shift:
            unsure = np.flatnonzero(out == _UNSURE)
            if len(unsure):
                out[unsure] = nearest(raw[unsure])

    # numpy releases the GIL: a few threads assign strips in parallel, each in bounded memory
    workers = max(1, min(_THREADS, os.cpu_count() or 1, len(chunks)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(assign, c) for c in chunks]
        try:
            for f in futures:
                f.result()
                done += 1
                report(progress, done, total)
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    if not return_centers:
        return labels
    colors = centers[order, :n_chan] * scale + lo
    return labels, colors


def cluster_color_image(
    labels: np.ndarray, centers: np.ndarray, *, dtype: Any = np.float32
) -> np.ndarray:
    """Paint each pixel with its cluster's center color (the classic k-means "posterised" image).

    Parameters
    ----------
    labels : ndarray of int
        Labels 0..k from :func:`kmeans_segment`; 0 (NaN pixels) is painted 0.
    centers : ndarray, shape (k, C)
        Center colors, row ``i`` for label ``i + 1`` (``return_centers=True``).
    dtype : dtype
        The output dtype; integer dtypes get rounded, clipped center values.

    Returns
    -------
    ndarray
        ``labels.shape + (C,)``.

    Examples
    --------
    >>> labels = np.array([[1, 2], [2, 0]], np.uint8)
    >>> cluster_color_image(labels, np.array([[10.0, 0, 0], [0, 0, 250]]), dtype=np.uint8)[0, 1]
    array([  0,   0, 250], dtype=uint8)
    """
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or len(centers) == 0:
        raise ValueError(f"centers must be a (k, C) array; got shape {centers.shape}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or (labels.size and int(labels.max()) > len(centers)):
        raise ValueError(
            f"labels must be integers 0..{len(centers)} (one center per label); "
            f"got dtype {labels.dtype}, max {labels.max() if labels.size else None}"
        )
    dtype = np.dtype(dtype)
    table = np.zeros((len(centers) + 1, centers.shape[1]), dtype=np.float64)
    table[1:] = centers
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        table = np.clip(np.rint(table), info.min, info.max)
    elif dtype.kind == "b":
        table = table > 0.5
    return table.astype(dtype)[labels]
