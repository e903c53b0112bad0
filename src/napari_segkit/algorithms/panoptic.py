"""Panoptic labels: classes and object instances in one napari Labels layer (pure numpy).

Encoding (as Cityscapes and detectron2's panoptic format)::

    id = class_id * label_divisor + instance

with ``label_divisor = 1000`` by default. A pixel of a *stuff* class (background, tissue, sky...:
regions without objects) carries ``class_id * label_divisor``; every object of a *thing* class
(nucleus, cell...) gets its own ``instance`` number ``1, 2, ...`` counted within its class, so its
pixels carry ``class_id * label_divisor + instance``. Class 0 is the background: its pixels are
0. A thing-class pixel that belongs to no object (a crowd region) carries ``class_id *
label_divisor``, as stuff does.

So ``id // label_divisor`` is the class and ``id % label_divisor`` the instance: napari shows each
object in its own colour, and :func:`decode` gives both images back. ``label_divisor`` must be
larger than the largest number of objects of one class in an image.

Functions: :func:`encode`, :func:`decode`, :func:`table` (one row per id),
:func:`things_from_classes` (connected regions of chosen classes become instances) and
:func:`panoptic_from_classes` (both at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: Default ``label_divisor`` (Cityscapes, detectron2).
LABEL_DIVISOR = 1000


def _int_image(arr: Any, name: str) -> np.ndarray:
    if arr is None:
        raise ValueError(f"{name} is None: pass an integer array")
    arr = np.asarray(arr)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array; got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"{name} has negative values (min {arr.min()}); expected >= 0")
    return arr


def _check_divisor(label_divisor: int) -> int:
    if int(label_divisor) != label_divisor or int(label_divisor) < 2:
        raise ValueError(f"label_divisor must be an integer >= 2; got {label_divisor}")
    return int(label_divisor)


def _check_things(thing_classes: Iterable[int]) -> np.ndarray:
    things = np.unique(np.asarray(list(thing_classes), dtype=np.int64))
    if things.size and things.min() < 1:
        raise ValueError(
            f"thing_classes must be class ids >= 1 (0 is the background); got {things.tolist()}"
        )
    return things


def encode(
    classes: np.ndarray,
    instances: np.ndarray,
    thing_classes: Iterable[int],
    *,
    label_divisor: int = LABEL_DIVISOR,
) -> np.ndarray:
    """One panoptic label image from a class image and an instance image.

    Parameters
    ----------
    classes : ndarray of int
        Class id per pixel (0 background).
    instances : ndarray of int
        Object ID per pixel (0 none), any numbering (e.g. unique over the image). Only pixels of
        ``thing_classes`` keep their instance; within each class the objects are renumbered
        ``1, 2, ...`` in increasing order of their ID (an object spread over two classes becomes
        one instance in each).
    thing_classes : iterable of int
        Classes whose objects are told apart (>= 1).
    label_divisor : int
        See the module docstring.

    Returns
    -------
    ndarray of int32 (int64 if the ids need it)

    Raises
    ------
    ValueError
        Shapes differ, negative values, or a class with ``label_divisor`` objects or more.

    Examples
    --------
    >>> classes = np.array([[0, 1, 1, 2, 2]]); inst = np.array([[0, 0, 0, 7, 9]])
    >>> encode(classes, inst, [2])
    array([[   0, 1000, 1000, 2001, 2002]], dtype=int32)
    """
    classes = _int_image(classes, "classes")
    instances = _int_image(instances, "instances")
    if classes.shape != instances.shape:
        raise ValueError(f"classes has shape {classes.shape} but instances has {instances.shape}")
    divisor = _check_divisor(label_divisor)
    things = _check_things(thing_classes)
    top = (int(classes.max()) + 1) * divisor
    dtype = np.int32 if top <= np.iinfo(np.int32).max else np.int64
    out = classes.astype(dtype) * divisor
    is_thing = np.isin(classes, things) & (instances > 0)
    if not is_thing.any():
        return out
    cls = classes[is_thing].astype(np.int64)
    ids = instances[is_thing].astype(np.int64)
    # renumber the (class, id) pairs 1..n within each class, by increasing id
    pairs, inverse = np.unique(np.stack([cls, ids]), axis=1, return_inverse=True)
    inverse = inverse.ravel()
    first_of_class = np.searchsorted(pairs[0], pairs[0], side="left")
    number = np.arange(pairs.shape[1]) - first_of_class + 1
    if number.max() >= divisor:
        worst = int(pairs[0][np.argmax(number)])
        raise ValueError(
            f"class {worst} has {int(number.max())} objects: label_divisor={divisor} must be "
            f"larger than that"
        )
    out[is_thing] += number[inverse].astype(dtype)
    return out


def decode(
    panoptic: np.ndarray, label_divisor: int = LABEL_DIVISOR
) -> tuple[np.ndarray, np.ndarray]:
    """Class and instance images of a panoptic label image.

    Returns
    -------
    classes : ndarray
        ``panoptic // label_divisor``.
    instances : ndarray
        ``panoptic % label_divisor``: the object's number within its class (0 for stuff).

    Examples
    --------
    >>> decode(np.array([[0, 1000, 2001, 2002]]))
    (array([[0, 1, 2, 2]]), array([[0, 0, 1, 2]]))
    """
    panoptic = _int_image(panoptic, "panoptic")
    divisor = _check_divisor(label_divisor)
    return panoptic // divisor, panoptic % divisor


def table(
    panoptic: np.ndarray,
    class_names: Sequence[str],
    scores: Mapping[int, float] | None = None,
    *,
    label_divisor: int = LABEL_DIVISOR,
) -> dict[str, np.ndarray]:
    """One row per id present in ``panoptic`` (background 0 excluded).

    Columns: ``label`` (the panoptic id), ``class_id``, ``class_name``, ``instance`` (0 for
    stuff), ``score`` (``scores[id]``, NaN where not given), ``area`` (pixels).

    Examples
    --------
    >>> t = table(np.array([[0, 1000, 2001, 2001]]), ["bg", "tissue", "nucleus"], {2001: 0.9})
    >>> t["class_name"].tolist(), t["instance"].tolist(), t["area"].tolist()
    (['tissue', 'nucleus'], [0, 1], [1, 2])
    """
    panoptic = _int_image(panoptic, "panoptic")
    divisor = _check_divisor(label_divisor)
    ids, area = np.unique(panoptic, return_counts=True)
    area = area[ids > 0]
    ids = ids[ids > 0].astype(np.int64)
    class_ids = ids // divisor
    if ids.size and class_ids.max() >= len(class_names):
        raise ValueError(
            f"panoptic holds class {int(class_ids.max())} but class_names has only "
            f"{len(class_names)} names"
        )
    scores = scores or {}
    return {
        "label": ids,
        "class_id": class_ids,
        "class_name": np.array([class_names[c] for c in class_ids], dtype=object),
        "instance": ids % divisor,
        "score": np.array([float(scores.get(int(i), np.nan)) for i in ids], np.float32),
        "area": area.astype(np.int64),
    }


def things_from_classes(
    classes: np.ndarray,
    thing_classes: Iterable[int],
    *,
    connectivity: int = 1,
) -> np.ndarray:
    """Instances of chosen classes: each connected region of one class becomes one object.

    Parameters
    ----------
    classes : ndarray of int
        Class id per pixel.
    thing_classes : iterable of int
        Classes to split into objects (>= 1).
    connectivity : int
        1 (faces) to ``classes.ndim`` (corners), as :func:`scipy.ndimage.generate_binary_structure`.

    Returns
    -------
    ndarray of int32
        Object IDs 1..N, unique over the image (by class, then in scan order); 0 elsewhere.

    Examples
    --------
    >>> things_from_classes(np.array([[1, 1, 0, 1, 2, 2]]), [1, 2])
    array([[1, 1, 0, 2, 3, 3]], dtype=int32)
    """
    classes = _int_image(classes, "classes")
    things = _check_things(thing_classes)
    if not 1 <= int(connectivity) <= classes.ndim:
        raise ValueError(f"connectivity must be 1..{classes.ndim}; got {connectivity}")
    structure = ndi.generate_binary_structure(classes.ndim, int(connectivity))
    out = np.zeros(classes.shape, np.int32)
    offset = 0
    for c in things:
        lab, n = ndi.label(classes == c, structure)
        if n:
            out[lab > 0] = lab[lab > 0] + offset
            offset += n
    return out


def panoptic_from_classes(
    classes: np.ndarray,
    thing_classes: Iterable[int],
    *,
    connectivity: int = 1,
    label_divisor: int = LABEL_DIVISOR,
) -> np.ndarray:
    """:func:`encode` of ``classes`` with the :func:`things_from_classes` instances.

    Examples
    --------
    >>> panoptic_from_classes(np.array([[1, 1, 0, 1, 2, 2]]), [1])
    array([[1001, 1001,    0, 1002, 2000, 2000]], dtype=int32)
    """
    instances = things_from_classes(classes, thing_classes, connectivity=connectivity)
    return encode(classes, instances, thing_classes, label_divisor=label_divisor)
