"""Mask R-CNN instance segmentation: architectures, loading and the fast inference path.

Every torch/torchvision import is inside a function, so that importing napari-segkit (and starting
napari) never loads torch.

Models (``source`` below):

- ``"nuclei"``: the repo's small nuclei model (a ResNet-10 FPN Mask R-CNN trained on generated
  fluorescence nuclei by ``scripts/train_nuclei_maskrcnn.py``), shipped as a safetensors file.
- ``"maskrcnn_resnet50_fpn"`` and ``"maskrcnn_resnet50_fpn_v2"``: torchvision's COCO models. Their
  weights are read from the torch hub cache;
  :func:`napari_segkit.models.weights.download_weights` (or ``segkit weights download``) fetches
  them once on a machine that is online.
- a path to a checkpoint: ``.safetensors`` with segkit metadata (see :func:`save_checkpoint`), or a
  ``.pt``/``.pth`` file read with ``torch.load(weights_only=True)`` (never an arbitrary pickle);
  or the name of a user model (:func:`napari_segkit.models.weights.list_user_models`).

What every model shares lives next door: :mod:`.devices` (device, precision),
:mod:`.weights` (shipped files, torch hub cache, offline messages, user models),
:mod:`.checkpoints` (reading and writing checkpoint files), :mod:`.paste` (mask pasting) and
:mod:`.normalize` (input scaling).

Inference (:func:`predict_instances`) rescales each plane so that its objects have the size the
model was trained at (its checkpoint's ``object_diameter`` over the image's ``diameter``, given or
estimated by :func:`estimate_diameter`), then runs tile by tile, batched; masks stay on the device
and are pasted, at the image's full resolution, all at once into an int32 label image, the only
large array that comes back to the CPU. A z-stack (``spatial_ndim=3``) keeps each plane's evidence
(mask probability x score) instead and becomes 3D objects
(:func:`napari_segkit.algorithms.stitch.objects_from_plane_maps`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..algorithms import instances as inst
from ..algorithms.image import (
    ProgressCallback,
    check_image,
    check_memory,
    check_spacing,
    iter_blocks,
    report,
    to_channels_last,
)
from ..algorithms.size import central_crop, consistent_diameter
from . import checkpoints as ckpt
from .devices import AUTOTUNE_TILES, configure_cudnn, resolve_device
from .devices import use_half as half_on_device
from .normalize import normalization_range
from .paste import paste_masks, paste_scores
from .weights import SHIPPED_MODELS as _SHIPPED
from .weights import (
    WeightsUnavailableError,  # noqa: F401  (raised by load_model; kept importable from here)
    find_user_model,
    load_cached_state,
    shipped_path,
    torchvision_weights,
)

#: The architectures this module builds.
ARCHITECTURES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet10_fpn_small")
#: Architectures with COCO weights in torchvision.
COCO_ARCHITECTURES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
#: The shipped Mask R-CNN models (name -> file).
SHIPPED_MODELS = _SHIPPED["maskrcnn"]
#: The checkpoints' ``family``.
FAMILY = "maskrcnn"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NORMALIZATION = {
    "percentiles": [1.0, 99.8],  # grey / 16-bit / multichannel: per channel, per plane
    "uint8_rgb": "divide_255",  # 8-bit RGB is scaled to 0..1 as the COCO models expect
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


#: Set to a dict to accumulate device-synchronised seconds per inference stage (benchmarks only;
#: synchronising slows the run down a little).
PROFILE: dict[str, float] | None = None


def _tick(stage: str, t0: float, dev: Any) -> float:
    if PROFILE is None:
        return 0.0
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)
    now = time.perf_counter()
    PROFILE[stage] = PROFILE.get(stage, 0.0) + now - t0
    return now


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to feed it and read its output."""

    module: Any  # torchvision MaskRCNN
    architecture: str
    class_names: list[str]  # index = class id, 0 is the background
    normalization: dict[str, Any]
    source: str
    device: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------------------------
# architectures


def build_architecture(architecture: str, num_classes: int) -> Any:
    """Build an untrained Mask R-CNN (no download: ``weights=None, weights_backbone=None``).

    Parameters
    ----------
    architecture : str
        One of :data:`ARCHITECTURES`.
    num_classes : int
        Number of classes, the background included (2 for "nucleus" alone; 91 for COCO).

    Examples
    --------
    >>> model = build_architecture("maskrcnn_resnet10_fpn_small", 2)  # doctest: +SKIP
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {architecture!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (background + one class); got {num_classes}")
    from torchvision.models import detection

    if architecture == "maskrcnn_resnet50_fpn":
        return detection.maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=int(num_classes)
        )
    if architecture == "maskrcnn_resnet50_fpn_v2":
        return detection.maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=int(num_classes)
        )
    return _small_maskrcnn(int(num_classes))


def _small_maskrcnn(num_classes: int, channels: int = 64) -> Any:
    """A few-MB Mask R-CNN for small objects: ResNet-10 body (strides 4-16), 64-channel FPN."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = ResNet(BasicBlock, [1, 1, 1, 1])
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[64, 128, 256],
        out_channels=channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(
        sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4
    )
    return MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
        min_size=256,
        max_size=4096,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
    )


def _infer_architecture(state: dict[str, Any]) -> str:
    if "backbone.body.layer4.0.conv1.weight" not in state:
        return "maskrcnn_resnet10_fpn_small"
    if "roi_heads.box_head.fc6.weight" in state:
        return "maskrcnn_resnet50_fpn"
    return "maskrcnn_resnet50_fpn_v2"


# --------------------------------------------------------------------------------------------
# COCO weights and the torch hub cache


def _coco_weights(architecture: str) -> Any:
    if architecture not in COCO_ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {COCO_ARCHITECTURES} for COCO weights; "
            f"got {architecture!r}"
        )
    return torchvision_weights(architecture)


