"""Train dock widget: train (or fine-tune) a U-Net or a Mask R-CNN on the user's own labels.

Data: (Image, Labels) pairs picked from the layer list (2D, 3D, stacks; an optional Shapes layer
marks where the labels are complete), or a folder of image/label files. Instance labels train an
instance model, class labels a semantic U-Net (the "task"). Training runs in a worker thread
(:func:`napari_segkit.models.training.train`), on the GPU when there is one, with a live plot of the
training loss and validation metric per epoch, a progress bar, and Stop (the best model is kept).
The best model is saved on every improvement as ``<user models folder>/<name>.safetensors``
(:func:`napari_segkit.models.weights.user_models_dir`); when training ends it is listed at once
by the CNN (and Mask R-CNN) widgets, and after a restart too.

torch is imported when Train is pressed (on the GUI thread, before the worker starts).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
    TextEdit,
)
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ._plot import LinePlot

__all__ = ["TrainWidget", "describe_model", "default_model_name"]

NONE = "(none)"
SCRATCH = "scratch"
FILE = "file"
#: Mask R-CNN starting points besides the user's models.
MASKRCNN_STARTS = [
    ("shipped nuclei Mask R-CNN", "nuclei"),
    ("COCO Mask R-CNN ResNet-50 FPN", "maskrcnn_resnet50_fpn"),
    ("COCO Mask R-CNN ResNet-50 FPN v2", "maskrcnn_resnet50_fpn_v2"),
]


class _Emitter(QObject):
    """Carries progress and epochs from the worker thread to the GUI thread (queued signals)."""

    progressed = Signal(int, int)
    epoch = Signal(object)


def default_model_name(image_name: str, folder: Path, *, today: dt.date | None = None) -> str:
    """``<image name>_<date>``, made file-safe, with ``_2``, ``_3``... if ``folder`` has it.

    Examples
    --------
    >>> import tempfile
    >>> default_model_name("cells 01.tif", Path(tempfile.mkdtemp()), today=dt.date(2025, 3, 1))
    'cells_01_2025-03-01'
    """
    stem = re.sub(r"\.(ome\.)?(tiff?|png|jpe?g|npy|zarr)$", "", str(image_name), flags=re.I)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "model"
    base = f"{stem[:60]}_{(today or dt.date.today()).isoformat()}"
    name, k = base, 2
    while (Path(folder) / f"{name}.safetensors").exists():
        name, k = f"{base}_{k}", k + 1
    return name


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def describe_model(meta: dict[str, Any], path: str | Path | None = None) -> str:
    """A readable summary of a checkpoint's metadata (U-Net or Mask R-CNN).

    Examples
    --------
    >>> meta = {"family": "unet", "task": "instance", "object_diameter": 24.0,
    ...         "architecture": {"ndim": 2, "in_channels": 1, "depth": 4, "width": 32,
    ...                          "norm": "batch"},
    ...         "class_names": ["background", "nucleus"],
    ...         "metrics": {"name": "AP@0.5", "best": 0.81, "best_epoch": 4}}
    >>> print(describe_model(meta).splitlines()[0])
    architecture: U-Net 2D, depth 4, width 32, batch norm, 1 input channel(s)
    """
    lines = []
    if path is not None:
        lines.append(f"file: {path}")
    family = meta.get("family", "?")
    arch = meta.get("architecture")
    if family == "unet" and isinstance(arch, dict):
        lines.append(
            f"architecture: U-Net {arch.get('ndim')}D, depth {arch.get('depth')}, width "
            f"{arch.get('width')}, {arch.get('norm')} norm, {arch.get('in_channels')} input "
            f"channel(s)"
        )
    else:
        lines.append(f"architecture: {family} {arch}")
    extra = meta.get("extra") or {}
    training = meta.get("training") or extra.get("training") or {}
    metrics = meta.get("metrics") or extra.get("metrics") or {}
    lines.append(
        f"task: {meta.get('task', 'instance')}; classes: {', '.join(meta.get('class_names', []))}"
    )
    size = meta.get("object_diameter")
    data_size = training.get("diameter")
    if size is not None:
        text = f"object size: {float(size):.1f} px"
        if data_size:
            text += f" (training images: {float(data_size):.1f} px, scale {training.get('scale', 1):.3g})"
        lines.append(text)
    elif data_size:
        lines.append(f"object size: {float(data_size):.1f} px in the training images")
    norm = meta.get("normalization") or {}
    if norm:
        pct = norm.get("percentiles")
        lines.append(
            "normalization: "
            + (f"percentiles {pct[0]:g}-{pct[1]:g}, per image and channel" if pct else str(norm))
        )
    images = training.get("images") or []
    if images:
        shown = ", ".join(
            f"{i.get('name')} ({'x'.join(str(s) for s in i.get('shape', []))})" for i in images[:8]
        )
        more = f" and {len(images) - 8} more" if len(images) > 8 else ""
        lines.append(f"trained on: {shown}{more}")
    if training.get("validation_images"):
        lines.append(f"validation: {', '.join(training['validation_images'][:8])}")
    if training.get("start_from"):
        lines.append(f"started from: {training['start_from']}")
    if "epochs" in training:
        done = training.get("epochs_done", metrics.get("best_epoch"))
        lines.append(f"epochs: best at {done} of {training['epochs']}")
    if metrics:
        name = metrics.get("name", "metric")
        text = f"validation {name}: best {_fmt(metrics.get('best'))}"
        if metrics.get("best_epoch") is not None:
            text += f" (epoch {metrics['best_epoch']})"
        if metrics.get("initial") is not None:
            text += f", before training {_fmt(metrics.get('initial'))}"
        lines.append(text)
        holdout = metrics.get("holdout")
        if isinstance(holdout, dict) and "ap50" in holdout:
            lines.append(
                f"held-out AP@0.5: {_fmt(holdout['ap50'])} ({holdout.get('images')} images)"
            )
    if training.get("device"):
        lines.append(f"device: {training['device']}")
    lines.append(f"version {meta.get('version', '?')}, {meta.get('date', '?')}")
    return "\n".join(lines)


class TrainWidget(Container):
    """Train a segmentation model on (image, labels) pairs; the result joins the user's models."""

    #: median object diameter of the chosen labels (pixels), None if unknown
    measured_diameter: float | None = None
    _new_net = False

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self._stop = threading.Event()
        self._pbar = None
        self._pairs: list[dict[str, str | None]] = []
        self._name_edited = False
        self._setting_name = False
        self.result = None  # the last TrainingResult
        self.model_path: Path | None = None  # the file of the last training
        self.history: list[dict] = []

        # ---- data
        self.source = ComboBox(
            label="data", choices=[("layers", "layers"), ("folder", "folder")], value="layers"
        )
        self.image = ComboBox(label="image", choices=self._layer_choices(Image))
        self.labels_layer = ComboBox(label="labels", choices=self._layer_choices(Labels))
        self.region = ComboBox(label="complete in", choices=self._region_choices)
        self.region.tooltip = (
            "optional Shapes layer: where the labels are complete (everything unlabelled inside "
            "is background)"
        )
        self.add_pair = PushButton(text="add pair")
        self.remove_pair = PushButton(text="remove selected")
        self.pair_list = Select(label="pairs", choices=self._pair_choices)
        self.pair_list.tooltip = "the pairs trained on (none: the image and labels above)"
        self.folder = FileEdit(label="folder", mode="d", value="")
        self.folder.tooltip = "images X.tif with their labels X_labels.tif (or _masks, _seg)"
        self.labels_folder = FileEdit(label="labels folder", mode="d", value="")
        self.labels_folder.tooltip = "optional: the labels under the images' names"
        self.object_size = Label(label="object size", value="-")

        # ---- model
        self.model = ComboBox(
            label="model", choices=[("U-Net", "unet"), ("Mask R-CNN", "maskrcnn")], value="unet"
        )
        self.task = ComboBox(
            label="task",
            choices=[("instances (objects)", "instance"), ("semantic (classes)", "semantic")],
            value="instance",
        )
        self.dims = ComboBox(
            label="dimensions",
            choices=[("auto", 0), ("2D (planes)", 2), ("3D (volumes)", 3)],
            value=0,
        )
        self.annotation_mode = ComboBox(
            label="annotation",
            choices=[("complete", "complete"), ("only labelled objects", "objects")],
            value="complete",
        )
        self.annotation_mode.tooltip = (
            "complete: every unlabelled pixel is background. only labelled objects: the labelled "
            "objects and a ring around them count (the rest of the image is ignored)"
        )
        self.start_from = ComboBox(label="start from", choices=self._start_choices)
        self.checkpoint = FileEdit(
            label="checkpoint", mode="r", filter="*.safetensors *.pt *.pth", value=""
        )

        # ---- training
        self.epochs = SpinBox(label="epochs", min=1, max=10000, value=30)
        self.minutes = FloatSpinBox(
            label="time limit (min, 0: none)", min=0.0, max=10080.0, step=1.0, value=0.0
        )
        self.minutes.tooltip = "end the training after this time (the best model is kept)"
        self.model_name = LineEdit(label="name")
        self.replace = CheckBox(text="replace a model of that name", value=False)
        self.show_advanced = CheckBox(text="advanced settings", value=False)
        self.steps = SpinBox(label="steps per epoch", min=1, max=100000, value=50)
        self.batch_size = SpinBox(label="batch size", min=1, max=1024, value=8)
        self.patch_size = SpinBox(label="patch size (0: auto)", min=0, max=4096, value=0)
        self.learning_rate = FloatSpinBox(
            label="learning rate (0: auto)", min=0.0, max=1.0, step=1e-4, value=0.0
        )
        self.val_fraction = FloatSpinBox(
            label="validation share", min=0.0, max=0.9, step=0.05, value=0.2
        )
        self.depth_box = SpinBox(label="depth (new U-Net, 0: default)", min=0, max=8, value=0)
        self.width_box = SpinBox(label="width (new U-Net, 0: default)", min=0, max=512, value=0)
        self.device = ComboBox(
            label="device",
            choices=[("auto (GPU if any)", "auto"), ("GPU (CUDA)", "cuda"), ("CPU", "cpu")],
            value="auto",
        )
        self.advanced = Container(
            widgets=[
                self.steps,
                self.batch_size,
                self.patch_size,
                self.learning_rate,
                self.val_fraction,
                self.depth_box,
                self.width_box,
                self.device,
            ],
            labels=True,
        )

        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop (keep the best)", enabled=False)
        self.status = Label(value="")
        self.plot = LinePlot("training", "epoch", "loss / metric")
        self.plot.label = ""
        self.info = TextEdit(label="model", value="")
        self.info.read_only = True

        self.extend(
            [
                self.source,
                self.image,
                self.labels_layer,
                self.region,
                self.add_pair,
                self.remove_pair,
                self.pair_list,
                self.folder,
                self.labels_folder,
                self.object_size,
                self.model,
                self.task,
                self.dims,
                self.annotation_mode,
                self.start_from,
                self.checkpoint,
                self.epochs,
                self.minutes,
                self.model_name,
                self.replace,
                self.show_advanced,
                self.advanced,
                self.train_button,
                self.stop_button,
                self.status,
                self.plot,
                self.info,
            ]
        )

        self.source.changed.connect(self._update_visibility)
        self.model.changed.connect(self._on_model_changed)
        self.start_from.changed.connect(self._update_visibility)
        self.show_advanced.changed.connect(self._update_visibility)
        self.image.changed.connect(self._suggest_name)
        self.folder.changed.connect(self._suggest_name)
        self.labels_layer.changed.connect(self._update_object_size)
        self.dims.changed.connect(self._update_object_size)
        self.model_name.changed.connect(self._on_name_edited)
        self.add_pair.changed.connect(self._add_pair)
        self.remove_pair.changed.connect(self._remove_pairs)
        self.train_button.changed.connect(self._clicked)
        self.stop_button.changed.connect(self.stop)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._layers_changed)
        self._layers_changed()
        self._suggest_name()
        self._update_visibility()

    # ---- choices ------------------------------------------------------------------------------
    def _layer_choices(self, kind):
        def choices(_widget=None) -> list:
            return [layer.name for layer in self._viewer.layers if isinstance(layer, kind)]

        return choices

    def _region_choices(self, _widget=None) -> list:
        return [NONE, *(layer.name for layer in self._viewer.layers if isinstance(layer, Shapes))]

    def _pair_choices(self, _widget=None) -> list:
        out = []
        for i, p in enumerate(self._pairs):
            text = f"{p['image']} + {p['labels']}"
            if p.get("region"):
                text += f" (complete in {p['region']})"
            out.append((text, i))
        return out

    def _start_choices(self, _widget=None) -> list:
        from .cnn import user_model_choices

        if self.model.value == "maskrcnn":
            shipped = list(MASKRCNN_STARTS)
            family = "maskrcnn"
        else:
            shipped = [("shipped nuclei U-Net", "nuclei")]
            family = "unet"
        return [
            *shipped,
            *user_model_choices(family),
            ("checkpoint file...", FILE),
            ("scratch (a new network)", SCRATCH),
        ]

    def _layers_changed(self, *_args) -> None:
        self.reset_choices()
        self._update_object_size()

    def _on_model_changed(self, *_args) -> None:
        self.start_from.reset_choices()
        self._update_visibility()

    def _update_visibility(self, *_args) -> None:
        layers = self.source.value == "layers"
        for w in (self.image, self.labels_layer, self.region, self.add_pair, self.remove_pair):
            w.visible = layers
        self.pair_list.visible = layers
        self.folder.visible = self.labels_folder.visible = not layers
        unet = self.model.value == "unet"
        self.task.visible = self.dims.visible = unet
        self.checkpoint.visible = self.start_from.value == FILE
        self.advanced.visible = bool(self.show_advanced.value)

    # ---- pairs --------------------------------------------------------------------------------
    def _add_pair(self, *_args) -> None:
        if self.image.value is None or self.labels_layer.value is None:
            self._error("add pair: choose an Image layer and a Labels layer first")
            return
        region = self.region.value if self.region.value not in (None, NONE) else None
        pair = {"image": self.image.value, "labels": self.labels_layer.value, "region": region}
        if pair not in self._pairs:
            self._pairs.append(pair)
        self.pair_list.reset_choices()
        self._update_object_size()

    def _remove_pairs(self, *_args) -> None:
        chosen = set(self.pair_list.value or [])
        self._pairs = [p for i, p in enumerate(self._pairs) if i not in chosen]
        self.pair_list.reset_choices()
        self._update_object_size()

    def add_pair_of(self, image: str, labels: str, region: str | None = None) -> None:
        """Add an (image, labels[, region]) pair by layer names (scripts, tests)."""
        self.image.value = image
        self.labels_layer.value = labels
        self.region.value = region or NONE
        self._add_pair()

    def _selected_pairs(self) -> list[dict[str, str | None]]:
        if self._pairs:
            return list(self._pairs)
        if self.image.value is None or self.labels_layer.value is None:
            return []
        region = self.region.value if self.region.value not in (None, NONE) else None
        return [{"image": self.image.value, "labels": self.labels_layer.value, "region": region}]

    def _layer(self, name: str, kind) -> Any:
        try:
            layer = self._viewer.layers[name]
        except KeyError:
            raise ValueError(f"the layer {name!r} is no longer in the viewer") from None
        if not isinstance(layer, kind):
            raise ValueError(f"the layer {name!r} is not a {kind.__name__} layer")
        return layer

    # ---- object size and name -----------------------------------------------------------------
    def _update_object_size(self, *_args) -> None:
        from ..algorithms import targets as tg

        pairs = self._selected_pairs() if self.source.value == "layers" else []
        sizes = []
        try:
            for p in pairs[:8]:
                lab = _level0(self._layer(p["labels"], Labels))
                lab = np.asarray(lab)
                if lab.dtype.kind not in "iub":
                    self.object_size.value = "labels are not integers"
                    return
                ndim = self._ndim_of(p)
                if lab.ndim <= ndim:
                    sizes.append(tg.median_diameter(lab))
                else:
                    planes = lab.reshape((-1, *lab.shape[lab.ndim - ndim :]))
                    labelled = [k for k in range(len(planes)) if planes[k].any()]
                    for k in labelled[:: max(1, len(labelled) // 5)][:5]:
                        sizes.append(tg.median_diameter(planes[k]))
        except ValueError as err:
            self.object_size.value = str(err)
            return
        sizes = [s for s in sizes if s > 0]
        self.measured_diameter = float(np.median(sizes)) if sizes else None
        self.object_size.value = (
            f"median diameter {self.measured_diameter:.1f} px (from the labels)"
            if sizes
            else "- (no labelled object yet)"
        )

    def _ndim_of(self, pair: dict) -> int:
        if self.model.value == "maskrcnn":
            return 2
        if self.dims.value in (2, 3):
            return int(self.dims.value)
        from ..algorithms.image import stack_mode

        layer = self._layer(pair["labels"], Labels)
        if layer.ndim < 3:
            return 2
        labels = getattr(layer, "axis_labels", None)
        return int(stack_mode(tuple(layer.data.shape), axis_labels=labels)[0])

    def _suggest_name(self, *_args) -> None:
        if self._name_edited:
            return
        from ..models.weights import user_models_dir

        pairs = self._selected_pairs()
        folder = _chosen(self.folder)
        stem = pairs[0]["image"] if pairs else (folder.name if folder else "model")
        self._setting_name = True
        try:
            self.model_name.value = default_model_name(stem, user_models_dir())
        finally:
            self._setting_name = False

    def _on_name_edited(self, *_args) -> None:
        if not self._setting_name:
            self._name_edited = True

    # ---- training -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _clicked(self, *_args) -> None:
        self.train()

    def _error(self, message: str) -> None:
        self.status.value = f"error: {message}"
        show_error(f"Train: {message}")

    def _read_layers(self) -> tuple[list[tuple], list[str], list, int]:
        """The pairs' data (copies: the layers may change or go during training), on this thread."""
        from ..models import training

        pairs = self._selected_pairs()
        if not pairs:
            raise ValueError("no data: choose an Image and a Labels layer (or add pairs)")
        data, names, regions = [], [], []
        ndims = {self._ndim_of(p) for p in pairs}
        if len(ndims) > 1:
            raise ValueError("the pairs mix 2D and 3D; choose the dimensions")
        ndim = ndims.pop()
        for p in pairs:
            img_layer = self._layer(p["image"], Image)
            lab_layer = self._layer(p["labels"], Labels)
            img = np.array(_level0(img_layer), copy=True)
            lab = np.array(_level0(lab_layer), copy=True)
            if lab.dtype.kind not in "iub":
                raise ValueError(
                    f"the labels {lab_layer.name!r} are not integers ({lab.dtype}); use a Labels "
                    f"layer of object IDs or class ids"
                )
            if (
                img_layer.rgb
                and img.shape[:-1] != lab.shape
                or (not img_layer.rgb and img.shape != lab.shape)
            ):
                raise ValueError(
                    f"image {img_layer.name!r} {tuple(img.shape)} and labels {lab_layer.name!r} "
                    f"{tuple(lab.shape)} have different shapes"
                )
            region = None
            if p.get("region"):
                shapes = self._layer(p["region"], Shapes)
                if len(shapes.data):
                    region = np.asarray(shapes.to_masks(mask_shape=lab.shape)).any(axis=0)
                else:
                    region = np.zeros(lab.shape, bool)
            data.append((img, lab))
            names.append(img_layer.name)
            regions.append(region)
        # the engine's own checks (shapes, empty labels, sizes), here: errors before any thread
        training.check_pairs(
            data,
            ndim=ndim,
            task=self.task.value if self.model.value == "unet" else "instance",
            names=names,
            regions=regions if any(r is not None for r in regions) else None,
        )
        return data, names, regions, ndim

    def train_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`napari_segkit.models.training.train` (no data)."""
        start = self.start_from.value
        if start == SCRATCH:
            start = None
        elif start == FILE:
            path = _chosen(self.checkpoint)
            if path is None or not path.is_file():
                raise ValueError("start from a checkpoint file: choose the file")
            start = str(path)
        kw: dict[str, Any] = {
            "model": self.model.value,
            "task": self.task.value if self.model.value == "unet" else "instance",
            "start_from": start,
            "epochs": int(self.epochs.value),
            "steps_per_epoch": int(self.steps.value),
            "batch_size": int(self.batch_size.value),
            "patch_size": int(self.patch_size.value) or None,
            "learning_rate": float(self.learning_rate.value) or None,
            "val_fraction": float(self.val_fraction.value),
            "annotation": self.annotation_mode.value,
            "device": self.device.value,
            "max_seconds": float(self.minutes.value) * 60 or None,
        }
        arch = {k: int(w.value) for k, w in (("depth", self.depth_box), ("width", self.width_box))}
        arch = {k: v for k, v in arch.items() if v}
        if arch and self.model.value == "unet":
            kw["architecture"] = arch
        return kw

    def _target(self) -> Path:
        from ..models.weights import user_models_dir

        name = str(self.model_name.value).strip()
        if not name:
            raise ValueError("give the model a name")
        if re.search(r"[\\/:*?\"<>|]", name) or name.startswith("."):
            raise ValueError(f"the name {name!r} cannot be a file name; use letters, digits, _ -")
        path = user_models_dir(create=True) / f"{name}.safetensors"
        if path.exists() and not self.replace.value:
            raise ValueError(
                f"a model named {name!r} exists ({path}); choose another name or tick "
                f"'replace a model of that name'"
            )
        return path

    def train(self, *, blocking: bool = False):
        """Start training (a worker thread; ``blocking=True`` runs here and returns the result)."""
        if self.running:
            show_info("Train: already training; press Stop to end it")
            return None
        try:
            kwargs = self.train_kwargs()
            target = self._target()
            if self.source.value == "layers":
                data, names, regions, ndim = self._read_layers()
                load = None
            else:
                folder = _chosen(self.folder)
                if folder is None or not folder.is_dir():
                    raise ValueError("choose the folder of images and labels")
                labels = _chosen(self.labels_folder)
                load = ([folder], [labels] if labels is not None else None)
                data, names, regions, ndim = None, None, None, None
            from ..models.devices import hide_triton, import_torch, resolve_device

            hide_triton()
            import_torch()  # on the GUI thread: a first import in a worker can crash
            resolve_device(kwargs["device"])  # no CUDA: said now
        except (ValueError, OSError) as err:
            self._error(" ".join(str(err).split()))
            return None

        self._stop.clear()
        self._new_net = kwargs["start_from"] is None
        self.history = []
        self.plot.clear()
        self.info.value = ""
        self.model_path = target
        self._t0 = time.perf_counter()
        emitter = _Emitter()
        emitter.progressed.connect(self._on_progress)
        emitter.epoch.connect(self._on_epoch)
        self._emitter = emitter

        def work():
            from .. import io
            from ..models import training

            d, n, r, nd = data, names, regions, ndim
            if load is not None:
                found = io.find_training_pairs(*load)
                d = [(io.read_image(i).data, io.read_image(lab).data) for i, lab in found]
                d = [(np.asarray(i), np.asarray(lab)) for i, lab in d]
                n = [i.name for i, _ in found]
                r = None
                nd = int(self.dims.value) if self.dims.value in (2, 3) else 2
            return training.train(
                d,
                ndim=nd,
                names=n,
                regions=r if r is not None and any(x is not None for x in r) else None,
                checkpoint=target,
                progress=lambda done, total: emitter.progressed.emit(done, total),
                on_epoch=lambda entry: emitter.epoch.emit(entry),
                stop=self._stop,
                **kwargs,
            )

        if blocking:
            try:
                result = work()
            except (ValueError, MemoryError, RuntimeError, OSError, FloatingPointError) as err:
                self._fail(err)
                return None
            finally:
                self._finished()
            self._done(result)
            return result

        desc = f"Training {target.stem}"
        self._pbar = napari_progress(total=kwargs["epochs"] * kwargs["steps_per_epoch"], desc=desc)
        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._done)
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        self.train_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"training {target.stem}..."
        worker.start()
        return worker

    def stop(self, *_args) -> None:
        """End the training after the current step; the best model so far stays saved."""
        if self.running:
            self._stop.set()
            self.status.value = "stopping (the best model is kept)..."

    def _on_progress(self, done: int, total: int) -> None:
        if self._pbar is not None:
            if self._pbar.total != total:
                self._pbar.total = total
            self._pbar.update(done - self._pbar.n)
        if done and total:
            left = (time.perf_counter() - self._t0) / done * (total - done)
            self._left = f"about {_duration(left)} left"

    _left = ""

    def _on_epoch(self, entry: dict) -> None:
        self.history.append(entry)
        e = entry["epoch"]
        self.plot.append_point("training loss", e, entry["loss"])
        if entry.get("val_loss") is not None:
            self.plot.append_point("validation loss", e, entry["val_loss"])
        if entry.get("metric") is not None:
            self.plot.append_point(f"validation {entry['metric_name']}", e, entry["metric"])
        best = entry.get("best_metric")
        self.status.value = (
            f"epoch {e}/{entry['epochs']}: loss {entry['loss']:.3g}, {entry['metric_name']} "
            f"{_fmt(entry.get('metric'))} (best {_fmt(best)} at epoch {entry.get('best_epoch')})"
            + (f"; {self._left}" if self._left and e < entry["epochs"] else "")
        )
        if entry.get("best"):
            self._show_metadata()

    def _show_metadata(self) -> None:
        from ..models.checkpoints import read_metadata

        if self.model_path is None or not self.model_path.is_file():
            return
        try:
            self.info.value = describe_model(read_metadata(self.model_path), self.model_path)
        except ValueError as err:
            self.info.value = f"cannot read {self.model_path}: {err}"

    def _done(self, result) -> None:
        from .cnn import models_changed

        self.result = result
        path = Path(result.checkpoint)
        if self._new_net and result.best_epoch == 0:
            path.unlink(missing_ok=True)  # random weights are no model to keep
            self.status.value = "stopped before the first epoch ended: no model saved"
            show_info(f"Train: {self.status.value}")
            models_changed()
            return
        self._show_metadata()
        models_changed()  # the CNN / Mask R-CNN widgets list it at once
        how = "stopped" if result.stopped else "done"
        best = _fmt(result.best_metric)
        self.status.value = (
            f"{how}: {path.stem} saved, {result.metric_name} {best} (epoch {result.best_epoch}"
            + (
                f"; before training {_fmt(result.initial_metric)})"
                if result.initial_metric
                else ")"
            )
        )
        show_info(f"Train: {self.status.value}")

    def _fail(self, err: BaseException) -> None:
        text = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, MemoryError) and "batch" not in text:
            text = f"out of memory ({text}); try a smaller batch size or patch size"
        if self.model_path is not None and self.model_path.is_file():
            from .cnn import models_changed

            text += f" (the best model so far is kept in {self.model_path.name})"
            self._show_metadata()
            models_changed()
        self._error(text)

    def _finished(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.train_button.enabled = True
        self.stop_button.enabled = False
        self._name_edited = False
        self._suggest_name()


def _chosen(edit: FileEdit) -> Path | None:
    """The path of a FileEdit, None if empty."""
    text = str(edit.value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _level0(layer) -> Any:
    """The full-resolution data of a layer (the first level of a multiscale one)."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data
