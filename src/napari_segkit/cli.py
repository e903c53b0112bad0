"""The ``segkit`` command line.

Each subcommand registers itself with a ``add_<name>_parser(subparsers)`` function listed in
:data:`COMMANDS`; the parser's ``func`` does the work and returns the exit code. torch is imported
only by the subcommands that need it.

Examples::

    segkit weights download maskrcnn_resnet50_fpn     # on a machine that is online
    segkit weights where maskrcnn_resnet50_fpn        # where the file goes, and whether it is there
    segkit maskrcnn cells.tif -o cells_labels.tif --model nuclei --table cells.csv
    segkit threshold coins.png -o coins_labels.tif --set method=otsu --set min_size=20
    segkit edges coins.png -o coins_edges.tif --set region_mode=watershed
    segkit kmeans photo.png -o photo_clusters.tif --set k=4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

COCO = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


def _weights(args: argparse.Namespace) -> int:
    from .models import maskrcnn as mr

    status = 0
    for arch in args.architectures:
        if args.action == "where":
            path = mr.cached_weights_path(arch)
            print(f"{arch}: {path} ({'present' if path.is_file() else 'missing'})")
            continue
        try:
            path = mr.download_weights(arch, progress=not args.quiet)
        except mr.WeightsUnavailableError as err:
            print(str(err), file=sys.stderr)
            status = 1
        else:
            print(f"{arch}: {path}")
    return status


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="pretrained weights in the torch hub cache")
    p.add_argument("action", choices=["download", "where"])
    p.add_argument(
        "architectures",
        nargs="+",
        choices=COCO,
        metavar="ARCH",
        help=f"one or more of {', '.join(COCO)}",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")
    p.set_defaults(func=_weights)


def _read_image(path: Path):
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from skimage.io import imread

    return imread(path)


def _maskrcnn(args: argparse.Namespace) -> int:
    import numpy as np

    from .models import maskrcnn as mr

    image = _read_image(args.image)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    try:
        res = mr.predict_instances(
            image,
            args.model,
            score_threshold=args.score_threshold,
            mask_threshold=args.mask_threshold,
            max_detections=args.max_detections,
            classes=classes,
            device=args.device,
            half=not args.no_half,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            batch_size=args.batch_size,
            rgb=True if args.rgb else None,
            channel_axis=args.channel_axis,
            channel=args.channel,
        )
    except (ValueError, mr.WeightsUnavailableError) as err:
        print(f"segkit maskrcnn: {err}", file=sys.stderr)
        return 2
    import tifffile

    tifffile.imwrite(args.output, res.labels, compression="zlib")
    if args.table:
        import pandas as pd

        pd.DataFrame(res.table).to_csv(args.table, index=False)
    print(
        f"{res.n_objects} object(s) -> {args.output}"
        + (
            f"; {len(res.empty_labels)} lost every pixel to higher-scoring ones"
            if len(res.empty_labels)
            else ""
        )
    )
    if int(np.max(res.labels, initial=0)) == 0:
        print("no object found: try a lower --score-threshold or another --model", file=sys.stderr)
    return 0


def add_maskrcnn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("maskrcnn", help="Mask R-CNN instance segmentation of an image file")
    p.add_argument("image", type=Path, help="input image (TIFF, PNG, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output labels (TIFF)")
    p.add_argument(
        "--model",
        default="nuclei",
        help="nuclei (shipped), maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2, or a "
        "checkpoint file (.safetensors/.pt/.pth)",
    )
    p.add_argument("--table", type=Path, help="write the per-object table (CSV)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--mask-threshold", type=float, default=0.5)
    p.add_argument(
        "--max-detections", type=int, default=None, help="per tile (default: follows area)"
    )
    p.add_argument("--classes", default="", help="comma-separated class ids to keep")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--no-half", action="store_true", help="float32 on the GPU")
    p.add_argument("--tile-size", type=int, default=1024)
    p.add_argument("--tile-overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rgb", action="store_true", help="the last axis is RGB colour")
    p.add_argument("--channel-axis", type=int, default=None)
    p.add_argument("--channel", type=int, default=0)
    p.set_defaults(func=_maskrcnn)


#: the classic methods: subcommand -> (module in napari_segkit.algorithms, function, help)
CLASSIC = {
    "threshold": ("threshold", "threshold_segment", "threshold segmentation of an image file"),
    "edges": ("edges", "edge_segment", "edge-detection segmentation of an image file"),
    "kmeans": ("kmeans", "kmeans_segment", "k-means colour clustering of an image file"),
}


def parse_setting(text: str) -> tuple[str, object]:
    """``"min_size=20"`` -> ``("min_size", 20)``: numbers, true/false/none, or text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    if lowered == "none":
        return key.strip(), None
    for cast in (int, float):
        try:
            return key.strip(), cast(raw)
        except ValueError:
            pass
    return key.strip(), raw


