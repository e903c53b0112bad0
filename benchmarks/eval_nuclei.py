"""Accuracy of every instance method's defaults on generated nuclei made differently from training.

Accuracy, not speed. What a user gets by pressing Run: each method is called with its declared
defaults (object size automatic), on 2D images of two generator configurations:

- ``train``: ``realistic_nuclei(config="train")`` with seeds the shipped models never saw (their
  training seeds start at 0 and are drawn on the fly; these start at 10**6);
- ``holdout``: ``realistic_nuclei(config="holdout")``: other outlines (elongated, kidney, lobed),
  rim-bright nuclei with a cytoplasm halo, vignetting, speckle, column and hot-pixel noise, and
  median diameters 5-100 px. No model was trained or tuned on it.

For each method and configuration it prints AP@0.5 = TP / (TP + FP + FN) pooled over the images
(every object counts once), the mean of the per-image AP@0.5, and, for methods with an automatic
diameter, the median relative error of the diameter they used against the true median diameter.
Real-image scores are measured independently; these are what this repository can check.

    python benchmarks/eval_nuclei.py [--n 12] [--size 384] [--methods threshold,unet,maskrcnn]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from napari_segkit.datasets import realistic_nuclei
from napari_segkit.metrics import match_instances

SEED0 = 10**6


def true_diameter(lab: np.ndarray) -> float:
    a = np.bincount(lab.ravel())[1:]
    a = a[a > 0]
    return float(np.median(2 * np.sqrt(a / np.pi)))


def run_threshold(img):
    from napari_segkit.algorithms.threshold import threshold_segment

    return threshold_segment(img), None


def run_unet(img):
    from napari_segkit.models.cnn import segment_cnn

    res = segment_cnn(img)
    return res.labels, res.measured.get("diameter")


def run_maskrcnn(img):
    from napari_segkit.models.maskrcnn import predict_instances

    res = predict_instances(img)
    return res.labels, res.diameter


METHODS = {"threshold": run_threshold, "unet": run_unet, "maskrcnn": run_maskrcnn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="images per configuration")
    ap.add_argument("--size", type=int, default=384, help="image side (pixels)")
    ap.add_argument("--methods", default="threshold,unet,maskrcnn")
    ap.add_argument("--configs", default="train,holdout")
    a = ap.parse_args()
    try:
        import torch

        torch_info = f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
    except ImportError:
        torch_info = "no torch"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, {torch_info}"
    )
    print(f"{a.n} images of {a.size} x {a.size} per configuration, seeds from {SEED0}")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    rows = []
    for config in [c.strip() for c in a.configs.split(",") if c.strip()]:
        data = [
            realistic_nuclei((a.size, a.size), config=config, seed=SEED0 + k) for k in range(a.n)
        ]
        for name in methods:
            tp = fp = fn = 0
            per_image, errors = [], []
            t0 = time.perf_counter()
            for img, lab in data:
                pred, d = METHODS[name](img)
                m = match_instances(pred, lab)
                tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
                per_image.append(m.ap)
                if d is not None:
                    errors.append(abs(float(d) / true_diameter(lab) - 1))
            seconds = (time.perf_counter() - t0) / len(data)
            pooled = tp / max(1, tp + fp + fn)
            err = f"{100 * np.median(errors):5.1f} %" if errors else "    -  "
            rows.append((config, name, pooled, float(np.mean(per_image)), err, tp, fp, fn))
            print(
                f"{config:8s} {name:10s} AP@0.5 pooled {pooled:.3f}  mean per image "
                f"{np.mean(per_image):.3f}  diameter error (median) {err}  "
                f"TP {tp} FP {fp} FN {fn}  {seconds:.2f} s/image",
                flush=True,
            )
    print(
        "\n| config | method | AP@0.5 pooled | mean AP@0.5 per image | diameter error | TP / FP / FN |"
    )
    print("|---|---|---|---|---|---|")
    for config, name, pooled, mean, err, tp, fp, fn in rows:
        print(
            f"| {config} | {name} | {pooled:.2f} | {mean:.2f} | {err.strip()} | {tp} / {fp} / {fn} |"
        )


if __name__ == "__main__":
    main()
