"""Edges dock widget: Sobel, Laplace or Canny edges, turned into regions (fill or watershed).

The parameters and their widgets come from :data:`napari_segkit.algorithms.edges.SPEC`.
"""

from __future__ import annotations

from ..algorithms.edges import SPEC, edge_segment_with_map
from ._base import ImageInput, SegmentationResult, SegmentWidget


class EdgesWidget(SegmentWidget):
    """Find the boundaries, then the regions they enclose (fill) or separate (watershed)."""

    spec = SPEC
    method = "edges"

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        method, output = SPEC.split(params)
        labels, emap = edge_segment_with_map(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            **method,
        )
        extra = []
        if output.get("show_edge_map", True):
            kwargs = {"name": "edge map", "colormap": "magma", "blending": "additive"}
            if emap.dtype.kind == "f":
                lo, hi = float(emap.min()), float(emap.max())
                kwargs["contrast_limits"] = (lo, hi) if hi > lo else (lo, lo + 1)
            else:
                kwargs["contrast_limits"] = (0, 1)
            extra.append((emap, kwargs, "image"))
        return SegmentationResult(labels, extra_layers=extra)
