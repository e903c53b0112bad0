"""Building output layers and putting them into the viewer without losing the user's work.

No Qt here (and no napari import: a viewer is only used through its methods), so the layer
builders and the nothing-lost rule can be used and tested without a display.

The rule: a rerun replaces the plugin's own output layer only while the user has not edited it;
once edited (painted, filled, erased, or data replaced), the rerun adds a new layer. The plugin never
writes into a layer it did not create.

Layer builders return napari layer-data tuples ``(data, kwargs, layer_type)``:
:func:`cluster_color_layer` (k-means), :func:`boxes_layer` (detections).
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

    #: values the method measured and used, e.g. ``{"diameter (auto)": (23.4, "px")}``: a number,
    #: or ``(number, unit)``; shown in the widget's status line and recorded in the layer's
    #: metadata under ``"measured"``, so the user can see and correct them
    measured: dict = field(default_factory=dict)


def format_measured(measured: dict) -> str:
    """One line for the status bar from :attr:`SegmentationResult.measured`.

    Examples
    --------
    >>> format_measured({"diameter (auto)": (23.4, "px"), "threshold (otsu)": 87.123456})
    'diameter (auto): 23.4 px, threshold (otsu): 87.12'
    """
    parts = []
    for name, value in measured.items():
        unit = ""
        if isinstance(value, tuple | list) and len(value) == 2:
            value, unit = value
        text = f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)
        parts.append(f"{name}: {text}" + (f" {unit}" if unit else ""))
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, tuples as lists (metadata that serializes as JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


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
    measured: dict | None = None,
    **kwargs: Any,
) -> tuple[Any, bool]:
    """Put ``data`` into the viewer as the output of ``method`` on the ``source`` image layer.

    ``measured`` (see :class:`SegmentationResult`) is recorded in the metadata next to the
    parameters. Returns ``(layer, reused)``: ``reused`` is True when the plugin's own unedited
    layer was updated in place, False when a new layer was added (first run, or the previous
    output was edited).
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
    if measured:
        meta[KEY]["measured"] = {k: _plain(v) for k, v in measured.items()}
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


# ---- layer builders ------------------------------------------------------------------------------


def cluster_color_layer(
    labels: np.ndarray, centers: np.ndarray, *, rgb: bool, dtype: Any = np.float32
) -> tuple:
    """The k-means "cluster colors" Image layer tuple: each pixel painted its cluster's mean.

    RGB: the cluster's mean color. Otherwise its mean value averaged over the channels (one grey
    image). Integer ``dtype`` (the input's) is kept; any other becomes float32.

    Examples
    --------
    >>> labels = np.array([[1, 2]], np.uint8)
    >>> data, kwargs, kind = cluster_color_layer(labels, np.array([[10.0], [30.0]]), rgb=False)
    >>> data, kwargs["contrast_limits"], kind
    (array([[10., 30.]], dtype=float32), [10.0, 30.0], 'image')
    """
    from ..algorithms.kmeans import cluster_color_image

    dtype = np.dtype(dtype)
    out_dtype = dtype if dtype.kind in "ui" else np.dtype(np.float32)
    centers = np.asarray(centers, dtype=np.float64)
    if rgb:
        data = cluster_color_image(labels, centers, dtype=out_dtype)
        return data, {"name": "cluster colors", "rgb": True}, "image"
    grey = centers.mean(axis=1, keepdims=True)
    data = cluster_color_image(labels, grey, dtype=out_dtype)[..., 0]
    kwargs: dict[str, Any] = {"name": "cluster colors", "rgb": False, "colormap": "gray"}
    lo, hi = float(grey.min()), float(grey.max())
    if hi > lo:
        kwargs["contrast_limits"] = [lo, hi]
    return data, kwargs, "image"


def boxes_layer(table: dict) -> tuple:
    """A Shapes layer tuple of detection boxes, with class and score as text.

    ``table`` holds ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1``, ``label``, ``class_name``,
    ``score`` and, for a stack, the leading index in ``axis0``, ``axis1``, ...

    Examples
    --------
    >>> table = {"label": [1], "class_name": ["cell"], "score": [0.9], "bbox_y0": [2],
    ...          "bbox_x0": [3], "bbox_y1": [5], "bbox_x1": [7]}
    >>> corners, kwargs, kind = boxes_layer(table)
    >>> corners[0].tolist(), kind
    ([[2.0, 3.0], [2.0, 7.0], [5.0, 7.0], [5.0, 3.0]], 'shapes')
    """
    lead = sorted(k for k in table if k.startswith("axis"))
    y0, x0, y1, x1 = (
        np.asarray(table[k], float) for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
    )
    index = (
        np.stack([np.asarray(table[k], float) for k in lead], axis=1)
        if lead
        else np.zeros((len(y0), 0))
    )
    corners = []
    for i in range(len(y0)):
        pts = np.array([[y0[i], x0[i]], [y0[i], x1[i]], [y1[i], x1[i]], [y1[i], x0[i]]])
        corners.append(np.concatenate([np.repeat(index[i : i + 1], 4, axis=0), pts], axis=1))
    features = {"label": table["label"], "class_name": table["class_name"], "score": table["score"]}
    kwargs = {
        "name": "boxes",
        "shape_type": "rectangle",
        "edge_color": "yellow",
        "face_color": "transparent",
        "edge_width": 1,
        "features": features,
        "text": {
            "string": "{class_name} {score:.2f}",
            "size": 8,
            "color": "yellow",
            "anchor": "upper_left",
        },
    }
    return corners, kwargs, "shapes"
