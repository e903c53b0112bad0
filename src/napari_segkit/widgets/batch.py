"""Batch dock widget: run a recipe over a folder of images, with progress and a status table.

Thin glue on :func:`napari_segkit.batch.run_batch` (the same as ``segkit batch``): a recipe file
(saved from any method widget with "Save recipe..."), an input folder, an output folder, an
optional ground-truth folder (scores), and the address of a dask scheduler. The batch runs in a
worker thread; every finished file adds a row to the table; Cancel stops after the current step
(finished files stay finished, and running the same batch again resumes it).

The "dask scheduler" field also applies to large dask-backed images segmented from the method
widgets (:mod:`napari_segkit.widgets._chunked`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Table,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ..algorithms.image import Cancelled
from . import _chunked

COLUMNS = ("file", "status", "objects", "seconds", "f1", "error")


class _Emitter(QObject):
    """Carries the worker's news to the GUI thread (queued signals)."""

    progressed = Signal(int, int)
    file_done = Signal(object)


def _table(rows: list) -> dict:
    """A magicgui Table value (with an index, so rows are read as rows)."""
    return {"data": rows, "index": list(range(len(rows))), "columns": list(COLUMNS)}


def _path(widget: FileEdit) -> Path | None:
    text = str(widget.value or "").strip()
    return None if text in ("", ".") else Path(text)


class BatchWidget(Container):
    """Segment every image of a folder with a recipe; results and a summary in a folder."""

    def __init__(self, viewer: Any = None):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self._cancel = threading.Event()
        self.report = None  # the last run's BatchReport
        self.recipe = FileEdit(label="recipe", mode="r", filter="*.yaml *.yml")
        self.recipe.tooltip = "A recipe file: 'Save recipe...' in any method widget writes one"
        self.inputs = FileEdit(label="input folder", mode="d")
        self.output = FileEdit(label="output folder", mode="d")
        self.ground_truth = FileEdit(label="ground truth (optional)", mode="d")
        self.ground_truth.tooltip = (
            "A folder of ground-truth labels named <stem>.*, <stem>_labels.* or <stem>_mask.*: "
            "every output is scored (batch_scores.csv)"
        )
        self.scheduler = LineEdit(label="dask scheduler", value="")
        self.scheduler.tooltip = (
            "Address of a dask.distributed scheduler (e.g. tcp://10.0.0.5:8786) for large "
            "images; empty: this computer's threads"
        )
        self.overwrite = CheckBox(text="redo finished files", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="files", min=0, max=1, value=0)
        self.table = Table(value=_table([]))
        self.status = Label(value="")
        self.extend(
            [
                self.recipe,
                self.inputs,
                self.output,
                self.ground_truth,
                self.scheduler,
                self.overwrite,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.table,
                self.status,
            ]
        )
        self._rows: list[list] = []
        self.run_button.changed.connect(self._clicked)
        self.cancel_button.changed.connect(self.cancel)
        self.scheduler.changed.connect(self._scheduler_changed)

    # ---- inputs ---------------------------------------------------------------------------------
    def _scheduler_changed(self, *_args: Any) -> None:
        _chunked.settings.scheduler = self.scheduler_address()

    def scheduler_address(self) -> str | None:
        text = str(self.scheduler.value or "").strip()
        return text or None

    def read_inputs(self) -> dict:
        """The batch's arguments; ``ValueError`` with a user-facing message if one is missing."""
        recipe = _path(self.recipe)
        inputs = _path(self.inputs)
        output = _path(self.output)
        if recipe is None or not recipe.is_file():
            raise ValueError("choose a recipe file (save one from a method widget)")
        if inputs is None or not inputs.is_dir():
            raise ValueError("choose the folder of images to segment")
        if output is None:
            raise ValueError("choose the output folder")
        return {
            "recipe": recipe,
            "inputs": [inputs],
            "outdir": output,
            "evaluate": _path(self.ground_truth),
            "scheduler": self.scheduler_address(),
            "overwrite": bool(self.overwrite.value),
        }

    # ---- running --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _clicked(self, *_args: Any) -> None:
        self.run()

    def _check_cancel(self, *_args: Any) -> None:
        if self._cancel.is_set():
            raise Cancelled("batch cancelled")

    def run(self, *, blocking: bool = False):
        """Run the batch (in a worker thread; ``blocking=True`` here, returning the report)."""
        from ..batch import run_batch

        if self.running:
            show_info("batch: already running; press Cancel to stop it")
            return None
        try:
            kwargs = self.read_inputs()
        except ValueError as err:
            self._fail(err)
            return None
        self._cancel.clear()
        self._rows = []
        self.table.value = _table([])
        self.progress.value = 0
        emitter = _Emitter()
        emitter.progressed.connect(self._on_progress)
        emitter.file_done.connect(self._on_file)

        def progress(done: int, total: int) -> None:
            self._check_cancel()
            emitter.progressed.emit(done, total)

        def work():
            return run_batch(
                **kwargs,
                progress=progress,
                file_progress=self._check_cancel,
                on_file=emitter.file_done.emit,
                show_progress=False,
                report_errors=False,
            )

        if blocking:
            self._emitter = emitter
            try:
                report = work()
            except (Cancelled, ValueError, OSError) as err:
                self._fail(err)
                return None
            self._done(report)
            return report
        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._done)
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._emitter = emitter
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "running..."
        worker.start()
        return worker

    def cancel(self, *_args: Any) -> None:
        """Stop after the current step; finished files stay (a rerun resumes the batch)."""
        if self.running:
            self._cancel.set()
            self.status.value = "cancelling..."

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _on_file(self, result: Any) -> None:
        f1 = ""
        if result.scores is not None:
            f1 = result.scores.get("f1", "")
            f1 = f"{f1:.3f}" if isinstance(f1, float) else f1
        error = result.error or ((result.scores or {}).get("error", ""))
        self._rows.append(
            [
                result.input.name,
                result.status,
                "" if result.n_objects is None else result.n_objects,
                round(result.seconds, 2),
                f1,
                error,
            ]
        )
        self.table.value = _table(self._rows)

    def _done(self, report: Any) -> None:
        self.report = report
        n = {s: sum(r.status == s for r in report.results) for s in ("done", "skipped", "failed")}
        self.status.value = (
            f"{n['done']} done, {n['skipped']} already done, {n['failed']} failed -> "
            f"{report.summary}"
        )
        if n["failed"]:
            show_error(f"batch: {n['failed']} file(s) failed; see the table and {report.summary}")

    def _finished(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _fail(self, err: BaseException) -> None:
        if isinstance(err, Cancelled):
            self.status.value = "cancelled (run again to resume)"
            show_info("batch: cancelled; finished files are kept, run again to resume")
            return
        self.status.value = f"error: {err}"
        show_error(f"batch failed: {err}")
