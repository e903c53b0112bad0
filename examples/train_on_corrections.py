"""Segment, correct, train, segment better: a model learns from your corrected labels.

A trained model only knows images like the ones it was trained on. The shipped nuclei U-Net saw
bright nuclei on a dark background (fluorescence); here the nuclei are *dark on a bright
background* (as in a brightfield or stained image), and it fails. The remedy in napari-segkit:

1. **segment** with the model you have (``segment_cnn``; the CNN widget);
2. **correct** the labels of a few images (in napari: the Labels layer's paint, erase and fill
   tools). Here the generated images' true labels stand in for your corrections;
3. **train** on the (image, corrected labels) pairs (``napari_segkit.models.training.train``;
   the Train widget): the model is saved as a checkpoint and listed in the CNN widget;
4. **segment** again with the new model, and score both against labels it never saw
   (AP at IoU 0.5: matched / (matched + missed + false)).

Training here is a *new, small* U-Net on the CPU (about half a minute with ``--small``). With a
GPU, ``start_from="nuclei"`` fine-tunes the shipped U-Net instead, which needs fewer corrected
images; on a CPU its 7.8 million parameters take seconds per step.

Run: ``python examples/train_on_corrections.py [--out DIR] [--small]``
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from _figure import arguments, figure, objects_rgb, outlines, rgb8, save

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models.cnn import segment_cnn
from napari_segkit.models.training import train
from napari_segkit.models.weights import SHIPPED_MODELS


def dark_nuclei(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated nuclei, inverted: dark nuclei on a bright background; and their true labels."""
    image, labels = synthetic_nuclei(
        (size, size),
        n_nuclei=18 * size**2 // 192**2,
        radius=(7, 14),
        touching=bool(seed % 2),  # every other image has touching nuclei
        noise=0.05,
        seed=seed,
    )
    return image.max() - image, labels


def mean_ap(model, images, truths, diameter=None) -> tuple[float, list[np.ndarray]]:
    labels = [
        segment_cnn(img, model=model, device="cpu", diameter=diameter).labels for img in images
    ]
    aps = [
        match_instances(lab, t, iou_threshold=0.5).ap for lab, t in zip(labels, truths, strict=True)
    ]
    return float(np.mean(aps)), labels


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    size = 192 if args.small else 256
    n_train, epochs, steps, width = (4, 5, 20, 8) if args.small else (8, 6, 30, 16)
    pairs = [dark_nuclei(seed, size) for seed in range(n_train)]  # images + "corrected" labels
    held_out = [dark_nuclei(seed, size) for seed in (100, 101)]
    images, truths = [p[0] for p in held_out], [p[1] for p in held_out]

    # 1. segment with the model we have (the shipped U-Net, if installed)
    have_shipped = SHIPPED_MODELS["unet"]["nuclei"].is_file()
    if have_shipped:
        ap_before, before = mean_ap("nuclei", images, truths)
    else:
        ap_before, before = float("nan"), [np.zeros_like(t) for t in truths]
        print("the shipped nuclei U-Net is not installed: no 'before' model")
    print(f"before: AP@0.5 = {ap_before:.2f} (shipped U-Net on dark nuclei)")

    # 2. + 3. the corrected labels -> train a small U-Net on them
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(
            pairs,
            epochs=epochs,
            steps_per_epoch=steps,
            batch_size=8,
            patch_size=64 if args.small else 96,
            learning_rate=1e-2,
            augment=False,
            architecture={"depth": 2, "width": width},
            device="cpu",
            checkpoint=Path(tmp) / "my_nuclei.safetensors",
            on_epoch=lambda e: print(
                f"  epoch {e['epoch']}/{e['epochs']}: loss {e['loss']:.3f}, "
                f"validation {e['metric_name']} {e['metric']:.2f}"
            ),
        )
        took = time.perf_counter() - t0
        print(f"trained in {took:.0f} s; best epoch {res.best_epoch} ({res.metric_name})")
        # 4. segment again; the nuclei are about as large as in the corrected images
        diameter = res.metadata.get("object_diameter")
        ap_after, after = mean_ap(str(res.checkpoint), images, truths, diameter)
    print(f"after:  AP@0.5 = {ap_after:.2f} (U-Net trained on {n_train} corrected images)")

    train_img, train_lab = pairs[1]
    panels = [
        ("a corrected image", outlines(rgb8(train_img), train_lab, color=(0, 160, 255))),
        ("new image, not trained on", rgb8(images[1])),
        (f"before: shipped U-Net, AP {ap_before:.2f}", objects_rgb(before[1], images[1])),
        (f"after training, AP {ap_after:.2f}", objects_rgb(after[1], images[1])),
    ]
    caption = (
        "Dark nuclei on a bright background: the shipped nuclei U-Net (trained on bright "
        "fluorescent nuclei) labels the bright background instead: "
        f"AP@0.5 = {ap_before:.2f} on 2 new images. "
        f"train() on {n_train} images with corrected labels (blue outlines; here the generated "
        f"truth), a new {width}-wide U-Net, {epochs} x {steps} steps on the CPU ({took:.0f} s), "
        f"then segment_cnn with the saved checkpoint: AP@0.5 = {ap_after:.2f}."
    )
    save(figure(panels, caption=caption), args.out, "train_on_corrections", started)


if __name__ == "__main__":
    main()
