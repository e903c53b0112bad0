"""Figure helpers shared by the examples: numpy panels, a title over each, a caption, a PNG.

matplotlib is not a dependency of napari-segkit, so the examples compose their figures with numpy
and write the text with Pillow (which scikit-image installs). Nothing here segments anything: the
segmentation is in each example, in plain sight.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.color import label2rgb
from skimage.transform import resize

#: A fixed palette for class images (0 = background first), color-blind friendly (Okabe-Ito).
CLASS_COLORS = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
    ],
    dtype=np.uint8,
)
#: Colors cycled over object IDs (label2rgb's own cycle, fixed so every run looks the same).
OBJECT_COLORS = [
    (0.90, 0.10, 0.10),
    (0.10, 0.60, 0.90),
    (0.95, 0.75, 0.10),
    (0.20, 0.75, 0.25),
    (0.65, 0.30, 0.85),
    (1.00, 0.50, 0.05),
    (0.10, 0.85, 0.80),
    (0.95, 0.40, 0.70),
    (0.55, 0.80, 0.10),
    (0.40, 0.40, 1.00),
]

TITLE_H = 22
GAP = 6


def arguments(doc: str, *, extra=None) -> argparse.Namespace:
    """The examples' common command line: ``--out DIR`` and ``--small``."""
    parser = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the PNG (default: here)"
    )
    parser.add_argument(
        "--small", action="store_true", help="a quick run: smaller images, fewer training steps"
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def rgb8(image: np.ndarray, *, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Any grey or RGB image as uint8 RGB, grey stretched between two percentiles."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        if image.dtype == np.uint8:
            return image[..., :3]
        x = image[..., :3].astype(np.float32)
        return (np.clip(x / max(float(x.max()), 1e-12), 0, 1) * 255).astype(np.uint8)
    x = image.astype(np.float32)
    lo, hi = np.percentile(x, percentiles)
    x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.repeat((x * 255).astype(np.uint8)[..., None], 3, axis=-1)


def signed(x: np.ndarray, *, percentile: float = 99.5) -> np.ndarray:
    """A signed map (an edge filter's response) in blue (negative), white (0) and red (positive)."""
    x = np.asarray(x, dtype=np.float32)
    m = float(np.percentile(np.abs(x), percentile)) or 1.0
    t = np.clip(x / m, -1, 1)[..., None]
    white = np.ones(3, np.float32)
    red, blue = np.array([0.80, 0.10, 0.10]), np.array([0.10, 0.25, 0.80])
    out = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return (out * 255).astype(np.uint8)


def classes_rgb(classes: np.ndarray, colors: np.ndarray = CLASS_COLORS) -> np.ndarray:
    """A class image (0, 1, 2, ...) painted with a fixed palette."""
    classes = np.asarray(classes)
    return colors[np.asarray(classes, dtype=np.int64) % len(colors)]


def objects_rgb(labels: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """An instance label image, one color per object, over ``image`` (grey) if given."""
    labels = np.asarray(labels)
    if image is None:
        out = label2rgb(labels, colors=OBJECT_COLORS, bg_label=0, bg_color=(0, 0, 0))
    else:
        grey = rgb8(image)[..., 0] / 255.0
        out = label2rgb(labels, image=grey, colors=OBJECT_COLORS, alpha=0.45, bg_label=0)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def outlines(rgb: np.ndarray, labels: np.ndarray, color=(255, 255, 0)) -> np.ndarray:
    """``rgb`` with the outlines of ``labels`` drawn in ``color``."""
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(labels, mode="inner")] = color
    return out


def histogram_panel(
    values: np.ndarray,
    cuts=(),
    *,
    size=(256, 256),
    bins: int = 128,
    class_colors: np.ndarray | None = None,
) -> np.ndarray:
    """A histogram drawn with numpy: bars (colored by class when ``class_colors``), cut lines."""
    h, w = size
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    heights = np.sqrt(counts / max(counts.max(), 1))  # sqrt: the small peaks stay visible
    panel = np.full((h, w, 3), 255, np.uint8)
    centers = (edges[:-1] + edges[1:]) / 2
    cls = np.searchsorted(np.sort(np.asarray(cuts, float)), centers, side="left")
    for b in range(bins):
        x0, x1 = int(b * w / bins), max(int((b + 1) * w / bins), int(b * w / bins) + 1)
        top = h - int(heights[b] * (h - 10))
        color = (90, 90, 90) if class_colors is None else class_colors[cls[b] % len(class_colors)]
        panel[top:h, x0:x1] = color
    for cut in cuts:
        x = int(np.clip((cut - lo) / (hi - lo or 1.0) * (w - 1), 0, w - 1))
        panel[:, max(x - 1, 0) : x + 1] = (200, 0, 0)
    return panel


def fit(rgb: np.ndarray, height: int) -> np.ndarray:
    """``rgb`` scaled to ``height`` pixels: smoothed when shrinking, blocky when enlarging."""
    if rgb.shape[0] == height:
        return rgb
    w = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    shrink = height < rgb.shape[0]
    out = resize(
        rgb, (height, w), order=1 if shrink else 0, preserve_range=True, anti_aliasing=shrink
    )
    return np.round(out).astype(np.uint8)


def figure(panels, *, caption: str = "", columns: int | None = None, height: int = 256) -> Image:
    """Panels ``[(title, rgb uint8), ...]`` in a grid, each titled, with a caption below."""
    columns = columns or len(panels)
    tiles = [(title, fit(rgb, height)) for title, rgb in panels]
    cell_w = max(t.shape[1] for _, t in tiles)
    rows = -(-len(tiles) // columns)
    width = columns * cell_w + (columns + 1) * GAP
    title_font, caption_font = font(14), font(13)
    chars = max(40, int(width / 7.2))
    lines = [line for para in caption.split("\n") for line in textwrap.wrap(para, chars) or [""]]
    cap_h = (len(lines) * 17 + GAP) if caption else 0
    total_h = rows * (height + TITLE_H + GAP) + GAP + cap_h
    fig = Image.new("RGB", (width, total_h), "white")
    draw = ImageDraw.Draw(fig)
    for i, (title, tile) in enumerate(tiles):
        r, c = divmod(i, columns)
        x = GAP + c * (cell_w + GAP) + (cell_w - tile.shape[1]) // 2
        y = GAP + r * (height + TITLE_H + GAP)
        draw.text((x, y + 2), title, fill="black", font=title_font)
        fig.paste(Image.fromarray(tile), (x, y + TITLE_H))
    y = GAP + rows * (height + TITLE_H + GAP)
    for line in lines:
        draw.text((GAP, y), line, fill=(40, 40, 40), font=caption_font)
        y += 17
    return fig


def label_text(rgb: np.ndarray, items, *, size: int = 12) -> np.ndarray:
    """``rgb`` with short texts drawn at ``(row, col)`` positions: ``[(text, (r, c)), ...]``."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    f = font(size)
    for text, (r, c) in items:
        box = draw.textbbox((0, 0), text, font=f)
        x, y = int(c - (box[2] - box[0]) / 2), int(r - (box[3] - box[1]) / 2)
        draw.text((x, y), text, fill="white", font=f, stroke_width=2, stroke_fill="black")
    return np.asarray(img)


def save(fig: Image.Image, out: Path, name: str, started: float | None = None) -> Path:
    """Write the figure as a small PNG and say where (and how long the example took).

    The figure is reduced to 256 colors (no dithering): a third of the size, hardly visible.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    small = fig.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    took = f" in {time.perf_counter() - started:.1f} s" if started is not None else ""
    print(f"wrote {path} ({path.stat().st_size // 1024} kB){took}")
    return path
