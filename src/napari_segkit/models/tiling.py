"""Tiled, blended inference for dense-prediction networks (U-Net, FCN, DeepLabV3, LR-ASPP).

A plane (or volume) larger than the tile is cut into equal tiles that overlap; every tile's output
is weighted by a window that is 1 in its middle and falls smoothly (a raised cosine over
``overlap`` pixels) towards each side that has a neighbour, and the weighted outputs are summed
and divided by the summed weights. The tiles' borders, where a network sees least context, count
least, so the result has no seams; an image that fits in one tile gets weight 1 everywhere and
the plain, untiled output.

The planning (:func:`tile_layout`, :func:`blend_weights`) is numpy; :class:`TiledPredictor` runs
a network over tiles in batches with torch (imported inside its methods).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..algorithms.instances import axis_tiles


def check_tiling(
    tile_size: int | Sequence[int], tile_overlap: int | Sequence[int], ndim: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``tile_size`` and ``tile_overlap`` as one value per axis, checked.

    Raises
    ------
    ValueError
        Naming the argument: a tile under 16 pixels, or an overlap not below half the tile.

    Examples
    --------
    >>> check_tiling(256, 32, 2)
    ((256, 256), (32, 32))
    """
    sizes = tuple(int(t) for t in np.broadcast_to(np.asarray(tile_size), (ndim,)))
    overlaps = tuple(int(o) for o in np.broadcast_to(np.asarray(tile_overlap), (ndim,)))
    for t in sizes:
        if t < 16:
            raise ValueError(f"tile_size must be >= 16 pixels; got {tile_size}")
    for t, o in zip(sizes, overlaps, strict=True):
        if not 0 <= o < t // 2:
            raise ValueError(
                f"tile_overlap must be >= 0 and less than half of tile_size ({tile_size}); "
                f"got {tile_overlap}"
            )
    return sizes, overlaps


