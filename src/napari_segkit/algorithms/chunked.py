"""Segmentation of images larger than memory, block by block with dask (no torch, no napari).

:func:`segment_chunked` cuts the image into blocks of ``chunk`` pixels per side and segments them
on a dask scheduler (local threads by default, or a ``dask.distributed`` cluster), writing the
labels into a zarr array on disk that napari shows lazily. Memory holds a few blocks at a time,
whatever the image size. The result equals the in-memory method's (object IDs up to renumbering)
for every method where that can be done block by block:

- **whatever needs the whole image is computed once over the whole image first**: a global
  threshold (Otsu, Yen, isodata, triangle, Li, mean, multi-Otsu, cut points) from a histogram
  summed over blocks; Canny's intensity range; the Otsu threshold of the Sobel/Laplace response;
  k-means is fitted once on a sample drawn from the whole image (the same sample as in memory);
- **neighbourhood filters run on blocks with an overlap** (``overlap``: at least the filter's
  reach, derived from the parameters: Gaussian ``4 sigma``, local block size, closing), so a
  block's core is exactly what the whole-image filter gives;
- **connected components are joined across block borders**: each block is labelled on its own
  with IDs offset past the previous blocks', then the labels that touch across the shared face of
  two neighbouring blocks are merged (union-find over the label pairs on the faces, with the
  method's connectivity, as dask-image's ``label``), so an object that crosses a seam gets ONE
  ID. Hole filling (a hole is a background component that does not reach the image border),
  Canny's hysteresis (a weak-edge component that holds a strong edge) and the minimum size (the
  object's total area) are decided on these joined components, so they are exact too;
- **touching objects are split object by object** (threshold objects, ``split_touching``): each
  joined object is split by the block that holds its bounding box's first corner, on a crop of
  the labels around it (2 diameters more on every side: the distance map, its smoothing and the
  seeds' spacing see no further), so it is split as in the whole plane; the pieces are then
  numbered in object order and written block by block. The automatic diameter is measured on
  the central 4096 x 4096 pixels (256**3 voxels) of the joined objects: on a smaller image, the
  whole of it, as in memory.
- **voxel spacing** (threshold, ``spacing=``): the smoothing's sigma and reach are per axis, and
  the split works in physical space with a crop as wide in physical units as without spacing,
  so a z-stack with long voxels gives the in-memory result too.

Not blockwise here: the edges watershed (flooding and its distance-transform seeds see the whole
image) and Canny with ``use_quantiles`` (quantiles of the whole gradient). The model methods
(:data:`MODEL_METHODS`: Mask R-CNN, the CNN's semantic and instance output) go block by block
through :func:`napari_segkit.models.blockwise.segment_model_blockwise` (windows with a halo,
objects stitched by overlap; :mod:`napari_segkit.algorithms.blockwise`);
:func:`blockwise_problem` answers for them too. Where the image has NaN pixels, the edges method's nearest-finite
fill looks no further than the overlap.

Intermediate maps (uint8 codes per pixel) are written to a temporary zarr store beside the
output, so every step reads and writes one block at a time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .image import ProgressCallback, spatial_ndim_for

__all__ = [
    "CHUNKED_METHODS",
    "MODEL_METHODS",
    "blockwise_problem",
    "method_overlap",
    "segment_chunked",
    "chunked_object_table",
    "open_labels",
]

#: methods :func:`segment_chunked` can run (some of their parameters excepted, see
#: :func:`blockwise_problem`)
CHUNKED_METHODS = ("threshold", "edges", "kmeans")
#: model methods that run block by block through
#: :func:`napari_segkit.models.blockwise.segment_model_blockwise` (windows with a halo)
MODEL_METHODS = ("maskrcnn", "cnn")

#: code bits of the edges method's intermediate map
_WEAK, _STRONG, _BAD, _EDGE, _CLOSED = 1, 2, 4, 8, 16


# ---- what can run block by block, with which overlap ---------------------------------------------
def _full_params(method: str, params: dict | None) -> dict:
    from .. import params as registry

    spec = registry.get(method)
    values = spec.validate(dict(params or {}))
    return spec.split(values)[0]


def blockwise_problem(method: str, params: dict | None = None) -> str | None:
    """Why ``method`` with ``params`` cannot run block by block, or None if it can.

    Examples
    --------
    >>> blockwise_problem("threshold", {"method": "otsu", "split_touching": False}) is None
    True
    >>> blockwise_problem("edges", {"region_mode": "watershed"})
    "edges: region_mode='watershed' floods the whole image; it is not blockwise (use 'fill')"
    >>> blockwise_problem("cnn", {"output": "panoptic"})
    "cnn: panoptic output is not blockwise (use 'instance' or 'semantic')"
    """
    if method in MODEL_METHODS:
        p = _full_params(method, params)
        if method == "maskrcnn" and p.get("link_frames"):
            return (
                "maskrcnn: link_frames follows objects over the whole time series; it is not "
                "blockwise (turn it off)"
            )
        if method == "cnn" and p.get("output") == "panoptic":
            return "cnn: panoptic output is not blockwise (use 'instance' or 'semantic')"
        return None
    if method not in CHUNKED_METHODS:
        methods = ", ".join(CHUNKED_METHODS + MODEL_METHODS)
        return f"{method}: not available block by block (methods: {methods})"
    p = _full_params(method, params)
    if method == "edges":
        if p["region_mode"] == "watershed":
            return (
                "edges: region_mode='watershed' floods the whole image; it is not blockwise "
                "(use 'fill')"
            )
        if p["filter"] == "canny" and p["use_quantiles"]:
            return "edges: Canny with use_quantiles needs quantiles of the whole gradient"
    return None


def _gauss_reach(sigma: float) -> int:
    """Pixels scipy's Gaussian reaches (``truncate=4``)."""
    return int(4.0 * float(sigma) + 0.5) if sigma > 0 else 0


def method_overlap(method: str, params: dict | None = None) -> int:
    """The overlap (pixels per side) that makes each block's core exact, from the parameters.

    Threshold: 0 for global methods (pointwise), the Gaussian reach of the local block size.
    Edges: the smoothing's reach plus the filter and Canny's suppression (3) plus the closing
    (twice its iterations). K-means: the smoothing's reach.

    Examples
    --------
    >>> method_overlap("threshold", {"method": "local", "block_size": 35})
    23
    >>> method_overlap("edges", {"sigma": 2.0, "closing": 1})
    13
    """
    p = _full_params(method, params)
    if method == "threshold":
        if p["method"] != "local":
            return 0
        return _gauss_reach((p["block_size"] - 1) / 6.0)
    if method == "edges":
        return _gauss_reach(p["sigma"]) + 3 + 2 * int(p["closing"])
    if method == "kmeans":
        return _gauss_reach(p["smoothing"])
    raise ValueError(f"method must be one of {CHUNKED_METHODS}; got {method!r}")


# ---- the block grid ----------------------------------------------------------------------------
def _axis_chunks(n: int, side: int, depth: int) -> tuple[int, ...]:
    """Block sizes along one axis: ``side`` each, a short last one merged into the previous one
    when it is thinner than the overlap (so every block start stays a multiple of ``side``)."""
    q, r = divmod(n, side)
    if q == 0:
        return (n,)
    sizes = [side] * q
    if r:
        if r < max(depth, 1):
            sizes[-1] += r
        else:
            sizes.append(r)
    return tuple(sizes)


@dataclass(frozen=True)
class _Grid:
    """Blocks of one plane or volume: sizes per axis, in C order."""

    shape: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]

    @property
    def nblocks(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.chunks)

    @property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(np.cumsum((0,) + c[:-1]).tolist()) for c in self.chunks)

    def blocks(self) -> list[tuple[int, ...]]:
        return list(np.ndindex(*self.nblocks))

    def slices(self, b: tuple[int, ...]) -> tuple[slice, ...]:
        st = self.starts
        return tuple(slice(st[a][i], st[a][i] + self.chunks[a][i]) for a, i in enumerate(b))


def _halo_slices(grid: _Grid, b: tuple[int, ...], halo: int) -> tuple[tuple[slice, ...], tuple]:
    """The block's slices grown by ``halo`` (clipped to the array) and the core within them."""
    outer, core = [], []
    for a, s in enumerate(grid.slices(b)):
        lo = max(s.start - halo, 0)
        hi = min(s.stop + halo, grid.shape[a])
        outer.append(slice(lo, hi))
        core.append(slice(s.start - lo, s.stop - lo))
    return tuple(outer), tuple(core)


def _trim(grid: _Grid, b: tuple[int, ...], depth: int) -> tuple[slice, ...]:
    """The core of dask's overlapped block ``b`` (``boundary='none'``: no pad at the array edge)."""
    out = []
    for a, i in enumerate(b):
        left = depth if (depth and i > 0) else 0
        out.append(slice(left, left + grid.chunks[a][i]))
    return tuple(out)


