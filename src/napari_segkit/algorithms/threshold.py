"""Threshold segmentation: global, multi-level and local/adaptive thresholds, as classes or objects.

Pure numpy/scikit-image; no napari, no Qt. Every function works on one channel; use
:func:`threshold_segment` for any image napari holds (RGB, multichannel, stacks, dask).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage import filters

from ..params import MethodSpec, Param, checked, register
from .image import (
    ProgressCallback,
    apply_blockwise,
    check_spacing,
    finite_values,
    relative_spacing,
    spatial_ndim_for,
    to_grey,
)
from .objects import (
    _structure,
    classes_to_objects,
    label_objects,
    label_rows,
    n_threads,
    remove_small,
    run_threads,
)
from .objects import split_touching as split_touching_objects

#: Global methods: one threshold for the whole plane/volume.
GLOBAL_METHODS = ("mean", "otsu", "li", "yen", "triangle", "isodata", "manual")
#: Multi-level methods: several cut points, several classes.
MULTILEVEL_METHODS = ("multiotsu", "cut_points")
#: Local/adaptive method: a threshold per pixel from its neighbourhood.
LOCAL_METHODS = ("local",)
METHODS = GLOBAL_METHODS + MULTILEVEL_METHODS + LOCAL_METHODS
OUTPUTS = ("objects", "classes")

_CHUNK = 1 << 18  # elements per histogram chunk: a bounded (2 MiB) int64 temporary


def histogram(image: np.ndarray, nbins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the finite values of ``image``, as scikit-image computes it, in bounded memory.

    Integer images get one bin per integer value (as ``skimage.exposure.histogram`` does for them);
    float images ``nbins`` equal bins between their finite minimum and maximum (the counts of
    ``numpy.histogram`` with those float64 edges). The image is read in chunks, on several threads
    for a large image, so no full-size temporary is made.

    Returns
    -------
    counts, centers : ndarray
    """
    flat = np.asarray(image).reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        flat = flat.view(np.uint8)
        kind = "u"
    if flat.size == 0:
        raise ValueError("image is empty")
    starts = range(0, flat.size, _CHUNK)
    threads = n_threads(flat.size)
    parts = np.array_split(np.arange(len(starts)), threads)

    def each(func, combine):  # combine(func(chunk) for every chunk), the chunks over the threads
        def part(i):
            acc = None
            for j in parts[i]:
                r = func(flat[starts[j] : starts[j] + _CHUNK])
                acc = r if acc is None else combine(acc, r)
            return acc

        results = [r for r in run_threads(part, len(parts), threads) if r is not None]
        out = results[0]
        for r in results[1:]:
            out = combine(out, r)
        return out

    if kind == "u" and flat.dtype.itemsize <= 2:
        # one bin per value: bincount counts straight from the data, no min/max pass needed
        width = 1 << (8 * flat.dtype.itemsize)
        counts = each(lambda c: np.bincount(c, minlength=width), np.add)
        nonzero = np.flatnonzero(counts)
        lo, hi = int(nonzero[0]), int(nonzero[-1])
        return counts[lo : hi + 1], np.arange(lo, hi + 1)
    if kind in "ui":
        lo = int(each(np.min, min))
        hi = int(each(np.max, max))
        if hi - lo < 2**24:

            def count(c):
                return np.bincount(c.astype(np.int64) - lo, minlength=hi - lo + 1)

            return each(count, np.add), np.arange(lo, hi + 1)
        # an enormous integer range: float bins
    lo, hi, finite = each(
        _finite_range, lambda a, b: (min(a[0], b[0]), max(a[1], b[1]), a[2] and b[2])
    )
    if lo > hi:
        raise ValueError("image has no finite value (all NaN or infinite)")
    edges = (
        np.linspace(lo, hi, nbins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, nbins + 1)
    )
    counts = each(lambda c: _bin_counts(c, edges, finite), np.add)
    return counts, (edges[:-1] + edges[1:]) / 2


