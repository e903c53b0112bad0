"""Mask R-CNN: instance segmentation, one label (one color) per detected object.

Mask R-CNN first *detects*: it proposes boxes, scores them and keeps the best non-overlapping
ones (each with a class and a score); then it predicts a mask inside every box. Every object
therefore gets its own ID, even where two objects touch: this is *instance* segmentation, where a
semantic segmentation would give both the same class.

Which weights:

- torchvision's Mask R-CNN trained on COCO (people, cars, cats, ... 80 classes) is downloaded on
  first use. This machine may be offline: COCO weights are then NOT available (napari-segkit never
  downloads anything unless asked: ``segkit weights download maskrcnn_resnet50_fpn``). If they are
  already in the torch hub cache, this example also runs them on a photo; otherwise it says so.
- The shipped nuclei Mask R-CNN (``model="nuclei"``, a small ResNet-10 FPN trained by
  ``scripts/train_nuclei_maskrcnn.py`` on generated images only) is part of the package and works
  offline: the example runs it on generated fluorescence nuclei, whose true outlines are known,
  and scores the result (AP at IoU 0.5: matched / (matched + missed + false)).

Run: ``python examples/maskrcnn_instances.py [--out DIR] [--small]``
"""

import time

import numpy as np
from _figure import arguments, figure, label_text, objects_rgb, outlines, rgb8, save

from napari_segkit.datasets import synthetic_nuclei
from napari_segkit.metrics import match_instances
from napari_segkit.models.maskrcnn import predict_instances
from napari_segkit.models.weights import offline_message, weights_available

COCO = "maskrcnn_resnet50_fpn"


def boxes_panel(image, table):
    """The detections: each box with its score, on the image."""
    rgb = rgb8(image)
    h, w = rgb.shape[:2]
    for y0, x0, y1, x1 in zip(
        table["bbox_y0"], table["bbox_x0"], table["bbox_y1"], table["bbox_x1"], strict=True
    ):
        y0, x0 = max(int(y0), 0), max(int(x0), 0)
        y1, x1 = min(int(np.ceil(y1)), h - 1), min(int(np.ceil(x1)), w - 1)
        rgb[y0, x0 : x1 + 1] = rgb[y1, x0 : x1 + 1] = (0, 255, 0)
        rgb[y0 : y1 + 1, x0] = rgb[y0 : y1 + 1, x1] = (0, 255, 0)
    return rgb


def main() -> None:
    args = arguments(__doc__)
    started = time.perf_counter()
    shape, n = ((160, 160), 16) if args.small else ((256, 256), 40)
    image, truth = synthetic_nuclei(shape, n_nuclei=n, touching=True, seed=5)

    res = predict_instances(image, "nuclei", device="cpu")  # the shipped nuclei Mask R-CNN
    score = match_instances(res.labels, truth, iou_threshold=0.5)
    print(
        f"nuclei Mask R-CNN: {res.n_objects} objects for {int(truth.max())} true nuclei; "
        f"AP@0.5 = {score.ap:.2f} ({score.tp} matched, {score.fn} missed, {score.fp} false)"
    )
    scores = res.table["score"]
    unsure = np.argsort(scores)[:3]  # the three least certain detections get their score
    tagged = label_text(
        boxes_panel(image, res.table),
        [
            (f"{scores[i]:.2f}", ((res.table["bbox_y0"][i]), (res.table["bbox_x0"][i] + 8)))
            for i in unsure
        ],
        size=10,
    )
    panels = [
        ("generated nuclei", rgb8(image)),
        ("1. detections: boxes (lowest scores)", tagged),
        (f"2. masks: {res.n_objects} instances", objects_rgb(res.labels, image)),
        (f"true outlines: {int(truth.max())} nuclei", outlines(rgb8(image), truth)),
    ]
    if weights_available(COCO):
        from skimage import data

        photo = data.astronaut()[::2, ::2] if args.small else data.astronaut()
        coco = predict_instances(photo, COCO, device="cpu", score_threshold=0.7)
        names = ", ".join(sorted(set(coco.table["class_name"].tolist())))
        print(f"COCO Mask R-CNN on the astronaut photo: {coco.n_objects} objects ({names})")
        panels += [
            ("photo (astronaut)", rgb8(photo)),
            (f"COCO Mask R-CNN: {coco.n_objects} objects", objects_rgb(coco.labels, photo)),
        ]
        coco_note = f"COCO weights found in the torch hub cache: {names} on the photo."
    else:
        print(offline_message(COCO, "this example does not download"))
        coco_note = (
            "torchvision's COCO Mask R-CNN weights are not in the torch hub cache (offline): "
            "only the shipped nuclei model is shown; `segkit weights download "
            "maskrcnn_resnet50_fpn` on a connected machine adds the COCO model."
        )
    caption = (
        "predict_instances(image, 'nuclei'): the shipped nuclei Mask R-CNN detects boxes with a "
        "score (the three lowest written) and predicts a mask in each: one ID and color per "
        "nucleus, touching ones apart. Against the generated truth: "
        f"AP@0.5 = {score.ap:.2f} ({score.tp} matched, {score.fn} missed, {score.fp} false). "
        + coco_note
    )
    save(figure(panels, caption=caption, columns=4), args.out, "maskrcnn_instances", started)


if __name__ == "__main__":
    main()
