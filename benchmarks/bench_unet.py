"""U-Net inference cost: tiled, blended ``predict_unet`` vs one plain forward pass of the whole image.

From one run in one process, on a generated nuclei image (uint16):

(a) baseline: normalize, one ``module(x)`` on the whole image (padded to a multiple of 16),
    softmax, maps back to numpy: the least any U-Net inference can do (no tiles, no labels);
(b) ours, maps: :func:`napari_segkit.models.unet.predict_unet` with ``output="semantic"`` (tiles
    of ``--tile`` with ``--overlap``, blended, batched, float16 autocast on a GPU, argmax);
(c) ours, objects: ``output="instance"`` (b) plus the seeded watershed and the table;
(d) ours, objects on a stack of ``--stack`` such images in one call: images per second end to
    end (the watersheds run on the CPU's threads while the GPU works on the next planes).

The network is the shipped 2D nuclei U-Net (depth 4, width 32), run at its own object diameter
(no rescaling), so the watershed sees real maps; ``--random`` uses random weights instead (the
post-processing then sees meaningless maps). (e) is the post-processing of one image alone (seeded
watershed and table, one CPU thread), the CPU work that (d) spreads over the threads; (f) is (d)
with the automatic diameter (the default a user gets: estimated once per call, then rescaled).

Usage::

    python benchmarks/bench_unet.py                       # GPU if there is one
    python benchmarks/bench_unet.py --device cpu --size 512
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _timing import torch_machine

from napari_segkit.algorithms import watershed as ws
from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.models import unet
from napari_segkit.models.devices import resolve_device
from napari_segkit.models.normalize import normalize


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best(func, repeat: int, dev: torch.device) -> float:
    times = []
    for _ in range(repeat):
        sync(dev)
        t0 = time.perf_counter()
        func()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None, help="image edge (default 2048 GPU, 512 CPU)")
    p.add_argument("--tile", type=int, default=1024, help="the CNN widget's default")
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--stack", type=int, default=None, help="images in (d) (16 GPU, 2 CPU)")
    p.add_argument("--random", action="store_true", help="random weights, not the shipped U-Net")
    args = p.parse_args()
    dev = resolve_device(args.device)
    size = args.size or (2048 if dev.type == "cuda" else 512)
    print(f"machine: {torch_machine(dev)}")
    if args.random:
        torch.manual_seed(0)
        net = unet.build_unet(depth=4, width=32)
        loaded = unet.LoadedUNet(
            net, net.config, "instance", ["background", "object"], {}, None, "random"
        )
    else:
        loaded = unet.load_unet("nuclei", dev)
    model = unet._ready(loaded, dev)
    diameter = model.object_diameter  # the model's own size: no rescaling
    img, _ = synthetic_nuclei((size, size), n_nuclei=size * size // 1500, seed=1)

    def plain() -> np.ndarray:
        x = torch.from_numpy(normalize(img[..., None])[..., 0])[None, None].to(dev)
        with (
            torch.inference_mode(),
            torch.autocast(device_type="cuda", dtype=torch.float16, enabled=dev.type == "cuda"),
        ):
            y = model.module(x)
        return torch.softmax(y[:, :3].float(), 1).cpu().numpy()

    def ours(output: str, data=img, auto: bool = False):
        return unet.predict_unet(
            data,
            model,
            output=output,
            tile_size=args.tile,
            tile_overlap=args.overlap,
            batch_size=args.batch,
            device=dev,
            diameter=None if auto else diameter,
        )

    plain()
    ours("semantic")  # warm-up (cuDNN autotuning, allocator)
    t_plain = best(plain, args.repeat, dev)
    t_maps = best(lambda: ours("semantic"), args.repeat, dev)
    t_inst = best(lambda: ours("instance"), args.repeat, dev)
    n_stack = args.stack or (16 if dev.type == "cuda" else 2)
    stack = np.stack([np.roll(img, 37 * k, axis=1) for k in range(n_stack)])
    t_stack = best(lambda: ours("instance", stack), max(1, args.repeat - 1), dev)
    t_auto = None
    if diameter is not None:  # (f): the default a user gets, the diameter estimated per call
        res_auto = ours("instance", stack, auto=True)
        t_auto = best(lambda: ours("instance", stack, auto=True), max(1, args.repeat - 1), dev)
    maps = np.moveaxis(
        unet.predict_unet(
            img,
            model,
            output="instance",
            diameter=diameter,
            return_probabilities=True,
            tile_size=args.tile,
            tile_overlap=args.overlap,
            device=dev,
        ).probabilities,
        -1,
        0,
    )

    def post() -> None:
        lab = ws.instances_from_maps(maps[1], maps[2], maps[3], min_size=20)
        ws.objects_table(lab, maps[1])

    t_post = best(post, args.repeat, dev)
    mpx = size * size / 1e6
    print(
        f"image {size} x {size} ({mpx:.2f} Mpx), tiles {args.tile}/{args.overlap}, "
        f"batch {args.batch}"
    )
    print(f"(a) plain forward, whole image : {t_plain:8.3f} s  ({mpx / t_plain:7.2f} Mpx/s)")
    print(
        f"(b) predict_unet, maps         : {t_maps:8.3f} s  ({mpx / t_maps:7.2f} Mpx/s)"
        f"  ratio to (a) {t_maps / t_plain:5.2f}"
    )
    print(
        f"(c) predict_unet, objects      : {t_inst:8.3f} s  ({mpx / t_inst:7.2f} Mpx/s)"
        f"  ratio to (a) {t_inst / t_plain:5.2f}"
    )
    print(
        f"(d) predict_unet, objects, {n_stack} images in one call: {t_stack:8.3f} s  "
        f"({n_stack / t_stack:7.2f} images/s; {unet.n_threads(n_stack)} CPU threads for the "
        f"watersheds)"
    )
    print(f"(e) post-processing alone, one image, one thread: {t_post:8.3f} s")
    if t_auto is not None:
        print(
            f"(f) as (d) with the automatic diameter: {t_auto:8.3f} s  "
            f"({n_stack / t_auto:7.2f} images/s; diameter used {res_auto.diameter:.1f} px, "
            f"the model's {diameter:g})"
        )
    if dev.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
