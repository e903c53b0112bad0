"""The fine-tuning bar: how far do 3 corrected images move the shipped nuclei U-Net on a new look?

From one run in one process:

1. A look the shipped 2D nuclei U-Net never saw: generated nuclei (``synthetic_nuclei``, touching,
   noise 0.08) with inverted contrast (dark nuclei on a bright background). The shipped model was
   trained on bright nuclei only.
2. Baseline: AP@0.5 of the CNN method with every default (``segment_cnn(image)``: the shipped
   model, object size estimated) on 10 held-out images of that look.
3. Fine-tune on 3 other images of that look with their true labels (the user's "corrected"
   labels), with the Train widget's defaults (= :func:`napari_segkit.models.training.train`'s,
   ``start_from="nuclei"``), for ``--minutes`` (the widget's time limit).
4. AP@0.5 of ``segment_cnn(image, model=<the fine-tuned file>)`` on the same 10 held-out images.

Prints the machine, the training curve and the two scores (and their ratio, the baseline measured
in this same run). Generated images only: no real image is used.

Usage::

    python benchmarks/bench_finetune.py                  # CPU, 4 minutes
    python benchmarks/bench_finetune.py --device cuda --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import training
from napari_segkit.models.cnn import segment_cnn
from napari_segkit.models.devices import resolve_device


def new_look(seed: int, shape=(256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Touching nuclei, dark on a bright background (inverted contrast), some noise."""
    img, lab = synthetic_nuclei(
        shape, n_nuclei=40, radius=(6.0, 12.0), touching=True, noise=0.08, seed=seed
    )
    return (img.max() - img).astype(np.uint16), lab


def score(images, model, device) -> dict:
    tp = fp = fn = 0
    per_image = []
    t0 = time.perf_counter()
    for img, lab in images:
        res = segment_cnn(img, model=model, device=device)
        r = match_instances(res.labels, lab, iou_threshold=0.5)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
        per_image.append(round(r.ap, 3))
    return {
        "ap50": tp / max(tp + fp + fn, 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "per_image": per_image,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def machine(device) -> str:
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU"
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads{gpu}, "
        f"torch {torch.__version__}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    ap.add_argument("--minutes", type=float, default=4.0, help="training time limit")
    ap.add_argument("--train-images", type=int, default=3)
    ap.add_argument("--holdout", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="where the fine-tuned model goes")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    print(f"machine: {machine(device)}", flush=True)
    print("look: synthetic_nuclei 256x256, touching, noise 0.08, inverted contrast", flush=True)

    held_out = [new_look(1000 + i) for i in range(args.holdout)]
    pairs = [new_look(i) for i in range(args.train_images)]
    before = score(held_out, "nuclei", device.type)
    print(f"before (shipped nuclei U-Net, segment_cnn defaults): {json.dumps(before)}", flush=True)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-finetune-")) / "inverted.safetensors"

    def on_epoch(e: dict) -> None:
        print(
            f"  epoch {e['epoch']}: {e['steps']} steps, loss {e['loss']:.4f}, val loss "
            f"{e['val_loss']:.4f}, val AP@0.5 {e['metric']:.3f}, {e['seconds']:.0f} s"
            + (" * saved" if e["best"] else ""),
            flush=True,
        )

    t0 = time.perf_counter()
    res = training.train(
        pairs,
        start_from="nuclei",  # the widget's default start; everything else train()'s defaults
        device=device.type,
        checkpoint=out,
        max_seconds=args.minutes * 60,
        names=[f"inverted seed {i}" for i in range(args.train_images)],
        on_epoch=on_epoch,
    )
    train_s = time.perf_counter() - t0
    steps = sum(e["steps"] for e in res.history)
    print(
        f"fine-tuned {train_s:.0f} s, {steps} steps of {res.metadata['training']['batch_size']} "
        f"patches {res.metadata['training']['patch_shape']}; validation AP@0.5 "
        f"{res.initial_metric:.3f} -> {res.best_metric:.3f} (epoch {res.best_epoch}) -> {out}",
        flush=True,
    )
    after = score(held_out, str(out), device.type)
    print(f"after (fine-tuned, segment_cnn defaults): {json.dumps(after)}", flush=True)
    ratio = after["ap50"] / before["ap50"] if before["ap50"] else float("inf")
    print(
        json.dumps(
            {
                "device": str(device),
                "minutes": args.minutes,
                "train_images": args.train_images,
                "holdout_images": args.holdout,
                "ap50_before": round(before["ap50"], 3),
                "ap50_after": round(after["ap50"], 3),
                "ratio_after_before": round(ratio, 2),
                "train_seconds": round(train_s, 1),
                "steps": steps,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
