"""Mask R-CNN and the CNN widget's models block by block, with one worker per GPU.

:func:`segment_model_blockwise` segments an image of any size (a dask/zarr array, as napari
opens big images) with a model method, window by window
(:func:`napari_segkit.algorithms.blockwise.segment_blockwise`), into a zarr labels array:

- what the model decides from the whole image is decided **once, over the whole image**, then
  fixed for every block: the input normalization (the percentiles of each plane, on the same
  strided sample the in-memory path reads: :func:`~napari_segkit.models.normalize.strided_sample`)
  and the automatic object diameter (the model's own estimator on the central crop it reads in
  memory: :func:`napari_segkit.models.maskrcnn.estimate_diameter`,
  :func:`napari_segkit.models.unet.estimate_unet_diameter`); the halo follows from the diameter
  (:func:`~napari_segkit.algorithms.blockwise.halo_for_diameter`);
- each window is segmented by a picklable :class:`BlockPredictor`, which loads the model once
  per worker (the models' own caches) on the worker's device (:func:`worker_device`);
- on a ``dask.distributed`` cluster, :func:`gpu_cluster` starts one single-threaded worker per
  visible GPU and :func:`pin_workers` gives each worker of a cluster its own GPU.

What the block path does not do: Mask R-CNN's frame linking (``link_frames``) and the CNN's
panoptic output (see :func:`napari_segkit.algorithms.chunked.blockwise_problem`); no per-object
score/class table (the objects' table can be measured from the labels); objects wider than the
halo may be cut at a block border.

torch is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..algorithms.image import ProgressCallback

__all__ = [
    "BlockPredictor",
    "ModelBlockwiseResult",
    "gpu_cluster",
    "pin_workers",
    "segment_model_blockwise",
    "worker_device",
]

#: Side (pixels) of the central crop the automatic diameter is measured on: everything the
#: in-memory estimators read (Mask R-CNN: 512 px at up to 5x; U-Net 2D: 512 px at a scale down to
#: 0.2; 3D: 160 px at a scale down to 1/3).
ESTIMATE_SIDE = {2: 2560, 3: 480}


# ---- devices ---------------------------------------------------------------------------------------
def worker_device(device: Any = "auto") -> Any:
    """The device a block runs on: the GPU :func:`pin_workers` gave this dask worker, else
    ``device`` (``"auto"``: the first GPU, else the CPU).

    Examples
    --------
    >>> worker_device("cpu")
    device(type='cpu')
    """
    from .devices import resolve_device

    name = str(device).lower()
    if name in ("auto", "cuda"):
        gpu = _pinned_gpu()
        if gpu is not None:
            import torch

            if torch.cuda.is_available() and gpu < torch.cuda.device_count():
                return torch.device(f"cuda:{gpu}")
    return resolve_device(device)


def _pinned_gpu() -> int | None:
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - depends on the install
        return None
    try:
        worker = get_worker()
    except ValueError:  # not inside a dask worker
        return None
    gpu = getattr(worker, "segkit_gpu", None)
    return None if gpu is None else int(gpu)


def _pin(gpu: int, dask_worker: Any = None) -> int:
    dask_worker.segkit_gpu = int(gpu)
    return int(gpu)


def _n_gpus() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - depends on the install
        return 0


def pin_workers(client: Any) -> dict[str, int]:
    """Give each worker of a ``distributed`` cluster its own GPU: on every host, the workers in
    address order get GPU 0, 1, ... (modulo the GPUs of that host). Returns ``{address: gpu}``;
    empty where the workers see no GPU."""
    info = client.scheduler_info()["workers"]
    counts = client.run(_n_gpus)
    by_host: dict[str, list[str]] = {}
    for addr in sorted(info):
        by_host.setdefault(info[addr].get("host", addr), []).append(addr)
    pinned = {}
    for addrs in by_host.values():
        for i, addr in enumerate(addrs):
            n = int(counts.get(addr, 0))
            if n:
                pinned[addr] = client.run(_pin, i % n, workers=[addr])[addr]
    return pinned


def gpu_cluster(n_gpus: int | None = None, **kwargs: Any) -> Any:
    """A ``distributed.Client`` on a new ``LocalCluster``: one single-threaded worker process per
    GPU (``n_gpus``, default every visible GPU; one worker if there is none), each pinned to its
    GPU (:func:`pin_workers`). Close the client and its cluster when done.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - depends on the install
        raise ValueError(
            "one worker per GPU needs dask.distributed: pip install 'napari-segkit[dask]'"
        ) from None
    visible = _n_gpus()
    n = visible if n_gpus is None else int(n_gpus)
    if n < 1 and n_gpus is not None:
        raise ValueError(f"n_gpus must be >= 1; got {n_gpus}")
    if visible and n > visible:
        raise ValueError(f"n_gpus={n} but this machine has {visible} GPU(s)")
    options = dict(
        n_workers=max(1, n),
        threads_per_worker=1,
        dashboard_address=None,
        resources={"GPU": 1},
    )
    options.update(kwargs)
    cluster = LocalCluster(**options)
    client = Client(cluster)
    pin_workers(client)
    return client


