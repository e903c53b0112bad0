"""Global threshold at the mean: every pixel brighter than the image's mean is foreground.

The simplest segmentation there is. One number, the mean intensity, splits the histogram in two;
the pixels above it form the mask, and each connected region of the mask becomes one object.

On the coins photo the mean finds most coins, but the background is lit unevenly: along the top
edge it is brighter than the mean, so it becomes one large false object joined to the top row of
coins, and the dimmer coins keep holes and ragged edges. A *local* threshold (``method="local"``)
follows the lighting instead.

Run: ``python examples/threshold_mean.py [--out DIR] [--small]``
"""

import time

import numpy as np
from _figure import arguments, classes_rgb, figure, histogram_panel, objects_rgb, rgb8, save
from skimage import data

from napari_segkit.algorithms.threshold import threshold_segment, threshold_value


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    image = data.coins()  # 303 x 384, uint8
    if args.small:
        image = image[::2, ::2]

    # 1. the threshold: one number, the mean intensity
    t = threshold_value(image, method="mean")
    # 2. the mask: foreground where the image is above it (output="classes": 0 below, 1 above)
    mask = threshold_segment(image, method="mean", output="classes", min_size=0, fill_holes=False)
    # 3. objects: each connected region of the mask gets its own ID (small specks dropped).
    #    split_touching=False: plain connected regions (by default touching objects are split)
    objects = threshold_segment(
        image, method="mean", output="objects", min_size=20, split_touching=False
    )

    n = int(objects.max())
    print(f"mean = {t:.1f}; {100 * mask.mean():.0f}% of the pixels are above it; {n} objects")
    panels = [
        ("photo (coins)", rgb8(image)),
        (f"histogram, mean = {t:.0f}", histogram_panel(image, [t], size=(image.shape[0], 300))),
        ("mask: pixel > mean", classes_rgb(mask, np.array([[0, 0, 0], [255, 255, 255]]))),
        (f"{n} objects (connected regions)", objects_rgb(objects, image)),
    ]
    caption = (
        f"threshold_segment(image, method='mean'): the threshold is the mean intensity ({t:.1f}). "
        f"Pixels above it are foreground ({100 * mask.mean():.0f}% of the image); each connected "
        f"region of at least 20 pixels becomes one object ({n}), holes filled. The uneven lighting "
        "shows: the bright background along the top edge is above the mean too."
    )
    save(figure(panels, caption=caption), args.out, "threshold_mean", started)


if __name__ == "__main__":
    main()
