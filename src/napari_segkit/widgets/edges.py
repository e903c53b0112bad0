"""Edges dock widget: Sobel, Laplace or Canny edges, turned into regions (fill or watershed)."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, SpinBox, Widget

from ..algorithms.edges import edge_segment_with_map
from ._base import ImageInput, SegmentationResult, SegmentWidget

FILTER_CHOICES = [
    ("Canny (2D, slice by slice in 3D)", "canny"),
    ("Sobel magnitude", "sobel"),
    ("Laplace (8 / 26 neighbours)", "laplace"),
]
REGION_CHOICES = [
    ("close edges + fill holes", "fill"),
    ("watershed on gradient", "watershed"),
]
MARKER_CHOICES = [
    ("threshold (Otsu + distance peaks)", "threshold"),
    ("local minima of gradient", "local_minima"),
]
BORDER_CHOICES = ["reflect", "nearest", "mirror", "constant", "wrap"]


class EdgesWidget(SegmentWidget):
    """Find the boundaries, then the regions they enclose (fill) or separate (watershed)."""

    method = "edges"

    def make_parameters(self) -> list[Widget]:
        self.region_mode = ComboBox(label="regions", choices=REGION_CHOICES, value="fill")
        self.filter = ComboBox(label="edge filter", choices=FILTER_CHOICES, value="canny")
        self.watershed_note = Label(value="floods the Sobel gradient magnitude")
        self.sigma = FloatSpinBox(label="sigma (smoothing)", min=0.0, max=50.0, step=0.5, value=1.0)
        self.low = FloatSpinBox(label="Canny low", min=0.0, max=1.0, step=0.01, value=0.1)
        self.high = FloatSpinBox(label="Canny high", min=0.0, max=1.0, step=0.01, value=0.2)
        self.low.tooltip = self.high.tooltip = (
            "Hysteresis thresholds, as fractions of the image's intensity range (0..1)"
        )
        self.closing = SpinBox(label="close gaps (px)", min=0, max=20, value=1)
        self.markers = ComboBox(label="markers", choices=MARKER_CHOICES, value="threshold")
        self.min_distance = SpinBox(label="min seed distance", min=1, max=1000, value=10)
        self.dark = CheckBox(text="objects are darker than background", value=False)
        self.mode = ComboBox(label="border", choices=BORDER_CHOICES, value="reflect")
        self.min_size = SpinBox(label="min size (px)", min=0, max=10**9, value=20)
        self.show_edges = CheckBox(text="show edge map", value=True)
        for w in (self.region_mode, self.filter, self.markers):
            w.changed.connect(self._update_visibility)
        widgets = [
            self.region_mode,
            self.filter,
            self.watershed_note,
            self.sigma,
            self.low,
            self.high,
            self.closing,
            self.markers,
            self.min_distance,
            self.dark,
            self.mode,
            self.min_size,
            self.show_edges,
        ]
        self._update_visibility()
        return widgets

    def _update_visibility(self, *_args) -> None:
        fill = self.region_mode.value == "fill"
        self.filter.visible = self.closing.visible = fill
        self.watershed_note.visible = not fill
        canny = fill and self.filter.value == "canny"
        self.low.visible = self.high.visible = canny
        self.markers.visible = self.dark.visible = not fill
        self.min_distance.visible = not fill

    def parameters(self) -> dict:
        fill = self.region_mode.value == "fill"
        params = {
            "region_mode": self.region_mode.value,
            "filter": self.filter.value if fill else "sobel",
            "sigma": float(self.sigma.value),
            "mode": self.mode.value,
            "min_size": int(self.min_size.value),
            "show_edge_map": bool(self.show_edges.value),
        }
        if fill:
            params["closing"] = int(self.closing.value)
            if params["filter"] == "canny":
                params["low_threshold"] = float(self.low.value)
                params["high_threshold"] = float(self.high.value)
        else:
            params["markers"] = self.markers.value
            params["min_distance"] = int(self.min_distance.value)
            params["dark"] = bool(self.dark.value)
        return params

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        params = dict(params)
        show = params.pop("show_edge_map", True)  # read on the GUI thread, with the rest
        labels, emap = edge_segment_with_map(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            progress=progress,
            **params,
        )
        extra = []
        if show:
            kwargs = {"name": "edge map", "colormap": "magma", "blending": "additive"}
            if emap.dtype.kind == "f":
                lo, hi = float(emap.min()), float(emap.max())
                kwargs["contrast_limits"] = (lo, hi) if hi > lo else (lo, lo + 1)
            else:
                kwargs["contrast_limits"] = (0, 1)
            extra.append((emap, kwargs, "image"))
        return SegmentationResult(labels, extra_layers=extra)
