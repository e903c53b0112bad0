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

Inference (:func:`predict_instances`) runs at the image's native resolution, tile by tile, batched;
masks stay on the device and are pasted all at once into an int32 label image, the only large
array that comes back to the CPU.
"""

from __future__ import annotations

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
    iter_blocks,
    report,
    to_channels_last,
)
from . import checkpoints as ckpt
from .devices import configure_cudnn, resolve_device
from .devices import use_half as half_on_device
from .normalize import normalization_range
from .paste import paste_masks
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

    ``labels``: int32, the image's shape without its channel axis; IDs 1..N per plane by
    descending score, offset so that they are unique across a stack. ``table``: one row per
    detection (:func:`napari_segkit.algorithms.instances.features_table`). ``empty_labels``: IDs
    of detections left with no pixel (covered by higher-scoring ones); they stay in the table with
    area 0.
    """

    labels: np.ndarray
    table: dict[str, np.ndarray]
    empty_labels: np.ndarray
    class_names: list[str]
    params: dict[str, Any]

    @property
    def n_objects(self) -> int:
        return len(self.table["label"])


def predict_instances(
    image: Any,
    model: str | os.PathLike | LoadedModel = "nuclei",
    *,
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
    nms_threshold: float = 0.5,
    progress: ProgressCallback | None = None,
) -> InstanceResult:
    """Mask R-CNN instance segmentation: one label ID per detected object.

    Parameters
    ----------
    image : array-like
        Grey, RGB or multichannel; 2D, or a 3D / time stack processed plane by plane (the planes
        are batched on the GPU). numpy or dask (read one plane at a time). Grey, 16-bit and
        multichannel images are percentile-normalized per plane and made 3-channel.
    model : str, path or LoadedModel
        See :func:`load_model`.
    score_threshold : float
        Detections scoring lower are dropped (0..1).
    mask_threshold : float
        A pixel belongs to an instance where its mask probability exceeds this (0..1).
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
        Planes larger than ``tile_size`` are cut into tiles overlapping by at least
        ``tile_overlap`` pixels (at least the largest object's diameter); each object is kept by
        the one tile that holds its box centre, so it gets one ID and is never duplicated.
    batch_size : int
        Tiles (or planes) per forward pass.
    rgb, channel_axis, channel
        How to read the image's channels (see :func:`napari_segkit.algorithms.image.to_channels_last`);
        ``channel`` picks the channel of an image that has neither 1 nor 3.
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
    >>> res.labels.max() == res.n_objects  # doctest: +SKIP
    True
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
    image = check_image(image)
    chans = to_channels_last(image, rgb=rgb, channel_axis=channel_axis)
    if chans.ndim < 3:
        raise ValueError(f"image must have at least 2 spatial dimensions; got shape {image.shape}")
    n_chan = chans.shape[-1]
    if n_chan not in (1, 3):
        if not -n_chan <= channel < n_chan:
            raise ValueError(f"channel={channel} is out of range for {n_chan} channels")
        chans = chans[..., channel : channel + 1 if channel != -1 else None]
    lead = tuple(chans.shape[:-3])
    ny, nx = int(chans.shape[-3]), int(chans.shape[-2])
    check_memory(int(np.prod(lead, dtype=np.int64)) * ny * nx * 4, "the labels")

    if not isinstance(model, LoadedModel):
        model = load_model(model, device)
    dev = model.device
    plan = inst.tile_plan((ny, nx), int(tile_size), int(tile_overlap))
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

    planes = list(iter_blocks((*lead, ny, nx), 2))
    labels_out = np.zeros((*lead, ny, nx), dtype=np.int32)
    units = [(p, t) for p in range(len(planes)) for t in range(len(plan))]
    total = len(units)
    use_half = half_on_device(dev, half)
    configure_cudnn(dev)  # every batch has the same tile size
    params = dict(
        model=model.source,
        architecture=model.architecture,
        score_threshold=float(score_threshold),
        mask_threshold=float(mask_threshold),
        max_detections=cap,
        classes=None if classes is None else [int(c) for c in classes],
        device=str(dev),
        half=use_half,
        tile_size=int(tile_size),
        tile_overlap=int(tile_overlap),
        nms_threshold=float(nms_threshold),
    )

    norm_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    plane_dets: dict[int, list[dict[str, Any]]] = {p: [] for p in range(len(planes))}
    tiles_left = {p: len(plan) for p in range(len(planes))}
    rows: list[dict[str, np.ndarray]] = []
    empty: list[np.ndarray] = []
    next_id = 0

    def plane_data(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if p not in norm_cache:
            norm_cache.clear()  # one plane in memory at a time (the planes come in order)
            data = np.asarray(chans[planes[p]])
            lo, scale = normalization_range(data, model.normalization)
            norm_cache[p] = (data, lo, scale)
        return norm_cache[p]

    with model.lock, torch.inference_mode():
        _configure(model.module, score_threshold, nms_threshold, cap)
        report(progress, 0, total)
        for start in range(0, total, int(batch_size)):
            batch = units[start : start + int(batch_size)]
            t_prep = time.perf_counter()
            raws, los, scales = [], [], []
            for p, t in batch:
                data, lo, scale = plane_data(p)
                tile = plan[t]
                raws.append(data[tile.y0 : tile.y1, tile.x0 : tile.x1])
                los.append(lo)
                scales.append(scale)
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
                plane_dets[p].append(d)
                tiles_left[p] -= 1
                if tiles_left[p] == 0:
                    finished.append(p)
            # paste the planes whose tiles are all done: all at once if each is a single tile
            ready = []
            for p in finished:
                merged = _concat(plane_dets.pop(p), dev)
                order = torch.argsort(merged["scores"], descending=True, stable=True)
                merged = _select(merged, order)
                n = int(merged["scores"].shape[0])
                merged["ids"] = torch.arange(
                    next_id + 1, next_id + n + 1, device=dev, dtype=torch.int32
                )
                merged["first"] = next_id
                next_id += n
                if next_id > np.iinfo(np.int32).max:
                    raise ValueError(f"more objects ({next_id}) than int32 labels can hold")
                ready.append((p, merged))
            if ready:
                _paste_planes(
                    ready,
                    plan,
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
    return InstanceResult(labels_out, table, empty_ids, list(model.class_names), params)


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
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h))
    x = x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x.contiguous()
    images = ImageList(x, [(h, w)] * x.shape[0])
    t0 = _tick("upload_normalize", t0, dev)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_half):
        features = module.backbone(x)
        t0 = _tick("backbone", t0, dev)
        proposals, _ = module.rpn(images, features)
        t0 = _tick("rpn", t0, dev)
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
    plan: list[inst.Tile],
    shape: tuple[int, int],
    labels_out: np.ndarray,
    planes: list[tuple[int, ...]],
    mask_threshold: float,
    rows: list[dict[str, np.ndarray]],
    empty: list[np.ndarray],
    class_names: list[str],
) -> None:
    """Paste finished planes into ``labels_out`` and add their rows to the table."""
    import torch

    ny, nx = shape
    if len(plan) == 1:  # whole planes: one paste for the batch
        regions = [(i, d, (0, 0)) for i, (_, d) in enumerate(ready)]
        lab = paste_masks(regions, len(ready), (ny, nx), mask_threshold)
        areas_all = _areas(lab, ready)
        lab_cpu = lab.cpu().numpy()
        for i, (p, _) in enumerate(ready):
            labels_out[planes[p]] = lab_cpu[i]
    else:  # tile cores one at a time: device memory stays bounded by the tile size
        areas_all = []
        for p, d in ready:
            counts = torch.zeros(
                int(d["scores"].shape[0]) + 1, dtype=torch.int64, device=d["scores"].device
            )
            for tile in plan:
                cy0, cx0, cy1, cx1 = tile.core
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

from ..params import MethodSpec, Param, checked, register  # noqa: E402

SPEC = register(
    MethodSpec(
        name="maskrcnn",
        title="Mask R-CNN",
        function="napari_segkit.models.maskrcnn:predict_instances",
        description="Instance segmentation: every detected object its own label ID, with a table.",
        supports_volume=False,
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
            Param(
                "device",
                str,
                "auto",
                "Where the network runs: auto picks CUDA, then MPS, then the CPU.",
                choices=(("auto", "auto"), ("cuda", "cuda"), ("mps", "mps"), ("cpu", "cpu")),
            ),
            Param(
                "half",
                bool,
                True,
                "float16 on the GPU (ignored on the CPU).",
                label="half precision on GPU",
            ),
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
