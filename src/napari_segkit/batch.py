"""Batch segmentation: one recipe, many files, a folder of results (no napari, no Qt).

For every input image (TIFF, PNG, JPEG, ``.npy``, zarr; 2D, 3D, stacks) :func:`run_batch` writes
``<stem>_labels.tif`` (``<stem>_labels.zarr`` for zarr inputs and images above
:data:`BIG_PIXELS`, segmented block by block with dask when the method allows it: threshold,
edges and k-means for every zarr input, Mask R-CNN and the CNN for images above
:data:`BIG_PIXELS`, on one worker per GPU with ``--gpus N``) and ``<stem>_objects.csv`` (one row
per object; Mask R-CNN's own table with class and score, except block by block), then a
``batch_summary.csv`` with one row per file.

- **One bad file does not stop the batch**: it is reported in one line and in the summary, and
  the others go on (the command line exits with 1 at the end).
- **An interrupted batch resumes**: every output is written to a temporary name and renamed into
  place when complete, the table before the labels, so a ``<stem>_labels`` file or folder means
  that file is done: it is skipped (never redone, never touched); half-written temporary files of
  an interrupted run are removed.
- ``evaluate=GT_DIR`` scores every output against ``GT_DIR/<stem>.*`` (or ``<stem>_labels``,
  ``_mask``, ``_masks``, ``_gt``...) with :func:`napari_segkit.metrics.match_instances` at IoU
  0.5 and writes ``batch_scores.csv``.

Examples
--------
>>> import tempfile, pathlib, numpy as np, tifffile
>>> from napari_segkit.recipes import save_recipe
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> img = np.zeros((32, 32), np.uint8); img[4:12, 4:12] = 200; img[20:28, 18:30] = 180
>>> tifffile.imwrite(tmp / "a.tif", img)
>>> recipe = save_recipe(tmp / "otsu.yaml", "threshold", {"min_size": 4})
>>> report = run_batch(recipe, [tmp / "a.tif"], tmp / "out", show_progress=False)
>>> [(r.status, r.n_objects) for r in report.results]
[('done', 2)]
>>> sorted(p.name for p in (tmp / "out").iterdir())
['a_labels.tif', 'a_objects.csv', 'batch_summary.csv']
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .algorithms.image import Cancelled
from .recipes import Recipe, load_recipe

__all__ = [
    "BIG_PIXELS",
    "FileResult",
    "BatchReport",
    "find_inputs",
    "find_ground_truth",
    "run_batch",
    "add_batch_parser",
]

#: images with more pixels than this are written as zarr and, where the method allows it,
#: segmented block by block (2**27: a 11585 x 11585 image, 512 MB as int32 labels)
BIG_PIXELS = 2**27
#: the names of the outputs, after the input's stem
LABELS_SUFFIX, TABLE_SUFFIX = "_labels", "_objects.csv"
SUMMARY, SCORES = "batch_summary.csv", "batch_scores.csv"
#: ground-truth file names tried after the stem (``GT_DIR/<stem><suffix>.<ext>``)
GT_SUFFIXES = ("", "_labels", "_label", "_mask", "_masks", "_gt", "_truth", "_ground_truth")
#: a temporary output of this module: ``.<name>.<random>.part...``
_PART = ".part"


@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    status: str  # "done", "skipped" (done before), "failed"
    labels: Path | None = None
    table: Path | None = None
    n_objects: int | None = None
    shape: tuple | None = None
    seconds: float = 0.0
    error: str = ""
    #: the scores against the ground truth (with ``evaluate``), or ``{"error": ...}``
    scores: dict | None = None

    def row(self) -> dict:
        return {
            "input": str(self.input),
            "status": self.status,
            "labels": "" if self.labels is None else str(self.labels),
            "objects": "" if self.table is None else str(self.table),
            "n_objects": "" if self.n_objects is None else self.n_objects,
            "shape": "" if self.shape is None else "x".join(map(str, self.shape)),
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class BatchReport:
    """The results of :func:`run_batch`, in input order, and the files it wrote."""

    results: list[FileResult] = field(default_factory=list)
    summary: Path | None = None
    scores: Path | None = None

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """No file failed and, with evaluation, every file was scored."""
        unscored = [r for r in self.results if r.scores is not None and "error" in r.scores]
        return not self.failed and not unscored


# ---- inputs ------------------------------------------------------------------------------------
def _is_image_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if path.is_dir():
        return suffix == ".zarr"
    return path.is_file() and suffix in io.IMAGE_SUFFIXES


def _is_output_name(name: str) -> bool:
    stem = name.split(".", 1)[0]
    return stem.endswith(LABELS_SUFFIX) or name.endswith(TABLE_SUFFIX) or name in (SUMMARY, SCORES)


def find_inputs(
    inputs: Iterable[str | os.PathLike], *, outdir: str | os.PathLike | None = None
) -> list[Path]:
    """The image files to segment: files as given, folders' images (sorted, not recursive;
    ``.zarr`` folders are images), without this batch's own outputs when a folder is ``outdir``.

    Raises
    ------
    ValueError
        A path that does not exist.
    """
    out = []
    outdir = None if outdir is None else Path(outdir).resolve()
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        if path.is_dir() and path.suffix.lower() != ".zarr":
            own = outdir is not None and path.resolve() == outdir
            for entry in sorted(path.iterdir()):
                if _is_image_entry(entry) and not (own and _is_output_name(entry.name)):
                    out.append(entry)
        else:
            out.append(path)
    return out


def find_ground_truth(gt_dir: str | os.PathLike, stem: str) -> Path:
    """The ground-truth labels of ``stem`` in ``gt_dir`` (``<stem>.*``, ``<stem>_labels.*``,
    ``<stem>_mask.*``, ...).

    Raises
    ------
    FileNotFoundError
        None, or more than one candidate (named).
    """
    gt_dir = Path(gt_dir)
    found = []
    for suffix in GT_SUFFIXES:
        for ext in io.IMAGE_SUFFIXES:
            for candidate in (
                gt_dir / f"{stem}{suffix}{ext}",
                gt_dir / f"{stem}{suffix}{ext.upper()}",
            ):
                if candidate.exists() and candidate not in found:
                    found.append(candidate)
        if found:
            break
    if not found:
        raise FileNotFoundError(
            f"no ground truth {stem}.* (or {stem}_labels.*, _mask...) in {gt_dir}"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise FileNotFoundError(f"more than one ground truth for {stem} in {gt_dir}: {names}")
    return found[0]


# ---- outputs -----------------------------------------------------------------------------------
def _outputs(outdir: Path, stem: str) -> dict[str, Path]:
    return {
        "tif": outdir / f"{stem}{LABELS_SUFFIX}.tif",
        "zarr": outdir / f"{stem}{LABELS_SUFFIX}.zarr",
        "table": outdir / f"{stem}{TABLE_SUFFIX}",
    }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _remove_partials(outdir: Path, stems: Iterable[str]) -> None:
    """Delete the temporary outputs an interrupted run of this module left for ``stems``."""
    names = set()
    for stem in stems:
        names |= {p.name for p in _outputs(outdir, stem).values()}
    for entry in outdir.iterdir():
        if not entry.name.startswith(".") or _PART not in entry.name:
            continue
        base = entry.name[1:].split(".", 1)[0]
        if any(n.split(".", 1)[0] == base for n in names):
            _remove(entry)


def _write_table(path: Path, table: Any, overwrite: bool) -> None:
    import pandas as pd

    with io.atomic_path(path, overwrite=overwrite) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Write (replace) one of the batch's own CSV files, atomically."""
    if not rows:
        return
    with io.atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _read_labels(path: Path) -> Any:
    if path.suffix == ".zarr":
        import dask.array as da

        return da.from_zarr(str(path))
    import tifffile

    return tifffile.imread(path)


