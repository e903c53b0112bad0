"""Evaluate dock widget: score a prediction Labels layer against a ground-truth Labels layer.

Three modes: instances (precision, recall, F1 and AP per IoU threshold, mean AP, mean matched
IoU), classes (per-class IoU and Dice of a class map) and panoptic (PQ, SQ, RQ, per class when
both layers carry a ``class_id`` feature). Instance modes also add a Labels layer
``"<prediction> errors"`` (1 = false positive, 2 = false negative) and a Points layer of the error
centroids; "Next error" walks the camera through them. The table can be copied (CSV text) or saved.

The scores come from :mod:`napari_segkit.metrics`; :func:`evaluate` builds the table without napari
or Qt. Run computes in a worker thread (a 64 x 512 x 512 volume takes about a second; 512 x 512 a
few milliseconds); ``run(blocking=True)`` computes in the calling thread, for scripts and tests.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox, Table
from napari.layers import Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from .. import metrics
from ._output import publish, unwrap
from ._plot import LinePlot

__all__ = ["EvaluateWidget", "EvaluationReport", "evaluate", "table_to_csv"]

MODES = [
    ("instances (AP, F1)", "instances"),
    ("classes (IoU, Dice)", "classes"),
    ("panoptic (PQ)", "panoptic"),
]
ERROR_COLORS = {metrics.FALSE_POSITIVE: "magenta", metrics.FALSE_NEGATIVE: "yellow"}
ERROR_LEGEND = "errors layer: 1 = false positive (magenta), 2 = false negative (yellow)"
#: feature columns read as an object's class in panoptic mode, in order of preference
CLASS_COLUMNS = ("class_id", "class", "class_name")


@dataclass
class EvaluationReport:
    """What :func:`evaluate` hands back: a table, plot curves, a summary and the errors."""

    mode: str
    #: column name -> list of values (numbers, or text in a summary row)
    table: dict[str, list]
    #: curve name -> (xs, ys)
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    plot_labels: tuple[str, str, str]
    summary: str
    errors: metrics.ErrorMasks | None = field(default=None, repr=False)


def _rows_to_columns(rows: list[dict]) -> dict[str, list]:
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for row in rows:
        for key in columns:
            columns[key].append(row.get(key, ""))
    return columns


def _instance_curves(scores: metrics.InstanceScores) -> dict:
    t = scores.table
    return {k: (t["iou_threshold"], t[k]) for k in ("ap", "f1", "precision", "recall")}


def evaluate(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    mode: str = "instances",
    iou_threshold: float = 0.5,
    pred_classes: Any = None,
    truth_classes: Any = None,
    ignore_index: int | None = None,
) -> EvaluationReport:
    """Score ``pred`` against ``truth`` for the widget: table rows, curves and error masks.

    Parameters
    ----------
    pred, truth : ndarray of int
        Label images of the same shape.
    mode : {"instances", "classes", "panoptic"}
        Which scores (see :mod:`napari_segkit.metrics`).
    iou_threshold : float
        The threshold of the error masks; in instances mode it is added to the table's rows
        (0.5, 0.55, ..., 0.95) if it is not one of them. The mean AP is over 0.5..0.95 only.
    pred_classes, truth_classes : optional
        Object classes for panoptic mode (see :func:`~napari_segkit.metrics.panoptic_quality`).
    ignore_index : int, optional
        Classes mode: truth pixels with this value are left out.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> r = evaluate(truth, truth)
    >>> r.table["ap"][:2], r.table["iou_threshold"][-1]
    ([1.0, 1.0], 'mean 0.5:0.95')
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    threshold = float(iou_threshold)
    if mode == "classes":
        s = metrics.semantic_scores(pred, truth, ignore_index=ignore_index)
        t = s.table
        shown = ~(np.isnan(s.iou) & (t["true_pixels"] == 0) & (t["pred_pixels"] == 0))
        rows = [
            {
                "class": int(t["class"][i]),
                "iou": float(t["iou"][i]),
                "dice": float(t["dice"][i]),
                "true_pixels": int(t["true_pixels"][i]),
                "pred_pixels": int(t["pred_pixels"][i]),
            }
            for i in np.flatnonzero(shown)
        ]
        rows.append({"class": "mean", "iou": s.mean_iou, "dice": s.mean_dice})
        rows.append({"class": "mean without 0", "iou": s.mean_iou_foreground})
        cls = t["class"][shown].astype(float)
        return EvaluationReport(
            mode=mode,
            table=_rows_to_columns(rows),
            curves={"IoU": (cls, t["iou"][shown]), "Dice": (cls, t["dice"][shown])},
            plot_labels=("IoU and Dice per class", "class", "score"),
            summary=(
                f"mean IoU {s.mean_iou:.3f} (without class 0: {s.mean_iou_foreground:.3f}), "
                f"mean Dice {s.mean_dice:.3f}, pixel accuracy {s.pixel_accuracy:.3f}"
            ),
        )
    if mode not in ("instances", "panoptic"):
        raise ValueError(f"mode must be 'instances', 'classes' or 'panoptic'; got {mode!r}")

    # the overlaps are counted once for the table, the errors and PQ (metrics' private path)
    ov = metrics._overlap(*metrics._check_pair(pred, truth))
    default = list(metrics.DEFAULT_THRESHOLDS)
    thresholds = sorted(set(default) | {round(metrics._check_threshold(threshold), 6)})
    scores = metrics._instance_scores(ov, thresholds)
    mean_ap = float(np.mean([r.ap for r in scores.results if r.iou_threshold in default]))
    errors = metrics._error_masks(ov, threshold)
    labels = ("AP vs IoU threshold", "IoU threshold", "score")
    at = errors.match
    if mode == "instances":
        rows = [
            {k: v for k, v in r.as_dict().items() if k not in ("n_pred", "n_true")}
            for r in scores.results
        ]
        rows.append({"iou_threshold": "mean 0.5:0.95", "ap": mean_ap})
        summary = (
            f"{at.n_pred} predicted, {at.n_true} true objects; at IoU {threshold:g}: "
            f"TP {at.tp}, FP {at.fp}, FN {at.fn}, F1 {at.f1:.3f}, AP {at.ap:.3f}; "
            f"mAP@0.5:0.95 {mean_ap:.3f}"
        )
        table = _rows_to_columns(rows)
        return EvaluationReport(mode, table, _instance_curves(scores), labels, summary, errors)

    if (pred_classes is None) != (truth_classes is None):
        raise ValueError("give both pred_classes and truth_classes, or neither")
    pq = metrics._panoptic(ov, pred_classes, truth_classes)
    table = {k: list(np.asarray(v).tolist()) for k, v in pq.table.items()}
    if pq.per_class is not None:
        for k in table:
            table[k].append("all (mean)" if k == "class" else getattr(pq, k))
    summary = (
        f"PQ {pq.pq:.3f} = SQ {pq.sq:.3f} x RQ {pq.rq:.3f}"
        + (" (means over classes)" if pq.per_class is not None else " (class-agnostic)")
        + f"; TP {pq.tp}, FP {pq.fp}, FN {pq.fn} at IoU > 0.5"
    )
    return EvaluationReport(mode, table, _instance_curves(scores), labels, summary, errors)


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else format(float(value), ".6g")
    return str(value)


