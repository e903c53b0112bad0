"""Instance masks to one label image: score order, tiles, the per-object table.

Pure numpy: no torch, no napari. The GPU path in :mod:`napari_segkit.models.maskrcnn` follows the
same rules (IDs 1..N by descending score, the highest score wins each pixel, a detection belongs to
the tile whose core holds its box centre) and is checked against :func:`paint_instances` in the tests.

Boxes are ``(x0, y0, x1, y1)`` in pixels, torchvision's order, with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Columns of the per-object table, in order (stacks get one ``axis<k>`` column per leading axis first).
FEATURE_COLUMNS = (
    "label",
    "class_id",
    "class_name",
    "score",
    "area",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
)


def auto_max_detections(
    shape: Sequence[int], *, pixels_per_object: int = 1024, minimum: int = 100
) -> int:
    """A detection cap that grows with the image area.

    A fixed cap of 100 silently loses objects in crowded microscopy images (a 1024 x 1024
    fluorescence image can hold 500 nuclei). The cap is one object per ``pixels_per_object``
    pixels (a 32 x 32 square by default), and at least ``minimum``.

    Examples
    --------
    >>> auto_max_detections((1024, 1024))
    1024
    >>> auto_max_detections((64, 64))
    100
    """
    if pixels_per_object < 1:
        raise ValueError(f"pixels_per_object must be >= 1; got {pixels_per_object}")
    if minimum < 1:
        raise ValueError(f"minimum must be >= 1; got {minimum}")
    area = math.prod(int(s) for s in shape)
    return max(int(minimum), math.ceil(area / pixels_per_object))


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` from highest to lowest (ties keep their input order).

    Examples
    --------
    >>> score_order(np.array([0.5, 0.9, 0.5]))
    array([1, 0, 2])
    """
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(-scores, kind="stable")


def paint_instances(
    masks: Sequence[np.ndarray],
    scores: np.ndarray,
    shape: Sequence[int],
    *,
    offsets: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint instance masks into one label image; the highest score wins each pixel.

    Parameters
    ----------
    masks : sequence of ndarray of bool
        One mask per instance: the whole image, or a crop placed at ``offsets[i]``.
    scores : ndarray
        One score per instance.
    shape : tuple of int
        The label image's shape.
    offsets : sequence of (int, int), optional
        ``(y, x)`` of each crop's top-left corner in the image (may be negative or reach past the
        edge: what falls outside is clipped).

    Returns
    -------
    labels : ndarray of int32
        0 is background; instance ``order[k]`` has label ``k + 1`` (IDs by descending score).
    order : ndarray of int
        :func:`score_order` of ``scores``: ``order[k]`` is the input index of label ``k + 1``.

    Examples
    --------
    >>> a = np.array([[1, 1, 0]], bool); b = np.array([[0, 1, 1]], bool)
    >>> labels, order = paint_instances([a, b], np.array([0.6, 0.9]), (1, 3))
    >>> labels
    array([[2, 1, 1]], dtype=int32)
    >>> order
    array([1, 0])
    """
    scores = np.asarray(scores)
    if len(masks) != len(scores):
        raise ValueError(f"masks has {len(masks)} instances but scores has {len(scores)}")
    if offsets is not None and len(offsets) != len(masks):
        raise ValueError(f"offsets has {len(offsets)} entries but masks has {len(masks)}")
    labels = np.zeros(tuple(shape), dtype=np.int32)
    order = score_order(scores)
    for rank, i in enumerate(order):
        mask = np.asarray(masks[i], dtype=bool)
        oy, ox = (0, 0) if offsets is None else (int(offsets[i][0]), int(offsets[i][1]))
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + mask.shape[0], labels.shape[0]), min(ox + mask.shape[1], labels.shape[1])
        if y1 <= y0 or x1 <= x0:
            continue
        crop = mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        region = labels[y0:y1, x0:x1]
        region[crop & (region == 0)] = rank + 1
    return labels, order


def instance_areas(labels: np.ndarray, n: int, *, offset: int = 0) -> np.ndarray:
    """Pixel count of labels ``offset + 1 .. offset + n`` in ``labels`` (0 for an ID with no pixel).

    Examples
    --------
    >>> instance_areas(np.array([[1, 1, 3]]), 3)
    array([2, 0, 1])
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    values = labels[labels > offset].astype(np.int64) - offset
    counts = np.bincount(values[values <= n], minlength=n + 1)
    return counts[1 : n + 1]


@dataclass(frozen=True)
class Tile:
    """One tile of a tiling plan: the pixels the model sees and the core it owns.

    ``y0:y1, x0:x1`` is the tile; ``core`` is ``(cy0, cx0, cy1, cx1)``. The cores of a plan
    partition the image: a detection is kept only by the tile whose core holds its box centre.
    """

    y0: int
    x0: int
    y1: int
    x1: int
    core: tuple[int, int, int, int]


