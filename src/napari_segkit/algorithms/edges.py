"""Edge-detection segmentation: Sobel, Laplace and Canny edge maps, turned into regions.

Pure numpy/scipy/scikit-image; no napari, no Qt. The filters work on one channel in float32 (half
the memory of float64); :func:`edge_segment` handles any image napari holds (RGB, multichannel,
stacks, dask) and turns edges into labelled regions in one of two ways:

- ``region_mode='fill'``: close the edges, fill the regions they enclose, then connected components
  (scikit-image's "Comparing edge-based and region-based segmentation", the coins example);
- ``region_mode='watershed'``: flood the gradient magnitude from markers, which separates touching
  objects.

Kernel convention
-----------------
:func:`sobel_h` and :func:`sobel_v` follow scikit-image's ``skimage.filters.sobel_h``/``sobel_v``
(sign and orientation), unnormalised: 4 times scikit-image's values. Written as **correlations**
(the kernel laid on the image as written, no flip; ``scipy.ndimage.correlate``), so for a 2D image
``out[i, j] = sum(k[a, b] * image[i + a - 1, j + b - 1])``:

- :func:`sobel_h` correlates ``[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]`` (scikit-image's
  ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]`` as a convolution): it responds to horizontal edges
  (intensity changing from row to row), positive where the image is brighter below
  (``sobel_h == sobel(image, axis=0) == scipy.ndimage.sobel(image, axis=0)
  == 4 * skimage.filters.sobel_h(image)``);
- :func:`sobel_v` correlates ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``: it responds to vertical
  edges, positive where the image is brighter on the right
  (``sobel_v == sobel(image, axis=1) == scipy.ndimage.sobel(image, axis=1)
  == 4 * skimage.filters.sobel_v(image)``).

:func:`laplace` uses the 8-neighbour kernel ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]`` (symmetric, so
correlation and convolution agree); in 3D its 26-neighbour analogue (all ones, -26 in the centre).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..params import MethodSpec, Param, checked, register
from .image import (
    ProgressCallback,
    apply_blockwise,
    check_image,
    iter_blocks,
    spatial_ndim_for,
    to_grey,
)
from .objects import label_objects, remove_small
from .threshold import threshold_value

#: Edge filters.
FILTERS = ("canny", "sobel", "laplace")
#: Ways to turn edges into regions.
REGION_MODES = ("fill", "watershed")
#: Where watershed markers come from.
MARKERS = ("threshold", "local_minima")
#: Border modes (as scipy.ndimage names them).
BORDER_MODES = ("reflect", "constant", "nearest", "mirror", "wrap")


def _fill(v) -> bool:
    return v.get("region_mode") == "fill"


def _watershed(v) -> bool:
    return v.get("region_mode") == "watershed"


#: The one declaration of the edges method's parameters (function, widget, CLI, docs).
SPEC = register(
    MethodSpec(
        name="edges",
        title="Edges",
        function="napari_segkit.algorithms.edges:edge_segment",
        description="Sobel, Laplace or Canny edges, turned into regions (fill or watershed).",
        params=(
            Param(
                "region_mode",
                str,
                "fill",
                "'fill': close the edges and fill what they enclose (separate objects with closed "
                "outlines); 'watershed': flood the Sobel gradient from markers (touching objects).",
                label="regions",
                choices=(
                    ("close edges + fill holes", "fill"),
                    ("watershed on gradient", "watershed"),
                ),
            ),
            Param(
                "filter",
                str,
                "canny",
                "The edge detector for 'fill' (the watershed always floods the Sobel magnitude).",
                label="edge filter",
                choices=(
                    ("Canny (2D, slice by slice in 3D)", "canny"),
                    ("Sobel magnitude", "sobel"),
                    ("Laplace (8 / 26 neighbours)", "laplace"),
                ),
                when=_fill,
            ),
            Param(
                "sigma",
                float,
                1.0,
                "Gaussian smoothing (pixels) before the filter; 0 for none.",
                label="sigma (smoothing)",
                min=0.0,
                max=50.0,
                step=0.5,
            ),
            Param(
                "low_threshold",
                float,
                0.1,
                "Canny's low hysteresis threshold, as a fraction of the intensity range (0..1).",
                label="Canny low",
                min=0.0,
                max=1.0,
                step=0.01,
                when=lambda v: _fill(v) and v.get("filter") == "canny",
            ),
            Param(
                "high_threshold",
                float,
                0.2,
                "Canny's high hysteresis threshold, as a fraction of the intensity range (0..1).",
                label="Canny high",
                min=0.0,
                max=1.0,
                step=0.01,
                when=lambda v: _fill(v) and v.get("filter") == "canny",
            ),
            Param(
                "use_quantiles",
                bool,
                False,
                "Read Canny's thresholds as quantiles of the gradient magnitude.",
                when=lambda v: _fill(v) and v.get("filter") == "canny",
            ),
            Param(
                "edge_threshold",
                float,
                None,
                "Sobel/Laplace response above which a pixel is an edge; auto: Otsu's threshold.",
                optional=True,
                none_label="auto (Otsu)",
                min=0.0,
                when=lambda v: _fill(v) and v.get("filter") in ("sobel", "laplace"),
            ),
            Param(
                "closing",
                int,
                1,
                "Iterations of a closing that bridges gaps in the edges before filling.",
                label="close gaps (px)",
                min=0,
                max=20,
                when=_fill,
            ),
            Param(
                "markers",
                str,
                "threshold",
                "Where the watershed seeds come from.",
                choices=(
                    ("threshold (Otsu + distance peaks)", "threshold"),
                    ("local minima of gradient", "local_minima"),
                ),
                when=_watershed,
            ),
            Param(
                "min_distance",
                int,
                10,
                "Smallest distance between two watershed seeds (pixels).",
                label="min seed distance",
                min=1,
                max=1000,
                when=_watershed,
            ),
            Param(
                "dark",
                bool,
                False,
                "Objects are darker than the background.",
                when=_watershed,
            ),
            Param(
                "min_size",
                int,
                20,
                "Regions with fewer pixels are dropped.",
                label="min size (px)",
                min=0,
            ),
            Param(
                "mode",
                str,
                "reflect",
                "Border handling of the filters (scipy.ndimage modes).",
                label="border",
                choices=tuple((m, m) for m in ("reflect", "nearest", "mirror", "constant", "wrap")),
            ),
            Param(
                "cval",
                float,
                0.0,
                "The value outside the image for the 'constant' border.",
                when=lambda v: v.get("mode") == "constant",
            ),
            Param(
                "show_edge_map",
                bool,
                True,
                "Also show the edge map the regions were made from (an Image layer / a file).",
                label="show edge map",
                group="output",
            ),
        ),
    )
)


# ---- input helpers -----------------------------------------------------------------------------
def _check_mode(mode: str) -> str:
    if mode not in BORDER_MODES:
        raise ValueError(f"mode must be one of {BORDER_MODES}; got {mode!r}")
    return mode


def _finite(image: Any, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` as a numpy array (its own dtype) with every NaN/inf replaced by its nearest
    finite pixel's value (then float32); and the mask of the replaced pixels (None if none was).

    The filters read the result strip by strip and convert each strip to float32 on the fly, so an
    integer or finite float image is never copied whole. A value that float32 cannot hold (beyond
    about 3.4e38) counts as infinite. A nearest-neighbour fill (rather than a constant) makes no
    false edge around a NaN region.
    """
    image = np.asarray(check_image(image, name=name))
    if image.dtype.kind != "f" or _all_finite32(image):
        return image, None
    with np.errstate(over="ignore"):
        x = np.asarray(image, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.all():
        raise ValueError(f"{name} has no finite value (all NaN or infinite)")
    idx = ndi.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return x[tuple(idx)], bad


def _all_finite32(x: np.ndarray) -> bool:
    """Whether every value of float ``x`` is finite in float32, checked in bounded chunks."""
    step = max(1, _STRIP_BYTES // max(1, x[:1].size * x.itemsize))
    for r0 in range(0, x.shape[0], step):
        chunk = x[r0 : r0 + step]
        if chunk.dtype != np.float32:
            with np.errstate(over="ignore"):  # beyond float32: inf, caught below
                chunk = chunk.astype(np.float32)
        if not np.isfinite(chunk).all():
            return False
    return True


def _float32(image: Any, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_finite`, as a float32 array."""
    x, bad = _finite(image, name)
    return np.asarray(x, dtype=np.float32), bad


# ---- separable 3-tap filters, strip by strip ----------------------------------------------------
# Axis 0 is done with whole-row numpy arithmetic on a strip of rows that carries one halo row on
# each side (built as ``mode`` extends the image), every other axis with ``ndi.correlate1d``. A
# strip is small enough for its few float32 buffers to stay in the CPU cache; scipy's correlate1d
# along axis 0 of a C-ordered array walks memory with a large stride and is several times slower.
#: Bytes of one float32 strip buffer.
_STRIP_BYTES = 1 << 19
_SMOOTH = np.array([1.0, 2.0, 1.0])
_DERIV = np.array([-1.0, 0.0, 1.0])
_ONES = np.array([1.0, 1.0, 1.0])


def _border_row(i: int, n: int, mode: str) -> int | None:
    """Which row ``mode`` repeats at row ``i`` (-1 or ``n``) outside ``n`` rows; None: cval."""
    if mode == "constant":
        return None
    if i < 0:
        return {"reflect": 0, "nearest": 0, "mirror": min(1, n - 1), "wrap": n - 1}[mode]
    return {"reflect": n - 1, "nearest": n - 1, "mirror": max(n - 2, 0), "wrap": 0}[mode]


def _strips(x: np.ndarray, mode: str, cval: float) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(r0, r1, p)``: rows ``r0 - 1 .. r1`` of ``x`` in float32 (one reused buffer)."""
    n = x.shape[0]
    step = max(1, _STRIP_BYTES // (4 * max(1, x[:1].size)))
    buf = np.empty((min(step, n) + 2,) + x.shape[1:], dtype=np.float32)
    for r0 in range(0, n, step):
        r1 = min(r0 + step, n)
        p = buf[: r1 - r0 + 2]
        p[1:-1] = x[r0:r1]
        for dst, i in ((0, r0 - 1), (-1, r1)):
            j = i if 0 <= i < n else _border_row(i, n, mode)
            p[dst] = cval if j is None else x[j]
        yield r0, r1, p


def _pass_other_axes(
    p: np.ndarray, weights: list[np.ndarray], q: np.ndarray, mode: str, cval: float
) -> np.ndarray:
    """Correlate ``p`` with ``weights[ax]`` along every axis ``ax >= 1`` (last first) into ``q``.

    For ``mode='constant'`` a later pass sees the earlier passes applied to the constant: its cval
    is ``cval`` times the sums of their weights (0 after a derivative).
    """
    src, c = p, cval
    for ax in range(p.ndim - 1, 0, -1):
        ndi.correlate1d(src, weights[ax], axis=ax, output=q, mode=mode, cval=c)
        src, c = q, c * float(weights[ax].sum())
    return q


def _sobel_into(x: np.ndarray, axes: tuple[int, ...], mode: str, cval: float, out: np.ndarray):
    """Sobel derivative of ``x`` along ``axes[0]`` into float32 ``out`` or, for several axes, the
    magnitude ``sqrt(sum of their squares)``. ``x``: any real dtype, finite."""
    qbuf = gbuf = None
    for r0, r1, p in _strips(x, mode, cval):
        if qbuf is None:
            qbuf, gbuf = np.empty_like(p), np.empty_like(p[2:])
        q, o = qbuf[: len(p)], out[r0:r1]
        for k, axis in enumerate(axes):
            weights = [_DERIV if ax == axis else _SMOOTH for ax in range(x.ndim)]
            _pass_other_axes(p, weights, q, mode, cval)
            g = o if k == 0 else gbuf[: r1 - r0]
            if axis == 0:
                np.subtract(q[2:], q[:-2], out=g)
            else:
                np.add(q[:-2], q[2:], out=g)
                g += q[1:-1]
                g += q[1:-1]
            if len(axes) > 1:
                np.multiply(g, g, out=g)
                if k:
                    o += g
        if len(axes) > 1:
            np.sqrt(o, out=o)
    return out


def _laplace_into(x: np.ndarray, mode: str, cval: float, out: np.ndarray) -> np.ndarray:
    """Sum of the 3x3(x3) neighbourhood minus 3**ndim times the centre, into float32 ``out``."""
    qbuf = gbuf = None
    centre = np.float32(3**x.ndim)
    for r0, r1, p in _strips(x, mode, cval):
        if qbuf is None:
            qbuf, gbuf = np.empty_like(p), np.empty_like(p[2:])
        q, o, g = qbuf[: len(p)], out[r0:r1], gbuf[: r1 - r0]
        _pass_other_axes(p, [_ONES] * x.ndim, q, mode, cval)
        np.add(q[:-2], q[2:], out=o)
        o += q[1:-1]
        np.multiply(p[1:-1], centre, out=g)
        o -= g
    return out


def _smooth(x: np.ndarray, sigma: float, mode: str, cval: float) -> np.ndarray:
    """Gaussian smoothing of ``x`` (any real dtype) into float32 (sigma 0: ``x`` as float32)."""
    if sigma == 0:
        return np.asarray(x, dtype=np.float32)
    return ndi.gaussian_filter(x, sigma, mode=mode, cval=cval, output=np.float32)


# ---- filters -----------------------------------------------------------------------------------
def sobel(image: Any, axis: int = -1, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Sobel derivative of ``image`` along ``axis``, in float32, over all of its axes.

    The derivative kernel ``[-1, 0, 1]`` is correlated along ``axis`` and the smoothing kernel
    ``[1, 2, 1]`` along every other axis (``scipy.ndimage.sobel``'s convention): positive where the
    intensity increases along ``axis``. A 2D image gets the classic 3x3 kernels, a 3D volume the
    3x3x3 Sobel. Not normalised (the 2D kernels sum to 8 in absolute value; scikit-image's
    ``sobel(image, axis=axis)`` is this divided by 4 in 2D, 16 in 3D).

    Parameters
    ----------
    image : array-like
        One channel, 2D or more; integer, bool or float (NaN replaced by the nearest finite value).
    axis : int
        The axis to differentiate along.
    mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap'}
        How the border is extended (scipy.ndimage's modes; 'reflect' repeats the edge pixel).
    cval : float
        The value outside the image for ``mode='constant'``.

    Returns
    -------
    ndarray of float32

    Examples
    --------
    >>> img = np.array([[0, 0, 9], [0, 0, 9], [0, 0, 9]], np.uint8)
    >>> sobel(img, axis=1)[1]
    array([ 0., 36., 36.], dtype=float32)
    """
    _check_mode(mode)
    x, _ = _finite(image)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for an image of {x.ndim} dimensions")
    out = np.empty(x.shape, dtype=np.float32)
    return _sobel_into(x, (axis % x.ndim,), mode, cval, out)


def _check_2d(image: Any, name: str) -> None:
    ndim = check_image(image).ndim
    if ndim != 2:
        raise ValueError(
            f"{name} takes a 2D image; got {ndim} dimensions (use sobel(image, axis=...) for nD)"
        )


def sobel_h(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Horizontal edges, with scikit-image's sign: positive where the row below is brighter.

    The kernel ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]`` of ``skimage.filters.sobel_h`` applied as a
    convolution (flipped), that is the correlation ``out[i, j] = (image[i+1, j-1] + 2 image[i+1, j]
    + image[i+1, j+1]) - (image[i-1, j-1] + 2 image[i-1, j] + image[i-1, j+1])``. Equals
    ``sobel(image, axis=0)``, ``scipy.ndimage.sobel(image, axis=0)`` and
    ``4 * skimage.filters.sobel_h(image)`` (not normalised). 2D only.

    Examples
    --------
    >>> img = np.array([[0, 0, 0], [4, 4, 4], [4, 4, 4]], np.uint8)
    >>> sobel_h(img)[1]
    array([16., 16., 16.], dtype=float32)
    """
    _check_2d(image, "sobel_h")
    return sobel(image, axis=0, mode=mode, cval=cval)


def sobel_v(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Vertical edges, with scikit-image's sign: positive where the column on the right is brighter.

    The kernel ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` of ``skimage.filters.sobel_v`` applied as a
    convolution, that is the correlation ``out[i, j] = (image[i-1, j+1] + 2 image[i, j+1]
    + image[i+1, j+1]) - (image[i-1, j-1] + 2 image[i, j-1] + image[i+1, j-1])``. Equals
    ``sobel(image, axis=1)``, ``scipy.ndimage.sobel(image, axis=1)`` and
    ``4 * skimage.filters.sobel_v(image)`` (not normalised). 2D only.

    Examples
    --------
    >>> img = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]], np.uint8)
    >>> sobel_v(img)[1]
    array([0., 4., 4.], dtype=float32)
    """
    _check_2d(image, "sobel_v")
    return sobel(image, axis=1, mode=mode, cval=cval)


def sobel_magnitude(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Gradient magnitude ``sqrt(sum_axis sobel(image, axis) ** 2)`` over all axes, in float32.

    In 2D this is ``hypot(sobel_h, sobel_v)`` (``4 * sqrt(2) * skimage.filters.sobel(image)``,
    which divides by 4 and averages the squares); a 3D volume uses the 3D Sobel along all 3 axes.
    Computed strip by strip: memory is the float32 output plus a few small buffers, whatever the
    input's dtype.

    Examples
    --------
    >>> img = np.zeros((3, 3)); img[:, 2] = 1
    >>> float(sobel_magnitude(img)[1, 1])
    4.0
    """
    _check_mode(mode)
    x, _ = _finite(image)
    out = np.empty(x.shape, dtype=np.float32)
    return _sobel_into(x, tuple(range(x.ndim)), mode, cval, out)


