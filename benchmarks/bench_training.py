"""Training throughput: the Train widget's engine against a plain PyTorch loop, in one run.

For square patches of ``--sizes`` (256 and 512 by default), both train the same U-Net (the shipped
2D nuclei architecture: depth 4, width 32, batch norm; 4 outputs) for the same number of steps
of ``--batch`` patches, with mixed precision on a GPU:

- **plain**: random tensors already on the device, the forward pass, the engine's loss
  (cross-entropy on background/interior/boundary + the distance regression), backward and an
  AdamW step: the least a training step can cost;
- **ours**: :func:`napari_segkit.models.training.train` (``start_from="nuclei"``, the widget's
  defaults otherwise: random patches cut from generated images, augmentation, targets,
  host-to-device copies), with no validation, timed from its first step to its last (the set-up,
  targets and the starting model's evaluation excluded).

Prints images (patches) per second for both and their ratio, with the machine.

    python benchmarks/bench_training.py [--device cuda] [--steps 20] [--sizes 256,512]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from _timing import torch_machine

from napari_segkit.datasets import realistic_nuclei
from napari_segkit.models import training as tr
from napari_segkit.models.devices import resolve_device
from napari_segkit.models.unet import build_unet


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def plain(size: int, batch: int, steps: int, dev: torch.device) -> float:
    """Images per second of a bare training loop on random tensors."""
    net = build_unet(depth=4, width=32, norm="batch").to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size, device=dev)
    cls = torch.randint(0, 3, (batch, size, size), device=dev)
    dist = torch.rand(batch, size, size, device=dev)
    amp = dev.type == "cuda"

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            y = net(x)
            loss = torch.nn.functional.cross_entropy(y[:, :3].float(), cls)
            loss = loss + torch.nn.functional.mse_loss(torch.sigmoid(y[:, 3].float()), dist)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * batch / (time.perf_counter() - t0)


def ours(size: int, batch: int, steps: int, dev: torch.device, pairs) -> float:
    """Images per second of the Train widget's engine, first step to last."""
    times: list[float] = []

    def progress(done: int, total: int) -> None:
        sync(dev)
        times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        tr.train(
            pairs,
            start_from="nuclei",
            epochs=1,
            steps_per_epoch=steps + 2,
            batch_size=batch,
            patch_size=size,
            val_fraction=0.0,
            device=str(dev),
            checkpoint=os.path.join(tmp, "m.safetensors"),
            progress=progress,
        )
    # progress is reported once per step (and perhaps at the start and the end): time the steps
    if len(times) < 3:
        raise SystemExit("train() reported too little progress to time its steps")
    span = times[-1] - times[1]
    return (len(times) - 2) * batch / span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="steps timed (10 CPU, 50 GPU)")
    ap.add_argument("--batch", type=int, default=8, help="patches per step (the widget's 8)")
    ap.add_argument("--sizes", default="256,512")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    steps = a.steps or (50 if dev.type == "cuda" else 10)
    print(f"machine: {torch_machine(dev)}; batch {a.batch}, {steps} steps timed")
    pairs = [realistic_nuclei((768, 768), diameter=24.0, seed=s) for s in range(4)]
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        base = plain(size, a.batch, steps, dev)
        mine = ours(size, a.batch, steps, dev, pairs)
        rows.append((size, base, mine))
        print(
            f"{size} x {size}: plain loop {base:8.2f} images/s, train() {mine:8.2f} images/s, "
            f"ratio {mine / base:5.2f}",
            flush=True,
        )
    print("\n| patch | plain loop (images/s) | train() (images/s) | ratio |")
    print("|---|---|---|---|")
    for size, base, mine in rows:
        print(f"| {size} x {size} | {base:.2f} | {mine:.2f} | {mine / base:.2f} |")


if __name__ == "__main__":
    main()
