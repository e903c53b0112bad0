"""Any per-window predictor, block by block with a halo, stitched into one zarr labels array.

:func:`segment_blockwise` runs a predictor (``predict(window, index) -> labels``: a model, or any
function) on every block of an image grown by a ``halo`` on each side (clipped at the image
border), on a dask scheduler (local threads by default, or a ``dask.distributed`` cluster), and
writes the labels into a zarr array on disk that napari shows lazily. Memory holds a few windows
at a time, whatever the image size. No torch here: the models' predictors live in
:mod:`napari_segkit.models.blockwise`.

Instances are stitched in three passes over the blocks:

1. **predict**: each window is segmented; an object belongs to the block whose core (the block
   without its halo) holds its centroid, grown by ``margin`` pixels so that an object right on a
   border has an owner whichever side its two predictions fall on. The owned objects of each
   window are kept (a temporary array per block);
2. **match**: owned objects of neighbouring blocks (faces, edges and corners) that overlap with
   an IoU of at least ``iou`` within the overlap of the two windows are the same object
   (connected components of the matches); every set gets one ID, numbered in block order then in the predictor's label
   order, so the IDs do not depend on the order in which the blocks ran;
3. **paint**: each block's core is painted with its own objects first, then with the objects of
   its neighbours that reach into it (in a fixed order).

An object wider than the halo can be cut where it leaves its owner's window: choose the halo
from the object size (:func:`halo_for_diameter`). Semantic labels (a class per pixel) need no
stitching: each block's core is taken from its window's prediction.

Work files go to a temporary folder beside the output; with a ``dask.distributed`` cluster of
several machines, ``out`` must be on a file system that every worker sees.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .chunked import (
    _as_dask,
    _axis_chunks,
    _create_zarr,
    _delayed,
    _Grid,
    _halo_slices,
    _prepare_out,
    _Runner,
    _write,
)
from .image import Cancelled, ProgressCallback

__all__ = ["KINDS", "halo_for_diameter", "segment_blockwise"]

#: What a predictor returns: an ID per object, or a class per pixel.
KINDS = ("instance", "semantic")


def halo_for_diameter(diameter: float) -> int:
    """The halo (pixels per side) for objects of ``diameter`` pixels: ``2 * diameter + 8``.

    An object owned by a block (its centroid within the core) then lies whole within that
    block's window, and the network sees context around it.

    Examples
    --------
    >>> halo_for_diameter(17.0)
    42
    """
    d = float(diameter)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"diameter must be a positive number of pixels; got {diameter!r}")
    return int(math.ceil(2 * d)) + 8


# ---- pass 1: predict ----------------------------------------------------------------------------
def _centroids(lab: np.ndarray, n: int) -> np.ndarray:
    """Centroids ``(n, ndim)`` of labels 1..n (pixel coordinates)."""
    flat = lab.reshape(-1)
    counts = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    out = np.zeros((n, lab.ndim))
    grids = np.indices(lab.shape, sparse=True)
    for a in range(lab.ndim):
        coord = np.broadcast_to(grids[a], lab.shape).reshape(-1)
        sums = np.bincount(flat, weights=coord, minlength=n + 1)[1:]
        out[:, a] = sums / np.maximum(counts, 1)
    return out


def _predict_block(
    window: np.ndarray,
    predict: Callable,
    index: tuple,
    core: tuple,
    sn: int,
    kind: str,
    margin: float,
    work_file: str | None,
    out_path: str,
    out_region: tuple,
    dtype: Any,
) -> int:
    """Segment one window; semantic: write its core; instance: keep its owned objects."""
    window = np.asarray(window)
    lab = np.asarray(predict(window, index))
    want = tuple(window.shape[:sn])
    if lab.shape != want:
        raise ValueError(
            f"the predictor returned labels of shape {lab.shape} for a window of shape {want}"
        )
    if kind == "semantic":
        _write(out_path, out_region, lab[core].astype(dtype, copy=False))
        return 0
    ids, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape).astype(np.int64, copy=False)
    if ids[0] == 0:
        n = len(ids) - 1
    else:  # no background pixel: every ID is an object
        n = len(ids)
        inv = inv + 1
    keep = np.zeros(n + 1, np.int64)
    if n:
        cent = _centroids(inv, n)
        own = np.ones(n, bool)
        for a, s in enumerate(core):
            own &= (cent[:, a] >= s.start - margin) & (cent[:, a] < s.stop + margin)
        k = int(own.sum())
        keep[1:][own] = np.arange(1, k + 1)
    else:
        k = 0
    dtype_k = np.uint16 if k < 2**16 else np.int32
    np.save(work_file, keep[inv].astype(dtype_k))
    return k


# ---- pass 2: match owned objects across block borders ------------------------------------------
def _overlap(a: tuple, b: tuple) -> tuple[tuple, tuple] | None:
    """Where global slices ``a`` and ``b`` meet, as local slices of each; None if apart."""
    la, lb = [], []
    for sa, sb in zip(a, b, strict=True):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if hi <= lo:
            return None
        la.append(slice(lo - sa.start, hi - sa.start))
        lb.append(slice(lo - sb.start, hi - sb.start))
    return tuple(la), tuple(lb)


def _match_pair(file_a: str, outer_a: tuple, file_b: str, outer_b: tuple, iou: float) -> list:
    """``(label_a, label_b)`` of the owned objects of two windows that are the same object."""
    meet = _overlap(outer_a, outer_b)
    if meet is None:
        return []
    a = np.load(file_a, mmap_mode="r")[meet[0]].reshape(-1).astype(np.int64)
    b = np.load(file_b, mmap_mode="r")[meet[1]].reshape(-1).astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    area_a = np.bincount(a, minlength=int(pairs[0].max()) + 1)
    area_b = np.bincount(b, minlength=int(pairs[1].max()) + 1)
    union = area_a[pairs[0]] + area_b[pairs[1]] - inter
    same = inter >= iou * union
    return [(int(x), int(y)) for x, y in pairs[:, same].T]


def _match_block(jobs: list, iou: float) -> list:
    """:func:`_match_pair` for a block and each of its forward neighbours."""
    out = []
    for key_a, file_a, outer_a, key_b, file_b, outer_b in jobs:
        for la, lb in _match_pair(file_a, outer_a, file_b, outer_b, iou):
            out.append((key_a, la, key_b, lb))
    return out


# ---- pass 3: paint the cores ---------------------------------------------------------------------
def _paint_block(sources: list, core_global: tuple, out_path: str, out_region: tuple) -> None:
    """Write a block's core: its own objects first, then its neighbours' reaching into it."""
    shape = tuple(s.stop - s.start for s in core_global)
    result = np.zeros(shape, np.int32)
    for work_file, outer, lut in sources:
        meet = _overlap(outer, core_global)
        if meet is None or len(lut) <= 1:
            continue
        vals = lut[np.load(work_file, mmap_mode="r")[meet[0]]]
        dst = result[meet[1]]
        empty = dst == 0
        dst[empty] = vals[empty]
    _write(out_path, out_region, result)


def _joined_ids(total: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """IDs 1.. of ``total`` objects (keys 0..total-1) where each pair is one object: the
    connected components of the pairs, numbered in the order of their smallest key (block
    order, whatever order the pairs came in), as :func:`~napari_segkit.algorithms.chunked._join`
    joins components across block faces.

    Examples
    --------
    >>> _joined_ids(5, [(4, 1), (2, 3)])
    array([1, 2, 3, 3, 2])
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if total == 0:
        return np.zeros(0, np.int64)
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(p), np.int8), (p[:, 0], p[:, 1])), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    return comp.astype(np.int64) + 1


