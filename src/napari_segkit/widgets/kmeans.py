"""K-means dock widget: cluster pixel colors into k classes, 1 = darkest ... k = brightest."""

from __future__ import annotations

from ..algorithms.kmeans import SPEC, kmeans_segment
from ._base import ImageInput, SegmentationResult, SegmentWidget
from ._output import cluster_color_layer


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
        labels, centers = kmeans_segment(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            return_centers=True,
            **params,
        )
        extra = []
        if output.get("cluster_colors", False):
            extra.append(cluster_color_layer(labels, centers, rgb=inp.rgb, dtype=inp.data.dtype))
        return SegmentationResult(labels, extra_layers=extra)