def tile_layout(
    shape: Sequence[int], tile_size: Sequence[int], overlap: Sequence[int], multiple: int = 1
) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Equal tiles covering ``shape``: their size and the start of each.

    Along each axis: the fewest tiles of at most ``tile_size`` whose neighbours overlap by at
    least ``overlap``, shrunk to cover the axis with as little overlap as that allows (rounded up
    to a multiple of ``multiple`` where that still fits) and spread evenly; the first starts at 0,
    the last is flush with the edge. An axis that fits in one tile is one tile of its length.

    Examples
    --------
    >>> tile_layout((100, 40), (64, 64), (16, 16))
    ((58, 40), [(0, 0), (42, 0)])
    >>> tile_layout((1024,), (512,), (64,), multiple=16)  # not 512, 448, 512: 1.5x the pixels
    ((384,), [(0,), (320,), (640,)])
    """
    per_axis = [
        axis_tiles(int(n), int(t), int(o), int(multiple))
        for n, t, o in zip(shape, tile_size, overlap, strict=True)
    ]
    sizes = tuple(size for size, _ in per_axis)
    return sizes, list(itertools.product(*(starts for _, starts in per_axis)))


def _ramp(length: int, start: int, n: int, width: int) -> np.ndarray:
    w = np.ones(length, np.float32)
    r = min(int(width), length // 2)
    if r > 0:
        up = (0.5 - 0.5 * np.cos(np.pi * np.arange(1, r + 1) / (r + 1))).astype(np.float32)
        if start > 0:
            w[:r] = up
        if start + length < n:
            w[length - r :] = np.minimum(w[length - r :], up[::-1])
    return w


def blend_weights(
    sizes: Sequence[int], start: Sequence[int], shape: Sequence[int], overlap: Sequence[int]
) -> np.ndarray:
    """The blending window of the tile at ``start``: a raised cosine on each side with a neighbour.

    All weights are > 0; a side on the image's edge keeps weight 1.

    Examples
    --------
    >>> w = blend_weights((8,), (0,), (12,), (3,))
    >>> [round(float(v), 2) for v in w]
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.85, 0.5, 0.15]
    """
    w = np.ones((), np.float32)
    for length, s, n, o in zip(sizes, start, shape, overlap, strict=True):
        w = np.multiply.outer(w, _ramp(int(length), int(s), int(n), int(o)))
    return w.astype(np.float32)


class TiledPredictor:
    """Run ``forward`` over blocks tile by tile, in batches, and blend the tiles' outputs.

    Parameters
    ----------
    forward : callable
        ``forward(x) -> y``: ``x`` a float32 tensor ``(B, C, *tile)`` on the device (padded to a
        multiple of ``multiple``), ``y`` ``(B, n_out, *tile)`` (probabilities or any map to blend).
    n_out : int
        Output channels.
    tile_size, overlap : tuple of int
        Per spatial axis (see :func:`check_tiling`).
    batch_size : int
        Tiles per call of ``forward`` (tiles of consecutive blocks share batches).
    multiple : int
        Tiles are padded (reflected) up to a multiple of this (``2**depth`` for a U-Net).
    """

    def __init__(
        self,
        forward: Callable[[Any], Any],
        n_out: int,
        *,
        tile_size: Sequence[int],
        overlap: Sequence[int],
        batch_size: int = 4,
        multiple: int = 1,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.forward = forward
        self.n_out = int(n_out)
        self.tile_size = tuple(int(t) for t in tile_size)
        self.overlap = tuple(int(o) for o in overlap)
        self.batch_size = int(batch_size)
        self.multiple = int(multiple)
        self._windows: dict[tuple, Any] = {}

    def n_tiles(self, shape: Sequence[int]) -> int:
        """How many tiles a block of spatial ``shape`` takes."""
        return len(tile_layout(shape, self.tile_size, self.overlap, self.multiple)[1])

    def run(
        self,
        blocks: Iterable[tuple[Any, Any]],
        on_batch: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, maps)`` for each ``(key, x)`` of ``blocks``, in order.

        ``x`` is a float32 tensor ``(C, *spatial)`` on the device; ``maps`` the blended output
        ``(n_out, *spatial)``, float32 on the same device. ``on_batch(n)`` is called after each
        batch of ``n`` tiles (it may raise to cancel).
        """
        import torch

        pending: list[tuple[dict[str, Any], tuple[int, ...]]] = []
        states: list[dict[str, Any]] = []
        for key, x in blocks:
            spatial = tuple(int(s) for s in x.shape[1:])
            sizes, starts = tile_layout(spatial, self.tile_size, self.overlap, self.multiple)
            state = {
                "key": key,
                "x": x,
                "sizes": sizes,
                "shape": spatial,
                "acc": None,
                "wsum": None,
                "left": len(starts),
            }
            if len(starts) > 1:
                state["acc"] = torch.zeros((self.n_out, *spatial), device=x.device)
                state["wsum"] = torch.zeros(spatial, device=x.device)
            states.append(state)
            pending.extend((state, s) for s in starts)
            while len(pending) >= self.batch_size:
                pending = self._run_batch(pending, on_batch)
                yield from self._finished(states)
        while pending:
            pending = self._run_batch(pending, on_batch)
            yield from self._finished(states)

    def _finished(self, states: list[dict[str, Any]]) -> Iterator[tuple[Any, Any]]:
        while states and states[0]["left"] == 0:
            state = states.pop(0)
            out = state["acc"] if state["wsum"] is None else state["acc"] / state["wsum"]
            yield state["key"], out

    def _run_batch(self, pending: list, on_batch: Callable[[int], None] | None) -> list:
        import torch
        import torch.nn.functional as F

        sizes = pending[0][0]["sizes"]
        n = 1
        while n < min(self.batch_size, len(pending)) and pending[n][0]["sizes"] == sizes:
            n += 1
        batch, rest = pending[:n], pending[n:]
        tiles = []
        for state, start in batch:
            index = (slice(None),) + tuple(
                slice(s, s + t) for s, t in zip(start, sizes, strict=True)
            )
            tiles.append(state["x"][index])
        x = torch.stack(tiles)
        padded = tuple(math.ceil(t / self.multiple) * self.multiple for t in sizes)
        if padded != sizes:
            pads: list[int] = []
            for t, p in zip(reversed(sizes), reversed(padded), strict=True):
                pads += [0, p - t]
            mode = (
                "reflect"
                if all(p - t < t for t, p in zip(sizes, padded, strict=True))
                else ("replicate")
            )
            x = F.pad(x, pads, mode=mode)
        y = self.forward(x)
        crop = (slice(None), slice(None)) + tuple(slice(0, t) for t in sizes)
        y = y[crop].float()
        for i, (state, start) in enumerate(batch):
            if state["wsum"] is None:  # a single tile: the plain output
                state["acc"] = y[i]
            else:
                window = self._window(sizes, start, state["shape"], y.device)
                index = tuple(slice(s, s + t) for s, t in zip(start, sizes, strict=True))
                state["acc"][(slice(None), *index)] += y[i] * window
                state["wsum"][index] += window
            state["left"] -= 1
            if state["left"] == 0:
                state["x"] = None
        if on_batch is not None:
            on_batch(len(batch))
        return rest

    def _window(self, sizes: tuple, start: tuple, shape: tuple, device: Any) -> Any:
        import torch

        edges = tuple((s > 0, s + t < n) for s, t, n in zip(start, sizes, shape, strict=True))
        key = (sizes, edges, str(device))
        if key not in self._windows:
            # the window only depends on which sides have a neighbour: place it as such
            fake_start = tuple(1 if lo else 0 for lo, _ in edges)
            fake_shape = tuple(
                t + (1 if lo else 0) + (1 if hi else 0)
                for t, (lo, hi) in zip(sizes, edges, strict=True)
            )
            w = blend_weights(sizes, fake_start, fake_shape, self.overlap)
            self._windows[key] = torch.from_numpy(w).to(device)
        return self._windows[key]


