"""Mask R-CNN dock widget: every detected object its own label ID, with a per-object table.

torch is imported only when Run (or Download weights) is pressed, inside
:mod:`napari_segkit.models.maskrcnn`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, PushButton, Widget
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..models.maskrcnn import SPEC
from ._base import ImageInput, SegmentationResult, SegmentWidget
from .cnn import _LISTENERS, user_model_choices

COCO = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
MODEL_CHOICES = [
    ("nuclei (shipped demo model)", "nuclei"),
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
        result.n_ids = int(res.n_objects)  # the highest ID handed out, pixels or not
        return result

    def run(self, *, blocking: bool = False):
        """As :meth:`SegmentWidget.run`; torch is imported here, on the GUI thread, first."""
        _import_torch()
        return super().run(blocking=blocking)

    def _publish(self, inp: ImageInput, params: dict, result: SegmentationResult):
        layer = super()._publish(inp, params, result)
        # the next label painted by hand is beyond every ID the model handed out
        n_ids = getattr(result, "n_ids", int(result.labels.max(initial=0)))
        layer.selected_label = n_ids + 1
        return layer

    # ---- weights ------------------------------------------------------------------------------
    def download_weights(self, *_args, blocking: bool = False):
        """Fetch the chosen COCO model's weights in a worker; offline, say exactly what to do."""
        architecture = self.model.value
        if architecture not in COCO:
            show_info("Download weights: choose a COCO model first")
            return None

        def fetch() -> str:
            from ..models import weights

            return str(weights.download_weights(architecture, progress=False))

        def done(path: str) -> None:
            self.status.value = f"weights ready: {path}"
            show_info(f"{architecture} weights are in the torch hub cache: {path}")

        def failed(err: BaseException) -> None:
            self.status.value = "weights not available (see notification)"
            show_error(str(err))

        _import_torch()
        if blocking:
            try:
                done(fetch())
            except Exception as err:  # WeightsUnavailableError and anything else: tell the user
                failed(err)
            return None
        self.status.value = f"downloading {architecture} weights..."
        worker = create_worker(fetch, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        self._download_worker = worker
        worker.start()
        return worker


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


def boxes_layer(table: dict) -> tuple:
    """A napari Shapes layer-data tuple of the detection boxes, with class and score as text."""
    lead = sorted(k for k in table if k.startswith("axis"))
    y0, x0, y1, x1 = (
        np.asarray(table[k], float) for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
    )
    index = (
        np.stack([np.asarray(table[k], float) for k in lead], axis=1)
        if lead
        else np.zeros((len(y0), 0))
    )
    corners = []
    for i in range(len(y0)):
        pts = np.array([[y0[i], x0[i]], [y0[i], x1[i]], [y1[i], x1[i]], [y1[i], x0[i]]])
        corners.append(np.concatenate([np.repeat(index[i : i + 1], 4, axis=0), pts], axis=1))
    features = {"label": table["label"], "class_name": table["class_name"], "score": table["score"]}
    kwargs = {
        "name": "boxes",
        "shape_type": "rectangle",
        "edge_color": "yellow",
        "face_color": "transparent",
        "edge_width": 1,
        "features": features,
        "text": {
            "string": "{class_name} {score:.2f}",
            "size": 8,
            "color": "yellow",
            "anchor": "upper_left",
        },
    }
    return corners, kwargs, "shapes"