# ---- the predictor ---------------------------------------------------------------------------------
@dataclass
class BlockPredictor:
    """Segments one window with a model method (picklable: the model is loaded in the worker).

    ``params`` are the method's keywords (the diameter fixed); ``norms`` the input normalization
    of each plane (volume) of a stack, its range fixed, by stack index.
    """

    method: str
    params: dict
    norms: dict = field(default_factory=dict)
    spatial_ndim: int = 2
    rgb: bool = False
    channel: int = 0
    spacing: tuple | None = None  # voxel size (z, y, x) of a z-stack

    def device(self) -> Any:
        return worker_device(self.params.get("device", "auto"))

    def load(self) -> Any:
        """The model on this worker's device (cached by the models' own loaders)."""
        dev = self.device()
        if self.method == "maskrcnn":
            from . import maskrcnn as mr

            return mr.load_model(self.params["model"], dev)
        from . import cnn, semantic

        source = cnn._unet_source(str(self.params["model"]), self.spatial_ndim)
        return semantic.load_semantic(source or self.params["model"], dev)

    def __call__(self, window: np.ndarray, index: tuple) -> np.ndarray:
        model = self.load()
        norm = self.norms.get(tuple(index))
        if norm is not None:
            model = dataclasses.replace(model, normalization=norm)
        if self.method == "maskrcnn":
            return self._maskrcnn(window, model)
        return self._cnn(window, model)

    def _maskrcnn(self, window: np.ndarray, model: Any) -> np.ndarray:
        from . import maskrcnn as mr

        # the prediction keywords (those the size estimate passes on too)
        kwargs = {k: self.params[k] for k in mr._ESTIMATE_KEYS if k in self.params}
        color = window.shape[-1] == 3
        res = mr.predict_instances.__wrapped__(
            window if color else window[..., 0],
            model,
            diameter=self.params.get("diameter"),
            rgb=color,
            spatial_ndim=self.spatial_ndim,
            spacing=self.spacing if self.spatial_ndim == 3 else None,
            **kwargs,
        )
        return res.labels

    def _cnn(self, window: np.ndarray, model: Any) -> np.ndarray:
        from ..algorithms import panoptic
        from . import cnn, semantic, unet

        p = self.params
        output = p.get("output", "instance")
        inputs = dict(
            tile_size=p.get("tile_size", 1024),
            tile_overlap=p.get("tile_overlap", 64),
            batch_size=p.get("batch_size", 4),
            half=p.get("half", True),
            spatial_ndim=self.spatial_ndim,
            **_channel_kwargs(window, self.rgb, self.channel),
        )
        x = window[..., 0] if window.shape[-1] == 1 else window
        if isinstance(model, unet.LoadedUNet):
            want = "semantic" if output == "semantic" else "instance"
            res = unet.predict_unet(
                x,
                model,
                output=want,
                diameter=p.get("diameter"),
                spacing=self.spacing if self.spatial_ndim == 3 else None,
                **inputs,
            )
            if output == "semantic" or model.task == "instance":
                return res.labels
            classes = np.asarray(res.labels)
            class_names = list(res.class_names)
        else:
            res = semantic.predict_semantic(x, model, **inputs)
            classes = np.asarray(res.labels)
            if output == "semantic":
                return classes
            class_names = list(res.class_names)
        things = cnn._parse_things(p.get("thing_classes"), class_names)
        return panoptic.things_from_classes(classes, things).astype(np.int32)


def _channel_kwargs(window: np.ndarray, rgb: bool, channel: int) -> dict:
    """How a channels-last window is read by the CNN functions."""
    c = window.shape[-1]
    if c == 1:
        return {"rgb": False, "channel_axis": None, "channel": 0}
    if rgb:
        return {"rgb": True, "channel_axis": None, "channel": 0}
    return {"rgb": False, "channel_axis": -1, "channel": int(channel)}


# ---- whole-image decisions -----------------------------------------------------------------------
@dataclass
class ModelBlockwiseResult:
    """What :func:`segment_model_blockwise` returns: the lazy labels and what was decided."""

    labels: Any
    kind: str
    diameter: float | None
    halo: int
    chunk: int
    messages: list[str] = field(default_factory=list)


