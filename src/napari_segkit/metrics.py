"""Scores of a segmentation against ground truth: instance matching, AP, IoU/Dice, panoptic quality.

Pure numpy/scipy (no napari, no Qt, no torch). Every function takes two label images of the same
shape (2D, 3D, any number of dimensions) holding integers of any integer dtype (or bool).

Conventions
-----------
- Instances: ``0`` is background, every other value is one object (negative values too).
- Two objects *match* when their intersection over union (IoU) is at least ``iou_threshold``.
  Matching is one-to-one and optimal: among all one-to-one assignments it finds the one with the
  most matched pairs, and among those the largest total IoU (as stardist's ``matching``), with
  :func:`scipy.optimize.linear_sum_assignment`. Greedy matching (best IoU first) can find fewer
  pairs when the threshold is 0.5 or lower; above 0.5 a match is unique anyway.
- ``ap = tp / (tp + fp + fn)``: the "average precision" of the cell-segmentation literature
  (stardist's "accuracy", cellpose's ``average_precision``), not the area under a PR curve.
- Empty images: a prediction with no object scores 0 against a truth that has objects; when both
  are empty every score is 1 (nothing to find and nothing found). A ratio whose denominator is
  zero in any other case (precision with no prediction, recall with no truth) is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ErrorMasks",
    "InstanceScores",
    "MatchResult",
    "PanopticScores",
    "SemanticScores",
    "error_masks",
    "instance_scores",
    "iou_matrix",
    "match_instances",
    "panoptic_quality",
    "semantic_scores",
]

#: The IoU thresholds of the COCO / cell-segmentation mean AP: 0.5, 0.55, ..., 0.95.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Columns of :attr:`InstanceScores.table`, in order.
INSTANCE_COLUMNS = (
    "iou_threshold",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "ap",
    "mean_matched_iou",
)


# ---- input checks and the shared overlap count ----------------------------------------------------
def _as_labels(arr: Any, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer labels; got dtype {arr.dtype} "
            "(convert whole-number values with .astype(int))"
        )
    return arr


def _check_pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_labels(pred, "pred")
    truth = _as_labels(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth must have the same shape; got pred {pred.shape} and truth {truth.shape}"
        )
    return pred, truth


def _check_threshold(iou_threshold: float, name: str = "iou_threshold") -> float:
    value = float(iou_threshold)
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1]; got {iou_threshold}")
    return value


def _index_dtype(n: int) -> type:
    """The smallest of int32/int64 that holds object indices 0..n (halves the memory)."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, index, areas)``: the nonzero label values (sorted), each pixel's object index
    (0 = background, ``k`` = ``ids[k - 1]``) and each object's pixel count."""
    flat = labels.ravel()
    size = flat.size
    if size == 0:
        return flat[:0].copy(), np.zeros(0, np.intp), np.zeros(0, np.int64)
    lo, hi = flat.min(), flat.max()
    if lo >= 0 and int(hi) <= max(2 * size, 1 << 16):
        # small non-negative values: count them directly, no sort
        if not np.can_cast(flat.dtype, np.intp):  # uint32/uint64 with small values
            flat = flat.astype(np.intp)
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(len(counts), _index_dtype(len(ids)))
        lut[ids] = np.arange(1, len(ids) + 1)
        return ids.astype(labels.dtype), lut[flat], counts[ids].astype(np.int64)
    # any integers, int64/uint64 extremes included: sort once
    uniq, inv = np.unique(flat, return_inverse=True)
    fg = uniq != 0
    code = np.zeros(len(uniq), _index_dtype(int(fg.sum())))
    code[fg] = np.arange(1, int(fg.sum()) + 1)
    index = code[inv.ravel()]
    areas = np.bincount(index, minlength=int(fg.sum()) + 1)[1:].astype(np.int64)
    return uniq[fg], index, areas


