"""Threshold dock widget: global, multi-level and local thresholds, as classes or objects.

The parameters and their widgets come from :data:`napari_segkit.algorithms.threshold.SPEC`.
After a run with an automatic global method on one plane or volume, the threshold it chose is
shown in the status line, recorded in the layer's metadata (``"measured"``) and put into the
manual value, so that "Manual value" starts from it.
"""

from __future__ import annotations

import numpy as np

from ..algorithms.image import to_grey
from ..algorithms.threshold import GLOBAL_METHODS, SPEC, threshold_segment, threshold_value
from ._base import ImageInput, SegmentationResult, SegmentWidget


class ThresholdWidget(SegmentWidget):
    """Segment by intensity: pick a method, press Run, correct the Labels with the brush."""

    spec = SPEC
    method = "threshold"

    def on_image_changed(self, layer) -> None:
        if layer is None or self.params is None:
            return
        lo, hi = (float(v) for v in layer.contrast_limits)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return
        limit = max(abs(lo), abs(hi))
        self._show_manual_value((lo + hi) / 2, limit=limit, step=max((hi - lo) / 100, 1e-6))

    def _show_manual_value(
        self, threshold: float, *, limit: float = 0.0, step: float | None = None
    ) -> None:
        """Put ``threshold`` in the manual value; its range grows to hold twice ``limit`` and
        the value (the image's own units, whatever their range: int64 included)."""
        value = self.params["value"]
        span = max(abs(threshold), limit, 1.0) * 2
        value.min, value.max = min(value.min, -span), max(value.max, span)
        if step is not None:
            value.step = step
        value.value = threshold

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        labels = threshold_segment(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            spacing=inp.spacing,
            progress=progress,
            **params,
        )
        return SegmentationResult(labels, measured=measured_threshold(inp, params))

    def _publish(self, inp: ImageInput, params: dict, result: SegmentationResult):
        layer = super()._publish(inp, params, result)
        for name, threshold in result.measured.items():
            if name.startswith("threshold"):
                self._show_manual_value(float(threshold))
        return layer


def measured_threshold(inp: ImageInput, params: dict) -> dict:
    """``{"threshold (<method>)": value}`` for an automatic global method on one plane or
    volume (a stack has one threshold per plane: nothing is reported)."""
    method = params.get("method")
    if method not in GLOBAL_METHODS or method == "manual":
        return {}
    if len(inp.labels_shape) > inp.spatial_ndim:
        return {}
    grey = to_grey(inp.data, rgb=inp.rgb, channel_axis=inp.channel_axis, channel=inp.channel)
    return {f"threshold ({method})": threshold_value(np.asarray(grey), method)}
