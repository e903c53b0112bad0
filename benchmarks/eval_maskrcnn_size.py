"""Mask R-CNN object size: how well the automatic diameter is estimated, and what it gives.

Accuracy, not speed. For generated nuclei of KNOWN size (``datasets.synthetic_nuclei``; and
``datasets.realistic_nuclei`` when it exists), prints the relative error of each diameter
estimate against the truth (the median equivalent diameter of the true objects):

- ``classical``: ``algorithms.size.estimate_diameter`` (or its fallback) alone;
- ``classical+model``: then one model pass at that size (what ``diameter=None`` does);
- ``classical+model x2``: two model passes;
- ``model only``: model passes starting from the model's own size (no classical guess);

and the matched F1 (IoU >= 0.5) of ``predict_instances`` with the automatic size.

    python benchmarks/eval_maskrcnn_size.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import maskrcnn as mr


def truth_diameter(lab: np.ndarray) -> float:
    a = np.bincount(lab.ravel())[1:]
    a = a[a > 0]
    return float(np.median(2 * np.sqrt(a / np.pi)))


def synthetic(d: float, seed: int, touching: bool):
    size = int(max(256, 8 * d))
    n = int(0.3 * size * size / (math.pi * d * d / 4))
    return synthetic_nuclei(
        (size, size),
        n_nuclei=n,
        radius=(0.4 * d, 0.6 * d),
        touching=touching,
        seed=seed,
        background_gradient=0.2,
        noise=0.05,
    )


def model_only(img, model, passes=2):
    working = mr.object_diameter(model)
    guess = working
    for _ in range(passes):
        res = mr.predict_instances(img, model, diameter=guess)
        t = res.table
        ok = t["area"] > 0
        if ok.sum() < 5:
            break
        guess = float(np.median(2 * np.sqrt(t["area"][ok] / np.pi)))
    return guess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed per size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=("synthetic", "realistic"), default=None)
    args = ap.parse_args()
    model = mr.load_model("nuclei", args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, model {model.source}, "
        f"object_diameter {mr.object_diameter(model)}"
    )
    seeds = (0,) if args.quick else (0, 1, 2)
    cases = []
    for d in (8, 16, 30, 60, 100) if args.only != "realistic" else ():
        for touching in (False, True):
            for s in seeds:
                img, lab = synthetic(d, s, touching)
                cases.append((f"synthetic d={d} {'touching' if touching else 'apart'}", img, lab))
    try:
        from napari_segkit.datasets import realistic_nuclei
    except ImportError:
        realistic_nuclei = None
        print("datasets.realistic_nuclei: not available on this branch")
    if realistic_nuclei is not None and args.only != "synthetic":
        for config in ("train", "holdout"):
            for d in (8, 16, 30, 60, 100):
                for s in seeds:
                    size = int(max(256, 6 * d))
                    img, lab = realistic_nuclei((size, size), config=config, diameter=d, seed=s)
                    cases.append((f"realistic {config} d={d}", img, lab))
    rows: dict[str, dict[str, list]] = {}
    for name, img, lab in cases:
        truth = truth_diameter(lab)
        est = {
            "classical": mr.estimate_diameter(img, model, refine=0),
            "classical+model": mr.estimate_diameter(img, model, refine=1),
            "classical+model x2": mr.estimate_diameter(img, model, refine=2),
            "model only": model_only(img, model),
        }
        t0 = time.perf_counter()
        res = mr.predict_instances(img, model)
        seconds = time.perf_counter() - t0
        f1 = match_instances(res.labels, lab)["f1"]
        row = rows.setdefault(name, {k: [] for k in (*est, "f1", "s")})
        for k, v in est.items():
            row[k].append(v / truth - 1)
        row["f1"].append(f1)
        row["s"].append(seconds)
    keys = ["classical", "classical+model", "classical+model x2", "model only"]
    print("relative error of the estimate (mean |err| and the signed values); F1 with auto size")
    print(f"{'case':34s}" + "".join(f"{k:>22s}" for k in keys) + f"{'F1 auto':>9s}{'s':>6s}")
    for name, row in rows.items():
        cells = "".join(
            f"{np.mean(np.abs(row[k])):>8.2f} ({' '.join(f'{v:+.2f}' for v in row[k])})".rjust(22)
            for k in keys
        )
        print(f"{name:34s}{cells}{np.mean(row['f1']):>9.2f}{np.mean(row['s']):>6.1f}")


if __name__ == "__main__":
    main()
