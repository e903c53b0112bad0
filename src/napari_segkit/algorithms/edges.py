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
The Sobel kernels are applied as **correlations** (``scipy.ndimage.correlate``: the kernel is laid
on the image as written, no flip), so for a 2D image ``out[i, j] = sum(k[a, b] * image[i + a - 1,
j + b - 1])``:

- :func:`sobel_h` uses ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``: it responds to horizontal edges
  (intensity changing from row to row), positive where the image is brighter above
  (``sobel_h == -scipy.ndimage.sobel(image, axis=0) == -4 * skimage.filters.sobel_h(image)``);
- :func:`sobel_v` uses ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``: it responds to vertical edges,
  positive where the image is brighter on the right
  (``sobel_v == scipy.ndimage.sobel(image, axis=1) == 4 * skimage.filters.sobel_v(image)``).

:func:`laplace` uses the 8-neighbour kernel ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]`` (symmetric, so
correlation and convolution agree); in 3D its 26-neighbour analogue (all ones, -26 in the centre).
"""

from __future__ import annotations

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

_H = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float32)
_V = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_LAPLACE8 = np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=np.float32)


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


def _float32(image: Any, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` as float32 with every NaN/inf replaced by its nearest finite pixel's value.

    Returns the array and the mask of the pixels that were not finite (None if all were).
    A nearest-neighbour fill (rather than a constant) makes no false edge around a NaN region.
    """
    image = check_image(image, name=name)
    x = np.asarray(image, dtype=np.float32)
    if np.dtype(image.dtype).kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            if not finite.any():
                raise ValueError(f"{name} has no finite value (all NaN or infinite)")
            bad = ~finite
            idx = ndi.distance_transform_edt(bad, return_distances=False, return_indices=True)
            x = x[tuple(idx)]
            return x, bad
    return x, None


def _smooth(x: np.ndarray, sigma: float, mode: str, cval: float) -> np.ndarray:
    if sigma == 0:
        return x
    return ndi.gaussian_filter(x, sigma, mode=mode, cval=cval, output=np.float32)


