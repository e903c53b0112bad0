"""Benchmark the Edges method on a 4096x4096 image against the bare scipy/scikit-image calls.

Run: ``.venv/bin/python benchmarks/bench_edges.py`` (a script, not a test). For each step it times
ours and the baseline in the same process, alternately (ours, bare, ours, bare, ...; best of
``--repeat`` each, so that both see the same machine load), prints the ratio (ours / baseline;
below 1 is faster), the peak traced memory of ours and of the baseline relative to the input
(tracemalloc: numpy reports its buffers to it; the input itself is not counted), and the machine
with its load average. The input is the generated uint16 nuclei image (no download).

Input conversion is stated per row: "f32 both" gives both sides the same float32 copy made
beforehand (conversion excluded on both sides); "u16 both" gives both the uint16 image and the
baseline converts it with ``astype(np.float32)`` inside the timed call, as ours does internally
(conversion included on both sides).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _timing import peak_memory
from scipy import ndimage as ndi
from skimage import feature, filters, morphology, segmentation

from napari_segkit.algorithms.edges import (
    canny_edges,
    edge_segment,
    laplace,
    sobel_magnitude,
)
from napari_segkit.datasets import synthetic_nuclei

L8 = np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=np.float32)


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
    """Best of ``repeat`` alternating calls of each."""
    t_ours, t_bare = [], []
    for _ in range(repeat):
        for func, times in ((ours, t_ours), (bare, t_bare)):
            t0 = time.perf_counter()
            func()
            times.append(time.perf_counter() - t0)
    return min(t_ours), min(t_bare)


def bare_watershed(img: np.ndarray, min_distance: int = 10, min_size: int = 20) -> np.ndarray:
    """The same steps as ``edge_segment(region_mode='watershed')``, bare calls on whole images."""
    s = ndi.gaussian_filter(img.astype(np.float32), 1.0)
    g = filters.sobel(s)
    fg = ndi.binary_fill_holes(s > filters.threshold_otsu(s))
    comps, _ = ndi.label(fg)
    pk = feature.peak_local_max(
        ndi.distance_transform_edt(fg),
        min_distance=min_distance,
        labels=comps,
        exclude_border=False,
    )
    mk = np.zeros(img.shape, np.int32)
    mk[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    full = ndi.generate_binary_structure(2, 2)
    mk[~ndi.binary_dilation(fg, full, iterations=2)] = len(pk) + 1
    labels = segmentation.watershed(g, mk)
    labels[labels == len(pk) + 1] = 0
    return morphology.remove_small_objects(labels, max_size=min_size - 1)


def bare_fill(f64: np.ndarray):
    e = feature.canny(f64, 1.0, 0.1, 0.2)
    return ndi.label(ndi.binary_fill_holes(e | ndi.binary_closing(e)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated step names (default all)")
    args = parser.parse_args()
    shape = (args.size, args.size)
    img, gt = synthetic_nuclei(shape, n_nuclei=shape[0] * shape[1] // 1200, seed=0)
    f32 = img.astype(np.float32)
    f64 = img / 65535.0

    steps = [
        ("sobel", "f32 both", lambda: sobel_magnitude(f32), lambda: filters.sobel(f32),
         "skimage.filters.sobel(f32)"),
        ("sobel", "u16 both", lambda: sobel_magnitude(img),
         lambda: filters.sobel(img.astype(np.float32)), "skimage.filters.sobel(u16 -> f32)"),
        ("laplace", "f32 both", lambda: laplace(f32), lambda: ndi.correlate(f32, L8),
         "ndi.correlate(f32, 3x3 8-nb)"),
        ("laplace", "u16 both", lambda: laplace(img),
         lambda: ndi.correlate(img.astype(np.float32), L8), "ndi.correlate(u16 -> f32, 3x3)"),
        ("canny", "u16 / f64", lambda: canny_edges(img), lambda: feature.canny(f64, 1.0, 0.1, 0.2),
         "skimage.feature.canny(f64 made before)"),
        ("fill", "u16 / f64", lambda: edge_segment(img), lambda: bare_fill(f64),
         "canny+closing+fill+label"),
        ("watershed", "u16 both", lambda: edge_segment(img, region_mode="watershed"),
         lambda: bare_watershed(img), "gauss+sobel+otsu+fill+EDT peaks+watershed+min size"),
    ]  # fmt: skip
    only = {s for s in args.only.split(",") if s}
    print(f"machine: {machine()}; GPU: none used")
    print(f"input: {shape} uint16, {int(gt.max())} nuclei, {img.nbytes / 2**20:.0f} MiB")
    print(
        f"{'step':10s} {'input':9s} {'ours s':>8s} {'bare s':>8s} {'ratio':>6s} "
        f"{'ours mem':>8s} {'bare mem':>8s}  baseline (mem = tracemalloc peak / input bytes)"
    )
    for name, conv, ours, bare, what in steps:
        if only and name not in only:
            continue
        t_ours, t_bare = best_pair(ours, bare, args.repeat)
        mem = peak_memory(ours) / img.nbytes
        mem_bare = peak_memory(bare) / img.nbytes
        print(
            f"{name:10s} {conv:9s} {t_ours:8.3f} {t_bare:8.3f} {t_ours / t_bare:6.2f} "
            f"{mem:8.1f} {mem_bare:8.1f}  {what}",
            flush=True,
        )
    if not only or "watershed" in only:
        ours = edge_segment(img, region_mode="watershed")
        bare = bare_watershed(img)
        n_bare = len(np.unique(bare)) - 1
        differ = np.count_nonzero((ours > 0) != (bare > 0))
        # the same partition iff every region of one maps onto exactly one region of the other
        pairs = len(np.unique(ours.astype(np.int64) * (int(bare.max()) + 1) + bare))
        print(
            f"watershed regions: ours {int(ours.max())}, bare {n_bare}, ground truth "
            f"{int(gt.max())}; pixels object/background differently: {differ} "
            f"({differ / ours.size:.2e} of the image); (ours, bare) label pairs: {pairs} "
            f"(= regions + 1 when the partitions are the same)"
        )
    if not only or "fill" in only:
        print(f"fill regions: ours {int(edge_segment(img).max())}")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