def table_to_csv(table: dict[str, list]) -> str:
    """CSV text (header row, then one row per table row) of a dict of columns.

    Examples
    --------
    >>> print(table_to_csv({"iou_threshold": [0.5, "mean"], "ap": [1.0, 0.75]}), end="")
    iou_threshold,ap
    0.5,1
    mean,0.75
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(table))
    n = max((len(v) for v in table.values()), default=0)
    for i in range(n):
        writer.writerow([_cell(col[i]) if i < len(col) else "" for col in table.values()])
    return out.getvalue()


def _level0(layer: Labels) -> Any:
    return layer.data[0] if layer.multiscale else layer.data


def _classes_of(layer: Labels) -> dict | None:
    """``{label: class}`` from a layer's features table (``label`` and a class column), or None."""
    feats = getattr(layer, "features", None)
    if feats is None or len(feats) == 0 or "label" not in feats:
        return None
    for col in CLASS_COLUMNS:
        if col in feats:
            return dict(zip(feats["label"].tolist(), feats[col].tolist(), strict=True))
    return None


class EvaluateWidget(Container):
    """Dock widget: prediction vs ground truth, a score table, a plot and the errors as layers."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self.report: EvaluationReport | None = None
        self.error_layer = None
        self.points_layer = None
        self._error_index = -1

        self.prediction = ComboBox(label="prediction", choices=self._labels_choices)
        self.truth = ComboBox(label="ground truth", choices=self._labels_choices)
        self.mode = ComboBox(label="mode", choices=MODES, value="instances")
        self.iou_threshold = FloatSpinBox(
            label="IoU threshold",
            min=0.05,
            max=1.0,
            step=0.05,
            value=0.5,
            tooltip="Objects match when their IoU is at least this (errors layer, F1 and AP).",
        )
        self.ignore_index = SpinBox(
            label="ignore class",
            min=-1,
            max=65535,
            value=-1,
            tooltip="Classes mode: truth pixels of this class are not scored (-1: none).",
        )
        self.call_button = PushButton(text="Run")
        self.status = Label(value="")
        self.table = Table(label="scores")
        self.table.native.setEditTriggers(self.table.native.EditTrigger.NoEditTriggers)
        self.plot = LinePlot("AP vs IoU threshold", "IoU threshold", "score", ylim=(0, 1))
        self.plot.label = "plot"
        self.copy_button = PushButton(text="Copy table")
        self.save_button = PushButton(text="Save CSV...")
        self.next_error = PushButton(text="Next error", enabled=False)
        self.extend(
            [
                self.prediction,
                self.truth,
                self.mode,
                self.iou_threshold,
                self.ignore_index,
                self.call_button,
                self.status,
                self.table,
                self.plot,
                self.next_error,
                self.copy_button,
                self.save_button,
            ]
        )
        self.call_button.changed.connect(lambda *_: self.run())
        self.copy_button.changed.connect(lambda *_: self.copy_table())
        self.save_button.changed.connect(lambda *_: self._save_clicked())
        self.next_error.changed.connect(lambda *_: self.go_to_error())
        self.mode.changed.connect(self._update_visibility)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        self._pick_defaults()
        self._update_visibility()

    # ---- inputs -------------------------------------------------------------------------------
    def _labels_choices(self, _widget=None) -> list:
        return [(lay.name, lay) for lay in self._viewer.layers if isinstance(lay, Labels)]

    def _pick_defaults(self) -> None:
        """Different layers in the two pickers when there are two or more."""
        layers = [c[1] for c in self._labels_choices()]
        if len(layers) >= 2 and self.prediction.value is self.truth.value:
            self.truth.value = layers[0]
            self.prediction.value = layers[-1]

    def _update_visibility(self, *_args) -> None:
        self.iou_threshold.visible = self.mode.value != "classes"
        self.ignore_index.visible = self.mode.value == "classes"

    @property
    def running(self) -> bool:
        return self._worker is not None

    def read_inputs(self) -> tuple[Labels, Labels, dict]:
        """The two layers and the options. Raises ValueError with a user-facing message."""
        pred, truth = unwrap(self.prediction.value), unwrap(self.truth.value)
        if pred is None or truth is None:
            raise ValueError("Pick a prediction and a ground-truth Labels layer.")
        p_shape, t_shape = tuple(_level0(pred).shape), tuple(_level0(truth).shape)
        if p_shape != t_shape:
            raise ValueError(
                f"'{pred.name}' has shape {p_shape} but '{truth.name}' has shape {t_shape}: "
                "the prediction and the ground truth must have the same shape."
            )
        options = {"mode": self.mode.value, "iou_threshold": float(self.iou_threshold.value)}
        if self.mode.value == "classes" and self.ignore_index.value >= 0:
            options["ignore_index"] = int(self.ignore_index.value)
        if self.mode.value == "panoptic":
            pc, tc = _classes_of(pred), _classes_of(truth)
            if pc is not None and tc is not None:
                options.update(pred_classes=pc, truth_classes=tc)
        return pred, truth, options

    # ---- running ------------------------------------------------------------------------------
    def run(self, *, blocking: bool = False):
        """Evaluate the chosen layers; errors become notifications and the widget stays usable.

        ``blocking=True`` computes in this thread and returns the :class:`EvaluationReport`
        (None on error); otherwise a worker computes it and the result is shown when done.
        """
        if self.running:
            show_info("evaluate: already running")
            return None
        try:
            pred, truth, options = self.read_inputs()
        except ValueError as err:
            self._fail(err)
            return None
        p_data, t_data = np.asarray(_level0(pred)), np.asarray(_level0(truth))
        if blocking:
            try:
                report = evaluate(p_data, t_data, **options)
            except (ValueError, MemoryError) as err:
                self._fail(err)
                return None
            return self._show(pred, report, options)
        worker = create_worker(
            evaluate, p_data, t_data, **options, _start_thread=False, _ignore_errors=True
        )
        worker.returned.connect(lambda report: self._show(pred, report, options))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        self.call_button.enabled = False
        self.status.value = "evaluating..."
        worker.start()
        return worker

    def _finished(self) -> None:
        self._worker = None
        self.call_button.enabled = True

    def _fail(self, err: BaseException) -> None:
        self.status.value = f"error: {err}"
        show_error(f"evaluate failed: {err}")

    def _show(self, pred: Labels, report: EvaluationReport, options: dict) -> EvaluationReport:
        self.report = report
        self.table.value = {c: [_cell(v) for v in col] for c, col in report.table.items()}
        self.plot.title, self.plot.xlabel, self.plot.ylabel = report.plot_labels
        self.plot.ylim = (0, 1)
        self.plot.clear()
        for name, (xs, ys) in report.curves.items():
            self.plot.set_series(name, xs, ys)
        text = report.summary
        if report.errors is not None and pred in unwrap(self._viewer.layers):
            self._publish_errors(pred, report.errors, options)
            text += f"\n{ERROR_LEGEND}"
        self.status.value = text
        return report

    def _publish_errors(self, pred: Labels, errors: metrics.ErrorMasks, options: dict) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        params = {k: v for k, v in options.items() if k in ("mode", "iou_threshold")}
        params["truth"] = self.truth.value.name if self.truth.value is not None else None
        colormap = DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", **ERROR_COLORS}
        )
        self.error_layer, _ = publish(
            self._viewer,
            errors.labels,
            source=pred,
            method="evaluate errors",
            params=params,
            name=f"{pred.name} errors",
            colormap=colormap,
        )
        centroids = np.concatenate([errors.fp_centroids, errors.fn_centroids])
        n_fp, n_fn = len(errors.fp_ids), len(errors.fn_ids)
        kind = ["false positive"] * n_fp + ["false negative"] * n_fn
        from napari.utils.colormaps.standardize_color import transform_color

        colors = np.array(
            [transform_color(ERROR_COLORS[metrics.FALSE_POSITIVE])[0]] * n_fp
            + [transform_color(ERROR_COLORS[metrics.FALSE_NEGATIVE])[0]] * n_fn
        ).reshape(-1, 4)
        features = {
            "kind": np.array(kind, dtype=object),
            "label": np.array(
                [int(i) for i in errors.fp_ids] + [int(i) for i in errors.fn_ids], dtype=object
            ),
        }
        self.points_layer, _ = publish(
            self._viewer,
            centroids.reshape(-1, errors.labels.ndim),
            source=pred,
            method="evaluate error centroids",
            params=params,
            layer_type="points",
            name=f"{pred.name} error centroids",
            features=features,
            **({"face_color": colors} if len(colors) else {}),  # napari rejects 0 colors
            size=max(3.0, 0.02 * max(errors.labels.shape[-2:])),
        )
        self._error_index = -1
        self.next_error.enabled = len(centroids) > 0

    # ---- the errors, one by one ---------------------------------------------------------------
    def go_to_error(self, index: int | None = None) -> int | None:
        """Center the view on error ``index`` (default: the next one); returns its index."""
        layer = self.points_layer
        if layer is None or layer not in unwrap(self._viewer.layers) or len(layer.data) == 0:
            self.next_error.enabled = False
            return None
        n = len(layer.data)
        self._error_index = (self._error_index + 1) % n if index is None else int(index) % n
        i = self._error_index
        world = np.asarray(layer.data[i]) * np.asarray(layer.scale) + np.asarray(layer.translate)
        offset = self._viewer.dims.ndim - len(world)
        for axis, value in enumerate(world):
            if offset + axis not in self._viewer.dims.displayed:
                self._viewer.dims.set_point(offset + axis, value)
        shown = [a - offset for a in self._viewer.dims.displayed if a >= offset]
        scene = getattr(self._viewer, "scene", None)  # napari >= 0.9: viewer.scene.camera
        camera = scene.camera if scene is not None else self._viewer.camera
        camera.center = tuple(world[shown])
        layer.selected_data = {i}
        kind, label = layer.features["kind"].iloc[i], layer.features["label"].iloc[i]
        self.status.value = f"error {i + 1}/{n}: {kind} (label {label})\n{ERROR_LEGEND}"
        return i

    # ---- the table out ------------------------------------------------------------------------
    def table_csv(self) -> str:
        """The last result's table as CSV text ("" before the first run)."""
        return "" if self.report is None else table_to_csv(self.report.table)

    def copy_table(self) -> str:
        """Put the table on the clipboard as CSV text; returns the text."""
        from qtpy.QtWidgets import QApplication

        text = self.table_csv()
        if not text:
            show_info("evaluate: nothing to copy yet; press Run first")
            return text
        QApplication.clipboard().setText(text)
        self.status.value = "table copied (CSV)"
        return text

    def save_csv(self, path: str | Path) -> Path:
        """Write the table to ``path`` as CSV (no dialog); returns the path."""
        text = self.table_csv()
        if not text:
            raise ValueError("no table to save yet: press Run first")
        path = Path(path)
        path.write_text(text, encoding="utf-8")
        return path

    def _save_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        if self.report is None:
            show_info("evaluate: nothing to save yet; press Run first")
            return
        pred = self.prediction.value
        default = f"{pred.name if pred is not None else 'evaluation'} {self.report.mode}.csv"
        path, _ = QFileDialog.getSaveFileName(self.native, "Save table", default, "CSV (*.csv)")
        if not path:
            return
        try:
            self.status.value = f"saved {self.save_csv(path)}"
        except OSError as err:
            self._fail(err)
