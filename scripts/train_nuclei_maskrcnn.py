"""Train the small nuclei Mask R-CNN shipped with napari-segkit.

Generates fluorescence-like nuclei images on the fly (``napari_segkit.datasets.synthetic_nuclei``:
crowded, touching, varying size, brightness, illumination ramp and noise; fresh images every step),
trains ``maskrcnn_resnet10_fpn_small`` from scratch, evaluates it on fresh images (matched IoU / F1
against the ground truth) after reloading the saved file, and writes a safetensors checkpoint with
its metadata.

Usage (a GPU is much faster; ~5 minutes on one H100)::

    python scripts/train_nuclei_maskrcnn.py --minutes 5 \
        -o src/napari_segkit/models/weights/nuclei_maskrcnn_small.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import maskrcnn as mr
from napari_segkit.models.devices import resolve_device
from napari_segkit.models.normalize import normalization_range

ARCH = "maskrcnn_resnet10_fpn_small"
CLASS_NAMES = ["background", "nucleus"]
NORMALIZATION = {
    "percentiles": [1.0, 99.8],
    "uint8_rgb": "percentile",
    "mean": [0.0] * 3,
    "std": [1.0] * 3,
}
CROP = 256


def make_sample(seed: int, size: int = CROP) -> tuple[np.ndarray, np.ndarray]:
    """One random training image (uint16) and its labels, from a wide range of conditions."""
    rng = np.random.default_rng(seed)
    r_lo = rng.uniform(3.5, 8.0)
    r_hi = r_lo + rng.uniform(2.0, 7.0)
    mean_area = math.pi * ((r_lo + r_hi) / 2) ** 2
    density = rng.uniform(0.05, 0.45)  # covered fraction before overlaps
    n = int(density * size * size / mean_area)
    img, lab = synthetic_nuclei(
        (size, size),
        n_nuclei=n,
        radius=(r_lo, r_hi),
        touching=bool(rng.random() < 0.7),
        background_gradient=float(rng.uniform(0, 0.6)),
        noise=float(rng.uniform(0.01, 0.12)),
        dtype=np.uint16,
        seed=int(rng.integers(2**31)),
    )
    k = int(rng.integers(4))
    img, lab = np.rot90(img, k), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def to_target(img: np.ndarray, lab: np.ndarray, min_area: int = 6):
    """Normalised 3-channel tensor and the torchvision target of one sample."""
    lo, scale = normalization_range(img[..., None], NORMALIZATION)
    x = (img.astype(np.float32) - lo[0]) * scale[0]
    image = torch.from_numpy(np.repeat(x[None], 3, axis=0))
    ids = np.unique(lab)
    ids = ids[ids > 0]
    masks, boxes = [], []
    for i in ids:
        m = lab == i
        if m.sum() < min_area:
            continue
        ys, xs = np.nonzero(m)
        masks.append(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    if masks:
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)),
        }
    else:
        target = {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros((0, CROP, CROP), dtype=torch.uint8),
        }
    return image, target


def collate(batch):
    return tuple(zip(*batch, strict=True))


class Samples(torch.utils.data.IterableDataset):
    def __init__(self, base_seed: int):
        self.base_seed = base_seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        k = wid
        while True:
            yield to_target(*make_sample(self.base_seed + k))
            k += nw


def evaluate(
    model: mr.LoadedModel,
    n_images: int = 8,
    seed: int = 10_000_000,
    size: int = 512,
    n_nuclei: int = 250,
) -> dict:
    """Matched-IoU scores on fresh crowded images (never seen in training)."""
    scores = []
    for i in range(n_images):
        img, truth = synthetic_nuclei(
            (size, size),
            n_nuclei=n_nuclei,
            radius=(6, 12),
            touching=True,
            seed=seed + i,
            background_gradient=0.3,
            noise=0.05,
        )
        res = mr.predict_instances(img, model, score_threshold=0.5)
        scores.append(match_instances(res.labels, truth, iou_threshold=0.5))
    tp, fp, fn = (sum(getattr(s, k) for s in scores) for k in ("tp", "fp", "fn"))
    return {
        "images": n_images,
        "size": size,
        "n_nuclei_placed": n_nuclei,
        "iou_threshold": 0.5,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "mean_matched_iou": float(np.mean([s.mean_matched_iou for s in scores])),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-images", type=int, default=8)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    model = mr.build_architecture(ARCH, len(CLASS_NAMES)).to(device)
    model.transform.min_size = (CROP,)
    model.transform.max_size = CROP  # no resizing: the model learns at the native pixel size
    model.rpn._pre_nms_top_n["training"] = 3000
    model.rpn._post_nms_top_n["training"] = 3000
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        Samples(args.seed * 1_000_003),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collate,
        persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers else None,
    )
    budget = args.minutes * 60
    t0 = time.time()
    step, log = 0, []
    use_amp = device.type == "cuda"
    for images, targets in loader:
        frac = (time.time() - t0) / budget
        if frac >= 1:
            break
        warm = min(1.0, (step + 1) / 200)
        lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if step % 50 == 0:
            entry = {
                "step": step,
                "t": round(time.time() - t0, 1),
                "lr": lr,
                "loss": float(loss),
                **{k: round(float(v), 4) for k, v in losses.items()},
            }
            log.append(entry)
            print(json.dumps(entry), flush=True)
        step += 1
    train_s = time.time() - t0
    model.eval()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "trained_by": "scripts/train_nuclei_maskrcnn.py",
        "steps": step,
        "batch_size": args.batch_size,
        "train_seconds": round(train_s, 1),
        "crop": CROP,
        "device": str(device),
        "data": "napari_segkit.datasets.synthetic_nuclei, radius 3.5..15 px, crowded, touching",
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
        )

    save(model)
    # evaluate the saved file, as users will load it, then record the scores in its metadata
    mr.clear_model_cache()
    loaded = mr.load_model(args.output, device)
    scores = evaluate(loaded, n_images=args.eval_images)
    extra["eval"] = scores
    save(loaded.module)
    print(
        json.dumps(
            {
                "steps": step,
                "train_seconds": round(train_s, 1),
                "eval": scores,
                "size_MB": round(args.output.stat().st_size / 1e6, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
