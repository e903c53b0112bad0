"""Benchmark the Edges method on a 4096x4096 image against the bare scipy/scikit-image calls.

Run: ``.venv/bin/python benchmarks/bench_edges.py`` (a script, not a test). For each step it times
ours and the baseline in the same process (best of ``--repeat``), prints the ratio
(ours / baseline), the peak traced memory of ours relative to the input (tracemalloc), and the
machine. The input is the generated uint16 nuclei image (no download).
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
from _timing import best_of, peak_memory
from scipy import ndimage as ndi
from skimage import feature, filters, segmentation

from napari_segkit.algorithms.edges import (
    canny_edges,
    edge_segment,
    laplace,
    sobel_magnitude,
)
from napari_segkit.datasets import synthetic_nuclei

L8 = np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shape = (args.size, args.size)
    img, gt = synthetic_nuclei(shape, n_nuclei=shape[0] * shape[1] // 1200, seed=0)
    f32 = img.astype(np.float32)
    f64 = img / 65535.0

    def bare_ws():
        # the bare watershed pipeline on the same markers idea: gaussian, sobel, Otsu, EDT peaks
        s = ndi.gaussian_filter(f32, 1.0)
        g = filters.sobel(s)
        fg = ndi.binary_fill_holes(s > filters.threshold_otsu(s))
        comps, _ = ndi.label(fg)
        pk = feature.peak_local_max(
            ndi.distance_transform_edt(fg), min_distance=10, labels=comps, exclude_border=False
        )
        mk = np.zeros(shape, np.int32)
        mk[tuple(pk.T)] = np.arange(1, len(pk) + 1)
        mk[~ndi.binary_dilation(fg, iterations=2)] = len(pk) + 1
        return segmentation.watershed(g, mk)

    def bare_fill():
        e = feature.canny(f64, 1.0, 0.1, 0.2)
        return ndi.label(ndi.binary_fill_holes(e | ndi.binary_closing(e)))

    steps = [
        (
            "Sobel magnitude",
            lambda: sobel_magnitude(img),
            lambda: filters.sobel(f32),
            "skimage.filters.sobel(float32)",
        ),
        (
            "Sobel magnitude",
            lambda: sobel_magnitude(img),
            lambda: np.hypot(ndi.sobel(f32, 0), ndi.sobel(f32, 1)),
            "hypot(ndi.sobel x2) float32",
        ),
        (
            "Laplace 8-nb",
            lambda: laplace(img),
            lambda: ndi.correlate(f32, L8),
            "ndi.correlate(float32, 3x3)",
        ),
        (
            "Canny",
            lambda: canny_edges(img),
            lambda: feature.canny(f64, 1.0, 0.1, 0.2),
            "skimage.feature.canny(float64)",
        ),
        ("fill regions", lambda: edge_segment(img), bare_fill, "canny+closing+fill+label"),
        (
            "watershed regions",
            lambda: edge_segment(img, region_mode="watershed"),
            bare_ws,
            "gaussian+sobel+otsu+EDT peaks+watershed",
        ),
    ]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
        f"python {platform.python_version()}; GPU: none used"
    )
    print(f"input: {shape} uint16, {int(gt.max())} nuclei, {img.nbytes / 2**20:.0f} MiB")
    print(f"{'step':20s} {'ours s':>8s} {'bare s':>8s} {'ratio':>6s} {'peak/input':>10s}  baseline")
    for name, ours, bare, what in steps:
        t_ours = best_of(ours, args.repeat)
        t_bare = best_of(bare, args.repeat)
        mem = peak_memory(ours) / img.nbytes
        print(f"{name:20s} {t_ours:8.3f} {t_bare:8.3f} {t_ours / t_bare:6.2f} {mem:10.1f}  {what}")
    n_fill = int(edge_segment(img).max())
    n_ws = int(edge_segment(img, region_mode="watershed").max())
    print(f"regions: fill {n_fill}, watershed {n_ws}, ground truth {int(gt.max())}")


if __name__ == "__main__":
    main()