def laplace(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Laplace filter with the 8-neighbour kernel ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``, float32.

    ``out = (sum of the 3x3 neighbourhood) - 9 * image``: the sum of the 8 neighbours minus 8 times
    the centre. A 3D volume uses the 26-neighbour analogue (3x3x3 sum - 27 * image). The kernel is
    symmetric, so correlation and convolution agree. Computed as separable box sums, strip by strip.

    Examples
    --------
    >>> img = np.zeros((3, 3), np.uint8); img[1, 1] = 1
    >>> laplace(img, mode="constant")
    array([[ 1.,  1.,  1.],
           [ 1., -8.,  1.],
           [ 1.,  1.,  1.]], dtype=float32)
    """
    _check_mode(mode)
    x, _ = _finite(image)
    out = np.empty(x.shape, dtype=np.float32)
    return _laplace_into(x, mode, cval, out)


def _check_canny(sigma: float, low: float, high: float, use_quantiles: bool) -> None:
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma}")
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high < 0:
        raise ValueError(
            f"low_threshold and high_threshold must be finite and >= 0; got {low}, {high}"
        )
    if low > high:
        raise ValueError(f"low_threshold ({low}) must not exceed high_threshold ({high})")
    if use_quantiles and high > 1:
        raise ValueError(f"with use_quantiles, the thresholds are quantiles in 0..1; got {high}")


def canny_edges(
    image: Any,
    *,
    sigma: float = 1.0,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    use_quantiles: bool = False,
    mode: str = "reflect",
    cval: float = 0.0,
) -> np.ndarray:
    """Canny edges (scikit-image), slice by slice over the last two axes.

    Canny is 2D only in scikit-image, so a 3D volume or a stack is processed one 2D plane at a time.
    Each plane is first rescaled to 0..1 by its finite minimum and maximum, so the thresholds are
    fractions of the image's range whatever its dtype or units (for uint8 ``coins`` this is nearly
    ``skimage.feature.canny(coins / 255)``). With ``use_quantiles`` they are quantiles of the
    gradient magnitude instead.

    Parameters
    ----------
    image : array-like
        One channel, 2D or more. NaN is replaced by the nearest finite value.
    sigma : float
        Standard deviation of the Gaussian smoothing.
    low_threshold, high_threshold : float
        Hysteresis thresholds on the gradient magnitude of the rescaled image.
    use_quantiles : bool
        Read the thresholds as quantiles (0..1) of the gradient magnitude.
    mode, cval
        Border handling of the smoothing, as in :func:`sobel`.

    Returns
    -------
    ndarray of bool

    Examples
    --------
    >>> img = np.zeros((20, 20)); img[5:15, 5:15] = 1
    >>> edges = canny_edges(img, sigma=1)
    >>> bool(edges[5, 10]), bool(edges[10, 10])
    (True, False)
    """
    from skimage.feature import canny

    _check_mode(mode)
    _check_canny(sigma, low_threshold, high_threshold, use_quantiles)
    x, _ = _float32(image)
    out = np.zeros(x.shape, dtype=bool)
    for idx in iter_blocks(x.shape, 2):
        plane = x[idx]
        lo, hi = float(plane.min()), float(plane.max())
        plane = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
        out[idx] = canny(
            plane,
            sigma=sigma,
            low_threshold=low_threshold,
            high_threshold=high_threshold,
            use_quantiles=use_quantiles,
            mode=mode,
            cval=cval,
        )
    return out


# ---- from edges to regions ---------------------------------------------------------------------
def _fill_regions(edges: np.ndarray, closing: int, slicewise: bool) -> np.ndarray:
    """Close gaps in the edges, then fill what they enclose (per 2D slice if ``slicewise``)."""
    if slicewise and edges.ndim > 2:
        out = np.empty_like(edges)
        for z in range(edges.shape[0]):
            out[z] = _fill_regions(edges[z], closing, False)
        return out
    if closing:
        structure = ndi.generate_binary_structure(edges.ndim, 1)
        # OR with the edges: closing's erosion would otherwise drop edge pixels on the border
        edges = edges | ndi.binary_closing(edges, structure, iterations=closing)
    return _fill_holes(edges)  # in place: the callers' edges are their own temporaries


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)``, in place, by labelling the background.

    A hole is a background region (face-connected, as scipy's default structure) that does not
    touch the image border. One labelling pass instead of scipy's iterated propagation.
    """
    background = ~mask
    lab, n = ndi.label(background)
    del background
    if n == 0:
        return mask
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    for axis in range(mask.ndim):  # a region on any face of the image is not a hole
        for end in (0, -1):
            hole[np.take(lab, end, axis=axis)] = False
    if hole.any():
        mask |= hole[lab]
    return mask


