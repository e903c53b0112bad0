"""Putting results into the viewer without losing the user's work (no Qt here).

The rule: a rerun replaces the plugin's own output layer only while the user has not edited it;
once edited (painted, filled, erased, or data replaced), the rerun adds a new layer. The plugin never
writes into a layer it did not create.
"""

from __future__ import annotations

import weakref
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__

KEY = "napari-segkit"

# Layers this plugin created in this session -> checksum of the data it last wrote.
_OWN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class SegmentationResult:
    """What a method's compute step hands back to the widget."""

    labels: np.ndarray
    #: one row per label (a ``label`` column maps rows to label values)
    features: Any = None
    #: further layers as napari layer-data tuples ``(data, kwargs, layer_type)``
    extra_layers: list = field(default_factory=list)
    #: a line for the user (shown as a notification), e.g. instances that lost all their pixels
    message: str | None = None
    #: further keyword arguments of the Labels layer (e.g. a fixed color per class)
    layer_kwargs: dict = field(default_factory=dict)


def unwrap(obj: Any) -> Any:
    """The real object behind napari's ``PublicOnlyProxy`` (what a docked plugin widget is given)."""
    return getattr(obj, "__wrapped__", obj)


def checksum(data: Any) -> tuple:
    """A cheap fingerprint of an array's content, shape and dtype."""
    if not isinstance(data, np.ndarray) and hasattr(data, "dask"):
        # a lazy (dask) result is never read whole: its graph name identifies its content
        return tuple(data.shape), str(data.dtype), data.name
    arr = np.ascontiguousarray(np.asarray(data))
    crc = zlib.crc32(memoryview(arr).cast("B")) if arr.size else 0  # (no cast of 0-size views)
    return arr.shape, str(arr.dtype), crc


def is_own_unedited(layer: Any) -> bool:
    """True if the plugin created ``layer`` and its data is still exactly what the plugin wrote."""
    layer = unwrap(layer)
    stored = _OWN.get(layer)
    return stored is not None and stored == checksum(layer.data)


def placement(source: Any, channel_axis: int | None) -> dict:
    """``scale``/``translate`` of the source image for an output without the channel axis."""
    scale = list(source.scale)
    translate = list(source.translate)
    if channel_axis is not None and not getattr(source, "rgb", False):
        del scale[channel_axis]
        del translate[channel_axis]
    return {"scale": scale, "translate": translate}


def find_reusable(viewer: Any, source_name: str, method: str, layer_type: str = "labels") -> Any:
    """The newest own, unedited output layer of ``method`` for ``source_name``, or None."""
    for layer in reversed([unwrap(lay) for lay in viewer.layers]):
        if layer not in _OWN or layer._type_string != layer_type:
            continue
        meta = layer.metadata.get(KEY, {})
        if meta.get("source") == source_name and meta.get("method") == method:
            return layer if is_own_unedited(layer) else None
    return None


def publish(
    viewer: Any,
    data: Any,
    *,
    source: Any,
    method: str,
    params: dict,
    layer_type: str = "labels",
    channel_axis: int | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> tuple[Any, bool]:
    """Put ``data`` into the viewer as the output of ``method`` on the ``source`` image layer.

    Returns ``(layer, reused)``: ``reused`` is True when the plugin's own unedited layer was updated
    in place, False when a new layer was added (first run, or the previous output was edited).
    """
    name = name or f"{source.name} {method}"
    meta = {
        KEY: {
            "method": method,
            "params": params,
            "version": __version__,
            "source": source.name,
        }
    }
    place = placement(source, channel_axis)
    layer = find_reusable(viewer, source.name, method, layer_type)
    if layer is not None:
        layer.data = data
        layer.metadata = meta
        layer.scale, layer.translate = place["scale"], place["translate"]
        for key, value in kwargs.items():
            setattr(layer, key, value)
        reused = True
    else:
        add = getattr(viewer, f"add_{layer_type}")
        layer = unwrap(add(data, name=name, metadata=meta, **place, **kwargs))
        reused = False
    _OWN[layer] = checksum(layer.data)
    return layer, reused


def own_outputs(viewer: Any, source_name: str, method: str) -> list:
    """The layers in ``viewer`` that the plugin wrote for ``method`` on ``source_name``."""
    out = []
    for layer in (unwrap(lay) for lay in viewer.layers):
        meta = layer.metadata.get(KEY, {})
        if layer in _OWN and meta.get("source") == source_name and meta.get("method") == method:
            out.append(layer)
    return out


#: Fixed colors of the first classes (class 1, 2, ...), as napari color strings.
CLASS_COLORS = (
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
    "#808080",
)


def class_colormap(n_classes: int) -> dict:
    """A fixed color per class for a Labels layer of classes (0, the background, transparent)."""
    colors: dict = {None: "transparent", 0: "transparent"}
    for c in range(1, n_classes):
        colors[c] = CLASS_COLORS[(c - 1) % len(CLASS_COLORS)]
    return colors