# --------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(
    module: Any,
    path: str | os.PathLike,
    *,
    architecture: str,
    class_names: Sequence[str],
    normalization: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    object_diameter: float | None = None,
) -> Path:
    """Save a model as safetensors, with everything needed to rebuild and feed it in the metadata.

    Parameters
    ----------
    module : torch.nn.Module
        The Mask R-CNN.
    path : path
        Destination (``.safetensors``).
    architecture : str
        One of :data:`ARCHITECTURES`.
    class_names : sequence of str
        Name of every class, the background (id 0) included.
    normalization : dict, optional
        Input normalization (``percentiles``, ``mean``, ``std``); :data:`DEFAULT_NORMALIZATION` if
        omitted.
    extra : dict, optional
        Anything else worth keeping (training data, image size statistics, scores): JSON-able.
    half : bool
        Store floating-point tensors as float16 (half the size; loaded back as float32).
    object_diameter : float, optional
        The object diameter in pixels the model was trained at (:func:`predict_instances`
        rescales images to it); ``None`` for a model trained at many sizes (COCO).

    Examples
    --------
    >>> save_checkpoint(model, "nuclei.safetensors", architecture="maskrcnn_resnet10_fpn_small",
    ...                 class_names=["background", "nucleus"])  # doctest: +SKIP
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {architecture!r}")
    state = module.state_dict()
    n = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    if len(class_names) != n:
        raise ValueError(f"class_names has {len(class_names)} names but the model has {n} classes")
    metadata = {
        "family": FAMILY,
        "architecture": architecture,
        "num_classes": n,
        "class_names": [str(c) for c in class_names],
        "normalization": normalization or DEFAULT_NORMALIZATION,
        "object_diameter": None if object_diameter is None else float(object_diameter),
        "extra": extra or {},
    }
    return ckpt.save_checkpoint(state, path, metadata, half=half)


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> LoadedModel:
    """Build the model a checkpoint describes and load its weights.

    Architecture, number of classes, class names and normalization come from the metadata; for a
    plain ``state_dict`` without metadata they are inferred from the tensors (class names become
    ``class 1``, ``class 2``...).

    Raises
    ------
    ValueError
        Naming the file, if it is missing, corrupt, unsafe (a pickle that would run code), or does
        not match the architecture.

    Examples
    --------
    >>> model = load_checkpoint("nuclei.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    state, meta = ckpt.read_checkpoint(path, family=FAMILY)
    if "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError(
            f"checkpoint {path} is not a Mask R-CNN state dict (no roi_heads.box_predictor "
            f"weights); found keys like {sorted(state)[:3]}"
        )
    n = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    architecture = meta.get("architecture") or _infer_architecture(state)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"checkpoint {path}: unknown architecture {architecture!r}")
    if "num_classes" in meta and int(meta["num_classes"]) != n:
        raise ValueError(
            f"checkpoint {path}: metadata says {meta['num_classes']} classes but the weights have {n}"
        )
    names = list(meta.get("class_names") or [])
    if len(names) == n - 1:
        names = ["background", *names]
    if not names:
        names = ["background"] + [f"class {i}" for i in range(1, n)]
    if len(names) != n:
        raise ValueError(f"checkpoint {path}: {len(names)} class names for {n} classes")
    module = build_architecture(architecture, n)
    ckpt.load_state(module, state, path, f"the {architecture} architecture with {n} classes")
    normalization = dict(DEFAULT_NORMALIZATION)
    normalization.update(meta.get("normalization") or {})
    return _ready(
        LoadedModel(module, architecture, [str(s) for s in names], normalization, str(path)),
        device,
        metadata=meta,
    )


def load_coco(architecture: str, device: Any = "cpu", *, download: bool = False) -> LoadedModel:
    """torchvision's COCO Mask R-CNN, from the torch hub cache (or downloaded if ``download``).

    Raises
    ------
    WeightsUnavailableError
        If the weights are not cached and ``download`` is False or the download fails.
    """
    weights = _coco_weights(architecture)
    state = load_cached_state(architecture, download=download)
    names = list(weights.meta["categories"])
    module = build_architecture(architecture, len(names))
    module.load_state_dict(state)
    return _ready(
        LoadedModel(module, architecture, names, dict(DEFAULT_NORMALIZATION), architecture), device
    )


def _ready(model: LoadedModel, device: Any, metadata: dict | None = None) -> LoadedModel:
    import torch

    device = resolve_device(device)
    module = model.module.eval().to(device)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    model.module = module
    model.device = device
    model.metadata = metadata or {}
    return model


