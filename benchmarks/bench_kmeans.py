"""Benchmark: k-means segmentation of a 4096 x 4096 RGB image, k=5, against scikit-learn's full fit.

Run from the repository root:
    .venv/bin/python benchmarks/bench_kmeans.py [--size 4096] [--k 5] [--baseline-n-init auto] [--context]

Prints the machine (cores), our time, the time of ``KMeans(n_clusters=k).fit`` on every pixel measured in
the same run, their ratio, the adjusted Rand index between the two labelings, and the peak memory
allocated during our call (tracemalloc; numpy reports its allocations to it) relative to the input.
The image is scikit-image's astronaut (512 x 512) upsampled bilinearly to ``size x size``, uint8.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np
import sklearn
from skimage import data, transform
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from napari_segkit.algorithms.kmeans import kmeans_segment


def make_image(size: int) -> np.ndarray:
    img = transform.resize(data.astronaut(), (size, size), order=1, anti_aliasing=False)
    return np.rint(img * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median reported)")
    ap.add_argument(
        "--baseline-n-init",
        default="auto",
        help="n_init of the full-fit baseline ('auto' = scikit-learn's default, 1 for k-means++)",
    )
    ap.add_argument(
        "--context",
        action="store_true",
        help="also print inertias, a second full fit and other seeds (about 3 more fits)",
    )
    a = ap.parse_args()
    n_init = a.baseline_n_init if a.baseline_n_init == "auto" else int(a.baseline_n_init)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (affinity: "
        f"{len(os.sched_getaffinity(0))}), python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}"
    )
    img = make_image(a.size)
    print(
        f"image: astronaut upsampled to {img.shape} {img.dtype}, {img.nbytes / 1e6:.1f} MB; k={a.k}"
    )

    kmeans_segment(img[:64, :64], k=a.k, seed=a.seed)  # warm-up: first-call overheads only

    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        ours = kmeans_segment(img, k=a.k, seed=a.seed)
        times.append(time.perf_counter() - t0)
    t_ours = statistics.median(times)
    print(f"ours: {', '.join(f'{t:.2f}' for t in times)} s (median {t_ours:.2f} s)")

    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    ours_m = kmeans_segment(img, k=a.k, seed=a.seed)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert np.array_equal(ours, ours_m), "same seed, different labels"
    print(
        f"peak memory during our call: {peak / 1e6:.1f} MB = {peak / img.nbytes:.2f} x input "
        f"(output alone {ours.nbytes / 1e6:.1f} MB)"
    )

    pixels = img.reshape(-1, 3)
    t0 = time.perf_counter()
    full = KMeans(n_clusters=a.k, n_init=n_init, random_state=a.seed).fit(pixels)
    t_full = time.perf_counter() - t0
    print(
        f"baseline KMeans(n_clusters={a.k}, n_init={n_init!r}).fit on all {len(pixels)} pixels: {t_full:.2f} s"
    )

    ari = adjusted_rand_score(full.labels_, ours.reshape(-1))
    print(f"speed-up: {t_full / t_ours:.1f} x (target >= 20)")
    print(f"adjusted Rand index vs full fit: {ari:.4f} (target >= 0.95)")
    print(f"peak memory / input: {peak / img.nbytes:.2f} (target <= 3)")

    if a.context:
        # context: k-means has several near-equal optima on this image, so a single full fit is
        # itself only one of them. Inertia on all pixels says which solution is the better one.
        _, centres = kmeans_segment(img, k=a.k, seed=a.seed, return_centers=True)
        print(
            f"inertia on all pixels: full fit {full.inertia_:.5e}, ours {inertia(pixels, ours, centres):.5e}"
        )
        other = KMeans(n_clusters=a.k, n_init=n_init, random_state=a.seed + 1).fit(pixels)
        print(
            f"full fit with random_state={a.seed + 1} vs random_state={a.seed}: ARI "
            f"{adjusted_rand_score(full.labels_, other.labels_):.4f} (inertia {other.inertia_:.5e})"
        )
        for seed in range(a.seed + 1, a.seed + 4):
            lab = kmeans_segment(img, k=a.k, seed=seed).reshape(-1)
            print(
                f"ours with seed={seed}: ARI vs full fit {adjusted_rand_score(full.labels_, lab):.4f}, "
                f"vs the random_state={a.seed + 1} full fit {adjusted_rand_score(other.labels_, lab):.4f}"
            )


def inertia(pixels: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> float:
    """Sum of squared distances of every pixel to its cluster centre, in chunks."""
    flat = labels.reshape(-1)
    total = 0.0
    for start in range(0, len(flat), 1 << 20):
        x = pixels[start : start + (1 << 20)].astype(np.float64)
        total += float(((x - centres[flat[start : start + (1 << 20)] - 1]) ** 2).sum())
    return total


if __name__ == "__main__":
    main()
