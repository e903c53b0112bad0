"""Peak host memory of ``predict_unet`` on one large plane held in memory (tiled, blended).

Each output (semantic, instance) runs in a fresh process: the shipped 2D nuclei U-Net at its own
object size (no rescaling) on a ``--size`` x ``--size`` uint16 image of generated nuclei (a
1024 x 1024 image tiled). The peak resident memory during the call (Linux ``VmHWM``, reset just
before it through ``/proc/self/clear_refs``) minus the resident memory before it is reported
against the image's own size. On a CPU device the network's blended maps live in host memory
too; on a GPU they stay on the device.

Usage::

    python benchmarks/bench_unet_memory.py                  # 8192 x 8192, GPU if there is one
    python benchmarks/bench_unet_memory.py --device cpu --size 4096
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(size: int, output: str, device: str) -> None:
    import numpy as np

    from napari_segkit.datasets import synthetic_nuclei
    from napari_segkit.models import unet
    from napari_segkit.models.devices import resolve_device

    dev = resolve_device(device)
    model = unet.load_unet("nuclei", dev)
    tile, _ = synthetic_nuclei((1024, 1024), n_nuclei=700, seed=1)
    reps = -(-size // 1024)
    img = np.ascontiguousarray(np.tile(tile, (reps, reps))[:size, :size])
    kw = dict(output=output, diameter=model.object_diameter, device=dev)
    unet.predict_unet(tile[:256, :256], model, **kw)  # warm-up: allocator, threads
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size
    base = _status("VmRSS")
    t0 = time.perf_counter()
    res = unet.predict_unet(img, model, **kw)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    print(
        json.dumps(
            {
                "output": output,
                "seconds": round(seconds, 2),
                "objects": int(res.labels.max()),
                "image_bytes": int(img.nbytes),
                "peak_over_image": round((peak - base) / img.nbytes, 2),
                "peak_extra_GiB": round((peak - base) / 2**30, 3),
                "device": str(dev),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--device", default="auto")
    p.add_argument("--outputs", default="semantic,instance")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.size, args.child, args.device)
        return
    import os
    import platform

    import torch

    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and args.device != "cpu"
        else "none"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, GPU: {gpu}"
    )
    print(f"image {args.size} x {args.size} uint16 ({args.size**2 * 2 / 2**20:.0f} MiB)")
    for output in args.outputs.split(","):
        cmd = [sys.executable, __file__, "--child", output, "--size", str(args.size)]
        run = subprocess.run(cmd + ["--device", args.device], capture_output=True, text=True)
        if run.returncode:
            print(run.stderr[-2000:])
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{output:9s}: peak host memory during the call {r['peak_extra_GiB']:.2f} GiB = "
            f"{r['peak_over_image']:.1f}x the image; {r['seconds']:.1f} s, {r['objects']} "
            f"objects, device {r['device']}"
        )


if __name__ == "__main__":
    main()
