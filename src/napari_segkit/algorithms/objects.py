"""From a mask to objects: connected components, small-object removal, hole filling.

Shared by every method that turns a foreground (or class) map into one label ID per object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi

from .image import check_spacing

_CHUNK = 1 << 18  # pixels per chunk of the passes that numpy would otherwise copy whole as intp


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= ndim:
        raise ValueError(
            f"connectivity must be between 1 (faces) and {ndim} (all neighbours) for "
            f"{ndim}D data; got {connectivity}"
        )
    return ndi.generate_binary_structure(ndim, connectivity)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary mask (in 2D, or in 3D for a volume)."""
    return ndi.binary_fill_holes(mask)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects of fewer than ``min_size`` pixels to 0 and renumber the rest 1..N, in place.

    Object order (by first appearance in raster order) is kept.
    """
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    n = int(labels.max(initial=0))
    if n == 0:
        return labels
    flat = labels.reshape(-1)  # a view of a C-contiguous array (a copy otherwise)
    counts = np.zeros(n + 1, dtype=np.intp)
    for start in range(0, flat.size, _CHUNK):  # bincount casts to intp: chunks bound that copy
        counts += np.bincount(flat[start : start + _CHUNK], minlength=n + 1)
    keep = counts >= max(min_size, 1)
    keep[0] = False
    if keep[1:].all():
        return labels
    lut = np.zeros(n + 1, dtype=labels.dtype)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    if not labels.flags.c_contiguous:
        np.take(lut, labels, out=labels, mode="clip")
        return labels
    for start in range(0, flat.size, _CHUNK):  # take buffers its index array: chunks again
        chunk = flat[start : start + _CHUNK]
        np.take(lut, chunk, out=chunk, mode="clip")
    return labels


def label_objects(
    mask: np.ndarray,
    *,
    connectivity: int = 1,
    min_size: int = 0,
    fill_holes: bool = False,
    dtype=np.int32,
) -> np.ndarray:
    """Connected components of a binary mask, one ID (1..N) per object.

    Parameters
    ----------
    mask : ndarray of bool
        Foreground, 2D or 3D.
    connectivity : int
        1 joins pixels that share a face (4-neighbours in 2D, 6 in 3D); ``mask.ndim`` joins all
        neighbours (8 in 2D, 26 in 3D).
    min_size : int
        Objects of fewer pixels are dropped.
    fill_holes : bool
        Fill the holes of each object first.
    dtype : dtype
        Output dtype.

    Examples
    --------
    >>> m = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1]], bool)
    >>> label_objects(m)
    array([[1, 1, 0, 0],
           [0, 0, 0, 2],
           [3, 0, 0, 2]], dtype=int32)
    """
    mask = np.asarray(mask, dtype=bool)
    structure = _structure(mask.ndim, connectivity)
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    labels = np.empty(mask.shape, dtype=dtype)
    label_rows(lambda r0, r1: mask[r0:r1], structure, labels)
    if min_size > 1:
        remove_small(labels, min_size)
    return labels


def classes_to_objects(
    classes: np.ndarray,
    *,
    connectivity: int = 1,
    min_size: int = 0,
    fill_holes: bool = False,
    background: int = 0,
) -> np.ndarray:
    """Objects from a class map: each connected region of every non-background class gets its own ID.

    With two classes (background and foreground) this is :func:`label_objects` of the foreground.
    """
    values = np.unique(classes)
    values = values[values != background]
    if len(values) <= 1:
        return label_objects(
            classes != background,
            connectivity=connectivity,
            min_size=min_size,
            fill_holes=fill_holes,
        )
    out = np.zeros(classes.shape, dtype=np.int32)
    offset = 0
    for value in values:  # one pass per class (a handful), never per pixel
        lab = label_objects(
            classes == value, connectivity=connectivity, min_size=min_size, fill_holes=fill_holes
        )
        sel = lab > 0
        out[sel] = lab[sel] + offset
        offset += int(lab.max(initial=0))
    return out


# ---- threads ----------------------------------------------------------------------------------
#: Fewest pixels worth a thread of their own.
_THREAD_PIXELS = 1 << 20


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def n_threads(n_pixels: int) -> int:
    """Threads worth using on ``n_pixels``: one per available core, each with >= 1M pixels."""
    return max(1, min(available_cores(), n_pixels // _THREAD_PIXELS))


def run_threads(func: Callable[[int], object], n: int, threads: int) -> list:
    """``[func(i) for i in range(n)]``, on ``threads`` threads (numpy and scipy.ndimage release
    the GIL in their loops, so the work overlaps)."""
    if threads <= 1 or n <= 1:
        return [func(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(threads, n)) as pool:
        return list(pool.map(func, range(n)))


def label_rows(
    rows: Callable[[int, int], np.ndarray],
    structure: np.ndarray,
    out: np.ndarray,
    *,
    threads: int | None = None,
) -> int:
    """``scipy.ndimage.label`` of a mask given row by row, into ``out``, on several threads.

    ``rows(r0, r1)`` returns the bool mask of rows ``r0 .. r1 - 1`` (along axis 0) of a mask of
    ``out.shape``; it is called once per strip, from the threads (so the mask need not exist
    whole: the threshold computes it strip by strip). Each thread labels one horizontal strip;
    a union-find over the label pairs that touch across strip borders joins them, and the final
    IDs are numbered as scipy numbers them, in raster order of each object's first pixel, so the
    result equals ``ndi.label(mask, structure)`` exactly. Returns the number of objects.
    """
    shape = out.shape
    if threads is None:
        threads = n_threads(int(np.prod(shape)))
    threads = max(1, min(threads, shape[0]))
    if threads == 1:
        return int(ndi.label(rows(0, shape[0]), structure=structure, output=out))
    bounds = np.linspace(0, shape[0], threads + 1).astype(int)

    def strip(i: int) -> int:
        r0, r1 = bounds[i], bounds[i + 1]
        return int(ndi.label(rows(r0, r1), structure=structure, output=out[r0:r1]))

    counts = np.array(run_threads(strip, threads, threads), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # label pairs that touch across each border: offsets of the structure into the next row
    centre = np.array(structure.shape) // 2
    steps = [d - centre for d in np.argwhere(structure) if d[0] - centre[0] == 1]
    firsts, seconds = [], []
    for i in range(threads - 1):
        above, below = out[bounds[i + 1] - 1], out[bounds[i + 1]]
        for step in steps:
            src = tuple(
                slice(None, -1) if e > 0 else slice(1, None) if e < 0 else slice(None)
                for e in step[1:]
            )
            dst = tuple(
                slice(1, None) if e > 0 else slice(None, -1) if e < 0 else slice(None)
                for e in step[1:]
            )
            a, b = above[src].ravel(), below[dst].ravel()
            both = (a > 0) & (b > 0)
            firsts.append(a[both].astype(np.int64) + offsets[i])
            seconds.append(b[both].astype(np.int64) + offsets[i + 1])
    n = int(offsets[-1])
    root = _union_min(n, np.concatenate(firsts), np.concatenate(seconds))
    # raster order of first pixels = order of the smallest strip label of each object
    is_root = root == np.arange(n + 1)
    is_root[0] = False
    new_id = np.cumsum(is_root)
    final = new_id[root].astype(out.dtype)

    def relabel(i: int) -> None:
        lut = final[offsets[i] : offsets[i] + counts[i] + 1].copy()
        lut[0] = 0
        if np.array_equal(lut, np.arange(len(lut))):
            return  # the first strip keeps its numbers
        flat = out[bounds[i] : bounds[i + 1]].reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            np.take(lut, chunk, out=chunk, mode="clip")

    run_threads(relabel, threads, threads)
    return int(new_id[-1])


def _union_min(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For labels 0..n joined by the pairs (a, b), each label's smallest joined label."""
    root = np.arange(n + 1, dtype=np.int64)
    if a.size == 0:
        return root
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (ia, ib)), shape=(nodes.size,) * 2)
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n + 1, dtype=np.int64)
    np.minimum.at(smallest, comp, nodes)
    root[nodes] = smallest[comp]
    return root


