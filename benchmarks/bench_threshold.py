"""Benchmark: Otsu + objects, ours against the bare scikit-image calls and the tutorial's Python loop.

Run:  python benchmarks/bench_threshold.py [--quick]

Prints, from one run on this machine (its CPU, cores and load average included):
- time of ``threshold_segment(image, method="otsu")`` (objects, face connectivity) and its ratio to the
  bare scikit-image pipeline ``label(image > threshold_otsu(image))`` measured in the same process,
  the two called alternately, best of ``--repeat`` each (target: at most 0.67, i.e. 1.5x faster,
  with identical output, asserted); ours runs its histogram and labelling on one thread per core,
  and is also timed on a single thread (scikit-image's calls are single-threaded);
- the speed-up over per-pixel Python loops (target: at least 100x), two of them, both timed on a
  prefix of the image and scaled to the whole image:
  * the classic tutorial's loop as written, ``if gray_r[i] > gray_r.mean(): gray_r[i] = 1 ...``,
    which recomputes the mean for every pixel: quadratic in the pixel count, so scaled by n**2;
  * the same loop with the mean computed once (what a careful user would write): linear, scaled by n.
- peak memory allocated during our call (tracemalloc; numpy reports its buffers to it), relative to the
  input's size (target: at most 4x).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _timing import peak_memory
from skimage import filters, measure

from napari_segkit.algorithms import objects
from napari_segkit.algorithms.threshold import threshold_segment
from napari_segkit.datasets import synthetic_nuclei


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{model}; {os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))}); "
        f"load average {load}; python {platform.python_version()}, numpy {np.__version__}"
    )


def best_pair(ours, bare, repeat: int) -> tuple[float, float]:
    """Best of ``repeat`` alternating calls of each (both see the same machine load)."""
    t_ours, t_bare = [], []
    for _ in range(repeat):
        for func, times in ((ours, t_ours), (bare, t_bare)):
            t0 = time.perf_counter()
            func()
            times.append(time.perf_counter() - t0)
    return min(t_ours), min(t_bare)


def hoisted_loop_seconds(image: np.ndarray, n_pixels: int) -> float:
    """Per-pixel loop with the mean computed once, on ``n_pixels``, scaled linearly to the image."""
    flat = image.reshape(-1)[:n_pixels].astype(np.float64)
    mean = flat.mean()
    t0 = time.perf_counter()
    for i in range(flat.shape[0]):
        if flat[i] > mean:
            flat[i] = 1
        else:
            flat[i] = 0
    return (time.perf_counter() - t0) * image.size / n_pixels


def tutorial_loop_seconds(image: np.ndarray, n_pixels: int) -> float:
    """The tutorial's loop as written (mean recomputed per pixel), scaled quadratically."""
    gray_r = image.reshape(-1)[:n_pixels].astype(np.float64)
    t0 = time.perf_counter()
    for i in range(gray_r.shape[0]):
        if gray_r[i] > gray_r.mean():
            gray_r[i] = 1
        else:
            gray_r[i] = 0
    return (time.perf_counter() - t0) * (image.size / n_pixels) ** 2


def make_image(shape: tuple[int, ...]) -> np.ndarray:
    """Tile a generated nuclei image (uint16) up to ``shape``: realistic objects, cheap to make."""
    tile_shape = tuple(min(s, 512) for s in shape)
    tile, _ = synthetic_nuclei(
        tile_shape, n_nuclei=200 if len(shape) == 2 else 60, radius=(5, 12), seed=0
    )
    reps = tuple(-(-s // t) for s, t in zip(shape, tile_shape, strict=True))
    return np.ascontiguousarray(np.tile(tile, reps)[tuple(slice(0, s) for s in shape)])


def run_case(name: str, image: np.ndarray, spatial_ndim: int, repeat: int) -> dict:
    # the bare pipeline's steps only: no smoothing, minimum size, hole filling or splitting (the
    # widget's defaults add those; they have no scikit-image one-liner to compare with)
    plain = dict(smoothing=0, min_size=0, fill_holes=False, split_touching=False, connectivity=1)
    ours = lambda: threshold_segment(  # noqa: E731
        image, method="otsu", spatial_ndim=spatial_ndim, **plain
    )
    bare = lambda: measure.label(image > filters.threshold_otsu(image), connectivity=1)  # noqa: E731
    a, b = ours(), bare()
    # identical labels (same IDs), or the timing means nothing
    assert a.shape == b.shape and np.array_equal(a, b), "ours and scikit-image differ"
    t_ours, t_bare = best_pair(ours, bare, repeat)
    threads = objects.n_threads(image.size if spatial_ndim == image.ndim else image[0].size)
    saved = objects._THREAD_PIXELS
    objects._THREAD_PIXELS = image.size + 1  # one thread
    try:
        t_one, t_bare1 = best_pair(ours, bare, repeat)
    finally:
        objects._THREAD_PIXELS = saved
    t_hoisted = hoisted_loop_seconds(image, 1 << 20)
    t_tutorial = tutorial_loop_seconds(image, 1 << 13)
    mem = peak_memory(ours) / image.nbytes
    mem_bare = peak_memory(bare) / image.nbytes
    print(f"{name} {image.dtype}: {int(a.max())} objects, identical labels to scikit-image")
    print(f"  ours {t_ours:.3f} s ({threads} threads), bare scikit-image {t_bare:.3f} s")
    print(f"  ratio ours/scikit-image      {t_ours / t_bare:10.2f}   (target <= 0.67)")
    print(
        f"  on 1 thread: ours {t_one:.3f} s, scikit-image {t_bare1:.3f} s, ratio "
        f"{t_one / t_bare1:.2f}"
    )
    print(
        f"  speed-up, tutorial loop      {t_tutorial / t_ours:10.3g}x  (loop ~{t_tutorial:.3g} s; target >= 100)"
    )
    print(f"  speed-up, hoisted-mean loop  {t_hoisted / t_ours:10.1f}x  (loop ~{t_hoisted:.1f} s)")
    print(
        f"  peak memory                  {mem:10.2f}x input (target <= 4; scikit-image {mem_bare:.2f}x)"
    )
    return {"ratio": t_ours / t_bare, "memory": mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller images (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    shape2d = (1024, 1024) if a.quick else (4096, 4096)
    shape3d = (64, 256, 256) if a.quick else (256, 512, 512)
    print(f"machine: {machine()}")
    run_case(f"2D {shape2d}", make_image(shape2d), 2, a.repeat)
    run_case(f"3D volume {shape3d}", make_image(shape3d), 3, a.repeat)
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