def _finite_range(chunk: np.ndarray) -> tuple[float, float, bool]:
    """The smallest and largest finite value of ``chunk`` as floats ((inf, -inf) if none), and
    whether all of its values are finite."""
    lo, hi = chunk.min(), chunk.max()
    if chunk.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or inf
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size == 0:
            return np.inf, -np.inf, False
        return float(chunk.min()), float(chunk.max()), False
    return float(lo), float(hi), True


def _bin_counts(chunk: np.ndarray, edges: np.ndarray, finite: bool) -> np.ndarray:
    """``numpy.histogram(chunk, bins=edges)[0]`` for equal-width float64 ``edges`` spanning the
    finite values, non-finite values left out (``finite``: there are none), by arithmetic where
    numpy sorts for explicit edges: a bin index from the width, then moved by one where the edges
    themselves say so, so that a value on an edge falls as numpy puts it (``edges[i] <= x <
    edges[i + 1]``, the last bin closed)."""
    x = chunk.astype(np.float64)
    if not finite:
        x = x[np.isfinite(x)]
    nbins = len(edges) - 1
    with np.errstate(over="ignore"):
        scale = nbins / (edges[-1] - edges[0])
    if not np.isfinite(scale):  # a range of a few subnormal numbers
        return np.histogram(x, bins=edges)[0]
    t = x - edges[0]
    t *= scale
    idx = t.astype(np.intp)
    del t
    np.minimum(idx, nbins - 1, out=idx)  # x >= edges[0]: no index below 0
    idx -= x < edges[idx]
    upper = np.append(edges[1:-1], np.inf)  # the last bin takes its upper edge
    idx += x >= upper[idx]
    return np.bincount(idx, minlength=nbins)


def threshold_value(
    image: np.ndarray,
    method: str = "otsu",
    *,
    value: float | None = None,
    nbins: int = 256,
) -> float:
    """One global threshold for ``image``.

    Parameters
    ----------
    image : ndarray
        One channel, any shape. NaN and infinite values are ignored.
    method : {'mean', 'otsu', 'li', 'yen', 'triangle', 'isodata', 'manual'}
        'mean' is the mean intensity (the classic tutorial's rule); 'manual' returns ``value``.
    value : float, optional
        The threshold for ``method='manual'``.
    nbins : int
        Histogram bins for float images.

    Returns
    -------
    float
        Pixels strictly above it are foreground.

    Examples
    --------
    >>> img = np.array([[0, 0, 10, 10]], np.uint8)
    >>> threshold_value(img, "mean")
    5.0
    >>> threshold_value(img, "otsu")
    0.0
    """
    if method not in GLOBAL_METHODS:
        raise ValueError(f"method must be one of {GLOBAL_METHODS}; got {method!r}")
    if method == "manual":
        if value is None or not np.isfinite(value):
            raise ValueError(f"method='manual' needs a finite value; got value={value!r}")
        return float(value)
    image = np.asarray(image)
    if method == "mean":
        return float(np.mean(finite_values(image), dtype=np.float64))
    if method == "li":
        values = finite_values(image)
        if values.dtype.kind in "iu" and values.size and int(np.ptp(values)) > 2**24:
            # scikit-image histograms integers one bin per value: a huge range would not fit
            values = values.astype(np.float64)
        return float(filters.threshold_li(values))
    hist = histogram(image, nbins)
    if hist[0].size == 1 or np.count_nonzero(hist[0]) <= 1:
        # a constant image: nothing is above its only value
        return float(hist[1][np.flatnonzero(hist[0])[0]])
    func = {
        "otsu": filters.threshold_otsu,
        "yen": filters.threshold_yen,
        "isodata": filters.threshold_isodata,
    }.get(method)
    if func is not None:
        return float(func(hist=hist))
    # triangle takes no histogram argument in scikit-image: give it the finite values
    return float(filters.threshold_triangle(finite_values(image), nbins=nbins))


