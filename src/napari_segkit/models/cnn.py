"""CNN segmentation: one entry point for U-Nets and torchvision's FCN, DeepLabV3 and LR-ASPP.

:func:`segment_cnn` gives three kinds of output from any of these networks:

- ``"semantic"``: a class per pixel (0 the background);
- ``"instance"``: an ID per object (an instance U-Net's seeded watershed, or the connected regions
  of the *thing* classes of a semantic network);
- ``"panoptic"``: both in one label image, ``id = class_id * label_divisor + instance``
  (:mod:`napari_segkit.algorithms.panoptic`): "stuff" pixels carry ``class_id * label_divisor``,
  every "thing" object its own id.

Models: ``"nuclei"`` (the shipped nuclei U-Nets: the 2D one plane by plane, the 3D one for
z-stacks), ``"nuclei_2d"``/``"nuclei_3d"`` explicitly, torchvision's semantic models by name (their
COCO/VOC weights come from the torch hub cache; see :mod:`napari_segkit.models.weights`), a user
model's name, or a checkpoint file. torch is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..algorithms import panoptic
from ..algorithms.image import ProgressCallback
from ..params import DEVICE, HALF, MethodSpec, Param, checked, register

#: What the widget offers: the shipped nuclei U-Nets first, then torchvision's semantic models.
MODEL_CHOICES = [
    ("nuclei U-Net (2D planes, 3D for z-stacks)", "nuclei"),
    ("nuclei U-Net 2D", "nuclei_2d"),
    ("nuclei U-Net 3D", "nuclei_3d"),
    ("FCN ResNet-50 (VOC classes)", "fcn_resnet50"),
    ("FCN ResNet-101 (VOC classes)", "fcn_resnet101"),
    ("DeepLabV3 ResNet-50 (VOC classes)", "deeplabv3_resnet50"),
    ("DeepLabV3 ResNet-101 (VOC classes)", "deeplabv3_resnet101"),
    ("DeepLabV3 MobileNetV3 (VOC classes)", "deeplabv3_mobilenet_v3_large"),
    ("LR-ASPP MobileNetV3 (VOC classes)", "lraspp_mobilenet_v3_large"),
]
#: The shipped U-Net names.
NUCLEI = ("nuclei", "nuclei_2d", "nuclei_3d")
OUTPUTS = ("instance", "semantic", "panoptic")


@dataclass
class CNNResult:
    """What :func:`segment_cnn` returns."""

    labels: np.ndarray
    output: str
    class_names: list[str]
    table: dict[str, Any] | None = None
    probabilities: np.ndarray | None = None
    probability_names: list[str] = field(default_factory=list)
    label_divisor: int | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def _unet_source(model: str, spatial_ndim: int) -> str | None:
    """The U-Net to load for a shipped name, or None if ``model`` is not one."""
    if model == "nuclei":
        return "nuclei_3d" if spatial_ndim == 3 else "nuclei"
    if model == "nuclei_2d":
        return "nuclei"
    if model == "nuclei_3d":
        return "nuclei_3d"
    return None


def _parse_things(text: str | None, class_names: list[str]) -> list[int]:
    """Thing classes from text (ids or names); empty: every class but the background."""
    if not text or not str(text).strip():
        return list(range(1, len(class_names)))
    from ..algorithms.instances import parse_classes

    return parse_classes(str(text), class_names) or []


def _divisor(n_objects: int) -> int:
    """The smallest power of ten >= 1000 that holds ``n_objects`` instances of one class."""
    return max(1000, 10 ** math.ceil(math.log10(n_objects + 1)))


#: The one declaration of the CNN method's parameters (function, widget, CLI, docs).
SPEC = register(
    MethodSpec(
        name="cnn",
        title="CNN segmentation",
        function="napari_segkit.models.cnn:segment_cnn",
        description="U-Net, FCN, DeepLabV3 or LR-ASPP: semantic, instance or panoptic labels.",
        uses_spacing=True,
        params=(
            Param(
                "model",
                str,
                "nuclei",
                "'nuclei' (shipped U-Nets), a torchvision semantic model (fcn_resnet50, "
                "deeplabv3_resnet50, lraspp_mobilenet_v3_large, ...), a user model's name or a "
                "checkpoint file.",
                widget="model",
                also=(os.PathLike,),
            ),
            Param(
                "output",
                str,
                "instance",
                "'instance': an ID per object; 'semantic': a class per pixel; 'panoptic': both "
                "(id = class * divisor + instance).",
                choices=(
                    ("instance (an ID per object)", "instance"),
                    ("semantic (a class per pixel)", "semantic"),
                    ("panoptic (class and ID)", "panoptic"),
                ),
                cli="--as",
            ),
            Param(
                "diameter",
                float,
                None,
                "Typical object diameter in pixels; auto: estimated by a first pass of the model "
                "(U-Nets trained at a known object size).",
                label="object diameter (px)",
                optional=True,
                min=2.0,
                max=2000.0,
                step=1.0,
            ),
            Param(
                "thing_classes",
                str,
                None,
                "Classes whose objects get their own IDs (ids or names, comma-separated); empty: "
                "every class but the background.",
                optional=True,
                none_label="all",
                when=lambda v: v.get("output") in ("instance", "panoptic"),
            ),
            DEVICE,
            HALF,
            Param(
                "tile_size",
                int,
                1024,
                "Images larger than this are cut into overlapping tiles, blended without seams "
                "(as few as cover the image, shrunk to overlap no more than needed).",
                min=64,
                max=8192,
                step=64,
            ),
            Param(
                "tile_overlap",
                int,
                64,
                "Overlap of the tiles (pixels).",
                min=0,
                max=1024,
                step=8,
            ),
            Param("batch_size", int, 4, "Tiles or planes per forward pass.", min=1, max=256),
            Param(
                "show_probabilities",
                bool,
                False,
                "Also add the per-class probabilities as an Image layer.",
                label="show probabilities",
                group="output",
            ),
        ),
    )
)


@checked(SPEC)
def segment_cnn(
    image: Any,
    *,
    model: str | os.PathLike = "nuclei",
    output: str = "instance",
    diameter: float | None = None,
    thing_classes: str | None = None,
    device: str = "auto",
    half: bool = True,
    tile_size: int = 1024,
    tile_overlap: int = 64,
    batch_size: int = 4,
    spatial_ndim: int = 2,
    spacing: Sequence[float] | None = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    progress: ProgressCallback | None = None,
    return_probabilities: bool = False,
) -> CNNResult:
    """Segment an image with a CNN: semantic, instance or panoptic labels.

    Parameters
    ----------
    image : array-like
        Grey, RGB or multichannel; 2D, a stack of planes, or volumes; numpy or dask; any real dtype.
    model : str or path
        See the module docstring.
    output : {'instance', 'semantic', 'panoptic'}
        What to return; see the module docstring.
    diameter : float, optional
        Typical object diameter (pixels) for U-Nets trained at a known object size; ``None``
        estimates it with a first pass of the model.
    thing_classes : str, optional
        Instance/panoptic output of a semantic model: the classes whose connected regions become
        objects (ids or names); ``None``: all but the background.
    device, half, tile_size, tile_overlap, batch_size
        See :func:`napari_segkit.models.unet.predict_unet`.
    spatial_ndim : {2, 3}
        2: plane by plane (the 2D U-Net). 3: a z-stack, volume by volume (``"nuclei"`` then uses
        the 3D U-Net).
    spacing : sequence of float, optional
        Voxel size of a z-stack ``(z, y, x)`` (napari's layer scale): U-Nets see the volume
        resampled to the voxels they were trained on. See
        :func:`napari_segkit.models.unet.predict_unet`.
    rgb, channel_axis, channel
        How to read the image's channels.
    progress : callable, optional
        ``progress(done, total)``; may raise ``Cancelled`` to stop.
    return_probabilities : bool
        Also return the per-class (or background/interior/boundary/distance) maps.

    Returns
    -------
    CNNResult
        ``labels`` (int32), ``class_names``, a per-object or per-class ``table``, optional
        ``probabilities``, the ``label_divisor`` of panoptic output and ``measured`` values (the
        automatic diameter).

    Raises
    ------
    ValueError
        Bad parameters or image; a missing shipped model file.
    napari_segkit.models.weights.WeightsUnavailableError
        torchvision weights that are not in the torch hub cache (the message says what to do).
    """
    from . import semantic as sem
    from . import unet

    source = _unet_source(str(model), spatial_ndim) or model
    inputs = dict(
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        device=device,
        half=half,
        spatial_ndim=spatial_ndim,
        rgb=rgb,
        channel_axis=channel_axis,
        channel=channel,
        progress=progress,
        return_probabilities=return_probabilities,
    )
    loaded = sem.load_semantic(source, device)
    is_unet = isinstance(loaded, unet.LoadedUNet)
    measured: dict[str, Any] = {}
    if is_unet:
        task = loaded.metadata.get("task", "instance")
        want = "semantic" if output == "semantic" else "instance"
        res = unet.predict_unet(
            image, loaded, output=want, diameter=diameter, spacing=spacing, **inputs
        )
        if res.diameter is not None and diameter is None:
            measured["diameter"] = round(float(res.diameter), 1)
        class_names = list(res.class_names)
        probs, prob_names = res.probabilities, list(res.probability_names)
        messages = list(res.messages)
        if output == "semantic":
            return CNNResult(
                res.labels,
                output,
                class_names,
                res.table,
                probs,
                prob_names,
                None,
                measured,
                messages,
            )
        if task == "instance":
            instances = res.labels
            classes = (instances > 0).astype(np.int32)
            names = class_names if len(class_names) == 2 else ["background", "object"]
            if output == "instance":
                return CNNResult(
                    instances,
                    output,
                    names,
                    res.table,
                    probs,
                    prob_names,
                    None,
                    measured,
                    messages,
                )
            return _panoptic(classes, instances, [1], names, probs, prob_names, measured, messages)
        # a semantic U-Net asked for objects: connected regions of its thing classes
        classes = np.asarray(res.labels)
    else:
        res = sem.predict_semantic(image, loaded, **inputs)
        class_names = list(res.class_names)
        probs, prob_names = res.probabilities, list(class_names)
        messages = list(res.messages)
        classes = np.asarray(res.labels)
        if output == "semantic":
            return CNNResult(classes, output, class_names, res.table, probs, prob_names)
    things = _parse_things(thing_classes, class_names)
    instances = panoptic.things_from_classes(classes, things)
    if output == "instance":
        from ..algorithms.tables import object_table

        table = object_table(instances)
        inside = instances.reshape(-1) > 0
        first = np.zeros(int(instances.max(initial=0)) + 1, np.int64)
        first[instances.reshape(-1)[inside]] = classes.reshape(-1)[inside]
        table["class_id"] = first[table["label"]]
        table["class_name"] = np.array([class_names[c] for c in table["class_id"]], dtype=object)
        return CNNResult(
            instances.astype(np.int32),
            output,
            class_names,
            table,
            probs,
            prob_names,
            None,
            measured,
            messages,
        )
    return _panoptic(classes, instances, things, class_names, probs, prob_names, measured, messages)


def _panoptic(
    classes: np.ndarray,
    instances: np.ndarray,
    things: list[int],
    class_names: list[str],
    probs: np.ndarray | None,
    prob_names: list[str],
    measured: dict,
    messages: list[str],
) -> CNNResult:
    """Panoptic labels and table, with a label divisor that holds every class's objects."""
    counts = [len(np.unique(instances[(classes == c) & (instances > 0)])) for c in things] or [0]
    divisor = _divisor(max(counts))
    labels = panoptic.encode(classes, instances, things, label_divisor=divisor)
    table = panoptic.table(labels, class_names, label_divisor=divisor)
    return CNNResult(
        labels, "panoptic", class_names, table, probs, prob_names, divisor, measured, messages
    )
