"""Per-object tables of a label image (pure numpy/scipy; no napari, no Qt)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["object_table"]

_AXES = "zyx"


def object_table(labels: np.ndarray) -> dict[str, np.ndarray]:
    """One row per object: label, area (pixels or voxels), centroid and bounding box.

    Column names follow the spatial axes: ``centroid_y, centroid_x`` and ``bbox_y0, bbox_x0,
    bbox_y1, bbox_x1`` (end exclusive) in 2D; ``z`` columns as well in 3D; leading axes beyond
    three are named ``axis0``, ``axis1``...

    Parameters
    ----------
    labels : ndarray of int
        0 is the background.

    Returns
    -------
    dict of str to ndarray
        Ready for ``pandas.DataFrame`` (and a napari layer's ``features``).

    Raises
    ------
    ValueError
        For non-integer or negative labels.

    Examples
    --------
    >>> lab = np.zeros((4, 5), int); lab[0:2, 0:2] = 1; lab[3, 1:5] = 3
    >>> t = object_table(lab)
    >>> t["label"].tolist(), t["area"].tolist(), t["bbox_x1"].tolist()
    ([1, 3], [4, 4], [2, 5])
    >>> t["centroid_y"].tolist()
    [0.5, 3.0]
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 is the background)")
    ndim = labels.ndim
    names = [_AXES[i - ndim + 3] if ndim - i <= 3 else f"axis{i}" for i in range(ndim)]
    slices = ndi.find_objects(labels) if labels.size else []
    ids = np.array([i + 1 for i, s in enumerate(slices) if s is not None], dtype=np.int64)
    table: dict[str, np.ndarray] = {"label": ids}
    if ids.size == 0:
        table["area"] = np.zeros(0, np.int64)
        for n in names:
            table[f"centroid_{n}"] = np.zeros(0)
        for n in names:
            table[f"bbox_{n}0"] = np.zeros(0, np.int64)
            table[f"bbox_{n}1"] = np.zeros(0, np.int64)
        return table
    flat = labels.reshape(-1)
    at = np.flatnonzero(flat)  # the objects' pixels only: background is most of an image
    inside = flat[at]
    size = int(ids.max()) + 1
    area = np.bincount(inside, minlength=size)
    table["area"] = area[ids].astype(np.int64)
    coords = np.unravel_index(at, labels.shape)
    for axis, n in enumerate(names):
        sums = np.bincount(inside, weights=coords[axis], minlength=size)
        table[f"centroid_{n}"] = sums[ids] / np.maximum(area[ids], 1)
    present = [slices[i - 1] for i in ids]
    for axis, n in enumerate(names):
        table[f"bbox_{n}0"] = np.array([s[axis].start for s in present], dtype=np.int64)
        table[f"bbox_{n}1"] = np.array([s[axis].stop for s in present], dtype=np.int64)
    return table
