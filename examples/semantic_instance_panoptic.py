"""Semantic vs instance vs panoptic segmentation of the same image, with one CNN.

- **Semantic**: a class for every pixel (here: background or nucleus). Two touching nuclei are
  one patch of "nucleus" pixels: the classes say *what*, not *which one*.
- **Instance**: an ID for every object (nucleus 1, 2, 3, ...), background 0. Touching nuclei
  are told apart; nothing is said about the pixels that are not objects.
- **Panoptic**: both in one label image. Every pixel gets a class, and every pixel of a
  countable *thing* class (nucleus) also the number of its object. napari-segkit encodes it as
  ``id = class_id * label_divisor + instance`` (Cityscapes' and detectron2's panoptic format;
  ``label_divisor`` 1000 unless an image holds more objects of one class): nucleus 7 is
  ``1 * 1000 + 7 = 1007``; a pixel of an uncountable *stuff* class gets ``class_id * 1000``, and
  class 0, the background, is 0. ``id // 1000`` gives the class back, ``id % 1000`` the instance
  (``napari_segkit.algorithms.panoptic.decode``).

All three come from ``segment_cnn(image, model="nuclei", output=...)`` with the shipped nuclei
U-Net, which predicts, per pixel, background / interior / boundary and the distance to the
boundary; the instances are a seeded watershed of those maps. If the shipped file is missing, a
small U-Net is first trained here on generated nuclei with ``napari_segkit.models.training.train``.

Run: ``python examples/semantic_instance_panoptic.py [--out DIR] [--small]``
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from _figure import CLASS_COLORS, arguments, classes_rgb, figure, label_text, objects_rgb, rgb8
from _figure import save as save_figure
from scipy import ndimage as ndi

from napari_segkit.algorithms.panoptic import decode
from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models.cnn import segment_cnn
from napari_segkit.models.weights import SHIPPED_MODELS


def small_unet(folder: Path, small: bool) -> Path:
    """A U-Net trained here on generated nuclei (only when the shipped one is not installed)."""
    from napari_segkit.models.training import train

    pairs = [
        synthetic_nuclei((128, 128), n_nuclei=14, radius=(7, 14), touching=True, seed=s)
        for s in range(4 if small else 8)
    ]
    res = train(
        pairs,
        epochs=4 if small else 10,
        steps_per_epoch=20 if small else 40,
        batch_size=8,
        patch_size=64 if small else 128,
        learning_rate=1e-2,
        architecture={"depth": 2 if small else 3, "width": 8 if small else 16},
        device="cpu",
        checkpoint=folder / "nuclei_small_unet.safetensors",
    )
    return res.checkpoint


def panoptic_rgb(panoptic: np.ndarray, divisor: int, image: np.ndarray) -> np.ndarray:
    """The class color (stuff: dimmed), each thing object a lighter or darker shade of it."""
    classes, instances = decode(panoptic, divisor)
    base = CLASS_COLORS[classes % len(CLASS_COLORS)].astype(np.float32)
    shade = np.where(instances > 0, 0.55 + 0.45 * ((instances * 7) % 10) / 9, 0.35)
    grey = rgb8(image).astype(np.float32)
    out = np.where(classes[..., None] > 0, base * shade[..., None], 0.5 * grey)
    return np.clip(out, 0, 255).astype(np.uint8)


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    shape, n = ((160, 160), 16) if args.small else ((256, 256), 40)
    image, truth = synthetic_nuclei(
        shape, n_nuclei=n, radius=(7, 14), touching=True, background_gradient=0.3, seed=7
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = "nuclei"
        if not SHIPPED_MODELS["unet"]["nuclei"].is_file():
            print("the shipped nuclei U-Net is not installed: training a small one first")
            model = small_unet(Path(tmp), args.small)
        semantic = segment_cnn(image, model=model, output="semantic", device="cpu")
        instance = segment_cnn(image, model=model, output="instance", device="cpu")
        panoptic = segment_cnn(image, model=model, output="panoptic", device="cpu")

    divisor = panoptic.label_divisor
    ids = np.unique(panoptic.labels)
    n_obj = int(instance.labels.max())
    ap = match_instances(instance.labels, truth).ap
    print(f"semantic: classes {semantic.class_names}, {100 * semantic.labels.mean():.0f}% nucleus")
    print(f"instance: {n_obj} objects; AP@0.5 against the generated truth {ap:.2f}")
    print(f"panoptic: label_divisor {divisor}; ids {ids[:4].tolist()} ... {ids[-1]}")

    # write the panoptic id of a few objects on them
    objects = [i for i in ids if i > 0][:: max(1, len(ids) // 6)]
    centers = ndi.center_of_mass(np.ones_like(panoptic.labels), panoptic.labels, objects)
    tagged = label_text(
        panoptic_rgb(panoptic.labels, divisor, image),
        [(str(i), c) for i, c in zip(objects, centers, strict=True)],
        size=11,
    )
    panels = [
        ("generated nuclei", rgb8(image)),
        ("semantic: 0 background, 1 nucleus", classes_rgb(semantic.labels)),
        (f"instance: {n_obj} IDs", objects_rgb(instance.labels)),
        (f"panoptic: class x {divisor} + instance", tagged),
    ]
    source = "the shipped nuclei U-Net" if model == "nuclei" else "a small U-Net trained here"
    caption = (
        f"segment_cnn(image, model='nuclei', output='semantic' | 'instance' | 'panoptic'), "
        f"{source}. Semantic: a class per pixel, touching nuclei merge. Instance: one ID (color) "
        f"per nucleus, AP@0.5 = {ap:.2f} against the generated truth. Panoptic: "
        f"id = class_id * {divisor} + instance, so nucleus k of class 1 is {divisor} + k (the "
        f"numbers written on some); background, class 0, is 0; a 'stuff' class c would be "
        f"c * {divisor}. decode(labels, {divisor}) gives classes and instances back."
    )
    save_figure(figure(panels, caption=caption), args.out, "semantic_instance_panoptic", started)


if __name__ == "__main__":
    main()
