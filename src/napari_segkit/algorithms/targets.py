"""Training targets from label images, and which pixels count in the loss.

Pure numpy/scipy: no torch, no napari. :mod:`napari_segkit.models.training` turns the user's labels
into what a U-Net learns to predict:

- :func:`instance_targets`: three classes per pixel (0 background, 1 object interior, 2 object
  boundary) and each object's distance transform normalized to 1 at its centre; the seeded watershed
  of inference (:func:`napari_segkit.algorithms.watershed.instances_from_maps`) on these maps
  gives the objects back.
- :func:`semantic_targets`: class labels checked and made compact.
- :func:`annotation_mask`: the pixels that count in the loss. A user who corrected 20 nuclei of an
  image (``mode="objects"``) trains on those nuclei and a ring of background around each, and the
  rest of the image is ignored (partial annotation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .image import check_spacing

#: Class ids of :func:`instance_targets`.
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: Names of those classes, in id order.
INSTANCE_CLASS_NAMES = ("background", "interior", "boundary")
#: The modes of :func:`annotation_mask`.
ANNOTATION_MODES = ("complete", "objects")


def check_labels(labels: Any, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as an integer numpy array, or raise a ``ValueError`` naming the problem.

    Integer and bool arrays are accepted, and float arrays whose values are all whole numbers (as
    some TIFF writers store labels); negative values, NaN and fractions are refused.

    Examples
    --------
    >>> check_labels(np.array([[0, 1.0], [2, 2]])).dtype
    dtype('int64')
    """
    if labels is None:
        raise ValueError(f"{name} is None: pass an integer label image")
    arr = np.asarray(labels)
    if arr.ndim < 1 or arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8)
    if kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds NaN or infinite values; labels must be integers")
        if not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} holds non-integer values (dtype {arr.dtype}); labels must be whole numbers "
                f"(0 background, 1, 2, ... one per object or class)"
            )
        arr = arr.astype(np.int64)
    elif kind not in "iu":
        raise ValueError(f"{name} has dtype {arr.dtype}; labels must be an integer array")
    if kind == "i" or kind == "f":
        if arr.min() < 0:
            raise ValueError(f"{name} has negative values (min {arr.min()}); labels must be >= 0")
    return arr


