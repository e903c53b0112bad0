"""U-Net: the encoder-decoder network with skip connections, in 2D and 3D; checkpoints; inference.

torch is imported inside the functions, so importing this module stays cheap.

The network is the classic U-Net (Ronneberger et al., 2015): an encoder of ``depth`` stages that
halve the resolution and double the features, a decoder that upsamples and concatenates the
encoder's features of the same resolution (the skip connections that carry fine detail), and a
1x1 convolution head. Padding keeps the output the size of the input, so any input whose size is a
multiple of ``2**depth`` works (the inference code pads to that).

Output channels by task (see :data:`TASKS`):

- ``"instance"``: 4 channels: logits of background / interior / boundary, then the logit of a
  distance map (each object's distance transform normalized to 1 at its centre; a sigmoid gives
  it, see :data:`INSTANCE_OUTPUTS`); a seeded watershed turns them into objects.
- ``"semantic"``: one logit channel per class, class 0 the background.

Checkpoints (:func:`save_unet`, :func:`load_unet`) are segkit safetensors files of family
``"unet"`` (:mod:`napari_segkit.models.checkpoints`) whose metadata holds ``architecture`` (the
net's :func:`build_unet` config), ``task``, ``class_names``, ``outputs`` (how to read the output
channels), ``normalization`` (percentiles 1 and 99.8 per image and channel, as Mask R-CNN's),
``object_diameter`` (the object size, in pixels, the model works best at: images are rescaled so
that their objects have it), ``training`` and ``metrics`` (how it was trained and scored), and the
``version``/``date`` of the file. :mod:`napari_segkit.models.training` trains them. :func:`predict_unet` runs a model over 2D images, stacks and volumes,
tile by tile with blended overlaps, rescaling the image so that its objects appear at the model's
``object_diameter``.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..algorithms import watershed as ws
from ..algorithms.image import (
    LUMA,
    ProgressCallback,
    check_image,
    check_memory,
    relative_spacing,
    report,
    spatial_ndim_for,
    to_channels_last,
)

#: What the network predicts -> how many output channels it needs (semantic: ``n_classes``).
TASKS = ("instance", "semantic")
#: Output channels of an instance U-Net: background, interior, boundary logits + distance.
INSTANCE_CHANNELS = 4
#: Names of an instance U-Net's output maps (after softmax of the first three), in order.
INSTANCE_MAP_NAMES = ("background", "interior", "boundary", "distance")
#: The checkpoints' ``family``.
FAMILY = "unet"
#: Input normalization of the U-Nets: per channel, per image (2D) or volume (3D), before any
#: rescaling, the 1st and 99.8th percentiles map to 0 and 1.
DEFAULT_NORMALIZATION = {
    "method": "percentile",
    "percentiles": [1.0, 99.8],
    "channels": "each",
    "per": "image (2D) or volume (3D), before rescaling",
}
#: How to read an instance U-Net's 4 output channels (the checkpoints' ``outputs``).
INSTANCE_OUTPUTS = {
    "classes": ["background", "interior", "boundary"],
    "class_activation": "softmax over channels 0-2",
    "distance_channel": 3,
    "distance_activation": "sigmoid",
}
#: The watershed's thresholds for an instance U-Net whose checkpoint recommends none
#: (``outputs["seed_threshold"]``, ``outputs["distance_threshold"]``: chosen for that model on
#: generated validation images).
WATERSHED_THRESHOLDS = {"seed_threshold": 0.5, "distance_threshold": 0.4}
#: ... and a semantic U-Net's.
SEMANTIC_OUTPUTS = {"classes": "softmax over all channels"}
#: Activations of the distance channel :func:`load_unet` understands.
DISTANCE_ACTIVATIONS = ("sigmoid", "none")
#: What :func:`predict_unet` can return.
OUTPUTS = ("instance", "semantic")
#: An int ``tile_size`` above this is capped to it for a 3D U-Net (its overlap to a quarter of it).
MAX_TILE_3D = 128
#: Automatic rescaling (``diameter=None``) stays within these factors (2D; 3D: a volume grows
#: with the cube of the scale, so it stays within ``AUTO_SCALE_RANGE_3D``).
AUTO_SCALE_RANGE = (0.2, 5.0)
AUTO_SCALE_RANGE_3D = (1 / 3, 2.0)


def build_unet(
    *,
    ndim: int = 2,
    in_channels: int = 1,
    out_channels: int = INSTANCE_CHANNELS,
    depth: int = 4,
    width: int = 32,
    norm: str = "batch",
) -> Any:
    """Build an untrained U-Net (a ``torch.nn.Module``).

    Parameters
    ----------
    ndim : {2, 3}
        2D (images) or 3D (volumes) convolutions.
    in_channels : int
        Input channels (1 for grey).
    out_channels : int
        Output channels (4 for the instance task, the number of classes for semantic labels).
    depth : int
        Number of poolings (the input size must be a multiple of ``2**depth``).
    width : int
        Features of the first stage; each stage doubles them.
    norm : {'batch', 'group', 'none'}
        Normalization after every convolution. 'group' (8 groups) suits tiny batches.

    Examples
    --------
    >>> import torch
    >>> net = build_unet(ndim=2, in_channels=1, out_channels=4, depth=2, width=8)
    >>> tuple(net(torch.zeros(1, 1, 32, 32)).shape)
    (1, 4, 32, 32)
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}")
    for name, value, lo in (
        ("in_channels", in_channels, 1),
        ("out_channels", out_channels, 1),
        ("depth", depth, 1),
        ("width", width, 1),
    ):
        if not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    if norm not in ("batch", "group", "none"):
        raise ValueError(f"norm must be 'batch', 'group' or 'none'; got {norm!r}")

    import torch
    from torch import nn

    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    pool = nn.MaxPool2d if ndim == 2 else nn.MaxPool3d
    up = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d

    def norm_layer(ch: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(ch) if ndim == 2 else nn.BatchNorm3d(ch)
        if norm == "group":
            return nn.GroupNorm(min(8, ch), ch)
        return nn.Identity()

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            conv(cin, cout, 3, padding=1, bias=norm == "none"),
            norm_layer(cout),
            nn.ReLU(inplace=True),
            conv(cout, cout, 3, padding=1, bias=norm == "none"),
            norm_layer(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**i for i in range(depth + 1)]
            self.encoders = nn.ModuleList(
                [block(in_channels, chans[0])]
                + [block(chans[i], chans[i + 1]) for i in range(depth)]
            )
            self.pool = pool(2)
            self.ups = nn.ModuleList(
                [up(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))]
            )
            self.decoders = nn.ModuleList(
                [block(2 * chans[i], chans[i]) for i in reversed(range(depth))]
            )
            self.head = conv(chans[0], out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, enc in enumerate(self.encoders):
                x = enc(x if i == 0 else self.pool(x))
                skips.append(x)
            skips.pop()
            for upsample, dec in zip(self.ups, self.decoders, strict=True):
                x = dec(torch.cat([upsample(x), skips.pop()], dim=1))
            return self.head(x)

    net = UNet()
    net.config = {
        "ndim": ndim,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "depth": depth,
        "width": width,
        "norm": norm,
    }
    return net


# --------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class LoadedUNet:
    """A U-Net ready for inference, with what is needed to feed it and read its output."""

    module: Any  # torch.nn.Module
    config: dict[str, Any]  # build_unet keyword arguments
    task: str  # "instance" or "semantic"
    class_names: list[str]  # semantic: one per output channel; instance: ["background", name]
    normalization: dict[str, Any]
    object_diameter: float | None
    source: str
    device: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    distance_activation: str = "sigmoid"  # instance task: "sigmoid" or "none"

    @property
    def ndim(self) -> int:
        return int(self.config["ndim"])

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])

    def watershed_threshold(self, name: str, given: float | None = None) -> float:
        """``given``, else the checkpoint's recommended ``seed_threshold`` /
        ``distance_threshold`` (its ``outputs``), else :data:`WATERSHED_THRESHOLDS`."""
        if given is not None:
            return float(given)
        outputs = self.metadata.get("outputs") or {}
        return float(outputs.get(name, WATERSHED_THRESHOLDS[name]))

    @property
    def out_channels(self) -> int:
        return int(self.config["out_channels"])