def _relabel_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One ID (1..N, in raster order of first appearance) per distinct pair (first, second) with
    ``first > 0``; 0 where ``first`` is 0."""
    out = np.zeros(first.shape, dtype=np.int32)
    sel = first > 0
    if not sel.any():
        return out
    a = first[sel].astype(np.int64)
    b = second[sel].astype(np.int64)
    key = a * (int(b.max()) + 1) + b
    _, first_index, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(len(first_index), dtype=np.int32)
    rank[np.argsort(first_index, kind="stable")] = np.arange(1, len(first_index) + 1)
    out[sel] = rank[inverse.reshape(-1)]
    return out


def _merge_shallow(regions: np.ndarray, dist: np.ndarray, ratio: float) -> np.ndarray:
    """Merge adjacent watershed regions whose shared border is not a neck.

    Two regions touching along a border where the distance map reaches more than ``ratio`` times
    the lower of their two peaks are one object (a bulge, not two touching objects).
    """
    n = int(regions.max(initial=0))
    if n < 2:
        return regions
    peak = np.zeros(n + 1, np.float32)
    sel = regions > 0
    np.maximum.at(peak, regions[sel], dist[sel])
    keys, heights = [], []
    for axis in range(regions.ndim):
        a = np.moveaxis(regions, axis, 0)
        d = np.moveaxis(dist, axis, 0)
        ra, rb = a[:-1], a[1:]
        border = (ra != rb) & (ra > 0) & (rb > 0)
        lo = np.minimum(ra[border], rb[border]).astype(np.int64)
        hi = np.maximum(ra[border], rb[border]).astype(np.int64)
        keys.append(lo * (n + 1) + hi)
        heights.append(np.minimum(d[:-1][border], d[1:][border]))
    keys = np.concatenate(keys)
    if keys.size == 0:
        return regions
    heights = np.concatenate(heights)
    uniq, inv = np.unique(keys, return_inverse=True)
    saddle = np.zeros(len(uniq), np.float32)
    np.maximum.at(saddle, inv.reshape(-1), heights)
    lo, hi = uniq // (n + 1), uniq % (n + 1)
    merge = saddle > ratio * np.minimum(peak[lo], peak[hi])
    if not merge.any():
        return regions
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # merge the highest saddles first (deterministic)
    for k in np.flatnonzero(merge)[np.argsort(-saddle[merge], kind="stable")]:
        ra, rb = root(int(lo[k])), root(int(hi[k]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    lut = np.array([root(i) for i in range(n + 1)], dtype=regions.dtype)
    return lut[regions]


def split_touching(
    mask_or_labels: np.ndarray,
    *,
    diameter: float | None = None,
    spacing=None,
    image: np.ndarray | None = None,
    neck_ratio: float = 1.0,
) -> np.ndarray:
    """Split touching round objects (nuclei) apart: a seeded watershed on the distance transform.

    The approach of "Voronoi-Otsu labelling", on a mask: the distance transform of the mask
    (anisotropic with ``spacing``), smoothed by a Gaussian of 0.05 diameter, has one maximum per
    round object; maxima within 0.25 diameter of a higher one, or lower than 0.1 diameter, are
    dropped; the mask is flooded from the rest. Optionally (``neck_ratio < 1``), two regions whose
    shared border is wide (the distance there above ``neck_ratio`` times the lower peak: a bulge,
    not a neck) are merged back. Objects never cross the borders of the input labels. The
    constants were chosen on generated "train" images (:func:`napari_segkit.datasets.
    realistic_nuclei`).

    Parameters
    ----------
    mask_or_labels : ndarray
        2D or 3D: a binary mask (objects = connected components) or instance labels (each object
        is split on its own).
    diameter : float, optional
        Typical object diameter in the units of ``spacing`` (pixels without it). None: measured
        from the mask with :func:`napari_segkit.algorithms.size.diameter_from_mask`.
    spacing : sequence of float, optional
        Pixel/voxel size per axis, e.g. ``(2.0, 1.0, 1.0)`` for z-steps twice the pixel size.
    image : ndarray, optional
        The intensity image (same shape). If given, the watershed floods its inverted, smoothed
        intensity instead of the distance map, so cuts follow dark gaps between objects (seeds
        still come from the distance transform).
    neck_ratio : float
        In (0, 1]. Below 1, merge two regions when the distance map on their shared border
        exceeds ``neck_ratio`` times the lower of their peaks (lower merges more). 1 (default)
        keeps every seed's region.

    Returns
    -------
    ndarray of int32
        Labels 1..N.

    Raises
    ------
    ValueError
        On a bad diameter (0, negative, NaN, larger than the image), spacing or shape.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :64]
    >>> two = ((yy - 20) ** 2 + (xx - 20) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    >>> int(label_objects(two).max()), int(split_touching(two).max())
    (1, 2)
    """
    from skimage.segmentation import find_boundaries, watershed

    from . import size

    arr = np.asarray(mask_or_labels)
    if arr.ndim not in (2, 3):
        raise ValueError(f"mask_or_labels must be 2D or 3D; got {arr.ndim} dimensions")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"mask_or_labels must be a bool or integer array; got dtype {arr.dtype}")
    if not 0 < neck_ratio <= 1:
        raise ValueError(f"neck_ratio must be in (0, 1]; got {neck_ratio}")
    spacing = check_spacing(spacing, arr.ndim) or (1.0,) * arr.ndim
    if arr.dtype == bool or int(arr.max(initial=0)) <= 1:
        labels = label_objects(arr > 0, connectivity=1)
        mask = labels > 0
    else:
        labels = arr.astype(np.int32, copy=False)
        mask = labels > 0
    if not mask.any():
        return np.zeros(arr.shape, np.int32)
    extent = [n * s for n, s in zip(arr.shape, spacing, strict=True)]
    if diameter is None:
        diameter = size.diameter_from_mask(mask, spacing=spacing)
        if not np.isfinite(diameter):
            return _relabel_pairs(labels, np.zeros_like(labels))
        diameter = min(diameter, max(extent))  # a measurement never exceeds the image
    diameter = size.check_diameter(diameter, shape=extent)
    # distance to the background and to other labels' borders
    inner = mask & ~find_boundaries(labels, mode="inner") if labels.max() > 1 else mask
    dist = ndi.distance_transform_edt(inner, sampling=spacing).astype(np.float32)
    sigma = [0.05 * diameter / s for s in spacing]
    dist = ndi.gaussian_filter(dist, sigma, truncate=3.0) * mask
    footprint = [max(3, 2 * int(round(0.25 * diameter / s)) + 1) for s in spacing]
    peaks = (ndi.maximum_filter(dist, size=footprint, mode="constant") == dist) & mask
    peaks &= dist >= 0.1 * diameter
    markers, _ = ndi.label(peaks, structure=ndi.generate_binary_structure(arr.ndim, arr.ndim))
    if image is not None:
        img = np.asarray(image, dtype=np.float32)
        if img.shape != arr.shape:
            raise ValueError(f"image has shape {img.shape}; mask_or_labels has {arr.shape}")
        surface = -ndi.gaussian_filter(img, [0.05 * diameter / s for s in spacing])
    else:
        surface = -dist
    regions = watershed(surface, markers, mask=mask)
    # regions never cross input labels: split a region that straddles two labels
    regions = _relabel_pairs(labels, regions) if labels.max() > 1 else regions
    if neck_ratio < 1:
        regions = _merge_shallow(regions, dist, neck_ratio)
    return _relabel_pairs(labels, regions)