def multilevel_thresholds(
    image: np.ndarray,
    *,
    cut_points: Sequence[float | str] | None = None,
    classes: int = 3,
    nbins: int = 256,
) -> np.ndarray:
    """Sorted thresholds that split ``image`` into several intensity classes.

    Parameters
    ----------
    image : ndarray
        One channel.
    cut_points : sequence of float or str, optional
        The thresholds to use. A string names a global method computed on ``image`` (e.g. "mean").
        Without it, multi-Otsu finds ``classes - 1`` thresholds.
    classes : int
        Number of classes for multi-Otsu (2 to 10).

    Examples
    --------
    >>> img = np.linspace(0, 1, 8).reshape(2, 4)
    >>> multilevel_thresholds(img, cut_points=["mean", 0.25, 0.75])
    array([0.25, 0.5 , 0.75])
    """
    if cut_points is not None:
        if len(cut_points) == 0:
            raise ValueError("cut_points is empty: give at least one threshold")
        values = []
        for cut in cut_points:
            if isinstance(cut, str):
                values.append(threshold_value(image, cut.strip().lower(), nbins=nbins))
            else:
                if not np.isfinite(cut):
                    raise ValueError(
                        f"cut_points must be finite numbers or method names; got {cut!r}"
                    )
                values.append(float(cut))
        return np.unique(values)
    if not 2 <= classes <= 10:
        raise ValueError(f"classes must be between 2 and 10; got {classes}")
    hist = histogram(image, nbins)
    if np.count_nonzero(hist[0]) < classes:
        raise ValueError(
            f"the image has {np.count_nonzero(hist[0])} distinct value(s): too few for {classes} classes"
        )
    return np.asarray(filters.threshold_multiotsu(classes=classes, hist=hist), dtype=np.float64)


def parse_cut_points(text: str) -> list[float | str]:
    """Parse "mean, 0.5, 0.25" into ``['mean', 0.5, 0.25]`` (numbers or global method names)."""
    out: list[float | str] = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            if item.lower() not in GLOBAL_METHODS or item.lower() == "manual":
                raise ValueError(
                    f"cut point {item!r} is neither a number nor one of "
                    f"{tuple(m for m in GLOBAL_METHODS if m != 'manual')}"
                ) from None
            out.append(item.lower())
    if not out:
        raise ValueError(f"no cut point in {text!r}: write numbers such as 'mean, 0.5, 0.25'")
    return out


def _classes(plane: np.ndarray, thresholds: np.ndarray, dark: bool) -> np.ndarray:
    """Class index 0..len(thresholds) per pixel (NaN -> 0), without an int64 temporary."""
    out = np.zeros(plane.shape, dtype=np.uint8 if len(thresholds) < 255 else np.uint16)
    for t in thresholds:  # a few cut points: vectorised over pixels
        if dark:
            out += plane <= t
        else:
            out += plane > t
    return out  # NaN compares False either way: background


def _is(name: str, *allowed: str):
    return lambda v: v.get(name) in allowed