def unet_metadata(
    config: dict[str, Any],
    *,
    task: str = "instance",
    class_names: Sequence[str] | None = None,
    normalization: dict[str, Any] | None = None,
    object_diameter: float | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint metadata of a U-Net (checked), for :func:`napari_segkit.models.checkpoints.save_checkpoint`.

    Parameters
    ----------
    config : dict
        The net's ``config`` (keyword arguments of :func:`build_unet`).
    task : {'instance', 'semantic'}
    class_names : sequence of str, optional
        Semantic: one name per output channel, the background first (default ``class 1``...).
        Instance: ``["background", <object name>]`` (default ``["background", "object"]``).
    normalization : dict, optional
        Default :data:`DEFAULT_NORMALIZATION`.
    object_diameter : float, optional
        Typical object diameter in pixels in the training images (the scale the model works at).
    training : dict, optional
        JSON-able facts about the training (data, settings, epochs, time).
    metrics : dict, optional
        JSON-able scores (validation metric per epoch, the best, held-out scores).
    outputs : dict, optional
        How to read the output channels; default :data:`INSTANCE_OUTPUTS` /
        :data:`SEMANTIC_OUTPUTS`.

    Examples
    --------
    >>> cfg = dict(ndim=2, in_channels=1, out_channels=4, depth=2, width=8, norm="batch")
    >>> unet_metadata(cfg, object_diameter=18)["class_names"]
    ['background', 'object']
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    keys = ("ndim", "in_channels", "out_channels", "depth", "width", "norm")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"config lacks {missing}; pass the net's .config (from build_unet)")
    config = {k: config[k] for k in keys}
    n_out = int(config["out_channels"])
    if task == "instance":
        if n_out != INSTANCE_CHANNELS:
            raise ValueError(
                f"an instance U-Net has {INSTANCE_CHANNELS} output channels; this one has {n_out}"
            )
        names = list(class_names) if class_names is not None else ["background", "object"]
        if len(names) == 1:
            names = ["background", *names]
        if len(names) != 2:
            raise ValueError(
                f"class_names of an instance U-Net: ['background', <object name>]; got {names}"
            )
    else:
        names = (
            list(class_names)
            if class_names is not None
            else ["background"] + [f"class {i}" for i in range(1, n_out)]
        )
        if len(names) != n_out:
            raise ValueError(f"class_names has {len(names)} names for {n_out} output channels")
    outputs = dict(outputs or (INSTANCE_OUTPUTS if task == "instance" else SEMANTIC_OUTPUTS))
    if task == "instance":
        act = outputs.setdefault("distance_activation", "sigmoid")
        if act not in DISTANCE_ACTIVATIONS:
            raise ValueError(
                f"outputs['distance_activation'] must be one of {DISTANCE_ACTIVATIONS}; got {act!r}"
            )
        for key in WATERSHED_THRESHOLDS:
            if key in outputs:
                value = outputs[key]
                if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"outputs[{key!r}] must be between 0 and 1; got {value!r}")
    if object_diameter is not None:
        d = float(object_diameter)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"object_diameter must be a positive number; got {object_diameter}")
        object_diameter = d
    return {
        "family": FAMILY,
        "architecture": config,
        "task": task,
        "class_names": [str(c) for c in names],
        "outputs": outputs,
        "normalization": dict(normalization or DEFAULT_NORMALIZATION),
        "object_diameter": object_diameter,
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }


def save_unet(
    net: Any,
    path: str | os.PathLike,
    *,
    task: str = "instance",
    class_names: Sequence[str] | None = None,
    normalization: dict[str, Any] | None = None,
    object_diameter: float | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Save a U-Net from :func:`build_unet` as a segkit checkpoint (see :func:`unet_metadata`).

    ``net`` is the network, or its ``state_dict`` with ``config`` (its :func:`build_unet`
    arguments). The file is written atomically
    (:func:`napari_segkit.models.checkpoints.save_checkpoint`): it always holds a complete model.

    Examples
    --------
    >>> import tempfile
    >>> net = build_unet(depth=2, width=8)
    >>> path = save_unet(net, tempfile.mkdtemp() + "/n.safetensors", object_diameter=16)
    >>> load_unet(path, "cpu").object_diameter
    16.0
    """
    from .checkpoints import save_checkpoint

    state = net if isinstance(net, dict) else net.state_dict()
    if config is None:
        config = getattr(net, "config", None)
    if not isinstance(config, dict):
        raise ValueError("net has no .config: build it with build_unet (or pass config=)")
    meta = unet_metadata(
        config,
        task=task,
        class_names=class_names,
        normalization=normalization,
        object_diameter=object_diameter,
        training=training,
        metrics=metrics,
        outputs=outputs,
    )
    return save_checkpoint(state, path, meta, half=half)


def _infer_config(state: dict[str, Any]) -> dict[str, Any]:
    """build_unet's config from the tensors of a U-Net state dict (no metadata)."""
    first = state["encoders.0.0.weight"]
    depth = len({k.split(".")[1] for k in state if k.startswith("ups.")})
    if "encoders.0.1.running_mean" in state:
        norm = "batch"
    elif "encoders.0.1.weight" in state:
        norm = "group"
    else:
        norm = "none"
    return {
        "ndim": first.ndim - 2,
        "in_channels": int(first.shape[1]),
        "out_channels": int(state["head.weight"].shape[0]),
        "depth": depth,
        "width": int(first.shape[0]),
        "norm": norm,
    }


def load_unet_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> LoadedUNet:
    """Build the U-Net a checkpoint describes and load its weights.

    A plain state dict without metadata works too: the architecture is read from the tensors,
    the task is ``"instance"`` for 4 output channels (else ``"semantic"``), no object diameter.

    Raises
    ------
    ValueError
        Naming the file: missing, empty, corrupt, unsafe, of another family, not a U-Net, or
        with tensors that do not match the architecture in its metadata.
    """
    from . import checkpoints as ckpt

    path = Path(path)
    state, meta = ckpt.read_checkpoint(path, family=FAMILY)
    if "encoders.0.0.weight" not in state or "head.weight" not in state:
        raise ValueError(
            f"checkpoint {path} is not a U-Net state dict (no encoders/head weights); found keys "
            f"like {sorted(state)[:3]}"
        )
    config = meta.get("architecture")
    if not isinstance(config, dict):
        try:
            config = _infer_config(state)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"checkpoint {path}: cannot read the U-Net architecture") from exc
    n_out = int(config.get("out_channels", 0))
    task = meta.get("task") or ("instance" if n_out == INSTANCE_CHANNELS else "semantic")
    try:
        full = unet_metadata(
            config,
            task=task,
            class_names=meta.get("class_names"),
            normalization=meta.get("normalization"),
            object_diameter=meta.get("object_diameter"),
            training=meta.get("training"),
            metrics=meta.get("metrics"),
            outputs=meta.get("outputs"),
        )
        module = build_unet(**full["architecture"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {path}: bad U-Net metadata: {exc}") from exc
    ckpt.load_state(module, state, path, f"a U-Net with {full['architecture']}")
    return _ready(
        LoadedUNet(
            module,
            full["architecture"],
            full["task"],
            full["class_names"],
            full["normalization"],
            full["object_diameter"],
            str(path),
            metadata=meta,
            distance_activation=full["outputs"].get("distance_activation", "sigmoid"),
        ),
        device,
    )


def _ready(model: LoadedUNet, device: Any) -> LoadedUNet:
    from .devices import resolve_device

    dev = resolve_device(device)
    model.module = model.module.eval().to(dev)
    model.device = dev
    return model


_CACHE: dict[tuple, LoadedUNet] = {}
_CACHE_LOCK = threading.Lock()


def _resolve_source(source: str | os.PathLike) -> tuple[Path, str]:
    """The checkpoint file of ``source`` and the name to show for it."""
    from .weights import SHIPPED_MODELS, find_user_model, shipped_path

    if isinstance(source, str) and source in SHIPPED_MODELS[FAMILY]:
        return shipped_path(FAMILY, source), source
    path = Path(source).expanduser()
    if isinstance(source, str) and not path.exists():
        user = find_user_model(source, FAMILY)
        if user is not None:
            return user, source
        if os.sep not in source and not Path(source).suffix:
            raise ValueError(
                f"model {source!r} is neither a shipped U-Net ({sorted(SHIPPED_MODELS[FAMILY])}), "
                f"a user model in the models folder, nor a checkpoint file"
            )
    return path, str(path)


def load_unet(
    source: str | os.PathLike = "nuclei", device: Any = "auto", *, cache: bool = True
) -> LoadedUNet:
    """Load a U-Net by name or path, cached in memory by (file, modification time, device).

    Parameters
    ----------
    source : str or path
        ``"nuclei"`` / ``"nuclei_3d"`` (shipped, :data:`napari_segkit.models.weights.SHIPPED_MODELS`),
        a checkpoint file, or the name of a U-Net in the user models folder
        (:func:`napari_segkit.models.weights.list_user_models`).
    device : str
        See :func:`napari_segkit.models.devices.resolve_device`.
    cache : bool
        False: a fresh copy, not cached (to train it: fine-tuning).

    Raises
    ------
    ValueError
        A missing shipped file (saying so), an unknown name, or a bad checkpoint (naming it).
    """
    from .devices import resolve_device

    dev = resolve_device(device)
    path, name = _resolve_source(source)
    if not cache:
        model = load_unet_checkpoint(path, dev)
        model.source = name
        return model
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
    except OSError:
        key = None
    if key is not None:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    model = load_unet_checkpoint(path, dev)
    model.source = name
    if key is not None:
        with _CACHE_LOCK:
            _CACHE[key] = model
    return model


def clear_unet_cache() -> None:
    """Forget every cached U-Net (and free its GPU memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------------------------
# inference


@dataclass
class UNetResult:
    """What :func:`predict_unet` returns.

    ``labels``: the image's shape without its channel axis. Instance output: int32 object IDs,
    unique across a stack (0 background). Semantic output: class ids (uint8, or uint16 beyond 256
    classes). ``table``: instance output, one row per object (``label``, ``class_id``,
    ``class_name``, ``score`` = mean interior probability, ``area``, ``centroid_*``, ``bbox_*``,
    and ``axis<k>`` for the leading axes of a stack); semantic output, one row per class
    (``label`` = ``class_id``, ``class_name``, ``area``). ``probabilities``: with
    ``return_probabilities``, float32 ``labels.shape + (len(probability_names),)``, channels
    last. ``diameter``: the object diameter in pixels of the input image that was used (given,
    or estimated by the first pass; None if unknown: a model without ``object_diameter``, or no
    object found); ``scale``: the factor the network saw the image at (1: native; the automatic
    estimate snaps to 1 within 10 %).
    ``messages``: what was decided on the way (diameter estimated, scale clipped...).
    """

    labels: np.ndarray
    table: dict[str, np.ndarray]
    class_names: list[str]
    output: str
    probabilities: np.ndarray | None = None
    probability_names: list[str] = field(default_factory=list)
    diameter: float | None = None
    scale: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def n_objects(self) -> int:
        """Objects (instance output) or classes present (semantic output)."""
        if self.output == "instance":
            return len(self.table["label"])
        return int(np.count_nonzero(self.table["area"][1:])) if len(self.table["area"]) else 0


def _check_diameter(diameter: Any, name: str = "diameter") -> float | None:
    if diameter is None:
        return None
    try:
        d = float(diameter)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of pixels or None; got {diameter!r}") from None
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"{name} must be a positive number of pixels or None; got {diameter!r}")
    return d


def _channel_adapter(n_image: int, n_model: int, rgb: bool, channel: int) -> Any:
    """A function choosing/combining the image's channels (last axis) for the model's inputs."""
    if n_image == n_model:
        return lambda block: block
    if n_model == 1:
        if rgb:
            return lambda block: (block[..., :3].astype(np.float32) @ LUMA)[..., None]
        if not -n_image <= channel < n_image:
            raise ValueError(f"channel={channel} is out of range for {n_image} channels")
        c = channel % n_image
        return lambda block: block[..., c : c + 1]
    if n_image == 1:
        return lambda block: np.repeat(block, n_model, axis=-1)
    raise ValueError(
        f"the image has {n_image} channels but the model takes {n_model}; pick channels with "
        f"channel_axis/channel or choose another model"
    )


def _prepare(adapt: Any, norm: dict[str, Any]) -> Any:
    from .normalize import normalize

    def prepare(block: np.ndarray) -> np.ndarray:
        x = normalize(adapt(block), norm)  # (*spatial, C) float32
        return np.moveaxis(x, -1, 0)

    return prepare


def _forward(model: LoadedUNet, use_half: bool) -> Any:
    import torch

    def forward(x: Any) -> Any:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_half):
            y = model.module(x)
        y = y.float()
        if model.task == "instance":
            distance = y[:, 3:]
            if model.distance_activation == "sigmoid":
                distance = torch.sigmoid(distance)
            return torch.cat([torch.softmax(y[:, :3], dim=1), distance], dim=1)
        return torch.softmax(y, dim=1)

    return forward


@dataclass
class _Runner:
    """A U-Net made ready for an image: its channels read, the tiled predictor built; runs the
    network over blocks at a scale (``scale`` is the xy factor; anisotropic voxels are made
    cubic on the way). Shared by :func:`predict_unet` and :func:`estimate_unet_diameter`."""

    model: LoadedUNet
    chans: Any  # channels-last image
    sp: int  # spatial axes of a block
    lead: tuple[int, ...]  # leading (stack) axes
    block_shape: tuple[int, ...]
    aniso: tuple[float, ...]  # voxel size relative to the last axis
    predictor: Any
    prepare: Any
    tiles: tuple[int, ...]
    overlaps: tuple[int, ...]
    half: bool
    on_batch: Any = None

    @classmethod
    def make(
        cls,
        image: Any,
        model: Any,
        *,
        device: Any,
        spatial_ndim: int,
        spacing: Any,
        rgb: bool | None,
        channel_axis: int | None,
        channel: int,
        tile_size: Any,
        tile_overlap: Any,
        batch_size: int,
        half: bool,
    ) -> _Runner:
        from .devices import use_half
        from .tiling import TiledPredictor, check_tiling

        image = check_image(image)
        if rgb is None:
            rgb = channel_axis is None and len(image.shape) > 2 and image.shape[-1] in (3, 4)
        chans = to_channels_last(image, rgb=rgb, channel_axis=channel_axis)
        sp = spatial_ndim_for(chans.ndim - 1, spatial_ndim)
        if not isinstance(model, LoadedUNet):
            model = load_unet(model, device)
        if model.ndim == 3 and sp != 3:
            raise ValueError(
                f"{model.source} is a 3D U-Net: pass a volume with spatial_ndim=3 "
                f"(got spatial_ndim={spatial_ndim} for an image of shape {tuple(image.shape)})"
            )
        lead = tuple(int(n) for n in chans.shape[: chans.ndim - 1 - sp])
        block_shape = tuple(int(n) for n in chans.shape[len(lead) : -1])
        aniso = relative_spacing(spacing, sp)
        if isinstance(tile_size, int) and model.ndim == 3 and tile_size > MAX_TILE_3D:
            tile_size = MAX_TILE_3D  # a 512**3 block would not fit in memory
            if isinstance(tile_overlap, int):
                tile_overlap = min(tile_overlap, MAX_TILE_3D // 4)
        tiles, overlaps = check_tiling(tile_size, tile_overlap, model.ndim)
        adapt = _channel_adapter(int(chans.shape[-1]), model.in_channels, bool(rgb), int(channel))
        half_on = use_half(model.device, half)
        predictor = TiledPredictor(
            _forward(model, half_on),
            model.out_channels,
            tile_size=tiles,
            overlap=overlaps,
            batch_size=int(batch_size),
            multiple=2 ** int(model.config["depth"]),
        )
        return cls(
            model,
            chans,
            sp,
            lead,
            block_shape,
            aniso,
            predictor,
            _prepare(adapt, model.normalization),
            tiles,
            overlaps,
            half_on,
        )

    def factors(self, scale: float) -> tuple[float, ...]:
        """The resize factor along each of the network's axes for an xy ``scale``."""
        return tuple(float(scale) * a for a in self.aniso[self.sp - self.model.ndim :])

    def run(self, blocks: list, scale: float, source: Any = None, reduce: Any = None) -> Any:
        from .tiling import dense_maps

        return dense_maps(
            self.chans if source is None else source,
            spatial_ndim=self.sp,
            model_ndim=self.model.ndim,
            prepare=self.prepare,
            predictor=self.predictor,
            device=self.model.device,
            scale=self.factors(scale),
            blocks=blocks,
            on_batch=self.on_batch,
            reduce=reduce,
        )

    def n_tiles(self, n_blocks: int, scale: float, shape: Sequence[int] | None = None) -> int:
        from .tiling import count_tiles

        return count_tiles(
            self.chans.shape if shape is None else shape,
            spatial_ndim=self.sp,
            model_ndim=self.model.ndim,
            predictor=self.predictor,
            scale=self.factors(scale),
            n_blocks=n_blocks,
        )


def predict_unet(
    image: Any,
    model: str | os.PathLike | LoadedUNet = "nuclei",
    *,
    output: str = "instance",
    diameter: float | None = None,
    tile_size: int | Sequence[int] = 1024,
    tile_overlap: int = 64,
    batch_size: int = 4,
    device: Any = "auto",
    half: bool = True,
    spatial_ndim: int = 2,
    spacing: Sequence[float] | None = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    min_size: int | None = None,
    seed_threshold: float | None = None,
    distance_threshold: float | None = None,
    progress: ProgressCallback | None = None,
    return_probabilities: bool = False,
) -> UNetResult:
    """U-Net segmentation: objects (seeded watershed on its maps) or per-pixel classes.

    Parameters
    ----------
    image : array-like
        Grey, RGB or multichannel; 2D, a stack of planes, or volumes; numpy or dask (read one
        block at a time); uint8, uint16, float. Normalized per plane (per volume with
        ``spatial_ndim=3``) and channel, percentiles 1 and 99.8 to 0 and 1.
    model : str, path or LoadedUNet
        See :func:`load_unet` (``"nuclei"``, ``"nuclei_3d"``, a file, a user model name).
    output : {'instance', 'semantic'}
        Instance model: ``"instance"`` gives one ID per object, ``"semantic"`` the foreground
        (class 1). Semantic model: ``"semantic"`` gives the most likely class per pixel,
        ``"instance"`` one ID per connected region of each class other than the background.
    diameter : float, optional
        Typical object diameter in pixels of ``image``. The image is rescaled by
        ``object_diameter / diameter`` (the model's ``object_diameter``) before the network, and
        the network's maps are resized back (linear) to the image's grid before the watershed.
        ``None``: estimated by a first pass at native scale (the median equivalent diameter of
        its objects; on at most 4 blocks of a stack), the scale kept within
        :data:`AUTO_SCALE_RANGE`. Ignored for a model without ``object_diameter``.
    tile_size : int or sequence of int
        Blocks larger than this (after rescaling) are cut into tiles that overlap by
        ``tile_overlap`` and are blended (no seams). An int is the tile's edge along every axis
        (for a 3D U-Net an int above :data:`MAX_TILE_3D` becomes 128, and its overlap at most
        32); a sequence gives one per axis.
    tile_overlap : int
        Overlap of neighbouring tiles, pixels; less than half of ``tile_size``.
    batch_size : int
        Tiles per forward pass (tiles of consecutive planes share a batch).
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    half : bool
        float16 autocast on a CUDA device (ignored elsewhere).
    spatial_ndim : {2, 3}
        2: plane by plane. 3: volume by volume (a 3D U-Net sees overlapping 3D blocks; a 2D
        U-Net predicts the planes and the objects are assembled in 3D by the watershed).
    spacing : sequence of float, optional
        Pixel (voxel) size along the ``spatial_ndim`` axes of a block, e.g. napari's layer
        ``scale`` ``(z, y, x)`` of a z-stack whose slices are further apart than its pixels. The
        network sees each block resampled to the voxel shape it was trained on (cubic voxels the
        size of a pixel of the last axis: a 3D U-Net trained on isotropic volumes), and
        ``diameter`` is then in pixels of the last axis. ``None``: square pixels (cubic voxels).
    rgb, channel_axis, channel
        How to read the image's channels (see
        :func:`napari_segkit.algorithms.image.to_channels_last`). For a 1-channel model, RGB
        becomes luminance and a multichannel image gives its channel ``channel``; a grey image is
        replicated for a model of several input channels.
    min_size : int, optional
        Objects with fewer pixels are removed (instance output). ``None``: a tenth of the area
        (volume) of a typical object, at least 4 pixels.
    seed_threshold, distance_threshold : float, optional
        See :func:`napari_segkit.algorithms.watershed.instances_from_maps`. ``None``: the
        model's own (its checkpoint's ``outputs``, chosen on generated validation images; the
        shipped 3D U-Net uses 0.5 / 0.5), else 0.5 / 0.4.
    progress : callable, optional
        ``progress(done, total)`` in tiles; may raise
        :class:`~napari_segkit.algorithms.image.Cancelled` to stop.
    return_probabilities : bool
        Also return the maps: ``background, interior, boundary, distance`` (instance model) or
        one probability per class (semantic model).

    Returns
    -------
    UNetResult

    Raises
    ------
    ValueError
        Naming the argument: bad ``output``, ``diameter`` (0, negative, NaN, larger than the
        image), tiling, channels, a 3D model without ``spatial_ndim=3``...

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, _ = synthetic_nuclei((256, 256), n_nuclei=30, seed=3)
    >>> res = predict_unet(img, "nuclei", device="cpu")  # doctest: +SKIP
    >>> res.labels.max() == res.n_objects  # doctest: +SKIP
    True
    """
    import torch

    from .devices import AUTOTUNE_TILES, configure_cudnn

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    wanted = _check_diameter(diameter)
    if min_size is not None and int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0 or None; got {min_size}")
    for name, value in (
        ("seed_threshold", seed_threshold),
        ("distance_threshold", distance_threshold),
    ):
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1; got {value}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    r = _Runner.make(
        image,
        model,
        device=device,
        spatial_ndim=spatial_ndim,
        spacing=spacing,
        rgb=rgb,
        channel_axis=channel_axis,
        channel=channel,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        half=half,
    )
    model, sp, lead, block_shape, aniso = r.model, r.sp, r.lead, r.block_shape, r.aniso
    seed_threshold = model.watershed_threshold("seed_threshold", seed_threshold)
    distance_threshold = model.watershed_threshold("distance_threshold", distance_threshold)
    if wanted is not None and wanted > max(block_shape):
        raise ValueError(
            f"diameter={diameter} is larger than the image ({block_shape} pixels per block)"
        )
    out_shape = (*lead, *block_shape)
    check_memory(int(np.prod(out_shape, dtype=np.int64)) * 4 * 4, "the network's maps")
    dev = model.device
    configure_cudnn(dev, fixed_size=False)  # estimating passes: sizes vary
    n_out = model.out_channels
    all_blocks = list(np.ndindex(*lead))
    messages: list[str] = []
    obj_d = model.object_diameter
    if model.task == "instance":
        map_names = list(INSTANCE_MAP_NAMES)
        class_names = list(model.class_names)
    else:
        map_names = list(model.class_names)
        class_names = list(model.class_names)

    # what the CPU needs of the maps: the class of every pixel for semantic output; the maps
    # without the background for objects. Taken on the device (less to copy, less CPU work),
    # or on the host from whole maps (probabilities asked for, or an estimating pass reused)
    reduce = None
    if output == "semantic" or model.task == "instance":
        reduce = _reducer(model.task, output, len(class_names))

    def postprocess(
        maps: np.ndarray, d_used: float | None, reduced: bool = False
    ) -> tuple[np.ndarray, dict]:
        if reduce is not None and not reduced:
            maps = reduce(torch.from_numpy(maps)).numpy()
        if output == "semantic":
            return maps[0], {}
        if model.task == "instance":
            interior, boundary, distance = maps[0:3]
            lab = ws.instances_from_maps(
                interior,
                boundary,
                distance,
                min_size=_min_size(min_size, d_used, maps.ndim - 1, aniso),
                seed_threshold=seed_threshold,
                distance_threshold=distance_threshold,
            )
            return lab, ws.objects_table(lab, interior, class_names=class_names)
        from ..algorithms.panoptic import things_from_classes

        classes = np.argmax(maps, axis=0)
        lab = things_from_classes(classes, list(range(1, len(class_names))))
        lab = ws._relabel_min_size(lab, _min_size(min_size, d_used, maps.ndim - 1, aniso))
        score = np.take_along_axis(maps, classes[None], axis=0)[0]
        ids = np.unique(lab)
        ids = ids[ids > 0]
        table = ws.objects_table(
            lab, score, class_ids=_classes_of(lab, classes, ids), class_names=class_names
        )
        return lab, table

    done = [0]
    total = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        report(progress, done[0], total[0])

    r.on_batch = on_batch
    run, n_tiles = r.run, r.n_tiles

    scale = 1.0
    d_used: float | None = None
    first: dict[tuple, np.ndarray] = {}
    with model.lock, torch.inference_mode():
        if obj_d is None:
            if wanted is not None:
                messages.append(
                    f"the model has no object_diameter: diameter={wanted:g} ignored, no rescaling"
                )
        elif wanted is not None:
            d_used, scale = wanted, obj_d / wanted
        else:
            est, first, note = _estimate_diameter(
                r, all_blocks, total, seed_threshold, distance_threshold
            )
            messages.append(note)
            if est is not None:
                lo, hi = AUTO_SCALE_RANGE_3D if model.ndim == 3 else AUTO_SCALE_RANGE
                raw = obj_d / est
                scale = float(min(max(raw, lo), hi))
                d_used = obj_d / scale
                if scale != raw:
                    first = {}
                    messages.append(f"scale clipped from {raw:.3g} to {scale:.3g}")
            done[0] = total[0]
        if scale != 1.0:
            from .tiling import scaled_shape

            scaled = scaled_shape(block_shape[sp - model.ndim :], r.factors(scale))
            check_memory(
                int(np.prod(scaled, dtype=np.int64))
                * 4
                * (n_out + model.in_channels)
                * max(1, block_shape[0] if model.ndim < sp else 1),
                "the rescaled image",
            )
        todo = [b for b in all_blocks if b not in first]
        total[0] = done[0] + n_tiles(len(todo), scale)
        configure_cudnn(dev, fixed_size=n_tiles(len(todo), scale) >= AUTOTUNE_TILES)
        if any(a != 1.0 for a in aniso):
            messages.append(
                "voxel spacing " + " x ".join(f"{a:g}" for a in aniso) + " (relative to the last "
                "axis): resampled to the model's cubic voxels"
            )
        report(progress, done[0], total[0])
        labels_dtype = np.int32 if output == "instance" else _class_dtype(len(class_names))
        labels_out = np.zeros(out_shape, labels_dtype)
        probs = None
        if return_probabilities:
            check_memory(int(np.prod(out_shape, dtype=np.int64)) * 4 * n_out, "the probabilities")
            probs = np.zeros((*out_shape, n_out), np.float32)
        rows: list[dict[str, np.ndarray]] = []
        offset = 0

        if first:  # the last estimating pass covered every block at this scale (whole maps)
            source = ((b, first.pop(b)) for b in all_blocks)
            reduced = False
        else:
            on_device = None if return_probabilities else reduce  # probabilities: whole maps
            source = run(todo, scale, reduce=on_device)
            reduced = on_device is not None

        def publish(b: tuple, maps: np.ndarray, lab: np.ndarray, table: dict) -> None:
            nonlocal offset
            if probs is not None:
                probs[b] = np.moveaxis(maps, 0, -1)
            if output == "instance":
                n = int(lab.max(initial=0))
                if offset:
                    lab = np.where(lab > 0, lab + offset, 0)
                    table["label"] = table["label"] + offset
                if offset + n > np.iinfo(np.int32).max:
                    raise ValueError(f"more objects ({offset + n}) than int32 labels can hold")
                offset += n
                if lead:
                    index = np.tile(np.array(b, np.int64), (len(table["label"]), 1))
                    table = {
                        **{f"axis{k}": index[:, k] for k in range(len(lead))},
                        **table,
                    }
                rows.append(table)
            labels_out[b] = lab

        # the watershed and table of a block run on the CPU threads (numpy, scipy and
        # scikit-image release the GIL) while the network works on the next blocks; results are
        # published in block order, at most 2 per thread waiting
        threads = n_threads(len(all_blocks))
        if threads <= 1:
            for b, maps in source:
                publish(b, maps, *postprocess(maps, d_used, reduced))
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                waiting: deque = deque()
                try:
                    for b, maps in source:
                        waiting.append((b, maps, pool.submit(postprocess, maps, d_used, reduced)))
                        while len(waiting) > 2 * threads or (waiting and waiting[0][2].done()):
                            b0, maps0, fut = waiting.popleft()
                            publish(b0, maps0, *fut.result())
                    while waiting:
                        b0, maps0, fut = waiting.popleft()
                        publish(b0, maps0, *fut.result())
                finally:
                    for *_, fut in waiting:  # cancelled or failed: drop what is left
                        fut.cancel()
    if output == "instance":
        if rows:
            table = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        else:
            table = ws.objects_table(np.zeros((1,) * sp, np.int32), class_names=class_names)
            if lead:
                table = {**{f"axis{k}": np.zeros(0, np.int64) for k in range(len(lead))}, **table}
    else:
        counts = np.bincount(labels_out.ravel(), minlength=len(class_names))
        table = {
            "label": np.arange(len(class_names), dtype=np.int64),
            "class_id": np.arange(len(class_names), dtype=np.int64),
            "class_name": np.array(class_names, dtype=object),
            "area": counts[: len(class_names)].astype(np.int64),
        }
    params = dict(
        model=model.source,
        task=model.task,
        output=output,
        diameter=wanted,
        diameter_used=d_used,
        scale=scale,
        tile_size=list(r.tiles),
        tile_overlap=list(r.overlaps),
        batch_size=int(batch_size),
        device=str(dev),
        half=r.half,
        spatial_ndim=sp,
        spacing=None if spacing is None else [float(v) for v in np.atleast_1d(spacing)],
        min_size=min_size,
        seed_threshold=float(seed_threshold),
        distance_threshold=float(distance_threshold),
    )
    return UNetResult(
        labels_out,
        table,
        class_names
        if output == "instance" or model.task == "semantic"
        else ["background", class_names[-1]],
        output,
        probs,
        map_names if return_probabilities else [],
        d_used,
        scale,
        params,
        messages,
    )


def estimate_unet_diameter(
    image: Any,
    model: str | os.PathLike | LoadedUNet = "nuclei",
    *,
    device: Any = "auto",
    spatial_ndim: int = 2,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    tile_size: int | Sequence[int] = 1024,
    tile_overlap: int = 64,
    batch_size: int = 4,
    half: bool = True,
    spacing: Sequence[float] | None = None,
    seed_threshold: float | None = None,
    distance_threshold: float | None = None,
) -> tuple[float | None, str]:
    """The object diameter :func:`predict_unet` (``diameter=None``) would segment ``image`` at,
    without segmenting it: the same model passes on the same central crops, the scale kept
    within :data:`AUTO_SCALE_RANGE`.

    Block-by-block segmentation measures it once on the whole image this way, then gives it to
    every block. Returns ``(diameter, note)``; ``diameter`` is None for a model without
    ``object_diameter`` or an image without objects (then nothing is rescaled).

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, _ = synthetic_nuclei((256, 256), n_nuclei=30, seed=3)
    >>> d, note = estimate_unet_diameter(img, "nuclei", device="cpu")  # doctest: +SKIP
    """
    import torch

    r = _Runner.make(
        image,
        model,
        device=device,
        spatial_ndim=spatial_ndim,
        spacing=spacing,
        rgb=rgb,
        channel_axis=channel_axis,
        channel=channel,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        half=half,
    )
    model = r.model
    if model.object_diameter is None:
        return None, "the model has no object_diameter: not rescaled"
    with model.lock, torch.inference_mode():
        est, _, note = _estimate_diameter(
            r,
            list(np.ndindex(*r.lead)),
            [0],
            model.watershed_threshold("seed_threshold", seed_threshold),
            model.watershed_threshold("distance_threshold", distance_threshold),
        )
    if est is None:
        return None, note
    obj_d = float(model.object_diameter)
    lo, hi = AUTO_SCALE_RANGE_3D if model.ndim == 3 else AUTO_SCALE_RANGE
    raw = obj_d / est
    scale = float(min(max(raw, lo), hi))
    if scale != raw:  # as predict_unet says it
        note += f"; scale clipped from {raw:.3g} to {scale:.3g}"
    return obj_d / scale, note


#: The automatic diameter: probe blocks are cropped (Y, X) so that the network sees at most this
#: many pixels per side; at most this many estimating passes.
ESTIMATE_CROP = {2: 512, 3: 160}
ESTIMATE_PASSES = 4


def _estimate_diameter(
    r: _Runner,
    all_blocks: list[tuple],
    total: list[int],
    seed_threshold: float,
    distance_threshold: float,
) -> tuple[float | None, dict[tuple, np.ndarray], str]:
    """The objects' diameter in the runner's image: a classical first guess, refined by the model.

    :func:`napari_segkit.algorithms.size.consistent_diameter` searches for the scale at which the
    model's objects have the size it was shown at (on at most 4 blocks, cropped around their
    centre). Returns the diameter (None if no object was found), the maps of the last pass if it
    covered every block uncropped at exactly that diameter (reused, no second pass), and a
    message for the user. Diameters are in pixels of the last axis (the runner's voxel spacing).
    """
    from ..algorithms.size import (
        central_crop,
        consistent_diameter,
        equivalent_diameters,
        estimate_diameter,
    )

    chans, lead, sp, model, aniso = r.chans, r.lead, r.sp, r.model, r.aniso
    run, n_tiles = r.run, r.n_tiles

    obj_d = float(model.object_diameter)
    lo, hi = AUTO_SCALE_RANGE_3D if model.ndim == 3 else AUTO_SCALE_RANGE
    probe = _probe_blocks(all_blocks, 4)
    spatial = tuple(int(n) for n in chans.shape[len(lead) : -1])
    try:
        grey = np.stack(
            [
                np.asarray(central_crop(chans[b], ESTIMATE_CROP[2]), np.float32).mean(axis=-1)
                for b in probe
            ]
        )
        guess = float(estimate_diameter(grey, spatial_ndim=sp, spacing=aniso))
    except (TypeError, ValueError):
        guess = float("nan")
    classical = guess if math.isfinite(guess) and guess > 0 else None
    kept: dict[float, dict[tuple, np.ndarray]] = {}

    def measure(g: float) -> float | None:
        scale = obj_d / g
        source = central_crop(chans, int(math.ceil(ESTIMATE_CROP[model.ndim] / scale)))
        cropped = tuple(source.shape) != tuple(chans.shape)
        total[0] += n_tiles(len(probe), scale, source.shape)
        found = []
        maps_of = {}
        for b, maps in run(probe, scale, source):
            lab = _first_pass_labels(maps, model, seed_threshold, distance_threshold)
            d_found = equivalent_diameters(lab, spacing=aniso[-lab.ndim :])
            found.append(d_found[np.isfinite(d_found)])
            if not cropped and len(probe) == len(all_blocks):
                maps_of[b] = maps
        kept.clear()
        if maps_of:
            kept[g] = maps_of
        pooled = np.concatenate(found) if found else np.zeros(0)
        return float(np.median(pooled)) if pooled.size else None

    start = f"classical guess {classical:.1f} px" if classical else "no classical guess"
    smallest, largest = (
        obj_d / hi,
        min(obj_d / lo, max(n * a for n, a in zip(spatial, aniso, strict=True))),
    )
    if largest <= smallest:  # the image cannot show the model objects of its size
        return None, {}, f"the image is too small to estimate the diameter ({start}): not rescaled"
    d, passes = consistent_diameter(
        measure,
        classical if classical is not None else obj_d,
        fallback=obj_d,  # a classical guess out of range (it failed): the model's own size first
        bounds=(smallest, largest),
        max_passes=ESTIMATE_PASSES,
    )
    steps = ", ".join(f"{g:.1f}->{'-' if m is None else f'{m:.1f}'}" for g, m in passes)
    if d is None:
        return None, {}, f"no object found to estimate the diameter ({start}): not rescaled"
    note = (
        f"estimated object diameter {d:.1f} px ({start}; model passes guess->measured: {steps}; "
        f"model's {obj_d:g} px): scale {obj_d / d:.3g}"
    )
    return d, kept.get(d, {}), note


def _reducer(task: str, output: str, n_classes: int) -> Any:
    """What :func:`predict_unet` keeps of a unit's maps ``(n_out, *spatial)`` on the device:
    semantic output, the class of every pixel (uint8, or int32 past 256 classes; an instance
    model: foreground, interior + boundary above 0.5); objects of an instance model, the
    interior, boundary and distance maps (the background one is not needed)."""
    import torch

    from .tiling import pixel_classes

    def reduce(maps: Any) -> Any:
        if output == "semantic":
            if task == "instance":
                return ((maps[1] + maps[2]) > 0.5).to(torch.uint8)[None]
            return pixel_classes(maps, n_classes)
        return maps[1:4]

    return reduce


def n_threads(n_blocks: int) -> int:
    """CPU threads for the post-processing of ``n_blocks`` blocks: one per core, at most one per
    block."""
    from ..algorithms.objects import available_cores

    return max(1, min(available_cores(), int(n_blocks)))


def _min_size(
    min_size: int | None,
    diameter: float | None,
    ndim: int,
    aniso: Sequence[float] | None = None,
) -> int:
    """``min_size``, or a tenth of a typical object's area/volume (at least 4 pixels); with
    ``aniso`` (voxel size relative to the pixel ``diameter`` is measured in) counted in voxels."""
    if min_size is not None:
        return int(min_size)
    if diameter is None:
        return 4
    d = float(diameter)
    typical = math.pi / 6 * d**3 if ndim == 3 else math.pi / 4 * d**2
    if aniso is not None:
        typical /= float(np.prod(list(aniso)[-ndim:]))
    return max(4, int(0.1 * typical))


def _class_dtype(n_classes: int) -> Any:
    return np.uint8 if n_classes <= 256 else np.uint16


def _classes_of(lab: np.ndarray, classes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The class of each object ``ids`` of ``lab`` (all its pixels share one class)."""
    if ids.size == 0:
        return np.zeros(0, np.int64)
    from scipy import ndimage as ndi

    return np.asarray(ndi.maximum(classes, lab, ids), np.int64)


def _probe_blocks(blocks: list[tuple], n: int) -> list[tuple]:
    """At most ``n`` blocks spread evenly over ``blocks`` (all of them if there are few)."""
    if len(blocks) <= n:
        return list(blocks)
    picks = np.linspace(0, len(blocks) - 1, n).round().astype(int)
    return [blocks[i] for i in sorted(set(picks.tolist()))]


def _first_pass_labels(
    maps: np.ndarray, model: LoadedUNet, seed_threshold: float, distance_threshold: float
) -> np.ndarray:
    """Objects of a native-scale pass, to measure their size."""
    if model.task == "instance":
        return ws.instances_from_maps(
            maps[1],
            maps[2],
            maps[3],
            min_size=4,
            seed_threshold=seed_threshold,
            distance_threshold=distance_threshold,
        )
    from ..algorithms.panoptic import things_from_classes

    classes = np.argmax(maps, axis=0)
    return things_from_classes(classes, list(range(1, maps.shape[0])))