def _foreground(x: np.ndarray, dark: bool) -> np.ndarray:
    """Otsu's foreground of ``x``, holes not filled yet (free ``x`` first, then fill them)."""
    t = threshold_value(x, "otsu")
    return x <= t if dark else x > t


def _dilate(mask: np.ndarray, radius: int, *, square: bool = True) -> np.ndarray:
    """Binary dilation by a cube of ``2 * radius + 1`` (``square``) or by the face-neighbour cross
    (radius 1), with nothing outside the image; shifted ORs of whole slices."""

    def sl(axis, start, stop):
        return (slice(None),) * axis + (slice(start, stop),)

    out = mask.copy()
    src = mask
    for axis in range(mask.ndim):
        if square:
            src = out.copy()
        for k in range(1, radius + 1):
            if k < mask.shape[axis]:
                out[sl(axis, k, None)] |= src[sl(axis, None, -k)]
                out[sl(axis, None, -k)] |= src[sl(axis, k, None)]
    return out


#: Most pixels per group of objects: markers and flooding are computed group by group, in the rows
#: that the group's bounding boxes span, which bounds the temporaries. Markers: larger groups
#: (fewer rows shared by two groups' distance transforms); flooding: smaller (a smaller heap).
_MARKER_PIXELS = 1 << 19
_FLOOD_PIXELS = 1 << 17


