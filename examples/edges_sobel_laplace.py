"""Edges: the Sobel horizontal and vertical kernels, the Laplace kernel, and regions from edges.

An edge is where the intensity changes fast. Each filter is a small kernel laid on every pixel
(a correlation): the weighted sum of the 3 x 3 neighborhood.

- Sobel, horizontal edges, scikit-image's kernel ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``
  (applied as a convolution, i.e. flipped): positive (red) where the image is brighter below,
  negative (blue) where it is brighter above: the top and bottom rims of each coin light up.
- Sobel, vertical edges ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` (also flipped): positive where
  the image is brighter on the right: the left and right rims.
- Their magnitude ``sqrt(h**2 + v**2)`` responds to edges of any direction.
- Laplace ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``: the second derivative, with no direction. It
  changes sign across an edge and reacts to noise too, so it is usually applied after a Gaussian
  blur (the "Laplacian of Gaussian").

``edge_segment`` turns edges into regions: the pixels whose response exceeds Otsu's threshold are
edges; a closing bridges small gaps, the enclosed areas are filled, and each filled region is an
object.

Run: ``python examples/edges_sobel_laplace.py [--out DIR] [--small]``
"""

import time

import numpy as np
from _figure import arguments, figure, objects_rgb, rgb8, save, signed
from scipy import ndimage as ndi
from skimage import data

from napari_segkit.algorithms.edges import (
    edge_segment,
    laplace,
    sobel_h,
    sobel_magnitude,
    sobel_v,
)


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    image = data.coins()  # 303 x 384, uint8
    if args.small:
        image = image[::2, ::2]

    h = sobel_h(image)  # float32; red > 0 > blue in the figure
    v = sobel_v(image)
    magnitude = sobel_magnitude(image)
    lap = laplace(image)
    log = laplace(ndi.gaussian_filter(image.astype("float32"), 2.0))  # Laplacian of Gaussian

    from_sobel = edge_segment(image, filter="sobel", sigma=1.0)
    from_laplace = edge_segment(image, filter="laplace", sigma=2.0)
    print(
        f"{int(from_sobel.max())} regions from Sobel edges, "
        f"{int(from_laplace.max())} from Laplace edges (the photo has 24 coins)"
    )
    # which way round the signs are: a step from dark (top) to bright (bottom), and left to right
    step = np.zeros((3, 3))
    step[2] = 1
    below = "below" if sobel_h(step)[1, 1] > 0 else "above"
    right = "right" if sobel_v(step.T)[1, 1] > 0 else "left"
    panels = [
        ("photo (coins)", rgb8(image)),
        ("Sobel horizontal edges", signed(h)),
        ("Sobel vertical edges", signed(v)),
        ("Sobel magnitude", rgb8(magnitude, percentiles=(0, 99.5))),
        ("Laplace", signed(lap)),
        ("Laplace after Gaussian (sigma 2)", signed(log)),
        (f"regions from Sobel: {int(from_sobel.max())}", objects_rgb(from_sobel, image)),
        (f"regions from Laplace: {int(from_laplace.max())}", objects_rgb(from_laplace, image)),
    ]
    caption = (
        "sobel_h: kernel [[1,2,1],[0,0,0],[-1,-2,-1]] (red: brighter "
        f"{below}, blue: the opposite); sobel_v: [[1,0,-1],[2,0,-2],[1,0,-1]] (red: brighter on "
        f"the {right}); both as convolutions, as in scikit-image. laplace: "
        "[[1,1,1],[1,-8,1],[1,1,1]], noisy on the raw photo, clean after a Gaussian blur. "
        "edge_segment(image, filter='sobel' or 'laplace'): edges above Otsu's threshold, gaps "
        "closed, enclosed areas filled, one object per region (the photo has 24 coins)."
    )
    fig = figure(panels, caption=caption, columns=4, height=220)
    save(fig, args.out, "edges_sobel_laplace", started)


if __name__ == "__main__":
    main()
