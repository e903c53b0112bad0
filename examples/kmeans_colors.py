"""K-means on colors: every pixel joins the nearest of five color clusters.

Each pixel is a point in color space (red, green, blue). K-means places ``k`` centers there and
alternates two steps until nothing moves: give every pixel to its nearest center, then move each
center to the mean color of its pixels. The result is a label per pixel (its cluster, 1 = the
darkest center ... k = the brightest) and k center colors. Painting every pixel with its
center's color gives the "posterized" cluster-color image: the photo in five colors.

K-means knows nothing about position: pixels of the same color join the same cluster wherever
they are (the black helmet and the flag's dark blue corner share one). With
``spatial_weight > 0`` the pixel coordinates join the features and clusters become more compact.

Run: ``python examples/kmeans_colors.py [--out DIR] [--small]``
"""

import time

import numpy as np
from _figure import CLASS_COLORS, arguments, classes_rgb, figure, rgb8, save
from skimage import data

from napari_segkit.algorithms.kmeans import cluster_color_image, kmeans_segment


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    photo = data.astronaut()  # 512 x 512 RGB, uint8
    if args.small:
        photo = photo[::2, ::2]

    k = 5
    labels, centers = kmeans_segment(photo, k=k, seed=0, return_centers=True)
    posterized = cluster_color_image(labels, centers, dtype=np.uint8)

    shares = [100 * (labels == i).mean() for i in range(1, k + 1)]
    for i, (c, s) in enumerate(zip(centers, shares, strict=True), start=1):
        print(f"cluster {i}: center RGB {np.round(c).astype(int).tolist()}, {s:.0f}% of the pixels")
    # a swatch of the five center colors, widest for the largest cluster
    swatch = np.zeros((photo.shape[0], photo.shape[1], 3), np.uint8)
    edges = np.round(np.cumsum([0] + shares) / 100 * photo.shape[1]).astype(int)
    for i in range(k):
        swatch[:, edges[i] : edges[i + 1]] = np.clip(np.round(centers[i]), 0, 255)
    panels = [
        ("photo (astronaut)", rgb8(photo)),
        (f"cluster-color image, k = {k}", posterized),
        ("labels 1 (dark) .. 5 (bright)", classes_rgb(labels, CLASS_COLORS)),
        ("the 5 centers, by share of pixels", swatch),
    ]
    caption = (
        f"labels, centers = kmeans_segment(photo, k={k}, return_centers=True); "
        "cluster_color_image(labels, centers): every pixel painted with its cluster's center "
        "color. Labels are ordered by brightness (1 = darkest center). K-means clusters colors "
        "only, not places: the black helmet and the flag's dark blue corner share cluster 1."
    )
    save(figure(panels, caption=caption), args.out, "kmeans_colors", started)


if __name__ == "__main__":
    main()