# ---- running tasks on a scheduler, with progress -------------------------------------------------
class _Runner:
    """Runs lists of dask tasks on the local threaded scheduler or a distributed client, and
    reports ``progress(done, total)`` after each task (a raise from it stops the work)."""

    def __init__(self, scheduler: Any, progress: ProgressCallback | None, workers: int | None):
        self.progress = progress
        self.done = 0
        self.total = 0
        self.client = None
        self._own_client = False
        self.scheduler = "threads"
        self.workers = workers
        if scheduler is None or scheduler == "threads":
            pass
        elif scheduler in ("sync", "synchronous", "single-threaded", "processes"):
            self.scheduler = scheduler
        elif isinstance(scheduler, str):
            try:
                from distributed import Client
            except ImportError:  # pragma: no cover - depends on the install
                raise ValueError(
                    f"scheduler={scheduler!r} is a cluster address but dask.distributed is not "
                    "installed: pip install 'napari-segkit[dask]'"
                ) from None
            try:
                self.client = Client(scheduler, timeout="10s", set_as_default=False)
            except OSError as err:
                raise ValueError(
                    f"scheduler={scheduler!r}: cannot reach the dask scheduler ({err})"
                ) from None
            self._own_client = True
        elif hasattr(scheduler, "compute") and hasattr(scheduler, "gather"):
            self.client = scheduler
        else:
            raise ValueError(
                f"scheduler must be None, 'threads', 'sync', a scheduler address or a "
                f"distributed.Client; got {scheduler!r}"
            )

    def expect(self, n: int) -> None:
        self.total += n
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _tick(self) -> None:
        self.done += 1
        self._report()

    def run(self, tasks: list) -> list:
        """Compute ``tasks`` (dask delayed objects); their results in order."""
        if not tasks:
            return []
        if self.client is not None:
            from distributed import as_completed

            futures = self.client.compute(tasks)
            try:
                for _ in as_completed(futures):
                    self._tick()
                return self.client.gather(futures)
            except BaseException:
                self.client.cancel(futures)
                raise
        import dask
        from dask.callbacks import Callback

        keys = {t.key for t in tasks}
        runner = self

        class _Ticks(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    runner._tick()

        kwargs = {"num_workers": self.workers} if self.workers else {}
        with _Ticks():
            return list(dask.compute(*tasks, scheduler=self.scheduler, **kwargs))

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()


def _delayed(func: Callable, *args: Any) -> Any:
    import dask

    return dask.delayed(func, pure=False)(*args)


# ---- zarr arrays ---------------------------------------------------------------------------------
def _create_zarr(path: Path, shape, chunks, dtype) -> Any:
    import zarr

    return zarr.open_array(
        str(path), mode="w", shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0
    )


def _read(path: str, region: tuple) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(path, mode="r")[region])


def _write(path: str, region: tuple, values: np.ndarray) -> None:
    import zarr

    zarr.open_array(path, mode="r+")[region] = values


def open_labels(path: str | os.PathLike) -> Any:
    """A zarr labels array on disk as a lazy dask array (what napari shows)."""
    import dask.array as da

    return da.from_zarr(str(path))


_TEMP_DIRS: list[str] = []


def _cleanup_temp_dirs() -> None:  # pragma: no cover - at interpreter exit
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_temp_dirs)


# ---- global statistics: min/max, sums, histograms ------------------------------------------------
def _stats_block(block: np.ndarray, trim: tuple, fn: Callable | None) -> tuple:
    """Finite min, max, sum and count of a block's core (after ``fn``, if given)."""
    x = np.asarray(block)
    if fn is not None:
        x = fn(x)
    x = x[trim]
    if x.dtype == bool:
        x = x.view(np.uint8)
    if x.dtype.kind == "f":
        fin = np.isfinite(x)
        if not fin.all():
            x = x[fin]
    if x.size == 0:
        return (None, None, 0.0, 0, False)
    lo, hi = x.min(), x.max()
    return (lo.item(), hi.item(), float(np.sum(x, dtype=np.float64)), int(x.size), True)


def _hist_block(block: np.ndarray, trim: tuple, fn: Callable | None, bins: Any) -> np.ndarray:
    """The block's share of :func:`napari_segkit.algorithms.threshold.histogram`."""
    x = np.asarray(block)
    if fn is not None:
        x = fn(x)
    flat = x[trim].reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        flat = flat.view(np.uint8)
        kind = "u"
    if bins[0] == "int":
        _, lo, n = bins
        chunk = flat.astype(np.int64) - lo if lo or kind == "i" else flat
        return np.bincount(chunk, minlength=n)
    if kind in "ui":
        flat = flat.astype(np.float64)
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    return np.histogram(flat, bins=bins[1])[0]


@dataclass
class _Stats:
    lo: Any
    hi: Any
    mean: float
    count: int
    dtype: np.dtype
    counts: np.ndarray | None = None
    centers: np.ndarray | None = None


def _small_int_block(block: np.ndarray, trim: tuple, base: int, n: int) -> tuple:
    """Counts of every value of a <= 16-bit integer block (core), its sum and size."""
    x = np.asarray(block)[trim].reshape(-1)
    if x.dtype == bool:
        x = x.view(np.uint8)
    counts = np.bincount(x.astype(np.int32) - base if base else x, minlength=n)
    return counts, float(np.dot(counts.astype(np.float64), np.arange(base, base + n))), x.size


def _small_int_stats(runner, blocks, grid, depth, dtype) -> _Stats:
    """:func:`_global_stats` of a <= 16-bit integer plane in one pass over the blocks."""
    dtype = np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)
    info = np.iinfo(dtype)
    base, n = int(info.min), int(info.max) - int(info.min) + 1
    tasks = [
        _delayed(_small_int_block, blocks[b], _trim(grid, b, depth), base, n) for b in grid.blocks()
    ]
    counts = np.zeros(n, dtype=np.int64)
    total, size = 0.0, 0
    for c, t, k in runner.run(tasks):
        counts += c
        total += t
        size += k
    nz = np.flatnonzero(counts)
    lo, hi = int(nz[0]) + base, int(nz[-1]) + base
    stats = _Stats(lo, hi, total / size, size, dtype)
    stats.counts = counts[lo - base : hi - base + 1]
    stats.centers = np.arange(lo, hi + 1)
    return stats


def _global_stats(runner, ext_blocks, grid, depth, fn, dtype, *, hist: bool, nbins: int = 256):
    """Min, max, mean (of the finite values) and, with ``hist``, the histogram of a plane as
    :func:`~napari_segkit.algorithms.threshold.histogram` gives it for the whole plane."""
    if fn is None and (np.dtype(dtype).kind in "uib" and np.dtype(dtype).itemsize <= 2):
        if hist:
            runner.expect(-len(grid.blocks()))  # one pass instead of two
        return _small_int_stats(runner, ext_blocks, grid, depth, dtype)
    blocks = grid.blocks()
    tasks = [_delayed(_stats_block, ext_blocks[b], _trim(grid, b, depth), fn) for b in blocks]
    parts = [p for p in runner.run(tasks) if p[4]]
    if not parts:
        raise ValueError("image has no finite value (all NaN or infinite)")
    lo = min(p[0] for p in parts)
    hi = max(p[1] for p in parts)
    total = sum(p[2] for p in parts)
    count = sum(p[3] for p in parts)
    stats = _Stats(lo, hi, total / count, count, np.dtype(dtype))
    if not hist:
        return stats
    kind = "u" if stats.dtype.kind == "b" else stats.dtype.kind
    if kind in "ui" and int(hi) - int(lo) < 2**24:
        bins: tuple = ("int", int(lo), int(hi) - int(lo) + 1)
        centers = np.arange(int(lo), int(hi) + 1)
    else:
        flo, fhi = float(lo), float(hi)
        edges = (
            np.linspace(flo, fhi, nbins + 1)
            if fhi > flo
            else np.linspace(flo - 0.5, fhi + 0.5, nbins + 1)
        )
        bins = ("float", edges)
        centers = (edges[:-1] + edges[1:]) / 2
    tasks = [_delayed(_hist_block, ext_blocks[b], _trim(grid, b, depth), fn, bins) for b in blocks]
    counts = None
    for part in runner.run(tasks):
        counts = part.astype(np.int64) if counts is None else counts + part
    stats.counts, stats.centers = counts, centers
    return stats


def _triangle(counts: np.ndarray, centers: np.ndarray) -> float:
    """scikit-image's ``threshold_triangle`` from a histogram (its own algorithm, BSD-3)."""
    hist = counts.astype(np.float64)
    nbins = len(hist)
    arg_peak = int(np.argmax(hist))
    peak = hist[arg_peak]
    low, high = np.flatnonzero(hist)[[0, -1]]
    if low == high:
        return float(centers[low])
    flip = arg_peak - low < high - arg_peak
    if flip:
        hist = hist[::-1]
        low = nbins - high - 1
        arg_peak = nbins - arg_peak - 1
    width = arg_peak - low
    x1 = np.arange(width)
    y1 = hist[x1 + low]
    norm = np.sqrt(peak**2 + width**2)
    length = (peak / norm) * x1 - (width / norm) * y1
    level = int(np.argmax(length)) + low
    if flip:
        level = nbins - level - 1
    return float(centers[level])


def _li(counts: np.ndarray, centers: np.ndarray, integer: bool) -> float:
    """scikit-image's ``threshold_li`` from a histogram (exact for integer images, where the
    histogram holds every value; within one bin for float images)."""
    nz = counts > 0
    values = centers[nz].astype(np.float64)
    weights = counts[nz].astype(np.float64)
    if len(values) == 1:
        return float(values[0])
    vmin = values[0]
    values = values - vmin
    tolerance = 0.5 if integer else float(np.min(np.diff(values))) / 2
    t_next = float(np.sum(values * weights) / np.sum(weights))
    t_curr = -2 * tolerance
    w32 = weights.astype(np.float32)
    while abs(t_next - t_curr) > tolerance:
        t_curr = t_next
        fore = values > t_curr
        mean_fore = np.average(values[fore], weights=w32[fore])
        mean_back = np.average(values[~fore], weights=w32[~fore])
        if mean_back == 0:
            break
        t_next = (mean_back - mean_fore) / (np.log(mean_back) - np.log(mean_fore))
    return float(t_next + vmin)


def _threshold_from_stats(method: str, stats: _Stats, value: float | None = None) -> float:
    """What :func:`~napari_segkit.algorithms.threshold.threshold_value` gives for the whole
    plane, from its global statistics."""
    from skimage import filters

    if method == "manual":
        return float(value)
    if method == "mean":
        return float(stats.mean)
    counts, centers = stats.counts, stats.centers
    integer = stats.dtype.kind in "uib" and centers.dtype.kind in "iu"
    if method == "li":
        return _li(counts, centers, integer)
    if counts.size == 1 or np.count_nonzero(counts) <= 1:
        return float(centers[np.flatnonzero(counts)[0]])
    func = {
        "otsu": filters.threshold_otsu,
        "yen": filters.threshold_yen,
        "isodata": filters.threshold_isodata,
    }.get(method)
    if func is not None:
        return float(func(hist=(counts, centers)))
    if method == "triangle":
        return _triangle(counts, centers)
    raise ValueError(f"method {method!r} has no global threshold")


# ---- connected components across blocks ----------------------------------------------------------
def _structure(ndim: int, connectivity: int, planar: bool = False) -> np.ndarray:
    """scipy's structure; ``planar``: no neighbour along the first axis (2D slices of a volume)."""
    s = ndi.generate_binary_structure(ndim, connectivity)
    if planar and ndim == 3:
        s = s.copy()
        s[0] = False
        s[2] = False
    return s


