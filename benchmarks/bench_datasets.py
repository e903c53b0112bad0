"""Benchmark: how fast the realistic generators make training data, on one core.

Run:  python benchmarks/bench_datasets.py [--quick] [--n N]

Prints, from one run on this machine (numpy/scipy are single-threaded here; set
OMP_NUM_THREADS=1 to be sure):
- ms per image of ``realistic_nuclei`` (256 x 256, uint16), "train" and "holdout", averaged over
  ``N`` seeds (each seed draws a different image configuration, so the mean is what a training
  loop sees), with the slowest seed;
- ms per volume of ``realistic_nuclei_3d`` (48 x 128 x 128), both configurations;
- the ratio to the simple ``synthetic_nuclei`` generator (the baseline) measured in the same run;
- peak memory allocated during one call (tracemalloc), relative to the image's size;
- targets: <= ~60 ms per 2D image, <= ~1 s per volume.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _timing import peak_memory

from napari_segkit.datasets import realistic_nuclei, realistic_nuclei_3d, synthetic_nuclei


def per_seed(func, n: int) -> np.ndarray:
    times = []
    for seed in range(n):
        t0 = time.perf_counter()
        func(seed)
        times.append(time.perf_counter() - t0)
    return np.array(times)


def report(name: str, times: np.ndarray, base: float, nbytes: int, peak: int, target: str) -> None:
    print(
        f"{name:44s} mean {1e3 * times.mean():7.1f} ms  slowest {1e3 * times.max():7.1f} ms  "
        f"x{times.mean() / base:5.1f} baseline  peak mem {peak / nbytes:5.1f}x image  ({target})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds (a smoke run)")
    ap.add_argument("--n", type=int, default=None, help="seeds per case")
    a = ap.parse_args()
    n2, n3 = (a.n or 8, a.n or 3) if a.quick else (a.n or 60, a.n or 12)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(one used), python {platform.python_version()}, numpy {np.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    shape2, shape3 = (256, 256), (48, 128, 128)
    base2 = per_seed(
        lambda s: synthetic_nuclei(shape2, n_nuclei=40, touching=True, seed=s), n2
    ).mean()
    base3 = per_seed(lambda s: synthetic_nuclei(shape3, n_nuclei=20, seed=s), n3).mean()
    print(
        f"baseline synthetic_nuclei: 2D {1e3 * base2:.1f} ms, 3D {1e3 * base3:.1f} ms "
        "(ellipses, Gaussian noise)"
    )
    for config in ("train", "holdout"):
        times = per_seed(lambda s, c=config: realistic_nuclei(shape2, config=c, seed=s), n2)
        peak = peak_memory(lambda c=config: realistic_nuclei(shape2, config=c, seed=1))
        report(f"realistic_nuclei {shape2} {config}", times, base2, 2 * 256 * 256, peak, "<= 60 ms")
    for config in ("train", "holdout"):
        times = per_seed(lambda s, c=config: realistic_nuclei_3d(shape3, config=c, seed=s), n3)
        peak = peak_memory(lambda c=config: realistic_nuclei_3d(shape3, config=c, seed=1))
        nbytes = 2 * int(np.prod(shape3))
        report(f"realistic_nuclei_3d {shape3} {config}", times, base3, nbytes, peak, "<= 1 s")


if __name__ == "__main__":
    main()