#: The one declaration of the threshold method's parameters (function, widget, CLI, docs).
SPEC = register(
    MethodSpec(
        name="threshold",
        title="Threshold",
        function="napari_segkit.algorithms.threshold:threshold_segment",
        description="Global, multi-level or local intensity thresholds, as classes or objects.",
        uses_spacing=True,
        params=(
            Param(
                "method",
                str,
                "otsu",
                "How the threshold is chosen: a global method, multi-level cut points, or a "
                "local (adaptive) threshold.",
                choices=(
                    ("Otsu", "otsu"),
                    ("Mean", "mean"),
                    ("Li", "li"),
                    ("Yen", "yen"),
                    ("Triangle", "triangle"),
                    ("Isodata", "isodata"),
                    ("Manual value", "manual"),
                    ("Multi-Otsu (N classes)", "multiotsu"),
                    ("Manual cut points", "cut_points"),
                    ("Local / adaptive", "local"),
                ),
            ),
            Param(
                "value",
                float,
                None,
                "The threshold for 'manual', in the image's own units.",
                when=_is("method", "manual"),
                none_label="none",
            ),
            Param(
                "cut_points",
                str,
                "mean, 0.5, 0.25",
                "Comma-separated numbers or method names for 'cut_points', e.g. 'mean, 0.5, 0.25'.",
                when=_is("method", "cut_points"),
                also=(list, tuple),
            ),
            Param(
                "classes",
                int,
                3,
                "Number of classes for 'multiotsu'.",
                min=2,
                max=10,
                when=_is("method", "multiotsu"),
            ),
            Param(
                "block_size",
                int,
                35,
                "Neighbourhood size (odd, pixels) of the local threshold.",
                min=3,
                max=1001,
                odd=True,
                when=_is("method", "local"),
            ),
            Param(
                "offset",
                float,
                0.0,
                "Subtracted from the local threshold.",
                step=0.01,
                when=_is("method", "local"),
            ),
            Param("dark", bool, False, "Objects are darker than the background."),
            Param(
                "output",
                str,
                "objects",
                "'objects': one ID per connected object; 'classes': the intensity class of every "
                "pixel.",
                choices=(("objects (one ID each)", "objects"), ("classes", "classes")),
                cli="--as",
            ),
            Param(
                "smoothing",
                float,
                1.0,
                "Gaussian blur (sigma, x pixels; along z scaled by the voxel spacing) of the "
                "image before its objects are thresholded, so that noise specks do not become "
                "objects (as Voronoi-Otsu labelling); 0: off.",
                label="smoothing (px)",
                min=0.0,
                max=50.0,
                step=0.5,
                when=_is("output", "objects"),
            ),
            Param(
                "min_size",
                int,
                20,
                "Objects with fewer pixels are dropped.",
                label="min size (px)",
                min=0,
                when=_is("output", "objects"),
            ),
            Param(
                "fill_holes",
                bool,
                True,
                "Fill holes inside objects.",
                when=_is("output", "objects"),
            ),
            Param(
                "connectivity",
                int,
                1,
                "Which neighbours join an object.",
                choices=(
                    ("faces (4 in 2D, 6 in 3D)", 1),
                    ("faces + edges (8 in 2D, 18 in 3D)", 2),
                    ("all neighbours (8 / 26)", 3),
                ),
                when=_is("output", "objects"),
            ),
            Param(
                "split_touching",
                bool,
                True,
                "Split touching round objects (nuclei) with a seeded watershed on the distance "
                "transform, seeds spaced by the object diameter.",
                label="split touching objects",
                when=_is("output", "objects"),
            ),
            Param(
                "diameter",
                float,
                None,
                "Typical object diameter in (x) pixels that spaces the seeds; auto: measured "
                "from the mask.",
                label="object diameter (px)",
                optional=True,
                min=2.0,
                max=2000.0,
                step=1.0,
                when=lambda v: v.get("output") == "objects" and v.get("split_touching"),
            ),
        ),
    )
)


