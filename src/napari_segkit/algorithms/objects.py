"""From a mask to objects: connected components, small-object removal, hole filling.

Shared by every method that turns a foreground (or class) map into one label ID per object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi

_CHUNK = 1 << 18  # pixels per chunk of the passes that numpy would otherwise copy whole as intp


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
    flat = labels.reshape(-1)  # a view of a C-contiguous array (a copy otherwise)
    counts = np.zeros(n + 1, dtype=np.intp)
    for start in range(0, flat.size, _CHUNK):  # bincount casts to intp: chunks bound that copy
        counts += np.bincount(flat[start : start + _CHUNK], minlength=n + 1)
    keep = counts >= max(min_size, 1)
    keep[0] = False
    if keep[1:].all():
        return labels
    lut = np.zeros(n + 1, dtype=labels.dtype)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    if not labels.flags.c_contiguous:
        np.take(lut, labels, out=labels, mode="clip")
        return labels
    for start in range(0, flat.size, _CHUNK):  # take buffers its index array: chunks again
        chunk = flat[start : start + _CHUNK]
        np.take(lut, chunk, out=chunk, mode="clip")
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
    label_rows(lambda r0, r1: mask[r0:r1], structure, labels)
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


# ---- threads ----------------------------------------------------------------------------------
#: Fewest pixels worth a thread of their own.
_THREAD_PIXELS = 1 << 20


def n_threads(n_pixels: int) -> int:
    """Threads worth using on ``n_pixels``: one per available core, each with >= 1M pixels."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_pixels // _THREAD_PIXELS))


def run_threads(func: Callable[[int], object], n: int, threads: int) -> list:
    """``[func(i) for i in range(n)]``, on ``threads`` threads (numpy and scipy.ndimage release
    the GIL in their loops, so the work overlaps)."""
    if threads <= 1 or n <= 1:
        return [func(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(threads, n)) as pool:
        return list(pool.map(func, range(n)))


def label_rows(
    rows: Callable[[int, int], np.ndarray],
    structure: np.ndarray,
    out: np.ndarray,
    *,
    threads: int | None = None,
) -> int:
    """``scipy.ndimage.label`` of a mask given row by row, into ``out``, on several threads.

    ``rows(r0, r1)`` returns the bool mask of rows ``r0 .. r1 - 1`` (along axis 0) of a mask of
    ``out.shape``; it is called once per strip, from the threads (so the mask need not exist
    whole: the threshold computes it strip by strip). Each thread labels one horizontal strip;
    a union-find over the label pairs that touch across strip borders joins them, and the final
    IDs are numbered as scipy numbers them, in raster order of each object's first pixel, so the
    result equals ``ndi.label(mask, structure)`` exactly. Returns the number of objects.
    """
    shape = out.shape
    if threads is None:
        threads = n_threads(int(np.prod(shape)))
    threads = max(1, min(threads, shape[0]))
    if threads == 1:
        return int(ndi.label(rows(0, shape[0]), structure=structure, output=out))
    bounds = np.linspace(0, shape[0], threads + 1).astype(int)

    def strip(i: int) -> int:
        r0, r1 = bounds[i], bounds[i + 1]
        return int(ndi.label(rows(r0, r1), structure=structure, output=out[r0:r1]))

    counts = np.array(run_threads(strip, threads, threads), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # label pairs that touch across each border: offsets of the structure into the next row
    centre = np.array(structure.shape) // 2
    steps = [d - centre for d in np.argwhere(structure) if d[0] - centre[0] == 1]
    firsts, seconds = [], []
    for i in range(threads - 1):
        above, below = out[bounds[i + 1] - 1], out[bounds[i + 1]]
        for step in steps:
            src = tuple(
                slice(None, -1) if e > 0 else slice(1, None) if e < 0 else slice(None)
                for e in step[1:]
            )
            dst = tuple(
                slice(1, None) if e > 0 else slice(None, -1) if e < 0 else slice(None)
                for e in step[1:]
            )
            a, b = above[src].ravel(), below[dst].ravel()
            both = (a > 0) & (b > 0)
            firsts.append(a[both].astype(np.int64) + offsets[i])
            seconds.append(b[both].astype(np.int64) + offsets[i + 1])
    n = int(offsets[-1])
    root = _union_min(n, np.concatenate(firsts), np.concatenate(seconds))
    # raster order of first pixels = order of the smallest strip label of each object
    is_root = root == np.arange(n + 1)
    is_root[0] = False
    new_id = np.cumsum(is_root)
    final = new_id[root].astype(out.dtype)

    def relabel(i: int) -> None:
        lut = final[offsets[i] : offsets[i] + counts[i] + 1].copy()
        lut[0] = 0
        if np.array_equal(lut, np.arange(len(lut))):
            return  # the first strip keeps its numbers
        flat = out[bounds[i] : bounds[i + 1]].reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            np.take(lut, chunk, out=chunk, mode="clip")

    run_threads(relabel, threads, threads)
    return int(new_id[-1])


def _union_min(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For labels 0..n joined by the pairs (a, b), each label's smallest joined label."""
    root = np.arange(n + 1, dtype=np.int64)
    if a.size == 0:
        return root
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (ia, ib)), shape=(nodes.size,) * 2)
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n + 1, dtype=np.int64)
    np.minimum.at(smallest, comp, nodes)
    root[nodes] = smallest[comp]
    return root