_CACHE: dict[tuple, LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _source_key(source: str | os.PathLike) -> tuple:
    if isinstance(source, str) and (source in SHIPPED_MODELS or source in COCO_ARCHITECTURES):
        return (source,)
    path = Path(source).expanduser().resolve()
    try:
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (str(path),)


def load_model(
    source: str | os.PathLike = "nuclei", device: Any = "auto", *, download: bool = False
) -> LoadedModel:
    """Load a model by name or path, cached in memory by (source, device).

    Parameters
    ----------
    source : str or path
        ``"nuclei"`` (shipped), ``"maskrcnn_resnet50_fpn"``, ``"maskrcnn_resnet50_fpn_v2"`` (COCO),
        a checkpoint file, or the name of a Mask R-CNN in the user models folder.
    device : str
        See :func:`resolve_device`.
    download : bool
        Fetch missing COCO weights (needs internet).

    Examples
    --------
    >>> model = load_model("nuclei", "cpu")  # doctest: +SKIP
    >>> model.class_names  # doctest: +SKIP
    ['background', 'nucleus']
    """
    dev = resolve_device(device)
    key = (*_source_key(source), str(dev))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    if isinstance(source, str) and source in SHIPPED_MODELS:
        model = load_checkpoint(shipped_path(FAMILY, source), dev)
        model.source = source
    elif isinstance(source, str) and source in COCO_ARCHITECTURES:
        model = load_coco(source, dev, download=download)
    else:
        user = None
        if isinstance(source, str) and not Path(source).expanduser().exists():
            user = find_user_model(source, FAMILY)
        model = load_checkpoint(user or source, dev)
        if user is not None:
            model.source = source
    with _CACHE_LOCK:
        _CACHE[key] = model
    return model


def clear_model_cache() -> None:
    """Forget every cached model (and free its GPU memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------
# inference


@dataclass
class InstanceResult:
    """What :func:`predict_instances` returns.

    ``labels``: int32, the image's shape without its channel axis; IDs 1..N per plane (or per
    volume) by descending score, offset so that they are unique across a stack (with
    ``link_frames``, an object keeps its ID from frame to frame instead). ``table``: one row per
    object (:func:`napari_segkit.algorithms.instances.features_table` in 2D; 3D objects get
    ``bbox_z0 .. bbox_x1`` and ``centroid_z, centroid_y, centroid_x``). ``empty_labels``: IDs of
    detections left with no pixel (covered by higher-scoring ones); they stay in the table with
    area 0. ``diameter``: the object diameter (pixels of the image's Y/X grid) the image was
    segmented for, given or estimated; ``None`` for a model that records no working size (the
    image is then segmented at its own resolution).
    """

    labels: np.ndarray
    table: dict[str, np.ndarray]
    empty_labels: np.ndarray
    class_names: list[str]
    params: dict[str, Any]
    diameter: float | None = None

    @property
    def n_objects(self) -> int:
        return len(self.table["label"])


def predict_instances(
    image: Any,
    model: str | os.PathLike | LoadedModel = "nuclei",
    *,
    diameter: float | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    max_detections: int | None = None,
    classes: Sequence[int] | str | None = None,
    device: Any = "auto",
    half: bool = True,
    tile_size: int = 1024,
    tile_overlap: int = 64,
    batch_size: int = 4,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    spatial_ndim: int = 2,
    spacing: Sequence[float] | None = None,
    link_frames: bool = False,
    nms_threshold: float = 0.5,
    progress: ProgressCallback | None = None,
) -> InstanceResult:
    """Mask R-CNN instance segmentation: one label ID per detected object.

    Parameters
    ----------
    image : array-like
        Grey, RGB or multichannel; 2D, or a stack: plane by plane (a time-lapse, the planes
        batched on the GPU) or, with ``spatial_ndim=3``, z-stacks made into 3D objects. numpy or
        dask (read one plane at a time). Grey, 16-bit and multichannel images are
        percentile-normalized per plane and made 3-channel.
    model : str, path or LoadedModel
        See :func:`load_model`.
    diameter : float, optional
        Typical object diameter in pixels. The image is rescaled by the model's
        ``object_diameter`` (the size it was trained at; see :func:`object_diameter`) divided by
        this, segmented, and the masks are pasted back at full resolution. ``None`` (auto)
        estimates it from the image (:func:`estimate_diameter`); a model that records no
        ``object_diameter`` (the COCO models) works at the image's own resolution and takes no
        diameter.
    score_threshold : float
        Detections scoring lower are dropped (0..1).
    mask_threshold : float
        A pixel belongs to an instance where its mask probability exceeds this (0..1). In 3D, a
        voxel is foreground where the mask probability x score of its plane's detections exceeds
        0.7 times it.
    max_detections : int, optional
        Cap per tile; ``None`` follows the tile area
        (:func:`~napari_segkit.algorithms.instances.auto_max_detections`: 1024 for 1024 x 1024).
    classes : sequence of int or str, optional
        Keep these class ids only; text such as ``"1, 3"`` or ``"person, cat"`` names class ids
        or class names of the model (see :func:`~napari_segkit.algorithms.instances.parse_classes`).
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    half : bool
        float16 autocast on a CUDA device (ignored on the CPU).
    tile_size, tile_overlap : int
        Planes larger than ``tile_size`` (in the rescaled image the model sees) are cut into tiles
        overlapping by at least ``tile_overlap`` pixels (at least the largest object's diameter at
        the model's scale); each object is kept by the one tile that holds its box centre, so it
        gets one ID and is never duplicated.
    batch_size : int
        Tiles (or planes) per forward pass.
    rgb, channel_axis, channel
        How to read the image's channels (see :func:`napari_segkit.algorithms.image.to_channels_last`);
        ``channel`` picks the channel of an image that has neither 1 nor 3.
    spatial_ndim : {2, 3}
        2: every plane on its own (a time-lapse). 3: the last three axes are a z-stack; the
        planes' detections are merged into 3D objects by a seeded watershed over their stacked
        foreground maps (:func:`napari_segkit.algorithms.stitch.objects_from_plane_maps`).
    spacing : sequence of float, optional
        Pixel size of the ``spatial_ndim`` axes (napari's layer scale), e.g. ``(2.0, 0.5, 0.5)``
        for a z-step 4 times the pixel size: 3D objects are built in these units. ``None``:
        isotropic.
    link_frames : bool
        Relabel a stack's frames (axis 0: time points of planes or of volumes) so that an object
        keeps its ID from frame to frame where it overlaps (:func:`napari_segkit.algorithms.stitch.link_frames`).
    nms_threshold : float
        IoU above which the lower-scoring of two same-class detections is suppressed.
    progress : callable, optional
        ``progress(done, total)`` after each batch; may raise to cancel.

    Returns
    -------
    InstanceResult

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, _ = synthetic_nuclei((256, 256), n_nuclei=30, seed=3)
    >>> res = predict_instances(img, "nuclei", device="cpu")  # doctest: +SKIP
    >>> res.labels.max() == res.n_objects, round(res.diameter)  # doctest: +SKIP
    (True, 17)
    """
    import torch

    for name, value in (
        ("score_threshold", score_threshold),
        ("mask_threshold", mask_threshold),
        ("nms_threshold", nms_threshold),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1; got {value}")
    if max_detections is not None and int(max_detections) < 1:
        raise ValueError(
            f"max_detections must be >= 1 or None (follow the area); got {max_detections}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if spatial_ndim not in (2, 3):
        raise ValueError(f"spatial_ndim must be 2 or 3; got {spatial_ndim!r}")
    if diameter is not None:
        try:
            diameter = float(diameter)
        except (TypeError, ValueError):
            raise ValueError(
                f"diameter must be a number of pixels or None; got {diameter!r}"
            ) from None
        if not math.isfinite(diameter) or diameter <= 0:
            raise ValueError(f"diameter must be a positive number of pixels; got {diameter!r}")
    image = check_image(image)
    chans = _channels(image, rgb, channel_axis, channel)
    lead = tuple(chans.shape[:-3])
    ny, nx = int(chans.shape[-3]), int(chans.shape[-2])
    if spatial_ndim == 3 and not lead:
        raise ValueError(
            f"spatial_ndim=3 needs a z-stack (Z, Y, X); got a single plane of shape {image.shape}"
        )
    spacing = check_spacing(spacing, spatial_ndim)
    if diameter is not None and diameter > max(ny, nx):
        raise ValueError(
            f"diameter={diameter:g} pixels is larger than the image ({ny} x {nx} pixels)"
        )
    check_memory(int(np.prod(lead, dtype=np.int64)) * ny * nx * 4, "the labels")

    if not isinstance(model, LoadedModel):
        model = load_model(model, device)
    dev = model.device
    working = object_diameter(model)
    if diameter is not None and working is None:
        raise ValueError(
            f"diameter: model {model.source!r} records no object_diameter (the object size it "
            f"was trained at), so the image cannot be rescaled for it; leave diameter at auto "
            f"(None) to segment at the image's own resolution"
        )
    planes = list(iter_blocks((*lead, ny, nx), 2))
    run = dict(
        score_threshold=score_threshold,
        mask_threshold=mask_threshold,
        max_detections=max_detections,
        classes=classes,
        half=half,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        nms_threshold=nms_threshold,
    )
    estimated = False
    if diameter is None and working is not None:
        diameter = _estimate(chans, model, spatial_ndim, run)  # never larger than the image
        estimated = True
    scale = 1.0 if diameter is None else working / diameter
    if abs(scale - 1.0) < 0.02:  # not worth resampling
        my, mx = ny, nx
    else:
        my, mx = max(1, round(ny * scale)), max(1, round(nx * scale))
        check_memory(my * mx * chans.shape[-1] * 4, "the rescaled plane")
    sy, sx = my / ny, mx / nx  # the exact factors of the rescaled grid

    plan = inst.tile_plan((my, mx), int(tile_size), int(tile_overlap))
    th, tw = plan[0].y1 - plan[0].y0, plan[0].x1 - plan[0].x0
    cap = int(max_detections) if max_detections is not None else inst.auto_max_detections((th, tw))
    if isinstance(classes, str):
        classes = inst.parse_classes(classes, model.class_names)
    if classes is not None:
        bad = [c for c in classes if not 1 <= int(c) < model.num_classes]
        if bad:
            raise ValueError(
                f"classes {bad} are not class ids of this model (1..{model.num_classes - 1})"
            )
    keep_classes = (
        None if classes is None else torch.tensor(sorted(int(c) for c in classes), device=dev)
    )
    # where the full-resolution masks are pasted: whole planes, or pieces of at most a tile
    if ny * nx <= int(tile_size) ** 2:
        cores = [(0, 0, ny, nx)]
    else:
        cores = [t.core for t in inst.tile_plan((ny, nx), int(tile_size), 0)]

    labels_out = np.zeros((*lead, ny, nx), dtype=np.int32)
    units = [(p, t) for p in range(len(planes)) for t in range(len(plan))]
    total = len(units)
    use_half = half_on_device(dev, half)
    # every batch has the same tile size: autotune where enough of them follow
    configure_cudnn(dev, fixed_size=total >= AUTOTUNE_TILES)
    params = dict(
        model=model.source,
        architecture=model.architecture,
        diameter=None if diameter is None else round(float(diameter), 2),
        diameter_estimated=estimated,
        object_diameter=working,
        scale=round(float(scale), 4),
        score_threshold=float(score_threshold),
        mask_threshold=float(mask_threshold),
        max_detections=cap,
        classes=None if classes is None else [int(c) for c in classes],
        device=str(dev),
        half=use_half,
        tile_size=int(tile_size),
        tile_overlap=int(tile_overlap),
        nms_threshold=float(nms_threshold),
        spatial_ndim=int(spatial_ndim),
        spacing=None if spacing is None else [float(s) for s in spacing],
        link_frames=bool(link_frames),
    )

    norm_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    plane_dets: dict[int, list[dict[str, Any]]] = {p: [] for p in range(len(planes))}
    tiles_left = {p: len(plan) for p in range(len(planes))}
    rows: list[dict[str, np.ndarray]] = []
    empty: list[np.ndarray] = []
    next_id = 0
    to_full = torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy], device=dev, dtype=torch.float32)
    volume = None
    if spatial_ndim == 3:
        volume = _VolumeBuilder(
            lead, (ny, nx), spacing, diameter, 0.7 * float(mask_threshold), float(mask_threshold)
        )

    def plane_data(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if p not in norm_cache:
            norm_cache.clear()  # one plane in memory at a time (the planes come in order)
            data = np.asarray(chans[planes[p]])
            lo, scale_ = normalization_range(data, model.normalization)
            if (my, mx) != (ny, nx):
                data = resize_plane(data, (my, mx))
            norm_cache[p] = (data, lo, scale_)
        return norm_cache[p]

    with model.lock, torch.inference_mode():
        _configure(model.module, score_threshold, nms_threshold, cap)
        report(progress, 0, total)
        for start in range(0, total, int(batch_size)):
            batch = units[start : start + int(batch_size)]
            t_prep = time.perf_counter()
            raws, los, scales = [], [], []
            for p, t in batch:
                data, lo, scale_ = plane_data(p)
                tile = plan[t]
                raws.append(data[tile.y0 : tile.y1, tile.x0 : tile.x1])
                los.append(lo)
                scales.append(scale_)
            _tick("cpu_prep", t_prep, dev)
            dets = _detect(model, raws, np.stack(los), np.stack(scales), use_half)
            t_paste = time.perf_counter()
            finished = []
            for (p, t), d in zip(batch, dets, strict=True):
                tile = plan[t]
                if keep_classes is not None:
                    d = _select(d, torch.isin(d["labels"], keep_classes))
                d["boxes"] = d["boxes"] + torch.tensor(
                    [tile.x0, tile.y0, tile.x0, tile.y0], device=dev, dtype=d["boxes"].dtype
                )
                if len(plan) > 1:
                    centre_x = (d["boxes"][:, 0] + d["boxes"][:, 2]) / 2
                    centre_y = (d["boxes"][:, 1] + d["boxes"][:, 3]) / 2
                    cy0, cx0, cy1, cx1 = tile.core
                    own = (
                        (centre_y >= cy0) & (centre_y < cy1) & (centre_x >= cx0) & (centre_x < cx1)
                    )
                    d = _select(d, own)
                if (my, mx) != (ny, nx):  # back to the full-resolution grid
                    d["boxes"] = d["boxes"] * to_full
                plane_dets[p].append(d)
                tiles_left[p] -= 1
                if tiles_left[p] == 0:
                    finished.append(p)
            ready = []
            for p in finished:
                merged = _concat(plane_dets.pop(p), dev)
                order = torch.argsort(merged["scores"], descending=True, stable=True)
                ready.append((p, _select(merged, order)))
            if ready and volume is not None:
                volume.add(ready, cores, planes, labels_out, rows, model.class_names)
            elif ready:
                # whole planes: IDs 1..N by score, offset to stay unique across the stack
                for _, merged in ready:
                    n = int(merged["scores"].shape[0])
                    merged["ids"] = torch.arange(
                        next_id + 1, next_id + n + 1, device=dev, dtype=torch.int32
                    )
                    merged["first"] = next_id
                    next_id += n
                    if next_id > np.iinfo(np.int32).max:
                        raise ValueError(f"more objects ({next_id}) than int32 labels can hold")
                _paste_planes(
                    ready,
                    cores,
                    (ny, nx),
                    labels_out,
                    planes,
                    float(mask_threshold),
                    rows,
                    empty,
                    model.class_names,
                )
            _tick("paste_table_download", t_paste, dev)
            report(progress, min(start + len(batch), total), total)

    if rows:
        table = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    elif volume is not None:
        table = _volume_table(
            np.zeros((1,) * 3, np.int32), np.zeros((1,) * 3, np.float32), None, 0, None, [""]
        )
        table = {k: v[:0] for k, v in table.items()}
        if len(lead) > 1:
            table = {**{f"axis{k}": np.zeros(0, np.int64) for k in range(len(lead) - 1)}, **table}
    else:
        table = inst.features_table(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            model.class_names,
            np.zeros(0),
            np.zeros(0, np.int64),
            np.zeros((0, 4)),
            index=np.zeros((0, len(lead)), np.int64) if lead else None,
        )
    empty_ids = np.concatenate(empty) if empty else np.zeros(0, np.int64)
    n_frames = lead[0] if lead and (spatial_ndim == 2 or len(lead) > 1) else 1
    if link_frames and n_frames > 1:
        labels_out, table, empty_ids = _link(labels_out, table, empty_ids)
    return InstanceResult(
        labels_out,
        table,
        empty_ids,
        list(model.class_names),
        params,
        None if diameter is None else float(diameter),
    )


def object_diameter(model: LoadedModel) -> float | None:
    """The object diameter (pixels) ``model`` works at: its checkpoint's ``object_diameter``.

    Read from the metadata (``object_diameter``, or ``extra["object_diameter"]``); the first
    shipped nuclei model (trained by ``scripts/train_nuclei_maskrcnn.py`` before the key existed)
    gets :data:`LEGACY_NUCLEI_DIAMETER`. ``None`` for a model that records none (the COCO models,
    a plain ``state_dict``).

    Examples
    --------
    >>> object_diameter(load_model("nuclei", "cpu"))  # doctest: +SKIP
    16.0
    """
    meta = model.metadata or {}
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    for value in (meta.get("object_diameter"), extra.get("object_diameter")):
        if value is not None:
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value) and value > 0:
                return value
    if (
        extra.get("trained_by") == "scripts/train_nuclei_maskrcnn.py"
        and model.architecture == "maskrcnn_resnet10_fpn_small"
    ):
        return LEGACY_NUCLEI_DIAMETER
    return None


#: The working object diameter of the first shipped nuclei model, whose checkpoint predates the
#: ``object_diameter`` key: the median over training images of each image's median nucleus
#: equivalent diameter ``2 sqrt(area / pi)``, measured on 150 images of its training generator
#: (``scripts/train_nuclei_maskrcnn.py`` of that time: semi-axes uniform in (r_lo, r_hi),
#: r_lo in 3.5..8 px, r_hi = r_lo + 2..7 px): 16.3 (all objects pooled: 14.3; the semi-axes'
#: expectation 2 sqrt(ab): 15.9).
LEGACY_NUCLEI_DIAMETER = 16.0


def estimate_diameter(
    image: Any,
    model: str | os.PathLike | LoadedModel = "nuclei",
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    spatial_ndim: int = 2,
    device: Any = "auto",
    refine: int = 3,
    max_planes: int = 3,
    crop: int = 512,
    **kwargs: Any,
) -> float:
    """Estimate the typical object diameter (pixels) of an image for :func:`predict_instances`.

    A classical first guess (:func:`napari_segkit.algorithms.size.estimate_diameter`: foreground,
    distance transform), then at most ``refine`` model passes: the model runs on a central crop of
    a few planes rescaled for the current guess and measures the median equivalent diameter
    ``2 sqrt(area / pi)`` of its detections (those away from the crop's border, at least 5), until
    the size it finds agrees with the size it was shown at
    (:func:`napari_segkit.algorithms.size.consistent_diameter`, the search the U-Nets use too).
    This is what ``predict_instances(diameter=None)`` does.

    Parameters
    ----------
    image : array-like
        As for :func:`predict_instances` (``rgb``, ``channel_axis`` and ``channel`` too).
    model : str, path or LoadedModel
        A model with an ``object_diameter`` (see :func:`object_diameter`).
    spatial_ndim : {2, 3}
        With 3, the planes sampled come from the middle half of the first z-stack.
    device : str
        Where the model runs (see :func:`load_model`).
    refine : int
        At most this many model passes after the classical guess (0: the classical guess alone).
    max_planes : int
        Planes sampled from a stack (evenly spaced).
    crop : int
        Side of the central crop, in pixels of the rescaled image the model sees.
    **kwargs
        Passed to :func:`predict_instances` (thresholds, tiles, batch size).

    Returns
    -------
    float
        The diameter in pixels; the model's ``object_diameter`` when the image holds no
        foreground to measure.

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, _ = synthetic_nuclei((256, 256), n_nuclei=40, radius=(9, 11), seed=1)
    >>> 16 < estimate_diameter(img, "nuclei", device="cpu") < 24  # doctest: +SKIP
    True
    """
    if spatial_ndim not in (2, 3):
        raise ValueError(f"spatial_ndim must be 2 or 3; got {spatial_ndim!r}")
    unknown = sorted(set(kwargs) - set(_ESTIMATE_KEYS))
    if unknown:
        raise ValueError(f"estimate_diameter: unknown keyword(s) {', '.join(unknown)}")
    chans = _channels(check_image(image), rgb, channel_axis, channel)
    if not isinstance(model, LoadedModel):
        model = load_model(model, device)
    return _estimate(chans, model, spatial_ndim, kwargs, refine, max_planes, crop)


def _estimate(
    chans: Any,
    model: LoadedModel,
    spatial_ndim: int,
    run: dict[str, Any],
    refine: int = 3,
    max_planes: int = 3,
    crop: int = 512,
) -> float:
    """:func:`estimate_diameter` of a channels-last image (``(..., Y, X, C)``, C 1 or 3)."""
    working = object_diameter(model)
    if working is None:
        raise ValueError(f"model {model.source!r} records no object_diameter to estimate for")
    if int(refine) < 0:
        raise ValueError(f"refine must be >= 0; got {refine}")
    lead = tuple(chans.shape[:-3])
    ny, nx = int(chans.shape[-3]), int(chans.shape[-2])
    all_planes = list(np.ndindex(*lead)) if lead else [()]
    candidates = all_planes
    if spatial_ndim == 3 and lead:
        nz = lead[-1]
        first = all_planes[:nz]
        candidates = first[nz // 4 : max(nz // 4 + 1, 3 * nz // 4)] or first
    k = max(1, min(int(max_planes), len(candidates)))
    picks = [candidates[int(i)] for i in np.linspace(0, len(candidates) - 1, k).round()]
    grey = np.stack(
        [
            np.asarray(central_crop(chans[idx], CLASSICAL_CROP), dtype=np.float32).mean(axis=-1)
            for idx in picks
        ]
    )
    try:
        guess = float(_classical_diameter(grey))
    except (TypeError, ValueError):  # nothing to measure (a tiny or empty image)
        guess = float("nan")
    if not math.isfinite(guess) or guess <= 0:
        guess = working
    top = min(1000.0, max(ny, nx))
    classical = float(np.clip(guess, min(2.0, top), top))
    if int(refine) == 0:
        return classical

    def measure(g: float) -> float | None:
        side = max(32, int(round(crop * g / working)))
        sample = np.stack([np.asarray(central_crop(chans[idx], side)) for idx in picks])
        sy, sx = sample.shape[1:3]
        color = sample.shape[-1] == 3
        res = predict_instances(
            sample if color else sample[..., 0], model, diameter=g, rgb=color, **run
        )
        t = res.table
        away = (
            (t["area"] > 0)
            & (t["bbox_y0"] > 1)
            & (t["bbox_x0"] > 1)
            & (t["bbox_y1"] < sy - 1)
            & (t["bbox_x1"] < sx - 1)
        )
        if away.sum() < 5:
            return None
        return float(np.median(2 * np.sqrt(t["area"][away] / np.pi)))

    lo, hi = max(2.0, working / 5), min(top, working * 5)
    if hi <= lo:  # an image too small to show the model objects of its size
        return classical
    found, _ = consistent_diameter(
        measure, classical, bounds=(lo, hi), max_passes=int(refine), fallback=working
    )
    return classical if found is None else float(np.clip(found, 2.0, top))


#: The classical first size guess reads the central window of this side (pixels) of a plane.
CLASSICAL_CROP = 512

_ESTIMATE_KEYS = (
    "score_threshold",
    "mask_threshold",
    "max_detections",
    "classes",
    "half",
    "tile_size",
    "tile_overlap",
    "batch_size",
    "nms_threshold",
)


def _classical_diameter(grey: np.ndarray) -> float:
    """The classical object size of an image (:func:`napari_segkit.algorithms.size.estimate_diameter`)."""
    from ..algorithms.size import estimate_diameter

    return estimate_diameter(grey, spatial_ndim=2)


def _channels(image: Any, rgb: bool | None, channel_axis: int | None, channel: int) -> Any:
    """The image channels last, ``(..., Y, X, C)`` with C 1 or 3 (one channel picked otherwise)."""
    chans = to_channels_last(image, rgb=rgb, channel_axis=channel_axis)
    if chans.ndim < 3:
        raise ValueError(f"image must have at least 2 spatial dimensions; got shape {image.shape}")
    n_chan = chans.shape[-1]
    if n_chan not in (1, 3):
        if not -n_chan <= channel < n_chan:
            raise ValueError(f"channel={channel} is out of range for {n_chan} channels")
        chans = chans[..., channel : channel + 1 if channel != -1 else None]
    return chans


def resize_plane(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``(Y, X, C)`` plane resampled to ``shape``, as :func:`predict_instances` rescales images.

    Bilinear on the pixel-centre grid (``align_corners=False``), antialiased when shrinking;
    float32. Training scripts use it to show a model images resampled exactly as it will see them.

    Examples
    --------
    >>> resize_plane(np.ones((10, 20, 1), np.uint16), (5, 10)).shape  # doctest: +SKIP
    (5, 10, 1)
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).permute(2, 0, 1)[None]
    shrink = shape[0] < data.shape[0] or shape[1] < data.shape[1]
    y = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return y[0].permute(1, 2, 0).contiguous().numpy()


class _VolumeBuilder:
    """Collects the per-plane foreground maps of each z-stack; at its last plane, 3D objects.

    Per plane: the evidence (:func:`paste_scores`: max mask probability x score); with
    :data:`CUT_BORDERS`, the borders between two touching 2D detections are cut out of it, so
    that nuclei side by side stay apart in 3D, and given back to their nearest 3D object after.
    """

    def __init__(
        self,
        lead: tuple[int, ...],
        shape: tuple[int, int],
        spacing: tuple[float, ...] | None,
        diameter: float | None,
        threshold: float,
        mask_threshold: float,
    ):
        self.nz = lead[-1]
        self.vol_lead = lead[:-1]
        self.shape = shape
        self.spacing = spacing
        self.diameter = diameter
        self.fg = np.zeros((self.nz, *shape), np.float32)
        self.cls = np.zeros((self.nz, *shape), np.uint16)
        self.cut = np.zeros((self.nz, *shape), bool)
        self.done = 0
        self.next_id = 0
        self.threshold = threshold
        self.mask_threshold = mask_threshold

    def add(self, ready, cores, planes, labels_out, rows, class_names) -> None:
        import torch

        for p, d in ready:
            z = p % self.nz
            n = int(d["scores"].shape[0])
            d = {**d, "ids": torch.arange(1, n + 1, device=d["scores"].device, dtype=torch.int32)}
            for cy0, cx0, cy1, cx1 in cores:
                if len(cores) > 1:
                    b = d["boxes"]
                    hit = (b[:, 0] < cx1) & (b[:, 2] > cx0) & (b[:, 1] < cy1) & (b[:, 3] > cy0)
                    sub = _select(d, hit)
                else:
                    sub = d
                region = [(0, sub, (cy0, cx0))]
                shape = (cy1 - cy0, cx1 - cx0)
                fg, cls = paste_scores(region, 1, shape)
                if CUT_BORDERS:
                    border = _id_borders(paste_masks(region, 1, shape, self.mask_threshold))
                    fg = torch.where(border, 0.0, fg)
                    self.cut[z, cy0:cy1, cx0:cx1] = border[0].cpu().numpy()
                self.fg[z, cy0:cy1, cx0:cx1] = fg[0].cpu().numpy()
                self.cls[z, cy0:cy1, cx0:cx1] = cls[0].to(torch.int32).cpu().numpy()
            self.done += 1
            if self.done == self.nz:
                self.finish(p // self.nz, labels_out, rows, class_names)

    def finish(self, v: int, labels_out, rows, class_names) -> None:
        from skimage.segmentation import expand_labels

        from ..algorithms.stitch import objects_from_plane_maps

        spacing = self.spacing or (1.0, 1.0, 1.0)
        index = np.unravel_index(v, self.vol_lead) if self.vol_lead else ()
        diameter = self.diameter
        if diameter is None:  # a model without a working size: measure the objects found
            diameter = _classical_diameter(self.fg)
            diameter = diameter if math.isfinite(diameter) and diameter > 0 else 16.0
        lab = objects_from_plane_maps(
            self.fg,
            diameter=diameter * spacing[-1],
            spacing=spacing,
            threshold=self.threshold,
        )
        for z in np.flatnonzero(self.cut.any(axis=(1, 2))):  # the cut borders, given back
            give = self.cut[z] & (lab[z] == 0)
            lab[z][give] = expand_labels(lab[z], 2)[give]
        n = int(lab.max(initial=0))
        if self.next_id + n > np.iinfo(np.int32).max:
            raise ValueError(f"more objects ({self.next_id + n}) than int32 labels can hold")
        rows.append(_volume_table(lab, self.fg, self.cls, self.next_id, index, class_names))
        labels_out[index] = np.where(lab > 0, lab + self.next_id, 0)
        self.next_id += n
        self.fg[...] = 0
        self.cls[...] = 0
        self.cut[...] = False
        self.done = 0


#: Cut the borders between touching 2D detections out of a z-stack's evidence (see
#: :class:`_VolumeBuilder`). Off: on generated stacks it changed nothing where nuclei are apart
#: or touch, and cost 2-4 AP points where they are crowded (the shipped model's 2D borders split
#: some nuclei); with the true 2D borders it gained 10-30 points on elongated, overlapping nuclei
#: (benchmarks/eval_maskrcnn_3d.py).
CUT_BORDERS = False


def _id_borders(lab: Any) -> Any:
    """Pixels of a ``(1, h, w)`` label tensor next to a pixel of another (non-zero) label."""
    import torch.nn.functional as F

    x = lab.float()[None]  # (1, 1, h, w); IDs per plane stay well below 2**24
    big = float(2**24)
    hi = F.max_pool2d(x, 3, stride=1, padding=1)
    lo = -F.max_pool2d(-(x + (x == 0) * big), 3, stride=1, padding=1)
    return ((lab > 0) & ((hi[0] != x[0]) | (lo[0] != x[0]))).bool()


def _volume_table(
    lab: np.ndarray,
    fg: np.ndarray,
    cls: np.ndarray | None,
    offset: int,
    index: tuple | None,
    class_names: list[str],
) -> dict[str, np.ndarray]:
    """The table of one volume's 3D objects: class (the majority of its voxels), mean score, 3D
    box and centroid."""
    from ..algorithms.tables import object_table

    t = object_table(lab)
    ids = t["label"]
    n = len(ids)
    top = int(lab.max(initial=0))
    if n:
        score = np.bincount(lab.ravel(), weights=fg.ravel(), minlength=top + 1)
        score = score[ids] / np.maximum(t["area"], 1)
        k = int(cls.max(initial=0)) + 1
        votes = np.bincount(
            lab.ravel().astype(np.int64) * k + cls.ravel(), minlength=(top + 1) * k
        ).reshape(top + 1, k)
        votes[:, 0] = 0
        class_id = votes[ids].argmax(axis=1)
    else:
        score, class_id = np.zeros(0), np.zeros(0, np.int64)
    table: dict[str, np.ndarray] = {}
    for k_, i in enumerate(index or ()):
        table[f"axis{k_}"] = np.full(n, int(i), np.int64)
    table["label"] = ids + offset
    table["class_id"] = class_id.astype(np.int64)
    table["class_name"] = np.array([class_names[c] for c in class_id], dtype=object)
    table["score"] = np.asarray(score, np.float32)
    table["area"] = t["area"]
    for end in ("0", "1"):
        for axis in "zyx":
            table[f"bbox_{axis}{end}"] = t[f"bbox_{axis}{end}"].astype(np.float32)
    for axis in "zyx":
        table[f"centroid_{axis}"] = t[f"centroid_{axis}"].astype(np.float32)
    return table


def _link(
    labels: np.ndarray, table: dict[str, np.ndarray], empty: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Relabel frames along axis 0 so that objects keep their IDs (:func:`stitch.link_frames`),
    and the table's labels with them."""
    from ..algorithms.stitch import link_frames

    linked = link_frames(labels)
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int64)  # old ID (unique) -> new ID
    for t in range(labels.shape[0]):
        inside = labels[t] > 0
        lut[labels[t][inside]] = linked[t][inside]
    ids = np.asarray(table["label"], np.int64)
    new = np.zeros(len(ids), np.int64)
    known = ids < len(lut)
    new[known] = lut[ids[known]]
    lost = new == 0  # detections without a pixel: new IDs beyond the linked ones
    top = int(linked.max(initial=0))
    new[lost] = np.arange(top + 1, top + 1 + int(lost.sum()))
    mapping = dict(zip(ids[lost].tolist(), new[lost].tolist(), strict=True))
    empty = np.array([mapping.get(int(i), 0) for i in empty], np.int64)
    return linked, {**table, "label": new}, empty


def _configure(module: Any, score_threshold: float, nms_threshold: float, cap: int) -> None:
    """Set the detection thresholds and caps (the RPN keeps enough proposals for ``cap``)."""
    heads = module.roi_heads
    heads.score_thresh = float(score_threshold)
    heads.nms_thresh = float(nms_threshold)
    heads.detections_per_img = int(cap)
    proposals = max(1000, 2 * int(cap))
    module.rpn._pre_nms_top_n["testing"] = proposals
    module.rpn._post_nms_top_n["testing"] = proposals


def _select(d: dict[str, Any], index: Any) -> dict[str, Any]:
    return {k: (v[index] if hasattr(v, "shape") and v.ndim > 0 else v) for k, v in d.items()}


def _concat(dets: list[dict[str, Any]], dev: Any) -> dict[str, Any]:
    import torch

    return {k: torch.cat([d[k] for d in dets]) for k in ("boxes", "scores", "labels", "masks")}


def _detect(
    model: LoadedModel, raws: list[np.ndarray], lo: np.ndarray, scale: np.ndarray, use_half: bool
) -> list[dict[str, Any]]:
    """Run the network on equal-sized tiles; masks stay 28 x 28 probabilities on the device."""
    import torch
    from torchvision.models.detection.image_list import ImageList

    dev = model.device
    module = model.module
    t0 = time.perf_counter()
    h, w = raws[0].shape[:2]
    raw = np.stack(raws)  # (B, h, w, C)
    uint16 = raw.dtype.kind == "u" and raw.dtype.itemsize == 2
    if uint16:  # travel as int16 bits (half of int32), widened on the device
        tensor = torch.from_numpy(np.ascontiguousarray(raw).view(np.int16))
    elif raw.dtype == bool:
        tensor = torch.from_numpy(raw.astype(np.uint8))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(raw))
    if dev.type == "cuda":
        tensor = tensor.pin_memory().to(dev, non_blocking=True)
    else:
        tensor = tensor.to(dev)
    if uint16:
        tensor = tensor.to(torch.int32) & 0xFFFF
    x = tensor.permute(0, 3, 1, 2).float()  # (B, C, h, w)
    mean = torch.tensor(model.normalization["mean"], device=dev, dtype=torch.float32)
    std = torch.tensor(model.normalization["std"], device=dev, dtype=torch.float32)
    lo_t = torch.as_tensor(lo, device=dev)
    sc_t = torch.as_tensor(scale, device=dev)
    x = (x - lo_t[:, :, None, None]) * sc_t[:, :, None, None]
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    if (ph, pw) != (h, w):
        # mirrored, not zeros: a step at the padding's edge makes objects appear along it
        mode = "reflect" if (ph - h < h and pw - w < w) else "replicate"
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode=mode)
    x = x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x.contiguous()
    images = ImageList(x, [(h, w)] * x.shape[0])
    t0 = _tick("upload_normalise", t0, dev)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_half):
        features = module.backbone(x)
        t0 = _tick("backbone", t0, dev)
        proposals, _ = module.rpn(images, features)
        t0 = _tick("rpn", t0, dev)
        # torchvision's RoI poolers cache their feature scales from the first batch's image
        # sizes: a batch of tiny images (smaller than the padding) would spoil them for good
        for pool in (module.roi_heads.box_roi_pool, module.roi_heads.mask_roi_pool):
            if pool is not None:
                pool.scales = pool.map_levels = None
        dets, _ = module.roi_heads(features, proposals, images.image_sizes)
        t0 = _tick("roi_heads", t0, dev)
    out = []
    for d in dets:
        out.append(
            {
                "boxes": d["boxes"].float(),
                "scores": d["scores"].float(),
                "labels": d["labels"],
                "masks": d["masks"][:, 0].to(
                    torch.float16 if dev.type == "cuda" else torch.float32
                ),
            }
        )
    return out