def _boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of labels 1..N (all present) as ``(starts, stops)`` arrays of shape (N, ndim)."""
    objs = ndi.find_objects(labels)
    starts = np.array([[s.start for s in o] for o in objs], dtype=np.intp)
    stops = np.array([[s.stop for s in o] for o in objs], dtype=np.intp)
    return starts.reshape(-1, labels.ndim), stops.reshape(-1, labels.ndim)


def _groups(starts: np.ndarray, stops: np.ndarray, shape: tuple[int, ...], halo: int, pixels: int):
    """Split labels 1..N, numbered in raster order (so by first row), into groups of consecutive
    labels whose first rows fall in one strip; yield ``(i0, i1, r0, r1)``: labels ``i0 + 1 ..
    i1`` and the rows ``r0 .. r1 - 1`` that hold their boxes plus ``halo`` rows each side."""
    # at most a 16th of the image a group, so that the temporaries stay small next to it
    n_pixels = int(np.prod(shape))
    step = max(1, min(pixels, n_pixels // 16) // max(1, n_pixels // shape[0]))
    first = starts[:, 0]
    i0 = 0
    while i0 < len(first):
        i1 = int(np.searchsorted(first, (first[i0] // step + 1) * step, side="left"))
        r0 = max(int(first[i0]) - halo, 0)
        r1 = min(int(stops[i0:i1, 0].max()) + halo, shape[0])
        yield i0, i1, r0, r1
        i0 = i1


def _label_peaks(
    score: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    min_distance: int,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``skimage.feature.peak_local_max(score, min_distance, labels=labels,
    exclude_border=False)`` for the labels ``ids`` only (bounding boxes ``starts``/``stops``),
    vectorised over labels instead of one Python iteration each.

    ``threshold`` is the minimum of the *whole* score (what peak_local_max uses). Returns the
    peak coordinates (P, ndim) and their labels, in scikit-image's order: by label, then by
    decreasing score, ties in raster order. Every step is scikit-image's, on a stack of crops of
    equal size (one per label; other labels and the padding at -inf): the maximum filter of size
    ``2 * min_distance + 1`` (a crop's padding never wins, as 'nearest' at the box edge), the
    "flat object: its isolated pixels" rule, the threshold, then the greedy spacing.
    """
    nd = score.ndim
    bg = np.finfo(score.dtype).min
    size = (1,) + (2 * min_distance + 1,) * nd
    cross = np.zeros((3,) * (nd + 1), dtype=bool)
    cross[1] = ndi.generate_binary_structure(nd, 1)  # no link between crops
    # crops in a few sizes: each box rounded up to a power of two per axis
    bucket = 1 << np.ceil(np.log2(np.maximum(stops - starts, 1))).astype(np.intp)
    keys, which = np.unique(bucket, axis=0, return_inverse=True)
    coords, values, labs = [], [], []
    for b, dims in enumerate(keys):
        sel = np.flatnonzero(which.ravel() == b)
        k = len(sel)
        index, inside = [], np.ones((k,) + (1,) * nd, dtype=bool)
        for axis in range(nd):
            g = starts[sel, axis][:, None] + np.arange(dims[axis])
            shape = [k] + [1] * nd
            shape[axis + 1] = int(dims[axis])
            inside = inside & (g < score.shape[axis]).reshape(shape)
            index.append(np.minimum(g, score.shape[axis] - 1).reshape(shape))
        index = tuple(index)
        valid = (labels[index] == ids[sel].reshape((k,) + (1,) * nd)) & inside
        s = score[index]
        s[~valid] = bg
        peak = s == ndi.maximum_filter(s, size=size, mode="nearest")
        trivial = ~(valid & ~peak).reshape(k, -1).any(axis=1)
        if trivial.any():
            v = valid[trivial]
            peak[trivial] = v & ~ndi.binary_opening(v, cross)
        peak &= s > threshold
        nz = np.nonzero(peak)
        coords.append(starts[sel][nz[0]] + np.stack(nz[1:], axis=1))
        values.append(s[nz])
        labs.append(ids[sel][nz[0]])
    if not coords:
        return np.empty((0, nd), dtype=np.intp), np.empty(0, dtype=ids.dtype)
    coords = np.concatenate(coords)
    values = np.concatenate(values)
    labs = np.concatenate(labs)
    order = np.lexsort((np.ravel_multi_index(tuple(coords.T), score.shape), -values, labs))
    coords, labs = coords[order], labs[order]
    if min_distance > 1 and len(coords) > 1:
        from scipy.spatial import cKDTree

        # peaks of one label closer than min_distance (Chebyshev; integers: <= min_distance - 1)
        pairs = cKDTree(coords).query_pairs(min_distance - 1, p=np.inf, output_type="ndarray")
        pairs = pairs[labs[pairs[:, 0]] == labs[pairs[:, 1]]]
        if len(pairs):
            pairs = np.sort(pairs, axis=1)
            pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
            keep = np.ones(len(coords), dtype=bool)
            firsts, bounds = np.unique(pairs[:, 0], return_index=True)
            bounds = np.append(bounds, len(pairs))
            for i, lo, hi in zip(firsts, bounds[:-1], bounds[1:], strict=True):
                if keep[i]:  # a kept peak removes the later, lower peaks near it
                    keep[pairs[lo:hi, 1]] = False
            coords, labs = coords[keep], labs[keep]
    return coords, labs


