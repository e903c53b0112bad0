"""Accuracy of the 3D defaults on generated z-stacks made differently from training.

Accuracy, not speed. What a user gets by pressing Run on a z-stack (``spatial_ndim=3``, object
size automatic), on volumes of two generator configurations:

- ``train``: ``realistic_nuclei_3d(config="train")`` with seeds the shipped model never saw
  (its training seeds start at 0; these start at 10**6); voxels 1-2x longer in z;
- ``holdout``: ``realistic_nuclei_3d(config="holdout")``: other sizes (xy radius 5-30 px), voxels
  2-4x longer in z, elongated and irregular nuclei, rim-bright, strong attenuation, speckle,
  column and hot-pixel noise. No model was trained or tuned on it.

Methods: ``unet`` (CNN widget defaults, the shipped 3D U-Net, the voxel spacing given as the
layer's scale, as a user who sets it gets), ``unet-noscale`` (the same with napari's default
scale 1: square voxels assumed), ``threshold`` (Threshold widget defaults, whole volume, the
voxel spacing given as the layer's scale), ``threshold-noscale`` (the same, square voxels
assumed). AP@0.5 = TP / (TP + FP + FN) pooled over the volumes, and the mean per-volume AP@0.5.

``--sweep`` also scores the U-Net's watershed thresholds (seed / distance) on the maps of the
``train`` volumes (choose there) and prints the holdout score of each (report, not choose).

    python benchmarks/eval_nuclei_3d.py [--n 6] [--shape 48,128,128] [--methods unet,threshold]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from napari_segkit.datasets import realistic_nuclei_3d
from napari_segkit.metrics import match_instances

SEED0 = 10**6


MODEL = "nuclei"


def run_unet(vol, spacing, device):
    from napari_segkit.models.cnn import segment_cnn

    res = segment_cnn(vol, model=MODEL, spatial_ndim=3, spacing=spacing, device=device)
    return res.labels, res.measured.get("diameter")


def run_unet_noscale(vol, spacing, device):
    return run_unet(vol, None, device)


def run_threshold(vol, spacing, device):
    from napari_segkit.algorithms.threshold import threshold_segment

    return threshold_segment(vol, spatial_ndim=3, spacing=spacing), None


def run_threshold_noscale(vol, spacing, device):
    return run_threshold(vol, None, device)


METHODS = {
    "unet": run_unet,
    "unet-noscale": run_unet_noscale,
    "threshold": run_threshold,
    "threshold-noscale": run_threshold_noscale,
}


def volumes(config: str, n: int, shape):
    for i in range(n):
        yield realistic_nuclei_3d(shape, config=config, seed=SEED0 + i, return_spacing=True)


def pooled(results) -> dict:
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    return {
        "ap50": tp / max(tp + fp + fn, 1),
        "mean_ap50": float(np.mean([r.tp / max(r.tp + r.fp + r.fn, 1) for r in results])),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def sweep(data: dict, device) -> None:
    """Watershed thresholds on the U-Net's maps (as the widget computes them)."""
    from napari_segkit.algorithms import watershed as ws
    from napari_segkit.algorithms.image import relative_spacing
    from napari_segkit.models.unet import _min_size, predict_unet

    maps = {}
    for config, items in data.items():
        maps[config] = []
        for vol, lab, spacing in items:
            res = predict_unet(
                vol,
                "nuclei_3d" if MODEL == "nuclei" else MODEL,
                spatial_ndim=3,
                spacing=spacing,
                device=device,
                return_probabilities=True,
            )
            p = np.moveaxis(res.probabilities, -1, 0)
            ms = _min_size(None, res.diameter, 3, relative_spacing(spacing, 3))
            maps[config].append((p, lab, ms))
    grid = [(s, d) for s in (0.5, 0.6, 0.7, 0.8) for d in (0.3, 0.4, 0.5, 0.6, 0.7)]
    print("seed  distance  " + "  ".join(f"{c:>18}" for c in maps), flush=True)
    for s, d in grid:
        row = []
        for config in maps:
            results = [
                match_instances(
                    ws.instances_from_maps(
                        p[1], p[2], p[3], min_size=ms, seed_threshold=s, distance_threshold=d
                    ),
                    lab,
                    iou_threshold=0.5,
                )
                for p, lab, ms in maps[config]
            ]
            r = pooled(results)
            row.append(f"{r['ap50']:.3f} ({r['fp']:>3} fp {r['fn']:>3} fn)")
        print(f"{s:4.1f}  {d:8.1f}  " + "  ".join(row), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="volumes per configuration")
    ap.add_argument("--shape", default="48,128,128")
    ap.add_argument("--methods", default="unet,unet-noscale,threshold,threshold-noscale")
    ap.add_argument("--configs", default="train,holdout")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="nuclei", help="the U-Net (default: the shipped 3D one)")
    ap.add_argument("--sweep", action="store_true", help="U-Net watershed thresholds")
    args = ap.parse_args(argv)
    global MODEL
    MODEL = args.model
    shape = tuple(int(v) for v in args.shape.split(","))
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, device {args.device}; "
        f"{args.n} volumes {shape} per configuration, model {args.model}",
        flush=True,
    )
    data = {c: list(volumes(c, args.n, shape)) for c in args.configs.split(",")}
    for method in args.methods.split(","):
        for config, items in data.items():
            t0 = time.perf_counter()
            results, per, ds = [], [], []
            for vol, lab, spacing in items:
                pred, d = METHODS[method](vol, spacing, args.device)
                r = match_instances(pred, lab, iou_threshold=0.5)
                results.append(r)
                per.append(f"{r.tp / max(r.tp + r.fp + r.fn, 1):.2f}")
                ds.append("-" if d is None else f"{d:.0f}")
            p = pooled(results)
            print(
                f"{method:17s} {config:8s} AP@0.5 {p['ap50']:.3f} (mean per volume "
                f"{p['mean_ap50']:.3f}; tp {p['tp']} fp {p['fp']} fn {p['fn']}) "
                f"per volume [{' '.join(per)}] diameters [{' '.join(ds)}] "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    if args.sweep:
        sweep(data, args.device)


if __name__ == "__main__":
    main()