def _norm_view(method: str, model: Any, chans: Any, rgb: bool, channel: int) -> Any:
    """The channels the model's normalization sees (after its channel adapter)."""
    from . import unet

    if method == "cnn" and isinstance(model, unet.LoadedUNet):
        adapt = unet._channel_adapter(int(chans.shape[-1]), model.in_channels, rgb, channel)
        return adapt
    if method == "cnn":
        n = int(chans.shape[-1])
        if n not in (1, 3):
            c = channel % n
            return lambda block: block[..., c : c + 1]
    return lambda block: block


def _default_chunk(sn: int, params: dict, diameter: float | None, halo: int, obj_d: Any) -> int:
    """A block side whose window holds a whole number of the model's tiles (2 per axis in 2D,
    1 in 3D), at the scale the model runs at."""
    tile = int(params.get("tile_size", 1024))
    overlap = int(params.get("tile_overlap", 64))
    scale = 1.0
    if diameter is not None and obj_d:
        scale = float(obj_d) / float(diameter)
    if sn == 3:
        tile, overlap, per = min(tile, 128), min(overlap, 32), 1
    else:
        per = 2
    window = (per * (tile - overlap) + overlap) / scale
    return int(max(256 if sn == 2 else 32, math.floor(window - 2 * halo)))


def segment_model_blockwise(
    image: Any,
    method: str,
    params: dict | None = None,
    *,
    chunk: int | None = None,
    halo: int | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int = 0,
    spatial_ndim: int = 2,
    spacing: Any = None,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
) -> ModelBlockwiseResult:
    """Segment an image of any size with Mask R-CNN or a CNN, block by block, into zarr.

    Parameters
    ----------
    image : dask array, numpy array, zarr array or path of a zarr array
        As the method takes it (grey, RGB, multichannel; 2D, stacks, volumes).
    method : {'maskrcnn', 'cnn'}
        Mask R-CNN instances, or the CNN's ``semantic``/``instance`` output.
    params : dict, optional
        The method's parameters (its declaration's defaults for the others). ``diameter=None``
        is measured once on the whole image (see the module docstring).
    chunk : int, optional
        Block side (pixels); default: a window holds 2 x 2 of the model's tiles (2D).
    halo : int, optional
        Pixels each window reads beyond its block; default ``2 * diameter + 8``.
    scheduler : None, 'threads', 'sync', address or distributed.Client
        Where the blocks run. A cluster's workers are pinned to their GPUs
        (:func:`pin_workers`); :func:`gpu_cluster` makes one worker per GPU.
    workers : int, optional
        Threads of the local scheduler (default: one per core; the model runs one window at a
        time per loaded model).
    out, overwrite
        The zarr array to write (default a temporary folder).
    rgb, channel_axis, channel, spatial_ndim
        How to read the image, as the method.
    spacing : sequence of float, optional
        Voxel size ``(z, y, x)`` of a z-stack segmented as volumes (napari's layer scale), as
        the method takes it; the diameter is then in pixels of the last axis.
    progress, cancel
        See :func:`napari_segkit.algorithms.blockwise.segment_blockwise`.

    Returns
    -------
    ModelBlockwiseResult

    Raises
    ------
    ValueError
        A method or parameters the block path cannot run (:func:`blockwise_problem`), and what
        the method itself raises.
    """
    from ..algorithms.blockwise import halo_for_diameter, segment_blockwise
    from ..algorithms.chunked import _as_dask, _full_params, blockwise_problem
    from ..algorithms.image import spatial_ndim_for, to_channels_last
    from ..algorithms.size import central_crop
    from .normalize import fixed_range, strided_sample

    problem = blockwise_problem(method, params)
    if problem:
        raise ValueError(problem)
    p = _full_params(method, params)
    arr = _as_dask(image)
    if method == "maskrcnn":
        from . import maskrcnn as mr

        chans = mr._channels(arr, rgb, channel_axis, channel)
        rgb_flag = int(chans.shape[-1]) == 3
    else:
        if rgb is None:
            rgb = channel_axis is None and arr.ndim > 2 and arr.shape[-1] in (3, 4)
        chans = to_channels_last(arr, rgb=bool(rgb), channel_axis=channel_axis)
        rgb_flag = bool(rgb)
    sn = spatial_ndim_for(chans.ndim - 1, spatial_ndim)
    if method == "maskrcnn" and sn == 3 and chans.ndim - 1 < 3:
        raise ValueError("spatial_ndim=3 needs a z-stack (Z, Y, X)")
    lead = tuple(int(n) for n in chans.shape[: chans.ndim - 1 - sn])
    planes = list(np.ndindex(*lead))
    from ..algorithms.image import check_spacing

    spacing = check_spacing(spacing, 3) if sn == 3 else None
    predictor = BlockPredictor(method, dict(p), {}, sn, rgb_flag, int(channel), spacing)
    messages: list[str] = []

    own_client = None
    if isinstance(scheduler, str) and scheduler not in (
        "threads",
        "sync",
        "synchronous",
        "single-threaded",
        "processes",
    ):
        from distributed import Client

        try:
            own_client = Client(scheduler, timeout="10s", set_as_default=False)
        except OSError as err:
            raise ValueError(
                f"scheduler={scheduler!r}: cannot reach the dask scheduler ({err})"
            ) from None
        scheduler = own_client
    try:
        if hasattr(scheduler, "gather") and hasattr(scheduler, "run"):
            pin_workers(scheduler)
        model = predictor.load()  # on this machine: the whole-image decisions
        view = _norm_view(method, model, chans, rgb_flag, int(channel))
        for idx in planes:
            sample = view(strided_sample(chans[idx] if idx else chans))
            predictor.norms[idx] = fixed_range(sample, model.normalization)
        mid = planes[len(planes) // 2]
        obj_d = _object_diameter(method, model)
        diameter = p.get("diameter")
        if diameter is None and obj_d is not None:
            crop = np.asarray(central_crop(chans[mid] if mid else chans, ESTIMATE_SIDE[sn]))
            fixed = dataclasses.replace(model, normalization=predictor.norms[mid])
            diameter = _estimate(method, fixed, crop, predictor, p)
            if diameter is not None:
                messages.append(f"object diameter {diameter:.1f} px (estimated once)")
        predictor.params["diameter"] = None if diameter is None or obj_d is None else diameter
        if halo is None:
            d_halo = diameter
            if d_halo is None:  # a model without a working size: the objects' classical size
                d_halo = _classical_size(chans[mid] if mid else chans)
            halo = halo_for_diameter(d_halo)
        if chunk is None:
            chunk = _default_chunk(sn, p, diameter, halo, obj_d)
        kind = "semantic" if method == "cnn" and p.get("output") == "semantic" else "instance"
        dtype = np.int32
        if kind == "semantic":
            dtype = np.uint8 if _n_classes(model) <= 256 else np.uint16
        labels = segment_blockwise(
            chans,
            predictor,
            kind=kind,
            halo=int(halo),
            chunk=int(chunk),
            spatial_ndim=sn,
            channels=True,
            dtype=dtype,
            out=out,
            overwrite=overwrite,
            scheduler=scheduler,
            workers=workers,
            progress=progress,
            cancel=cancel,
        )
    finally:
        if own_client is not None:
            own_client.close()
    return ModelBlockwiseResult(labels, kind, diameter, int(halo), int(chunk), messages)


def _object_diameter(method: str, model: Any) -> float | None:
    if method == "maskrcnn":
        from . import maskrcnn as mr

        return mr.object_diameter(model)
    return getattr(model, "object_diameter", None)


def _n_classes(model: Any) -> int:
    return len(getattr(model, "class_names", [])) or 2


def _estimate(method: str, model: Any, crop: np.ndarray, pred: BlockPredictor, p: dict) -> Any:
    """The model's own automatic diameter of a central crop (its normalization fixed)."""
    if method == "maskrcnn":
        from . import maskrcnn as mr

        keys = mr._ESTIMATE_KEYS
        kwargs = {k: p[k] for k in keys if k in p}
        color = crop.shape[-1] == 3
        return mr.estimate_diameter(
            crop if color else crop[..., 0],
            model,
            rgb=color,
            spatial_ndim=2 if pred.spatial_ndim == 2 else 3,  # planes: xy pixels
            **kwargs,
        )
    from . import unet

    if not isinstance(model, unet.LoadedUNet):
        return None
    d, _ = unet.estimate_unet_diameter(
        crop[..., 0] if crop.shape[-1] == 1 else crop,
        model,
        spatial_ndim=pred.spatial_ndim,
        spacing=pred.spacing,
        tile_size=p.get("tile_size", 1024),
        tile_overlap=p.get("tile_overlap", 64),
        batch_size=p.get("batch_size", 4),
        half=p.get("half", True),
        **_channel_kwargs(crop, pred.rgb, pred.channel),
    )
    return d


def _classical_size(block: Any) -> float:
    """The classical object size of a central crop (for the halo of a model without a size)."""
    from ..algorithms.size import central_crop, estimate_diameter

    crop = np.asarray(central_crop(block, 1024), np.float32).mean(axis=-1)
    try:
        d = float(estimate_diameter(crop, spatial_ndim=crop.ndim))
    except (TypeError, ValueError):
        d = float("nan")
    return d if math.isfinite(d) and d > 0 else 32.0
