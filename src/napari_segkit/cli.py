"""The ``segkit`` command line.

Each subcommand registers itself with a ``add_<name>_parser(subparsers)`` function listed in
:data:`COMMANDS`; the parser's ``func`` does the work and returns the exit code (0 done, 2 bad input
or a file problem, with one line on stderr naming it). torch is imported only by the subcommands
that need it. Outputs are never overwritten unless ``--overwrite`` is given, and are written through
a temporary file, so an interrupted run leaves no half-written output.

Examples::

    segkit weights download maskrcnn_resnet50_fpn     # on a machine that is online
    segkit weights where maskrcnn_resnet50_fpn        # where the file goes, and whether it is there
    segkit maskrcnn cells.tif -o cells_labels.tif --model nuclei --table cells.csv
    segkit threshold coins.png -o coins_labels.tif --method otsu --min-size 20
    segkit edges coins.png -o coins_edges.tif --region-mode watershed
    segkit kmeans photo.png -o photo_clusters.tif --rgb --k 4
    segkit train images/ -o my_cells.safetensors --start-from nuclei   # X.tif + X_labels.tif
    segkit --version

Every method's options are generated from its one parameter declaration
(:mod:`napari_segkit.params`), so their defaults are the widget's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from . import __version__, io, params
from .batch import add_batch_parser
from .params import MethodSpec, Param

COCO = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


def _weights(args: argparse.Namespace) -> int:
    from .models import weights as mw

    status = 0
    for arch in args.architectures:
        if args.action == "where":
            path = mw.cached_weights_path(arch)
            print(f"{arch}: {path} ({'present' if path.is_file() else 'missing'})")
            continue
        try:
            path = mw.download_weights(arch, progress=not args.quiet)
        except mw.WeightsUnavailableError as err:
            print(str(err), file=sys.stderr)
            status = 1
        else:
            print(f"{arch}: {path}")
    return status


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    from .models.weights import TORCHVISION_WEIGHTS  # no torch import

    names = tuple(TORCHVISION_WEIGHTS)
    p = sub.add_parser("weights", help="pretrained weights in the torch hub cache")
    p.add_argument("action", choices=["download", "where"])
    p.add_argument(
        "architectures",
        nargs="+",
        choices=names,
        metavar="ARCH",
        help=f"one or more of {', '.join(names)}",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no download progress bar")
    p.set_defaults(func=_weights)


def _die(command: str, err: BaseException | str) -> int:
    """One line on stderr naming the command and the problem; exit code 2."""
    print(f"segkit {command}: {err}", file=sys.stderr)
    return 2


# ---- the methods' subcommands, generated from their one parameter declaration ------------------

#: method subcommands, in the order of ``segkit --help``
METHOD_COMMANDS = ("threshold", "edges", "kmeans", "maskrcnn", "cnn")
#: where the stack option comes from: auto decides from the file's axes (T: plane by plane)
STACK_CHOICES = ("auto", "planes", "volume")
#: parsed method parameters live under this prefix (``--output`` is the labels file, not a parameter)
PREFIX = "param_"


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_type(p: Param) -> Callable[[str], object]:
    """argparse ``type=`` for one declared parameter: text -> checked value."""

    def convert(text: str) -> object:
        raw: object = text
        if p.optional and text.strip().lower() in ("auto", "none", p.none_label.lower()):
            raw = None
        elif p.type is int:
            try:
                raw = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        elif p.type is float:
            try:
                raw = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return p.check(raw)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = p.type.__name__  # argparse names the type in its messages
    return convert


def add_method_options(parser: argparse.ArgumentParser, spec: MethodSpec) -> None:
    """One option per declared parameter of ``spec`` (defaults: the declaration's)."""
    group = parser.add_argument_group(f"{spec.title} parameters (defaults as in the widget)")
    for p in spec.params:
        if p.group != "method":
            continue
        default = p.none_label if p.default is None else p.default
        help_text = f"{p.help} (default: {default})"
        flag = p.cli or _option(p.name)
        if p.type is bool:
            group.add_argument(
                flag,
                dest=PREFIX + p.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        group.add_argument(
            flag,
            dest=PREFIX + p.name,
            type=_parser_type(p),
            choices=list(p.values) if p.choices else None,
            default=argparse.SUPPRESS,
            metavar=None if p.choices else p.name.upper(),
            help=help_text,
        )


def method_parameters(spec: MethodSpec, args: argparse.Namespace) -> dict:
    """The method's keyword arguments from parsed options: the declared defaults, then ``--set``,
    then the options given. Raises ValueError naming a bad or unknown parameter."""
    given = {
        p.name: getattr(args, PREFIX + p.name)
        for p in spec.params
        if hasattr(args, PREFIX + p.name)
    }
    settings = dict(getattr(args, "settings", []) or [])
    values = spec.validate({**settings, **given})
    return spec.split(spec.applicable(values))[0]


def resolve_stack(stack: str, loaded: io.LoadedImage, spec: MethodSpec, rgb: bool) -> int:
    """``--stack`` -> 2 (plane by plane) or 3 (whole volumes), with ``auto`` read from the file."""
    if stack == "planes" or not spec.supports_volume:
        return 2
    if stack == "volume":
        return 3
    from .algorithms.image import stack_mode

    return stack_mode(loaded.data.shape, axis_labels=loaded.axis_labels, rgb=rgb)[0]


def _run_method(args: argparse.Namespace) -> int:
    spec = params.get(args.command)
    try:
        kwargs = method_parameters(spec, args)
        loaded = io.read_image(args.image)
        if args.output.exists() and not args.overwrite:
            raise io.OutputExistsError(
                f"{args.output}: exists; choose another name or pass --overwrite"
            )
        if args.table is not None and args.table.exists() and not args.overwrite:
            raise io.OutputExistsError(
                f"{args.table}: exists; choose another name or pass --overwrite"
            )
        rgb = True if args.rgb else None
        inputs = {"rgb": rgb, "channel_axis": args.channel_axis}
        if not spec.uses_all_channels:
            inputs["channel"] = args.channel
        if spec.supports_volume:
            inputs["spatial_ndim"] = resolve_stack(args.stack, loaded, spec, bool(args.rgb))
        if getattr(args, "spacing", None) is not None:
            if inputs.get("spatial_ndim") != 3:
                raise ValueError(
                    "--spacing is for a z-stack segmented as a volume (--stack volume)"
                )
            inputs["spacing"] = args.spacing
        result = spec.resolve()(loaded.data, **inputs, **kwargs)
        labels, table = _labels_and_table(result)
        io.write_labels(args.output, labels, overwrite=args.overwrite)
        if args.table is not None:
            import pandas as pd

            if table is None:
                from .algorithms.tables import object_table

                table = object_table(labels)
            with io.atomic_path(args.table, overwrite=args.overwrite) as tmp:
                pd.DataFrame(table).to_csv(tmp, index=False)
    except (ValueError, OSError) as err:  # bad input, unreadable file, existing output, ...
        return _die(args.command, err)
    except RuntimeError as err:  # e.g. weights that cannot be downloaded
        return _die(args.command, err)
    n = int(np.max(labels, initial=0))
    print(f"{n} label(s), shape {labels.shape} -> {args.output}")
    if n == 0:
        print(
            f"no object found: check the parameters (segkit {args.command} --help)", file=sys.stderr
        )
    return 0


def _labels_and_table(result: object) -> tuple[np.ndarray, object]:
    """Methods return labels, or a result with ``labels`` and ``table``."""
    if isinstance(result, np.ndarray):
        return result, None
    if isinstance(result, tuple):
        return result[0], None
    return result.labels, getattr(result, "table", None)


def add_method_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """``segkit <method> IMAGE -o LABELS [options]``, generated from the method's declaration."""
    spec = params.get(name)
    p = sub.add_parser(
        name,
        help=spec.description or spec.title,
        description=f"{spec.title}: {spec.description} Every option defaults to the widget's "
        "default.",
    )
    p.add_argument("image", type=Path, help="input image (TIFF, PNG, JPEG, .npy, .zarr)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output labels (TIFF or .npy)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--table", type=Path, help="also write a per-object table (CSV)")
    p.add_argument("--rgb", action="store_true", help="the last axis is RGB color")
    p.add_argument("--channel-axis", type=int, default=None, help="axis of the channels")
    if not spec.uses_all_channels:
        p.add_argument("--channel", type=int, default=0, help="the channel to segment")
    if spec.supports_volume:
        p.add_argument(
            "--stack",
            choices=STACK_CHOICES,
            default="auto",
            help="3D images: 'planes' (each 2D plane on its own), 'volume' (3D as a whole), "
            "'auto' (default, as the widget: a time axis T in the file -> planes, else volume)",
        )
        p.add_argument(
            "--volume", dest="stack", action="store_const", const="volume", help="= --stack volume"
        )
    if spec.uses_spacing:
        p.add_argument(
            "--spacing",
            type=parse_spacing,
            default=None,
            metavar="Z,Y,X",
            help="voxel size of a z-stack, e.g. 2,0.5,0.5 (um; only the ratios count), as the "
            "layer's scale in napari; sizes in pixels are x pixels (default: cubic voxels)",
        )
    add_method_options(p, spec)
    p.add_argument(
        "--set",
        dest="settings",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any parameter as KEY=VALUE (same as its option)",
    )
    p.set_defaults(func=_run_method)


def parse_spacing(text: str) -> tuple[float, float, float]:
    """``"2,0.5,0.5"`` -> ``(2.0, 0.5, 0.5)``: three positive numbers."""
    from .algorithms.image import check_spacing

    try:
        return check_spacing(text.split(","), 3)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three positive numbers Z,Y,X; got {text!r}"
        ) from None


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


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``segkit train``: train or fine-tune a U-Net on image/label files or folders of pairs."""

    def run(args: argparse.Namespace) -> int:
        from .models import training

        try:
            found = io.find_training_pairs(list(args.images), list(args.labels or []))
            pairs = [(io.read_image(img).data, io.read_image(lab).data) for img, lab in found]
            if args.output.exists() and not args.overwrite:
                raise io.OutputExistsError(
                    f"{args.output}: exists; choose another name or pass --overwrite"
                )
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
                diameter=args.diameter,
                object_diameter=args.object_diameter,
                annotation=args.annotation,
                names=[p.name for p, _ in found],
                architecture=architecture or None,
                on_epoch=on_epoch,
                seed=args.seed,
            )
        except (ValueError, MemoryError, OSError) as err:
            return _die("train", " ".join(str(err).split()))
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--model", default="unet", choices=["unet", "maskrcnn"])
    p.add_argument(
        "--start-from", default=None, help="nuclei (shipped), a user model name or a checkpoint"
    )
    p.add_argument("--task", default="instance", choices=["instance", "semantic"])
    p.add_argument("--ndim", type=int, default=2, choices=[2, 3])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=None, help="256 (2D) or 128 (3D)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--annotation", default="complete", choices=["complete", "objects"])
    p.add_argument(
        "--diameter",
        type=float,
        default=None,
        help="object diameter in the images, pixels (measured from the labels if omitted)",
    )
    p.add_argument(
        "--object-diameter",
        type=float,
        default=None,
        help="the diameter the model works at (default: the --start-from model's, else --diameter)",
    )
    p.add_argument("--depth", type=int, default=None, help="new model: poolings")
    p.add_argument("--width", type=int, default=None, help="new model: first-stage features")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


#: subcommand registrations, in the order shown by ``segkit --help``
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    *(partial(add_method_parser, name=name) for name in METHOD_COMMANDS),
    add_weights_parser,
    add_train_parser,
    add_batch_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segkit", description="napari-segkit from the command line"
    )
    parser.add_argument(
        "--version", action="version", version=f"segkit (napari-segkit) {__version__}"
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
