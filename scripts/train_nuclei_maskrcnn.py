"""Train the small nuclei Mask R-CNN shipped with napari-segkit.

Data: fluorescence-like nuclei generated on the fly, fresh images every step, by
``napari_segkit.datasets.realistic_nuclei(shape, config="train")`` (native median diameters
10-60 px, clumps, dim and bright nuclei, texture, debris, photon and camera noise...), plus a
share of the simpler ``synthetic_nuclei``. Every image is generated at its native size and then
rescaled, with the same resampling :func:`napari_segkit.models.maskrcnn.predict_instances` uses,
so that its nuclei have the model's working diameter (``--object-diameter``, x0.75..1.33 jitter
so that the model forgives an imperfect size estimate): the model learns one size, and
``predict_instances`` brings every image to that size (``diameter``, estimated when not given).
Data generation runs in ``--workers`` processes.

Validation: ``realistic_nuclei(config="holdout")`` (other shapes, textures, noise and sizes 5-100
px; never trained on), segmented by ``predict_instances`` with its defaults (automatic diameter)
after reloading the saved file; prints AP@0.5 = TP / (TP + FP + FN), F1 and the diameter
estimate's error, and the same with the true diameter given. The checkpoint (safetensors,
float16, a few MB) records ``object_diameter`` and the scores.

Usage (a GPU is much faster; the shipped model: `--minutes 7 --init nuclei` on one H200)::

    python scripts/train_nuclei_maskrcnn.py --minutes 8 --workers 16 \\
        -o src/napari_segkit/models/weights/nuclei_maskrcnn_small.safetensors

    # start from the current shipped weights
    python scripts/train_nuclei_maskrcnn.py --minutes 8 --init nuclei -o new.safetensors

    # a CPU smoke test (seconds): tiny crops, a few steps, a tiny validation
    python scripts/train_nuclei_maskrcnn.py --minutes 0.3 --tiny -o /tmp/tiny.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import maskrcnn as mr
from napari_segkit.models.devices import resolve_device
from napari_segkit.models.normalize import normalization_range
from napari_segkit.models.weights import shipped_path

try:  # the realistic generator (branch synth); the simple one stands in until it lands
    from napari_segkit.datasets import realistic_nuclei
except ImportError:  # pragma: no cover - depends on the branch
    realistic_nuclei = None

ARCH = "maskrcnn_resnet10_fpn_small"
CLASS_NAMES = ["background", "nucleus"]
NORMALIZATION = {
    "percentiles": [1.0, 99.8],
    "uint8_rgb": "percentile",
    "mean": [0.0] * 3,
    "std": [1.0] * 3,
}
#: the native median diameters of the training images (realistic_nuclei's "train" range)
NATIVE_DIAMETERS = (10.0, 60.0)
#: how far the objects' size at the model's scale varies around the working diameter
SIZE_JITTER = (0.75, 1.33)


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def generate(
    rng: np.random.Generator, shape: tuple[int, int], diameter: float, synthetic: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One native image whose nuclei have median diameter ``diameter`` px, and its labels."""
    seed = int(rng.integers(2**31))
    if not synthetic and realistic_nuclei is not None:
        return realistic_nuclei(shape, config="train", diameter=diameter, seed=seed)
    r = diameter / 2
    r_lo, r_hi = r * rng.uniform(0.7, 0.9), r * rng.uniform(1.1, 1.3)
    density = rng.uniform(0.05, 0.45)
    n = int(density * shape[0] * shape[1] / (math.pi * r * r))
    return synthetic_nuclei(
        shape,
        n_nuclei=n,
        radius=(r_lo, r_hi),
        touching=bool(rng.random() < 0.7),
        background_gradient=float(rng.uniform(0, 0.6)),
        noise=float(rng.uniform(0.01, 0.12)),
        dtype=np.uint16,
        seed=seed,
    )