def _neighbour_offsets(sn: int) -> list[tuple[int, ...]]:
    """Offsets of every neighbour (faces, edges, corners), in C order."""
    return [o for o in np.ndindex(*(3,) * sn) if any(v != 1 for v in o)]


# ---- the public function -------------------------------------------------------------------------
def segment_blockwise(
    image: Any,
    predict: Callable[[np.ndarray, tuple], np.ndarray],
    *,
    kind: str = "instance",
    halo: int = 64,
    chunk: int = 2048,
    spatial_ndim: int = 2,
    channels: bool = False,
    iou: float = 0.5,
    margin: float = 2.0,
    dtype: Any = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Any:
    """Segment an image of any size window by window with ``predict``; labels go to zarr.

    Parameters
    ----------
    image : dask array, numpy array, zarr array or path of a zarr array
        Shape ``(*stack, *spatial)``, or ``(*stack, *spatial, C)`` with ``channels=True``; read
        one window at a time.
    predict : callable
        ``predict(window, index) -> labels``: ``window`` a numpy array of the spatial axes (and
        the channels, last); ``index`` the tuple of stack indices of the plane (volume) it comes
        from; ``labels`` an integer array of the window's spatial shape. It must be picklable to
        run on a ``distributed`` cluster of processes.
    kind : {'instance', 'semantic'}
        An ID per object (stitched across the blocks; see the module docstring), or a class per
        pixel.
    halo : int
        Pixels each window reaches beyond its block on every side (:func:`halo_for_diameter`).
    chunk : int
        Pixels per side of a block (and of the output's zarr chunks).
    spatial_ndim : {2, 3}
        Planes (2) or volumes (3) are segmented as a whole; the axes before them are a stack.
    channels : bool
        The last axis holds channels (given whole to ``predict``).
    iou : float
        Objects of neighbouring blocks that overlap with at least this IoU are one object.
    margin : float
        An object is owned by the blocks whose core, grown by this many pixels, holds its
        centroid.
    dtype : dtype, optional
        Of the output: int32 for instances, uint8 for classes by default.
    out, overwrite
        The zarr array to write (default a temporary folder, removed at exit); replace an
        existing one.
    scheduler : None, 'threads', 'sync', address or distributed.Client
        Where the blocks run; see :func:`napari_segkit.algorithms.chunked.segment_chunked`.
    workers : int, optional
        Threads of the local scheduler.
    progress : callable, optional
        ``progress(done, total)`` after each block task; raising from it stops the work.
    cancel : callable, optional
        ``cancel() -> bool``, asked after each block task: True stops the work
        (:class:`~napari_segkit.algorithms.image.Cancelled` is raised).

    Returns
    -------
    dask.array.Array
        The labels, read lazily from the zarr array, of shape ``(*stack, *spatial)``. Instance
        IDs are unique over the whole stack.

    Raises
    ------
    ValueError
        A bad kind, halo, chunk, iou, an image without enough axes, an existing ``out`` without
        ``overwrite``, or a predictor that returns labels of another shape.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> img = np.zeros((100, 100)); img[10:20, 40:60] = 1; img[70:90, 5:95] = 1
    >>> lab = segment_blockwise(img, lambda w, i: ndi.label(w > 0.5)[0], halo=20, chunk=32)
    >>> int(lab.max().compute())
    2
    """
    import dask.array as da

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if isinstance(halo, bool) or not isinstance(halo, int | np.integer) or halo < 0:
        raise ValueError(f"halo must be an integer >= 0; got {halo!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 16:
        raise ValueError(f"chunk must be an integer >= 16 (pixels per side); got {chunk!r}")
    if spatial_ndim not in (2, 3):
        raise ValueError(f"spatial_ndim must be 2 or 3; got {spatial_ndim!r}")
    if not 0.0 < float(iou) <= 1.0:
        raise ValueError(f"iou must be in (0, 1]; got {iou!r}")
    if float(margin) < 0:
        raise ValueError(f"margin must be >= 0; got {margin!r}")
    if not callable(predict):
        raise ValueError(f"predict must be callable; got {predict!r}")
    arr = _as_dask(image)
    n_spatial_axes = arr.ndim - (1 if channels else 0)
    sn = int(spatial_ndim)
    if n_spatial_axes < sn:
        raise ValueError(
            f"image of shape {tuple(arr.shape)} has {n_spatial_axes} spatial axes; "
            f"spatial_ndim={sn} needs at least {sn}"
        )
    shape = tuple(int(n) for n in arr.shape[:n_spatial_axes])
    lead, spatial = shape[: len(shape) - sn], shape[len(shape) - sn :]
    side = int(chunk)
    if dtype is None:
        dtype = np.int32 if kind == "instance" else np.uint8
    grid = _Grid(spatial, tuple(_axis_chunks(n, side, max(halo, 1)) for n in spatial))
    blocks = grid.blocks()
    planes = list(np.ndindex(*lead))

    out_path = _prepare_out(out, overwrite)
    _create_zarr(out_path, shape, (1,) * len(lead) + (side,) * sn, dtype)

    def report(done: int, total: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(done, total)

    runner = _Runner(scheduler, report, workers)
    work = Path(tempfile.mkdtemp(prefix=".segkit-blocks-", dir=out_path.parent))
    try:
        runner.expect(len(planes) * len(blocks) * (3 if kind == "instance" else 1))
        outer_of, core_of = {}, {}
        for b in blocks:
            outer_of[b], core_of[b] = _halo_slices(grid, b, halo)

        def file_of(p: tuple, b: tuple) -> str:
            return str(work / ("_".join(map(str, (*p, *b))) + ".npy"))

        tasks = []
        for p in planes:
            for b in blocks:
                window = arr[p + outer_of[b]]
                tasks.append(
                    _delayed(
                        _predict_block,
                        window,
                        predict,
                        p,
                        core_of[b],
                        sn,
                        kind,
                        float(margin),
                        file_of(p, b),
                        str(out_path),
                        p + grid.slices(b),
                        dtype,
                    )
                )
        counts = runner.run(tasks)
        if kind == "semantic":
            return da.from_zarr(str(out_path))

        keys = [(p, b) for p in planes for b in blocks]
        base, total = {}, 0
        for key, k in zip(keys, counts, strict=True):
            base[key] = total
            total += int(k)
        if total > np.iinfo(np.int32).max:
            raise ValueError(f"more objects ({total}) than int32 labels can hold")

        # pass 2: matches with forward neighbours (faces, edges, corners)
        offsets = _neighbour_offsets(sn)
        nb = grid.nblocks

        def neighbours(b: tuple) -> list[tuple]:
            found = []
            for o in offsets:
                n = tuple(bi + oi - 1 for bi, oi in zip(b, o, strict=True))
                if all(0 <= ni < m for ni, m in zip(n, nb, strict=True)):
                    found.append(n)
            return found

        tasks = []
        for p in planes:
            for b in blocks:
                jobs = [
                    ((p, b), file_of(p, b), outer_of[b], (p, n), file_of(p, n), outer_of[n])
                    for n in neighbours(b)
                    if n > b
                ]
                tasks.append(_delayed(_match_block, jobs, float(iou)))
        pairs = [
            (base[key_a] + la - 1, base[key_b] + lb - 1)
            for found in runner.run(tasks)
            for key_a, la, key_b, lb in found
        ]
        ids = _joined_ids(total, pairs)
        luts = {}
        for key, k in zip(keys, counts, strict=True):
            luts[key] = np.concatenate([[0], ids[base[key] : base[key] + int(k)]]).astype(np.int32)

        # pass 3: paint every core, its own objects first
        tasks = []
        for p in planes:
            for b in blocks:
                core_global = grid.slices(b)
                sources = [(file_of(p, b), outer_of[b], luts[(p, b)])]
                sources += [(file_of(p, n), outer_of[n], luts[(p, n)]) for n in neighbours(b)]
                tasks.append(
                    _delayed(_paint_block, sources, core_global, str(out_path), p + core_global)
                )
        runner.run(tasks)
    finally:
        runner.close()
        shutil.rmtree(work, ignore_errors=True)
    return da.from_zarr(str(out_path))