def _markers(
    emap: np.ndarray, fg: np.ndarray, markers: str, min_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """Object markers inside ``fg``: raster indices (sorted) and their IDs 1..N.

    'threshold': one marker per peak of the distance transform of each foreground component
    (``peak_local_max(edt, min_distance, labels=components)``), in scikit-image's order, then the
    centre of each component without a peak. The distance transform and the peaks are computed
    group by group (rows of a few components), which gives the whole image's values: a
    component's nearest background pixel always lies within one pixel of its bounding box.
    'local_minima': the flat local minima of ``emap`` that hold a peak of ``max - emap``.
    """
    comps, n_comps = ndi.label(fg)
    if n_comps == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.int32)
    starts, stops = _boxes(comps)
    if markers == "local_minima":
        score_all = emap.max() - emap
    # peak_local_max's threshold: the minimum of the whole score (0 where there is background)
    threshold = 0.0 if markers == "local_minima" or not fg.all() else None
    peaks, missing = [], []
    for i0, i1, r0, r1 in _groups(starts, stops, fg.shape, 1, _MARKER_PIXELS):
        if markers == "threshold":
            score = ndi.distance_transform_edt(fg[r0:r1]).astype(np.float32)
        else:
            score = score_all[r0:r1]
        t = float(score.min()) if threshold is None else threshold
        ids = np.arange(i0 + 1, i1 + 1, dtype=np.int32)
        shift = np.zeros(fg.ndim, dtype=np.intp)
        shift[0] = r0
        region = comps[r0:r1]
        pk, labs = _label_peaks(
            score, region, ids, starts[i0:i1] - shift, stops[i0:i1] - shift, min_distance, t
        )
        peaks.append(pk + shift)
        if markers == "threshold":
            lost = np.setdiff1d(ids, labs)
            if lost.size:  # a component without a peak gets its centre
                centres = ndi.maximum_position(score, region, lost)
                missing.append(np.array(centres, dtype=np.intp).reshape(-1, fg.ndim) + shift)
    peaks = np.concatenate(peaks)
    if markers == "local_minima":
        # a flat minimum (a plateau of zero gradient) is one seed, not one every min_distance
        plateau = (score_all == ndi.maximum_filter(score_all, size=3)) & fg
        del score_all
        flats, _ = ndi.label(plateau, ndi.generate_binary_structure(fg.ndim, fg.ndim))
        del plateau
        seeds = np.unique(flats[tuple(peaks.T)])
        seeds = seeds[seeds > 0]
        lut = np.zeros(int(flats.max()) + 1, dtype=np.int32)
        lut[seeds] = np.arange(1, len(seeds) + 1, dtype=np.int32)
        seeded = np.flatnonzero(lut[flats])
        ids = lut[flats.ravel()[seeded]]
        del flats
        lost = np.setdiff1d(np.arange(1, n_comps + 1), comps.ravel()[seeded])
        if lost.size:
            # the score of the lost components only: max - emap inside them
            centres = ndi.maximum_position(emap.max() - emap, comps, lost)
            extra = np.ravel_multi_index(np.array(centres, dtype=np.intp).T, fg.shape)
            seeded = np.concatenate([seeded, extra])
            ids = np.concatenate([ids, np.arange(len(seeds) + 1, len(seeds) + 1 + lost.size)])
    else:
        points = np.concatenate([peaks] + missing)
        seeded = np.ravel_multi_index(tuple(points.T), fg.shape)
        ids = np.arange(1, len(points) + 1, dtype=np.int32)
    order = np.argsort(seeded, kind="stable")
    return seeded[order], ids[order].astype(np.int32)