def scaled_shape(shape: Sequence[int], scale: float | Sequence[float]) -> tuple[int, ...]:
    """``shape`` times ``scale`` (one factor, or one per axis), rounded, at least 1 per axis.

    Examples
    --------
    >>> scaled_shape((100, 31), 0.5)
    (50, 16)
    >>> scaled_shape((20, 100, 100), (1.5, 0.5, 0.5))
    (30, 50, 50)
    """
    factors = np.broadcast_to(np.asarray(scale, dtype=float), (len(shape),))
    return tuple(max(1, int(round(int(n) * float(f)))) for n, f in zip(shape, factors, strict=True))


def _resize(x: Any, size: tuple[int, ...]) -> Any:
    """Linear resize of the trailing axes of ``x`` (``(N, C, *spatial)``) to ``size``."""
    import torch.nn.functional as F

    if tuple(x.shape[2:]) == tuple(size):
        return x
    if len(size) == 2:
        down = any(s < n for s, n in zip(size, x.shape[2:], strict=True))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def dense_maps(
    chans: Any,
    *,
    spatial_ndim: int,
    model_ndim: int,
    prepare: Callable[[np.ndarray], np.ndarray],
    predictor: TiledPredictor,
    device: Any,
    scale: float | Sequence[float] = 1.0,
    blocks: Sequence[tuple[int, ...]] | None = None,
    on_batch: Callable[[int], None] | None = None,
    reduce: Callable[[Any], Any] | None = None,
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Blended network output of every block (plane or volume) of a channels-last image.

    Parameters
    ----------
    chans : array-like, shape (*lead, *spatial, C)
        numpy or dask (read one block at a time).
    spatial_ndim : {2, 3}
        Spatial axes of a block.
    model_ndim : {2, 3}
        The network's spatial axes; a 2D network on 3D blocks runs plane by plane and the planes'
        maps are stacked back into the volume.
    prepare : callable
        ``prepare(block) -> float32 (C', *spatial)``: normalization and channel choice of one
        block (channels last in, first out).
    predictor : TiledPredictor
    device : torch.device
    scale : float or sequence of float
        The network sees the block resized by ``scale`` along its own axes (one factor, or one
        per network axis: anisotropic voxels; linear interpolation); its maps are resized back to
        the block's grid (linear) before they are returned.
    blocks : sequence of tuple, optional
        Indices over the leading axes (default: all, in order).
    on_batch : callable, optional
        Passed to :meth:`TiledPredictor.run`.
    reduce : callable, optional
        ``reduce(maps) -> (k, *spatial)`` tensor of any dtype, applied on the device to each
        unit's maps (on the block's grid) before they are copied to the host: what the caller
        needs of them (e.g. the class of every pixel), so less is copied and less left to the CPU.

    Yields
    ------
    index, maps
        ``maps`` numpy ``(n_out, *spatial)`` float32 (or what ``reduce`` makes of them), on the
        block's own grid.
    """
    import torch

    lead_ndim = chans.ndim - 1 - spatial_ndim
    if blocks is None:
        blocks = list(np.ndindex(*chans.shape[:lead_ndim]))
    per_block = 1 if model_ndim == spatial_ndim else int(chans.shape[lead_ndim])
    block_shape = tuple(int(s) for s in chans.shape[lead_ndim:-1])
    unit_shape = block_shape[spatial_ndim - model_ndim :]
    work_shape = scaled_shape(unit_shape, scale)

    def units() -> Iterator[tuple[tuple, Any]]:
        for b in blocks:
            data = prepare(np.asarray(chans[b]))
            x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(device)
            for k in range(per_block):
                unit = x if per_block == 1 else x[:, k]
                yield (b, k), _resize(unit[None], work_shape)[0]

    parts: list[Any] = []
    for (b, k), maps in predictor.run(units(), on_batch):
        maps = _resize(maps[None], unit_shape)[0]
        if reduce is not None:
            maps = reduce(maps)
        parts.append(maps.cpu().numpy())
        if k == per_block - 1:
            out = parts[0] if per_block == 1 else np.stack(parts, axis=1)
            parts = []
            yield b, out


def pixel_classes(maps: Any, n_classes: int) -> Any:
    """The class of every pixel of ``maps`` ``(n_classes, *spatial)``, taken on their device (a
    ``reduce`` for :func:`dense_maps`): ``(1, *spatial)``, uint8 (int32 past 256 classes)."""
    import torch

    cls = torch.argmax(maps, dim=0)
    return cls.to(torch.uint8 if n_classes <= 256 else torch.int32)[None]


def count_tiles(
    chans_shape: Sequence[int],
    *,
    spatial_ndim: int,
    model_ndim: int,
    predictor: TiledPredictor,
    scale: float | Sequence[float],
    n_blocks: int,
) -> int:
    """How many tiles :func:`dense_maps` runs over ``n_blocks`` blocks (for progress)."""
    lead_ndim = len(chans_shape) - 1 - spatial_ndim
    block_shape = tuple(int(s) for s in chans_shape[lead_ndim:-1])
    per_block = 1 if model_ndim == spatial_ndim else block_shape[0]
    unit_shape = block_shape[spatial_ndim - model_ndim :]
    return n_blocks * per_block * predictor.n_tiles(scaled_shape(unit_shape, scale))
