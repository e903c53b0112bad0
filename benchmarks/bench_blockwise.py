"""Benchmark: Mask R-CNN and the U-Net block by block (segment_model_blockwise) vs in memory.

A generated nuclei image (:func:`napari_segkit.datasets.synthetic_nuclei`, with its ground truth)
is written to a zarr array; each model segments it twice in the same process:

- **in memory** (the baseline): ``predict_instances`` / ``segment_cnn`` on the numpy image;
- **block by block**: ``segment_model_blockwise`` on the lazy zarr array (local threads, the
  default block: 2 x 2 of the model's tiles, halo ``2 * diameter + 8``).

It prints the time of each and their ratio, the F1 (IoU 0.5) of the block result against the
in-memory one and of both against the ground truth, the peak RSS after each run (the block run
first) relative to the input, and the machine.

Run::

    python benchmarks/bench_blockwise.py                       # 4096^2 Mask R-CNN, 2048^2 U-Net
    python benchmarks/bench_blockwise.py --maskrcnn 2048 --unet 1024   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(torch threads {torch.get_num_threads()}), load {load:.1f}, {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(method: str, size: int, device: str, folder: Path) -> dict:
    import dask.array as da

    from napari_segkit.datasets import synthetic_nuclei
    from napari_segkit.metrics import match_instances
    from napari_segkit.models.blockwise import segment_model_blockwise

    n = int(300 * (size / 768) ** 2)  # the density of the tests: ~300 nuclei per 768^2
    img, truth = synthetic_nuclei((size, size), n_nuclei=n, seed=11)
    path = folder / f"{method}_{size}.zarr"
    da.from_array(img, chunks=1024).to_zarr(str(path))
    lazy = da.from_zarr(str(path))
    params = {"device": device}

    # warm: the model loaded once, outside the timings
    warm = img[:256, :256]
    if method == "maskrcnn":
        from napari_segkit.models.maskrcnn import predict_instances

        predict_instances(warm, **params)
    else:
        from napari_segkit.models.cnn import segment_cnn

        segment_cnn(warm, **params)

    t0 = time.perf_counter()
    res = segment_model_blockwise(lazy, method, params, out=folder / f"{method}_out.zarr")
    blocks = np.asarray(res.labels)
    t_block = time.perf_counter() - t0
    rss_block = peak_mb()

    t0 = time.perf_counter()
    if method == "maskrcnn":
        ref = predict_instances(img, **params).labels
    else:
        ref = segment_cnn(img, **params).labels
    t_mem = time.perf_counter() - t0
    rss_mem = peak_mb()
    return {
        "method": method,
        "size": size,
        "objects": int(len(np.unique(truth)) - 1),
        "chunk": res.chunk,
        "halo": res.halo,
        "diameter": res.diameter,
        "t_mem": t_mem,
        "t_block": t_block,
        "f1_vs_mem": match_instances(blocks, ref).f1,
        "f1_block_gt": match_instances(blocks, truth).f1,
        "f1_mem_gt": match_instances(ref, truth).f1,
        "rss_block": rss_block,
        "rss_mem": rss_mem,
        "input_mb": img.nbytes / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maskrcnn", type=int, default=4096, help="image side for Mask R-CNN")
    ap.add_argument("--unet", type=int, default=2048, help="image side for the U-Net")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-blockwise-") as tmp:
        for method, size in (("maskrcnn", args.maskrcnn), ("cnn", args.unet)):
            if size:
                rows.append(bench(method, size, args.device, Path(tmp)))
                print(rows[-1], flush=True)
    print()
    print(
        "| method | image | objects | block (halo) | in memory s | block by block s | ratio "
        "| F1 block vs memory | F1 vs truth: memory / block | peak RSS after block / memory "
        "(input) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "Mask R-CNN" if r["method"] == "maskrcnn" else "U-Net (CNN instance)"
        print(
            f"| {name} | {r['size']}^2 | {r['objects']} | {r['chunk']} ({r['halo']}) "
            f"| {r['t_mem']:.1f} | {r['t_block']:.1f} | {r['t_block'] / r['t_mem']:.2f} "
            f"| {r['f1_vs_mem']:.3f} | {r['f1_mem_gt']:.3f} / {r['f1_block_gt']:.3f} "
            f"| {r['rss_block']:.0f} / {r['rss_mem']:.0f} MB ({r['input_mb']:.0f} MB) |"
        )


if __name__ == "__main__":
    main()
