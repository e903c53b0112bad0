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
    finite_values,
    to_grey,
)
from .objects import classes_to_objects, label_objects

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
    float images ``nbins`` equal bins between their finite minimum and maximum. The image is read in
    chunks, so no full-size temporary is made.

    Returns
    -------
    counts, centers : ndarray
    """
    flat = np.asarray(image).reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        flat = flat.view(np.uint8)
        kind = "u"
    if kind in "ui":
        lo = int(flat.min())
        hi = int(flat.max())
        if hi - lo < 2**24:
            counts = np.zeros(hi - lo + 1, dtype=np.int64)
            for start in range(0, flat.size, _CHUNK):
                chunk = flat[start : start + _CHUNK]
                chunk = chunk.astype(np.int64) - lo if lo or kind == "i" else chunk
                counts += np.bincount(chunk, minlength=counts.size)
            return counts, np.arange(lo, hi + 1)
        flat = flat.astype(np.float64)  # an enormous integer range: fall back to float bins
    finite = finite_values(flat)
    lo, hi = float(finite.min()), float(finite.max())
    counts = np.zeros(nbins, dtype=np.int64)
    edges = (
        np.linspace(lo, hi, nbins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, nbins + 1)
    )
    for start in range(0, finite.size, _CHUNK):
        counts += np.histogram(finite[start : start + _CHUNK], bins=edges)[0]
    return counts, (edges[:-1] + edges[1:]) / 2


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
        return float(filters.threshold_li(finite_values(image)))
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
        ),
    )
)


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
) -> np.ndarray:
    """Threshold one 2D plane or 3D volume of one channel; see :func:`threshold_segment`."""
    plane = np.asarray(plane)
    if method in GLOBAL_METHODS:
        thresholds = np.array([threshold_value(plane, method, value=value)])
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
        return label_objects(
            mask.view(bool) if mask.dtype == np.uint8 else mask > 0,
            connectivity=connectivity,
            min_size=min_size,
            fill_holes=fill_holes,
        )
    return classes_to_objects(
        mask, connectivity=connectivity, min_size=min_size, fill_holes=fill_holes
    )


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
    min_size: int = 20,
    fill_holes: bool = True,
    connectivity: int = 1,
    spatial_ndim: int = 2,
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
    min_size : int
        'objects': drop objects with fewer pixels (default 20, as the widget and the CLI).
    fill_holes : bool
        'objects': fill holes inside objects.
    connectivity : {1, 2, 3}
        'objects': 1 joins face neighbours only; 2 also edge neighbours; 3 (or ``ndim``) all.
    spatial_ndim : {2, 3}
        Threshold each 2D plane on its own (2) or each 3D volume as a whole (3).
        Object IDs are unique across the whole stack.
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
        non-numeric image.

    Examples
    --------
    >>> img = np.zeros((8, 8)); img[1:3, 1:3] = 1; img[5:7, 4:7] = 1
    >>> labels = threshold_segment(img, method="otsu", min_size=0)
    >>> int(labels.max())
    2
    >>> int(threshold_segment(img, method="manual", value=0.5, output="classes").sum())
    10
    """
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
    grey = to_grey(image, rgb=rgb, channel_axis=channel_axis, channel=channel)

    def one(block: np.ndarray) -> np.ndarray:
        return threshold_plane(
            block,
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
