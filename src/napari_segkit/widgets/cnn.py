"""CNN segmentation dock widget: U-Net, FCN, DeepLabV3, LR-ASPP; semantic, instance or panoptic.

The parameters come from :data:`napari_segkit.models.cnn.SPEC`; the model picker lists the
shipped nuclei U-Nets, torchvision's semantic models, the user's own trained models (refreshed
when a model is trained) and a checkpoint file. torch is imported when Run is pressed.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, Widget

from ..models.cnn import MODEL_CHOICES, SPEC
from ._base import ImageInput, SegmentationResult, SegmentWidget
from ._output import class_colormap

FILE = "file"
#: Live model-picking widgets, told when the user models change (a model was trained).
_LISTENERS: weakref.WeakSet = weakref.WeakSet()


def models_changed() -> None:
    """Refresh the model lists of every open CNN / Mask R-CNN widget (e.g. after training)."""
    for widget in list(_LISTENERS):
        try:
            widget.refresh_models()
        except RuntimeError:  # its Qt widget was closed: forget it
            _LISTENERS.discard(widget)


def user_model_choices(*families: str) -> list[tuple[str, str]]:
    """``(label, name)`` of the user's trained models of ``families`` (no torch import)."""
    from ..models.weights import list_user_models

    out = []
    for family in families:
        for m in list_user_models(family):
            size = m.metadata.get("object_diameter")
            extra = f", {float(size):.0f} px objects" if size else ""
            out.append((f"{m.name} (yours{extra})", m.name))
    return out


class CNNWidget(SegmentWidget):
    """Label every pixel with a CNN: pick a model and an output, press Run."""

    spec = SPEC
    method = "CNN"

    def custom_widgets(self) -> dict[str, Widget]:
        self.model = ComboBox(label="model", choices=self._model_choices, value="nuclei")
        self.model.tooltip = SPEC["model"].help
        _LISTENERS.add(self)
        return {"model": self.model}

    def _model_choices(self, _widget=None) -> list:
        return [
            *MODEL_CHOICES,
            *user_model_choices("unet", "semantic"),
            ("checkpoint file...", FILE),
        ]

    def refresh_models(self) -> None:
        self.model.reset_choices()

    def make_parameters(self) -> list[Widget]:
        widgets = super().make_parameters()
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors *.pt *.pth")
        self.model.changed.connect(self._update_model_widgets)
        self._update_model_widgets()
        return [widgets[0], self.checkpoint, *widgets[1:]]

    def _update_model_widgets(self, *_args) -> None:
        self.checkpoint.visible = self.model.value == FILE

    def parameters(self) -> dict:
        params = super().parameters()
        if params["model"] == FILE:
            text = str(self.checkpoint.value or "").strip()
            if not text or not Path(text).is_file():
                raise ValueError(
                    f"choose a checkpoint file (.safetensors, .pt); {text!r} is not one"
                )
            params["model"] = text
        return params

    def run(self, *, blocking: bool = False):
        """As :meth:`SegmentWidget.run`; torch is imported here, on the GUI thread, first."""
        from ..models.devices import hide_triton, import_torch

        hide_triton()
        import_torch()
        return super().run(blocking=blocking)

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        import pandas as pd

        from ..models.cnn import segment_cnn

        params, output = SPEC.split(params)
        show_probs = bool(output.get("show_probabilities"))
        res = segment_cnn(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            spacing=inp.spacing,
            progress=progress,
            return_probabilities=show_probs,
            **params,
        )
        features = pd.DataFrame(res.table) if res.table is not None else None
        layer_kwargs = {}
        if res.output == "semantic":
            layer_kwargs["colormap"] = class_colormap(len(res.class_names))
        extra = []
        if show_probs and res.probabilities is not None:
            probs = np.moveaxis(res.probabilities, -1, 0)  # one channel per class, first
            names = res.probability_names or [f"class {i}" for i in range(len(probs))]
            extra.append(
                (
                    probs,
                    {
                        "name": "probabilities (" + ", ".join(names[:6]) + ")",
                        "colormap": "magma",
                        "contrast_limits": (0, 1),
                    },
                    "image",
                )
            )
        result = SegmentationResult(
            res.labels,
            features=features,
            extra_layers=extra,
            message="; ".join(res.messages) or None,
            layer_kwargs=layer_kwargs,
        )
        result.measured = {
            ("diameter (auto)" if k == "diameter" else k): ((v, "px") if k == "diameter" else v)
            for k, v in res.measured.items()
        }
        if res.label_divisor:
            result.measured["label_divisor"] = res.label_divisor
        return result
