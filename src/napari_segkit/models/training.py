"""Train a U-Net on the user's own labels (and fine-tune the shipped nuclei U-Nets).

:func:`train` is the engine behind the Train dock widget and ``segkit train``: it takes image /
label pairs (2D or 3D; grey, RGB or multichannel; any numeric dtype), turns the labels into targets
(:mod:`napari_segkit.algorithms.targets`), trains on random augmented patches, measures a
validation metric after every epoch, and writes the best model so far to a safetensors checkpoint
on every improvement (atomically: the file on disk is always a complete model).

Partial annotation: a user who corrected 20 nuclei of an image trains with
``annotation="objects"``: only those nuclei and a ring of background around them count in the
loss (see :func:`~napari_segkit.algorithms.targets.annotation_mask`).

torch is imported inside the functions only.

The checkpoints are the U-Nets' one format (:func:`napari_segkit.models.unet.save_unet`, read by
:func:`napari_segkit.models.unet.load_unet` and the CNN widget): ``architecture``, ``task``,
``class_names``, ``outputs``, ``normalization``, ``object_diameter`` (the object size, in pixels,
the model works at: the training images are rescaled so that their objects have it, and so are
the images it segments), ``training`` (images, settings, epochs done), ``metrics`` (validation
metric per epoch, the best), ``version``, ``date``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .. import metrics as _metrics
from ..algorithms import targets as tg
from ..algorithms import watershed as ws
from ..algorithms.image import ProgressCallback, check_image, report
from .checkpoints import read_metadata
from .devices import resolve_device
from .unet import (
    DEFAULT_NORMALIZATION,
    INSTANCE_CHANNELS,
    TASKS,
    LoadedUNet,
    build_unet,
    load_unet,
    save_unet,
)

#: The architecture of a new model, by ndim (7.8 M parameters in 2D, 3.2 M in 3D).
DEFAULT_ARCHITECTURE = {
    2: {"depth": 4, "width": 32, "norm": "batch"},
    3: {"depth": 3, "width": 24, "norm": "group"},
}
#: Patch side by ndim.
DEFAULT_PATCH = {2: 256, 3: 128}
#: Input normalization (the inference's: :data:`napari_segkit.models.unet.DEFAULT_NORMALIZATION`).
NORMALIZATION = DEFAULT_NORMALIZATION
#: What :func:`train` trains.
MODELS = ("unet", "maskrcnn")
#: ``start_from="nuclei"`` for a model of ``ndim``: the shipped U-Net's name.
SHIPPED_START = {2: "nuclei", 3: "nuclei_3d"}


# --------------------------------------------------------------------------------------------
# checkpoints (the format of models.checkpoints / models.unet)


def save_unet_checkpoint(
    module_or_state: Any,
    path: str | os.PathLike,
    *,
    architecture: dict[str, Any],
    task: str,
    class_names: Sequence[str],
    normalization: dict[str, Any] | None = None,
    object_diameter: float | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    half: bool = False,
    outputs: dict[str, Any] | None = None,
) -> Path:
    """Write a U-Net and its metadata to ``path`` (safetensors) atomically.

    The one U-Net checkpoint format: :func:`napari_segkit.models.unet.save_unet` (metadata
    :func:`~napari_segkit.models.unet.unet_metadata`, written by
    :func:`napari_segkit.models.checkpoints.save_checkpoint` to a temporary file renamed over
    ``path``, so ``path`` always holds a complete model). Load it with
    :func:`napari_segkit.models.unet.load_unet`.

    Parameters
    ----------
    module_or_state : torch.nn.Module or dict of tensors
        The network or its ``state_dict``.
    path : path
        Destination (``.safetensors``).
    architecture : dict
        The arguments of :func:`~napari_segkit.models.unet.build_unet` (``net.config``).
    task : {'instance', 'semantic'}
    class_names : sequence of str
        Instance: ``["background", <object name>]``; semantic: the name of every class, the
        background first.
    normalization : dict, optional
        Default :data:`NORMALIZATION`.
    object_diameter : float, optional
        The object diameter, in pixels, the model works at (inference rescales images so that
        their objects have it).
    training, metrics : dict, optional
        How it was trained (images, settings) and scored (history, best); JSON-able.
    half : bool
        Store floating-point tensors as float16 (half the size).
    outputs : dict, optional
        How to read the output channels (see :func:`~napari_segkit.models.unet.unet_metadata`),
        e.g. the watershed thresholds recommended for this model.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from napari_segkit.models.unet import load_unet
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> net = build_unet(ndim=2, depth=1, width=2)
    >>> path = save_unet_checkpoint(net, tmp / "m.safetensors", architecture=net.config,
    ...                             task="instance", class_names=["background", "nucleus"],
    ...                             object_diameter=20, metrics={"best": 0.5})
    >>> m = load_unet(path, "cpu")
    >>> m.task, m.object_diameter, m.metadata["metrics"]["best"]
    ('instance', 20.0, 0.5)
    """
    state = module_or_state if isinstance(module_or_state, dict) else module_or_state.state_dict()
    return save_unet(
        state,
        path,
        config=dict(architecture),
        task=task,
        class_names=class_names,
        normalization=normalization or NORMALIZATION,
        object_diameter=object_diameter,
        training=training,
        metrics=metrics,
        outputs=outputs,
        half=half,
    )


def load_start(start_from: str | os.PathLike, ndim: int = 2) -> LoadedUNet:
    """A fresh (uncached, CPU) copy of the U-Net to fine-tune.

    ``start_from``: ``"nuclei"`` (the shipped nuclei U-Net of ``ndim``: ``"nuclei"`` or
    ``"nuclei_3d"``), a shipped name, a user model name or a checkpoint file (see
    :func:`napari_segkit.models.unet.load_unet`).

    Raises
    ------
    ValueError
        Unknown name, bad file, or a model of another ``ndim``.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}")
    source = SHIPPED_START[ndim] if start_from == "nuclei" else start_from
    model = load_unet(source, "cpu", cache=False)
    if model.ndim != ndim:
        raise ValueError(
            f"start_from={start_from!r} is a {model.ndim}D model; a {ndim}D model was asked "
            f"(ndim={ndim})"
        )
    return model


# --------------------------------------------------------------------------------------------
# data: checking the pairs, normalizing, rescaling, targets


@dataclass
class Sample:
    """One training image at the model's scale, with its targets.

    ``image``: (C, *spatial) float32, normalized. ``classes``: the class of every pixel (uint8).
    ``distance``: the normalized distance target (instance task) or None. ``mask``: the pixels
    that count. ``labels``: the instance (or class) labels, for the validation metric.
    """

    image: np.ndarray
    classes: np.ndarray
    distance: np.ndarray | None
    mask: np.ndarray
    labels: np.ndarray
    name: str = ""
    shape: tuple[int, ...] = ()  # the original spatial shape


def normalize_image(image: np.ndarray, percentiles: Sequence[float] = (1.0, 99.8)) -> np.ndarray:
    """Channels-first image to float32 with each channel's percentiles mapped to 0 and 1.

    The inference's normalization (:func:`napari_segkit.models.normalize.normalize`), channels
    first.

    Examples
    --------
    >>> x = normalize_image(np.arange(100, dtype=np.uint16).reshape(1, 10, 10), (0, 100))
    >>> float(x.min()), float(x.max())
    (0.0, 1.0)
    """
    from .normalize import normalize

    last = np.moveaxis(np.asarray(image), 0, -1)
    out = normalize(last, {"percentiles": [float(p) for p in percentiles]})
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def _channels_first(image: np.ndarray, labels_shape: tuple[int, ...], where: str) -> np.ndarray:
    """(C, *labels_shape) view of an image that is grey or has one extra channel axis."""
    if image.shape == labels_shape:
        return image[None]
    if image.ndim == len(labels_shape) + 1:
        # the channel axis is the one whose removal gives the labels' shape; last first (RGB)
        for axis in [image.ndim - 1, *range(image.ndim - 1)]:
            if image.shape[:axis] + image.shape[axis + 1 :] == labels_shape:
                chans = np.moveaxis(image, axis, 0)
                if axis == image.ndim - 1 and chans.shape[0] == 4:  # RGBA: drop alpha
                    chans = chans[:3]
                return chans
    raise ValueError(
        f"{where}: image shape {tuple(image.shape)} and labels shape {labels_shape} differ "
        f"(the image may only have one extra channel axis)"
    )