def _n_objects(table: Any) -> int:
    return int(len(table["label"]))


# ---- one file ----------------------------------------------------------------------------------
def _segment_file(
    recipe: Recipe,
    path: Path,
    outs: dict[str, Path],
    *,
    overwrite: bool,
    scheduler: Any,
    workers: int | None,
    chunk: int | None,
    big_pixels: int,
    file_progress: Callable | None,
) -> FileResult:
    from .algorithms.chunked import MODEL_METHODS, blockwise_problem, chunked_object_table
    from .algorithms.tables import object_table

    t0 = time.perf_counter()
    loaded = io.read_image(path)
    shape = tuple(int(n) for n in loaded.data.shape)
    is_zarr = path.suffix.lower() == ".zarr"
    big = int(np.prod(shape, dtype=np.int64)) > big_pixels
    as_zarr = is_zarr or big
    labels_path = outs["zarr"] if as_zarr else outs["tif"]
    for stale in (outs["zarr"], outs["tif"]):  # with overwrite, the other form goes too
        if overwrite and stale.exists():
            _remove(stale)
    # a model method goes block by block only where the image is big: in memory, its table
    # keeps the per-object scores and classes
    blocks = big if recipe.method in MODEL_METHODS else as_zarr
    chunked = blocks and blockwise_problem(recipe.method, recipe.params) is None
    if chunked:
        part = labels_path.with_name(f".{labels_path.name}.{uuid.uuid4().hex[:8]}{_PART}")
        try:
            labels = recipe.run_chunked(
                loaded.data,
                out=part,
                axis_labels=loaded.axis_labels,
                chunk=chunk,
                scheduler=scheduler,
                workers=workers,
                progress=file_progress,
            )
            table = chunked_object_table(labels, scheduler=scheduler)
            _write_table(outs["table"], table, overwrite=True)  # a stale one is ours, unfinished
            os.replace(part, labels_path)
        finally:
            if part.exists():
                _remove(part)
        n = _n_objects(table)
        out_shape = tuple(labels.shape)
    else:
        result = recipe.run(loaded.data, axis_labels=loaded.axis_labels, progress=file_progress)
        labels = np.asarray(result.labels)
        table = result.table if result.table is not None else object_table(labels)
        _write_table(outs["table"], table, overwrite=True)
        if as_zarr:
            import dask.array as da

            part = labels_path.with_name(f".{labels_path.name}.{uuid.uuid4().hex[:8]}{_PART}")
            try:
                chunks = tuple(
                    min(n, 2048 if i >= labels.ndim - 2 else 1) for i, n in enumerate(labels.shape)
                )
                da.from_array(labels, chunks=chunks).to_zarr(str(part))
                os.replace(part, labels_path)
            finally:
                if part.exists():
                    _remove(part)
        else:
            io.write_labels(labels_path, labels, overwrite=overwrite)
        n = _n_objects(table)
        out_shape = labels.shape
    return FileResult(
        path,
        "done",
        labels=labels_path,
        table=outs["table"],
        n_objects=n,
        shape=tuple(out_shape),
        seconds=time.perf_counter() - t0,
    )