@dataclass
class _Overlap:
    """Foreground pairs that share pixels: indices into ``pred_ids``/``truth_ids`` and IoUs."""

    pred_ids: np.ndarray
    truth_ids: np.ndarray
    pred_area: np.ndarray
    truth_area: np.ndarray
    pi: np.ndarray
    ti: np.ndarray
    inter: np.ndarray
    iou: np.ndarray
    pred_index: np.ndarray = field(repr=False)
    truth_index: np.ndarray = field(repr=False)
    pred: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)


def _overlap(pred: np.ndarray, truth: np.ndarray) -> _Overlap:
    """Count the overlaps once; the scores below can all start from it (checked inputs)."""
    p_ids, p_idx, p_area = _compact(pred)
    t_ids, t_idx, t_area = _compact(truth)
    both = (p_idx > 0) & (t_idx > 0)
    pa, ta = p_idx[both], t_idx[both]
    n_p, n_t = len(p_ids), len(t_ids)
    # one count per (pred, truth) pair: bincount of pred * K + truth, or a sort if K * K is huge
    code = pa.astype(np.int64)
    code -= 1
    code *= n_t
    code += ta
    code -= 1
    if n_p * n_t <= max(4 * code.size, 1 << 20):
        counts = np.bincount(code, minlength=n_p * n_t)
        pairs = np.flatnonzero(counts)
        inter = counts[pairs]
    else:
        pairs, inter = np.unique(code, return_counts=True)
    pi, ti = np.divmod(pairs, n_t) if n_t else (pairs, pairs)
    inter = inter.astype(np.int64)
    union = p_area[pi] + t_area[ti] - inter
    iou = inter / np.maximum(union, 1)
    return _Overlap(p_ids, t_ids, p_area, t_area, pi, ti, inter, iou, p_idx, t_idx, pred, truth)


