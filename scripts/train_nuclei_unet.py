"""Train the nuclei U-Nets shipped with napari-segkit (2D and 3D) on generated images only.

Images come from ``napari_segkit.datasets.realistic_nuclei`` / ``realistic_nuclei_3d``
(``config="train"``), made on the fly by a pool of worker processes: the workers keep a pool of
prepared images (normalized, rescaled so that the nuclei are ``target_diameter`` wide, targets
built) that the training loop cuts random augmented patches from, and a share of the pool is
replaced with fresh images every epoch, so the CPU never holds the GPU back. Training uses the
engine of ``napari_segkit.models.training`` (the loss, augmentation, validation and checkpoint
format that ``segkit train`` uses), bfloat16 autocast on the GPU, and a time budget.

At the end, each saved model is reloaded from its file and scored on a held-out generator
configuration (``config="holdout"``: other sizes, shapes, textures and noise; never trained on):
AP@0.5 = TP / (TP + FP + FN) at IoU >= 0.5, at the images' own resolution, with the images
rescaled by their true median nucleus diameter. The scores go into the checkpoints' metadata.

Usage (one H100, ~9 minutes for both models)::

    python scripts/train_nuclei_unet.py --minutes 8

    # fine-tune the shipped 3D model for 8 more minutes
    python scripts/train_nuclei_unet.py --ndim 3 --minutes 8 --init src/napari_segkit/models/weights

    # a CPU check of the whole pipeline with tiny networks
    python scripts/train_nuclei_unet.py --minutes 0.5 --tiny -o /tmp/unets
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from napari_segkit.metrics import match_instances
from napari_segkit.models import training as tr
from napari_segkit.models.devices import resolve_device
from napari_segkit.models.unet import INSTANCE_OUTPUTS, build_unet, load_unet

# --- the generators ---------------------------------------------------------------------------
# FALLBACK: until napari_segkit.datasets.realistic_nuclei(_3d) are merged, train on
# synthetic_nuclei. The metadata records which generator was used.
try:
    from napari_segkit.datasets import realistic_nuclei, realistic_nuclei_3d

    GENERATOR = "napari_segkit.datasets.realistic_nuclei / realistic_nuclei_3d"
except ImportError:  # pragma: no cover - depends on the merge order
    realistic_nuclei = realistic_nuclei_3d = None
    GENERATOR = "napari_segkit.datasets.synthetic_nuclei (FALLBACK: realistic_nuclei missing)"
from napari_segkit.datasets import synthetic_nuclei

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_segkit" / "models" / "weights"
OUTPUT = {2: "nuclei_unet_2d.safetensors", 3: "nuclei_unet_3d.safetensors"}
#: The object diameter (pixels, isotropic) each model works at.
TARGET = {2: 24.0, 3: 20.0}
#: Size of a pool image after rescaling (2D), as generated (3D); the training patches.
ITEM = {2: (384, 384), 3: (48, 160, 160)}
PATCH = {2: (256, 256), 3: (64, 128, 128)}
BATCH = {2: 16, 3: 4}
POOL = {2: 384, 3: 64}
ARCH = {
    2: {"depth": 4, "width": 32, "norm": "batch"},
    3: {"depth": 3, "width": 24, "norm": "group"},
}
#: The watershed thresholds recorded in each model (its checkpoint's ``outputs``; inference uses
#: them unless the caller passes others), chosen on generated validation volumes of the training
#: configuration (``benchmarks/eval_nuclei_3d.py --sweep``): the 3D model's distance map needs a
#: stricter seed core than the default 0.4 (AP@0.5 0.84 against 0.56 there).
POSTPROCESS = {2: {}, 3: {"seed_threshold": 0.5, "distance_threshold": 0.5}}
#: --tiny: the same pipeline, small enough for a CPU.
VAL_IMAGES = {2: 8, 3: 4}
#: Held-out images: their shape (as generated; the nuclei are 5-100 px wide in 2D).
HOLDOUT = {2: (384, 384), 3: (48, 128, 128)}
TINY_HOLDOUT = {2: (128, 128), 3: (24, 64, 64)}
EVAL_IMAGES = {2: 16, 3: 8}
TINY_ITEM = {2: (96, 96), 3: (24, 64, 64)}
TINY_PATCH = {2: (64, 64), 3: (16, 32, 32)}
TINY_BATCH = {2: 4, 3: 1}
TINY_POOL = {2: 12, 3: 4}
TINY_ARCH = {
    2: {"depth": 2, "width": 8, "norm": "group"},
    3: {"depth": 2, "width": 4, "norm": "group"},
}
#: Diameter range (pixels, xy) drawn for the 2D training images (3D: the generator's own; the
#: synthetic_nuclei fallback draws from this range).
DIAMETERS = {2: (10.0, 60.0), 3: (14.0, 44.0)}


def generate(ndim: int, config: str, seed: int, item: tuple[int, ...]):
    """One generated image, its labels and voxel spacing.

    2D: the nuclei diameter is drawn from :data:`DIAMETERS` and the image sized so that it is
    ``item`` large once rescaled to the target diameter. 3D: generated at ``item``.
    """
    rng = np.random.default_rng(seed)
    lo, hi = DIAMETERS[ndim]
    d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    factor = d / TARGET[ndim]
    if ndim == 2:
        shape = tuple(max(32, int(round(n * factor))) for n in item)
        if realistic_nuclei is not None:
            kwargs = {"diameter": d} if config == "train" else {}
            img, lab = realistic_nuclei(shape, config=config, seed=seed, **kwargs)
        else:
            r = d / 2
            n = int(rng.uniform(0.1, 0.45) * shape[0] * shape[1] / (math.pi * r * r))
            img, lab = synthetic_nuclei(
                shape,
                n_nuclei=max(n, 1),
                radius=(0.8 * r, 1.2 * r),
                touching=bool(rng.random() < 0.7),
                background_gradient=float(rng.uniform(0, 0.5)),
                noise=float(rng.uniform(0.01, 0.12)),
                seed=seed,
            )
        return img, lab, (1.0, 1.0)
    # 3D: generated at the item's shape; its nuclei's own size (xy diameter ~14-44) sets the scale
    if realistic_nuclei_3d is not None:
        img, lab, spacing = realistic_nuclei_3d(
            tuple(item), config=config, seed=seed, return_spacing=True
        )
        return img, lab, tuple(float(s) for s in spacing)
    r = d / 2
    n = int(rng.uniform(0.05, 0.3) * np.prod(item) / (4 / 3 * math.pi * r**3))
    img, lab = synthetic_nuclei(
        tuple(item), n_nuclei=max(n, 1), radius=(0.8 * r, 1.2 * r), touching=True, seed=seed
    )
    return img, lab, (1.0, 1.0, 1.0)


def diameter_and_zoom(lab: np.ndarray, spacing: tuple[float, ...], target: float):
    """Median equivalent diameter in xy pixels (voxels made isotropic) and the zoom per axis."""
    fine = min(spacing)
    aniso = np.asarray(spacing) / fine  # zoom that makes the voxels isotropic
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas > 0] * float(np.prod(aniso))
    if areas.size == 0:
        return None, aniso
    a = float(np.median(areas))
    d = 2 * math.sqrt(a / math.pi) if lab.ndim == 2 else float(np.cbrt(6 * a / math.pi))
    return d, aniso * (target / d)


def make_item(job: tuple) -> tr.Sample | None:
    """Worker: generate, rescale, normalize and build the targets (small dtypes to travel)."""
    ndim, config, seed, item = job
    img, lab, spacing = generate(ndim, config, seed, item)
    d, zoom = diameter_and_zoom(lab, spacing, TARGET[ndim])
    if d is None:
        return None
    s = tr.prepare_sample(img[None], lab, scale=zoom, name=f"{config} seed {seed}")
    s.image = s.image.astype(np.float16)
    s.distance = s.distance.astype(np.float16)
    s.labels = s.labels.astype(np.int32)
    return s


class PoolSampler(tr.PatchSampler):
    """Patches from a pool of generated images that worker processes keep refreshing.

    The jobs for the first ``size`` images are queued at once (so a second model's pool fills
    while the first model trains); :meth:`start` waits for ``min_items`` of them; every
    :meth:`refresh` (each epoch) adds the images that are ready until the pool is full, then
    replaces the oldest ones (at most ``refresh_fraction`` of the pool per epoch).
    """

    def __init__(self, pool, ndim, item, size, patch, seed, refresh_fraction=0.25):
        self.workers = pool
        self.ndim, self.item = ndim, item
        self.size = int(size)
        self.next_seed = seed
        self.pending: list = []
        self.refresh_fraction = refresh_fraction
        self.replaced = 0
        self.data_seconds = 0.0
        self.batches = 0
        self.patch_shape = tuple(patch)
        self.scale_jitter = (0.8, 1.25)
        self.focus = 0.8
        self._fill(self.size)

    def _fill(self, n: int) -> None:
        for _ in range(n):
            job = (self.ndim, "train", self.next_seed, self.item)
            self.pending.append(self.workers.apply_async(make_item, (job,)))
            self.next_seed += 1

    def start(self, min_items: int) -> None:
        """Wait until ``min_items`` images are ready."""
        first = []
        while len(first) < min_items and self.pending:
            r = self.pending.pop(0)
            s = r.get()
            if s is not None:
                first.append(s)
        self.set_samples(first)
        self._fill(len(first))

    def refresh(self) -> None:
        ready = [r for r in self.pending if r.ready()]
        ready = ready[: max(1, int(self.refresh_fraction * self.size))]
        for r in ready:
            self.pending.remove(r)
            s = r.get()
            if s is None:
                continue
            if len(self.samples) < self.size:
                self.samples.append(s)
                self._points.append(None)
                self._mass = np.append(self._mass, 0.0)
                self.replace(len(self.samples) - 1, s)
            else:
                self.replace(self.replaced % self.size, s)
                self.replaced += 1
        self._fill(len(ready))

    def batch(self, n, rng):
        t0 = time.perf_counter()
        out = super().batch(n, rng)
        self.data_seconds += time.perf_counter() - t0
        self.batches += 1
        return out


def make_holdout(job: tuple):
    """Worker: one held-out image at its own resolution, and at the model's scale."""
    ndim, seed, shape = job
    if ndim == 2:
        if realistic_nuclei is not None:
            img, lab = realistic_nuclei(shape, config="holdout", seed=seed)
        else:
            img, lab = synthetic_nuclei(
                shape, n_nuclei=60, radius=(4, 20), touching=True, seed=seed
            )
        spacing = (1.0, 1.0)
    elif realistic_nuclei_3d is not None:
        img, lab, spacing = realistic_nuclei_3d(
            shape, config="holdout", seed=seed, return_spacing=True
        )
    else:
        img, lab = synthetic_nuclei(shape, n_nuclei=30, radius=(4, 12), touching=True, seed=seed)
        spacing = (1.0, 1.0, 1.0)
    d, zoom = diameter_and_zoom(lab, spacing, TARGET[ndim])
    if d is None:
        return None
    s = tr.prepare_sample(img[None], lab, scale=zoom)
    return s.image, lab, float(d)