def _finished(outs: dict[str, Path]) -> Path | None:
    for key in ("tif", "zarr"):
        if outs[key].exists():
            return outs[key]
    return None


def _resume(path: Path, labels_path: Path, outs: dict[str, Path]) -> FileResult:
    """A file done by an earlier run: its outputs as they are (a missing table is remade)."""
    table_path = outs["table"]
    n = None
    if table_path.exists():
        try:
            import pandas as pd

            n = len(pd.read_csv(table_path))
        except Exception:  # an unreadable table: left as it is, counted as unknown
            n = None
    else:
        from .algorithms.chunked import chunked_object_table

        table = chunked_object_table(_read_labels(labels_path))
        _write_table(table_path, table, overwrite=False)
        n = _n_objects(table)
    try:
        shape = tuple(int(k) for k in _labels_shape(labels_path))
    except Exception:  # unreadable: the summary leaves the shape blank
        shape = None
    return FileResult(
        path, "skipped", labels=labels_path, table=table_path, n_objects=n, shape=shape
    )


def _labels_shape(path: Path) -> tuple:
    """The shape of a labels output, without reading its pixels."""
    if path.suffix == ".zarr":
        return _read_labels(path).shape
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.series[0].shape


def _score(result: FileResult, gt_dir: Path, stem: str) -> dict:
    from .metrics import match_instances

    try:
        truth_path = find_ground_truth(gt_dir, stem)
        truth = np.asarray(io.read_image(truth_path).data)
        pred = np.asarray(_read_labels(result.labels))
        if truth.shape != pred.shape:
            raise ValueError(
                f"ground truth {truth_path.name} has shape {truth.shape}, the labels {pred.shape}"
            )
        if truth.dtype.kind not in "uib":
            raise ValueError(
                f"ground truth {truth_path.name} is not integer labels ({truth.dtype})"
            )
        m = match_instances(pred, truth, iou_threshold=0.5)
    except (OSError, ValueError) as err:
        return {"error": str(err)}
    scores = m.as_dict()
    scores["ground_truth"] = str(truth_path)
    return scores


