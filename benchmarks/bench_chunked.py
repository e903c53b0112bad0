"""Benchmark: block-by-block segmentation of an image larger than memory (segment_chunked).

A ``--size`` x ``--size`` uint16 image (default 20000 x 20000, 800 MB) of bright discs on a noisy
background is written to a zarr array on disk block by block (never held in memory at once).
Then, for threshold objects (Otsu, holes filled, min size) and Edges (Canny, fill):

- **peak memory**: the resident memory (RSS) of this process plus every worker process of a
  ``distributed.LocalCluster``, polled every 0.1 s, at the full size and at half the side, to show
  it does not grow with the image;
- **throughput** (megapixels per second) with 1 and 2 workers (one thread each) of a LocalCluster
  on a ``--size / 2`` square, and the scaling from 1 to 2 workers;
- **equality** with the in-memory method on a ``--crop`` x ``--crop`` crop (labels equal up to
  renumbering), and the ratio of the block-by-block speed to the in-memory speed on that crop
  (the baseline, measured in the same run).

Run::

    python benchmarks/bench_chunked.py                    # 20000 x 20000: several minutes
    python benchmarks/bench_chunked.py --size 4096 --crop 2048   # a quick check

It prints the machine (cores, memory, load) and a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

METHODS = {
    "threshold objects": ("threshold", {"method": "otsu", "fill_holes": True, "min_size": 20}),
    "edges (Canny fill)": ("edges", {}),
}


# ---- the image, block by block -------------------------------------------------------------------
def make_image(path: Path, size: int, chunk: int, seed: int = 0) -> tuple[int, float]:
    """Write the test image to ``path`` (zarr), one block at a time; (number of discs, seconds)."""
    import zarr

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = size * size // 1600  # about one disc per 40 x 40 pixels
    centres = rng.uniform(0, size, (n, 2))
    radii = rng.uniform(6, 16, n)
    levels = rng.uniform(2500, 6000, n)
    z = zarr.open_array(
        str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype="uint16"
    )
    for by in range(0, size, chunk):
        for bx in range(0, size, chunk):
            h, w = min(chunk, size - by), min(chunk, size - bx)
            block_rng = np.random.default_rng([seed, by, bx])
            block = block_rng.normal(800, 120, (h, w)).astype(np.float32)
            yy, xx = np.ogrid[by : by + h, bx : bx + w]
            block += 0.01 * (yy + xx)  # a gentle background gradient
            near = np.flatnonzero(
                (centres[:, 0] + radii > by)
                & (centres[:, 0] - radii < by + h)
                & (centres[:, 1] + radii > bx)
                & (centres[:, 1] - radii < bx + w)
            )
            for i in near:  # discs crossing the block's borders are drawn in both blocks
                cy, cx, r = centres[i, 0], centres[i, 1], radii[i]
                y0, y1 = max(int(cy - r), by), min(int(cy + r) + 2, by + h)
                x0, x1 = max(int(cx - r), bx), min(int(cx + r) + 2, bx + w)
                sy, sx = np.ogrid[y0:y1, x0:x1]
                disc = (sy - cy) ** 2 + (sx - cx) ** 2 <= r * r
                sub = block[y0 - by : y1 - by, x0 - bx : x1 - bx]
                np.maximum(sub, np.where(disc, levels[i], 0), out=sub)
            z[by : by + h, bx : bx + w] = np.clip(block, 0, 65535).astype(np.uint16)
    return n, time.perf_counter() - t0


# ---- memory ---------------------------------------------------------------------------------------
class PeakRSS:
    """Polls the RSS of this process and all its descendants (the cluster's workers)."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_main = 0
        self.processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        import psutil

        main = self.proc.memory_info().rss
        total = main
        children = self.proc.children(recursive=True)
        self.processes = max(self.processes, 1 + len(children))
        for child in children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)
        self.peak_main = max(self.peak_main, main)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def rss_now() -> int:
    with PeakRSS() as p:
        pass
    return p.peak


# ---- runs -------------------------------------------------------------------------------------
def run_chunked(src, method, params, chunk, workers, out, region=None):
    """Seconds, peak RSS (all processes), peak RSS of this process, number of labels."""
    from distributed import Client, LocalCluster

    from napari_segkit.algorithms.chunked import segment_chunked

    image = src if region is None else _region(src, region)
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("napari_segkit.algorithms.chunked"))  # warm imports
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            labels = segment_chunked(
                image, method, params, chunk=chunk, scheduler=client, out=out, overwrite=True
            )
            seconds = time.perf_counter() - t0
        n = int(labels.max().compute(scheduler="threads"))
    print(f"  ({mem.processes} processes measured)", flush=True)
    return seconds, mem.peak, mem.peak_main, n