def rescale_labels(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling on the pixel-centre grid of ``predict_instances``' resize."""
    ys = np.minimum(
        ((np.arange(shape[0]) + 0.5) * lab.shape[0] / shape[0]).astype(int), lab.shape[0] - 1
    )
    xs = np.minimum(
        ((np.arange(shape[1]) + 0.5) * lab.shape[1] / shape[1]).astype(int), lab.shape[1] - 1
    )
    return lab[ys[:, None], xs[None, :]]


def make_sample(
    seed: int,
    size: int,
    object_diameter: float,
    synthetic_fraction: float,
    max_native: int = 640,
) -> tuple[np.ndarray, np.ndarray]:
    """One training image at the model's scale (normalized float32 (size, size)) and its labels."""
    rng = np.random.default_rng(seed)
    native = loguniform(rng, *NATIVE_DIAMETERS)
    target = object_diameter * loguniform(rng, *SIZE_JITTER)
    factor = target / native  # native pixels -> model pixels
    side = max(16, int(math.ceil(size / factor)))
    if side > max_native:  # generation time grows with the area: shrink the native size instead
        native *= max_native / side
        factor = target / native
        side = max(16, int(math.ceil(size / factor)))
    img, lab = generate(rng, (side, side), native, bool(rng.random() < synthetic_fraction))
    # as predict_instances: normalise on the native image, then resample to the model's scale
    lo, scale = normalization_range(img[..., None], NORMALIZATION)
    x = (img.astype(np.float32) - lo[0]) * scale[0]
    out = max(size, int(round(side * factor)))
    if out != side:
        x = mr.resize_plane(x[..., None], (out, out))[..., 0]
        lab = rescale_labels(lab, (out, out))
    y0, x0 = (int(rng.integers(0, out - size + 1)) for _ in range(2))
    x, lab = x[y0 : y0 + size, x0 : x0 + size], lab[y0 : y0 + size, x0 : x0 + size]
    k = int(rng.integers(4))
    x, lab = np.rot90(x, k), np.rot90(lab, k)
    if rng.random() < 0.5:
        x, lab = x[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(lab)


def to_target(x: np.ndarray, lab: np.ndarray, device, rng: np.random.Generator, min_area: int = 6):
    """3-channel image tensor and torchvision target of one sample, on ``device``, under a random
    rotation/flip (so that a sample drawn again from the replay buffer looks different)."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)
    lt = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int32)).to(device, non_blocking=True)
    k = int(rng.integers(4))
    xt, lt = torch.rot90(xt, k), torch.rot90(lt, k)
    if rng.random() < 0.5:
        xt, lt = xt.flip(1), lt.flip(1)
    h, w = lt.shape
    ids = torch.unique(lt)
    ids = ids[ids > 0]
    masks = lt[None] == ids[:, None, None]
    masks = masks[masks.sum((1, 2)) >= min_area]
    rows, cols = masks.any(2), masks.any(1)
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    target = {
        "boxes": torch.stack([x0, y0, x1, y1], 1).float(),
        "labels": torch.ones(masks.shape[0], dtype=torch.int64, device=device),
        "masks": masks.to(torch.uint8),
    }
    return xt[None].expand(3, -1, -1).contiguous(), target


def collate(batch):
    return tuple(zip(*batch, strict=True))


class Samples(torch.utils.data.IterableDataset):
    """Endless fresh samples ``(image, labels)``; each worker process its own seeds."""

    def __init__(
        self,
        base_seed: int,
        size: int,
        object_diameter: float,
        synthetic_fraction: float,
        max_native: int,
    ):
        self.base_seed = base_seed
        self.size = size
        self.object_diameter = object_diameter
        self.synthetic_fraction = synthetic_fraction
        self.max_native = max_native

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # the resampling in each worker process: one thread
        k = wid
        while True:
            yield make_sample(
                self.base_seed + k,
                self.size,
                self.object_diameter,
                self.synthetic_fraction,
                self.max_native,
            )
            k += nw


def truth_diameter(lab: np.ndarray) -> float:
    a = np.bincount(lab.ravel())[1:]
    a = a[a > 0]
    return float(np.median(2 * np.sqrt(a / np.pi))) if len(a) else float("nan")


def evaluate(model: mr.LoadedModel, n_images: int, size: int, seed: int = 10_000_000) -> dict:
    """Scores on the holdout generator, with the automatic diameter and with the true one."""
    if realistic_nuclei is None:
        config = "synthetic_nuclei (realistic_nuclei missing)"
    else:
        config = "realistic_nuclei holdout"
    per = {"auto": [], "auto_classical_only": [], "true_diameter": []}
    size_err, classical_err = [], []
    for i in range(n_images):
        rng = np.random.default_rng(seed + i)
        if realistic_nuclei is not None:
            img, truth = realistic_nuclei((size, size), config="holdout", seed=seed + i)
        else:
            img, truth = generate(rng, (size, size), loguniform(rng, 8, 60), True)
        d_true = truth_diameter(truth)
        if not math.isfinite(d_true):
            continue
        auto = mr.predict_instances(img, model)
        size_err.append(auto.diameter / d_true - 1)
        per["auto"].append(match_instances(auto.labels, truth, iou_threshold=0.5))
        given = mr.predict_instances(img, model, diameter=float(np.clip(d_true, 2, size)))
        per["true_diameter"].append(match_instances(given.labels, truth, iou_threshold=0.5))
        # the size estimate without the model's refining pass (refine=0)
        d0 = mr.estimate_diameter(img, model, refine=0)
        classical_err.append(d0 / d_true - 1)
        alone = mr.predict_instances(img, model, diameter=d0)
        per["auto_classical_only"].append(match_instances(alone.labels, truth, iou_threshold=0.5))
    out = {"data": config, "images": len(size_err), "size": size, "iou_threshold": 0.5}
    for key, scores in per.items():
        tp, fp, fn = (sum(s[k] for s in scores) for k in ("tp", "fp", "fn"))
        aps = [s["tp"] / max(s["tp"] + s["fp"] + s["fn"], 1) for s in scores]
        out[key] = {
            "ap50_mean": float(np.mean(aps)) if aps else float("nan"),
            "ap50_pooled": tp / max(tp + fp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    out["diameter_rel_error_median_abs"] = float(np.median(np.abs(size_err))) if size_err else None
    out["classical_diameter_rel_error_median_abs"] = (
        float(np.median(np.abs(classical_err))) if classical_err else None
    )
    return out


def initial_model(init: str | None, device):
    """A fresh architecture, or the weights of the shipped model / a checkpoint file."""
    if not init:
        return mr.build_architecture(ARCH, len(CLASS_NAMES))
    path = shipped_path("maskrcnn", init) if init in mr.SHIPPED_MODELS else Path(init)
    loaded = mr.load_checkpoint(path, "cpu")  # a fresh module, not the inference cache's
    if loaded.architecture != ARCH or loaded.num_classes != len(CLASS_NAMES):
        raise SystemExit(
            f"--init {init}: a {loaded.architecture} with {loaded.num_classes} classes; need {ARCH} with 2"
        )
    return loaded.module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256, help="training crop side (model pixels)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--object-diameter", type=float, default=20.0, help="the model's working diameter (px)"
    )
    ap.add_argument(
        "--synthetic-fraction",
        type=float,
        default=0.2,
        help="share of the simpler synthetic_nuclei images (1 when realistic_nuclei is missing)",
    )
    ap.add_argument(
        "--reuse",
        type=float,
        default=4.0,
        help="each generated sample is trained on this many times on average (a replay buffer "
        "of recent samples, drawn again rotated/flipped); 1: fresh samples only",
    )
    ap.add_argument("--replay", type=int, default=2048, help="replay buffer size (samples)")
    ap.add_argument(
        "--max-native",
        type=int,
        default=640,
        help="largest generated image side (px) before rescaling to the model's scale",
    )
    ap.add_argument("--init", default=None, help="start from 'nuclei' (shipped) or a checkpoint")
    ap.add_argument("--eval-images", type=int, default=24)
    ap.add_argument("--eval-size", type=int, default=512)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: small crops and eval")
    args = ap.parse_args(argv)
    if args.tiny:
        args.crop, args.batch_size = 128, 2
        args.workers = min(args.workers, 2)
        args.eval_images, args.eval_size = 2, 192
    if realistic_nuclei is None:
        print("datasets.realistic_nuclei is missing: training on synthetic_nuclei only", flush=True)

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    model = initial_model(args.init, device).to(device)
    model.transform.min_size = (args.crop,)
    model.transform.max_size = args.crop  # no resizing: the model learns at the working size
    model.rpn._pre_nms_top_n["training"] = 3000
    model.rpn._post_nms_top_n["training"] = 3000
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    data = Samples(
        args.seed * 1_000_003,
        args.crop,
        args.object_diameter,
        args.synthetic_fraction,
        args.max_native,
    )
    fresh = max(1, math.ceil(args.batch_size / args.reuse))  # new samples per step
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=fresh,
        num_workers=args.workers,
        collate_fn=collate,
        persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers else None,
    )
    rng = np.random.default_rng(args.seed)
    replay: list[tuple[np.ndarray, np.ndarray]] = []  # recent samples, drawn again rotated
    budget = args.minutes * 60
    t0 = time.time()
    step, wait = 0, 0.0
    use_amp = device.type == "cuda"
    t_data = time.time()
    for xs, labs in loader:
        wait += time.time() - t_data
        batch = list(zip(xs, labs, strict=True))
        for item in batch:
            if len(replay) < args.replay:
                replay.append(item)
            else:
                replay[int(rng.integers(len(replay)))] = item
        batch += [replay[int(i)] for i in rng.integers(len(replay), size=args.batch_size - fresh)]
        images, targets = zip(*(to_target(x, lab, device, rng) for x, lab in batch), strict=True)
        frac = (time.time() - t0) / budget
        if frac >= 1:
            break
        warm = min(1.0, (step + 1) / (50 if args.init else 200))
        lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if step % (5 if args.tiny else 50) == 0:
            entry = {
                "step": step,
                "t": round(time.time() - t0, 1),
                "data_wait_s": round(wait, 1),
                "lr": round(lr, 6),
                "loss": round(float(loss.detach()), 4),
                **{k: round(float(v.detach()), 4) for k, v in losses.items()},
            }
            print(json.dumps(entry), flush=True)
        step += 1
        t_data = time.time()
    train_s = time.time() - t0
    model.eval()
    extra = {
        "trained_by": "scripts/train_nuclei_maskrcnn.py",
        "init": args.init,
        "steps": step,
        "batch_size": args.batch_size,
        "reuse": args.reuse,
        "crop": args.crop,
        "train_seconds": round(train_s, 1),
        "data_wait_seconds": round(wait, 1),
        "device": str(device),
        "object_diameter": args.object_diameter,
        "data": (
            "napari_segkit.datasets.realistic_nuclei(config='train') "
            if realistic_nuclei is not None
            else ""
        )
        + f"+ synthetic_nuclei ({args.synthetic_fraction:.0%}), native median diameters "
        f"{NATIVE_DIAMETERS[0]:g}-{NATIVE_DIAMETERS[1]:g} px rescaled to "
        f"{args.object_diameter:g} px x{SIZE_JITTER[0]}-{SIZE_JITTER[1]}",
    }

    def save(module) -> None:
        mr.save_checkpoint(
            module,
            args.output,
            architecture=ARCH,
            class_names=CLASS_NAMES,
            normalization=NORMALIZATION,
            extra=extra,
            half=True,
            object_diameter=args.object_diameter,
        )

    save(model)
    # evaluate the saved file, as users will load it, then record the scores in its metadata
    mr.clear_model_cache()
    loaded = mr.load_model(args.output, device)
    t_eval = time.time()
    scores = evaluate(loaded, n_images=args.eval_images, size=args.eval_size)
    extra["eval"] = scores
    save(loaded.module)
    size_mb = args.output.stat().st_size / 1e6
    print(
        json.dumps(
            {
                "steps": step,
                "train_seconds": round(train_s, 1),
                "data_wait_seconds": round(wait, 1),
                "eval_seconds": round(time.time() - t_eval, 1),
                "eval": scores,
                "size_MB": round(size_mb, 2),
            }
        ),
        flush=True,
    )
    print(
        f"holdout AP@0.5 (auto diameter): {scores['auto']['ap50_mean']:.3f}  "
        f"(classical size only: {scores['auto_classical_only']['ap50_mean']:.3f}; true diameter: "
        f"{scores['true_diameter']['ap50_mean']:.3f}; diameter estimate median |error| "
        f"{scores['diameter_rel_error_median_abs']:.3f}, classical only "
        f"{scores['classical_diameter_rel_error_median_abs']:.3f})  -> {args.output} "
        f"({size_mb:.1f} MB)",
        flush=True,
    )


if __name__ == "__main__":
    main()