def _flood(emap: np.ndarray, fg: np.ndarray, seeded: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Watershed of ``emap`` from the object markers and a background marker (every pixel more
    than two pixels from ``fg``), background set to 0; group by group of basins.

    A basin (a face-connected region of non-background-marker pixels) floods independently of
    the others, from its own markers and the background-marker pixels that touch it; so each
    group of basins is flooded alone, with a mask, in the rows it spans. Equal to one
    ``skimage.segmentation.watershed(emap, markers)`` of the whole image up to the order in
    which it breaks exact ties between markers (its heap pops all markers with the same key).
    """
    from skimage.segmentation import watershed

    background_id = int(ids.max()) + 1
    labels = np.empty(fg.shape, dtype=np.int32)
    basins = _dilate(fg, 2)
    ndi.label(basins, output=labels)
    del basins
    starts, stops = _boxes(labels)
    np.negative(labels, out=labels)  # basins are -1..-n until flooded; background 0
    for i0, i1, r0, r1 in _groups(starts, stops, fg.shape, 1, _FLOOD_PIXELS):
        region = labels[r0:r1]
        inside = (region <= -(i0 + 1)) & (region >= -i1)
        ring = _dilate(inside, 1, square=False)
        ring &= region == 0
        lo, hi = np.searchsorted(seeded, [r0 * region[0].size, r1 * region[0].size])
        local = np.unravel_index(seeded[lo:hi] - r0 * region[0].size, region.shape)
        mine = inside[local]
        mk = np.zeros(region.shape, dtype=np.int32)
        mk[ring] = background_id
        mk[tuple(a[mine] for a in local)] = ids[lo:hi][mine]
        ring |= inside
        out = watershed(emap[r0:r1], mk, mask=ring)
        region[inside] = out[inside]
    labels[labels == background_id] = 0
    return labels


def _segment_block(
    block: np.ndarray,
    *,
    emap_out: np.ndarray,
    filter: str,
    region_mode: str,
    sigma: float,
    low_threshold: float,
    high_threshold: float,
    use_quantiles: bool,
    edge_threshold: float | None,
    closing: int,
    markers: str,
    min_distance: int,
    dark: bool,
    min_size: int,
    mode: str,
    cval: float,
) -> np.ndarray:
    """Labels of one 2D plane or 3D volume; its edge map is written into ``emap_out``."""
    x, bad = _finite(block)
    if region_mode == "watershed":
        smooth = _smooth(x, sigma, mode, cval)
        del x
        _sobel_into(smooth, tuple(range(smooth.ndim)), mode, cval, emap_out)
        fg = _foreground(smooth, dark)
        del smooth
        _fill_holes(fg)
        seeded, ids = _markers(emap_out, fg, markers, min_distance)
        if len(ids) == 0:
            labels = np.zeros(fg.shape, dtype=np.int32)
        else:
            labels = _flood(emap_out, fg, seeded, ids)
            remove_small(labels, min_size)  # renumbers the kept regions 1..N
    else:
        if filter == "canny":
            edges = canny_edges(
                x,
                sigma=sigma,
                low_threshold=low_threshold,
                high_threshold=high_threshold,
                use_quantiles=use_quantiles,
                mode=mode,
                cval=cval,
            )
            emap_out[...] = edges
        else:
            smooth = _smooth(x, sigma, mode, cval)
            if filter == "sobel":
                _sobel_into(smooth, tuple(range(smooth.ndim)), mode, cval, emap_out)
            else:
                _laplace_into(smooth, mode, cval, emap_out)
            del smooth
            strength = np.abs(emap_out) if filter == "laplace" else emap_out
            t = threshold_value(strength, "otsu") if edge_threshold is None else edge_threshold
            edges = strength > t
            del strength
        filled = _fill_regions(edges, closing, slicewise=filter == "canny")
        del edges
        labels = label_objects(filled, connectivity=1, min_size=min_size)
    if bad is not None:
        labels[bad] = 0
        if min_size:
            remove_small(labels, min_size)
    return labels


def _check_params(
    filter: str,
    region_mode: str,
    markers: str,
    sigma: float,
    low_threshold: float,
    high_threshold: float,
    use_quantiles: bool,
    edge_threshold: float | None,
    closing: int,
    min_distance: int,
    min_size: int,
    mode: str,
) -> str:
    if region_mode not in REGION_MODES:
        raise ValueError(f"region_mode must be one of {REGION_MODES}; got {region_mode!r}")
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}; got {filter!r}")
    if region_mode == "watershed":
        filter = "sobel"  # the watershed always floods the Sobel gradient magnitude
    if markers not in MARKERS:
        raise ValueError(f"markers must be one of {MARKERS}; got {markers!r}")
    _check_mode(mode)
    _check_canny(sigma, low_threshold, high_threshold, use_quantiles)
    if edge_threshold is not None and not np.isfinite(edge_threshold):
        raise ValueError(f"edge_threshold must be a finite number or None; got {edge_threshold}")
    if closing < 0:
        raise ValueError(f"closing must be >= 0 (iterations); got {closing}")
    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1 pixel; got {min_distance}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    return filter


@checked(SPEC)
def edge_segment_with_map(
    image: Any,
    *,
    filter: str = "canny",
    region_mode: str = "fill",
    sigma: float = 1.0,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    use_quantiles: bool = False,
    edge_threshold: float | None = None,
    closing: int = 1,
    markers: str = "threshold",
    min_distance: int = 10,
    dark: bool = False,
    min_size: int = 20,
    mode: str = "reflect",
    cval: float = 0.0,
    spatial_ndim: int = 2,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment by edges; return the labels and the edge map they were made from.

    See :func:`edge_segment` for the parameters.

    Returns
    -------
    labels : ndarray of int32
        One ID per region, unique across a stack; 0 is background (and every NaN pixel).
    edge_map : ndarray
        Same shape. 'fill' with Canny: the binary edges (uint8 0/1); 'fill' with Sobel/Laplace:
        the filter response (float32) that was thresholded; 'watershed': the gradient magnitude
        (float32) that was flooded.
    """
    filter = _check_params(
        filter,
        region_mode,
        markers,
        sigma,
        low_threshold,
        high_threshold,
        use_quantiles,
        edge_threshold,
        closing,
        min_distance,
        min_size,
        mode,
    )
    grey = to_grey(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    if spatial_ndim == 3 and grey.ndim < 3:
        spatial_ndim = 2  # a single plane: nothing to do in 3D
    map_dtype = np.uint8 if (filter == "canny" and region_mode == "fill") else np.float32
    emap = np.empty(grey.shape, dtype=map_dtype)

    def one(block: np.ndarray, index: tuple) -> np.ndarray:
        return _segment_block(
            block,
            emap_out=emap[index],
            filter=filter,
            region_mode=region_mode,
            sigma=sigma,
            low_threshold=low_threshold,
            high_threshold=high_threshold,
            use_quantiles=use_quantiles,
            edge_threshold=edge_threshold,
            closing=closing,
            markers=markers,
            min_distance=min_distance,
            dark=dark,
            min_size=min_size,
            mode=mode,
            cval=cval,
        )

    labels = apply_blockwise(
        one,
        grey,
        spatial_ndim=spatial_ndim,
        dtype=np.int32,
        unique_ids=True,
        with_index=True,
        progress=progress,
    )
    return labels, emap


@checked(SPEC)
def edge_segment(image: Any, **kwargs: Any) -> np.ndarray:
    """Segment an image into the regions its edges enclose (or separate).

    Parameters
    ----------
    image : array-like
        Grey, RGB/RGBA or multichannel; 2D, 3D or a time stack; numpy or dask; any real dtype.
        RGB becomes luminance; a multichannel image uses ``channel`` along ``channel_axis``. NaN
        pixels are replaced by their nearest finite neighbour for filtering and are background.
    filter : {'canny', 'sobel', 'laplace'}
        The edge detector for ``region_mode='fill'``. Sobel and Laplace edges are the pixels whose
        response (absolute, for Laplace) exceeds ``edge_threshold``.
        ``region_mode='watershed'`` always floods the Sobel magnitude (``filter`` is not used).
    region_mode : {'fill', 'watershed'}
        'fill': close the edges (``closing``), fill the regions they enclose, connected components
        (good for well-separated objects with closed contours, such as coins).
        'watershed': flood the gradient magnitude from ``markers`` (separates touching objects).
    sigma : float
        Gaussian smoothing before the filter (Canny's own sigma); 0 for none.
    low_threshold, high_threshold : float
        Canny hysteresis thresholds, as fractions of each plane's intensity range (0..1 after
        rescaling by its finite min and max), or quantiles with ``use_quantiles``.
    use_quantiles : bool
        Canny: read the thresholds as quantiles of the gradient magnitude.
    edge_threshold : float, optional
        Sobel/Laplace in 'fill' mode: the response above which a pixel is an edge, in the filter's
        units. None: Otsu's threshold of the response.
    closing : int
        'fill': iterations of a binary closing that bridges gaps in the edges before filling.
    markers : {'threshold', 'local_minima'}
        'watershed': where the seeds come from. 'threshold': Otsu's foreground (of the smoothed
        image, holes filled), one seed per peak of its distance transform (``min_distance`` apart).
        'local_minima': local minima of the smoothed gradient magnitude inside that foreground.
        Both add a background seed two pixels away from the foreground.
    min_distance : int
        'watershed': the smallest distance between two seeds, in pixels.
    dark : bool
        'watershed': objects are darker than the background.
    min_size : int
        Regions with fewer pixels are dropped (20 as in scikit-image's coins example).
    mode : {'reflect', 'constant', 'nearest', 'mirror', 'wrap'}
        Border handling of all filters (scipy.ndimage modes).
    cval : float
        The value outside the image for ``mode='constant'``.
    spatial_ndim : {2, 3}
        2: each plane on its own. 3: each volume as a whole with the 3D Sobel/Laplace, 3D hole
        filling, watershed and connectivity. Canny is 2D only in scikit-image: in volume mode the
        edges and the hole filling are computed slice by slice and the regions joined in 3D.
        Region IDs are unique across the whole stack.
    rgb, channel_axis, channel
        How to read colour/channels; see :func:`napari_segkit.algorithms.image.to_grey`.
    progress : callable, optional
        ``progress(done, total)`` after each plane/volume.

    Returns
    -------
    labels : ndarray of int32
        Same shape as the image without its channel axis.

    Raises
    ------
    ValueError
        On an unknown filter, region mode, marker mode or border mode, bad thresholds, an empty,
        all-NaN, non-numeric or 1D image.

    Examples
    --------
    >>> img = np.zeros((40, 40)); img[5:15, 5:15] = 1; img[22:35, 20:33] = 1
    >>> int(edge_segment(img).max())
    2
    >>> int(edge_segment(img, region_mode="watershed", min_size=0).max())
    2
    """
    return edge_segment_with_map(image, **kwargs)[0]


def edge_map(
    image: Any,
    *,
    filter: str = "sobel",
    sigma: float = 0.0,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    use_quantiles: bool = False,
    mode: str = "reflect",
    cval: float = 0.0,
    spatial_ndim: int = 2,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
) -> np.ndarray:
    """The edge map alone, for any image napari holds: Sobel magnitude, Laplace or Canny edges.

    ``spatial_ndim=2`` filters each plane on its own; 3 uses the 3D Sobel/Laplace on each volume
    (Canny stays 2D, slice by slice). Float32 (bool for Canny).

    Examples
    --------
    >>> img = np.zeros((3, 3)); img[:, 2] = 1
    >>> edge_map(img, filter="laplace", mode="nearest")[1]
    array([ 0.,  3., -3.], dtype=float32)
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}; got {filter!r}")
    _check_mode(mode)
    _check_canny(sigma, low_threshold, high_threshold, use_quantiles)
    grey = to_grey(image, rgb=rgb, channel_axis=channel_axis, channel=channel)
    if filter == "canny":
        return canny_edges(
            grey,
            sigma=sigma,
            low_threshold=low_threshold,
            high_threshold=high_threshold,
            use_quantiles=use_quantiles,
            mode=mode,
            cval=cval,
        )
    sn = spatial_ndim_for(grey.ndim, spatial_ndim)
    out = np.empty(grey.shape, dtype=np.float32)
    for idx in iter_blocks(tuple(grey.shape), sn):
        x, _ = _finite(grey[idx])
        x = _smooth(x, sigma, mode, cval) if sigma else x
        if filter == "sobel":
            _sobel_into(x, tuple(range(x.ndim)), mode, cval, out[idx])
        else:
            _laplace_into(x, mode, cval, out[idx])
    return out