def check_pairs(
    pairs: Sequence[Sequence[Any]],
    *,
    ndim: int = 2,
    task: str = "instance",
    names: Sequence[str] | None = None,
    regions: Sequence[Any] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, str, np.ndarray | None]]:
    """Check training pairs and cut stacks into ``ndim``-D samples.

    Each pair is ``(image, labels)`` or ``(image, labels, mask)``; ``labels`` has ``ndim`` or
    more dimensions (a stack of planes trains a 2D model on each plane; planes without any label
    are dropped when other planes have some, as they are most likely not annotated); ``image``
    has the labels' shape or one extra channel axis (RGB last, or multichannel anywhere).

    ``regions`` (one per pair, or None) are rasterized over each pair's labels
    (:func:`~napari_segkit.algorithms.targets.rasterize_region`) and cut with them.

    Returns
    -------
    list of (image (C, *spatial), labels, mask or None, name, region mask or None)

    Raises
    ------
    ValueError
        Naming the pair and the problem.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    if pairs is None or len(pairs) == 0:
        raise ValueError("pairs is empty: give at least one (image, labels) pair")
    if names is not None and len(names) != len(pairs):
        raise ValueError(f"names has {len(names)} entries but there are {len(pairs)} pairs")
    if regions is not None and len(regions) != len(pairs):
        raise ValueError(f"regions has {len(regions)} entries but there are {len(pairs)} pairs")
    out = []
    channels = None
    for i, pair in enumerate(pairs):
        name = str(names[i]) if names is not None else f"image {i}"
        where = f"pair {i} ({name})"
        if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
            raise ValueError(f"{where}: expected (image, labels) or (image, labels, mask)")
        image = np.asarray(check_image(pair[0], name=f"{where} image"))
        labels = tg.check_labels(pair[1], name=f"{where} labels")
        if labels.ndim < ndim:
            raise ValueError(
                f"{where}: labels have {labels.ndim} dimensions (shape {labels.shape}); "
                f"a {ndim}D model needs at least {ndim}"
            )
        chans = _channels_first(image, labels.shape, where)
        if channels is None:
            channels = chans.shape[0]
        elif chans.shape[0] != channels:
            raise ValueError(
                f"{where}: image has {chans.shape[0]} channel(s) but the first pair has {channels}"
            )
        mask = None
        if len(pair) == 3 and pair[2] is not None:
            mask = np.asarray(pair[2])
            if mask.dtype != bool or mask.shape != labels.shape:
                raise ValueError(
                    f"{where}: the annotation mask must be a bool array of the labels' shape "
                    f"{labels.shape}; got {mask.dtype} {mask.shape}"
                )
        region = None
        if regions is not None and regions[i] is not None:
            try:
                region = tg.rasterize_region(regions[i], labels.shape)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
        lead = labels.shape[: labels.ndim - ndim]
        pieces = []
        for idx in np.ndindex(*lead):
            lab = labels[idx]
            m = None if mask is None else mask[idx]
            r = None if region is None else region[idx]
            img = chans[(slice(None), *idx)]
            sub = name if not lead else f"{name} {list(idx)}"
            pieces.append((img, lab, m, sub, r))
        if lead:
            annotated = [p for p in pieces if p[1].any() or p[2] is not None or p[4] is not None]
            pieces = annotated or pieces
        for img, lab, m, sub, r in pieces:
            if min(lab.shape) < 4 or lab.size < 256:
                raise ValueError(
                    f"{where}: {sub} is too small to train on (shape {lab.shape}; at least 4 "
                    f"pixels per axis and 256 in all)"
                )
            if task == "semantic" and int(lab.max()) > 255:
                raise ValueError(f"{where}: class id {int(lab.max())} > 255 in semantic labels")
            out.append((img, lab, m, sub, r))
    n_objects = sum(int(lab.any()) for _, lab, _, _, _ in out)
    if n_objects == 0:
        raise ValueError(
            "labels are empty: no pair has any labelled pixel (0 is background); draw or load "
            "labels first"
        )
    return out


def _resize_nearest(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of the last ``len(shape)`` axes (pixel centres, as grid_mode)."""
    index = []
    nd = len(shape)
    for axis, new in enumerate(shape):
        old = arr.shape[arr.ndim - nd + axis]
        src = np.minimum(((np.arange(new) + 0.5) * old / new).astype(np.int64), old - 1)
        index.append(src)
    lead = (slice(None),) * (arr.ndim - nd)
    return arr[lead + np.ix_(*index)]


def prepare_sample(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    task: str = "instance",
    mask: np.ndarray | None = None,
    annotation: str = "complete",
    region: Any = None,
    scale: float | Sequence[float] = 1.0,
    boundary_width: int = 1,
    percentiles: Sequence[float] = (1.0, 99.8),
    name: str = "",
) -> Sample:
    """Normalize, rescale by ``scale`` and build the targets of one (image, labels) pair.

    ``image`` is channels-first (:func:`check_pairs`). The annotation mask is ``mask`` if given,
    else :func:`~napari_segkit.algorithms.targets.annotation_mask` of ``annotation``/``region``;
    it is computed at the original scale, then rescaled with the labels. ``scale`` is one
    factor, or one per axis (anisotropic volumes made isotropic).

    Examples
    --------
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> img, lab = synthetic_nuclei((64, 64), n_nuclei=5, seed=0)
    >>> s = prepare_sample(img[None], lab, scale=0.5)
    >>> s.image.shape, s.classes.shape, int(s.classes.max())
    ((1, 32, 32), (32, 32), 2)
    """
    labels = tg.check_labels(labels)
    if mask is None:
        mask = tg.annotation_mask(labels, region=region, mode=annotation)
    norm = normalize_image(image, percentiles)
    shape = labels.shape
    factors = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(shape),))
    if np.any(np.abs(factors - 1.0) > 1e-6):
        new = tuple(max(4, int(round(n * f))) for n, f in zip(shape, factors, strict=True))
        zoom = [1.0] + [b / a for a, b in zip(shape, new, strict=True)]
        norm = ndi.zoom(norm, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)
        labels = _resize_nearest(labels, new)
        mask = _resize_nearest(mask, new)
    if task == "instance":
        classes, distance = tg.instance_targets(labels, boundary_width=boundary_width)
    else:
        classes, distance = tg.semantic_targets(labels), None
    return Sample(norm, classes, distance, np.ascontiguousarray(mask), labels, name, shape)


def _split_sample(s: Sample, fraction: float, depth: int) -> tuple[Sample, Sample] | None:
    """Cut one sample along its longest axis into (train, validation) parts; None if too small."""
    axis = int(np.argmax(s.labels.shape))
    n = s.labels.shape[axis]
    n_val = max(2**depth, int(round(n * fraction)))
    if n - n_val < 2**depth:
        return None

    def part(sl: slice, tag: str) -> Sample:
        idx = [slice(None)] * s.labels.ndim
        idx[axis] = sl
        t = tuple(idx)
        return Sample(
            np.ascontiguousarray(s.image[(slice(None), *t)]),
            s.classes[t],
            None if s.distance is None else s.distance[t],
            s.mask[t],
            s.labels[t],
            f"{s.name} {tag}",
            s.shape,
        )

    for val_sl, train_sl in (
        (slice(n - n_val, n), slice(0, n - n_val)),
        (slice(0, n_val), slice(n_val, n)),
    ):
        val = part(val_sl, "(validation part)")
        if (val.labels[val.mask] > 0).any():
            return part(train_sl, "(training part)"), val
    return None


# --------------------------------------------------------------------------------------------
# patches and augmentation