def iou_matrix(
    pred: np.ndarray, truth: np.ndarray, *, sparse: bool = False
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Intersection over union of every predicted object with every ground-truth object.

    The overlaps are counted in one pass over the pixels (a ``bincount`` of the pair codes
    ``pred_index * n_truth + truth_index``), not one mask comparison per pair.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Label images of the same shape (0 is background).
    sparse : bool
        Return a ``scipy.sparse.csr_array`` holding only the pairs that overlap (use it for
        thousands of objects: the dense matrix has ``n_pred * n_truth`` entries).

    Returns
    -------
    iou : ndarray of float64, shape (n_pred, n_truth), or csr_array
        ``iou[i, j]`` is the IoU of the objects ``pred_ids[i]`` and ``truth_ids[j]``.
    pred_ids, truth_ids : ndarray
        The nonzero label values of ``pred`` and ``truth``, sorted.

    Raises
    ------
    ValueError
        If the shapes differ or the labels are not integers.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 3, 0, 5]])
    >>> iou, pred_ids, truth_ids = iou_matrix(pred, truth)
    >>> pred_ids, truth_ids
    (array([3, 5]), array([1, 2]))
    >>> iou.round(3)
    array([[0.667, 0.   ],
           [0.   , 0.5  ]])
    """
    pred, truth = _check_pair(pred, truth)
    ov = _overlap(pred, truth)
    shape = (len(ov.pred_ids), len(ov.truth_ids))
    if sparse:
        from scipy.sparse import csr_array

        return csr_array((ov.iou, (ov.pi, ov.ti)), shape=shape), ov.pred_ids, ov.truth_ids
    dense = np.zeros(shape)
    dense[ov.pi, ov.ti] = ov.iou
    return dense, ov.pred_ids, ov.truth_ids


# ---- instance matching --------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of predicted to ground-truth objects at one IoU threshold.

    Object ``pred_labels[k]`` matches ``truth_labels[k]`` with IoU ``pair_iou[k]``, sorted by
    truth label. ``mean_matched_iou`` is NaN when nothing matched. See the module notes for
    empty images.
    """

    iou_threshold: float
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    precision: float
    recall: float
    f1: float
    ap: float
    mean_matched_iou: float
    pred_labels: np.ndarray = field(repr=False)
    truth_labels: np.ndarray = field(repr=False)
    pair_iou: np.ndarray = field(repr=False)

    def __getitem__(self, name: str) -> Any:
        """``result["f1"]`` reads a field, as the dict the first release returned."""
        return getattr(self, name)

    @property
    def pairs(self) -> np.ndarray:
        """``(k, 2)`` array of ``(pred label, truth label)`` (object dtype if no integer dtype
        holds both, e.g. uint64 with int64)."""
        common = np.promote_types(self.pred_labels.dtype, self.truth_labels.dtype)
        if not np.issubdtype(common, np.integer):
            common = object
        out = np.empty((len(self.pred_labels), 2), dtype=common)
        out[:, 0], out[:, 1] = self.pred_labels, self.truth_labels
        return out

    def as_dict(self) -> dict:
        """The scalar fields (a table row), without the pairs."""
        return {
            k: getattr(self, k)
            for k in (
                "iou_threshold",
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
        }


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den > 0:
        return float(num / den)
    return 1.0 if both_empty else 0.0


def _assign(ov: _Overlap, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs among the overlaps with IoU >= threshold: (pi, ti, iou)."""
    ok = ov.iou >= threshold
    pi, ti, iou = ov.pi[ok], ov.ti[ok], ov.iou[ok]
    if len(pi) == 0:
        return pi, ti, iou
    if len(np.unique(pi)) == len(pi) and len(np.unique(ti)) == len(ti):
        return pi, ti, iou  # no conflicts (always the case above 0.5)
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    # the candidate pairs form a bipartite graph; solve each connected part on its own
    up, rows = np.unique(pi, return_inverse=True)
    ut, cols = np.unique(ti, return_inverse=True)
    n_r = len(up)
    graph = coo_array((np.ones(len(rows)), (rows, cols + n_r)), shape=(n_r + len(ut),) * 2).tocsr()
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    order = np.argsort(edge_comp, kind="stable")
    starts = np.flatnonzero(np.r_[True, edge_comp[order][1:] != edge_comp[order][:-1]])
    groups = np.split(order, starts[1:])
    single = np.concatenate([g for g in groups if len(g) == 1] or [np.zeros(0, np.intp)])
    out_p, out_t, out_iou = [pi[single]], [ti[single]], [iou[single]]
    for e in (g for g in groups if len(g) > 1):
        r_ids, r = np.unique(rows[e], return_inverse=True)
        c_ids, k = np.unique(cols[e], return_inverse=True)
        n = min(len(r_ids), len(c_ids))
        # weight 1 per candidate pair plus a tie-break on IoU that sums to < 1: the most pairs
        # first, then the largest total IoU
        weight = np.zeros((len(r_ids), len(c_ids)))
        weight[r, k] = 1.0 + iou[e] / (2.0 * n)
        a, b = linear_sum_assignment(weight, maximize=True)
        keep = weight[a, b] > 0
        lookup = np.full(weight.shape, -1)
        lookup[r, k] = e
        chosen = lookup[a[keep], b[keep]]
        out_p.append(pi[chosen]), out_t.append(ti[chosen]), out_iou.append(iou[chosen])
    return np.concatenate(out_p), np.concatenate(out_t), np.concatenate(out_iou)


def _match(ov: _Overlap, threshold: float) -> MatchResult:
    pi, ti, iou = _assign(ov, threshold)
    order = np.argsort(ti, kind="stable")
    pi, ti, iou = pi[order], ti[order], iou[order]
    n_pred, n_true = len(ov.pred_ids), len(ov.truth_ids)
    tp = len(pi)
    fp, fn = n_pred - tp, n_true - tp
    empty = n_pred == 0 and n_true == 0
    return MatchResult(
        iou_threshold=threshold,
        tp=tp,
        fp=fp,
        fn=fn,
        n_pred=n_pred,
        n_true=n_true,
        precision=_ratio(tp, tp + fp, empty),
        recall=_ratio(tp, tp + fn, empty),
        f1=_ratio(2 * tp, 2 * tp + fp + fn, empty),
        ap=_ratio(tp, tp + fp + fn, empty),
        mean_matched_iou=float(iou.mean()) if tp else float("nan"),
        pred_labels=ov.pred_ids[pi],
        truth_labels=ov.truth_ids[ti],
        pair_iou=iou,
    )


def match_instances(
    pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.5
) -> MatchResult:
    """Match predicted objects to ground-truth objects one-to-one, optimally, by IoU.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Instance label images of the same shape (0 is background, every other value one object).
    iou_threshold : float
        A pair matches when its IoU is at least this, in (0, 1].

    Returns
    -------
    MatchResult
        ``tp``, ``fp`` (unmatched predictions), ``fn`` (unmatched truths), ``precision``,
        ``recall``, ``f1``, ``ap = tp / (tp + fp + fn)``, ``mean_matched_iou`` (NaN if none),
        ``n_pred``, ``n_true`` and the matched ``pred_labels``, ``truth_labels`` (also as
        ``pairs``) with their ``pair_iou``.

    Raises
    ------
    ValueError
        If the shapes differ, the labels are not integers or the threshold is outside (0, 1].

    Notes
    -----
    The assignment maximizes the number of pairs at or above the threshold, then their total
    IoU, with :func:`scipy.optimize.linear_sum_assignment` on each connected group of competing
    pairs. When both images are empty, precision, recall, F1 and AP are 1.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 0, 4]])
    >>> pred = np.array([[3, 3, 0, 0, 5, 6, 0]])
    >>> r = match_instances(pred, truth)
    >>> r.tp, r.fp, r.fn
    (2, 1, 1)
    >>> r.pairs.tolist(), r.pair_iou.tolist()
    ([[3, 1], [5, 2]], [1.0, 0.5])
    >>> round(r.ap, 3), round(r.f1, 3)
    (0.5, 0.667)
    """
    pred, truth = _check_pair(pred, truth)
    threshold = _check_threshold(iou_threshold)
    return _match(_overlap(pred, truth), threshold)


@dataclass(frozen=True)
class InstanceScores:
    """Matching scores at several IoU thresholds: one :class:`MatchResult` per threshold."""

    results: tuple[MatchResult, ...]
    #: mean of ``ap`` over the thresholds (the cell-segmentation "mAP")
    mean_ap: float

    @property
    def thresholds(self) -> np.ndarray:
        return np.array([r.iou_threshold for r in self.results])

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Columns :data:`INSTANCE_COLUMNS`, one row per threshold (ready for pandas)."""
        return {c: np.array([getattr(r, c) for r in self.results]) for c in INSTANCE_COLUMNS}


