"""Threshold dock widget: global, multi-level and local thresholds, as classes or objects.

The parameters and their widgets come from :data:`napari_segkit.algorithms.threshold.SPEC`.
"""

from __future__ import annotations

import numpy as np

from ..algorithms.threshold import SPEC, threshold_segment
from ._base import ImageInput, SegmentationResult, SegmentWidget


class ThresholdWidget(SegmentWidget):
    """Segment by intensity: pick a method, press Run, correct the Labels with the brush."""

    spec = SPEC
    method = "threshold"

    def on_image_changed(self, layer) -> None:
        if layer is None or self.params is None:
            return
        value = self.params["value"]
        lo, hi = (float(v) for v in layer.contrast_limits)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return
        # a manual threshold in the image's own units, whatever their range (int64 included)
        span = max(abs(lo), abs(hi), 1.0) * 2
        value.min, value.max = min(value.min, -span), max(value.max, span)
        value.step = max((hi - lo) / 100, 1e-6)
        value.value = (lo + hi) / 2

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        labels = threshold_segment(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            **params,
        )
        return SegmentationResult(labels)
