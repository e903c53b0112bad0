"""Mask R-CNN throughput at 1024 x 1024 on a crowded nuclei image: ours vs a plain torchvision loop.

For each model, from one run in one process:

(a) plain loop: torchvision's ``model([image])`` (its own transform at native size, its own mask
    pasting), masks to numpy, labels painted in score order one detection at a time (fp32, one
    image at a time: what a script written from the torchvision docs does);
(b) forward alone: (a)'s ``model([image])`` on an image already on the device, synchronised;
(c) ours: :func:`napari_segkit.models.maskrcnn.predict_instances`, numpy uint16 images in, int32
    labels out (batched, float16 autocast on a GPU, masks pasted all at once on the device).

Models: the shipped small nuclei model (trained; its real detections on the image), and the full
``maskrcnn_resnet50_fpn`` architecture with a 2-class head and random weights (score threshold 0,
so the detection cap, 500 by default, is filled: timing only, its masks are meaningless).

Usage::

    python benchmarks/bench_maskrcnn.py                  # GPU if there is one
    python benchmarks/bench_maskrcnn.py --device cpu --n-images 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from _timing import torch_machine

from napari_segkit.algorithms.instances import auto_max_detections
from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models import maskrcnn as mr
from napari_segkit.models.devices import resolve_device

QUOTED_IMG_PER_S = 5.0


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def plain_model(model: mr.LoadedModel, size: int, score: float, cap: int):
    """The same network as torchvision uses it: its transform (at native size) and postprocess."""
    module = model.module
    module.transform.min_size = (size,)
    module.transform.max_size = size
    module.transform.image_mean = list(model.normalization["mean"])
    module.transform.image_std = list(model.normalization["std"])
    mr._configure(module, score, 0.5, cap)
    return module


def plain_loop(module, images: list[np.ndarray], dev: torch.device) -> tuple[float, np.ndarray]:
    """(a): numpy in, labels out, one image and one detection at a time."""
    t0 = time.perf_counter()
    last = None
    for img in images:
        lo, hi = np.percentile(img, (1, 99.8))
        x = ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)
        x = torch.from_numpy(np.repeat(x[None], 3, axis=0)).to(dev)
        with torch.inference_mode():
            out = module([x])[0]
        masks = out["masks"].cpu().numpy()[:, 0] > 0.5
        labels = np.zeros(img.shape, np.int32)
        for i in range(len(masks) - 1, -1, -1):  # lowest score first: the highest ends on top
            labels[masks[i]] = i + 1
        last = labels
    return time.perf_counter() - t0, last


def forward_only(module, images: list[np.ndarray], dev: torch.device) -> float:
    """(b): torchvision's forward (with its own mask pasting) on device-resident images."""
    xs = []
    for img in images:
        lo, hi = np.percentile(img, (1, 99.8))
        x = ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)
        xs.append(torch.from_numpy(np.repeat(x[None], 3, axis=0)).to(dev))
    sync(dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in xs:
            module([x])
    sync(dev)
    return time.perf_counter() - t0


def ours(
    model,
    stack: np.ndarray,
    score: float,
    cap: int,
    batch: int,
    half: bool,
    dev,
    auto_size: bool = False,
) -> tuple[float, object]:
    sync(dev)
    t0 = time.perf_counter()
    res = mr.predict_instances(
        stack,
        model,
        # the model's own size (no estimate, no rescaling), or estimated as a user's default run
        diameter=None if auto_size else mr.object_diameter(model),
        score_threshold=score,
        max_detections=cap,
        batch_size=batch,
        half=half,
        tile_size=stack.shape[-1],
    )
    sync(dev)
    return time.perf_counter() - t0, res


def machine(dev: torch.device) -> str:
    return torch_machine(dev)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--n-nuclei", type=int, default=600)
    ap.add_argument(
        "--n-images", type=int, default=32, help="images for ours (plain: a quarter, >= 2)"
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cap", type=int, default=500, help="detection cap of the random resnet50")
    ap.add_argument("--models", default="nuclei,resnet50")
    ap.add_argument("--nuclei-weights", default="nuclei", help="shipped name or a checkpoint path")
    ap.add_argument(
        "--auto-size",
        action="store_true",
        help="ours with the automatic object size (the default a user gets), not the model's own",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", action="store_true", help="also time each stage of ours")
    args = ap.parse_args(argv)

    dev = resolve_device(args.device)
    torch.manual_seed(0)
    on_gpu = dev.type == "cuda"
    n_ours = args.n_images
    n_plain = max(2, n_ours // 8) if on_gpu else max(1, n_ours // 2)
    distinct = [
        synthetic_nuclei(
            (args.size, args.size),
            n_nuclei=args.n_nuclei,
            radius=(6, 12),
            touching=True,
            background_gradient=0.3,
            noise=0.05,
            seed=100 + i,
        )
        for i in range(4)
    ]
    truth_counts = [int(len(np.unique(t)) - 1) for _, t in distinct]
    imgs = [distinct[i % 4][0] for i in range(n_ours)]
    stack = np.stack(imgs)
    print(f"machine: {machine(dev)}")
    print(
        f"image: {args.size}x{args.size} uint16, synthetic nuclei, {np.mean(truth_counts):.0f} "
        f"ground-truth objects per image (4 distinct images)"
    )
    results = []
    for name in args.models.split(","):
        if name == "nuclei":
            model = mr.load_model(args.nuclei_weights, dev)
            score, cap = 0.5, None
            note = "shipped trained model, score >= 0.5"
        elif name == "resnet50":
            torch.manual_seed(0)  # the same random weights (hence box sizes) in every run
            module = mr.build_architecture("maskrcnn_resnet50_fpn", 2)
            model = mr._ready(
                mr.LoadedModel(
                    module,
                    "maskrcnn_resnet50_fpn",
                    ["bg", "object"],
                    dict(mr.DEFAULT_NORMALIZATION),
                    "random",
                ),
                dev,
            )
            score, cap = 0.0, args.cap
            note = f"random weights, 2 classes, score >= 0 -> {args.cap} detections/image"
        else:
            raise SystemExit(f"unknown model {name}")
        plain_cap = cap if cap is not None else auto_max_detections((args.size, args.size))
        # warm-up (cudnn autotune, allocator)
        ours(
            model, stack[: min(len(stack), args.batch_size)], score, cap, args.batch_size, True, dev
        )
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(dev)
        t_ours, res = ours(model, stack, score, cap, args.batch_size, True, dev)
        peak = torch.cuda.max_memory_allocated(dev) if on_gpu else 0
        if args.auto_size and mr.object_diameter(model) is not None:
            bs = args.batch_size
            ours(model, stack[:bs], score, cap, bs, True, dev, auto_size=True)  # warm-up
            t_auto, res_auto = ours(model, stack, score, cap, bs, True, dev, auto_size=True)
            t_one, _ = ours(model, stack[:1], score, cap, bs, True, dev, auto_size=True)
            print(
                f"{name}: automatic size: {len(stack) / t_auto:.1f} images/s in one call of "
                f"{len(stack)} images (the model's own size: {len(stack) / t_ours:.1f}); one image "
                f"per call: {1 / t_one:.1f} images/s; diameter used {res_auto.diameter}",
                flush=True,
            )
        n_det = res.n_objects / len(stack)
        t = res.table
        box_area = float(np.mean((t["bbox_y1"] - t["bbox_y0"]) * (t["bbox_x1"] - t["bbox_x0"])))
        stages = None
        if args.profile:  # a separate run: the synchronisation between stages costs a little
            mr.PROFILE = {}
            t_prof, _ = ours(model, stack, score, cap, args.batch_size, True, dev)
            stages = {k: round(1000 * v / len(stack), 2) for k, v in mr.PROFILE.items()}
            stages["total_synchronised"] = round(1000 * t_prof / len(stack), 2)
            mr.PROFILE = None
            print(f"{name}: ms per image by stage: {stages}", flush=True)
        ours(model, stack[:1], score, cap, 1, False, dev)  # warm-up (cudnn autotune) at batch 1
        t_ours1, _ = ours(model, stack[: max(2, n_plain)], score, cap, 1, False, dev)
        pm = plain_model(model, args.size, score, plain_cap)
        plain_loop(pm, imgs[:1], dev)  # warm-up
        t_plain, plain_labels = plain_loop(pm, imgs[:n_plain], dev)
        t_fwd = forward_only(pm, imgs[:n_plain], dev)
        mr._ready(model, dev)  # back to channels_last
        # does our fast path give the plain loop's labels? (fp16 vs fp32: close, not identical)
        last = (n_plain - 1) % 4
        agree = match_instances(res.labels[last], plain_labels, iou_threshold=0.5)
        fit = None
        if name == "nuclei":
            fit = match_instances(res.labels[0], distinct[0][1], iou_threshold=0.5)
        row = {
            "model": name,
            "note": note,
            "device": str(dev),
            "detections_per_image": round(n_det, 1),
            "mean_box_area_px": round(box_area, 1),
            "plain_img_s": n_plain / t_plain,
            "forward_img_s": n_plain / t_fwd,
            "ours_img_s": len(stack) / t_ours,
            "ours_batch1_fp32_img_s": max(2, n_plain) / t_ours1,
            "ratio_ours_plain": (len(stack) / t_ours) / (n_plain / t_plain),
            "ratio_ours_quoted5": (len(stack) / t_ours) / QUOTED_IMG_PER_S,
            "n_images_ours": len(stack),
            "n_images_plain": n_plain,
            "batch_size": args.batch_size,
            "gpu_peak_GiB": round(peak / 2**30, 2),
            "gpu_peak_over_input": round(peak / stack.nbytes, 1) if peak else None,
            "agreement_ours_vs_plain_f1": round(agree.f1, 3),
            "ours_vs_truth_f1": None if fit is None else round(fit.f1, 3),
            "ours_ms_per_image_by_stage": stages,
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak host RSS {rss:.1f} GiB; input stack {stack.nbytes / 2**30:.2f} GiB")
    print(
        f"\n{'model':10} {'det/img':>8} {'plain':>8} {'fwd':>8} {'ours':>8} {'ours b1':>8} "
        f"{'x plain':>8} {'x 5/s':>7}  (images/s, {args.size}x{args.size}, {dev})"
    )
    for r in results:
        print(
            f"{r['model']:10} {r['detections_per_image']:8.0f} {r['plain_img_s']:8.2f} "
            f"{r['forward_img_s']:8.2f} {r['ours_img_s']:8.2f} {r['ours_batch1_fp32_img_s']:8.2f} "
            f"{r['ratio_ours_plain']:8.1f} {r['ratio_ours_quoted5']:7.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(dev), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