def gaussian_smooth(block: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """A Gaussian blur of ``sigma`` pixels: one number for every axis, or one per axis (0: that
    axis is not blurred). Integer images stay integers of their dtype (rounded): thresholds
    computed on them stay exact, in memory and block by block. Floating-point images give
    float32 (float64 stays float64); NaN pixels are left out of the average of their neighbours
    and stay NaN.

    Raises
    ------
    ValueError
        A negative or non-finite sigma, or not one per axis.

    Examples
    --------
    >>> x = np.array([0.0, 0.0, 4.0, 0.0, np.nan, 0.0])
    >>> np.round(gaussian_smooth(x, 1.0), 2)
    array([0.23, 0.97, 1.69, 1.28,  nan, 0.03])
    >>> gaussian_smooth(np.array([0, 0, 200, 0, 0], np.uint8), 1.0)
    array([12, 48, 80, 48, 12], dtype=uint8)
    >>> spot = np.zeros((3, 5), np.uint8); spot[1, 2] = 200
    >>> gaussian_smooth(spot, (0, 1.0))  # along x only
    array([[ 0,  0,  0,  0,  0],
           [12, 48, 80, 48, 12],
           [ 0,  0,  0,  0,  0]], dtype=uint8)
    """
    from scipy import ndimage as ndi

    block = np.asarray(block)
    sigmas = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if sigmas.ndim != 1 or len(sigmas) not in (1, block.ndim):
        raise ValueError(f"sigma must be one number or one per axis ({block.ndim}); got {sigma!r}")
    if not (np.isfinite(sigmas).all() and (sigmas >= 0).all()):
        raise ValueError(f"sigma must be finite and >= 0; got {sigma!r}")
    if not (sigmas > 0).any():
        return block
    sigma = float(sigmas[0]) if len(sigmas) == 1 else tuple(float(v) for v in sigmas)
    kind = block.dtype.kind
    if kind in "iub":
        wide = block.dtype.itemsize > 2
        x = ndi.gaussian_filter(block.astype(np.float64 if wide else np.float32), sigma)
        if kind == "b":
            return x
        info = np.iinfo(block.dtype)
        top = np.nextafter(float(info.max), 0.0) if wide else info.max
        return np.clip(np.rint(x), info.min, top).astype(block.dtype)
    x = block.astype(np.float64 if block.dtype == np.float64 else np.float32, copy=False)
    finite = np.isfinite(x)
    if finite.all():
        return ndi.gaussian_filter(x, sigma)
    weight = ndi.gaussian_filter(finite.astype(x.dtype), sigma)
    total = ndi.gaussian_filter(np.where(finite, x, 0), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    out[~finite] = np.nan
    return out


def _label_above(
    plane: np.ndarray, t: np.float64, dark: bool, connectivity: int, min_size: int
) -> np.ndarray:
    """``label_objects(plane > t)`` (``<=`` if ``dark``; NaN is background), the comparison made
    strip by strip inside the labelling threads. ``t`` stays float64 so that the comparison is
    made in float64, as ``_classes`` makes it."""
    structure = _structure(plane.ndim, min(connectivity, plane.ndim))
    labels = np.empty(plane.shape, dtype=np.int32)
    compare = np.less_equal if dark else np.greater
    label_rows(lambda r0, r1: compare(plane[r0:r1], t), structure, labels)
    if min_size > 1:
        remove_small(labels, min_size)
    return labels


def threshold_plane(
    plane: np.ndarray,
    *,
    method: str = "otsu",
    value: float | None = None,
    cut_points: Sequence[float | str] | None = None,
    classes: int = 3,
    block_size: int = 35,
    offset: float = 0.0,
    dark: bool = False,
    output: str = "objects",
    min_size: int = 0,
    fill_holes: bool = False,
    connectivity: int = 1,
    split_touching: bool = True,
    diameter: float | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Threshold one 2D plane or 3D volume of one channel; see :func:`threshold_segment`.

    ``spacing`` (one pixel/voxel size per axis of ``plane``) is used by the split of touching
    objects, ``diameter`` staying in pixels of the last axis; the plane is not smoothed here.
    """
    plane = np.asarray(plane)
    rel = None if spacing is None else relative_spacing(spacing, plane.ndim)
    if method in GLOBAL_METHODS:
        thresholds = np.array([threshold_value(plane, method, value=value)])
        if output == "objects" and not fill_holes and not split_touching:
            # compare and label strip by strip on threads: no full-size mask
            return _label_above(plane, thresholds[0], dark, connectivity, min_size)
        mask = _classes(plane, thresholds, dark)
    elif method == "multiotsu":
        mask = _classes(plane, multilevel_thresholds(plane, classes=classes), dark)
    elif method == "cut_points":
        if cut_points is None:
            raise ValueError("method='cut_points' needs cut_points, e.g. ['mean', 0.5, 0.25]")
        mask = _classes(plane, multilevel_thresholds(plane, cut_points=cut_points), dark)
    elif method == "local":
        if block_size < 3 or block_size % 2 == 0:
            raise ValueError(f"block_size must be an odd number >= 3; got {block_size}")
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            finite_values(plane)  # raises on all-NaN
            plane = np.where(np.isfinite(plane), plane, np.nanmin(plane))
        local = filters.threshold_local(plane, block_size, method="gaussian", offset=offset)
        mask = (plane <= local) if dark else (plane > local)
        mask = mask.astype(np.uint8)
    else:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")

    if output == "classes":
        return mask
    if output != "objects":
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    connectivity = min(connectivity, plane.ndim)
    if mask.max(initial=0) <= 1:
        labels = label_objects(
            mask.view(bool) if mask.dtype == np.uint8 else mask > 0,
            connectivity=connectivity,
            min_size=min_size,
            fill_holes=fill_holes,
        )
    else:
        labels = classes_to_objects(
            mask, connectivity=connectivity, min_size=min_size, fill_holes=fill_holes
        )
    if split_touching and labels.max(initial=0) > 0:
        labels = split_touching_objects(labels, diameter=diameter, spacing=rel)
        if min_size > 1:
            remove_small(labels, min_size)
    return labels


@checked(SPEC)
def threshold_segment(
    image: Any,
    *,
    method: str = "otsu",
    value: float | None = None,
    cut_points: Sequence[float | str] | str | None = "mean, 0.5, 0.25",
    classes: int = 3,
    block_size: int = 35,
    offset: float = 0.0,
    dark: bool = False,
    output: str = "objects",
    smoothing: float = 1.0,
    min_size: int = 20,
    fill_holes: bool = True,
    connectivity: int = 1,
    split_touching: bool = True,
    diameter: float | None = None,
    spatial_ndim: int = 2,
    spacing: Sequence[float] | None = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Segment an image by thresholding its intensity.

    Parameters
    ----------
    image : array-like
        Grey, RGB/RGBA or multichannel; 2D, 3D or a time stack; numpy or dask; any real dtype.
        RGB becomes luminance; a multichannel image uses ``channel`` along ``channel_axis``.
        NaN pixels are ignored when computing thresholds and are background.
    method : str
        Global: 'mean', 'otsu', 'li', 'yen', 'triangle', 'isodata', 'manual' (uses ``value``).
        Multi-level: 'multiotsu' (``classes`` classes) or 'cut_points' (uses ``cut_points``).
        Local/adaptive: 'local' (Gaussian-weighted neighbourhood of ``block_size``, minus ``offset``).
    value : float, optional
        Threshold for 'manual'.
    cut_points : sequence or str, optional
        Thresholds for 'cut_points': numbers or global method names, or a string such as
        ``"mean, 0.5, 0.25"`` (which on a 0..1 image gives 4 classes).
    classes : int
        Number of classes for 'multiotsu'.
    block_size, offset : int, float
        Neighbourhood size (odd) and offset for 'local'.
    dark : bool
        Objects are darker than the background (foreground below the threshold).
    output : {'objects', 'classes'}
        'classes': each pixel gets its intensity class (0 = background, 1.. above each cut point).
        'objects': each connected region of a non-background class gets its own ID.
    smoothing : float
        'objects': the sigma (pixels of the last axis) of a Gaussian blur of each plane (volume)
        before its threshold is computed and applied (NaN pixels left out of the blur), so that
        noise specks do not become objects; 0 turns it off. With ``spacing`` the sigma along
        each axis is ``smoothing / relative spacing`` pixels (the same physical width). On
        generated 3D nuclei (8 volumes) the default 1 took Otsu objects from AP@0.5 0.004
        (thousands of noise objects) to 0.59; on 2D ones it changed little.
    min_size : int
        'objects': drop objects with fewer pixels (voxels; default 20, as the widget and the
        CLI).
    fill_holes : bool
        'objects': fill holes inside objects.
    connectivity : {1, 2, 3}
        'objects': 1 joins face neighbours only; 2 also edge neighbours; 3 (or ``ndim``) all.
    split_touching : bool
        'objects': split touching round objects (nuclei) apart with a seeded watershed on the
        distance transform of each object
        (:func:`napari_segkit.algorithms.objects.split_touching`). False keeps one object per
        connected region.
    diameter : float, optional
        'objects' with ``split_touching``: the typical object diameter in pixels (of the last
        axis, x), which spaces the watershed seeds. None measures it from each plane's
        (volume's) mask.
    spatial_ndim : {2, 3}
        Threshold each 2D plane on its own (2) or each 3D volume as a whole (3).
        Object IDs are unique across the whole stack.
    spacing : sequence of float, optional
        The pixel (voxel) size along each of the ``spatial_ndim`` axes, e.g. ``(dz, dy, dx)`` of
        a z-stack (napari's layer scale; any unit, only the ratios count). The smoothing and the
        split of touching objects then work in physical space: sizes stay in pixels of the last
        axis, scaled along the others (z steps 3x the pixel size: a third of the sigma in z).
        ``min_size`` (voxels) and the local ``block_size`` (pixels along every axis) are not
        scaled. None: square pixels (cubic voxels).
    rgb, channel_axis, channel
        How to read colour/channels; see :func:`napari_segkit.algorithms.image.to_grey`.
    progress : callable, optional
        ``progress(done, total)`` after each plane/volume.

    Returns
    -------
    labels : ndarray
        Same shape as the image without its channel axis; int32 for objects, uint8 for classes.

    Raises
    ------
    ValueError
        On an unknown method or output, a missing ``value``/``cut_points``, an empty, all-NaN or
        non-numeric image, a ``spacing`` that is not ``spatial_ndim`` positive numbers.

    Examples
    --------
    >>> img = np.zeros((8, 8)); img[1:3, 1:3] = 1; img[5:7, 4:7] = 1
    >>> labels = threshold_segment(img, method="otsu", min_size=0)
    >>> int(labels.max())
    2
    >>> int(threshold_segment(img, method="manual", value=0.5, output="classes").sum())
    10
    >>> yy, xx = np.mgrid[:40, :64]
    >>> two = ((yy - 20) ** 2 + (xx - 20) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    >>> int(threshold_segment(two * 1.0).max()), int(threshold_segment(two * 1.0, split_touching=False).max())
    (2, 1)
    >>> vol = np.repeat(two[None], 8, axis=0) * 1.0  # a z-stack with z steps 3x the pixel size
    >>> int(threshold_segment(vol, spatial_ndim=3, spacing=(3.0, 1.0, 1.0)).max())
    2
    """
    if diameter is not None:
        from .size import check_diameter

        check_diameter(diameter)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    if isinstance(cut_points, str):
        cut_points = parse_cut_points(cut_points)
    if method == "manual" and (value is None or not np.isfinite(value)):
        raise ValueError(f"method='manual' needs a finite value; got value={value!r}")
    if method == "cut_points" and not cut_points:
        raise ValueError("method='cut_points' needs cut_points, e.g. 'mean, 0.5, 0.25'")
    smoothing = float(smoothing)  # checked against its declaration (>= 0, finite)
    blur = output == "objects" and smoothing > 0
    grey = to_grey(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    rel = _relative_spacing(spacing, grey.ndim, spatial_ndim)
    sigma = _smoothing_sigma(smoothing, rel)

    def one(block: np.ndarray) -> np.ndarray:
        return threshold_plane(
            gaussian_smooth(block, sigma) if blur else block,
            method=method,
            value=value,
            cut_points=cut_points,
            classes=classes,
            block_size=block_size,
            offset=offset,
            dark=dark,
            output=output,
            min_size=min_size,
            fill_holes=fill_holes,
            connectivity=connectivity,
            split_touching=split_touching,
            diameter=diameter,
            spacing=rel,
        )

    dtype = np.int32 if output == "objects" else np.uint8
    return apply_blockwise(
        one,
        grey,
        spatial_ndim=spatial_ndim,
        dtype=dtype,
        unique_ids=output == "objects",
        progress=progress,
    )


def _relative_spacing(spacing: Any, ndim: int, spatial_ndim: int) -> tuple[float, ...] | None:
    """``spacing`` (one value per axis of ``spatial_ndim``, the models' rule) relative to the
    last axis, for the blocks of an image of ``ndim`` axes (a single plane with
    ``spatial_ndim=3``: the last two values); None if it is None or square."""
    sn = spatial_ndim_for(ndim, spatial_ndim)
    spacing = check_spacing(spacing, spatial_ndim)
    if spacing is None:
        return None
    rel = relative_spacing(spacing[len(spacing) - sn :], sn)
    return None if all(r == 1.0 for r in rel) else rel


def _smoothing_sigma(smoothing: float, rel: tuple[float, ...] | None) -> Any:
    """The blur's sigma: ``smoothing`` (x pixels) on every axis, or per axis with the relative
    spacing ``rel`` (the same physical width); in memory and block by block."""
    return smoothing if rel is None else tuple(smoothing / r for r in rel)