@dataclass(frozen=True)
class _MaskRule:
    """How a block's binary mask is read from the code map: ``code & bits`` or ``code == equals``,
    with the holes of a previous fill step added (``fill`` holds that step's rule)."""

    bits: int = 0
    equals: int | None = None
    fill: _MaskRule | None = None
    fill_structure: Any = None

    def base(self, code: np.ndarray) -> np.ndarray:
        if self.equals is not None:
            return code == self.equals
        return (code & self.bits) != 0


def _label(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    out = np.empty(mask.shape, dtype=np.int32)
    n = ndi.label(mask, structure=structure, output=out)
    return out, int(n)


def _block_mask(code: np.ndarray, rule: _MaskRule, hole_lut: np.ndarray | None) -> np.ndarray:
    m = rule.base(code)
    if rule.fill is not None:
        bg, _ = _label(~m, rule.fill_structure)
        m |= hole_lut[bg]
    return m


def _cc_block(
    code_path: str,
    region: tuple,
    rule: _MaskRule,
    hole_lut: np.ndarray | None,
    structure: np.ndarray,
    border_faces: tuple,
    extra: str | None,
) -> dict:
    """One block's components: count, the labels on its faces, per-label area, whether it
    reaches the image border, and ``extra`` ('strong': holds a strong Canny edge; 'good':
    pixels that were finite)."""
    code = _read(code_path, region)
    mask = _block_mask(code, rule, hole_lut)
    lab, n = _label(mask, structure)
    faces = {}
    for a in range(lab.ndim):
        faces[(a, 0)] = np.take(lab, 0, axis=a).copy()
        faces[(a, 1)] = np.take(lab, -1, axis=a).copy()
    out: dict = {"n": n, "faces": faces, "area": np.bincount(lab.ravel(), minlength=n + 1)}
    border = np.zeros(n + 1, dtype=bool)
    for a, side in border_faces:
        border[faces[(a, side)]] = True
    border[0] = False
    out["border"] = border
    if extra == "strong":
        flag = np.zeros(n + 1, dtype=bool)
        flag[lab[(code & _STRONG) != 0]] = True
        flag[0] = False
        out["strong"] = flag
    elif extra == "good":
        good = lab.copy()
        good[(code & _BAD) != 0] = 0
        out["good"] = np.bincount(good.ravel(), minlength=n + 1)
    return out


def _face_pairs(top: np.ndarray, bottom: np.ndarray, structure: np.ndarray, axis: int):
    """Label pairs that touch across a face: ``top`` is the last slab before it, ``bottom`` the
    first after it (both with global IDs), neighbours as ``structure`` defines them."""
    ndim = structure.ndim
    pairs = []
    for off in np.argwhere(structure):
        off = off - 1
        if off[axis] != 1:
            continue
        other = [int(o) for i, o in enumerate(off) if i != axis]
        src, dst = [], []
        for o, n in zip(other, top.shape, strict=True):
            src.append(slice(max(0, -o), n - max(0, o)))
            dst.append(slice(max(0, o), n - max(0, -o)))
        a = top[tuple(src)]
        b = bottom[tuple(dst)]
        both = (a > 0) & (b > 0)
        if both.any():
            pairs.append(np.stack([a[both], b[both]], axis=1))
    assert ndim == top.ndim + 1
    return pairs


@dataclass
class _Components:
    """Components joined across blocks: per block, local label -> component; per component,
    the summed area and the OR of the flags."""

    offsets: dict
    counts: dict
    comp: np.ndarray  # global label (1..N, 0 = background) -> component id
    ncomp: int
    area: np.ndarray
    border: np.ndarray
    strong: np.ndarray | None = None
    good: np.ndarray | None = None

    def block_lut(self, b: tuple, values: np.ndarray) -> np.ndarray:
        """``values`` (one per component) as a lookup table of block ``b``'s local labels."""
        o, n = self.offsets[b], self.counts[b]
        lut = np.zeros(n + 1, dtype=values.dtype)
        lut[1:] = values[self.comp[o + 1 : o + n + 1]]
        return lut


def _join(grid: _Grid, summaries: dict, structure: np.ndarray) -> _Components:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    blocks = grid.blocks()
    offsets, counts = {}, {}
    total = 0
    for b in blocks:
        offsets[b], counts[b] = total, summaries[b]["n"]
        total += counts[b]
    ndim = len(grid.shape)
    pairs = []
    starts = grid.starts
    for axis in range(ndim):
        for k in range(grid.nblocks[axis] - 1):
            face_shape = tuple(n for a, n in enumerate(grid.shape) if a != axis)
            top = np.zeros(face_shape, dtype=np.int64)
            bottom = np.zeros(face_shape, dtype=np.int64)
            for b in blocks:
                if b[axis] not in (k, k + 1):
                    continue
                where = tuple(
                    slice(starts[a][i], starts[a][i] + grid.chunks[a][i])
                    for a, i in enumerate(b)
                    if a != axis
                )
                if b[axis] == k:
                    face = summaries[b]["faces"][(axis, 1)].astype(np.int64)
                    top[where] = np.where(face > 0, face + offsets[b], 0)
                else:
                    face = summaries[b]["faces"][(axis, 0)].astype(np.int64)
                    bottom[where] = np.where(face > 0, face + offsets[b], 0)
            pairs += _face_pairs(top, bottom, structure, axis)
    if pairs:
        p = np.concatenate(pairs)
        graph = coo_matrix(
            (np.ones(len(p), dtype=np.int8), (p[:, 0], p[:, 1])), shape=(total + 1, total + 1)
        )
    else:
        graph = coo_matrix((total + 1, total + 1), dtype=np.int8)
    ncomp, comp = connected_components(graph, directed=False)
    area = np.zeros(total + 1, dtype=np.int64)
    border = np.zeros(total + 1, dtype=bool)
    strong = good = None
    if any("strong" in s for s in summaries.values()):
        strong = np.zeros(total + 1, dtype=bool)
    if any("good" in s for s in summaries.values()):
        good = np.zeros(total + 1, dtype=np.int64)
    for b in blocks:
        o, n, s = offsets[b], counts[b], summaries[b]
        area[o + 1 : o + n + 1] = s["area"][1:]
        border[o + 1 : o + n + 1] = s["border"][1:]
        if strong is not None:
            strong[o + 1 : o + n + 1] = s["strong"][1:]
        if good is not None:
            good[o + 1 : o + n + 1] = s["good"][1:]

    def reduce_sum(values):
        return np.bincount(comp, weights=values, minlength=ncomp).round().astype(np.int64)

    def reduce_any(values):
        out = np.zeros(ncomp, dtype=bool)
        out[comp[values]] = True
        return out

    return _Components(
        offsets=offsets,
        counts=counts,
        comp=comp,
        ncomp=ncomp,
        area=reduce_sum(area),
        border=reduce_any(border),
        strong=None if strong is None else reduce_any(strong),
        good=None if good is None else reduce_sum(good),
    )


def _border_faces(grid: _Grid, b: tuple, axes: Sequence[int]) -> tuple:
    out = []
    for a in axes:
        if b[a] == 0:
            out.append((a, 0))
        if b[a] == grid.nblocks[a] - 1:
            out.append((a, 1))
    return tuple(out)


def _components(
    runner,
    grid,
    code_path,
    rule,
    structure,
    *,
    hole_luts=None,
    border_axes=(),
    extra=None,
) -> _Components:
    blocks = grid.blocks()
    tasks = [
        _delayed(
            _cc_block,
            code_path,
            grid.slices(b),
            rule,
            None if hole_luts is None else hole_luts[b],
            structure,
            _border_faces(grid, b, border_axes),
            extra,
        )
        for b in blocks
    ]
    summaries = dict(zip(blocks, runner.run(tasks), strict=True))
    return _join(grid, summaries, structure)


def _holes(runner, grid, code_path, rule, planar: bool) -> tuple[_MaskRule, dict]:
    """Hole filling of ``rule``'s mask, exact over the whole plane/volume: the background
    components (face connectivity, as ``scipy.ndimage.binary_fill_holes``; in-plane only if
    ``planar``) that do not reach the image border are holes. Returns the filled rule and the
    per-block hole tables."""
    ndim = len(grid.shape)
    bg_structure = _structure(ndim, 1, planar)
    bg_rule = _MaskRule(bits=rule.bits, equals=rule.equals)
    # the background of the mask: a block labels ~mask; read as a rule on the same code
    axes = tuple(range(1, ndim)) if planar else tuple(range(ndim))
    comps = _components(
        runner, grid, code_path, _NotRule(inner=bg_rule), bg_structure, border_axes=axes
    )
    hole = ~comps.border
    hole[comps.comp[0]] = False
    luts = {b: comps.block_lut(b, hole) for b in grid.blocks()}
    filled = _MaskRule(
        bits=rule.bits, equals=rule.equals, fill=bg_rule, fill_structure=bg_structure
    )
    return filled, luts


@dataclass(frozen=True)
class _NotRule(_MaskRule):
    """The complement of another rule's mask (the background)."""

    inner: _MaskRule = field(default_factory=_MaskRule)

    def base(self, code: np.ndarray) -> np.ndarray:
        return ~self.inner.base(code)


def _objects(
    runner,
    grid,
    code_path,
    rule,
    *,
    connectivity: int,
    fill: bool,
    planar_fill: bool,
    min_size: int,
    use_good: bool = False,
) -> tuple[_MaskRule, dict, dict, int]:
    """Objects of ``rule``'s mask (holes filled, small ones dropped), joined across blocks.

    Returns the rule to relabel a block with, its hole tables, the per-block lookup tables from
    local labels to final IDs (1..n), and n.
    """
    ndim = len(grid.shape)
    hole_luts = None
    if fill:
        rule, hole_luts = _holes(runner, grid, code_path, rule, planar_fill)
    structure = _structure(ndim, min(connectivity, ndim))
    comps = _components(
        runner,
        grid,
        code_path,
        rule,
        structure,
        hole_luts=hole_luts,
        extra="good" if use_good else None,
    )
    keep = np.ones(comps.ncomp, dtype=bool)
    if use_good:
        if min_size:
            keep &= comps.good >= max(min_size, 1)
    if min_size > 1:
        keep &= comps.area >= min_size
    keep[comps.comp[0]] = False
    ids = np.cumsum(keep).astype(np.int64)
    ids[~keep] = 0
    n = int(keep.sum())
    if n > np.iinfo(np.int32).max:
        raise ValueError(f"more objects ({n}) than int32 labels can hold")
    luts = {b: comps.block_lut(b, ids.astype(np.int32)) for b in grid.blocks()}
    return rule, (hole_luts or {}), luts, n


def _relabel_block(
    code_path: str,
    region: tuple,
    rule: _MaskRule,
    hole_lut: np.ndarray | None,
    structure: np.ndarray,
    lut: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    code = _read(code_path, region)
    lab, _ = _label(_block_mask(code, rule, hole_lut), structure)
    return lut[lab], code


def _write_objects_block(
    code_path: str,
    out_path: str,
    region: tuple,
    out_region: tuple,
    layers: list,
    bad_zero: bool,
) -> None:
    """Write one block of the final labels: each layer ``(rule, hole_lut, structure, lut,
    offset)`` in order, a later one over an earlier one where it has an object."""
    out = np.zeros(tuple(s.stop - s.start for s in region), dtype=np.int32)
    code = None
    for rule, hole_lut, structure, lut, offset in layers:
        lab, code = _relabel_block(code_path, region, rule, hole_lut, structure, lut)
        sel = lab > 0
        out[sel] = lab[sel] + offset
    if bad_zero and code is not None:
        out[(code & _BAD) != 0] = 0
    _write(out_path, out_region, out)


# ---- code maps (the per-pixel part of each method) -----------------------------------------------
def _code_block(block, trim, fn, code_path, region) -> None:
    z0 = region[0].start - trim[0].start  # index of the overlapped block's first slice
    code = fn(np.asarray(block), z0)[trim]
    _write(code_path, region, code.astype(np.uint8, copy=False))


def _code_pass(runner, ext_blocks, grid, depth, fn, code_path) -> None:
    tasks = [
        _delayed(_code_block, ext_blocks[b], _trim(grid, b, depth), fn, code_path, grid.slices(b))
        for b in grid.blocks()
    ]
    runner.run(tasks)


@dataclass(frozen=True)
class _ThresholdCodes:
    """Class index per pixel (0 background, 1.. above each threshold), as ``threshold_plane``."""

    thresholds: tuple
    dark: bool
    local: dict | None = None
    nan_value: float | None = None

    def __call__(self, x: np.ndarray, z0: int = 0) -> np.ndarray:
        from .threshold import _classes, threshold_plane

        if self.local is not None:
            if x.dtype.kind == "f" and self.nan_value is not None:
                x = np.where(np.isfinite(x), x, np.float64(self.nan_value).astype(x.dtype))
            return threshold_plane(
                x, method="local", dark=self.dark, output="classes", **self.local
            )
        return _classes(x, np.asarray(self.thresholds), self.dark)


@dataclass(frozen=True)
class _EdgeResponse:
    """The Sobel magnitude or |Laplace| of the smoothed block (the edges method's 'fill' map)."""

    filter: str
    sigma: float
    mode: str
    cval: float
    planar: bool = False

    def __call__(self, block: np.ndarray, z0: int = 0) -> np.ndarray:
        from .edges import _float32, _smooth, laplace, sobel_magnitude

        x, _ = _float32(block)
        smooth = _smooth(x, self.sigma, self.mode, self.cval)
        if self.filter == "sobel":
            return sobel_magnitude(smooth, mode=self.mode, cval=self.cval)
        return np.abs(laplace(smooth, mode=self.mode, cval=self.cval))


@dataclass(frozen=True)
class _EdgeCodes:
    """Sobel/Laplace: closed edges (bit ``_CLOSED``) and NaN pixels (``_BAD``) of a block."""

    response: _EdgeResponse
    threshold: float
    closing: int

    def __call__(self, block: np.ndarray, z0: int = 0) -> np.ndarray:
        from .edges import _float32

        strength = self.response(block)
        edges = strength > self.threshold
        if self.closing:
            structure = ndi.generate_binary_structure(edges.ndim, 1)
            edges = edges | ndi.binary_closing(edges, structure, iterations=self.closing)
        code = edges.astype(np.uint8) * _CLOSED
        _, bad = _float32(block)
        if bad is not None:
            code[bad] |= _BAD
        return code


@dataclass(frozen=True)
class _CannyCodes:
    """Canny's weak (>= low) and strong (>= high) suppressed edges of each 2D slice, on the
    intensity range of the whole slice (``lo[z]``, ``hi[z]``); hysteresis is done across blocks
    afterwards."""

    lo: tuple
    hi: tuple
    sigma: float
    low: float
    high: float
    mode: str
    cval: float

    def __call__(self, block: np.ndarray, z0: int = 0) -> np.ndarray:
        from skimage.feature import canny

        from .edges import _float32

        x, bad = _float32(block)
        code = np.zeros(x.shape, dtype=np.uint8)
        lead = x.shape[:-2]
        for idx in np.ndindex(*lead):
            z = z0 + idx[0] if idx else 0
            lo, hi = self.lo[z], self.hi[z]
            plane = x[idx]
            if hi > lo:
                plane = (plane - lo) / (hi - lo)
            else:
                plane = np.zeros_like(plane)
            kw = dict(sigma=self.sigma, mode=self.mode, cval=self.cval)
            weak = canny(plane, low_threshold=self.low, high_threshold=self.low, **kw)
            strong = canny(plane, low_threshold=self.high, high_threshold=self.high, **kw)
            code[idx] = weak * np.uint8(_WEAK) | strong * np.uint8(_STRONG)
        if bad is not None:
            code[bad] |= _BAD
        return code


def _range_block(block: np.ndarray, planar: bool) -> tuple:
    """Finite min and max of a block (per 2D slice along the first axis if ``planar``), as
    float32 (Canny works on the float32 image)."""
    x = np.asarray(block)
    x = x if planar else x[None]
    lo = np.full(len(x), np.inf)
    hi = np.full(len(x), -np.inf)
    for z in range(len(x)):
        v = x[z]
        if v.dtype.kind == "f":
            v = v[np.isfinite(v)]
        if v.size:  # float32 rounding is monotone: the float32 image's range
            lo[z], hi[z] = float(np.float32(v.min())), float(np.float32(v.max()))
    return lo, hi


def _slice_ranges(runner, core, grid) -> tuple[tuple, tuple]:
    """Canny's intensity range: of the whole plane (2D), of every z-slice (3D, slice by slice)."""
    planar = len(grid.shape) == 3
    blocks = grid.blocks()
    parts = runner.run([_delayed(_range_block, core[b], planar) for b in blocks])
    nz = grid.shape[0] if planar else 1
    lo = np.full(nz, np.inf)
    hi = np.full(nz, -np.inf)
    for b, (blo, bhi) in zip(blocks, parts, strict=True):
        z = grid.slices(b)[0] if planar else slice(0, 1)
        lo[z] = np.minimum(lo[z], blo)
        hi[z] = np.maximum(hi[z], bhi)
    if not np.isfinite(lo).all():
        raise ValueError("image has no finite value (all NaN or infinite)")
    return tuple(lo.tolist()), tuple(hi.tolist())


def _set_bits_block(code_path, region, rule, structure, lut, bit) -> None:
    """Set ``bit`` where the block's components (of ``rule``) are kept by ``lut``."""
    code = _read(code_path, region)
    lab, _ = _label(rule.base(code), structure)
    keep = lut[lab]
    code[keep] |= np.uint8(bit)
    _write(code_path, region, code)


def _closing_block(code_path, grid, b, halo, closing, planar) -> np.ndarray:
    """The closed edges (``edges | closing(edges)``, as the edges method) of a block's core,
    from the stored edges around it."""
    outer, core = _halo_slices(grid, b, halo)
    edges = (_read(code_path, outer) & _EDGE) != 0
    if closing:
        if planar and edges.ndim == 3:
            closed = np.empty_like(edges)
            structure = ndi.generate_binary_structure(2, 1)
            for z in range(edges.shape[0]):
                closed[z] = edges[z] | ndi.binary_closing(edges[z], structure, iterations=closing)
        else:
            structure = ndi.generate_binary_structure(edges.ndim, 1)
            closed = edges | ndi.binary_closing(edges, structure, iterations=closing)
    else:
        closed = edges
    return closed[core]


def _closing_write(code_path_in, code_path_out, grid, b, halo, closing, planar) -> None:
    closed = _closing_block(code_path_in, grid, b, halo, closing, planar)
    code = _read(code_path_in, grid.slices(b))
    code = code | (closed.astype(np.uint8) * np.uint8(_CLOSED))
    _write(code_path_out, grid.slices(b), code)


# ---- k-means -------------------------------------------------------------------------------------
@dataclass
class _KMeansModel:
    """A k-means model fitted on the whole image, to assign every block's pixels with."""

    n_chan: int
    n_feat: int
    lut: np.ndarray
    weights: np.ndarray
    cc: np.ndarray
    lo32: np.ndarray
    is_float: bool
    xy_factor: float
    use_xy: bool
    smoothing: float
    sn: int
    table: Any = None

    def nearest(self, values: np.ndarray, coords: np.ndarray | None = None) -> np.ndarray:
        x = np.empty((len(values), self.n_feat), dtype=np.float32)
        np.subtract(values, self.lo32, out=x[:, : self.n_chan], casting="unsafe")
        if coords is not None:
            x[:, self.n_chan :] = coords
        d = x @ self.weights
        d += self.cc
        out = self.lut[np.argmin(d, axis=1)]
        if self.is_float:
            out[~np.isfinite(x[:, : self.n_chan]).all(axis=1)] = 0
        return out


def _kmeans_values(block: np.ndarray, smoothing: float, sn: int, is_float: bool) -> np.ndarray:
    """The (smoothed) colour values of a channels-last block, as k-means' reader computes them."""
    if smoothing <= 0:
        arr = np.asarray(block)
        return arr.view(np.uint8) if arr.dtype == bool else arr
    from .kmeans import _Chunk, _Reader

    arr = np.asarray(block)
    reader = _Reader(arr, sn, smoothing)
    lead = arr.shape[: arr.ndim - 1 - sn]
    out = np.empty(arr.shape, dtype=np.float32)
    rows = arr.shape[arr.ndim - 1 - sn]
    for idx in np.ndindex(*lead):
        c = _Chunk(idx, 0, rows, 0, 0)
        out[idx] = reader.values(c).reshape(out[idx].shape)
    return out


def _kmeans_coords(region: tuple, sn: int, factor: float) -> np.ndarray:
    """Scaled coordinates of a block's pixels along the plane's spatial axes (as k-means)."""
    spatial = region[len(region) - sn :]
    lead = int(np.prod([s.stop - s.start for s in region[: len(region) - sn]], dtype=np.int64))
    axes = [np.arange(s.start, s.stop, dtype=np.float32) for s in spatial]
    grids = np.meshgrid(*axes, indexing="ij")
    one = np.stack([g.reshape(-1) for g in grids], axis=1)
    out = np.tile(one, (lead, 1)) if lead > 1 else one
    out *= np.float32(factor)
    return out


def _kmeans_block(block, trim, model: _KMeansModel, out_path, region) -> None:
    from .kmeans import _UNSURE

    vals = _kmeans_values(block, model.smoothing, model.sn, model.is_float)[trim]
    shape = vals.shape[:-1]
    flat = vals.reshape(-1, vals.shape[-1])
    if model.table is None:
        coords = _kmeans_coords(region, model.sn, model.xy_factor) if model.use_xy else None
        labels = model.nearest(flat, coords)
    else:
        shift, bits, cell_lut = model.table
        code = np.right_shift(flat[:, 0], shift, dtype=np.int32)
        for f in range(1, model.n_chan):
            code <<= bits
            code |= np.right_shift(flat[:, f], shift, dtype=np.int32)
        labels = np.take(cell_lut, code)
        if shift:
            unsure = np.flatnonzero(labels == _UNSURE)
            if len(unsure):
                labels[unsure] = model.nearest(flat[unsure])
    _write(out_path, region, labels.reshape(shape).astype(np.uint8))


def _finite_rows_block(block, trim, smoothing, sn, is_float) -> np.ndarray:
    """Per row (all axes but the last, flattened) of a block, its count of finite pixels."""
    vals = _kmeans_values(block, smoothing, sn, is_float)[trim]
    fin = np.isfinite(vals).all(axis=-1) if is_float else np.ones(vals.shape[:-1], bool)
    return fin.reshape(-1, fin.shape[-1]).sum(axis=1)


def _gather_block(block, trim, smoothing, sn, is_float, rows, ks) -> tuple:
    """Values and column of the ``ks[i]``-th finite pixel of local row ``rows[i]`` of a block."""
    vals = _kmeans_values(block, smoothing, sn, is_float)[trim]
    flat = vals.reshape(-1, vals.shape[-2], vals.shape[-1])
    out = np.empty((len(rows), vals.shape[-1]), dtype=np.float64)
    cols = np.empty(len(rows), dtype=np.int64)
    for r in np.unique(rows):
        sel = rows == r
        row = flat[r]
        if is_float:
            pos = np.flatnonzero(np.isfinite(row).all(axis=1))[ks[sel]]
        else:
            pos = ks[sel]
        out[sel] = row[pos]
        cols[sel] = pos
    return out, cols


def _kmeans_chunked(runner, chans, chunk_side, depth, params, rgb, sn, out_path, out_shape):
    from sklearn.cluster import KMeans

    from .kmeans import _brightness, _check_k, _color_table, _robust_scale

    k = _check_k(params["k"])
    seed, sample_size, n_init = params["seed"], params["sample_size"], params["n_init"]
    spatial_weight, smoothing = params["spatial_weight"], params["smoothing"]
    if sample_size < k:
        raise ValueError(f"sample_size must be at least k={k}; got sample_size={sample_size}")
    spatial = tuple(int(n) for n in chans.shape[:-1])
    n_chan = int(chans.shape[-1])
    block_shape = spatial[len(spatial) - sn :]
    use_xy = spatial_weight > 0
    n_feat = n_chan + (sn if use_xy else 0)
    is_float = np.dtype(chans.dtype).kind == "f"

    # the block grid over the whole stack: leading axes one plane at a time, channels whole
    lead = spatial[: len(spatial) - sn]
    sizes = tuple((1,) * n for n in lead) + tuple(
        _axis_chunks(n, chunk_side, depth) for n in block_shape
    )
    grid = _Grid(spatial, sizes)
    chans = chans.rechunk(sizes + ((n_chan,),))
    ext = _overlapped(chans, depth, axes=range(len(lead), len(spatial)))
    ext_blocks = {b: ext.to_delayed(optimize_graph=False)[b + (0,)] for b in grid.blocks()}

    def trim_of(b):
        t = _trim(_Grid(spatial, sizes), b, 0)
        core = list(t)
        for a in range(len(lead), len(spatial)):
            left = depth if (depth and b[a] > 0) else 0
            core[a] = slice(left, left + sizes[a][b[a]])
        return tuple(core)

    # 1. finite pixels per row, in C order (rows: all spatial axes but the last)
    blocks = grid.blocks()
    n_rows = int(np.prod(spatial[:-1], dtype=np.int64))
    ncol = grid.nblocks[-1]
    if is_float:
        runner.expect(len(blocks))
        tasks = [
            _delayed(_finite_rows_block, ext_blocks[b], trim_of(b), smoothing, sn, True)
            for b in blocks
        ]
        counts = np.zeros((n_rows, ncol), dtype=np.int64)
        for b, part in zip(blocks, runner.run(tasks), strict=True):
            counts[_row_index(grid, b), b[-1]] = part
    else:
        widths = np.array(sizes[-1], dtype=np.int64)
        counts = np.broadcast_to(widths, (n_rows, ncol))
    cum = np.concatenate([[0], np.cumsum(counts.reshape(-1))])
    n_valid = int(cum[-1])
    if n_valid == 0:
        raise ValueError("image has no finite value (all NaN or infinite)")
    rng = np.random.default_rng(seed)
    m = min(int(sample_size), n_valid)
    ranks = np.arange(n_valid) if m == n_valid else np.sort(rng.choice(n_valid, m, replace=False))

    # 2. the sample: the same pixels as the in-memory method draws, gathered block by block
    cell = np.searchsorted(cum, ranks, side="right") - 1  # (row, column block) in C order
    row, colb = np.divmod(cell, ncol)
    within = ranks - cum[cell]
    sample = np.empty((m, n_feat), dtype=np.float64)
    tasks, where = [], []
    for b in blocks:
        rows_b = _row_index(grid, b)
        sel = np.flatnonzero((colb == b[-1]) & np.isin(row, rows_b))
        if not len(sel):
            continue
        local = np.searchsorted(rows_b, row[sel])
        tasks.append(
            _delayed(
                _gather_block,
                ext_blocks[b],
                trim_of(b),
                smoothing,
                sn,
                is_float,
                local,
                within[sel],
            )
        )
        where.append((b, sel, local))
    runner.expect(len(tasks))
    for (b, sel, local), (vals, cols) in zip(where, runner.run(tasks), strict=True):
        sample[sel, :n_chan] = vals
        if use_xy:
            rows_b = _row_index(grid, b)
            sample[sel, n_chan:] = _sample_coords(grid, rows_b[local], cols, b, sn)
    if is_float and smoothing > 0:
        sample = sample[np.isfinite(sample).all(axis=1)]

    # 3. the fit, exactly as kmeans_segment
    lo, scale = _robust_scale(sample[:, :n_chan], joint=bool(rgb))
    sample[:, :n_chan] -= lo
    sample[:, :n_chan] /= scale
    xy_factor = float(spatial_weight) / max(block_shape) if use_xy else 0.0
    if use_xy:
        sample[:, n_chan:] *= xy_factor
    distinct = len(np.unique(sample, axis=0))
    if distinct < k:
        what = "distinct colour(s)" if not use_xy else "distinct colour-and-position feature(s)"
        where_txt = "the image" if m == n_valid else f"a sample of {m} pixels of the image"
        raise ValueError(f"k={k} is larger than the number of {what} in {where_txt}: {distinct}")
    fit = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(sample.astype(np.float32))
    centres = fit.cluster_centers_.astype(np.float64)
    keys = [centres[:, j] for j in range(n_feat - 1, -1, -1)]
    order = np.lexsort(keys + [_brightness(centres[:, :n_chan], bool(rgb))])
    lut = np.zeros(k, dtype=np.uint8)
    lut[order] = np.arange(1, k + 1, dtype=np.uint8)
    weights = centres.T * -2.0
    weights[:n_chan] /= scale[:, None]
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    cc = (centres**2).sum(axis=1).astype(np.float32)
    small = np.dtype(chans.dtype).itemsize <= 2 or np.dtype(chans.dtype) == np.float32
    lo32 = lo.astype(np.float32) if small else lo
    model = _KMeansModel(
        n_chan, n_feat, lut, weights, cc, lo32, is_float, xy_factor, use_xy, smoothing, sn
    )
    if not use_xy and smoothing <= 0:
        model.table = _color_table(chans.dtype, n_chan, centres, lo, scale, model.nearest)

    # 4. every block's pixels to their nearest centre
    runner.expect(len(blocks))
    tasks = [
        _delayed(_kmeans_block, ext_blocks[b], trim_of(b), model, out_path, grid.slices(b))
        for b in blocks
    ]
    runner.run(tasks)


def _row_index(grid: _Grid, b: tuple) -> np.ndarray:
    """Global row numbers (C order over all axes but the last) of block ``b``'s rows."""
    sl = grid.slices(b)[:-1]
    idx = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
    return np.ravel_multi_index(tuple(i.reshape(-1) for i in idx), grid.shape[:-1]).astype(np.int64)


def _sample_coords(grid, rows, cols, b, sn) -> np.ndarray:
    """Plane coordinates of sampled pixels (global row number, column within block ``b``)."""
    lead_and_rows = np.array(np.unravel_index(rows, grid.shape[:-1])).T
    col = grid.starts[-1][b[-1]] + cols
    full = np.concatenate([lead_and_rows, col[:, None]], axis=1)
    return full[:, full.shape[1] - sn :].astype(np.float64)


# ---- the overlapped input ------------------------------------------------------------------------
def _overlapped(arr: Any, depth: int, axes: Sequence[int]) -> Any:
    import dask.array as da

    if not depth:
        return arr
    return da.overlap.overlap(arr, depth={a: depth for a in axes}, boundary="none")


def _as_dask(image: Any) -> Any:
    import dask.array as da

    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.exists():
            raise ValueError(f"image: {path} does not exist")
        try:
            return da.from_zarr(str(path))
        except Exception as err:
            raise ValueError(f"image: {path} is not a zarr array ({err})") from None
    if isinstance(image, da.Array):
        return image
    if type(image).__module__.startswith("zarr"):
        return da.from_zarr(image)
    arr = np.asarray(image) if not hasattr(image, "shape") else image
    return da.from_array(arr, chunks=arr.shape)


def _chunk_side(chunk: Any, sn: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 16:
        raise ValueError(f"chunk must be an integer >= 16 (pixels per side); got {chunk!r}")
    if sn == 3:  # a block of about chunk**2 voxels
        return max(16, int(round(float(chunk) ** (2.0 / 3.0))))
    return int(chunk)


# ---- the public function -------------------------------------------------------------------------
def segment_chunked(
    image: Any,
    method: str,
    params: dict | None = None,
    *,
    chunk: int = 2048,
    overlap: int | None = None,
    scheduler: Any = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    spatial_ndim: int = 2,
    spacing: Sequence[float] | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Segment an image of any size block by block; the labels go to a zarr array on disk.

    Parameters
    ----------
    image : dask array, numpy array, zarr array or path of a zarr array
        Grey, RGB/RGBA or multichannel; 2D, 3D or stacks, as the method takes them. Read one
        block (plus its overlap) at a time.
    method : {'threshold', 'edges', 'kmeans'}
        The method; see :func:`blockwise_problem` for the parameters that are not blockwise.
    params : dict, optional
        The method's parameters (its declaration's defaults for the others).
    chunk : int
        Pixels per side of a block (2D); a 3D block holds about ``chunk**2`` voxels.
    overlap : int, optional
        Pixels each block reads beyond its borders; default :func:`method_overlap` (exact).
        A smaller overlap makes the seams approximate.
    scheduler : None, 'threads', 'sync', address or distributed.Client
        Where the blocks run: local threads (default), one thread, or a dask.distributed cluster
        (an address such as ``'tcp://10.0.0.5:8786'``, or a ``Client``).
    out : path, optional
        The zarr array to write (``.zarr``); default a temporary folder, removed at exit.
    overwrite : bool
        Replace an existing ``out``.
    rgb, channel_axis, channel
        How to read colour/channels, as the method.
    spatial_ndim : {2, 3}
        Each 2D plane on its own (2) or each 3D volume as a whole (3); IDs are unique over the
        whole stack (k-means: one model for the whole stack).
    spacing : sequence of float, optional
        Threshold only (the methods whose declaration has ``uses_spacing``): the pixel (voxel)
        size of the ``spatial_ndim`` axes, as
        :func:`~napari_segkit.algorithms.threshold.threshold_segment` takes it.
    workers : int, optional
        Threads of the local scheduler (default: one per core).
    progress : callable, optional
        ``progress(done, total)`` after each block task; raising from it (e.g.
        :class:`~napari_segkit.algorithms.image.Cancelled`) stops the work.

    Returns
    -------
    dask.array.Array
        The labels, read lazily from the zarr array (int32 objects; uint8 classes / k-means).

    Raises
    ------
    ValueError
        An unknown method, a parameter that is not blockwise, a bad chunk, overlap, scheduler or
        spacing (or a spacing for a method that takes none), an existing ``out`` without
        ``overwrite``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_segkit.algorithms.threshold import threshold_segment
    >>> img = np.zeros((64, 64), np.uint8); img[10:50, 20:30] = 200; img[1:5, 5:60] = 180
    >>> params = {"method": "otsu", "min_size": 0, "split_touching": False}
    >>> lab = segment_chunked(img, "threshold", params, chunk=16)
    >>> int(lab.max().compute()), int(threshold_segment(img, **params).max())
    (2, 2)
    """
    import dask.array as da

    from .. import params as registry
    from .image import to_channels_last, to_grey

    if method in MODEL_METHODS:
        raise ValueError(
            f"{method}: a model method; run it block by block with "
            "napari_segkit.models.blockwise.segment_model_blockwise"
        )
    problem = blockwise_problem(method, params)
    if problem:
        raise ValueError(problem)
    spec = registry.get(method)
    p = spec.split(spec.validate(dict(params or {})))[0]
    if spacing is not None and not spec.uses_spacing:
        raise ValueError(f"spacing: {method} takes no voxel spacing (leave spacing=None)")
    arr = _as_dask(image)
    if method == "kmeans":
        from .image import guess_rgb

        if rgb is None and channel_axis is None:
            rgb = guess_rgb(tuple(arr.shape))
        chans = to_channels_last(arr, rgb=rgb, channel_axis=channel_axis)
        spatial = tuple(chans.shape[:-1])
        sn = spatial_ndim_for(len(spatial), spatial_ndim)
    else:
        grey = to_grey(arr, rgb=rgb, channel_axis=channel_axis, channel=channel)
        spatial = tuple(grey.shape)
        sn = spatial_ndim_for(len(spatial), spatial_ndim)
        if method == "edges" and sn == 3 and len(spatial) < 3:
            sn = 2
    rel = None
    if method == "threshold":
        from .threshold import _relative_spacing, _smoothing_sigma

        rel = _relative_spacing(spacing, len(spatial), spatial_ndim)
    side = _chunk_side(chunk, sn)
    need = method_overlap(method, p)
    depth = need if overlap is None else overlap
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(f"overlap must be an integer >= 0; got {overlap!r}")
    if depth >= side:
        raise ValueError(
            f"overlap={depth} must be smaller than the block side ({side}): raise chunk"
        )
    out_path = _prepare_out(out, overwrite)
    out_dtype = np.uint8 if (method == "kmeans" or p.get("output") == "classes") else np.int32
    lead = spatial[: len(spatial) - sn]
    _create_zarr(out_path, spatial, (1,) * len(lead) + (side,) * sn, out_dtype)
    runner = _Runner(scheduler, progress, workers)
    work = Path(tempfile.mkdtemp(prefix=".segkit-work-", dir=out_path.parent))
    try:
        if method == "kmeans":
            _kmeans_chunked(runner, chans, side, depth, p, rgb, sn, str(out_path), spatial)
        else:
            offset = 0
            # the threshold's smoothing: blocks at least its reach wide (a thinner last block
            # joins the one before), blurred with that reach read around them
            blur = (
                float(p["smoothing"]) if method == "threshold" and p["output"] == "objects" else 0.0
            )
            sigma = _smoothing_sigma(blur, rel) if method == "threshold" else 0.0
            thinnest = max([depth] + [_gauss_reach(v) for v in np.atleast_1d(sigma)])
            for idx in np.ndindex(*lead):
                plane = grey[idx] if idx else grey
                shape = tuple(plane.shape)
                sizes = tuple(_axis_chunks(n, side, thinnest) for n in shape)
                grid = _Grid(shape, sizes)
                plane = plane.rechunk(sizes)
                if blur:
                    plane = _smoothed(plane, sigma)
                code_path = work / "code.zarr"
                _create_zarr(code_path, shape, (side,) * sn, np.uint8)
                args = (runner, plane, grid, depth, p, str(code_path), str(out_path), idx, offset)
                if method == "threshold":
                    offset = _run_threshold(*args, spacing=rel)
                else:
                    offset = _run_edges(*args)
    finally:
        runner.close()
        shutil.rmtree(work, ignore_errors=True)
    return da.from_zarr(str(out_path))


def _smoothed(plane: Any, sigma: float | tuple[float, ...]) -> Any:
    """The threshold's Gaussian smoothing of a dask plane, block by block: each block reads the
    blur's reach around it (per axis, for one sigma per axis) and keeps its core, so it equals
    the whole plane's blur (scipy's reflection at the image's own borders; ``boundary='none'``
    adds nothing there). The blocks keep their sizes (at least the reach wide where an axis has
    several, see :func:`_axis_chunks`); an axis of one block needs no overlap."""
    from .threshold import gaussian_smooth

    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (plane.ndim,))
    depth = {
        ax: _gauss_reach(float(sigmas[ax])) if len(c) > 1 else 0
        for ax, c in enumerate(plane.chunks)
    }
    dtype = gaussian_smooth(np.zeros((1,) * plane.ndim, plane.dtype), sigma).dtype
    return plane.map_overlap(
        gaussian_smooth,
        depth=depth,
        boundary="none",
        sigma=sigma,
        dtype=dtype,
        allow_rechunk=False,
    )


def _prepare_out(out: Any, overwrite: bool) -> Path:
    if out is None:
        folder = tempfile.mkdtemp(prefix="segkit-chunked-")
        _TEMP_DIRS.append(folder)
        return Path(folder) / "labels.zarr"
    path = Path(out)
    if path.exists():
        if not overwrite:
            raise ValueError(f"out: {path} exists; choose another name or pass overwrite=True")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not path.parent.is_dir():
        raise ValueError(f"out: the folder {path.parent} does not exist")
    return path


def _plane_blocks(plane, grid, depth):
    ext = _overlapped(plane, depth, axes=range(plane.ndim))
    delayed = ext.to_delayed(optimize_graph=False)
    return {b: delayed[b] for b in grid.blocks()}


def _run_threshold(
    runner, plane, grid, depth, p, code_path, out_path, idx, offset, *, spacing=None
) -> int:
    """One plane/volume of the threshold method (``spacing``: relative to the last axis, or
    None); returns the new ID offset."""
    from .threshold import GLOBAL_METHODS, parse_cut_points

    first = offset

    method = p["method"]
    nb = len(grid.blocks())
    blocks = _plane_blocks(plane, grid, depth)
    core = _plane_blocks(plane, grid, 0) if depth else blocks
    dtype = plane.dtype
    cut_points = p.get("cut_points")
    if isinstance(cut_points, str):
        cut_points = parse_cut_points(cut_points)
    local = None
    nan_value = None
    # 1. the thresholds of the whole plane
    if method == "manual":
        if p["value"] is None or not np.isfinite(p["value"]):
            raise ValueError(f"method='manual' needs a finite value; got value={p['value']!r}")
        thresholds = (float(p["value"]),)
    elif method == "local":
        if np.dtype(dtype).kind == "f":
            runner.expect(nb)
            nan_value = _global_stats(runner, core, grid, 0, None, dtype, hist=False).lo
        thresholds = ()
        local = {"block_size": p["block_size"], "offset": p["offset"]}
    else:
        needs_hist = method != "mean" and (
            method != "cut_points" or any(isinstance(c, str) and c != "mean" for c in cut_points)
        )
        needs_stats = method != "cut_points" or any(isinstance(c, str) for c in cut_points)
        stats = None
        if needs_stats:
            runner.expect(nb * (2 if needs_hist else 1))
            stats = _global_stats(runner, core, grid, 0, None, dtype, hist=needs_hist)
        if method in GLOBAL_METHODS:
            thresholds = (_threshold_from_stats(method, stats),)
        elif method == "multiotsu":
            thresholds = tuple(_multiotsu(stats, p["classes"]))
        else:
            if not cut_points:
                raise ValueError("method='cut_points' needs cut_points, e.g. 'mean, 0.5, 0.25'")
            vals = [
                _threshold_from_stats(c.strip().lower(), stats) if isinstance(c, str) else float(c)
                for c in cut_points
            ]
            thresholds = tuple(np.unique(vals).tolist())
    codes = _ThresholdCodes(thresholds, p["dark"], local, nan_value)
    # 2. the class map, stored
    runner.expect(nb)
    _code_pass(runner, blocks if local else core, grid, depth if local else 0, codes, code_path)
    out_region = tuple(int(i) for i in idx)
    sn = len(grid.shape)
    if p["output"] == "classes":
        runner.expect(nb)
        runner.run(
            [
                _delayed(_copy_block, code_path, out_path, grid.slices(b), out_region, np.uint8)
                for b in grid.blocks()
            ]
        )
        return offset
    # 3. objects of each class, joined across blocks; a later class over an earlier one
    n_classes = 1 if local else len(thresholds)
    layers_per_block: dict = {b: [] for b in grid.blocks()}
    for value in range(1, n_classes + 1):
        runner.expect(nb * (2 if p["fill_holes"] else 1))
        rule, hole_luts, luts, n = _objects(
            runner,
            grid,
            code_path,
            _MaskRule(equals=value),
            connectivity=p["connectivity"],
            fill=p["fill_holes"],
            planar_fill=False,
            min_size=p["min_size"],
        )
        structure = _structure(sn, min(p["connectivity"], sn))
        for b in grid.blocks():
            layers_per_block[b].append((rule, hole_luts.get(b), structure, luts[b], offset))
        offset += n
    _check_offset(offset)
    runner.expect(nb)
    runner.run(
        [
            _delayed(
                _write_objects_block,
                code_path,
                out_path,
                grid.slices(b),
                out_region + grid.slices(b),
                layers_per_block[b],
                False,
            )
            for b in grid.blocks()
        ]
    )
    if p["output"] == "objects" and p["split_touching"]:
        offset = _split_pass(
            runner,
            grid,
            out_path,
            out_region,
            first,
            offset,
            p["diameter"],
            int(p["min_size"]),
            str(Path(code_path).parent),
            spacing,
        )
    return offset


# ---- splitting touching objects, object by object --------------------------------------------------
#: The automatic split diameter is measured on at most this many pixels around the plane's centre.
SPLIT_SAMPLE_PIXELS = 4096 * 4096


def _bbox_block(out_path: str, region: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IDs in one block of the labels and each one's bounding box there (inclusive, plane
    coordinates)."""
    lab = _read(out_path, region)
    n0 = len(region) - lab.ndim  # leading (stack) axes of the region, indexed by ints
    starts = np.array([s.start for s in region[n0:]], np.int64)
    boxes = ndi.find_objects(lab)
    ids = np.array([i + 1 for i, b in enumerate(boxes) if b is not None], np.int64)
    lo = np.array([[s.start for s in boxes[i - 1]] for i in ids], np.int64).reshape(-1, lab.ndim)
    hi = np.array([[s.stop - 1 for s in boxes[i - 1]] for i in ids], np.int64).reshape(-1, lab.ndim)
    return ids, lo + starts, hi + starts


def _split_owned_block(
    out_path: str,
    lead: tuple,
    shape: tuple,
    ids: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    diameter: float,
    margin: tuple[int, ...],
    store: str,
    single: bool,
    min_size: int,
    block_side: int,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Split the objects ``ids`` (bounding boxes ``lo..hi``) as the whole plane's split would.

    Each object is split on a crop of the labels grown by ``margin`` pixels per axis, with the
    plane's ``spacing`` (``single``: the plane's
    only object, split as a mask, as the whole plane's split does); pieces under ``min_size``
    pixels are dropped. Keeps each object's pieces (numbered 1..k within it, on its bounding box)
    in ``store`` (.npz) and returns k per object.
    """
    from .objects import split_touching

    counts = np.zeros(len(ids), np.int64)
    pieces = {}
    outers = [
        tuple(
            slice(max(int(x) - m, 0), min(int(y) + 1 + m, n))
            for x, y, n, m in zip(a, b, shape, margin, strict=True)
        )
        for a, b in zip(lo, hi, strict=True)
    ]
    # one read for the usual objects (the union of their neighbourhoods); an object whose
    # neighbourhood is larger than a block reads its own, so memory follows the objects' size
    usual = [max(o.stop - o.start for o in outer) <= block_side for outer in outers]
    union, labels = None, None
    if any(usual):
        union = tuple(
            slice(
                min(o[ax].start for o, u in zip(outers, usual, strict=True) if u),
                max(o[ax].stop for o, u in zip(outers, usual, strict=True) if u),
            )
            for ax in range(len(shape))
        )
        labels = _read(out_path, lead + union)
    for k, (i, a, b, outer) in enumerate(zip(ids, lo, hi, outers, strict=True)):
        if usual[k]:
            local = tuple(
                slice(o.start - u.start, o.stop - u.start)
                for o, u in zip(outer, union, strict=True)
            )
            crop = labels[local]
        else:
            crop = _read(out_path, lead + outer)
        # as the whole plane's split: labels of several objects, or one object's mask
        split = split_touching(crop > 0 if single else crop, diameter=diameter, spacing=spacing)
        box = tuple(
            slice(int(x) - o.start, int(y) + 1 - o.start)
            for x, y, o in zip(a, b, outer, strict=True)
        )
        mine = crop[box] == i
        values, inverse, sizes = np.unique(
            np.where(mine, split[box], 0), return_inverse=True, return_counts=True
        )
        # pieces numbered 1..k; those under min_size go, as after the whole plane's split
        keep = (values > 0) & (sizes >= max(min_size, 1))
        number = (np.cumsum(keep) * keep).astype(np.int32)
        counts[k] = int(keep.sum())
        pieces[str(int(i))] = number[inverse.reshape(mine.shape)]
    np.savez(store, **pieces)
    return counts


def _write_split_block(
    out_path: str, region: tuple, owner_of: np.ndarray, stores: list, base: np.ndarray, lo
) -> None:
    """Write one block of the split labels: each object's pieces, numbered from ``base[id]``."""
    lab = _read(out_path, region)
    n0 = len(region) - lab.ndim
    starts = [s.start for s in region[n0:]]
    out = np.zeros(lab.shape, np.int32)
    files: dict[int, Any] = {}
    for i in np.unique(lab):
        if i == 0:
            continue
        o = int(owner_of[i])
        if o not in files:
            files[o] = np.load(stores[o])
        sub = files[o][str(int(i))]
        a = lo[i]
        # the part of the object's box inside this block
        src, dst = [], []
        for ax in range(lab.ndim):
            s0 = max(int(a[ax]), starts[ax])
            s1 = min(int(a[ax]) + sub.shape[ax], starts[ax] + lab.shape[ax])
            src.append(slice(s0 - int(a[ax]), s1 - int(a[ax])))
            dst.append(slice(s0 - starts[ax], s1 - starts[ax]))
        piece = sub[tuple(src)]
        sel = (lab[tuple(dst)] == i) & (piece > 0)
        view = out[tuple(dst)]
        view[sel] = piece[sel] + int(base[i]) - 1
    for f in files.values():
        f.close()
    _write(out_path, region, out)


def _split_pass(
    runner, grid, out_path, out_region, first, last, diameter, min_size, work, spacing=None
) -> int:
    """Split the touching objects ``first+1..last`` of one plane/volume, object by object (each
    with a crop of its neighbourhood, so that the result is the whole plane's split; ``spacing``
    relative to the last axis, as the whole plane's split takes it). Returns the new ID offset
    (``first`` + the number of pieces)."""
    from . import size

    n = last - first
    if n == 0:
        return last
    blocks = grid.blocks()
    runner.expect(len(blocks))
    found = runner.run(
        [_delayed(_bbox_block, out_path, out_region + grid.slices(b)) for b in blocks]
    )
    nd = len(grid.shape)
    lo = np.full((last + 1, nd), np.iinfo(np.int64).max, np.int64)
    hi = np.full((last + 1, nd), -1, np.int64)
    for ids, a, b in found:
        np.minimum.at(lo, ids, a)
        np.maximum.at(hi, ids, b)
    if diameter is None:  # measured on a central window of the objects, as in memory on all
        side = int(round(SPLIT_SAMPLE_PIXELS ** (1 / nd)))
        window = tuple(
            slice(max(0, (s - side) // 2), max(0, (s - side) // 2) + side) for s in grid.shape
        )
        diameter = size.diameter_from_mask(
            _read(out_path, out_region + window) > 0, spacing=spacing
        )
        if not np.isfinite(diameter):
            return last  # nothing to measure: objects left whole
        extent = [n * s for n, s in zip(grid.shape, spacing or (1.0,) * nd, strict=True)]
        diameter = min(float(diameter), float(max(extent)))
    diameter = float(diameter)
    # 2 diameters (in physical units) around the object along every axis
    margin = tuple(int(np.ceil(2 * diameter / s)) + 3 for s in (spacing or (1.0,) * nd))
    # each object is split by the block that holds its box's first corner
    starts = [np.asarray(s) for s in grid.starts]
    ids = np.arange(first + 1, last + 1)
    present = hi[ids, 0] >= 0
    ids = ids[present]
    owner_idx = np.stack(
        [np.searchsorted(starts[ax], lo[ids, ax], side="right") - 1 for ax in range(nd)], axis=1
    )
    owner_flat = np.ravel_multi_index(owner_idx.T, grid.nblocks)
    stores = [str(Path(work) / f"split-{k}.npz") for k in range(len(blocks))]
    tasks, groups = [], []
    for k in range(len(blocks)):
        mine = ids[owner_flat == k]
        if mine.size:
            groups.append(mine)
            tasks.append(
                _delayed(
                    _split_owned_block,
                    out_path,
                    out_region,
                    grid.shape,
                    mine,
                    lo[mine],
                    hi[mine],
                    diameter,
                    margin,
                    stores[k],
                    n == 1,
                    min_size,
                    max(max(c) for c in grid.chunks),
                    spacing,
                )
            )
    runner.expect(len(tasks) + len(blocks))
    counts = np.zeros(last + 1, np.int64)
    for mine, c in zip(groups, runner.run(tasks), strict=True):
        counts[mine] = c
    base = np.zeros(last + 1, np.int64)
    base[first + 1 :] = first + 1 + np.concatenate([[0], np.cumsum(counts[first + 1 : -1])])
    new_last = first + int(counts.sum())
    _check_offset(new_last)
    owner_of = np.zeros(last + 1, np.int64)
    owner_of[ids] = owner_flat
    runner.run(
        [
            _delayed(
                _write_split_block,
                out_path,
                out_region + grid.slices(b),
                owner_of,
                stores,
                base,
                lo,
            )
            for b in blocks
        ]
    )
    return new_last


def _check_offset(offset: int) -> None:
    if offset > np.iinfo(np.int32).max:
        raise ValueError(f"more objects ({offset}) than int32 labels can hold")


def _multiotsu(stats: _Stats, classes: int) -> np.ndarray:
    from skimage import filters

    if not 2 <= classes <= 10:
        raise ValueError(f"classes must be between 2 and 10; got {classes}")
    if np.count_nonzero(stats.counts) < classes:
        raise ValueError(
            f"the image has {np.count_nonzero(stats.counts)} distinct value(s): too few for "
            f"{classes} classes"
        )
    hist = (stats.counts, stats.centers)
    return np.asarray(filters.threshold_multiotsu(classes=classes, hist=hist), dtype=np.float64)


def _copy_block(src, dst, region, out_region, dtype) -> None:
    _write(dst, out_region + region, _read(src, region).astype(dtype))


def _run_edges(runner, plane, grid, depth, p, code_path, out_path, idx, offset) -> int:
    """One plane/volume of the edges method ('fill' regions); returns the new ID offset."""
    from .edges import _check_params

    filt = _check_params(
        p["filter"],
        p["region_mode"],
        p["markers"],
        p["sigma"],
        p["low_threshold"],
        p["high_threshold"],
        p["use_quantiles"],
        p["edge_threshold"],
        p["closing"],
        p["min_distance"],
        p["min_size"],
        p["mode"],
    )
    nb = len(grid.blocks())
    sn = len(grid.shape)
    blocks = _plane_blocks(plane, grid, depth)
    core = _plane_blocks(plane, grid, 0) if depth else blocks
    mode, cval, sigma = p["mode"], p["cval"], p["sigma"]
    planar = filt == "canny"
    if filt == "canny":
        # the intensity range of the whole plane, then weak/strong edges per block
        runner.expect(nb * 5)
        lo, hi = _slice_ranges(runner, core, grid)
        codes = _CannyCodes(lo, hi, sigma, p["low_threshold"], p["high_threshold"], mode, cval)
        _code_pass(runner, blocks, grid, depth, codes, code_path)
        # hysteresis: a weak-edge component (8 neighbours in its slice) with a strong pixel
        structure = _structure(sn, 2 if sn == 2 else 3, planar=True)
        if sn == 2:
            structure = np.ones((3, 3), bool)
        comps = _components(
            runner, grid, code_path, _MaskRule(bits=_WEAK), structure, extra="strong"
        )
        keep = comps.strong.copy()
        keep[comps.comp[0]] = False
        runner.run(
            [
                _delayed(
                    _set_bits_block,
                    code_path,
                    grid.slices(b),
                    _MaskRule(bits=_WEAK),
                    structure,
                    comps.block_lut(b, keep),
                    _EDGE,
                )
                for b in grid.blocks()
            ]
        )
        # closing of the edges (reads the stored edges around each block)
        closed_path = str(Path(code_path).with_name("closed.zarr"))
        _create_zarr(Path(closed_path), grid.shape, (grid.chunks[0][0],) * sn, np.uint8)
        runner.run(
            [
                _delayed(
                    _closing_write,
                    code_path,
                    closed_path,
                    grid,
                    b,
                    2 * p["closing"],
                    p["closing"],
                    True,
                )
                for b in grid.blocks()
            ]
        )
        code_path = closed_path
    else:
        response = _EdgeResponse(filt, sigma, mode, cval)
        threshold = p["edge_threshold"]
        if threshold is None:
            runner.expect(2 * nb)
            stats = _global_stats(runner, blocks, grid, depth, response, np.float32, hist=True)
            threshold = _threshold_from_stats("otsu", stats)
        runner.expect(nb)
        _code_pass(
            runner, blocks, grid, depth, _EdgeCodes(response, threshold, p["closing"]), code_path
        )
    # regions: the closed edges with their holes filled, objects of face connectivity
    runner.expect(3 * nb)
    rule, hole_luts, luts, n = _objects(
        runner,
        grid,
        code_path,
        _MaskRule(bits=_CLOSED),
        connectivity=1,
        fill=True,
        planar_fill=planar and sn == 3,
        min_size=p["min_size"],
        use_good=True,
    )
    structure = _structure(sn, 1)
    out_region = tuple(int(i) for i in idx)
    runner.run(
        [
            _delayed(
                _write_objects_block,
                code_path,
                out_path,
                grid.slices(b),
                out_region + grid.slices(b),
                [(rule, hole_luts.get(b), structure, luts[b], offset)],
                True,
            )
            for b in grid.blocks()
        ]
    )
    offset += n
    _check_offset(offset)
    return offset


# ---- a per-object table of a large label array ---------------------------------------------------
def _table_block(block: np.ndarray, start: tuple) -> dict:
    """Per label of a block: area, coordinate sums, bounding box (global coordinates)."""
    lab = np.asarray(block)
    ids, inverse = np.unique(lab.ravel(), return_inverse=True)
    keep = ids > 0
    out = {"label": ids[keep].astype(np.int64)}
    area = np.bincount(inverse, minlength=len(ids))
    out["area"] = area[keep].astype(np.int64)
    coords = np.indices(lab.shape, sparse=True)
    boxes = ndi.find_objects(inverse.reshape(lab.shape).astype(np.int32) + 1)
    for a in range(lab.ndim):
        grid = np.broadcast_to(coords[a], lab.shape).reshape(-1)
        sums = np.bincount(inverse, weights=grid, minlength=len(ids))
        out[f"sum{a}"] = sums[keep] + start[a] * out["area"]
        lo = np.array([s[a].start for s in boxes], dtype=np.int64) + start[a]
        hi = np.array([s[a].stop - 1 for s in boxes], dtype=np.int64) + start[a]
        out[f"min{a}"], out[f"max{a}"] = lo[keep], hi[keep]
    return out


def chunked_object_table(labels: Any, *, scheduler: Any = None) -> dict[str, np.ndarray]:
    """:func:`~napari_segkit.algorithms.tables.object_table` of a label array of any size,
    block by block (label, area, centroid and bounding box per object, the same columns).

    Examples
    --------
    >>> import dask.array as da
    >>> lab = np.zeros((6, 6), int); lab[0:2, 0:5] = 4; lab[5, 5] = 2
    >>> t = chunked_object_table(da.from_array(lab, chunks=3))
    >>> t["label"].tolist(), t["area"].tolist(), t["bbox_x1"].tolist()
    ([2, 4], [1, 10], [6, 5])
    """
    import pandas as pd

    from .tables import _AXES, object_table

    arr = _as_dask(labels)
    if np.dtype(arr.dtype).kind not in "uib":
        raise ValueError(f"labels must be integers; got dtype {arr.dtype}")
    ndim = arr.ndim
    starts = [np.cumsum((0,) + c[:-1]) for c in arr.chunks]
    delayed = arr.to_delayed(optimize_graph=False)
    tasks = [
        _delayed(_table_block, delayed[b], tuple(int(starts[a][i]) for a, i in enumerate(b)))
        for b in np.ndindex(*arr.numblocks)
    ]
    runner = _Runner(scheduler, None, None)
    try:
        parts = runner.run(tasks)
    finally:
        runner.close()
    frames = [pd.DataFrame(p) for p in parts if len(p["label"])]
    if not frames:
        return object_table(np.zeros((1,) * ndim, dtype=np.int32))
    df = pd.concat(frames)
    agg = {"area": "sum"}
    for a in range(ndim):
        agg.update({f"sum{a}": "sum", f"min{a}": "min", f"max{a}": "max"})
    g = df.groupby("label", sort=True).agg(agg)
    names = [_AXES[i - ndim + 3] if ndim - i <= 3 else f"axis{i}" for i in range(ndim)]
    table = {"label": g.index.to_numpy(np.int64), "area": g["area"].to_numpy(np.int64)}
    for a, n in enumerate(names):
        table[f"centroid_{n}"] = g[f"sum{a}"].to_numpy() / g["area"].to_numpy()
    for a, n in enumerate(names):
        table[f"bbox_{n}0"] = g[f"min{a}"].to_numpy(np.int64)
        table[f"bbox_{n}1"] = g[f"max{a}"].to_numpy(np.int64) + 1
    return table
