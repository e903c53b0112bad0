"""Benchmark: AP@0.5 of threshold segmentation with and without split_touching.

Run:  python benchmarks/bench_split.py [--n 5] [--config holdout]

On ``n`` generated ``realistic_nuclei`` images (256 x 256, the "holdout" configuration by default,
never used to choose any constant), prints the mean AP@0.5 (one-to-one Hungarian matching on IoU;
TP / (TP + FP + FN)) of:
- ``threshold_segment(image)`` (global Otsu) with ``split_touching=False`` and with the default
  ``True``;
- the connected components vs ``split_touching`` of two other masks: the true foreground (what
  splitting can do with a perfect mask) and ``size.foreground_mask`` (half-height, background
  subtracted);
- the time of ``threshold_segment`` with and without splitting, and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from napari_segkit.algorithms.objects import label_objects, split_touching
from napari_segkit.algorithms.size import foreground_mask
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.datasets import realistic_nuclei


def ap50(truth: np.ndarray, pred: np.ndarray) -> float:
    nt, npred = int(truth.max()), int(pred.max())
    if nt == 0 or npred == 0:
        return float(nt == npred)
    pair = truth.astype(np.int64) * (npred + 1) + pred
    inter = np.bincount(pair.ravel(), minlength=(nt + 1) * (npred + 1)).reshape(nt + 1, npred + 1)
    union = inter.sum(1)[1:, None] + inter.sum(0)[None, 1:] - inter[1:, 1:]
    iou = inter[1:, 1:] / np.maximum(union, 1)
    rows, cols = linear_sum_assignment(-iou)
    tp = int((iou[rows, cols] >= 0.5).sum())
    return tp / (nt + npred - tp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--config", default="holdout")
    a = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    rows = {k: [] for k in ("otsu", "otsu+split", "truth", "truth+split", "half", "half+split")}
    t_plain = t_split = 0.0
    for seed in range(a.n):
        img, truth = realistic_nuclei((256, 256), config=a.config, seed=seed)
        t0 = time.perf_counter()
        plain = threshold_segment(img, split_touching=False)
        t1 = time.perf_counter()
        split = threshold_segment(img)
        t2 = time.perf_counter()
        t_plain += t1 - t0
        t_split += t2 - t1
        half = foreground_mask(img)
        rows["otsu"].append(ap50(truth, plain))
        rows["otsu+split"].append(ap50(truth, split))
        rows["truth"].append(ap50(truth, label_objects(truth > 0)))
        rows["truth+split"].append(ap50(truth, split_touching(truth > 0)))
        rows["half"].append(ap50(truth, label_objects(half)))
        rows["half+split"].append(ap50(truth, split_touching(half)))
        print(
            f"seed {seed}: {int(truth.max())} nuclei, "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items())
        )
    print(f"mean AP@0.5 over {a.n} '{a.config}' images:")
    for k, v in rows.items():
        print(f"  {k:12s} {np.mean(v):.3f}")
    print(
        f"threshold_segment: {1e3 * t_plain / a.n:.0f} ms/image without splitting, "
        f"{1e3 * t_split / a.n:.0f} ms/image with (ratio {t_split / t_plain:.1f})"
    )


if __name__ == "__main__":
    main()
