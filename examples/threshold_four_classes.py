"""Multi-level threshold: four intensity classes from three cut points.

A single threshold splits an image in two. With several cut points the histogram is cut into
several intervals, and every pixel gets the number of its interval: with the cut points
``0.25, 0.5`` and the mean on an image scaled to 0..1, the pixels fall into four classes,
darkest (0) to brightest (3). The cut points can be numbers or the name of a global method
computed on the image ("mean", "otsu", ...), so ``"mean, 0.5, 0.25"`` is a valid setting.

The second row lets multi-Otsu choose the three cut points instead (``method="multiotsu"``,
``classes=4``): it places them where they best separate the histogram's peaks.

Run: ``python examples/threshold_four_classes.py [--out DIR] [--small]``
"""

import time

from _figure import CLASS_COLORS, arguments, classes_rgb, figure, histogram_panel, rgb8, save
from skimage import data, img_as_float
from skimage.color import rgb2gray

from napari_segkit.algorithms.threshold import multilevel_thresholds, threshold_segment


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    photo = img_as_float(data.coffee())  # 400 x 600 RGB, scaled to 0..1
    if args.small:
        photo = photo[::2, ::2]
    # what threshold_segment thresholds: the luminance of an RGB image (also 0..1)
    image = rgb2gray(photo)
    colors = CLASS_COLORS[[0, 5, 1, 4]]  # black, blue, orange, yellow: dark to bright

    rows = []
    settings = [
        ("cut points 'mean, 0.5, 0.25'", dict(method="cut_points", cut_points="mean, 0.5, 0.25")),
        ("multi-Otsu, 4 classes", dict(method="multiotsu", classes=4)),
    ]
    for name, params in settings:
        classes = threshold_segment(photo, output="classes", **params)
        cuts = multilevel_thresholds(
            image,
            cut_points=["mean", 0.5, 0.25] if params["method"] == "cut_points" else None,
            classes=4,
        )
        shares = [100 * (classes == c).mean() for c in range(4)]
        print(
            f"{name}: cut points {', '.join(f'{c:.3f}' for c in cuts)}; "
            f"classes 0-3 hold {', '.join(f'{s:.0f}%' for s in shares)} of the pixels"
        )
        first = (
            ("photo (coffee), 0..1", rgb8(photo)) if not rows else ("its luminance", rgb8(image))
        )
        rows += [
            first,
            (
                f"{name}: {', '.join(f'{c:.2f}' for c in cuts)}",
                histogram_panel(image, cuts, size=(image.shape[0], 560), class_colors=colors),
            ),
            ("classes 0 (dark) .. 3 (bright)", classes_rgb(classes, colors)),
        ]
    caption = (
        "threshold_segment(photo, method='cut_points', cut_points='mean, 0.5, 0.25', "
        "output='classes'): on the photo's luminance (0..1), three cut points (red lines; "
        "'mean' is computed on the image) make four classes, colored in the histogram as in the "
        "class image. Below, method='multiotsu' with classes=4 picks the three cut points that "
        "best separate the histogram's peaks."
    )
    save(figure(rows, caption=caption, columns=3), args.out, "threshold_four_classes", started)


if __name__ == "__main__":
    main()
