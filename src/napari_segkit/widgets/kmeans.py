"""K-means dock widget: cluster pixel colours into k classes, 1 = darkest ... k = brightest."""

from __future__ import annotations

import numpy as np

from ..algorithms.kmeans import SPEC, cluster_color_image, kmeans_segment
from ._base import ImageInput, SegmentationResult, SegmentWidget


class KMeansWidget(SegmentWidget):
    """Cluster the pixels of an image by color: choose k, press Run, get one label per cluster.

    Label 1 is the darkest cluster and label k the brightest; the same seed gives the same labels.
    Every channel is used (RGB color, or all channels of a multichannel image). Optionally also
    shows the "cluster colors" image: each pixel painted with its cluster's mean color. The
    parameters come from :data:`napari_segkit.algorithms.kmeans.SPEC`.
    """

    spec = SPEC
    method = "kmeans"

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        params, output = SPEC.split(params)
        show = output.get("cluster_colors", False)
        labels, centres = kmeans_segment(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            return_centers=True,
            **params,
        )
        extra = []
        if show:
            extra.append(colour_layer(labels, centres, inp))
        return SegmentationResult(labels, extra_layers=extra)


def colour_layer(labels: np.ndarray, centres: np.ndarray, inp: ImageInput) -> tuple:
    """The cluster-colour Image layer tuple for the widget.

    RGB: each pixel gets its cluster's mean colour, in the input's dtype. Grey: its cluster's mean
    value. Multichannel: its cluster's mean value averaged over the channels (one grey image).
    """
    dtype = np.dtype(inp.data.dtype)
    out_dtype = dtype if dtype.kind in "ui" else np.float32
    if inp.rgb:
        data = cluster_color_image(labels, centres, dtype=out_dtype)
        return data, {"name": "cluster colours", "rgb": True}, "image"
    grey = centres.mean(axis=1, keepdims=True)
    data = cluster_color_image(labels, grey, dtype=out_dtype)[..., 0]
    kwargs = {"name": "cluster colours", "rgb": False, "colormap": "gray"}
    lo, hi = float(grey.min()), float(grey.max())
    if hi > lo:
        kwargs["contrast_limits"] = [lo, hi]
    return data, kwargs, "image"
