"""From a mask to objects: connected components, small-object removal, hole filling.

Shared by every method that turns a foreground (or class) map into one label ID per object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


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
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = counts >= max(min_size, 1)
    keep[0] = False
    if keep[1:].all():
        return labels
    lut = np.zeros(n + 1, dtype=labels.dtype)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    # mode="clip" lets numpy write into the index array element by element without a buffer copy
    np.take(lut, labels, out=labels, mode="clip")
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
    ndi.label(mask, structure=structure, output=labels)
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
    spacing = size._check_spacing(spacing, arr.ndim)
    if arr.dtype == bool or int(arr.max(initial=0)) <= 1:
        labels = label_objects(arr > 0, connectivity=1)
        mask = labels > 0
    else:
        labels = arr.astype(np.int32, copy=False)
        mask = labels > 0
    if not mask.any():
        return np.zeros(arr.shape, np.int32)
    if diameter is None:
        diameter = size.diameter_from_mask(mask, spacing=spacing)
        if not np.isfinite(diameter):
            return _relabel_pairs(labels, np.zeros_like(labels))
    extent = [n * s for n, s in zip(arr.shape, spacing, strict=True)]
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
