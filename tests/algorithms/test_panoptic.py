"""Panoptic encoding: classes and instances in one label image."""

import numpy as np
import pytest

from napari_segkit.algorithms import panoptic as pn


def _scene(seed=0, shape=(40, 50)):
    """Random classes 0..3 (1 = stuff, 2 and 3 = things) and instances with global IDs."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, size=shape)
    classes = np.kron(classes[:10, :10], np.ones((4, 5), int))[: shape[0], : shape[1]]
    instances = pn.things_from_classes(classes, [2, 3]) * 7 + 3  # any numbering
    instances[~np.isin(classes, [2, 3])] = 0
    return classes, instances


def test_encode_decode_round_trip():
    classes, instances = _scene()
    p = pn.encode(classes, instances, [2, 3])
    assert p.dtype == np.int32
    c2, i2 = pn.decode(p)
    np.testing.assert_array_equal(c2, classes)
    # the same objects, renumbered 1..n within each class
    for c in (2, 3):
        m = classes == c
        pairs = set(zip(instances[m].tolist(), i2[m].tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert sorted({b for _, b in pairs}) == list(range(1, len(pairs) + 1))
    assert (i2[classes == 1] == 0).all() and (p[classes == 0] == 0).all()
    assert (p[classes == 1] == 1000).all()
    # and encode(decode(p)) is p again
    np.testing.assert_array_equal(pn.encode(c2, i2, [2, 3]), p)


def test_divisor_and_dtype():
    classes = np.array([[3, 3, 0]])
    inst = np.array([[5, 9, 0]])
    np.testing.assert_array_equal(pn.encode(classes, inst, [3], label_divisor=10), [[31, 32, 0]])
    assert pn.decode(np.array([[31, 32]]), 10)[1].tolist() == [[1, 2]]
    big = pn.encode(np.array([[3_000_000]]), np.array([[1]]), [3_000_000])
    assert big.dtype == np.int64 and big[0, 0] == 3_000_000_001
    many = np.arange(1, 13).reshape(3, 4)
    with pytest.raises(ValueError, match="label_divisor=10"):
        pn.encode(np.ones_like(many), many, [1], label_divisor=10)


def test_things_from_classes_connectivity_and_3d():
    classes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 2]])
    assert pn.things_from_classes(classes, [1]).max() == 2  # diagonal: two objects
    assert pn.things_from_classes(classes, [1], connectivity=2).max() == 1
    vol = np.zeros((3, 4, 4), int)
    vol[0, :2, :2] = 1
    vol[1, :2, :2] = 1  # one object across planes
    vol[2, 3, 3] = 1
    lab = pn.things_from_classes(vol, [1])
    assert lab.max() == 2 and len(np.unique(lab[:2][vol[:2] == 1])) == 1


def test_table():
    classes = np.array([[0, 1, 2, 2, 2]])
    inst = np.array([[0, 0, 4, 4, 8]])
    p = pn.encode(classes, inst, [2])
    t = pn.table(p, ["bg", "tissue", "cell"], {2001: 0.75})
    assert t["label"].tolist() == [1000, 2001, 2002]
    assert t["class_name"].tolist() == ["tissue", "cell", "cell"]
    assert t["instance"].tolist() == [0, 1, 2]
    assert t["area"].tolist() == [1, 2, 1]
    assert t["score"][1] == pytest.approx(0.75) and np.isnan(t["score"][0])
    with pytest.raises(ValueError, match="class_names"):
        pn.table(p, ["bg", "tissue"])


def test_panoptic_from_classes():
    classes = np.array([[2, 2, 0, 2, 1]])
    p = pn.panoptic_from_classes(classes, [2])
    assert p.tolist() == [[2001, 2001, 0, 2002, 1000]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pn.encode(np.zeros((2, 2), int), np.zeros((2, 3), int), [1]), "shape"),
        (lambda: pn.encode(-np.ones((2, 2), int), np.zeros((2, 2), int), [1]), "negative"),
        (lambda: pn.encode(np.zeros((2, 2)), np.zeros((2, 2), int), [1]), "integer"),
        (lambda: pn.encode(np.zeros((2, 2), int), np.zeros((2, 2), int), [0]), "thing_classes"),
        (lambda: pn.decode(np.zeros((2, 2), int), 1), "label_divisor"),
        (lambda: pn.things_from_classes(np.zeros((2, 2), int), [1], connectivity=3), "connect"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
