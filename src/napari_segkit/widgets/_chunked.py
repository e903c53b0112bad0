"""Large dask-backed images from a method widget go block by block (no Qt here).

When the chosen Image layer holds a dask array (a lazily read zarr/OME-zarr, a big TIFF opened
with dask) of more than :data:`settings.min_pixels` pixels, and the method can run block by
block with its current parameters (:func:`~napari_segkit.algorithms.chunked.blockwise_problem`),
the widget runs :func:`~napari_segkit.algorithms.chunked.segment_chunked` instead of its
in-memory compute: the labels go to a temporary zarr array that the Labels layer shows lazily.
Mask R-CNN and the CNN (semantic and instance output) go the same way through
:func:`~napari_segkit.models.blockwise.segment_model_blockwise`: windows with a halo from the
object size, objects stitched across the blocks. Extra layers (edge map, cluster colours, boxes,
probabilities) and the per-object table are left out on this path.
:data:`settings.scheduler` (set from the Batch widget's "dask scheduler" field) sends the blocks
to a dask.distributed cluster (a model's workers each get their own GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._output import SegmentationResult


@dataclass
class Settings:
    #: dask-backed images above this many pixels go block by block (2**26: 8192 x 8192)
    min_pixels: int = 2**26
    #: the dask scheduler: None (local threads), an address, or a distributed.Client
    scheduler: Any = None
    #: block side (pixels)
    chunk: int = 2048
    #: block side for Mask R-CNN and the CNN (None: a whole number of the model's tiles)
    model_chunk: int | None = None


settings = Settings()


@dataclass
class ChunkedResult(SegmentationResult):
    """A block-by-block result: lazy labels (dask, from zarr) and their count."""

    n_labels: int = 0


def count_labels(result: SegmentationResult) -> int:
    """The highest label of a result, without reading a lazy one."""
    if isinstance(result, ChunkedResult):
        return result.n_labels
    return int(result.labels.max(initial=0))


def _is_lazy(data: Any) -> bool:
    return hasattr(data, "dask") and hasattr(data, "chunks")


def chunked_compute(widget: Any, inp: Any, params: dict) -> Callable | None:
    """The block-by-block compute for this input, or None if the in-memory one applies."""
    from ..algorithms.chunked import CHUNKED_METHODS, MODEL_METHODS, blockwise_problem

    spec = getattr(widget, "spec", None)
    methods = CHUNKED_METHODS + MODEL_METHODS
    if spec is None or spec.name not in methods or not _is_lazy(inp.data):
        return None
    pixels = 1
    for n in inp.data.shape:
        pixels *= int(n)
    if pixels <= settings.min_pixels:
        return None
    method_params, _ = spec.split(params)
    if blockwise_problem(spec.name, method_params) is not None:
        return None
    if spec.name in MODEL_METHODS:
        return _model_compute(spec, method_params)

    def compute(inp: Any, params: dict, progress: Callable) -> ChunkedResult:
        from ..algorithms.chunked import segment_chunked

        kwargs = {"rgb": inp.rgb, "channel_axis": inp.channel_axis}
        if not spec.uses_all_channels:
            kwargs["channel"] = inp.channel
        if spec.supports_volume:
            kwargs["spatial_ndim"] = inp.spatial_ndim
        if spec.uses_spacing:
            kwargs["spacing"] = inp.spacing
        labels = segment_chunked(
            inp.data,
            spec.name,
            method_params,
            chunk=settings.chunk,
            scheduler=settings.scheduler,
            progress=progress,
            **kwargs,
        )
        n = _max_label(labels)
        return ChunkedResult(
            labels,
            message=f"{spec.title}: a large image, segmented block by block with dask "
            "(extra layers and the object table are left out)",
            n_labels=n,
        )

    return compute


def _max_label(labels: Any) -> int:
    """The largest label of a lazy result, block by block (off the GUI thread)."""
    return int(labels.max().compute()) if labels.size else 0


def _model_compute(spec: Any, method_params: dict) -> Callable:
    def compute(inp: Any, params: dict, progress: Callable) -> ChunkedResult:
        from ..models.blockwise import segment_model_blockwise

        res = segment_model_blockwise(
            inp.data,
            spec.name,
            method_params,
            chunk=settings.model_chunk,
            scheduler=settings.scheduler,
            progress=progress,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            spacing=inp.spacing,
        )
        n = _max_label(res.labels) if res.kind == "instance" else 0
        result = ChunkedResult(
            res.labels,
            message=f"{spec.title}: a large image, segmented block by block with dask "
            f"(blocks of {res.chunk} px, halo {res.halo} px; extra layers and the object table "
            "are left out)",
            n_labels=n,
        )
        if res.diameter is not None:
            how = "diameter (auto)" if method_params.get("diameter") is None else "diameter"
            result.measured = {how: (round(float(res.diameter), 1), "px")}
        result.n_ids = n  # Mask R-CNN: the next label painted by hand
        return result

    return compute