def axis_tiles(n: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """The fewest equal tiles of at most ``tile`` that cover ``n`` with ``overlap``: size, starts.

    The tiles are shrunk to cover ``n`` with no more overlap than needed (rounded up to
    ``multiple`` where that stays within ``tile`` and ``n``) and spread evenly: a plane a little
    larger than one tile (e.g. 1235 pixels, tile 1024, overlap 64) takes two tiles of 650, not
    two of 1024. Shared by Mask R-CNN's and the dense networks' tiling.

    Examples
    --------
    >>> axis_tiles(1235, 1024, 64)
    (650, [0, 585])
    >>> axis_tiles(500, 1024, 64)
    (500, [0])
    """
    if n <= tile:
        return n, [0]
    k = math.ceil((n - overlap) / (tile - overlap))
    size = math.ceil((n + (k - 1) * overlap) / k)
    rounded = math.ceil(size / multiple) * multiple
    if rounded <= min(tile, n):
        size = rounded
    while True:
        starts = [(i * (n - size)) // (k - 1) for i in range(k)]
        if all(b - a <= size - overlap for a, b in zip(starts, starts[1:], strict=False)):
            return size, starts
        size += 1  # integer starts lost a pixel of overlap


def _axis_plan(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tile starts/ends and core starts/ends along one axis: the fewest equal tiles of at most
    ``tile`` (:func:`axis_tiles`)."""
    tile, starts = axis_tiles(n, tile, overlap)
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        bounds.append((b + a + tile) // 2)  # the middle of the overlap of two neighbours
    bounds.append(n)
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def tile_plan(shape: Sequence[int], tile_size: int, overlap: int) -> list[Tile]:
    """Cover a ``(Y, X)`` image with equal tiles of at most ``tile_size`` that overlap by
    ``overlap`` or more.

    Along each axis the fewest tiles that cover it, shrunk to the same size and spread evenly
    (:func:`axis_tiles`), so every tile has the same size and tiles batch together, and an image
    a little larger than one tile costs little more than the image. An object is seen whole by the
    tile that owns its centre as long as its radius is at most ``overlap / 2``.

    Examples
    --------
    >>> [(t.y0, t.y1, t.core[0], t.core[2]) for t in tile_plan((100, 50), 60, 20)][:2]
    [(0, 60, 0, 50), (40, 100, 50, 100)]
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (Y, X); got {tuple(shape)}")
    if tile_size < 32:
        raise ValueError(f"tile_size must be >= 32 pixels; got {tile_size}")
    if not 0 <= overlap < tile_size // 2:
        raise ValueError(
            f"overlap must be >= 0 and less than half of tile_size ({tile_size}); got {overlap}"
        )
    ys = _axis_plan(int(shape[0]), int(tile_size), int(overlap))
    xs = _axis_plan(int(shape[1]), int(tile_size), int(overlap))
    return [
        Tile(y0, x0, y1, x1, (cy0, cx0, cy1, cx1))
        for (y0, y1, cy0, cy1) in ys
        for (x0, x1, cx0, cx1) in xs
    ]


def owned_by_core(boxes: np.ndarray, core: Sequence[int]) -> np.ndarray:
    """Which boxes (``(x0, y0, x1, y1)``) have their centre inside ``core`` (``(cy0, cx0, cy1, cx1)``).

    Examples
    --------
    >>> owned_by_core(np.array([[0, 0, 10, 10], [40, 0, 60, 10]]), (0, 0, 50, 50))
    array([ True, False])
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cy0, cx0, cy1, cx1 = core
    return (cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1)


def features_table(
    labels: np.ndarray,
    class_ids: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray,
    areas: np.ndarray,
    boxes: np.ndarray,
    *,
    index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The per-object table: one row per label, columns :data:`FEATURE_COLUMNS`.

    Parameters
    ----------
    labels, class_ids, scores, areas : ndarray
        One value per object.
    class_names : sequence of str
        Name of each class id (index 0 is the background).
    boxes : ndarray, shape (N, 4)
        ``(x0, y0, x1, y1)``; the table holds them as ``bbox_y0, bbox_x0, bbox_y1, bbox_x1``.
    index : ndarray, shape (N, K), optional
        Position of each object's plane along the K leading axes of a stack (columns ``axis0``...).

    Returns
    -------
    dict of str to ndarray
        Ready for ``pandas.DataFrame`` (and a napari layer's ``features``).

    Examples
    --------
    >>> t = features_table(np.array([1]), np.array([1]), ["bg", "nucleus"], np.array([0.9]),
    ...                    np.array([12]), np.array([[1.0, 2.0, 5.0, 6.0]]))
    >>> t["class_name"].tolist(), t["bbox_y0"].tolist()
    (['nucleus'], [2.0])
    """
    n = len(labels)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for name, arr in (
        ("class_ids", class_ids),
        ("scores", scores),
        ("areas", areas),
        ("boxes", boxes),
    ):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows but labels has {n}")
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if n and (class_ids.min() < 0 or class_ids.max() >= len(class_names)):
        raise ValueError(
            f"class_ids must lie in 0..{len(class_names) - 1} (the class_names); "
            f"got {class_ids.min()}..{class_ids.max()}"
        )
    table: dict[str, np.ndarray] = {}
    if index is not None:
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 2:  # (N, K) as it is, even with no row (a plane without objects)
            index = index.reshape(n, -1)
        for k in range(index.shape[1]):
            table[f"axis{k}"] = index[:, k]
    table["label"] = np.asarray(labels, dtype=np.int64)
    table["class_id"] = class_ids
    table["class_name"] = np.array([class_names[c] for c in class_ids], dtype=object)
    table["score"] = np.asarray(scores, dtype=np.float32)
    table["area"] = np.asarray(areas, dtype=np.int64)
    table["bbox_y0"] = boxes[:, 1]
    table["bbox_x0"] = boxes[:, 0]
    table["bbox_y1"] = boxes[:, 3]
    table["bbox_x1"] = boxes[:, 2]
    return table


def parse_classes(text: str, class_names: list[str] | None = None) -> list[int] | None:
    """``"1, 3"`` or ``"person, cat"`` -> class ids; empty -> None (all classes).

    Examples
    --------
    >>> parse_classes("1, 3")
    [1, 3]
    >>> parse_classes("nucleus", ["background", "nucleus"])
    [1]
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        return None
    out = []
    for item in items:
        if item.isdigit():
            out.append(int(item))
        elif class_names is not None and item in class_names:
            out.append(class_names.index(item))
        else:
            raise ValueError(f"class filter: {item!r} is neither a class id nor a class name")
    return out