def _paste_planes(
    ready: list[tuple[int, dict[str, Any]]],
    cores: list[tuple[int, int, int, int]],
    shape: tuple[int, int],
    labels_out: np.ndarray,
    planes: list[tuple[int, ...]],
    mask_threshold: float,
    rows: list[dict[str, np.ndarray]],
    empty: list[np.ndarray],
    class_names: list[str],
) -> None:
    """Paste finished planes into ``labels_out`` (at full resolution) and add their table rows.

    ``cores`` partition the plane into the pieces pasted at once: one (the whole plane: one paste
    for the batch) or several (device memory stays bounded by a piece's size).
    """
    import torch

    ny, nx = shape
    if len(cores) == 1:  # whole planes: one paste for the batch
        regions = [(i, d, (0, 0)) for i, (_, d) in enumerate(ready)]
        lab = paste_masks(regions, len(ready), (ny, nx), mask_threshold)
        areas_all = _areas(lab, ready)
        lab_cpu = lab.cpu().numpy()
        for i, (p, _) in enumerate(ready):
            labels_out[planes[p]] = lab_cpu[i]
    else:  # piece by piece
        areas_all = []
        for p, d in ready:
            counts = torch.zeros(
                int(d["scores"].shape[0]) + 1, dtype=torch.int64, device=d["scores"].device
            )
            for cy0, cx0, cy1, cx1 in cores:
                b = d["boxes"]
                hit = (b[:, 0] < cx1) & (b[:, 2] > cx0) & (b[:, 1] < cy1) & (b[:, 3] > cy0)
                sub = _select(d, hit)
                lab = paste_masks([(0, sub, (cy0, cx0))], 1, (cy1 - cy0, cx1 - cx0), mask_threshold)
                ids = lab.flatten().long()
                ids = torch.where(ids > 0, ids - d["first"], 0)
                counts += torch.bincount(ids, minlength=counts.shape[0])
                labels_out[planes[p]][cy0:cy1, cx0:cx1] = lab[0].cpu().numpy()
            areas_all.append(counts[1:].cpu().numpy())
    for (p, d), areas in zip(ready, areas_all, strict=True):
        ids = d["ids"].cpu().numpy().astype(np.int64)
        index = np.tile(np.array(planes[p], np.int64), (len(ids), 1)) if planes[p] else None
        rows.append(
            inst.features_table(
                ids,
                d["labels"].cpu().numpy(),
                class_names,
                d["scores"].cpu().numpy(),
                areas,
                d["boxes"].cpu().numpy(),
                index=index,
            )
        )
        empty.append(ids[areas == 0])