def instance_scores(
    pred: np.ndarray, truth: np.ndarray, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> InstanceScores:
    """Precision, recall, F1 and AP at each IoU threshold, and their mean AP.

    The overlaps are counted once and matched at every threshold.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Instance label images of the same shape.
    thresholds : sequence of float
        IoU thresholds in (0, 1]; by default 0.5, 0.55, ..., 0.95.

    Returns
    -------
    InstanceScores
        ``results`` (one :class:`MatchResult` per threshold), ``table`` (columns
        ``iou_threshold, tp, fp, fn, precision, recall, f1, ap, mean_matched_iou``) and
        ``mean_ap``.

    Examples
    --------
    >>> truth = np.zeros((4, 8), int); truth[:, :4] = 1; truth[:, 4:] = 2
    >>> pred = truth.copy(); pred[:, 3] = 2  # object 2 grows by a column: IoU 16 / 20 = 0.8
    >>> s = instance_scores(pred, truth, thresholds=(0.5, 0.75, 0.8, 0.9))
    >>> s.table["tp"].tolist()
    [2, 2, 1, 0]
    >>> s.table["ap"].round(3).tolist(), round(s.mean_ap, 3)
    ([1.0, 1.0, 0.333, 0.0], 0.583)
    """
    pred, truth = _check_pair(pred, truth)
    thresholds = [_check_threshold(t, "thresholds") for t in np.atleast_1d(thresholds)]
    if not thresholds:
        raise ValueError("thresholds must hold at least one value; got none")
    return _instance_scores(_overlap(pred, truth), thresholds)


def _instance_scores(ov: _Overlap, thresholds: Sequence[float]) -> InstanceScores:
    results = tuple(_match(ov, t) for t in thresholds)
    return InstanceScores(results=results, mean_ap=float(np.mean([r.ap for r in results])))


# ---- semantic classes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SemanticScores:
    """Per-class IoU and Dice of a class map. NaN for a class absent from both images."""

    classes: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    #: ``confusion[t, p]``: pixels of true class ``t`` predicted as ``p`` (ignored pixels left out)
    confusion: np.ndarray = field(repr=False)
    #: mean IoU over the classes that are scored (not NaN), background (class 0) included
    mean_iou: float
    #: mean IoU over the scored classes other than 0
    mean_iou_foreground: float
    mean_dice: float
    pixel_accuracy: float

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Columns ``class, iou, dice, true_pixels, pred_pixels``, one row per class."""
        return {
            "class": self.classes,
            "iou": self.iou,
            "dice": self.dice,
            "true_pixels": self.confusion.sum(1),
            "pred_pixels": self.confusion.sum(0),
        }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def semantic_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    n_classes: int | None = None,
    ignore_index: int | None = None,
) -> SemanticScores:
    """Per-class IoU and Dice of a semantic class map, from one confusion matrix.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Class maps of the same shape, classes ``0 .. n_classes - 1`` (0 is usually background
        and is scored like any class; see ``mean_iou_foreground``).
    n_classes : int, optional
        Number of classes; by default one more than the largest class in either image.
    ignore_index : int, optional
        Pixels whose *truth* is this value are left out (e.g. 255 for "unlabeled"). If it is a
        class number below ``n_classes``, that class is not scored (NaN).

    Returns
    -------
    SemanticScores
        ``classes``, ``iou`` and ``dice`` per class, ``confusion``, ``mean_iou``,
        ``mean_iou_foreground``, ``mean_dice``, ``pixel_accuracy`` and a ``table``.
        A class absent from both images has IoU and Dice NaN and is left out of the means.

    Raises
    ------
    ValueError
        If the shapes differ, the values are not integers, a class is negative or not below
        ``n_classes``.

    Examples
    --------
    >>> truth = np.array([[0, 0, 1, 1, 1, 1]])
    >>> pred = np.array([[0, 1, 1, 1, 1, 3]])
    >>> s = semantic_scores(pred, truth)
    >>> s.iou.round(3).tolist()
    [0.5, 0.6, nan, 0.0]
    >>> s.dice.round(3).tolist()
    [0.667, 0.75, nan, 0.0]
    >>> round(s.mean_iou, 3), round(s.mean_iou_foreground, 3)
    (0.367, 0.3)
    """
    pred, truth = _check_pair(pred, truth)
    p, t = pred.ravel(), truth.ravel()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, arr in (("pred", p), ("truth", t)):
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} has the negative class {arr.min()}; classes are 0, 1, 2...")
    top = int(max(p.max(initial=0), t.max(initial=0)))
    if n_classes is None:
        n_classes = top + 1
    elif int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    elif top >= int(n_classes):
        name = "pred" if p.size and p.max() == top else "truth"
        raise ValueError(f"{name} has class {top} but n_classes is {n_classes}")
    n = int(n_classes)
    confusion = np.bincount(t.astype(np.int64) * n + p.astype(np.int64), minlength=n * n).reshape(
        n, n
    )
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
    if ignore_index is not None and 0 <= ignore_index < n:
        iou[ignore_index] = dice[ignore_index] = np.nan
    total = confusion.sum()
    return SemanticScores(
        classes=np.arange(n),
        iou=iou,
        dice=dice,
        confusion=confusion,
        mean_iou=_nanmean(iou),
        mean_iou_foreground=_nanmean(iou[1:]),
        mean_dice=_nanmean(dice),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
    )


# ---- panoptic quality ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PanopticScores:
    """Panoptic quality ``PQ = SQ x RQ`` (Kirillov et al. 2019); per class when classes are given.

    Without classes there is one class-agnostic value. With classes, ``pq``, ``sq`` and ``rq``
    are the means over the classes present in either image (so ``pq`` is then not exactly
    ``sq * rq``), and ``tp``, ``fp``, ``fn`` the sums.
    """

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    #: per class: columns ``class, pq, sq, rq, tp, fp, fn`` (None without classes)
    per_class: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def table(self) -> dict[str, np.ndarray]:
        """Per-class rows, or one row ``class = "all"`` without classes."""
        if self.per_class is not None:
            return self.per_class
        return {
            "class": np.array(["all"], dtype=object),
            **{k: np.array([getattr(self, k)]) for k in ("pq", "sq", "rq", "tp", "fp", "fn")},
        }


def _pq_terms(iou_sum: float, tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    sq = iou_sum / tp if tp else 0.0
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return sq * rq, sq, rq


def _instance_classes(spec: Any, labels: np.ndarray, ids: np.ndarray, index, name: str):
    """The class of each object ``ids[k]``, from a class map, a mapping or a lookup array."""
    if isinstance(spec, Mapping):
        missing = [i for i in ids.tolist() if i not in spec]
        if missing:
            raise ValueError(f"{name} gives no class for label(s) {missing[:10]}")
        return np.array([spec[i] for i in ids.tolist()])
    arr = np.asarray(spec)
    if arr.shape == labels.shape:  # a class map: each object takes its most common class
        if len(ids) == 0:
            return arr.ravel()[:0]
        cls_values, cls_index = np.unique(arr.ravel(), return_inverse=True)
        fg = index > 0
        n_c = len(cls_values)
        code = (index[fg] - 1).astype(np.int64) * n_c + cls_index.ravel()[fg]
        pairs, counts = np.unique(code, return_counts=True)
        obj, cls = np.divmod(pairs, n_c)
        order = np.lexsort((-counts, obj))
        first = np.ones(len(order), bool)
        first[1:] = obj[order][1:] != obj[order][:-1]
        out = np.empty(len(ids), dtype=cls_values.dtype)
        out[obj[order][first]] = cls_values[cls[order][first]]
        return out
    if arr.ndim == 1:  # a lookup table: the class of label i is arr[i]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(arr)):
            raise ValueError(
                f"{name} has {len(arr)} entries but the labels reach {ids.max()} "
                "(a lookup table needs one entry per label value, 0 included)"
            )
        return arr[ids.astype(np.intp)]
    raise ValueError(
        f"{name} must be a class map of shape {labels.shape}, a mapping label -> class or a "
        f"1D lookup table; got an array of shape {arr.shape}"
    )


def panoptic_quality(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    pred_classes: Any = None,
    truth_classes: Any = None,
) -> PanopticScores:
    """Panoptic quality PQ = SQ x RQ of instance labels, optionally per class.

    A predicted and a true object match when their IoU is above 0.5 (strictly), which makes
    every match unique; with classes they must also have the same class. Then
    ``SQ`` = mean IoU of the matches, ``RQ = tp / (tp + fp / 2 + fn / 2)``, ``PQ = SQ * RQ``.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Instance label images of the same shape (0 is background).
    pred_classes, truth_classes : optional
        The class of each object, given for both or neither: a class map of the image's shape
        (each object takes the class most of its pixels have), a mapping ``{label: class}`` (e.g.
        from a layer's features table) or a 1D array whose entry ``i`` is the class of label
        ``i``. Classes may be numbers or strings.

    Returns
    -------
    PanopticScores
        ``pq``, ``sq``, ``rq``, ``tp``, ``fp``, ``fn`` and, with classes, ``per_class``. With
        classes the overall values are means over the classes present in either image. When
        both images are empty PQ = SQ = RQ = 1; when nothing matches SQ = 0.

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3]])
    >>> pred = np.array([[1, 1, 1, 0, 0, 2, 0, 0, 0]])
    >>> s = panoptic_quality(pred, truth)
    >>> s.tp, s.fp, s.fn, round(s.sq, 3), round(s.rq, 3), round(s.pq, 3)
    (1, 1, 2, 0.75, 0.4, 0.3)
    >>> s = panoptic_quality(pred, truth, pred_classes={1: "a", 2: "b"},
    ...                      truth_classes={1: "a", 2: "b", 3: "b"})
    >>> s.per_class["class"].tolist(), s.per_class["pq"].round(3).tolist()
    (['a', 'b'], [0.75, 0.0])
    """
    pred, truth = _check_pair(pred, truth)
    if (pred_classes is None) != (truth_classes is None):
        raise ValueError("give both pred_classes and truth_classes, or neither")
    return _panoptic(_overlap(pred, truth), pred_classes, truth_classes)


def _panoptic(ov: _Overlap, pred_classes: Any, truth_classes: Any) -> PanopticScores:
    ok = ov.iou > 0.5
    pi, ti, iou = ov.pi[ok], ov.ti[ok], ov.iou[ok]
    n_pred, n_true = len(ov.pred_ids), len(ov.truth_ids)
    if pred_classes is None:
        tp = len(pi)
        pq, sq, rq = _pq_terms(float(iou.sum()), tp, n_pred - tp, n_true - tp)
        return PanopticScores(pq=pq, sq=sq, rq=rq, tp=tp, fp=n_pred - tp, fn=n_true - tp)

    pc = _instance_classes(pred_classes, ov.pred, ov.pred_ids, ov.pred_index, "pred_classes")
    tc = _instance_classes(truth_classes, ov.truth, ov.truth_ids, ov.truth_index, "truth_classes")
    same = pc[pi] == tc[ti]
    pi, ti, iou = pi[same], ti[same], iou[same]
    classes = np.unique(np.concatenate([pc, tc]))
    rows = {k: [] for k in ("pq", "sq", "rq", "tp", "fp", "fn")}
    for c in classes:
        m = pc[pi] == c
        tp = int(m.sum())
        fp = int((pc == c).sum()) - tp
        fn = int((tc == c).sum()) - tp
        pq, sq, rq = _pq_terms(float(iou[m].sum()), tp, fp, fn)
        for k, v in zip(rows, (pq, sq, rq, tp, fp, fn), strict=True):
            rows[k].append(v)
    per_class = {"class": classes, **{k: np.array(v) for k, v in rows.items()}}
    if len(classes):
        pq, sq, rq = (float(np.mean(rows[k])) for k in ("pq", "sq", "rq"))
    else:
        pq = sq = rq = 1.0
    return PanopticScores(
        pq=pq,
        sq=sq,
        rq=rq,
        tp=int(sum(rows["tp"])),
        fp=int(sum(rows["fp"])),
        fn=int(sum(rows["fn"])),
        per_class=per_class,
    )


# ---- where the errors are -----------------------------------------------------------------------
#: Values of :attr:`ErrorMasks.labels`.
FALSE_POSITIVE, FALSE_NEGATIVE = 1, 2


@dataclass(frozen=True)
class ErrorMasks:
    """The unmatched objects of a matching, as images and as centroids."""

    #: uint8 image: 1 = a false-positive object (predicted, unmatched), 2 = a false-negative
    #: object (true, missed); where the two overlap the false negative is shown
    labels: np.ndarray = field(repr=False)
    #: the pixels of the false positives (of ``pred``) and of the false negatives (of ``truth``)
    fp_mask: np.ndarray = field(repr=False)
    fn_mask: np.ndarray = field(repr=False)
    fp_ids: np.ndarray
    fn_ids: np.ndarray
    #: centroid (pixel coordinates, one column per axis) of each object in ``fp_ids``/``fn_ids``
    fp_centroids: np.ndarray
    fn_centroids: np.ndarray
    match: MatchResult = field(repr=False)
    _pred: np.ndarray = field(repr=False, compare=False)
    _truth: np.ndarray = field(repr=False, compare=False)

    @cached_property
    def false_positives(self) -> np.ndarray:
        """``pred`` with every matched object set to 0 (computed on first use)."""
        return np.where(self.fp_mask, self._pred, 0).astype(self._pred.dtype, copy=False)

    @cached_property
    def false_negatives(self) -> np.ndarray:
        """``truth`` with every matched object set to 0 (computed on first use)."""
        return np.where(self.fn_mask, self._truth, 0).astype(self._truth.dtype, copy=False)


def _centroids(index: np.ndarray, mask: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """Mean pixel coordinate of the ``objects`` (1-based indices into the compact ``index``
    image), from the pixels in ``mask`` (those of the objects)."""
    out = np.zeros((len(objects), mask.ndim))
    if len(objects) == 0:
        return out
    coords = np.nonzero(mask)
    which = index[np.flatnonzero(mask)]
    n = int(objects.max()) + 1
    areas = np.bincount(which, minlength=n)[objects]
    for axis, c in enumerate(coords):
        out[:, axis] = np.bincount(which, weights=c, minlength=n)[objects] / areas
    return out


def error_masks(pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.5) -> ErrorMasks:
    """The false positives and false negatives of :func:`match_instances`, to look at.

    Parameters
    ----------
    pred, truth : ndarray of int or bool
        Instance label images of the same shape.
    iou_threshold : float
        As in :func:`match_instances`.

    Returns
    -------
    ErrorMasks
        ``labels`` (uint8: 0 matched or background, 1 false positive, 2 false negative; a false
        negative is drawn over a false positive where they overlap), ``fp_mask`` and ``fn_mask``
        (bool), ``false_positives`` and ``false_negatives`` (the unmatched objects with their own
        labels, computed on first use), ``fp_ids``,
        ``fn_ids``, their centroids ``fp_centroids``, ``fn_centroids`` (one row per object,
        pixel coordinates) and the ``match`` itself.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 0, 0]])
    >>> pred = np.array([[4, 4, 0, 0, 0, 0, 7]])
    >>> e = error_masks(pred, truth)
    >>> e.labels
    array([[0, 0, 0, 2, 2, 0, 1]], dtype=uint8)
    >>> e.fp_ids, e.fn_ids, e.fn_centroids
    (array([7]), array([2]), array([[0. , 3.5]]))
    """
    pred, truth = _check_pair(pred, truth)
    threshold = _check_threshold(iou_threshold)
    return _error_masks(_overlap(pred, truth), threshold)


def _error_masks(ov: _Overlap, threshold: float) -> ErrorMasks:
    pred, truth = ov.pred, ov.truth
    match = _match(ov, threshold)
    p_matched = np.zeros(len(ov.pred_ids) + 1, bool)
    t_matched = np.zeros(len(ov.truth_ids) + 1, bool)
    p_matched[0] = t_matched[0] = True  # background
    p_matched[np.searchsorted(ov.pred_ids, match.pred_labels) + 1] = True
    t_matched[np.searchsorted(ov.truth_ids, match.truth_labels) + 1] = True
    fp_obj = np.flatnonzero(~p_matched)
    fn_obj = np.flatnonzero(~t_matched)
    fp_px = (~p_matched[ov.pred_index]).reshape(pred.shape)
    fn_px = (~t_matched[ov.truth_index]).reshape(truth.shape)
    labels = np.zeros(pred.shape, np.uint8)
    labels[fp_px] = FALSE_POSITIVE
    labels[fn_px] = FALSE_NEGATIVE
    return ErrorMasks(
        labels=labels,
        fp_mask=fp_px,
        fn_mask=fn_px,
        fp_ids=ov.pred_ids[fp_obj - 1],
        fn_ids=ov.truth_ids[fn_obj - 1],
        fp_centroids=_centroids(ov.pred_index, fp_px, fp_obj),
        fn_centroids=_centroids(ov.truth_index, fn_px, fn_obj),
        match=match,
        _pred=pred,
        _truth=truth,
    )