def _classic(args: argparse.Namespace) -> int:
    import importlib

    import tifffile

    module, func_name, _ = CLASSIC[args.command]
    func = getattr(importlib.import_module(f"napari_segkit.algorithms.{module}"), func_name)
    kwargs = dict(args.settings)
    if args.rgb:
        kwargs["rgb"] = True
    if args.channel_axis is not None:
        kwargs["channel_axis"] = args.channel_axis
    if args.volume:
        kwargs["spatial_ndim"] = 3
    try:
        labels = func(_read_image(args.image), **kwargs)
    except TypeError as err:  # an unknown --set key
        print(f"segkit {args.command}: {err} (see help({func_name}))", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"segkit {args.command}: {err}", file=sys.stderr)
        return 2
    tifffile.imwrite(args.output, labels, compression="zlib")
    print(f"{int(labels.max(initial=0))} label(s), shape {labels.shape} -> {args.output}")
    return 0


def _add_classic_parser(sub: argparse._SubParsersAction, name: str) -> None:
    module, func_name, help_text = CLASSIC[name]
    p = sub.add_parser(
        name,
        help=help_text,
        description=f"{help_text}. Any keyword of napari_segkit.algorithms.{module}.{func_name} "
        "can be given with --set KEY=VALUE.",
    )
    p.add_argument("image", type=Path, help="input image (TIFF, PNG, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output labels (TIFF)")
    p.add_argument(
        "--set",
        dest="settings",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the method, e.g. method=otsu, min_size=20, k=4",
    )
    p.add_argument("--rgb", action="store_true", help="the last axis is RGB colour")
    p.add_argument("--channel-axis", type=int, default=None)
    p.add_argument("--volume", action="store_true", help="3D: process whole volumes")
    p.set_defaults(func=_classic)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``segkit train``: train or fine-tune a U-Net on image/label files or folders of pairs."""
    suffixes = ("_labels", "_label", "_masks", "_mask", "_seg")
    extensions = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

    def files_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)

    def base(path: Path) -> str:
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        return stem[:-4] if stem.lower().endswith(".ome") else stem

    def is_label(path: Path) -> bool:
        return base(path).lower().endswith(suffixes)

    def key(path: Path) -> str:
        stem = base(path)
        for suffix in suffixes:
            if stem.lower().endswith(suffix):
                return stem[: -len(suffix)]
        return stem

    def find_pairs(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
        for p in [*images, *labels]:
            if not p.exists():
                raise ValueError(f"{p} does not exist")
        if not labels:  # folders holding both: X.tif with X_labels.tif (or _masks, _mask, _seg)
            found = [f for p in images for f in (files_in(p) if p.is_dir() else [p])]
            labels = [f for f in found if is_label(f)]
            images = [f for f in found if not is_label(f)]
            if not labels:
                raise ValueError(
                    "no labels: give --labels, or folders where each image X.tif has its "
                    f"labels as X_labels.tif (or {', '.join(suffixes[1:])})"
                )
        image_files = [f for p in images for f in (files_in(p) if p.is_dir() else [p])]
        label_files = [f for p in labels for f in (files_in(p) if p.is_dir() else [p])]
        if any(p.is_dir() for p in [*images, *labels]):
            by_key = {key(f): f for f in label_files}
            pairs = [(f, by_key.get(key(f))) for f in image_files if not is_label(f)]
            missing = [str(f) for f, lab in pairs if lab is None]
            if missing:
                raise ValueError(f"no labels found for {', '.join(missing[:3])}")
            return pairs
        if len(image_files) != len(label_files):
            raise ValueError(
                f"{len(image_files)} image(s) but {len(label_files)} label file(s); give one "
                f"label file per image, in the same order"
            )
        return list(zip(image_files, label_files, strict=True))

    def run(args: argparse.Namespace) -> int:
        from .models import training

        try:
            found = find_pairs(list(args.images), list(args.labels or []))
            pairs = [(_read_image(img), _read_image(lab)) for img, lab in found]
            architecture = {
                k: v for k, v in (("depth", args.depth), ("width", args.width)) if v is not None
            }

            def on_epoch(e: dict) -> None:
                metric = "-" if e["metric"] is None else f"{e['metric']:.3f}"
                print(
                    f"epoch {e['epoch']}/{e['epochs']}  loss {e['loss']:.4f}  "
                    f"val {e['metric_name']} {metric}  {e['seconds']:.1f} s"
                    + ("  * saved" if e["best"] else ""),
                    flush=True,
                )

            print(f"training on {len(pairs)} image(s): {', '.join(p.name for p, _ in found)}")
            res = training.train(
                pairs,
                model=args.model,
                task=args.task,
                start_from=args.start_from,
                ndim=args.ndim,
                epochs=args.epochs,
                steps_per_epoch=args.steps_per_epoch,
                batch_size=args.batch_size,
                patch_size=args.patch_size,
                learning_rate=args.learning_rate,
                val_fraction=args.val_fraction,
                device=args.device,
                checkpoint=args.output,
                object_diameter=args.object_diameter,
                target_diameter=args.target_diameter,
                annotation=args.annotation,
                names=[p.name for p, _ in found],
                architecture=architecture or None,
                on_epoch=on_epoch,
                seed=args.seed,
            )
        except (ValueError, MemoryError, OSError) as err:
            message = " ".join(str(err).split())
            print(f"segkit train: {message}", file=sys.stderr)
            return 2
        best = "-" if res.best_metric is None else f"{res.best_metric:.3f}"
        start = "-" if res.initial_metric is None else f"{res.initial_metric:.3f}"
        print(
            f"best {res.metric_name} {best} (epoch {res.best_epoch}; before training {start}) "
            f"-> {res.checkpoint}"
        )
        return 0

    p = sub.add_parser(
        "train",
        help="train or fine-tune a U-Net on images and their labels",
        description="Train (or fine-tune with --start-from) a U-Net on image/label files, or on "
        "folders of pairs (X.tif with X_labels.tif, X_masks.tif...). The best model is saved to "
        "OUTPUT after every epoch that improves the validation metric.",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files or folders")
    p.add_argument(
        "--labels", nargs="+", type=Path, help="label files (same order) or folders (same names)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="model (.safetensors)")
    p.add_argument("--model", default="unet", choices=["unet", "maskrcnn"])
    p.add_argument("--start-from", default=None, help="nuclei (shipped) or a checkpoint file")
    p.add_argument("--task", default="instance", choices=["instance", "semantic"])
    p.add_argument("--ndim", type=int, default=2, choices=[2, 3])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=None, help="256 (2D) or 128 (3D)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--annotation", default="complete", choices=["complete", "objects"])
    p.add_argument("--object-diameter", type=float, default=None, help="measured if omitted")
    p.add_argument("--target-diameter", type=float, default=None)
    p.add_argument("--depth", type=int, default=None, help="new model: poolings")
    p.add_argument("--width", type=int, default=None, help="new model: first-stage features")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


#: subcommand registrations, in the order shown by ``segkit --help``
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    *(partial(_add_classic_parser, name=name) for name in CLASSIC),
    add_maskrcnn_parser,
    add_weights_parser,
    add_train_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkit", description="napari-segkit from the command line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``segkit``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
