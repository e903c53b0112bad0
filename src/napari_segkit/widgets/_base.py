"""The shared dock-widget pattern: every method's widget subclasses :class:`SegmentWidget`.

A subclass sets ``spec`` (the method's one parameter declaration, :mod:`napari_segkit.params`, from
which the parameter widgets are built and read) and ``method`` (used in the output layer's name), and
does the work in ``compute()``, which runs off the GUI thread and returns a
:class:`SegmentationResult`. The base class handles the rest: the
image picker and channel/stack options (read by :func:`~napari_segkit.algorithms.image.prepare_input`,
as the command line and recipes read them), the Run and Cancel buttons, the worker thread and
progress bar, errors as notifications, and publishing the result without losing the user's edits.

Errors, one policy for every path (the Run button, ``run(blocking=True)``, any task given to
:meth:`SegmentWidget.run_task`): the exception becomes one napari error notification with a
one-line message and the widget stays usable. Errors the user can act on (``ValueError``,
``MemoryError``, ``OSError`` and this plugin's own exception classes) show their message; any
other shows its type and message plus "(details in the log)", and its traceback is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, Widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ..algorithms.image import (
    Cancelled,
    InputImage,
    ProgressCallback,
    guess_channel_axis,
    prepare_input,
    stack_mode,
)
from ..params import MethodSpec
from . import _chunked, _recipes
from ._output import SegmentationResult, format_measured, own_outputs, publish
from ._params import ParamWidgets

__all__ = ["ImageInput", "SegmentWidget", "SegmentationResult", "error_message"]

logger = logging.getLogger(__name__)

NO_CHANNEL_AXIS = "none"
STACK_AUTO_TEXT = "auto (z-stack: 3D; time: 2D)"
#: exceptions whose message is meant for the user (besides this plugin's own classes)
USER_ERRORS = (ValueError, MemoryError, OSError)


@dataclass
class ImageInput(InputImage):
    """What the widget read from the Image layer, on the GUI thread, for the worker: the
    prepared image (:class:`~napari_segkit.algorithms.image.InputImage`) and its layer."""

    layer: Any = None

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """The layer's scale along the axes segmented together (z, y, x of a z-stack), or
        None for planes or square voxels."""
        if self.spatial_ndim != 3 or self.layer is None:
            return None
        scale = [float(v) for v in self.layer.scale]
        if self.channel_axis is not None and not self.rgb and len(scale) == self.data.ndim:
            del scale[self.channel_axis]
        spacing = tuple(scale[-3:])
        return None if len(spacing) < 3 or all(v == 1.0 for v in spacing) else spacing


def error_message(err: BaseException) -> tuple[str, bool]:
    """``(one-line message, expected)`` for an exception, as the widgets show it.

    Expected errors (the user can act on them) give their message; unexpected ones their type
    and message and "(details in the log)".

    Examples
    --------
    >>> error_message(ValueError("k must be\\n  between 2 and 32"))
    ('k must be between 2 and 32', True)
    >>> error_message(KeyError("x"))
    ("KeyError: 'x' (details in the log)", False)
    """
    text = " ".join(str(err).split())
    expected = isinstance(err, USER_ERRORS) or type(err).__module__.startswith("napari_segkit")
    if expected:
        return text or type(err).__name__, True
    name = type(err).__name__
    return (f"{name}: {text}" if text else name) + " (details in the log)", False


class _ProgressEmitter(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal()


class SegmentWidget(Container):
    """Base dock widget: image in, worker thread, Labels layer out."""

    #: the method's parameter declaration (widgets, defaults, ranges, help, visibility)
    spec: MethodSpec | None = None
    #: the method's name, used in the output layer's name ``"<image> <method>"``
    method = "segment"

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        if self.spec is not None:
            self.supports_volume = self.spec.supports_volume
            self.uses_all_channels = self.spec.uses_all_channels
        self.params: ParamWidgets | None = None
        self._viewer = viewer
        self._worker = None
        self._cancel = threading.Event()
        self._pbar = None
        self._progress = (0, 0)  # the latest (done, total) the worker reported
        self._progress_queued = False  # a progress signal is on its way to the GUI thread
        self._progress_showing = False  # the GUI thread is inside a progress-bar update
        self.last_layer = None  # the Labels layer the last run wrote
        self.stack_reason = ""  # why 'auto' chose the stack mode of the last run

        self.image = ComboBox(label="image", choices=self._image_choices)
        self.channel_axis = ComboBox(label="channel axis", choices=self._channel_axis_choices)
        self.channel = SpinBox(label="channel", min=0, max=1023, value=0)
        self.stack = ComboBox(
            label="stack",
            choices=[(STACK_AUTO_TEXT, 0), ("2D, plane by plane", 2), ("3D, whole volume", 3)],
            value=0,
        )
        self.stack.tooltip = (
            "auto: a 3D image is a z-stack segmented as one volume, unless an axis is labelled "
            "t/time/frame (a time-lapse: plane by plane)"
        )
        self.call_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")

        self.extend([self.image, self.channel_axis])
        if not self.uses_all_channels:
            self.append(self.channel)
        self.append(self.stack)
        self.extend(self.make_parameters())
        self.extend([self.call_button, self.cancel_button, self.status])
        self.append(_recipes.recipe_buttons(self))  # "Save recipe..." / "Load recipe..."

        self.call_button.changed.connect(self._clicked)
        self.cancel_button.changed.connect(self.cancel)
        self.image.changed.connect(self._on_image_changed)
        self.channel_axis.changed.connect(self._update_input_visibility)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        self._on_image_changed(self.image.value)

    # ---- to override --------------------------------------------------------------------------
    #: whether the method can process a 3D volume as a whole (from ``spec``)
    supports_volume = True
    #: whether the method uses all channels (True) or one channel (False) (from ``spec``)
    uses_all_channels = False

    def custom_widgets(self) -> dict[str, Widget]:
        """Hook: widgets the method makes itself for some parameters (e.g. a model picker)."""
        return {}

    def make_parameters(self) -> list[Widget]:
        """The method's parameter widgets (built from ``spec``), between the inputs and Run."""
        if self.spec is None:
            return []
        self.params = ParamWidgets(self.spec, custom=self.custom_widgets())
        return list(self.params)

    def parameters(self) -> dict:
        """The method's parameters that apply, read on the GUI thread and validated; recorded in
        the layer's metadata. Raises ValueError with a user-facing message."""
        return {} if self.params is None else self.params.values()

    def compute(
        self, inp: ImageInput, params: dict, progress: ProgressCallback
    ) -> SegmentationResult:
        """Run the algorithm (off the GUI thread). Must not touch the viewer."""
        raise NotImplementedError

    def on_image_changed(self, layer: Image | None) -> None:
        """Hook: adapt parameter defaults to a newly chosen image."""

    def save_recipe(self, path) -> Any:
        """Save the method and its current parameters as a recipe file (YAML)."""
        return _recipes.save_widget_recipe(self, path)

    def load_recipe(self, path) -> Any:
        """Show the parameters of a recipe file (``ValueError`` if it is for another method)."""
        return _recipes.load_widget_recipe(self, path)

    # ---- inputs -------------------------------------------------------------------------------
    def _image_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _channel_axis_choices(self, _widget=None) -> list:
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None or layer.rgb:
            return [(NO_CHANNEL_AXIS, None)]
        ndim = len(_level0(layer).shape)
        if ndim < 3:
            return [(NO_CHANNEL_AXIS, None)]
        # the channels of an unsplit multichannel image: a leading axis, or the last one
        leading = [(f"axis {i}", i) for i in range(ndim - 2)]
        return [(NO_CHANNEL_AXIS, None), *leading, (f"axis {ndim - 1} (last)", ndim - 1)]

    def _on_image_changed(self, layer) -> None:
        try:
            self.channel_axis.reset_choices()
            if layer is not None:
                # a short last axis (e.g. 2 channels that napari shows as planes) is channels
                guess = guess_channel_axis(_level0(layer).shape, rgb=bool(layer.rgb))
                self.channel_axis.value = guess
            self._update_input_visibility()
            self.on_image_changed(layer)
        except Exception as err:  # an odd layer must not break the widget
            self._fail(err, action="reading the image")

    def _update_input_visibility(self, *_args) -> None:
        """Show only the input options that apply to the chosen image."""
        layer = self.image.value
        ndim = 2 if layer is None else layer.ndim  # napari's ndim leaves out an RGB axis
        multichannel_possible = layer is not None and not layer.rgb and ndim >= 3
        self.channel_axis.visible = multichannel_possible
        self.channel.visible = (
            multichannel_possible
            and not self.uses_all_channels
            and self.channel_axis.value is not None
        )
        spatial = ndim - (1 if self.channel_axis.value is not None else 0)
        self.stack.visible = self.supports_volume and spatial >= 3
        if self.stack.visible and layer is not None:
            channel_axis = None if layer.rgb else self.channel_axis.value
            _nd, reason = stack_mode(
                tuple(_level0(layer).shape),
                axis_labels=getattr(layer, "axis_labels", None),
                rgb=bool(layer.rgb),
                channel_axis=channel_axis,
            )
            self.stack.tooltip = f"auto here: {reason}"

    def read_input(self) -> ImageInput:
        """Read the chosen layer and options (GUI thread; nothing is computed, dask stays lazy).
        Raises ValueError with a user-facing message."""
        layer = self.image.value
        if layer is None:
            raise ValueError("No image layer: open or load an image (File > Open, or a sample).")
        inp = prepare_input(
            layer.data,
            multiscale=bool(layer.multiscale),
            rgb=bool(layer.rgb),
            channel_axis=None if layer.rgb else self.channel_axis.value,
            channel=int(self.channel.value),
            stack=int(self.stack.value),
            axis_labels=getattr(layer, "axis_labels", None),
            uses_all_channels=self.uses_all_channels,
            supports_volume=self.supports_volume,
        )
        self.stack_reason = inp.stack_reason
        return ImageInput(**vars(inp), layer=layer)

    # ---- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _clicked(self, *_args) -> None:
        self.run()

    def run(self, *, blocking: bool = False):
        """Run the method on the chosen image.

        With ``blocking=False`` (the button) the work runs in a worker thread and the result is
        published when done; the worker is returned. ``blocking=True`` (scripts, tests) runs in
        this thread and returns the output layer. Errors become napari notifications (see the
        module docstring) and ``None`` is returned; the widget stays usable.
        """
        if self.running:
            show_info(f"{self.method}: already running; press Cancel to stop it")
            return None
        try:
            inp = self.read_input()
            params = self.parameters()
        except Exception as err:
            self._fail(err)
            return None
        for note in inp.notes:
            show_info(f"{self.method}: {note}")

        # a large dask-backed image goes block by block (widgets/_chunked.py)
        compute = _chunked.chunked_compute(self, inp, params) or self.compute

        def work(progress: ProgressCallback) -> SegmentationResult:
            return compute(inp, params, progress)

        return self.run_task(
            work,
            done=lambda result: self._publish(inp, params, result),
            blocking=blocking,
            progress=f"{self.method}: {inp.layer.name}",
        )

    def run_task(
        self,
        func: Callable[..., Any],
        *,
        done: Callable[[Any], Any],
        blocking: bool = False,
        progress: str | None = None,
        status: str = "running...",
    ):
        """Run ``func`` in a worker thread, then ``done(result)`` on the GUI thread.

        The one way this widget runs work (the method, a download, ...), with the one error
        policy: an exception from ``func`` or ``done`` becomes a notification (see the module
        docstring) and the widget stays usable. With ``progress`` (the progress bar's text),
        ``func`` is called as ``func(callback)``; ``callback(done, total)`` updates the bar and
        raises :class:`~napari_segkit.algorithms.image.Cancelled` after Cancel. Without it,
        ``func()``. One task at a time.

        Returns the worker, or with ``blocking`` (run here, in this thread) what ``done``
        returned, or None after an error.
        """
        self._cancel.clear()
        if blocking:
            try:
                result = func(self._check_cancel) if progress else func()
                return done(result)
            except Exception as err:
                self._fail(err)
                return None

        if progress:
            emitter = _ProgressEmitter()
            self._pbar = napari_progress(total=0, desc=progress)
            self._progress, self._progress_queued = (0, 0), False
            emitter.progressed.connect(self._on_progress)

            def report(n_done: int, total: int) -> None:
                self._check_cancel(n_done, total)
                self._progress = (n_done, total)
                # at most one signal on its way: a flood of them would be delivered inside
                # napari's progress bar update (it processes Qt events) and recurse
                if not self._progress_queued:
                    self._progress_queued = True
                    emitter.progressed.emit()

            worker = create_worker(func, report, _start_thread=False, _ignore_errors=True)
            self._emitter = emitter  # keep it alive while the worker runs
        else:
            worker = create_worker(func, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._guarded(done, result))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        self.call_button.enabled = False
        self.cancel_button.enabled = bool(progress)
        self.status.value = status
        worker.start()
        return worker

    def _guarded(self, func: Callable[[Any], Any], result: Any) -> Any:
        """``func(result)`` under the error policy (a Qt callback must not raise)."""
        try:
            return func(result)
        except Exception as err:
            self._fail(err)
            return None

    def cancel(self, *_args) -> None:
        """Ask the running work to stop at its next progress report."""
        if self.running:
            self._cancel.set()
            self.status.value = "cancelling..."

    def _check_cancel(self, done: int = 0, total: int = 0) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"{self.method} cancelled")

    def _on_progress(self) -> None:
        """Show the latest progress (GUI thread). Not re-entered: napari's progress bar
        processes Qt events while it updates, which may deliver the next report."""
        self._progress_queued = False
        if self._pbar is None or self._progress_showing:
            return
        self._progress_showing = True
        try:
            done, total = self._progress
            if self._pbar.total != total:
                self._pbar.total = total
            self._pbar.update(done - self._pbar.n)
        finally:
            self._progress_showing = False

    def _finished(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.call_button.enabled = True
        self.cancel_button.enabled = False

    def _fail(self, err: BaseException, action: str | None = None) -> None:
        """The one error policy: a notification with a one-line message; log the unexpected."""
        if isinstance(err, Cancelled):
            self.status.value = "cancelled"
            show_info(f"{self.method}: cancelled")
            return
        message, expected = error_message(err)
        what = f"{self.method}: {action} failed" if action else f"{self.method} failed"
        if not expected:
            logger.error("%s", what, exc_info=(type(err), err, err.__traceback__))
        self.status.value = f"error: {message}"
        show_error(f"{what}: {message}")

    def _publish(self, inp: ImageInput, params: dict, result: SegmentationResult):
        recorded = {**params, **inp.as_params()}
        if getattr(self.spec, "uses_spacing", False) and inp.spacing is not None:
            recorded["spacing"] = list(inp.spacing)  # the layer's scale, as the method used it
        layer, reused = publish(
            self._viewer,
            result.labels,
            source=inp.layer,
            method=self.method,
            params=recorded,
            channel_axis=inp.channel_axis,
            measured=result.measured,
            **({"features": result.features} if result.features is not None else {}),
            **result.layer_kwargs,
        )
        for data, kwargs, layer_type in result.extra_layers:
            kwargs = dict(kwargs)
            suffix = kwargs.pop("name", layer_type)
            publish(
                self._viewer,
                data,
                source=inp.layer,
                method=f"{self.method} {suffix}",
                params=recorded,
                layer_type=layer_type,
                channel_axis=inp.channel_axis,
                **kwargs,
            )
        n = _chunked.count_labels(result)
        what = "updated" if reused else "new layer"
        how = f"; {self.stack_reason}" if self.stack_reason else ""
        measured = f"; {format_measured(result.measured)}" if result.measured else ""
        self.status.value = f"{n} label(s) -> '{layer.name}' ({what}{how}){measured}"
        if not reused and len(own_outputs(self._viewer, inp.layer.name, self.method)) > 1:
            show_info(
                f"Your edited '{self.method}' layer was kept; the new result is '{layer.name}'."
            )
        if result.message:
            show_info(result.message)
        self.last_layer = layer
        return layer


def _level0(layer: Image) -> Any:
    """Full-resolution data of an Image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if layer.multiscale else layer.data