def _areas(lab: Any, ready: list[tuple[int, dict[str, Any]]]) -> list[np.ndarray]:
    """Pixel count of every detection of every plane of a pasted batch (one bincount)."""
    import torch

    counts = torch.bincount(lab.flatten().long()).cpu().numpy()
    out = []
    for _, d in ready:
        ids = d["ids"].cpu().numpy().astype(np.int64)
        got = np.zeros(len(ids), np.int64)
        inside = ids < len(counts)
        got[inside] = counts[ids[inside]]
        out.append(got)
    return out


# --------------------------------------------------------------------------------------------
# the one declaration of the method's parameters (function, widget, CLI, docs)

from ..params import DEVICE, HALF, MethodSpec, Param, checked, register  # noqa: E402

SPEC = register(
    MethodSpec(
        name="maskrcnn",
        title="Mask R-CNN",
        function="napari_segkit.models.maskrcnn:predict_instances",
        description="Instance segmentation: every detected object its own label ID, with a table.",
        supports_volume=True,
        uses_spacing=True,
        params=(
            Param(
                "model",
                str,
                "nuclei",
                "'nuclei' (shipped), 'maskrcnn_resnet50_fpn', 'maskrcnn_resnet50_fpn_v2' (COCO "
                "weights), or a checkpoint file (.safetensors/.pt/.pth).",
                widget="model",
                also=(LoadedModel, os.PathLike),
            ),
            Param(
                "diameter",
                float,
                None,
                "Typical object diameter in pixels: the image is rescaled so that objects have the "
                "size the model was trained at, and the masks are pasted back at full "
                "resolution. auto: estimated from the image.",
                optional=True,
                none_label="auto",
                min=2.0,
                max=1000.0,
                step=1.0,
            ),
            Param(
                "score_threshold",
                float,
                0.5,
                "Detections scoring lower are dropped.",
                min=0.0,
                max=1.0,
                step=0.05,
            ),
            Param(
                "mask_threshold",
                float,
                0.5,
                "A pixel belongs to an object where its mask probability exceeds this.",
                min=0.0,
                max=1.0,
                step=0.05,
            ),
            Param(
                "max_detections",
                int,
                None,
                "Cap per tile; auto follows the tile area (1024 for 1024 x 1024).",
                optional=True,
                min=1,
                max=10**6,
            ),
            Param(
                "classes",
                str,
                None,
                "Keep only these class ids or names (comma-separated); empty: all.",
                optional=True,
                none_label="all",
                also=(list, tuple),
            ),
            DEVICE,
            HALF,
            Param(
                "tile_size",
                int,
                1024,
                "Planes larger than this are cut into overlapping tiles.",
                min=128,
                max=16384,
                step=64,
            ),
            Param(
                "tile_overlap",
                int,
                64,
                "Overlap of the tiles: at least the largest object's diameter.",
                min=0,
                max=4096,
                step=8,
            ),
            Param("batch_size", int, 4, "Tiles or planes per forward pass.", min=1, max=256),
            Param(
                "link_frames",
                bool,
                False,
                "A time-lapse: an object keeps its label ID from one frame to the next where it "
                "overlaps (frames along the first axis).",
                label="keep IDs across frames",
            ),
            Param(
                "nms_threshold",
                float,
                0.5,
                "Overlapping detections of one class above this box IoU are merged.",
                label="NMS IoU",
                min=0.0,
                max=1.0,
                step=0.05,
            ),
            Param(
                "boxes",
                bool,
                False,
                "Also add a Shapes layer of the detection boxes.",
                label="add a Shapes layer of the boxes",
                group="output",
            ),
        ),
    )
)
predict_instances = checked(SPEC)(predict_instances)
