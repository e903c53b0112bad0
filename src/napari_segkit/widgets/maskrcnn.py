"""Mask R-CNN dock widget: every detected object its own label ID, with a per-object table.

torch is imported only when Run (or Download weights) is pressed, inside
:mod:`napari_segkit.models.maskrcnn`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, PushButton, Widget
from napari.utils.notifications import show_info

from ..models.maskrcnn import SPEC
from ._base import ImageInput, SegmentationResult, SegmentWidget
from ._output import boxes_layer
from .cnn import _LISTENERS, user_model_choices

COCO = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
MODEL_CHOICES = [
    ("nuclei (shipped, fluorescence nuclei)", "nuclei"),
    ("ResNet-50 FPN, COCO", "maskrcnn_resnet50_fpn"),
    ("ResNet-50 FPN v2, COCO", "maskrcnn_resnet50_fpn_v2"),
    ("checkpoint file...", "file"),
]


class MaskRCNNWidget(SegmentWidget):
    """Instance segmentation with Mask R-CNN: pick an image and a model, press Run."""

    spec = SPEC
    method = "Mask R-CNN"

    def custom_widgets(self) -> dict[str, Widget]:
        self.model = ComboBox(label="model", choices=self._model_choices, value="nuclei")
        self.model.tooltip = SPEC["model"].help
        _LISTENERS.add(self)  # told when a model is trained (widgets.cnn.models_changed)
        return {"model": self.model}

    def _model_choices(self, _widget=None) -> list:
        """The shipped and COCO models, the user's trained Mask R-CNNs, a checkpoint file."""
        return [*MODEL_CHOICES[:-1], *user_model_choices("maskrcnn"), MODEL_CHOICES[-1]]

    def refresh_models(self) -> None:
        self.model.reset_choices()

    def make_parameters(self) -> list[Widget]:
        widgets = super().make_parameters()
        self.checkpoint = FileEdit(
            label="checkpoint", mode="r", filter="*.safetensors *.pt *.pth", value=""
        )
        self.download = PushButton(text="Download weights")
        self.download.tooltip = "Fetch the COCO weights into the torch hub cache (needs internet)"
        self.model.changed.connect(self._update_model_widgets)
        self.download.changed.connect(self.download_weights)
        self._update_model_widgets()
        return [widgets[0], self.checkpoint, self.download, *widgets[1:]]

    def _update_model_widgets(self, *_args) -> None:
        self.checkpoint.visible = self.model.value == "file"
        self.download.visible = self.model.value in COCO

    def model_source(self) -> str:
        """The model to load: a shipped/COCO name or a checkpoint path."""
        if self.model.value != "file":
            return self.model.value
        path = Path(str(self.checkpoint.value or ""))
        if not str(self.checkpoint.value or "").strip() or not path.is_file():
            raise ValueError(
                f"choose a checkpoint file (.safetensors, .pt or .pth); {str(path)!r} is not a file"
            )
        return str(path)

    def parameters(self) -> dict:
        params = super().parameters()
        params["model"] = self.model_source()
        return params

    def compute(self, inp: ImageInput, params: dict, progress) -> SegmentationResult:
        import pandas as pd

        from ..models import maskrcnn as mr

        params, output = SPEC.split(params)
        res = mr.predict_instances(
            inp.data,
            rgb=inp.rgb,
            channel_axis=inp.channel_axis,
            channel=inp.channel,
            spatial_ndim=inp.spatial_ndim,
            spacing=inp.spacing,
            progress=progress,
            **params,
        )
        features = pd.DataFrame(res.table)
        extra = [boxes_layer(res.table)] if output.get("boxes") and res.n_objects else []
        message = None
        if len(res.empty_labels):
            shown = ", ".join(str(i) for i in res.empty_labels[:10])
            more = "..." if len(res.empty_labels) > 10 else ""
            message = (
                f"{len(res.empty_labels)} detection(s) lost every pixel to higher-scoring ones "
                f"(labels {shown}{more}); they stay in the table with area 0"
            )
        result = SegmentationResult(
            res.labels, features=features, extra_layers=extra, message=message
        )
        result.n_ids = int(res.labels.max(initial=0))
        if len(res.table["label"]):  # the highest ID handed out, pixels or not
            result.n_ids = max(result.n_ids, int(np.max(res.table["label"])))
        result.diameter = res.diameter
        result.diameter_estimated = bool(res.params.get("diameter_estimated"))
        return result

    def run(self, *, blocking: bool = False):
        """As :meth:`SegmentWidget.run`; torch is imported here, on the GUI thread, first."""
        try:
            _import_torch()
        except Exception as err:  # e.g. torch not installed: a notification, not a traceback
            self._fail(err)
            return None
        return super().run(blocking=blocking)

    def _publish(self, inp: ImageInput, params: dict, result: SegmentationResult):
        layer = super()._publish(inp, params, result)
        # the next label painted by hand is beyond every ID the model handed out
        n_ids = getattr(result, "n_ids", None)
        if n_ids is None:
            n_ids = int(result.labels.max(initial=0))
        layer.selected_label = n_ids + 1
        diameter = getattr(result, "diameter", None)
        if diameter is not None:  # the object size the image was segmented for
            how = "estimated" if getattr(result, "diameter_estimated", False) else "given"
            self.status.value += f"; diameter {diameter:.1f} px ({how})"
        return layer

    # ---- weights ------------------------------------------------------------------------------
    def download_weights(self, *_args, blocking: bool = False):
        """Fetch the chosen COCO model's weights in a worker; offline, say exactly what to do."""
        architecture = self.model.value
        if architecture not in COCO:
            show_info("Download weights: choose a COCO model first")
            return None
        if self.running:
            show_info(f"{self.method}: busy; press Cancel or wait, then download")
            return None

        def fetch() -> str:
            from ..models import weights

            return str(weights.download_weights(architecture, progress=False))

        def done(path: str) -> str:
            self.status.value = f"weights ready: {path}"
            show_info(f"{architecture} weights are in the torch hub cache: {path}")
            return path

        try:
            _import_torch()
        except Exception as err:
            self._fail(err, action="download")
            return None
        return self.run_task(
            fetch, done=done, blocking=blocking, status=f"downloading {architecture} weights..."
        )


def _import_torch() -> None:
    """Import torch on the GUI thread, without triton, before the first worker needs it.

    torchvision imports ``torch._dynamo``, which imports triton when it is installed; triton's own
    LLVM crashes the process (segfault) when it is loaded after an OpenGL context that runs on
    Mesa's LLVM (llvmpipe, radeonsi), as napari's canvas may. triton only serves torch.compile,
    which this plugin does not use, so inside napari it is hidden from torch (an ``import triton``
    then raises ImportError instead of crashing). Set ``NAPARI_SEGKIT_ALLOW_TRITON=1`` to keep it.
    """
    from ..models.devices import hide_triton, import_torch

    hide_triton()
    import_torch()
