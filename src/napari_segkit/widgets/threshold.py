"""Threshold dock widget: global, multi-level and local thresholds, as classes or objects."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox, Widget

from ..algorithms.threshold import threshold_segment
from ._base import ImageInput, SegmentationResult, SegmentWidget

METHOD_CHOICES = [
    ("Otsu", "otsu"),
    ("Mean", "mean"),
    ("Li", "li"),
    ("Yen", "yen"),
    ("Triangle", "triangle"),
    ("Isodata", "isodata"),
    ("Manual value", "manual"),
    ("Multi-Otsu (N classes)", "multiotsu"),
    ("Manual cut points", "cut_points"),
    ("Local / adaptive", "local"),
]


class ThresholdWidget(SegmentWidget):
    """Segment by intensity: pick a method, press Run, correct the Labels with the brush."""

    method = "threshold"

    def make_parameters(self) -> list[Widget]:
        self.threshold_method = ComboBox(label="method", choices=METHOD_CHOICES, value="otsu")
        self.value = FloatSpinBox(label="value", min=-1e12, max=1e12, step=1.0, value=0.0)
        self.cut_points = LineEdit(label="cut points", value="mean, 0.5, 0.25")
        self.cut_points.tooltip = "Comma-separated numbers or method names, e.g. 'mean, 0.5, 0.25'"
        self.classes = SpinBox(label="classes", min=2, max=10, value=3)
        self.block_size = SpinBox(label="block size", min=3, max=1001, step=2, value=35)
        self.offset = FloatSpinBox(label="offset", min=-1e12, max=1e12, step=0.01, value=0.0)
        self.dark = CheckBox(text="objects are darker than background", value=False)
        self.output = ComboBox(
            label="output",
            choices=[("objects (one ID each)", "objects"), ("classes", "classes")],
            value="objects",
        )
        self.min_size = SpinBox(label="min size (px)", min=0, max=10**9, value=20)
        self.fill_holes = CheckBox(text="fill holes", value=True)
        self.connectivity = ComboBox(
            label="connectivity",
            choices=[("faces (4 in 2D, 6 in 3D)", 1), ("all neighbours (8 / 26)", 3)],
            value=1,
        )
        self.threshold_method.changed.connect(self._update_visibility)
        self.output.changed.connect(self._update_visibility)
        widgets = [
            self.threshold_method,
            self.value,
            self.cut_points,
            self.classes,
            self.block_size,
            self.offset,
            self.dark,
            self.output,
            self.min_size,
            self.fill_holes,
            self.connectivity,
        ]
        self._update_visibility()
        return widgets

    def _update_visibility(self, *_args) -> None:
        m = self.threshold_method.value
        self.value.visible = m == "manual"
        self.cut_points.visible = m == "cut_points"
        self.classes.visible = m == "multiotsu"
        self.block_size.visible = self.offset.visible = m == "local"
        objects = self.output.value == "objects"
        self.min_size.visible = self.fill_holes.visible = self.connectivity.visible = objects

    def on_image_changed(self, layer) -> None:
        if layer is None:
            return
        lo, hi = (float(v) for v in layer.contrast_limits)
        self.value.step = max((hi - lo) / 100, 1e-6)
        self.value.value = (lo + hi) / 2  # a manual threshold in the image's own units

    def parameters(self) -> dict:
        method = self.threshold_method.value
        params = {"method": method, "dark": bool(self.dark.value), "output": self.output.value}
        if method == "manual":
            params["value"] = float(self.value.value)
        elif method == "cut_points":
            params["cut_points"] = self.cut_points.value
        elif method == "multiotsu":
            params["classes"] = int(self.classes.value)
        elif method == "local":
            params["block_size"] = int(self.block_size.value)
            params["offset"] = float(self.offset.value)
        if self.output.value == "objects":
            params["min_size"] = int(self.min_size.value)
            params["fill_holes"] = bool(self.fill_holes.value)
            params["connectivity"] = int(self.connectivity.value)
        return params

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
