"""The shared dock-widget pattern: every method's widget subclasses :class:`SegmentWidget`.

A subclass sets ``spec`` (the method's one parameter declaration, :mod:`napari_segkit.params`, from
which the parameter widgets are built and read) and ``method`` (used in the output layer's name), and
does the work in ``compute()``, which runs off the GUI thread and returns a
:class:`SegmentationResult`. The base class handles the rest: the
image picker and channel/stack options, the Run and Cancel buttons, the worker thread and progress
bar, errors as notifications, and publishing the result without losing the user's edits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, Widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ..algorithms.image import Cancelled, ProgressCallback, stack_mode
from ..params import MethodSpec
from ._output import SegmentationResult, own_outputs, publish
from ._params import ParamWidgets

__all__ = ["ImageInput", "SegmentWidget", "SegmentationResult"]

NO_CHANNEL_AXIS = "none"
STACK_AUTO_TEXT = "auto (z-stack: 3D; time: 2D)"


@dataclass
class ImageInput:
    """What the widget read from the Image layer, on the GUI thread, for the worker."""

    data: Any
    rgb: bool
    channel_axis: int | None
    channel: int
    spatial_ndim: int
    layer: Any

    def as_params(self) -> dict:
        return {
            "channel_axis": self.channel_axis,
            "channel": self.channel,
            "spatial_ndim": self.spatial_ndim,
        }


class _ProgressEmitter(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int)


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

    # ---- inputs -------------------------------------------------------------------------------
    def _image_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _channel_axis_choices(self, _widget=None) -> list:
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None or layer.rgb:
            return [(NO_CHANNEL_AXIS, None)]
        ndim = _level0(layer).ndim
        # the channel axis of an unsplit multichannel image is a leading axis
        return [(NO_CHANNEL_AXIS, None)] + [(f"axis {i}", i) for i in range(max(ndim - 2, 0))]

    def _on_image_changed(self, layer) -> None:
        self.channel_axis.reset_choices()
        self._update_input_visibility()
        self.on_image_changed(layer)

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
            nd, reason = self._auto_stack(layer)
            self.stack.tooltip = f"auto here: {reason}"

    def _auto_stack(self, layer) -> tuple[int, str]:
        """The stack mode 'auto' picks for ``layer`` and why."""
        data = _level0(layer)
        labels = getattr(layer, "axis_labels", None)
        shape = tuple(data.shape)
        if labels is not None and len(labels) != len(shape) and layer.rgb:
            labels = (*labels, "rgb")
        channel_axis = None if layer.rgb else self.channel_axis.value
        if channel_axis is not None and channel_axis >= len(shape):
            channel_axis = None
        return stack_mode(shape, axis_labels=labels, rgb=bool(layer.rgb), channel_axis=channel_axis)

    def read_input(self) -> ImageInput:
        """Read the chosen layer and options. Raises ValueError with a user-facing message."""
        layer = self.image.value
        if layer is None:
            raise ValueError("No image layer: open or load an image (File > Open, or a sample).")
        data = _level0(layer)
        rgb = bool(layer.rgb)
        channel_axis = None if rgb else self.channel_axis.value
        if channel_axis is not None and channel_axis >= data.ndim:
            channel_axis = None
        if channel_axis is not None and not self.uses_all_channels:
            n = data.shape[channel_axis]
            if self.channel.value >= n:
                raise ValueError(
                    f"channel {self.channel.value} does not exist: axis {channel_axis} has {n}"
                )
        spatial_ndim, self.stack_reason = 2, ""
        if self.supports_volume:
            spatial_ndim = int(self.stack.value)
            if spatial_ndim == 0:
                spatial_ndim, self.stack_reason = self._auto_stack(layer)
        return ImageInput(
            data=data,
            rgb=rgb,
            channel_axis=channel_axis,
            channel=int(self.channel.value),
            spatial_ndim=spatial_ndim,
            layer=layer,
        )

    # ---- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _clicked(self, *_args) -> None:
        self.run()

    def run(self, *, blocking: bool = False):
        """Run the method on the chosen image.

        With ``blocking=False`` (the button) the work runs in a worker thread and the result is
        published when done. ``blocking=True`` (scripts, tests) runs in this thread and returns the
        output layer. Errors become napari notifications; the widget stays usable.
        """
        if self.running:
            show_info(f"{self.method}: already running; press Cancel to stop it")
            return None
        try:
            inp = self.read_input()
            params = self.parameters()
        except (ValueError, TypeError) as err:
            self._fail(err)
            return None
        self._cancel.clear()

        if blocking:
            try:
                result = self.compute(inp, params, self._check_cancel)
            except (Cancelled, ValueError, MemoryError, RuntimeError, OSError) as err:
                self._fail(err)
                return None
            return self._publish(inp, params, result)

        emitter = _ProgressEmitter()
        self._pbar = napari_progress(total=0, desc=f"{self.method}: {inp.layer.name}")
        emitter.progressed.connect(self._on_progress)

        def report(done: int, total: int) -> None:
            self._check_cancel(done, total)
            emitter.progressed.emit(done, total)

        worker = create_worker(
            self.compute, inp, params, report, _start_thread=False, _ignore_errors=True
        )
        worker.returned.connect(lambda result: self._publish(inp, params, result))
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._emitter = emitter  # keep it alive while the worker runs
        self.call_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "running..."
        worker.start()
        return worker

    def cancel(self, *_args) -> None:
        """Ask the running work to stop at its next progress report."""
        if self.running:
            self._cancel.set()
            self.status.value = "cancelling..."

    def _check_cancel(self, done: int = 0, total: int = 0) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"{self.method} cancelled")

    def _on_progress(self, done: int, total: int) -> None:
        if self._pbar is None:
            return
        if self._pbar.total != total:
            self._pbar.total = total
        self._pbar.update(done - self._pbar.n)

    def _finished(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.call_button.enabled = True
        self.cancel_button.enabled = False

    def _fail(self, err: BaseException) -> None:
        if isinstance(err, Cancelled):
            self.status.value = "cancelled"
            show_info(f"{self.method}: cancelled")
            return
        self.status.value = f"error: {err}"
        show_error(f"{self.method} failed: {err}")

    def _publish(self, inp: ImageInput, params: dict, result: SegmentationResult):
        recorded = {**params, **inp.as_params()}
        layer, reused = publish(
            self._viewer,
            result.labels,
            source=inp.layer,
            method=self.method,
            params=recorded,
            channel_axis=inp.channel_axis,
            **({"features": result.features} if result.features is not None else {}),
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
        n = int(result.labels.max(initial=0))
        what = "updated" if reused else "new layer"
        how = f"; {self.stack_reason}" if self.stack_reason else ""
        self.status.value = f"{n} label(s) -> '{layer.name}' ({what}{how})"
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
