"""Semantic segmentation (one class per pixel): torchvision's FCN, DeepLabV3, LR-ASPP, and U-Nets.

Models (``model`` below):

- torchvision architectures (:data:`ARCHITECTURES`): ``fcn_resnet50``, ``fcn_resnet101``,
  ``deeplabv3_resnet50``, ``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large``,
  ``lraspp_mobilenet_v3_large``, with their ``COCO_WITH_VOC_LABELS_V1`` weights (21 classes:
  background + the 20 Pascal VOC classes) read from the torch hub cache. Nothing is downloaded
  unless asked (``download=True``, :func:`napari_segkit.models.weights.download_weights`,
  ``segkit weights download NAME``); offline, :class:`~napari_segkit.models.weights.WeightsUnavailableError`
  says where to put the file.
- a checkpoint file (or user model name) of a semantic U-Net (family ``"unet"``, task
  ``"semantic"``: see :mod:`napari_segkit.models.unet`), or of a torchvision architecture saved by
  :func:`save_semantic` (family ``"semantic"``, e.g. fine-tuned on the user's classes).

:func:`predict_semantic` runs at the image's native resolution, tile by tile with blended
overlaps (:mod:`napari_segkit.models.tiling`), plane by plane. torchvision models take RGB:
8-bit RGB is scaled to 0..1, anything else percentile-normalized per plane (1 and 99.8), a grey
(or single chosen) channel replicated to three; then ImageNet's mean and std.

torch and torchvision are imported inside the functions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..algorithms.image import (
    ProgressCallback,
    check_image,
    check_memory,
    report,
    to_channels_last,
)

#: The torchvision architectures with COCO-with-VOC-labels weights.
ARCHITECTURES = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)
#: The checkpoints' ``family`` for torchvision semantic models saved by :func:`save_semantic`.
FAMILY = "semantic"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NORMALIZATION = {
    "percentiles": [1.0, 99.8],
    "uint8_rgb": "divide_255",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


@dataclass
class LoadedSemantic:
    """A torchvision semantic model ready for inference."""

    module: Any
    architecture: str
    class_names: list[str]
    normalization: dict[str, Any]
    source: str
    device: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_architecture(architecture: str, num_classes: int, *, aux_loss: bool = False) -> Any:
    """An untrained torchvision segmentation model (no download).

    Examples
    --------
    >>> net = build_architecture("lraspp_mobilenet_v3_large", 3)
    >>> type(net).__name__
    'LRASPP'
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {architecture!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (background + one class); got {num_classes}")
    from torchvision.models import segmentation

    builder = getattr(segmentation, architecture)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
    if not architecture.startswith("lraspp"):
        kwargs["aux_loss"] = bool(aux_loss)
    return builder(num_classes=int(num_classes), **kwargs)


def _ready(model: LoadedSemantic, device: Any) -> LoadedSemantic:
    import torch

    from .devices import resolve_device

    dev = resolve_device(device)
    module = model.module
    if getattr(module, "aux_classifier", None) is not None:
        module.aux_classifier = None  # training-only head: not run at inference
    module = module.eval().to(dev)
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    model.module = module
    model.device = dev
    return model


def _load_state(architecture: str, state: dict[str, Any], n: int, path: Any) -> Any:
    from .checkpoints import load_state

    aux = any(k.startswith("aux_classifier.") for k in state)
    module = build_architecture(architecture, n, aux_loss=aux)
    load_state(module, state, path, f"the {architecture} architecture with {n} classes")
    return module


def load_torchvision(
    architecture: str, device: Any = "cpu", *, download: bool = False
) -> LoadedSemantic:
    """torchvision's pretrained ``architecture`` from the torch hub cache.

    Raises
    ------
    WeightsUnavailableError
        Not cached (and ``download`` False, or the download failed): the message says where to
        put the file and how to get it.
    ValueError
        The cached file is corrupt or does not match.
    """
    from .weights import cached_weights_path, load_cached_state, torchvision_weights

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {architecture!r}")
    names = [str(c) for c in torchvision_weights(architecture).meta["categories"]]
    state = load_cached_state(architecture, download=download)
    module = _load_state(architecture, state, len(names), cached_weights_path(architecture))
    norm = dict(DEFAULT_NORMALIZATION)
    return _ready(LoadedSemantic(module, architecture, names, norm, architecture), device)


def save_semantic(
    module: Any,
    path: str | os.PathLike,
    *,
    architecture: str,
    class_names: Sequence[str],
    normalization: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Save a torchvision semantic model (e.g. fine-tuned) as a segkit checkpoint."""
    from .checkpoints import save_checkpoint

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {architecture!r}")
    meta = {
        "family": FAMILY,
        "architecture": architecture,
        "class_names": [str(c) for c in class_names],
        "normalization": dict(normalization or DEFAULT_NORMALIZATION),
        "training": dict(training or {}),
    }
    return save_checkpoint(module.state_dict(), path, meta)


def load_semantic_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> LoadedSemantic:
    """A torchvision semantic model saved by :func:`save_semantic`.

    Raises
    ------
    ValueError
        Naming the file: unreadable, of another family, without an architecture, or not matching.
    """
    from .checkpoints import read_checkpoint

    path = Path(path)
    state, meta = read_checkpoint(path, family=FAMILY)
    architecture = meta.get("architecture")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"checkpoint {path}: its metadata names no torchvision semantic architecture "
            f"(one of {ARCHITECTURES}); got {architecture!r}"
        )
    names = [str(c) for c in meta.get("class_names") or []]
    weight = next(
        (v for k, v in state.items() if k.startswith("classifier.") and v.ndim == 4), None
    )
    n = len(names) or (int(weight.shape[0]) if weight is not None else 0)
    if not names:
        names = ["background"] + [f"class {i}" for i in range(1, n)]
    module = _load_state(architecture, state, n, path)
    norm = dict(DEFAULT_NORMALIZATION)
    norm.update(meta.get("normalization") or {})
    loaded = LoadedSemantic(module, architecture, names, norm, str(path), metadata=meta)
    return _ready(loaded, device)


_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def load_semantic(
    source: str | os.PathLike = "deeplabv3_resnet50",
    device: Any = "auto",
    *,
    download: bool = False,
) -> Any:
    """Load a semantic model: a torchvision architecture name, a checkpoint, or a user model.

    Returns a :class:`LoadedSemantic`, or a :class:`napari_segkit.models.unet.LoadedUNet` for a
    U-Net checkpoint. Cached in memory by (source, device).
    """
    from . import unet
    from .checkpoints import read_metadata
    from .devices import resolve_device

    dev = resolve_device(device)
    if isinstance(source, str) and source in ARCHITECTURES:
        key = (source, str(dev))
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        model = load_torchvision(source, dev, download=download)
        with _CACHE_LOCK:
            _CACHE[key] = model
        return model
    from .weights import SHIPPED_MODELS

    if isinstance(source, str) and source in SHIPPED_MODELS[unet.FAMILY]:
        return unet.load_unet(source, dev)  # the shipped U-Nets ("nuclei", "nuclei_3d")
    path = Path(source).expanduser()
    if isinstance(source, str) and not path.exists():
        from .weights import find_user_model

        found = find_user_model(source)
        if found is None:
            raise ValueError(
                f"model {source!r} is neither a torchvision architecture ({ARCHITECTURES}), "
                f"a checkpoint file, nor a user model"
            )
        path = found
    meta = read_metadata(path)
    if meta.get("family") == FAMILY:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        model = load_semantic_checkpoint(path, dev)
        with _CACHE_LOCK:
            _CACHE[key] = model
        return model
    return unet.load_unet(path, dev)  # U-Nets and plain state dicts; clear errors otherwise


def clear_semantic_cache() -> None:
    """Forget every cached semantic model."""
    with _CACHE_LOCK:
        _CACHE.clear()


@dataclass
class SemanticResult:
    """What :func:`predict_semantic` returns.

    ``labels``: class id per pixel (uint8, uint16 beyond 256 classes), the image's shape without
    its channel axis. ``class_names``: name of each class id. ``table``: one row per class
    (``label`` = ``class_id``, ``class_name``, ``area`` in pixels). ``probabilities``: with
    ``return_probabilities``, float32 ``labels.shape + (n_classes,)``, channels last.
    """

    labels: np.ndarray
    class_names: list[str]
    table: dict[str, np.ndarray]
    probabilities: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def _prepare_rgb(n_image: int, rgb: bool, channel: int, norm: dict[str, Any]) -> Any:
    from .normalize import normalize

    if n_image not in (1, 3):
        if not -n_image <= channel < n_image:
            raise ValueError(f"channel={channel} is out of range for {n_image} channels")
    c = channel % n_image
    mean = np.asarray(norm.get("mean", IMAGENET_MEAN), np.float32)
    std = np.asarray(norm.get("std", IMAGENET_STD), np.float32)

    def prepare(block: np.ndarray) -> np.ndarray:
        if n_image not in (1, 3):
            block = block[..., c : c + 1]
        x = normalize(block, norm)  # (..., 1 or 3) ~0..1 (8-bit RGB: /255)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        x = (x - mean) / std
        return np.moveaxis(x, -1, 0)

    return prepare


def predict_semantic(
    image: Any,
    model: str | os.PathLike | Any = "deeplabv3_resnet50",
    *,
    tile_size: int = 1024,
    tile_overlap: int = 64,
    batch_size: int = 4,
    device: Any = "auto",
    half: bool = True,
    spatial_ndim: int = 2,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    progress: ProgressCallback | None = None,
    return_probabilities: bool = False,
    download: bool = False,
) -> SemanticResult:
    """The most likely class of every pixel.

    Parameters
    ----------
    image : array-like
        Grey, RGB or multichannel; 2D or a stack processed plane by plane; numpy or dask; uint8,
        uint16, float.
    model : str, path, LoadedSemantic or LoadedUNet
        See :func:`load_semantic`. A U-Net goes through
        :func:`napari_segkit.models.unet.predict_unet` (``output="semantic"``, native scale).
    tile_size, tile_overlap : int
        Planes larger than ``tile_size`` are cut into tiles overlapping by ``tile_overlap`` and
        blended (no seams).
    batch_size : int
        Tiles per forward pass.
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    half : bool
        float16 autocast on a CUDA device.
    spatial_ndim : {2, 3}
        3 only for a 3D U-Net (torchvision models are 2D).
    rgb, channel_axis, channel
        How to read the channels; a torchvision model gets RGB, or the grey/chosen channel
        replicated three times.
    progress : callable, optional
        ``progress(done, total)`` in tiles; may raise to cancel.
    return_probabilities : bool
        Also return the per-class probabilities.
    download : bool
        Fetch missing torchvision weights (needs internet).

    Returns
    -------
    SemanticResult

    Examples
    --------
    >>> res = predict_semantic(photo, "deeplabv3_resnet50")  # doctest: +SKIP
    >>> res.class_names[15]  # doctest: +SKIP
    'person'
    """
    import torch

    from . import unet
    from .devices import AUTOTUNE_TILES, configure_cudnn, use_half
    from .tiling import TiledPredictor, check_tiling, count_tiles, dense_maps, pixel_classes

    image = check_image(image)
    if not isinstance(model, LoadedSemantic | unet.LoadedUNet):
        model = load_semantic(model, device, download=download)
    if isinstance(model, unet.LoadedUNet):
        res = unet.predict_unet(
            image,
            model,
            output="semantic",
            diameter=None if model.object_diameter is None else model.object_diameter,
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
        return SemanticResult(
            res.labels, res.class_names, res.table, res.probabilities, res.params, res.messages
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if spatial_ndim != 2:
        raise ValueError(
            f"spatial_ndim must be 2 for the 2D torchvision model {model.architecture}; "
            f"got {spatial_ndim}"
        )
    if rgb is None:
        rgb = channel_axis is None and image.ndim > 2 and image.shape[-1] in (3, 4)
    chans = to_channels_last(image, rgb=rgb, channel_axis=channel_axis)
    if chans.ndim < 3:
        raise ValueError(f"image must have 2 spatial dimensions; got shape {image.shape}")
    tiles, overlaps = check_tiling(tile_size, tile_overlap, 2)
    lead = tuple(int(s) for s in chans.shape[:-3])
    out_shape = (*lead, int(chans.shape[-3]), int(chans.shape[-2]))
    n = model.num_classes
    check_memory(int(np.prod(out_shape, dtype=np.int64)) * 4 * n, "the class probabilities")
    prepare = _prepare_rgb(int(chans.shape[-1]), bool(rgb), int(channel), model.normalization)
    dev = model.device
    half_on = use_half(dev, half)
    # autotune only where many planes of one size follow (see configure_cudnn)
    configure_cudnn(dev, fixed_size=int(np.prod(lead, dtype=np.int64)) >= AUTOTUNE_TILES)

    def forward(x: Any) -> Any:
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half_on):
            y = model.module(x)["out"]
        return torch.softmax(y.float(), dim=1)

    predictor = TiledPredictor(
        forward, n, tile_size=tiles, overlap=overlaps, batch_size=int(batch_size), multiple=32
    )
    blocks = list(np.ndindex(*lead))
    total = count_tiles(
        chans.shape,
        spatial_ndim=2,
        model_ndim=2,
        predictor=predictor,
        scale=1.0,
        n_blocks=len(blocks),
    )
    done = [0]

    def on_batch(k: int) -> None:
        done[0] += k
        report(progress, done[0], total)

    dtype = np.uint8 if n <= 256 else np.uint16
    labels = np.zeros(out_shape, dtype)
    probs = np.zeros((*out_shape, n), np.float32) if return_probabilities else None
    report(progress, 0, total)
    with model.lock, torch.inference_mode():
        for b, maps in dense_maps(
            chans,
            spatial_ndim=2,
            model_ndim=2,
            prepare=prepare,
            predictor=predictor,
            device=dev,
            blocks=blocks,
            on_batch=on_batch,
            # without probabilities only the classes leave the device
            reduce=None if probs is not None else (lambda m: pixel_classes(m, n)),
        ):
            if probs is not None:
                labels[b] = np.argmax(maps, axis=0)
                probs[b] = np.moveaxis(maps, 0, -1)
            else:
                labels[b] = maps[0]
    counts = np.bincount(labels.ravel(), minlength=n)[:n]
    table = {
        "label": np.arange(n, dtype=np.int64),
        "class_id": np.arange(n, dtype=np.int64),
        "class_name": np.array(model.class_names, dtype=object),
        "area": counts.astype(np.int64),
    }
    params = dict(
        model=model.source,
        architecture=model.architecture,
        tile_size=list(tiles),
        tile_overlap=list(overlaps),
        batch_size=int(batch_size),
        device=str(dev),
        half=half_on,
    )
    return SemanticResult(labels, list(model.class_names), table, probs, params, [])