def _crop(arr: np.ndarray, start: Sequence[int], size: Sequence[int], fill: Any) -> np.ndarray:
    """``arr[..., start:start+size]`` over the last axes, padded with ``fill`` outside."""
    nd = len(size)
    lead = arr.shape[: arr.ndim - nd]
    out = np.full(lead + tuple(size), fill, dtype=arr.dtype)
    src, dst = [], []
    for s, z, n in zip(start, size, arr.shape[arr.ndim - nd :], strict=True):
        a, b = max(s, 0), min(s + z, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    pre = (slice(None),) * len(lead)
    out[pre + tuple(dst)] = arr[pre + tuple(src)]
    return out


class PatchSampler:
    """Random patches of prepared samples, centred on annotated objects most of the time.

    Parameters
    ----------
    samples : list of Sample
    patch_shape : tuple of int
        The network's input size.
    scale_jitter : (float, float) or None
        Zoom range: a patch is cut ``patch_shape / zoom`` large and resized (on the device).
    focus : float
        Probability that a patch is centred near an annotated object pixel (else anywhere).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch_shape: Sequence[int],
        *,
        scale_jitter: tuple[float, float] | None = (0.8, 1.25),
        focus: float = 0.8,
    ) -> None:
        if not samples:
            raise ValueError("no training sample")
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.scale_jitter = scale_jitter
        self.focus = float(focus)
        self.set_samples(samples)

    def set_samples(self, samples: Sequence[Sample]) -> None:
        """Replace all the samples."""
        self.samples = list(samples)
        index = [self._index(s) for s in self.samples]
        self._points = [points for points, _ in index]
        self._mass = np.array([mass for _, mass in index], dtype=np.float64)

    def replace(self, i: int, sample: Sample) -> None:
        """Replace sample ``i`` (a pool refreshed by a data generator)."""
        self.samples[i] = sample
        self._points[i], self._mass[i] = self._index(sample)

    @staticmethod
    def _index(s: Sample) -> tuple[np.ndarray, float]:
        """Pixels to centre patches on (at most 100 000), and the sample's weight.

        The centres are the annotated object pixels (annotated pixels if there is none), so that
        sparse objects are seen; the weight is the number of annotated pixels.
        """
        annotated = int(s.mask.sum())
        flat = np.flatnonzero(s.mask & (s.classes > 0))
        if flat.size == 0:
            flat = np.flatnonzero(s.mask)
        step = max(1, flat.size // 100_000)
        return flat[::step], float(max(annotated, 1))

    def refresh(self) -> None:
        """Called at the start of every epoch (a generator pool swaps samples in here)."""

    def crop(self, rng: np.random.Generator, zoom: float = 1.0) -> tuple[np.ndarray, ...]:
        """One patch: (image, classes, distance or None, mask), ``patch_shape / zoom`` large."""
        k = int(rng.choice(len(self.samples), p=self._mass / self._mass.sum()))
        s = self.samples[k]
        shape = s.labels.shape
        size = [max(2, int(round(p / zoom))) for p in self.patch_shape]
        points = self._points[k]
        if points.size and rng.random() < self.focus:
            centre = np.unravel_index(int(points[rng.integers(points.size)]), shape)
            start = [
                int(c) - z // 2 + int(rng.integers(-(z // 4), z // 4 + 1))
                for c, z in zip(centre, size, strict=True)
            ]
        else:
            start = [
                int(rng.integers(0, n - z + 1)) if n >= z else int(rng.integers(n - z, 1))
                for n, z in zip(shape, size, strict=True)
            ]
        return (
            _crop(s.image, start, size, 0.0),
            _crop(s.classes, start, size, 0),
            None if s.distance is None else _crop(s.distance, start, size, 0.0),
            _crop(s.mask, start, size, False),
        )

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray | None, ...]:
        """``n`` patches stacked: (images, classes, distances or None, masks).

        One zoom (``scale_jitter``) per batch, so that the patches stack and travel to the device
        in one transfer each; they are resized to ``patch_shape`` there.
        """
        zoom = 1.0
        if self.scale_jitter is not None:
            lo, hi = self.scale_jitter
            zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        crops = [self.crop(rng, zoom) for _ in range(int(n))]
        return tuple(
            None if crops[0][i] is None else np.stack([c[i] for c in crops]) for i in range(4)
        )


def _upload(arr: np.ndarray, device: Any) -> Any:
    import torch

    t = torch.from_numpy(arr)
    if device.type == "cuda":  # pinned: the copy overlaps with the previous step's compute
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _to_device_batch(
    batch: tuple[np.ndarray | None, ...],
    patch_shape: tuple[int, ...],
    device: Any,
    rng: np.random.Generator,
    augment: bool,
) -> tuple[Any, Any, Any, Any]:
    """Stacked patches to tensors on ``device``, resized to ``patch_shape`` and augmented.

    Small dtypes travel (float16 pools, uint8 classes) and are widened on the device. Each patch
    gets its own flips and 90 degree rotation (in the last two axes), gamma, contrast,
    brightness and noise.
    """
    import torch
    import torch.nn.functional as F

    nd = len(patch_shape)
    img, cls, dist, m = batch
    x = _upload(img, device).float()
    c = _upload(cls, device).long()
    d = None if dist is None else _upload(dist, device).float()
    mk = _upload(m, device)
    if tuple(cls.shape[1:]) != tuple(patch_shape):
        mode = "bilinear" if nd == 2 else "trilinear"
        x = F.interpolate(x, size=patch_shape, mode=mode, align_corners=False)
        c = F.interpolate(c[:, None].float(), size=patch_shape, mode="nearest")[:, 0].long()
        mk = F.interpolate(mk[:, None].float(), size=patch_shape, mode="nearest")[:, 0] > 0.5
        if d is not None:
            d = F.interpolate(d[:, None], size=patch_shape, mode="nearest")[:, 0]
    if not augment:
        return x, c, d, mk
    b = x.shape[0]
    maps = [c, mk] + ([d] if d is not None else [])

    def apply(fn: Callable[[Any, int], Any], which: np.ndarray) -> None:
        """Apply ``fn(tensor, channel_offset)`` to the patches selected by ``which``."""
        nonlocal x
        if not which.any():
            return
        idx = torch.from_numpy(np.flatnonzero(which)).to(device)
        x[idx] = fn(x[idx], 1)
        for t in maps:
            t[idx] = fn(t[idx], 0)

    for axis in range(nd):
        apply(lambda t, o, a=axis: torch.flip(t, [a + 1 + o]), rng.random(b) < 0.5)
    square = patch_shape[-1] == patch_shape[-2]
    ks = rng.integers(4, size=b) if square else 2 * rng.integers(2, size=b)
    for k in (1, 2, 3):
        apply(lambda t, o, k=k: torch.rot90(t, k, (nd - 1 + o, nd + o)), ks == k)
    ch = x.shape[1]
    shape = (b, ch) + (1,) * nd

    def rand(lo: float, hi: float, size: tuple[int, ...]) -> Any:
        return torch.from_numpy(rng.uniform(lo, hi, size).astype(np.float32)).to(device)

    gamma = torch.exp(rand(np.log(0.7), np.log(1.4), shape))
    x = torch.where(x > 0, x.clamp(min=0) ** gamma, x)
    x = x * rand(0.75, 1.25, shape) + rand(-0.1, 0.1, shape)
    sigma = rand(0.0, 0.06, (b, 1) + (1,) * nd)
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(rng.integers(2**62)))
    x = x + sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x.contiguous(), c.contiguous(), None if d is None else d.contiguous(), mk.contiguous()


# --------------------------------------------------------------------------------------------
# loss, prediction and the validation metric


def training_loss(
    out: Any,
    classes: Any,
    distance: Any,
    mask: Any,
    *,
    task: str = "instance",
    boundary_weight: float = 2.0,
    distance_weight: float = 1.0,
) -> Any:
    """The loss over the pixels where ``mask`` is True (the others give no gradient).

    Instance: cross-entropy on the background/interior/boundary logits (channels 0-2, boundary
    weighted by ``boundary_weight``) + ``distance_weight`` x L1 between ``sigmoid(channel 3)``
    and the distance target. Semantic: cross-entropy over all channels.
    """
    import torch
    import torch.nn.functional as F

    m = mask.float()
    denom = m.sum().clamp(min=1.0)
    if task == "instance":
        weight = torch.tensor([1.0, 1.0, float(boundary_weight)], device=out.device)
        ce = F.cross_entropy(out[:, :3].float(), classes, weight=weight, reduction="none")
        loss = (ce * m).sum() / denom
        if distance is not None:
            d = torch.sigmoid(out[:, 3].float())
            loss = loss + float(distance_weight) * ((d - distance).abs() * m).sum() / denom
        return loss
    ce = F.cross_entropy(out.float(), classes, reduction="none")
    return (ce * m).sum() / denom


def _maps(
    net: Any,
    image: np.ndarray,
    *,
    task: str,
    device: Any,
    tile_shape: Sequence[int] | None = None,
    amp: bool = True,
) -> np.ndarray:
    """The network's maps of a prepared (normalized, rescaled) channels-first sample.

    Inference's tiling (:class:`~napari_segkit.models.tiling.TiledPredictor`, blended overlaps)
    and output activations (:func:`napari_segkit.models.unet._forward`): instance, background /
    interior / boundary probabilities and the distance; semantic, one probability per class.
    """
    import torch

    from .devices import use_half
    from .tiling import TiledPredictor, check_tiling
    from .unet import _forward

    nd = image.ndim - 1
    if tile_shape is None:
        tile_shape = (DEFAULT_PATCH[nd] * 2,) * nd
    tile = tuple(max(16, int(t)) for t in tile_shape)  # tiles never exceed the image
    overlap = tuple(t // 4 for t in tile)
    tiles, overlaps = check_tiling(tile, overlap, nd)
    wrapped = LoadedUNet(net, dict(net.config), task, [], NORMALIZATION, None, "training")
    predictor = TiledPredictor(
        _forward(wrapped, use_half(device, amp)),
        int(net.config["out_channels"]),
        tile_size=tiles,
        overlap=overlaps,
        batch_size=4,
        multiple=2 ** int(net.config["depth"]),
    )
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
            ((_, maps),) = list(predictor.run([(0, x)]))
            return maps.cpu().numpy()
    finally:
        net.train(was_training)


def labels_from_maps(
    maps: np.ndarray,
    *,
    diameter: float | None = None,
    seed_threshold: float = 0.5,
    distance_threshold: float = 0.4,
) -> np.ndarray:
    """Objects from the 4 instance maps (:func:`~napari_segkit.algorithms.watershed.instances_from_maps`,
    with inference's ``min_size``: a tenth of a typical object of ``diameter``)."""
    from .unet import _min_size

    return ws.instances_from_maps(
        maps[1],
        maps[2],
        maps[3],
        min_size=_min_size(None, diameter, maps.ndim - 1),
        seed_threshold=seed_threshold,
        distance_threshold=distance_threshold,
    )


def _restrict_to_mask(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Drop predicted objects that lie mostly outside the annotated pixels."""
    if mask.all():
        return pred
    total = np.bincount(pred.ravel())
    inside = np.bincount(pred[mask].ravel(), minlength=total.size)
    keep = inside * 2 >= total
    keep[0] = True
    return np.where(keep[pred], pred, 0)


def evaluate(
    net: Any,
    samples: Sequence[Sample],
    *,
    task: str = "instance",
    device: Any = "cpu",
    tile_shape: Sequence[int] | None = None,
    amp: bool = True,
    boundary_weight: float = 2.0,
    diameter: float | None = None,
) -> dict[str, Any]:
    """Validation loss and metric of ``net`` on prepared samples.

    Instance: ``ap50`` = TP / (TP + FP + FN) at IoU >= 0.5 over all samples (predicted objects
    mostly outside the annotation mask are ignored). Semantic: ``iou`` = the mean over the
    foreground classes present of the IoU inside the mask.

    Returns
    -------
    dict
        ``metric`` (the value), ``metric_name``, ``loss``, and ``tp``/``fp``/``fn`` or
        ``per_class``.
    """
    import torch

    tp = fp = fn = 0
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    losses, weights = [], []
    for s in samples:
        maps = _maps(net, s.image, task=task, device=device, tile_shape=tile_shape, amp=amp)
        # the loss from the probabilities (log of them as logits gives the same cross-entropy)
        with torch.no_grad():
            p = torch.from_numpy(maps[None])
            if task == "instance":
                logits = torch.log(p[:, :3].clamp(min=1e-7))
                dist = torch.logit(p[:, 3:4].clamp(1e-6, 1 - 1e-6))
                out = torch.cat([logits, dist], 1)
                d = torch.from_numpy(s.distance[None])
            else:
                out, d = torch.log(p.clamp(min=1e-7)), None
            c = torch.from_numpy(s.classes[None].astype(np.int64))
            m = torch.from_numpy(s.mask[None])
            loss = training_loss(out, c, d, m, task=task, boundary_weight=boundary_weight)
        n = int(s.mask.sum())
        losses.append(float(loss) * n)
        weights.append(n)
        if task == "instance":
            pred = _restrict_to_mask(labels_from_maps(maps, diameter=diameter), s.mask)
            truth = np.where(s.mask, s.labels, 0)
            r = _metrics.match_instances(pred, truth, iou_threshold=0.5)
            tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        else:
            pred = np.argmax(maps, axis=0)
            for k in range(1, maps.shape[0]):
                pk, tk = (pred == k) & s.mask, (s.classes == k) & s.mask
                u = int((pk | tk).sum())
                if u:
                    inter[k] = inter.get(k, 0) + int((pk & tk).sum())
                    union[k] = union.get(k, 0) + u
    loss = float(np.sum(losses) / max(np.sum(weights), 1))
    if task == "instance":
        denom = tp + fp + fn
        ap = tp / denom if denom else 1.0
        return {"metric": ap, "metric_name": "AP@0.5", "loss": loss, "tp": tp, "fp": fp, "fn": fn}
    per_class = {k: inter[k] / union[k] for k in sorted(union)}
    metric = float(np.mean(list(per_class.values()))) if per_class else 1.0
    return {"metric": metric, "metric_name": "IoU", "loss": loss, "per_class": per_class}


# --------------------------------------------------------------------------------------------
# the training loop


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    ``checkpoint``: the file holding the best model. ``history``: one dict per epoch (the
    ``on_epoch`` payload). ``best_metric``/``best_epoch``: the best validation metric and its epoch
    (0 = the starting model; the metric is None without validation, when the training loss
    decides). ``initial_metric``: the starting model's metric. ``stopped``: the ``stop`` event
    ended the training early. ``model``: the best network (on the CPU, eval mode).
    ``metadata``: what the checkpoint's metadata holds (decoded).
    """

    checkpoint: Path
    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int
    metric_name: str
    initial_metric: float | None
    stopped: bool
    model: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _oom_message(batch_size: int, patch_shape: Sequence[int], where: str) -> str:
    smaller = "x".join(str(max(16, p // 2)) for p in patch_shape)
    return (
        f"out of memory on {where} while training with batch_size={batch_size} and patches of "
        f"{'x'.join(str(p) for p in patch_shape)}: try batch_size={max(1, batch_size // 2)} or "
        f"patch_size={smaller} (or device='cpu', slower)"
    )


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _guard(where: str, batch_size: int, patch_shape: Sequence[int]) -> Callable[..., Any]:
    """Run ``fn()``; out-of-memory errors become a MemoryError that says what to change."""

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BaseException as exc:
            if _is_oom(exc):
                raise MemoryError(_oom_message(batch_size, patch_shape, where)) from exc
            raise

    return run


def _loop(
    net: Any,
    *,
    step: Callable[[float], Any],
    validate: Callable[[], dict[str, Any] | None],
    save: Callable[[dict[str, Any], dict[str, Any]], Any],
    metric_name: str,
    guard: Callable[..., Any],
    epochs: int,
    steps_per_epoch: int,
    learning_rate: float,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
    stop: Any = None,
    before_epoch: Callable[[], Any] | None = None,
    evaluate_start: bool = True,
    start_is_candidate: bool = True,
) -> dict[str, Any]:
    """The epochs, the learning rate schedule, the choice and saving of the best model.

    Model-agnostic (the U-Net's :func:`fit` and Mask R-CNN's training use it): ``step(lr)`` runs
    one training step at learning rate ``lr`` and returns its loss (a tensor, not synchronised);
    ``validate()`` returns ``{"metric", "loss", ...}`` or None without validation data;
    ``guard(fn)`` runs ``fn`` translating out-of-memory errors. See :func:`fit` for the rest.
    """
    total = int(epochs) * int(steps_per_epoch)
    warm = max(1, min(200, total // 10))
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def key(metric: float | None, loss: float | None) -> tuple[float, float]:
        return (-math.inf if metric is None else metric, 0.0 if loss is None else -loss)

    def state_copy() -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    best: dict[str, Any] | None = None
    best_state = None
    initial = None
    if evaluate_start:
        v = guard(validate)
        initial = {
            "epoch": 0,
            "metric": None if v is None else v["metric"],
            "val_loss": None if v is None else v["loss"],
            "loss": None,
            "validation": v,
        }
        if v is not None:
            start = dict(initial, best=True)
            save(state_copy(), {"epoch": 0, "best": start, "history": history, "initial": initial})
            if start_is_candidate:
                best, best_state = start, state_copy()
    n_done = 0
    stopped = False
    lr = learning_rate
    for epoch in range(1, int(epochs) + 1):
        if before_epoch is not None:
            before_epoch()
        t0 = time.perf_counter()
        running, n_steps = None, 0  # summed on the device: no sync per step
        for _ in range(int(steps_per_epoch)):
            if stop is not None and stop.is_set():
                stopped = True
                break
            elapsed = time.perf_counter() - t_start
            if max_seconds is not None and elapsed >= max_seconds:
                break
            frac = elapsed / max_seconds if max_seconds else n_done / max(total, 1)
            ramp = (n_done + 1) / warm
            if max_seconds:  # a time limit may allow fewer steps than the warm-up: 5 % of it
                ramp = max(ramp, elapsed / (0.05 * max_seconds))
            lr = learning_rate * min(1.0, ramp)
            lr *= 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            loss = guard(lambda lr=lr: step(lr))
            running = loss if running is None else running + loss
            n_steps += 1
            n_done += 1
            report(progress, n_done, total)
        if n_steps == 0 or stopped:  # stopped mid-epoch: return at once, the best is saved
            break
        v = guard(validate)
        train_loss = float(running) / n_steps
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"the training diverged in epoch {epoch} (loss {train_loss}); the best model so "
                f"far is kept; try a lower learning_rate (now {learning_rate:g})"
            )
        entry = {
            "epoch": epoch,
            "epochs": int(epochs),
            "steps": n_steps,
            "loss": train_loss,
            "val_loss": None if v is None else v["loss"],
            "metric": None if v is None else v["metric"],
            "metric_name": metric_name,
            "seconds": time.perf_counter() - t0,
            "lr": lr,
            "best": False,
        }
        if v is None:
            improved = best is None or train_loss < best["loss"]
        else:
            improved = best is None or key(v["metric"], v["loss"]) > key(
                best["metric"], best["val_loss"]
            )
        if improved:
            entry["best"] = True
            best = dict(entry)
            best_state = state_copy()
        entry["best_metric"] = best["metric"]
        entry["best_epoch"] = best["epoch"]
        history.append(entry)
        if improved:
            save(best_state, {"epoch": epoch, "best": best, "history": history, "initial": initial})
        if on_epoch is not None:
            on_epoch(dict(entry))
        if stop is not None and stop.is_set():
            stopped = True
            break
        if max_seconds is not None and time.perf_counter() - t_start >= max_seconds:
            break
    if best_state is None:  # no validation and no step (epochs=0): the starting model
        best_state = state_copy()
        best = {"epoch": 0, "metric": None, "val_loss": None, "loss": None}
        save(best_state, {"epoch": 0, "best": best, "history": history, "initial": initial})
    return {
        "history": history,
        "best": best,
        "best_state": best_state,
        "initial": initial,
        "stopped": stopped,
        "steps": n_done,
        "seconds": time.perf_counter() - t_start,
    }


def fit(
    net: Any,
    sampler: PatchSampler,
    val_samples: Sequence[Sample],
    *,
    task: str,
    save: Callable[[dict[str, Any], dict[str, Any]], Any],
    device: Any = "cpu",
    epochs: int = 30,
    steps_per_epoch: int = 50,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    augment: bool = True,
    amp: bool = True,
    boundary_weight: float = 2.0,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
    stop: Any = None,
    seed: int = 0,
    evaluate_start: bool = True,
    start_is_candidate: bool = True,
    tile_shape: Sequence[int] | None = None,
    diameter: float | None = None,
) -> dict[str, Any]:
    """Train a U-Net on patches: AdamW, warm-up then cosine learning rate, best model saved.

    ``save(state_dict, summary)`` is called with the CPU copy of the best weights and a summary
    dict (``epoch``, ``metric``, ``history``...) at the start (epoch 0, when
    ``evaluate_start``) and after every epoch that improves the validation metric (ties: lower
    validation loss; without validation samples: lower training loss). The starting model
    competes only if ``start_is_candidate`` (fine-tuning: never end worse than the start); a new
    network is saved at the start, so that the file exists, and replaced after the first epoch
    whatever its score (the chance matches of random weights are no model to keep).
    ``max_seconds`` ends the training after that time (the learning rate then follows the
    time). ``stop`` (anything with ``is_set()``) ends it after the current step; the best model
    stays saved. ``sampler.refresh()`` is called before every epoch. ``diameter``: the objects'
    size in the samples (the model's ``object_diameter``), for the validation's ``min_size``.

    Returns
    -------
    dict
        ``history``, ``best`` (the best epoch's dict), ``best_state``, ``initial``, ``stopped``,
        ``steps``, ``seconds``.
    """
    import torch

    dev = device if hasattr(device, "type") else resolve_device(device)
    rng = np.random.default_rng(seed)
    net.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    use_amp = bool(amp) and dev.type == "cuda"
    amp_dtype = torch.bfloat16
    if use_amp and not torch.cuda.is_bf16_supported():
        amp_dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    patch_shape = sampler.patch_shape
    where = f"the {dev.type.upper()} device" if dev.type != "cpu" else "the CPU"

    def step(lr: float) -> Any:
        for g in opt.param_groups:
            g["lr"] = lr
        x, c, d, m = _to_device_batch(
            sampler.batch(batch_size, rng), patch_shape, dev, rng, augment
        )
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
            out = net(x)
        loss = training_loss(out, c, d, m, task=task, boundary_weight=boundary_weight)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    def validate() -> dict[str, Any] | None:
        if not val_samples:
            return None
        return evaluate(
            net,
            val_samples,
            task=task,
            device=dev,
            tile_shape=tile_shape,
            amp=amp,
            boundary_weight=boundary_weight,
            diameter=diameter,
        )

    def before_epoch() -> None:
        sampler.refresh()
        net.train()

    return _loop(
        net,
        step=step,
        validate=validate,
        save=save,
        metric_name="AP@0.5" if task == "instance" else "IoU",
        guard=_guard(where, batch_size, patch_shape),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate,
        max_seconds=max_seconds,
        progress=progress,
        on_epoch=on_epoch,
        stop=stop,
        before_epoch=before_epoch,
        evaluate_start=evaluate_start,
        start_is_candidate=start_is_candidate,
    )


def _patch_shape(
    patch_size: int | Sequence[int] | None, ndim: int, samples: Sequence[Sample], depth: int
) -> tuple[int, ...]:
    mult = 2**depth
    if patch_size is None:
        patch_size = DEFAULT_PATCH[ndim]
    sizes = (int(patch_size),) * ndim if np.isscalar(patch_size) else tuple(patch_size)
    if len(sizes) != ndim or any(int(s) < 8 for s in sizes):
        raise ValueError(f"patch_size must be an int >= 8 or {ndim} of them; got {patch_size!r}")
    largest = np.max([s.labels.shape for s in samples], axis=0)
    return tuple(
        max(mult, -(-min(int(p), int(n)) // mult) * mult)
        for p, n in zip(sizes, largest, strict=True)
    )


def train(
    pairs: Sequence[Sequence[Any]],
    *,
    model: str = "unet",
    task: str = "instance",
    start_from: str | os.PathLike | None = None,
    ndim: int = 2,
    epochs: int = 30,
    steps_per_epoch: int = 50,
    batch_size: int = 8,
    patch_size: int | Sequence[int] | None = None,
    learning_rate: float | None = None,
    val_fraction: float = 0.2,
    augment: bool = True,
    device: Any = "auto",
    checkpoint: str | os.PathLike | None = None,
    diameter: float | None = None,
    object_diameter: float | None = None,
    annotation: str = "complete",
    regions: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    architecture: dict[str, Any] | None = None,
    boundary_weight: float = 2.0,
    amp: bool = True,
    max_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[dict[str, Any]], Any] | None = None,
    stop: Any = None,
    seed: int = 0,
) -> TrainingResult:
    """Train (or fine-tune) a U-Net on image/label pairs; the best model is saved as it improves.

    Parameters
    ----------
    pairs : sequence of (image, labels) or (image, labels, mask)
        numpy arrays. ``labels`` are instance IDs (``task="instance"``) or class ids
        (``"semantic"``), 0 the background, of ``ndim`` dimensions (or a stack of them: each
        plane/volume is a sample). ``image`` has the labels' shape, or one more axis for
        channels (RGB last, or multichannel); any numeric dtype; each is normalized by its 1st
        and 99.8th percentiles per channel, as inference does. ``mask`` (bool, the labels'
        shape) marks the pixels that count in the loss; it overrides ``annotation``.
    model : {'unet', 'maskrcnn'}
        ``'maskrcnn'``: train a Mask R-CNN (2D instances only, complete annotation only, at
        the images' own scale, no validation loss); ``start_from`` is ``"nuclei"`` (the shipped
        model: the sensible choice for a few images), a COCO architecture name (its heads are
        replaced for one class), a Mask R-CNN checkpoint, or ``None`` (the small architecture
        from scratch). The checkpoint is in :mod:`napari_segkit.models.maskrcnn`'s format (load
        it with ``load_model``), the metric AP@0.5 from ``predict_instances``.
    task : {'instance', 'semantic'}
    start_from : None, 'nuclei', a model name or path
        Fine-tune: ``"nuclei"`` (the shipped nuclei U-Net of ``ndim``), a user model's name or a
        checkpoint (see :func:`load_start`); its architecture, task, normalization and
        ``object_diameter`` are kept and its weights are the starting point.
    ndim : {2, 3}
        A 2D or a 3D model.
    epochs, steps_per_epoch : int
        Training length: ``epochs x steps_per_epoch`` batches; validation after every epoch.
        ``epochs=0`` only measures and saves the starting model. The best epoch is kept (for
        fine-tuning, the starting model too if no epoch beats it).
    batch_size : int
        Patches per step.
    patch_size : int or sequence of int, optional
        Patch side (256 in 2D, 128 in 3D), reduced to the largest image and rounded up to a
        multiple of ``2**depth``.
    learning_rate : float, optional
        1e-3 for a new model, 3e-4 to fine-tune.
    val_fraction : float
        Share of the images held out for validation (at least one); with a single image, that
        share of it along its longest axis. 0: no validation (the training loss picks the best).
    augment : bool
        Random flips, 90 degree rotations (in the plane), zoom (0.8-1.25), gamma, intensity and
        noise.
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    checkpoint : path, optional
        Where the best model goes (``.safetensors``); a temporary file if omitted.
    diameter : float, optional
        Typical object diameter in the training images, in pixels (as ``diameter`` of
        :func:`~napari_segkit.models.unet.predict_unet`); measured from the labels (median
        equivalent diameter, :func:`~napari_segkit.algorithms.targets.median_diameter`) if
        omitted.
    object_diameter : float, optional
        The object diameter the model works at (its checkpoint's ``object_diameter``): the
        images are rescaled by ``object_diameter / diameter``. Default: the ``start_from``
        model's, else ``diameter`` (no rescaling).
    annotation : {'complete', 'objects'}
        For pairs without a mask: every pixel counts (``'complete'``), or only the labelled
        objects and a background ring around them (``'objects'``: partial annotation). See
        :func:`~napari_segkit.algorithms.targets.annotation_mask`.
    regions : sequence, optional
        Per pair, a region the user annotated completely (mask, slices or polygon), or None.
    names : sequence of str, optional
        Per pair, a name recorded in the checkpoint (e.g. the layer's name).
    class_names : sequence of str, optional
        Instance: ``["background", "object"]`` by default; semantic: one per class id.
    architecture : dict, optional
        ``depth``, ``width``, ``norm`` of a new model (:data:`DEFAULT_ARCHITECTURE`).
    boundary_weight : float
        Cross-entropy weight of the boundary class (instance task).
    amp : bool
        bfloat16 (else float16) autocast on a CUDA device.
    max_seconds : float, optional
        End the training after this time (the epoch in progress is cut short and validated;
        the learning rate then follows the time).
    progress : callable, optional
        ``progress(step, total_steps)`` after every step; may raise to cancel (the checkpoint
        keeps the best model so far).
    on_epoch : callable, optional
        ``on_epoch(entry)`` after every epoch with ``entry`` a dict: ``epoch``, ``epochs``,
        ``steps``, ``loss`` (mean training loss), ``val_loss``, ``metric`` (validation AP@0.5
        or IoU, None without validation), ``metric_name``, ``seconds`` (the epoch's),
        ``lr``, ``best`` (this epoch improved and was saved), ``best_metric``, ``best_epoch``.
    stop : threading.Event, optional
        Set it to stop after the current step; the best model so far stays in ``checkpoint``.
    seed : int
        Seeds the initial weights, the split, the patches and the augmentation.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        Bad input: an image and its labels of different shapes, labels that are empty, negative
        or not integers, images too small, an unknown ``start_from``, a model that does not fit
        the data (channels, classes, ndim). A single labelled object is allowed (the validation
        then comes from a part of that image, or is skipped if no part holds an object).
    MemoryError
        Out of (GPU) memory, suggesting a smaller ``batch_size`` or ``patch_size``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from napari_segkit.datasets import synthetic_nuclei
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> pairs = [synthetic_nuclei((64, 64), n_nuclei=6, seed=s) for s in range(3)]
    >>> res = train(pairs, epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32,
    ...             architecture={"depth": 1, "width": 4}, device="cpu",
    ...             checkpoint=tmp / "n.safetensors")
    >>> res.checkpoint.name, len(res.history)
    ('n.safetensors', 1)
    """
    import torch

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    for name, value, lo in (
        ("epochs", epochs, 0),
        ("steps_per_epoch", steps_per_epoch, 1),
        ("batch_size", batch_size, 1),
    ):
        if not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if annotation not in tg.ANNOTATION_MODES:
        raise ValueError(f"annotation must be one of {tg.ANNOTATION_MODES}; got {annotation!r}")
    if regions is not None and len(regions) != len(pairs):
        raise ValueError(f"regions has {len(regions)} entries but there are {len(pairs)} pairs")
    if learning_rate is not None and not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate}")
    if max_seconds is not None and not float(max_seconds) > 0:
        raise ValueError(f"max_seconds must be > 0 or None; got {max_seconds}")
    dev = resolve_device(device)
    if model == "maskrcnn":
        return _train_maskrcnn(
            pairs,
            start_from=start_from,
            ndim=ndim,
            task=task,
            annotation=annotation,
            regions=regions,
            names=names,
            class_names=class_names,
            epochs=int(epochs),
            steps_per_epoch=int(steps_per_epoch),
            batch_size=int(batch_size),
            patch_size=patch_size,
            learning_rate=learning_rate,
            val_fraction=float(val_fraction),
            augment=augment,
            device=dev,
            checkpoint=checkpoint,
            diameter=diameter,
            amp=amp,
            max_seconds=max_seconds,
            progress=progress,
            on_epoch=on_epoch,
            stop=stop,
            seed=seed,
        )

    # the starting model (fine-tuning) fixes the architecture, task and scale
    start = None
    if start_from is not None:
        start = load_start(start_from, ndim)
        if start.task != task:
            raise ValueError(
                f"start_from={start_from!r} is a {start.task} model; task={task!r} was asked"
            )
    checked = check_pairs(pairs, ndim=ndim, task=task, names=names, regions=regions)
    in_channels = checked[0][0].shape[0]
    if start is not None and start.config["in_channels"] != in_channels:
        if start.config["in_channels"] == 1 and in_channels == 3:
            from ..algorithms.image import LUMA

            checked = [
                (np.tensordot(LUMA, img.astype(np.float32), axes=(0, 0))[None], lab, m, n, r)
                for img, lab, m, n, r in checked
            ]
            in_channels = 1
        else:
            raise ValueError(
                f"start_from={start_from!r} takes {start.config['in_channels']} channel(s) but "
                f"the images have {in_channels}"
            )

    if task == "semantic":
        top = max(int(lab.max()) for _, lab, _, _, _ in checked)
        n_out = top + 1 if start is None else int(start.config["out_channels"])
        if top >= n_out:
            raise ValueError(
                f"the labels hold class {top} but start_from={start_from!r} predicts "
                f"{n_out} classes (0..{n_out - 1})"
            )
        n_out = max(n_out, 2)
    else:
        n_out = INSTANCE_CHANNELS
    if class_names is None:
        if start is not None and start.class_names:
            class_names = start.class_names
        elif task == "instance":
            class_names = ["background", "object"]
        else:
            class_names = ["background"] + [f"class {k}" for k in range(1, n_out)]
    class_names = [str(c) for c in class_names]
    if task == "semantic" and len(class_names) != n_out:
        raise ValueError(f"class_names has {len(class_names)} names for {n_out} classes")

    # scale: the objects of the images (diameter) appear at the model's object_diameter
    measured = None
    if task == "instance":
        diam = [tg.median_diameter(lab) for _, lab, _, _, _ in checked if lab.any()]
        measured = float(np.median(diam)) if diam else None
    for name, value in (("diameter", diameter), ("object_diameter", object_diameter)):
        if value is not None and not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name} must be a positive number of pixels or None; got {value}")
    if diameter is None:
        diameter = measured
    if object_diameter is None and start is not None:
        object_diameter = start.object_diameter
    if object_diameter is None:
        object_diameter = diameter
    scale = 1.0
    if object_diameter is not None and diameter:
        scale = float(object_diameter) / float(diameter)
        if not 0.05 <= scale <= 20:
            raise ValueError(
                f"rescaling by {scale:.3g} (object_diameter {object_diameter:g} of the model / "
                f"diameter {diameter:.3g} of the objects) is out of range 0.05..20; check diameter"
            )
    norm = dict(start.normalization) if start is not None else dict(NORMALIZATION)

    config = dict(start.config) if start is not None else {}
    if start is None:
        config = {"ndim": ndim, "in_channels": in_channels, "out_channels": n_out}
        config.update(DEFAULT_ARCHITECTURE[ndim])
        if architecture:
            unknown = set(architecture) - {"depth", "width", "norm"}
            if unknown:
                raise ValueError(f"architecture accepts depth, width, norm; got {sorted(unknown)}")
            config.update(architecture)
    depth = int(config["depth"])

    samples = []
    for img, lab, m, name, region in checked:
        samples.append(
            prepare_sample(
                img,
                lab,
                task=task,
                mask=m,
                annotation=annotation,
                region=region,
                scale=scale,
                percentiles=norm.get("percentiles", NORMALIZATION["percentiles"]),
                name=name,
            )
        )
    annotated = sum(int(s.mask.sum()) for s in samples)
    if annotated < 64:
        raise ValueError(
            f"only {annotated} annotated pixel(s) count in the loss; label more (at least 64)"
        )

    # validation split: by image, or by part of the single image
    rng = np.random.default_rng(seed)
    val: list[Sample] = []
    train_set = list(samples)
    if val_fraction > 0:
        with_objects = [i for i, s in enumerate(samples) if (s.labels[s.mask] > 0).any()]
        if len(samples) >= 2 and len(with_objects) >= 1:
            n_val = min(max(1, int(round(val_fraction * len(samples)))), len(samples) - 1)
            n_val = min(n_val, len(with_objects))
            chosen = set(rng.choice(with_objects, size=n_val, replace=False).tolist())
            val = [s for i, s in enumerate(samples) if i in chosen]
            train_set = [s for i, s in enumerate(samples) if i not in chosen]
        elif len(samples) == 1:
            split = _split_sample(samples[0], float(val_fraction), depth)
            if split is not None:
                train_set, val = [split[0]], [split[1]]
    patch_shape = _patch_shape(patch_size, ndim, train_set, depth)
    sampler = PatchSampler(train_set, patch_shape, scale_jitter=(0.8, 1.25) if augment else None)

    if start is not None:
        net = start.module
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_unet(**config)
    if learning_rate is None:
        learning_rate = 3e-4 if start is not None else 1e-3

    if checkpoint is None:
        checkpoint = Path(tempfile.mkdtemp(prefix="segkit-train-")) / "model.safetensors"
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != ".safetensors":
        raise ValueError(f"checkpoint must be a .safetensors file; got {checkpoint}")
    metric_name = "AP@0.5" if task == "instance" else "IoU"
    training_info = {
        "images": [
            {"name": s.name, "shape": list(s.shape), "annotated_pixels": int(s.mask.sum())}
            for s in samples
        ],
        "validation_images": [s.name for s in val],
        "annotation": annotation,
        "epochs": int(epochs),
        "steps_per_epoch": int(steps_per_epoch),
        "batch_size": int(batch_size),
        "patch_shape": list(patch_shape),
        "learning_rate": float(learning_rate),
        "augment": bool(augment),
        "diameter": diameter,
        "scale": scale,
        "start_from": None if start_from is None else str(start_from),
        "device": str(dev),
        "seed": int(seed),
        "trained_by": "napari_segkit.models.training.train",
    }

    def save(state: dict[str, Any], summary: dict[str, Any]) -> None:
        hist = [{k: v for k, v in e.items() if k != "validation"} for e in summary["history"]]
        init = summary.get("initial")
        metrics = {
            "name": metric_name,
            "best": summary["best"].get("metric"),
            "best_epoch": summary["epoch"],
            "initial": None if init is None else init.get("metric"),
            "history": hist,
        }
        info = dict(training_info, epochs_done=summary["epoch"])
        save_unet_checkpoint(
            state,
            checkpoint,
            architecture=config,
            task=task,
            class_names=class_names,
            normalization=norm,
            object_diameter=object_diameter,
            training=info,
            metrics=metrics,
        )

    out = fit(
        net,
        sampler,
        val,
        task=task,
        save=save,
        device=dev,
        epochs=int(epochs),
        steps_per_epoch=int(steps_per_epoch),
        batch_size=int(batch_size),
        learning_rate=float(learning_rate),
        augment=augment,
        amp=amp,
        boundary_weight=boundary_weight,
        max_seconds=max_seconds,
        progress=progress,
        on_epoch=on_epoch,
        stop=stop,
        seed=seed,
        start_is_candidate=start is not None,
        diameter=object_diameter,
    )
    net.load_state_dict(out["best_state"])
    net = net.to("cpu").eval()
    best = out["best"]
    return TrainingResult(
        checkpoint=checkpoint,
        history=out["history"],
        best_metric=best.get("metric"),
        best_epoch=int(best.get("epoch", 0)),
        metric_name=metric_name,
        initial_metric=None if out["initial"] is None else out["initial"]["metric"],
        stopped=out["stopped"],
        model=net,
        metadata=read_metadata(checkpoint),
    )


# --------------------------------------------------------------------------------------------
# Mask R-CNN through the same loop (models.maskrcnn's architectures, checkpoints, inference)

#: The Mask R-CNN trained from scratch, and its input normalization (as the shipped nuclei model).
MASKRCNN_SCRATCH = "maskrcnn_resnet10_fpn_small"
MASKRCNN_NORMALIZATION = {
    "percentiles": [1.0, 99.8],
    "uint8_rgb": "percentile",
    "mean": [0.0] * 3,
    "std": [1.0] * 3,
}


@dataclass
class _RawSample:
    """A Mask R-CNN training image: raw channels-last pixels, their normalization, labels."""

    image: np.ndarray  # (H, W, C) raw
    lo: np.ndarray
    scale: np.ndarray
    labels: np.ndarray
    name: str
    shape: tuple[int, ...]


def _maskrcnn_targets(labels: np.ndarray, min_area: int = 6) -> dict[str, np.ndarray]:
    """torchvision targets of a label crop: boxes (x0, y0, x1, y1), labels 1, masks."""
    boxes, masks = [], []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        m = labels == i
        if int(m[box].sum()) < min_area:
            continue
        ys, xs = box
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
        masks.append(m)
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.ones(len(boxes), np.int64),
        "masks": (np.stack(masks) if masks else np.zeros((0, *labels.shape), bool)).astype(
            np.uint8
        ),
    }


def _load_maskrcnn_start(start_from: Any) -> Any:
    """A fresh (uncached) Mask R-CNN to train, with 2 classes (background, object)."""
    from . import maskrcnn as mr

    if start_from is None:
        module = mr.build_architecture(MASKRCNN_SCRATCH, 2)
        return mr.LoadedModel(
            module, MASKRCNN_SCRATCH, ["background", "object"], dict(MASKRCNN_NORMALIZATION), "new"
        )
    from .weights import find_user_model, shipped_path

    if isinstance(start_from, str) and start_from in mr.SHIPPED_MODELS:
        loaded = mr.load_checkpoint(shipped_path(mr.FAMILY, start_from), "cpu")
        loaded.source = start_from
    elif isinstance(start_from, str) and start_from in mr.COCO_ARCHITECTURES:
        loaded = mr.load_coco(start_from, "cpu")
    else:
        user = None
        if isinstance(start_from, str) and not Path(start_from).expanduser().exists():
            user = find_user_model(start_from, mr.FAMILY)
        loaded = mr.load_checkpoint(user or start_from, "cpu")
    if loaded.num_classes != 2:  # e.g. COCO: new heads for one object class
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

        heads = loaded.module.roi_heads
        heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, 2)
        mp = heads.mask_predictor
        heads.mask_predictor = MaskRCNNPredictor(
            mp.conv5_mask.in_channels, mp.conv5_mask.out_channels, 2
        )
        loaded.class_names = ["background", "object"]
    return loaded


def _train_maskrcnn(
    pairs: Sequence[Sequence[Any]],
    *,
    start_from: Any,
    ndim: int,
    task: str,
    annotation: str,
    regions: Sequence[Any] | None,
    names: Sequence[str] | None,
    class_names: Sequence[str] | None,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    patch_size: Any,
    learning_rate: float | None,
    val_fraction: float,
    augment: bool,
    device: Any,
    checkpoint: Any,
    diameter: float | None,
    amp: bool,
    max_seconds: float | None,
    progress: ProgressCallback | None,
    on_epoch: Callable[[dict[str, Any]], Any] | None,
    stop: Any,
    seed: int,
) -> TrainingResult:
    """:func:`train` for ``model="maskrcnn"`` (see there)."""
    import torch

    from . import maskrcnn as mr
    from .normalize import normalization_range

    if ndim != 2 or task != "instance":
        raise ValueError(
            f"Mask R-CNN trains 2D instance models only; got ndim={ndim}, task={task!r}"
        )
    has_masks = any(len(p) == 3 and p[2] is not None for p in pairs)
    if annotation != "complete" or regions is not None or has_masks:
        raise ValueError(
            "Mask R-CNN learns every unlabelled pixel as background, so it needs completely "
            "annotated images (annotation='complete', no masks or regions); use model='unet' "
            "for partial annotation"
        )
    checked = check_pairs(pairs, ndim=2, task="instance", names=names)
    channels = checked[0][0].shape[0]
    if channels not in (1, 3):
        raise ValueError(f"Mask R-CNN takes grey or RGB images; these have {channels} channels")
    loaded = _load_maskrcnn_start(start_from)
    norm = loaded.normalization
    if class_names is not None:
        if len(class_names) != 2:
            raise ValueError(f"class_names must be 2 names (background, object); got {class_names}")
        loaded.class_names = [str(c) for c in class_names]
    samples = []
    for img, lab, _, name, _ in checked:
        raw = np.ascontiguousarray(np.moveaxis(img, 0, -1))
        lo, sc = normalization_range(raw, norm)
        samples.append(_RawSample(raw, lo, sc, lab.astype(np.int32), name, lab.shape))

    # validation: by image, or the last part of a single image along its longest axis
    rng = np.random.default_rng(seed)
    train_set, val = list(samples), []
    if val_fraction > 0:
        with_objects = [i for i, s in enumerate(samples) if s.labels.any()]
        if len(samples) >= 2 and with_objects:
            n_val = min(max(1, int(round(val_fraction * len(samples)))), len(samples) - 1)
            chosen = set(
                rng.choice(with_objects, size=min(n_val, len(with_objects)), replace=False).tolist()
            )
            val = [s for i, s in enumerate(samples) if i in chosen]
            train_set = [s for i, s in enumerate(samples) if i not in chosen]
        elif len(samples) == 1:
            s = samples[0]
            axis = int(np.argmax(s.shape))
            n = s.shape[axis]
            n_val = max(32, int(round(n * val_fraction)))
            if n - n_val >= 32:
                cut = [slice(None)] * 2
                cut_v, cut_t = list(cut), list(cut)
                cut_v[axis], cut_t[axis] = slice(n - n_val, n), slice(0, n - n_val)
                tv, tt = tuple(cut_v), tuple(cut_t)
                v = _RawSample(
                    s.image[tv], s.lo, s.scale, s.labels[tv], f"{s.name} (validation part)", s.shape
                )
                if v.labels.any():
                    t = _RawSample(
                        s.image[tt],
                        s.lo,
                        s.scale,
                        s.labels[tt],
                        f"{s.name} (training part)",
                        s.shape,
                    )
                    train_set, val = [t], [v]
    side = DEFAULT_PATCH[2] if patch_size is None else int(np.max(patch_size))
    largest = max(max(s.labels.shape) for s in train_set)
    side = max(32, min(side, -(-largest // 32) * 32))
    weights = np.array([s.labels.size for s in train_set], np.float64)
    weights /= weights.sum()

    module = loaded.module.to(device)
    module.transform.min_size = (side,)
    module.transform.max_size = side  # no resizing: the model learns at the native pixel size
    module.rpn._pre_nms_top_n["training"] = 3000  # crowded images
    module.rpn._post_nms_top_n["training"] = 3000
    fine_tune = start_from is not None
    if learning_rate is None:
        learning_rate = 5e-4 if fine_tune else 2e-3
    opt = torch.optim.AdamW(module.parameters(), lr=float(learning_rate), weight_decay=1e-4)
    use_amp = bool(amp) and device.type == "cuda"

    def train_mode() -> None:
        module.train()
        if fine_tune:  # small batches: keep the pretrained batch-norm statistics
            for m in module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def crop() -> tuple[Any, dict[str, Any]]:
        s = train_set[int(rng.choice(len(train_set), p=weights))]
        h, w = s.labels.shape
        y0 = int(rng.integers(0, h - side + 1)) if h > side else 0
        x0 = int(rng.integers(0, w - side + 1)) if w > side else 0
        raw = s.image[y0 : y0 + side, x0 : x0 + side]
        lab = s.labels[y0 : y0 + side, x0 : x0 + side]
        x = (raw.astype(np.float32) - s.lo) * s.scale
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if augment:
            k = int(rng.integers(4))
            x, lab = np.rot90(x, k), np.rot90(lab, k)
            if rng.random() < 0.5:
                x, lab = x[:, ::-1], lab[:, ::-1]
            x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.05, 0.05)
        x = np.ascontiguousarray(np.moveaxis(x, -1, 0))
        if x.shape[0] == 1:
            x = np.repeat(x, 3, axis=0)
        lab = np.ascontiguousarray(lab)
        _, relabeled = np.unique(lab, return_inverse=True)
        target = _maskrcnn_targets(relabeled.reshape(lab.shape).astype(np.int32))
        return (
            torch.from_numpy(x).to(device),
            {k: torch.from_numpy(v).to(device) for k, v in target.items()},
        )

    def step(lr: float) -> Any:
        for g in opt.param_groups:
            g["lr"] = lr
        images, targets = zip(*(crop() for _ in range(batch_size)), strict=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            losses = module(list(images), list(targets))
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        opt.step()
        return loss.detach().float()

    def validate() -> dict[str, Any] | None:
        if not val:
            return None
        module.eval()
        model = mr.LoadedModel(
            module, loaded.architecture, loaded.class_names, norm, "training", device
        )
        tp = fp = fn = 0
        try:
            for s in val:
                res = mr.predict_instances(
                    s.image if s.image.shape[-1] == 3 else s.image[..., 0],
                    model,
                    device=device.type,
                )
                r = _metrics.match_instances(res.labels, s.labels, iou_threshold=0.5)
                tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        finally:
            train_mode()
        denom = tp + fp + fn
        return {"metric": tp / denom if denom else 1.0, "loss": None, "tp": tp, "fp": fp, "fn": fn}

    if checkpoint is None:
        checkpoint = Path(tempfile.mkdtemp(prefix="segkit-train-")) / "model.safetensors"
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != ".safetensors":
        raise ValueError(f"checkpoint must be a .safetensors file; got {checkpoint}")
    measured = [tg.median_diameter(s.labels) for s in samples if s.labels.any()]
    info = {
        "images": [{"name": s.name, "shape": list(s.shape)} for s in samples],
        "validation_images": [s.name for s in val],
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "patch_shape": [side, side],
        "learning_rate": float(learning_rate),
        "start_from": None if start_from is None else str(start_from),
        "diameter": diameter or (float(np.median(measured)) if measured else None),
        "device": str(device),
        "seed": int(seed),
        "trained_by": "napari_segkit.models.training.train(model='maskrcnn')",
    }

    class _State:
        def __init__(self, state: dict[str, Any]) -> None:
            self.state = state

        def state_dict(self) -> dict[str, Any]:
            return self.state

    def save(state: dict[str, Any], summary: dict[str, Any]) -> None:
        init = summary.get("initial")
        metrics = {
            "name": "AP@0.5",
            "best": summary["best"].get("metric"),
            "best_epoch": summary["epoch"],
            "initial": None if init is None else init.get("metric"),
            "history": [
                {k: v for k, v in e.items() if k != "validation"} for e in summary["history"]
            ],
        }
        mr.save_checkpoint(  # atomic (models.checkpoints.save_checkpoint)
            _State(state),
            checkpoint,
            architecture=loaded.architecture,
            class_names=loaded.class_names,
            normalization=norm,
            extra={"training": dict(info, epochs_done=summary["epoch"]), "metrics": metrics},
        )

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    train_mode()
    where = f"the {device.type.upper()} device" if device.type != "cpu" else "the CPU"
    out = _loop(
        module,
        step=step,
        validate=validate,
        save=save,
        metric_name="AP@0.5",
        guard=_guard(where, batch_size, (side, side)),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        learning_rate=float(learning_rate),
        max_seconds=max_seconds,
        progress=progress,
        on_epoch=on_epoch,
        stop=stop,
        before_epoch=train_mode,
        start_is_candidate=fine_tune,
    )
    module.load_state_dict(out["best_state"])
    module = module.to("cpu").eval()
    best = out["best"]
    meta = read_metadata(checkpoint)
    return TrainingResult(
        checkpoint=checkpoint,
        history=out["history"],
        best_metric=best.get("metric"),
        best_epoch=int(best.get("epoch", 0)),
        metric_name="AP@0.5",
        initial_metric=None if out["initial"] is None else out["initial"]["metric"],
        stopped=out["stopped"],
        model=module,
        metadata=meta,
    )