# ---- filters -----------------------------------------------------------------------------------
def sobel(image: Any, axis: int = -1, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Sobel derivative of ``image`` along ``axis``, in float32, over all of its axes.

    The derivative kernel ``[-1, 0, 1]`` is correlated along ``axis`` and the smoothing kernel
    ``[1, 2, 1]`` along every other axis (``scipy.ndimage.sobel``'s convention): positive where the
    intensity increases along ``axis``. A 2D image gets the classic 3x3 kernels, a 3D volume the
    3x3x3 Sobel. Not normalised (the 2D kernels sum to 8 in absolute value).

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
    x, _ = _float32(image)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for an image of {x.ndim} dimensions")
    return _sobel(x, axis, mode, cval)


def _sobel(x: np.ndarray, axis: int, mode: str, cval: float, out: np.ndarray | None = None):
    """Separable Sobel of float32 ``x``; exact for ``mode='constant'`` with any ``cval``.

    (``scipy.ndimage.sobel`` pads its smoothing passes with ``cval`` too; the true 2D correlation
    of a ``cval``-padded image has 0 there, since the derivative of a constant is 0.)
    """
    out = np.empty(x.shape, dtype=np.float32) if out is None else out
    axis = axis % x.ndim
    ndi.correlate1d(x, [-1.0, 0.0, 1.0], axis=axis, output=out, mode=mode, cval=cval)
    for other in range(x.ndim):
        if other != axis:
            ndi.correlate1d(out, [1.0, 2.0, 1.0], axis=other, output=out, mode=mode, cval=0.0)
    return out


def _check_2d(image: Any, name: str) -> None:
    ndim = check_image(image).ndim
    if ndim != 2:
        raise ValueError(
            f"{name} takes a 2D image; got {ndim} dimensions (use sobel(image, axis=...) for nD)"
        )


def sobel_h(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Horizontal edges: the 2D kernel ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``, correlated.

    ``out[i, j] = (image[i-1, j-1] + 2 image[i-1, j] + image[i-1, j+1])
    - (image[i+1, j-1] + 2 image[i+1, j] + image[i+1, j+1])``: positive where the row above is
    brighter. Equals ``-sobel(image, axis=0)``.

    Examples
    --------
    >>> img = np.array([[4, 4, 4], [4, 4, 4], [0, 0, 0]], np.uint8)
    >>> sobel_h(img)[1]
    array([16., 16., 16.], dtype=float32)
    """
    _check_2d(image, "sobel_h")
    out = sobel(image, axis=0, mode=mode, cval=cval)
    np.negative(out, out=out)
    return out


def sobel_v(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Vertical edges: the 2D kernel ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``, correlated.

    ``out[i, j] = (image[i-1, j+1] + 2 image[i, j+1] + image[i+1, j+1])
    - (image[i-1, j-1] + 2 image[i, j-1] + image[i+1, j-1])``: positive where the column on the
    right is brighter. Equals ``sobel(image, axis=1)``.

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
    Memory: the float32 input plus two float32 arrays.

    Examples
    --------
    >>> img = np.zeros((3, 3)); img[:, 2] = 1
    >>> float(sobel_magnitude(img)[1, 1])
    4.0
    """
    _check_mode(mode)
    x, _ = _float32(image)
    out = np.empty(x.shape, dtype=np.float32)
    tmp = np.empty(x.shape, dtype=np.float32)
    for axis in range(x.ndim):
        _sobel(x, axis, mode, cval, out=tmp if axis else out)
        if axis:
            np.multiply(tmp, tmp, out=tmp)
            out += tmp
        else:
            np.multiply(out, out, out=out)
    np.sqrt(out, out=out)
    return out


def laplace(image: Any, *, mode: str = "reflect", cval: float = 0.0) -> np.ndarray:
    """Laplace filter with the 8-neighbour kernel ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``, float32.

    ``out = (sum of the 3x3 neighbourhood) - 9 * image``: the sum of the 8 neighbours minus 8 times
    the centre. A 3D volume uses the 26-neighbour analogue (3x3x3 sum - 27 * image). The kernel is
    symmetric, so correlation and convolution agree. Computed as separable box sums.

    Examples
    --------
    >>> img = np.zeros((3, 3), np.uint8); img[1, 1] = 1
    >>> laplace(img, mode="constant")
    array([[ 1.,  1.,  1.],
           [ 1., -8.,  1.],
           [ 1.,  1.,  1.]], dtype=float32)
    """
    _check_mode(mode)
    x, _ = _float32(image)
    out = np.empty(x.shape, dtype=np.float32)
    ones = np.ones(3, dtype=np.float32)
    ndi.correlate1d(x, ones, axis=0, output=out, mode=mode, cval=cval)
    for axis in range(1, x.ndim):
        # outside the image, a partial box sum of cval-padding holds 3**axis times cval
        ndi.correlate1d(out, ones, axis=axis, output=out, mode=mode, cval=cval * 3**axis)
    out -= np.float32(3**x.ndim) * x
    return out


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
    return ndi.binary_fill_holes(edges)


def _foreground(x: np.ndarray, dark: bool) -> np.ndarray:
    t = threshold_value(x, "otsu")
    fg = x <= t if dark else x > t
    return ndi.binary_fill_holes(fg)


def _markers(
    x: np.ndarray, elevation: np.ndarray, fg: np.ndarray, markers: str, min_distance: int
) -> np.ndarray:
    """Object markers 1..N inside ``fg`` and a background marker N+1 well outside it."""
    from skimage.feature import peak_local_max

    comps, n_comps = ndi.label(fg)
    if n_comps == 0:
        return np.zeros(x.shape, dtype=np.int32)
    if markers == "threshold":
        # one seed per distance-transform peak: touching objects joined by a neck get two
        score = ndi.distance_transform_edt(fg).astype(np.float32)
    else:  # local minima of the (smoothed) gradient, inside the foreground
        score = elevation.max() - elevation
    peaks = peak_local_max(score, min_distance=min_distance, labels=comps, exclude_border=False)
    out = np.zeros(x.shape, dtype=np.int32)
    out[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    if markers == "local_minima" and len(peaks):
        # a flat minimum (a plateau of zero gradient) is one seed, not one every min_distance
        plateau = (score == ndi.maximum_filter(score, size=3)) & fg
        flats, _ = ndi.label(plateau, ndi.generate_binary_structure(fg.ndim, fg.ndim))
        seeds = np.unique(flats[tuple(peaks.T)])
        seeds = seeds[seeds > 0]
        lut = np.zeros(int(flats.max()) + 1, dtype=np.int32)
        lut[seeds] = np.arange(1, len(seeds) + 1, dtype=np.int32)
        out = lut[flats]
        peaks = np.argwhere(out)  # every seeded pixel, for the component check below
    # every foreground component gets at least one marker (a flat one may have no strict peak)
    missing = np.setdiff1d(np.arange(1, n_comps + 1), comps[tuple(peaks.T)])
    if missing.size:
        centres = ndi.maximum_position(score, comps, missing)
        n = int(out.max())
        for k, pos in enumerate(centres):
            out[tuple(int(p) for p in pos)] = n + k + 1
    n_obj = int(out.max())
    structure = ndi.generate_binary_structure(fg.ndim, fg.ndim)
    background = ~ndi.binary_dilation(fg, structure, iterations=2)
    out[background] = n_obj + 1
    return out


def _segment_block(
    block: np.ndarray,
    *,
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
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and edge map of one 2D plane or 3D volume."""
    x, bad = _float32(block)
    if region_mode == "watershed":
        from skimage.segmentation import watershed

        smooth = _smooth(x, sigma, mode, cval)
        emap = sobel_magnitude(smooth, mode=mode, cval=cval)
        fg = _foreground(smooth, dark)
        mk = _markers(smooth, emap, fg, markers, min_distance)
        n_obj = int(mk.max()) - 1 if (mk > 0).any() else 0
        if n_obj <= 0:
            labels = np.zeros(x.shape, dtype=np.int32)
        else:
            labels = watershed(emap, mk).astype(np.int32, copy=False)
            labels[labels == n_obj + 1] = 0
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
            emap = edges.view(np.uint8)
        else:
            smooth = _smooth(x, sigma, mode, cval)
            emap = (
                sobel_magnitude(smooth, mode=mode, cval=cval)
                if filter == "sobel"
                else laplace(smooth, mode=mode, cval=cval)
            )
            strength = np.abs(emap) if filter == "laplace" else emap
            t = threshold_value(strength, "otsu") if edge_threshold is None else edge_threshold
            edges = strength > t
        filled = _fill_regions(edges, closing, slicewise=filter == "canny")
        labels = label_objects(filled, connectivity=1, min_size=min_size)
    if bad is not None:
        labels[bad] = 0
        if min_size:
            remove_small(labels, min_size)
    return labels, emap


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
        labels, block_map = _segment_block(
            block,
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
        emap[index] = block_map
        return labels

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
    func = sobel_magnitude if filter == "sobel" else laplace
    for idx in iter_blocks(tuple(grey.shape), sn):
        x, _ = _float32(grey[idx])
        out[idx] = func(_smooth(x, sigma, mode, cval), mode=mode, cval=cval)
    return out