def object_boundaries(
    labels: np.ndarray, *, width: int = 1, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """The pixels of each object that touch another object or the background.

    A pixel of object ``i`` is on the boundary if a pixel at most ``width`` pixels away along one
    of the axes holds another label, 0 included. The image
    edge is not a boundary: an object cut by the edge continues outside. With ``spacing``, the
    width is ``width`` times the finest spacing, in physical units, so a coarse axis gets fewer
    pixels (at least one).

    Examples
    --------
    >>> lab = np.array([[0, 1, 1, 1, 2, 2]])
    >>> object_boundaries(lab).astype(int)
    array([[0, 1, 0, 1, 1, 0]])
    """
    labels = check_labels(labels)
    if int(width) < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    spacing = check_spacing(spacing, labels.ndim) or (1.0,) * labels.ndim
    finest = min(spacing)
    boundary = np.zeros(labels.shape, dtype=bool)
    # along each axis separately: a pixel whose neighbour `k` steps away differs is on the boundary
    for axis, s in enumerate(spacing):
        steps = max(1, int(round(int(width) * finest / s)))
        n = labels.shape[axis]
        for k in range(1, min(steps, n - 1) + 1):
            lo = [slice(None)] * labels.ndim
            hi = [slice(None)] * labels.ndim
            lo[axis] = slice(0, n - k)
            hi[axis] = slice(k, n)
            differ = labels[tuple(lo)] != labels[tuple(hi)]
            boundary[tuple(lo)] |= differ
            boundary[tuple(hi)] |= differ
    return boundary & (labels > 0)


def instance_targets(
    labels: Any,
    *,
    boundary_width: int = 1,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel classes and normalized distance maps of an instance label image (2D or 3D).

    Parameters
    ----------
    labels : ndarray of int
        0 is background; each object has its own positive ID.
    boundary_width : int
        How many pixels deep the boundary class reaches into each object.
    spacing : sequence of float, optional
        Pixel size along each axis (anisotropic volumes): distances are measured in these units
        and the boundary is ``boundary_width`` finest pixels thick in physical units.

    Returns
    -------
    classes : ndarray of uint8
        0 background, 1 interior, 2 boundary (the pixels of an object within ``boundary_width`` of
        another object or of the background; see :func:`object_boundaries`).
    distance : ndarray of float32
        Each object's Euclidean distance transform (distance to the nearest pixel not of this
        object; the image edge does not count) divided by its maximum, so 1 at the object's
        centre and > 0 on every object pixel; 0 outside the objects.

    Examples
    --------
    >>> lab = np.zeros((5, 7), int); lab[1:4, 1:4] = 1; lab[1:4, 4:6] = 2
    >>> classes, distance = instance_targets(lab)
    >>> classes
    array([[0, 0, 0, 0, 0, 0, 0],
           [0, 2, 2, 2, 2, 2, 0],
           [0, 2, 1, 2, 2, 2, 0],
           [0, 2, 2, 2, 2, 2, 0],
           [0, 0, 0, 0, 0, 0, 0]], dtype=uint8)
    >>> distance[2, 1:6].round(2).tolist()
    [0.5, 1.0, 0.5, 1.0, 1.0]
    """
    labels = check_labels(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D; got shape {labels.shape}")
    if int(boundary_width) < 1:
        raise ValueError(f"boundary_width must be >= 1; got {boundary_width}")
    spacing = check_spacing(spacing, labels.ndim) or (1.0,) * labels.ndim
    classes = np.zeros(labels.shape, dtype=np.uint8)
    fg = labels > 0
    classes[fg] = INTERIOR
    classes[object_boundaries(labels, width=boundary_width, spacing=spacing)] = BOUNDARY
    distance = np.zeros(labels.shape, dtype=np.float32)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        # one pixel more on every side (within the image) so the object's own edge is inside
        box = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        own = labels[box] == i
        if own.all():  # the object fills the image: nothing to measure from
            d = own.astype(np.float32)
        else:
            d = ndi.distance_transform_edt(own, sampling=spacing).astype(np.float32)
        peak = d.max()
        if peak > 0:
            distance[box][own] = d[own] / peak
    return classes, distance


def semantic_targets(labels: Any, *, n_classes: int | None = None) -> np.ndarray:
    """Class labels (0 background, 1..K-1 the classes) checked and stored compactly.

    Parameters
    ----------
    labels : ndarray of int
        One class id per pixel.
    n_classes : int, optional
        The number of classes the model predicts (background included); ids must be below it.

    Returns
    -------
    ndarray of uint8 (uint16 past 255 classes)

    Examples
    --------
    >>> semantic_targets(np.array([[0, 2], [1, 1]]), n_classes=3)
    array([[0, 2],
           [1, 1]], dtype=uint8)
    """
    labels = check_labels(labels)
    top = int(labels.max())
    if n_classes is not None:
        if int(n_classes) < 2:
            raise ValueError(f"n_classes must be >= 2 (background + one class); got {n_classes}")
        if top >= int(n_classes):
            raise ValueError(
                f"labels hold class {top} but n_classes is {n_classes} (ids 0..{int(n_classes) - 1})"
            )
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"labels hold class {top}; at most 65535 classes are supported")
    return labels.astype(np.uint8 if top <= 255 else np.uint16)


def median_diameter(labels: Any) -> float:
    """Median equivalent diameter of the objects (the diameter of a disc/ball of the same area).

    Returns 0.0 if there is no object.

    Examples
    --------
    >>> lab = np.zeros((20, 20), int); lab[2:6, 2:6] = 1; lab[10:14, 10:14] = 2
    >>> round(median_diameter(lab), 2)
    4.51
    """
    labels = check_labels(labels)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return 0.0
    area = float(np.median(areas))
    if labels.ndim == 2:
        return 2.0 * float(np.sqrt(area / np.pi))
    if labels.ndim == 3:
        return float(np.cbrt(6.0 * area / np.pi))
    raise ValueError(f"labels must be 2D or 3D; got shape {labels.shape}")


def rasterize_region(region: Any, shape: Sequence[int]) -> np.ndarray:
    """A region given as a mask, a box of slices or a polygon, as a bool mask of ``shape``.

    Parameters
    ----------
    region : ndarray of bool, tuple of slice, ndarray of shape (N, 2), or a list of those
        A bool mask of ``shape``; a box as a tuple of slices (``np.s_[10:50, 20:80]``); a polygon
        as its vertices ``(y, x)`` (a napari Shapes polygon or rectangle; in a volume it covers
        every plane, or only plane ``z`` if the vertices are ``(z, y, x)`` with one ``z``); or a
        list of those (their union).
    shape : tuple of int
        The label image's shape.

    Examples
    --------
    >>> rasterize_region(np.s_[0:2, 1:3], (3, 4)).astype(int)
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(region, list):
        out = np.zeros(shape, dtype=bool)
        for part in region:
            out |= rasterize_region(part, shape)
        return out
    if isinstance(region, tuple) and all(isinstance(s, slice) for s in region):
        if len(region) > len(shape):
            raise ValueError(
                f"region has {len(region)} slices but the labels have {len(shape)} dimensions"
            )
        out = np.zeros(shape, dtype=bool)
        out[region] = True
        return out
    arr = np.asarray(region)
    if arr.dtype == bool:
        if arr.shape != shape:
            raise ValueError(f"region mask has shape {arr.shape} but the labels have {shape}")
        return arr.copy()
    if arr.ndim == 2 and arr.shape[1] in (2, 3) and arr.shape[0] >= 3 and arr.dtype.kind in "iuf":
        from skimage.draw import polygon2mask

        plane_shape = shape[-2:]
        mask2d = polygon2mask(plane_shape, arr[:, -2:].astype(np.float64))
        out = np.zeros(shape, dtype=bool)
        if len(shape) == 2:
            return mask2d
        if arr.shape[1] == 3 and len(shape) == 3:
            zs = np.unique(np.round(arr[:, 0]).astype(int))
            if len(zs) != 1:
                raise ValueError(
                    f"a (z, y, x) polygon must lie in one plane; its vertices span planes {zs.tolist()}"
                )
            if not 0 <= zs[0] < shape[0]:
                raise ValueError(f"the polygon's plane {zs[0]} is outside 0..{shape[0] - 1}")
            out[zs[0]] = mask2d
            return out
        out[...] = mask2d
        return out
    raise ValueError(
        "region must be a bool mask of the labels' shape, a tuple of slices, polygon vertices "
        f"(N >= 3, 2) or a list of those; got {type(region).__name__}"
        + (f" of shape {arr.shape}" if hasattr(arr, "shape") else "")
    )


def annotation_mask(
    labels: Any,
    *,
    region: Any = None,
    mode: str = "complete",
    margin: float | None = None,
) -> np.ndarray:
    """Which pixels of a (partly) annotated label image count in the training loss.

    Parameters
    ----------
    labels : ndarray of int
        The user's labels (instances or classes; 0 is background).
    region : mask, slices, polygon or list, optional
        The part of the image the user annotated completely (see :func:`rasterize_region`).
    mode : {'complete', 'objects'}
        ``'complete'``: every pixel inside ``region`` counts (the whole image if ``region`` is
        None): its unlabelled pixels are true background. ``'objects'`` (partial annotation): only
        the labelled objects and a ring of background ``margin`` pixels wide around them count,
        plus ``region`` if given; unlabelled objects elsewhere are not taught as background.
    margin : float, optional
        Width of the background ring in ``'objects'`` mode; by default half the median object
        diameter (:func:`median_diameter`), at least 2 pixels.

    Returns
    -------
    ndarray of bool
        True where a pixel counts.

    Examples
    --------
    >>> lab = np.zeros((7, 7), int); lab[3, 3] = 1
    >>> annotation_mask(lab, mode="objects", margin=1).astype(int)[1:6, 1:6]
    array([[0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    >>> int(annotation_mask(lab, region=np.s_[0:2, :]).sum())
    14
    """
    labels = check_labels(labels)
    if mode not in ANNOTATION_MODES:
        raise ValueError(f"mode must be one of {ANNOTATION_MODES}; got {mode!r}")
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a number >= 0 or None; got {margin!r}")
    if mode == "complete":
        if region is None:
            return np.ones(labels.shape, dtype=bool)
        return rasterize_region(region, labels.shape)
    fg = labels > 0
    if margin is None:
        margin = max(2.0, 0.5 * median_diameter(labels))
    steps = int(round(float(margin)))
    if steps > 0 and fg.any():
        # pixels within `margin` (Euclidean) of an object
        near = ndi.distance_transform_edt(~fg) <= float(margin)
        mask = near | fg
    else:
        mask = fg.copy()
    if region is not None:
        mask |= rasterize_region(region, labels.shape)
    return mask
