"""From 2D predictions to 3D objects and tracks: z-stacks and time-lapses segmented by 2D models.

- :func:`objects_from_plane_maps`: per-plane foreground/score maps of a z-stack -> 3D objects, by
  ONE 3D seeded watershed (not by linking slice labels one to one, which breaks an object wherever
  one slice misses or merges it);
- :func:`link_frames`: per-frame labels of a time-lapse -> the same object keeps its ID;
- (the stack mode, z-stack or time-lapse, is decided by :func:`napari_segkit.algorithms.image.stack_mode`).

Pure numpy/scipy/scikit-image; no napari, no Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from .image import ProgressCallback, check_spacing, report
from .objects import remove_small, split_touching
from .size import check_diameter, diameter_from_mask

#: axis labels (case-insensitive) that name time
TIME_LABELS = ("t", "time", "frame", "frames")


def objects_from_plane_maps(
    foreground: np.ndarray,
    *,
    diameter: float | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threshold: float = 0.5,
    min_size: int = 0,
    z_smooth: float = 1.0,
) -> np.ndarray:
    """3D objects from a stack of per-plane foreground (or score) maps.

    The maps, in [0, 1] (e.g. a 2D model's foreground probability for every z-plane), are
    smoothed along z by ``z_smooth`` planes (against plane-to-plane flicker), thresholded, and the
    3D mask is split into objects by one seeded watershed on its anisotropic distance transform
    (:func:`napari_segkit.algorithms.objects.split_touching` in 3D, seeds spaced from the
    diameter).

    Parameters
    ----------
    foreground : ndarray
        ``(Z, Y, X)`` foreground map, values in [0, 1] (bool is accepted).
    diameter : float, optional
        Typical object diameter in the units of ``spacing`` (xy pixels with the default spacing).
        None: measured from the mask (sphere-equivalent diameter).
    spacing : (float, float, float)
        Voxel size ``(z, y, x)``, e.g. ``(2, 1, 1)`` when z-steps are twice the pixel size.
    threshold : float
        Foreground above it, in (0, 1).
    min_size : int
        Drop objects of fewer voxels.
    z_smooth : float
        Gaussian sigma along z, in planes (0: none).

    Returns
    -------
    ndarray of int32
        3D labels 1..N.

    Examples
    --------
    >>> zz, yy, xx = np.mgrid[:12, :32, :48]
    >>> ball = lambda x0: ((zz - 6) / 5) ** 2 + ((yy - 16) / 9) ** 2 + ((xx - x0) / 9) ** 2 < 1
    >>> fg = (ball(15) | ball(31)).astype(np.float32)
    >>> fg[7] = 0  # one plane missed by the 2D model
    >>> int(objects_from_plane_maps(fg, diameter=18).max())
    2
    """
    fg = np.asarray(foreground)
    if fg.ndim != 3:
        raise ValueError(f"foreground must be 3D (Z, Y, X); got shape {fg.shape}")
    if fg.dtype.kind not in "biuf":
        raise ValueError(f"foreground must be a real array; got dtype {fg.dtype}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    if z_smooth < 0:
        raise ValueError(f"z_smooth must be >= 0; got {z_smooth}")
    spacing = check_spacing(spacing, 3) or (1.0, 1.0, 1.0)
    score = fg.astype(np.float32)
    if fg.dtype.kind == "f" and (np.nanmin(score) < 0 or np.nanmax(score) > 1):
        raise ValueError("foreground values must be in [0, 1] (a probability or score map)")
    score = np.nan_to_num(score, nan=0.0)
    if z_smooth > 0 and fg.shape[0] > 1:
        score = ndi.gaussian_filter1d(score, z_smooth, axis=0, mode="nearest")
    mask = score > threshold
    if not mask.any():
        return np.zeros(fg.shape, np.int32)
    if diameter is None:
        diameter = diameter_from_mask(mask, spacing=spacing)
    else:
        extent = [n * s for n, s in zip(fg.shape, spacing, strict=True)]
        diameter = check_diameter(diameter, shape=extent)
    labels = split_touching(mask, diameter=diameter, spacing=spacing)
    if min_size > 1:
        remove_small(labels, min_size)
    return labels


def _iou(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between the objects of two label images: (prev IDs, cur IDs, IoU matrix)."""
    a_ids, a = np.unique(prev, return_inverse=True)
    b_ids, b = np.unique(cur, return_inverse=True)
    a, b = a.reshape(-1), b.reshape(-1)
    na, nb = len(a_ids), len(b_ids)
    inter = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb)
    area_a, area_b = inter.sum(1), inter.sum(0)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / np.maximum(union, 1)
    keep_a, keep_b = a_ids != 0, b_ids != 0
    return a_ids[keep_a], b_ids[keep_b], iou[np.ix_(keep_a, keep_b)]


