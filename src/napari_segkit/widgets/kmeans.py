"""K-means dock widget: cluster pixel colours into k classes, 1 = darkest ... k = brightest."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, SpinBox, Widget

from ..algorithms.kmeans import K_MAX, K_MIN, cluster_colour_image, kmeans_segment
from ._base import ImageInput, SegmentationResult, SegmentWidget


class KMeansWidget(SegmentWidget):
    """Cluster the pixels of an image by colour: choose k, press Run, get one label per cluster.

    Label 1 is the darkest cluster and label k the brightest; the same seed gives the same labels.
    Every channel is used (RGB colour, or all channels of a multichannel image). Optionally also
    shows the "cluster colours" image: each pixel painted with its cluster's mean colour.
    """

    method = "kmeans"
    uses_all_channels = True

    def make_parameters(self) -> list[Widget]:
        self.k = SpinBox(label="clusters (k)", min=K_MIN, max=K_MAX, value=3)
        self.k.tooltip = "Number of colour clusters; label 1 = darkest, k = brightest"
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.seed.tooltip = "Same seed, same labels"
        self.spatial_weight = FloatSpinBox(
            label="spatial weight", min=0.0, max=100.0, step=0.1, value=0.0
        )
        self.spatial_weight.tooltip = (
            "Weight of pixel position (0: colour only). 1: crossing the whole image costs as much "
            "as crossing the whole colour range; larger gives compact clusters"
        )
        self.smoothing = FloatSpinBox(
            label="smoothing (px)", min=0.0, max=50.0, step=0.5, value=0.0
        )
        self.smoothing.tooltip = "Sigma of a Gaussian blur before clustering (0: none)"
        self.sample_size = SpinBox(
            label="sample (px)", min=1000, max=10_000_000, step=10_000, value=100_000
        )
        self.sample_size.tooltip = (
            "Pixels used to fit the model (drawn at random from the whole image or stack); "
            "every pixel is then assigned to its nearest cluster"
        )
        self.show_colours = CheckBox(text="also show cluster colours", value=False)
        self.show_colours.tooltip = "Add an image with each pixel painted its cluster's mean colour"
        return [
            self.k,
            self.seed,
            self.spatial_weight,
            self.smoothing,
            self.sample_size,
            self.show_colours,
        ]

    def parameters(self) -> dict:
        return {
            "k": int(self.k.value),
            "seed": int(self.seed.value),
            "spatial_weight": float(self.spatial_weight.value),
            "smoothing": float(self.smoothing.value),
            "sample_size": int(self.sample_size.value),
            "cluster_colours": bool(self.show_colours.value),
        }

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        params = dict(params)
        show = params.pop("cluster_colours", False)
        labels, centres = kmeans_segment(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            return_centres=True,
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
        data = cluster_colour_image(labels, centres, dtype=out_dtype)
        return data, {"name": "cluster colours", "rgb": True}, "image"
    grey = centres.mean(axis=1, keepdims=True)
    data = cluster_colour_image(labels, grey, dtype=out_dtype)[..., 0]
    kwargs = {"name": "cluster colours", "rgb": False, "colormap": "gray"}
    lo, hi = float(grey.min()), float(grey.max())
    if hi > lo:
        kwargs["contrast_limits"] = [lo, hi]
    return data, kwargs, "image"