# ---- the batch ---------------------------------------------------------------------------------
def run_batch(
    recipe: Recipe | str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    evaluate: str | os.PathLike | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    chunk: int | None = None,
    big_pixels: int = BIG_PIXELS,
    progress: Callable[[int, int], None] | None = None,
    file_progress: Callable[[int, int], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    show_progress: bool = True,
    report_errors: bool = True,
) -> BatchReport:
    """Segment every input with ``recipe``; see the module docstring.

    Parameters
    ----------
    recipe : Recipe or path
        A recipe (:mod:`napari_segkit.recipes`) or its file.
    inputs : sequence of path
        Image files and folders of images.
    outdir : path
        Where the outputs go (made if missing).
    evaluate : path, optional
        A folder of ground-truth labels: score every output (``batch_scores.csv``).
    scheduler : None, address or distributed.Client
        Where block-by-block (large, zarr) images run; see
        :func:`~napari_segkit.algorithms.chunked.segment_chunked`.
    workers : int, optional
        Threads of the local dask scheduler for large images.
    overwrite : bool
        Redo and replace finished outputs (otherwise they are skipped: a resumed batch).
    chunk : int, optional
        Block side for large images; default 2048, or for Mask R-CNN and the CNN a block that
        holds a whole number of the model's tiles at the object size.
    big_pixels : int
        Images with more pixels are written as zarr (and run block by block where possible).
    progress : callable, optional
        ``progress(done, total)`` after each file; raising from it stops the batch (what is
        finished stays finished).
    file_progress : callable, optional
        ``progress(done, total)`` inside each file (the method's own).
    on_file : callable, optional
        ``on_file(FileResult)`` after each file.
    show_progress : bool
        A tqdm progress bar on stderr.
    report_errors : bool
        Print one line on stderr per failed file.

    Returns
    -------
    BatchReport

    Raises
    ------
    ValueError
        A bad recipe or an input that does not exist (before anything is written).
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    outdir = Path(outdir)
    files = find_inputs(inputs, outdir=outdir)
    if not files:
        raise ValueError("no input image found (TIFF, PNG, JPEG, .npy or .zarr)")
    gt_dir = None if evaluate is None else Path(evaluate)
    if gt_dir is not None and not gt_dir.is_dir():
        raise ValueError(f"evaluate: {gt_dir} is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    stems = [_stem(p) for p in files]
    _remove_partials(outdir, stems)
    report = BatchReport()
    seen: dict[str, Path] = {}
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        # no bar when stderr is not a terminal (a log file)
        bar = tqdm(total=len(files), desc="batch", unit="file", file=sys.stderr, disable=None)
    try:
        for i, (path, stem) in enumerate(zip(files, stems, strict=True)):
            if bar is not None:
                bar.set_postfix_str(path.name, refresh=False)
            outs = _outputs(outdir, stem)
            if stem in seen:
                res = FileResult(
                    path,
                    "failed",
                    error=f"same name as {seen[stem].name}: its outputs would clash; rename one",
                )
            else:
                seen[stem] = path
                done = _finished(outs)
                try:
                    if done is not None and not overwrite:
                        res = _resume(path, done, outs)
                    else:
                        res = _segment_file(
                            recipe,
                            path,
                            outs,
                            overwrite=overwrite,
                            scheduler=scheduler,
                            workers=workers,
                            chunk=chunk,
                            big_pixels=big_pixels,
                            file_progress=file_progress,
                        )
                except Cancelled:
                    raise
                except Exception as err:  # one bad file: reported, the batch goes on
                    first = str(err).splitlines()[0] if str(err) else ""
                    res = FileResult(path, "failed", error=f"{type(err).__name__}: {first}")
            if gt_dir is not None and res.status != "failed":
                res.scores = _score(res, gt_dir, stem)
            report.results.append(res)
            if report_errors and res.status == "failed":
                _echo(f"segkit batch: {path}: {res.error}", bar)
            if report_errors and res.scores is not None and "error" in res.scores:
                _echo(f"segkit batch: {path}: not scored: {res.scores['error']}", bar)
            _write_reports(report, outdir, gt_dir is not None)
            if on_file is not None:
                on_file(res)
            if bar is not None:
                bar.update(1)
            if progress is not None:
                progress(i + 1, len(files))
    finally:
        if bar is not None:
            bar.close()
    return report


def _stem(path: Path) -> str:
    name = path.name.rstrip("/")
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _echo(line: str, bar: Any) -> None:
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _write_reports(report: BatchReport, outdir: Path, scored: bool) -> None:
    report.summary = outdir / SUMMARY
    _write_csv(report.summary, [r.row() for r in report.results])
    if not scored:
        return
    columns = (
        "tp",
        "fp",
        "fn",
        "n_pred",
        "n_true",
        "precision",
        "recall",
        "f1",
        "ap",
        "mean_matched_iou",
    )
    rows = []
    for r in report.results:
        if r.scores is None:
            continue
        row = {"input": str(r.input), "iou_threshold": 0.5}
        row.update({c: r.scores.get(c, "") for c in columns})
        row["ground_truth"] = r.scores.get("ground_truth", "")
        row["error"] = r.scores.get("error", "")
        rows.append(row)
    good = [r for r in rows if not r["error"]]
    if good:
        mean = {"input": "(mean)", "iou_threshold": 0.5}
        for c in columns:
            vals = [float(r[c]) for r in good if r[c] != ""]
            mean[c] = round(float(np.nanmean(vals)), 6) if vals else ""
        mean.update({"ground_truth": "", "error": ""})
        rows.append(mean)
    report.scores = outdir / SCORES
    _write_csv(report.scores, rows)


# ---- the command line --------------------------------------------------------------------------
def _local_cluster(workers: int) -> Any:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--workers needs dask.distributed: pip install 'napari-segkit[dask]'"
        ) from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
    return Client(cluster)


def _gpu_cluster(gpus: int) -> Any:
    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1; got {gpus}")
    try:
        from .models.blockwise import gpu_cluster
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ValueError(f"--gpus: {err}") from None
    return gpu_cluster(gpus)


def _cli(args: Any) -> int:
    client = None
    try:
        recipe = load_recipe(args.recipe)
        scheduler = args.scheduler
        chosen = [
            o
            for o, v in (
                ("--scheduler", scheduler),
                ("--workers", args.workers),
                ("--gpus", args.gpus),
            )
            if v is not None
        ]
        if len(chosen) > 1:
            raise ValueError(f"choose one of {', '.join(chosen)}")
        if args.gpus is not None:
            client = _gpu_cluster(args.gpus)
            scheduler = client
        if args.workers is not None:
            if args.workers < 1:
                raise ValueError(f"--workers must be >= 1; got {args.workers}")
            if scheduler is None:
                client = _local_cluster(args.workers)
                scheduler = client
        report = run_batch(
            recipe,
            args.inputs,
            args.output,
            evaluate=args.evaluate,
            scheduler=scheduler,
            overwrite=args.overwrite,
            chunk=args.chunk,
        )
    except (ValueError, OSError) as err:
        print(f"segkit batch: {err}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    counts = {s: sum(r.status == s for r in report.results) for s in ("done", "skipped", "failed")}
    print(
        f"{counts['done']} done, {counts['skipped']} already done (skipped), "
        f"{counts['failed']} failed -> {report.summary}"
    )
    if report.scores is not None:
        print(f"scores -> {report.scores}")
    return 0 if report.ok else 1


def add_batch_parser(sub: Any) -> None:
    """``segkit batch RECIPE INPUTS... -o OUTDIR [--evaluate GT_DIR] [--scheduler ADDRESS]
    [--workers N | --gpus N] [--chunk SIDE] [--overwrite]``."""
    p = sub.add_parser(
        "batch",
        help="segment many files with a recipe (resumes an interrupted batch)",
        description="Segment every image with a recipe file (saved from a widget or written "
        "by hand): <stem>_labels.tif (.zarr for zarr inputs and very large images, segmented "
        "block by block) and <stem>_objects.csv per file, and batch_summary.csv. Finished "
        "files are skipped, so rerunning an interrupted batch resumes it. A bad file is "
        "reported and the batch goes on; the exit code is 1 if any failed.",
    )
    p.add_argument("recipe", type=Path, help="the recipe file (.yaml)")
    p.add_argument("inputs", type=Path, nargs="+", help="image files and/or folders of images")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument(
        "--evaluate",
        type=Path,
        metavar="GT_DIR",
        help="score every output against GT_DIR/<stem>.* ground truth (batch_scores.csv)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a dask.distributed scheduler (e.g. tcp://10.0.0.5:8786) for large images",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="start a local dask cluster of N worker processes for large images",
    )
    p.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="start a local dask cluster of one worker per GPU (N GPUs) for large images "
        "segmented with Mask R-CNN or a CNN",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="block side for large images (default 2048; for a model, chosen from its tiles "
        "and the object size)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo and replace finished outputs")
    p.set_defaults(func=_cli)