def link_frames(
    labels_t: np.ndarray,
    *,
    min_iou: float = 0.3,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Relabel a time-lapse so that an object keeps its ID from frame to frame.

    Between consecutive frames, objects are matched one to one by the Hungarian algorithm on
    their IoU; a match needs ``IoU >= min_iou``. An unmatched object (a new one, or one after a
    gap) gets a new ID never used before; IDs of objects that disappear are not reused.

    Parameters
    ----------
    labels_t : ndarray of int
        ``(T, Y, X)`` or ``(T, Z, Y, X)``: each frame's labels (IDs need not agree between
        frames).
    min_iou : float
        In (0, 1].
    progress : callable, optional
        ``progress(done, total)`` after each frame.

    Returns
    -------
    ndarray of int32, same shape

    Examples
    --------
    >>> a = np.zeros((3, 6, 6), np.int32)
    >>> a[0, 1:3, 1:3] = 5; a[1, 1:3, 2:4] = 1; a[2, 1:3, 2:4] = 9; a[2, 4:6, 4:6] = 1
    >>> out = link_frames(a)
    >>> [sorted(np.unique(f[f > 0]).tolist()) for f in out]
    [[1], [1], [1, 2]]
    """
    lab = np.asarray(labels_t)
    if lab.ndim < 3:
        raise ValueError(f"labels_t must be (T, Y, X) or (T, Z, Y, X); got shape {lab.shape}")
    if lab.dtype.kind not in "biu":
        raise ValueError(f"labels_t must be an integer array; got dtype {lab.dtype}")
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must be in (0, 1]; got {min_iou}")
    out = np.zeros(lab.shape, np.int32)
    next_id = 1
    prev_out = None
    total = lab.shape[0]
    for t in range(total):
        frame = lab[t]
        ids = np.unique(frame)
        ids = ids[ids != 0]
        mapping = {}
        if prev_out is not None and ids.size and prev_out.any():
            p_ids, c_ids, iou = _iou(prev_out, frame)
            if iou.size:
                rows, cols = linear_sum_assignment(-iou)
                for r, c in zip(rows, cols, strict=True):
                    if iou[r, c] >= min_iou:
                        mapping[int(c_ids[c])] = int(p_ids[r])
        lut_keys = ids
        lut_vals = np.empty(len(ids), np.int64)
        for i, v in enumerate(ids):
            v = int(v)
            if v in mapping:
                lut_vals[i] = mapping[v]
            else:
                lut_vals[i] = next_id
                next_id += 1
        if next_id - 1 > np.iinfo(np.int32).max:
            raise ValueError("more tracks than int32 labels can hold")
        if ids.size:
            pos = np.searchsorted(lut_keys, frame)
            pos = np.minimum(pos, len(lut_keys) - 1)
            hit = lut_keys[pos] == frame
            out[t][hit] = lut_vals[pos[hit]]
        prev_out = out[t]
        report(progress, t + 1, total)
    return out