def _region(src, size):
    import dask.array as da

    return da.from_zarr(str(src))[:size, :size]


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def crossing(labels: np.ndarray, chunk: int) -> int:
    ids = set()
    for c in range(chunk, labels.shape[0], chunk):
        for a, b in ((labels[c - 1], labels[c]), (labels[:, c - 1], labels[:, c])):
            ids |= set(np.unique(a[(a == b) & (a > 0)]).tolist())
    return len(ids)


def machine() -> str:
    import dask
    import psutil
    import zarr

    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.platform()}; {platform.processor() or platform.machine()}; "
        f"{os.cpu_count()} logical cores, {mem:.0f} GiB RAM; load average {load}; "
        f"Python {platform.python_version()}, dask {dask.__version__}, zarr {zarr.__version__}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--crop", type=int, default=4096)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the zarr arrays")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names")
    args = parser.parse_args(argv)

    from napari_segkit.algorithms.chunked import segment_chunked
    from napari_segkit.algorithms.edges import edge_segment
    from napari_segkit.algorithms.threshold import threshold_segment

    print(f"machine: {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-chunked-", dir=args.tmp))
    try:
        src = work / "image.zarr"
        n_discs, t_gen = make_image(src, args.size, args.chunk)
        print(
            f"image: {args.size} x {args.size} uint16 ({args.size**2 * 2 / 2**20:.0f} MiB), "
            f"{n_discs} discs, written block by block in {t_gen:.0f} s; baseline RSS of this "
            f"process {rss_now() / 2**20:.0f} MiB",
            flush=True,
        )
        half = args.size // 2
        rows = []
        for name in args.methods.split(","):
            method, params = METHODS[name]
            func = threshold_segment if method == "threshold" else edge_segment
            # equality and the in-memory baseline on a crop (chunked: local threads)
            import dask.array as da

            crop = np.asarray(da.from_zarr(str(src))[: args.crop, : args.crop])
            t0 = time.perf_counter()
            expected = func(crop, **params)
            t_mem = time.perf_counter() - t0
            block = max(256, args.crop // 4)
            t0 = time.perf_counter()
            got = np.asarray(segment_chunked(crop, method, params, chunk=block))
            t_chk = time.perf_counter() - t0
            equal = same_objects(got, expected)
            seams = crossing(expected, block)
            mp_crop = args.crop**2 / 1e6
            print(
                f"{name}: {args.crop}^2 crop in memory {mp_crop / t_mem:.2f} MP/s, block by block "
                f"({block}^2 blocks, local threads) {mp_crop / t_chk:.2f} MP/s; equal up to "
                f"renumbering: {equal} ({int(expected.max())} objects, {seams} crossing seams)",
                flush=True,
            )
            del crop, expected, got  # the runs below measure the block-by-block path alone
            # throughput with 1 and 2 workers on a (size/2)^2 region
            speed = {}
            for w in (1, 2):
                out = work / f"out_{method}_{w}.zarr"
                s, peak, peak_main, n = run_chunked(
                    src, method, params, args.chunk, w, out, region=half
                )
                speed[w] = half**2 / 1e6 / s
                print(
                    f"{name}: {half}^2, {w} worker(s): {s:.0f} s, {speed[w]:.2f} MP/s, "
                    f"peak RSS {peak / 2**30:.2f} GiB (this process {peak_main / 2**30:.2f}), "
                    f"{n} objects",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
                if w == 2:
                    peak_half = peak
            # the full image with 2 workers: memory does not grow with the size
            out = work / f"out_{method}_full.zarr"
            s, peak, peak_main, n = run_chunked(src, method, params, args.chunk, 2, out)
            print(
                f"{name}: {args.size}^2, 2 workers: {s:.0f} s, {args.size**2 / 1e6 / s:.2f} MP/s, "
                f"peak RSS {peak / 2**30:.2f} GiB (this process {peak_main / 2**30:.2f}), "
                f"{n} objects",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
            rows.append(
                (
                    name,
                    equal,
                    mp_crop / t_mem,
                    mp_crop / t_chk,
                    speed[1],
                    speed[2],
                    speed[2] / speed[1],
                    peak_half,
                    peak,
                    args.size**2 / 1e6 / s,
                )
            )
        print()
        print(f"machine: {machine()}")
        print(
            f"| method | equal on {args.crop}^2 crop | in-memory MP/s (crop) | block-by-block "
            f"MP/s (crop, threads) | 1 worker MP/s ({half}^2) | 2 workers MP/s | scaling 1->2 | "
            f"peak RSS {half}^2 | peak RSS {args.size}^2 | MP/s {args.size}^2 (2 workers) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r[0]} | {'yes' if r[1] else 'NO'} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} | "
                f"{r[5]:.2f} | {r[6]:.2f}x | {r[7] / 2**30:.2f} GiB | {r[8] / 2**30:.2f} GiB | "
                f"{r[9]:.2f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
