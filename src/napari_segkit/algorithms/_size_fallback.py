"""FALLBACK, to be deleted when ``napari_segkit.algorithms.size`` lands (branch ``synth``).

A small classical estimate of the typical object diameter, with the signature of
``algorithms.size.estimate_diameter``, used by the Mask R-CNN's automatic size only while that
module is missing. Pure numpy/scipy/scikit-image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi


def _plane_stats(plane: np.ndarray, dark: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per foreground component: its area and its number of objects (distance-transform peaks)."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    x = np.asarray(plane, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(0), np.zeros(0)
    lo, hi = np.percentile(x[finite], (1.0, 99.8))
    if hi <= lo:
        return np.zeros(0), np.zeros(0)
    x = np.clip((np.where(finite, x, lo) - lo) / (hi - lo), 0, 1)
    if dark:
        x = 1 - x
    x = np.log1p(20 * ndi.gaussian_filter(x, 1.0))  # log: dim objects count as much as bright
    t = threshold_otsu(x)
    fg = ndi.binary_fill_holes(ndi.binary_opening(x > t))
    lab, n = ndi.label(fg)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(float)
    dist = ndi.distance_transform_edt(fg)
    rmax = np.asarray(ndi.maximum(dist, lab, np.arange(1, n + 1)), float)
    keep = rmax >= 1.5  # noise specks
    if not keep.any():
        return np.zeros(0), np.zeros(0)
    r0 = float(np.median(rmax[keep]))
    smooth = ndi.gaussian_filter(dist, max(r0 / 4, 0.5))
    peaks = peak_local_max(
        smooth,
        min_distance=max(1, int(round(0.6 * r0))),
        threshold_abs=0.4 * r0,
        labels=lab,
        exclude_border=False,
    )
    counts = np.bincount(lab[tuple(peaks.T)], minlength=n + 1)[1:] if len(peaks) else np.zeros(n)
    counts = np.maximum(counts, 1)
    return area[keep], counts[keep]


def estimate_diameter(
    image: Any, *, spatial_ndim: int = 2, spacing: Any = None, dark: bool = False
) -> float:
    """Typical object diameter (pixels): the equivalent diameter of the median object's area.

    Otsu foreground of a log-compressed, smoothed copy; each component's area is shared between
    its objects, counted as the peaks of its distance transform; the median over objects. Only
    ``spatial_ndim=2`` (plane by plane, pooled) and ``spacing=None`` are supported here.

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, _ = synthetic_nuclei((256, 256), n_nuclei=40, radius=(9, 11), seed=1)
    >>> 16 < estimate_diameter(img) < 24
    True
    """
    if spatial_ndim != 2 or spacing is not None:
        raise ValueError("the fallback estimate works plane by plane (spatial_ndim=2, no spacing)")
    image = np.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions; got shape {image.shape}")
    areas, counts = [], []
    for idx in np.ndindex(*image.shape[:-2]):
        a, c = _plane_stats(image[idx], dark)
        areas.append(a)
        counts.append(c)
    area, count = np.concatenate(areas), np.concatenate(counts)
    if area.size == 0:
        return float("nan")
    per_object = area / count
    order = np.argsort(per_object)
    cum = np.cumsum(count[order])
    med = float(per_object[order][np.searchsorted(cum, cum[-1] / 2)])
    return float(2 * np.sqrt(med / np.pi))
