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
