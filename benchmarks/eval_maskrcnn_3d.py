"""Mask R-CNN on z-stacks: 3D objects from a 2D model, against the truth (accuracy, not speed).

Generated stacks of ellipsoidal nuclei (``datasets.synthetic_nuclei((Z, Y, X))``: apart,
touching, crowded; every plane, or every 3rd plane with ``spacing=(3, 1, 1)``) segmented by the
shipped 2D model with ``spatial_ndim=3`` (automatic diameter), and, for comparison:

- the same with the 2D instance borders cut out of the evidence (``CUT_BORDERS=True``);
- plane by plane with one-to-one slice linking (``spatial_ndim=2, link_frames=True`` along z),
  the approach this replaces.

Prints, per stack: objects, the share of true objects matched at IoU >= 0.5, AP@0.5 =
TP / (TP + FP + FN), and the mean IoU of the matches.

    python benchmarks/eval_maskrcnn_3d.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import maskrcnn as mr


def scores(lab, truth):
    s = match_instances(lab, truth, iou_threshold=0.5)
    return (
        s["n_pred"],
        s["tp"] / max(s["n_true"], 1),
        s["tp"] / max(s["tp"] + s["fp"] + s["fn"], 1),
        s.mean_matched_iou,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--default-only", action="store_true", help="skip the comparisons")
    args = ap.parse_args()
    model = mr.load_model("nuclei", args.device)
    print(f"machine: {platform.processor() or platform.machine()}; model {model.source}")
    stacks = [("apart", False, 1, 25), ("touching", True, 2, 25), ("crowded", True, 3, 40)]
    if args.quick:
        stacks = stacks[1:2]
    rows = []
    for name, touching, seed, n in stacks:
        img, truth = synthetic_nuclei(
            (24, 128, 128), n_nuclei=n, radius=(6, 10), touching=touching, seed=seed
        )
        for step in (1, 3):
            sub, tsub = img[::step], truth[::step]
            case = f"{name} n={int(tsub.max())} z-step {step}"
            t0 = time.perf_counter()
            res = mr.predict_instances(sub, model, spatial_ndim=3, spacing=(step, 1, 1))
            seconds = time.perf_counter() - t0
            rows.append((case, "3D (default)", *scores(res.labels, tsub), seconds))
            print(f"{case}: diameter {res.diameter:.1f} px, {seconds:.0f} s", flush=True)
            if args.default_only:
                continue
            mr.CUT_BORDERS = True
            try:
                plain = mr.predict_instances(
                    sub, model, diameter=res.diameter, spatial_ndim=3, spacing=(step, 1, 1)
                )
            finally:
                mr.CUT_BORDERS = False
            rows.append((case, "3D, 2D borders cut", *scores(plain.labels, tsub), None))
            linked = mr.predict_instances(
                sub, model, diameter=res.diameter, spatial_ndim=2, link_frames=True
            )
            rows.append((case, "2D + slice linking", *scores(linked.labels, tsub), None))
    print(f"{'stack':28s}{'method':24s}{'objects':>8s}{'matched':>9s}{'AP@0.5':>8s}{'IoU':>6s}")
    for case, method, npred, matched, ap50, iou, _ in rows:
        print(f"{case:28s}{method:24s}{npred:>8d}{matched:>9.2f}{ap50:>8.2f}{iou:>6.2f}")


if __name__ == "__main__":
    main()