def holdout_scores(model, ndim: int, n: int, shape, seed: int, device, pool) -> dict:
    """AP@0.5 on the held-out configuration, at the images' own resolution.

    Each image is rescaled (per axis: 3D volumes are anisotropic) by its true median nucleus
    diameter to the model's scale and predicted with the validation's maps and watershed
    (``tr._maps``, ``tr.labels_from_maps``); the labels are resized back before matching.
    """
    tp = fp = fn = 0
    ious, diameters = [], []
    items = pool.map(make_holdout, [(ndim, seed + i, shape) for i in range(n)])
    for item in items:
        if item is None:
            continue
        image, lab, d = item
        maps = tr._maps(model.module, image, task="instance", device=device)
        labels = tr.labels_from_maps(
            maps,
            diameter=model.object_diameter,
            seed_threshold=model.watershed_threshold("seed_threshold"),
            distance_threshold=model.watershed_threshold("distance_threshold"),
        )
        pred = tr._resize_nearest(labels, lab.shape)
        r = match_instances(pred, lab, iou_threshold=0.5)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        diameters.append(round(d, 1))
        if r.tp:
            ious.append(r.mean_matched_iou)
    return {
        "config": "holdout",
        "images": len(diameters),
        "shape": list(shape),
        "median_diameters": diameters,
        "iou_threshold": 0.5,
        "ap50": tp / max(tp + fp + fn, 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "mean_matched_iou": float(np.mean(ious)) if ious else 0.0,
        "scale": "images rescaled by their true median nucleus diameter",
    }


def make_sampler(ndim: int, args, pool) -> PoolSampler:
    tiny = args.tiny
    item = (TINY_ITEM if tiny else ITEM)[ndim]
    patch = (TINY_PATCH if tiny else PATCH)[ndim]
    size = (TINY_POOL if tiny else POOL)[ndim]
    return PoolSampler(pool, ndim, item, size, patch, seed=args.seed * 10**7 + ndim * 10**6)


def train_one(ndim: int, args, pool, sampler: PoolSampler, seconds: float, device) -> dict:
    import torch

    tiny = args.tiny
    item = sampler.item
    patch = sampler.patch_shape
    arch = (TINY_ARCH if tiny else ARCH)[ndim]
    batch = args.batch_size or (TINY_BATCH if tiny else BATCH)[ndim]
    t0 = time.perf_counter()
    # a fixed validation set from the training configuration (unseen seeds)
    n_val = 2 if tiny else VAL_IMAGES[ndim]
    val_jobs = [(ndim, "train", 5 * 10**8 + i, item) for i in range(n_val)]
    val_async = pool.map_async(make_item, val_jobs)
    sampler.start(max(2, sampler.size // 4))
    val = [s for s in val_async.get() if s is not None]
    for s in val:
        s.image, s.distance = s.image.astype(np.float32), s.distance.astype(np.float32)
    setup = time.perf_counter() - t0
    print(
        f"[{ndim}D] {len(sampler.samples)} of {sampler.size} pool images ready, "
        f"{len(val)} validation images, "
        f"{setup:.1f} s",
        flush=True,
    )
    start = None
    if args.init is not None:  # fine-tune: start from a saved model (its architecture wins)
        init = Path(args.init)
        start = init / OUTPUT[ndim] if init.is_dir() else init
        loaded = load_unet(start, "cpu", cache=False)
        if loaded.ndim != ndim:
            raise SystemExit(f"--init {start} is a {loaded.ndim}D U-Net, not {ndim}D")
        arch = {k: loaded.config[k] for k in ("depth", "width", "norm")}
        net = build_unet(ndim=ndim, in_channels=1, out_channels=4, **arch)
        net.load_state_dict(loaded.module.state_dict())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            net = build_unet(ndim=ndim, in_channels=1, out_channels=4, **arch)
    n_params = sum(p.numel() for p in net.parameters())
    out = Path(args.output) / OUTPUT[ndim]
    info = {
        "trained_by": "scripts/train_nuclei_unet.py",
        "generator": GENERATOR,
        "diameters_generated": list(DIAMETERS[ndim]),
        "item_shape": list(item),
        "patch_shape": list(patch),
        "batch_size": batch,
        "learning_rate": args.lr,
        "device": str(device),
        "parameters": n_params,
        "tiny": tiny,
        "seed": args.seed,
        "zoom_jitter": [0.8, 1.25],
    }
    if start is not None:
        info["fine_tuned_from"] = start.name
        info["earlier_training"] = loaded.metadata.get("training", {})
    metrics: dict = {}

    def save(state, summary):
        best = summary["best"]
        metrics.update(
            name="AP@0.5",
            best=best.get("metric"),
            best_epoch=summary["epoch"],
            validation=f"{len(val)} images of config 'train' (unseen seeds)",
            history=[{k: v for k, v in e.items() if k != "validation"} for e in summary["history"]],
        )
        tr.save_unet_checkpoint(
            state,
            out,
            architecture=net.config,
            task="instance",
            class_names=["background", "nucleus"],
            object_diameter=TARGET[ndim],
            outputs={**INSTANCE_OUTPUTS, **POSTPROCESS[ndim]},
            training=info,
            metrics=metrics,
            half=True,
        )

    def on_epoch(e):
        print(
            f"[{ndim}D] epoch {e['epoch']}  {e['steps']} steps  loss {e['loss']:.4f}  "
            f"val loss {e['val_loss']:.4f}  val AP@0.5 {e['metric']:.3f}  {e['seconds']:.1f} s"
            + ("  * saved" if e["best"] else ""),
            flush=True,
        )

    train_s = max(5.0, seconds - setup)
    res = tr.fit(
        net,
        sampler,
        val,
        task="instance",
        save=save,
        device=device,
        epochs=10**6,
        steps_per_epoch=args.steps_per_epoch or (10 if tiny else {2: 250, 3: 400}[ndim]),
        batch_size=batch,
        learning_rate=args.lr,
        max_seconds=train_s,
        on_epoch=on_epoch,
        seed=args.seed,
        # a new network: its random start is no candidate; a fine-tuned one must beat its start
        evaluate_start=start is not None,
        start_is_candidate=start is not None,
        tile_shape=tuple(2 * p for p in patch),
    )
    steps = res["steps"]
    measured = {
        "train_seconds": round(res["seconds"], 1),
        "steps": steps,
        "patches_per_second": round(steps * batch / max(res["seconds"], 1e-9), 1),
        "cpu_patch_seconds_per_step": round(sampler.data_seconds / max(sampler.batches, 1), 5),
        "pool_images_replaced": sampler.replaced,
        "parameters": n_params,
    }
    print(f"[{ndim}D] {json.dumps(measured)}", flush=True)
    # reload the saved file, as users will, and score it on the held-out configuration
    t_eval = time.perf_counter()
    loaded = load_unet(out, device, cache=False)
    n_eval = 2 if tiny else (args.eval_images or EVAL_IMAGES[ndim])
    shape = (TINY_HOLDOUT if tiny else HOLDOUT)[ndim]
    scores = holdout_scores(loaded, ndim, n_eval, shape, 9 * 10**8, device, pool)
    scores["seconds"] = round(time.perf_counter() - t_eval, 1)
    info.update(measured)
    metrics["holdout"] = scores
    tr.save_unet_checkpoint(
        loaded.module,
        out,
        architecture=loaded.config,
        task="instance",
        class_names=["background", "nucleus"],
        object_diameter=TARGET[ndim],
        outputs={**INSTANCE_OUTPUTS, **POSTPROCESS[ndim]},
        training=info,
        metrics=metrics,
        half=True,
    )
    size_mb = out.stat().st_size / 1e6
    result = {
        "ndim": ndim,
        "file": str(out),
        "size_MB": round(size_mb, 2),
        "best_val_ap50": metrics.get("best"),
        "best_epoch": metrics.get("best_epoch"),
        "holdout": scores,
        **measured,
    }
    print(f"[{ndim}D] {json.dumps(result)}", flush=True)
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=WEIGHTS, help="folder of the models")
    ap.add_argument("--minutes", type=float, default=8.0, help="total time budget")
    ap.add_argument("--ndim", default="2,3", help="which models: 2, 3 or 2,3")
    ap.add_argument("--share-2d", type=float, default=0.55, help="share of the budget for 2D")
    ap.add_argument("--tiny", action="store_true", help="tiny networks and images (CPU check)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="250 (2D), 400 (3D)")
    ap.add_argument("--lr", type=float, default=None, help="2e-3 (1e-2 with --tiny)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--init",
        default=None,
        help="fine-tune: a model file, or a folder holding the models (e.g. the shipped weights)",
    )
    ap.add_argument("--eval-images", type=int, default=None, help="16 (2D), 4 (3D)")
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-2 if args.tiny else 2e-3
    t_start = time.perf_counter()
    dims = [int(d) for d in args.ndim.split(",")]
    # the worker processes start before CUDA does (fork is then safe)
    pool = mp.get_context("fork").Pool(args.workers)
    import torch

    # the main process only feeds the GPU: leave the other cores to the data workers
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    device = resolve_device(args.device)
    print(
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {args.workers} data workers, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, generator: {GENERATOR}",
        flush=True,
    )
    budget = args.minutes * 60
    # kept for the final evaluation (and file writing) of each model
    reserve = 8 if args.tiny else 40
    # every pool starts filling now: the 3D images are made while the 2D model trains
    samplers = {ndim: make_sampler(ndim, args, pool) for ndim in dims}
    results = []
    for k, ndim in enumerate(dims):
        remaining = len(dims) - k
        left = budget - (time.perf_counter() - t_start) - reserve * remaining
        share = 1.0 if remaining == 1 else (args.share_2d if ndim == 2 else 1 - args.share_2d)
        results.append(train_one(ndim, args, pool, samplers[ndim], max(5.0, left * share), device))
    pool.terminate()
    total_mb = sum(r["size_MB"] for r in results)
    print(
        json.dumps(
            {
                "total_seconds": round(time.perf_counter() - t_start, 1),
                "total_MB": round(total_mb, 2),
                "models": {r["ndim"]: r["holdout"]["ap50"] for r in results},
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
