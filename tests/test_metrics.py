"""Scores against ground truth: hand-computed cases, brute-force references, edge cases."""

import doctest
import itertools

import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from napari_segkit import metrics
from napari_segkit.metrics import (
    DEFAULT_THRESHOLDS,
    error_masks,
    instance_scores,
    iou_matrix,
    match_instances,
    panoptic_quality,
    semantic_scores,
)


def test_docstring_examples_run():
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


# ---- hand-computed cases --------------------------------------------------------------------------
def test_match_instances_exact_counts():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1
    truth[6:10, 6:10] = 2
    truth[0:2, 8:10] = 3
    pred = np.zeros_like(truth)
    pred[0:4, 0:4] = 7  # perfect
    pred[6:10, 6:9] = 4  # IoU 12 / 16 = 0.75
    pred[5, 0:3] = 9  # false positive
    r = match_instances(pred, truth)
    assert (r.tp, r.fp, r.fn, r.n_pred, r.n_true) == (2, 1, 1, 3, 3)
    assert r.pairs.tolist() == [[7, 1], [4, 2]]
    np.testing.assert_allclose(r.pair_iou, [1.0, 0.75])
    assert r.mean_matched_iou == pytest.approx(0.875)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(4 / 6)
    assert r.ap == pytest.approx(2 / 4)
    assert match_instances(pred, truth, iou_threshold=0.8).tp == 1
    assert r.as_dict()["ap"] == r.ap and "pairs" not in r.as_dict()


def test_an_iou_of_exactly_the_threshold_matches():
    # the example of the old algorithms.instances.match_instances: its doctest claimed (1, 1, 1)
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[3, 3, 0, 0, 5]])  # 5 vs 2: 1 shared pixel of 2 -> IoU 0.5
    r = match_instances(pred, truth)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert match_instances(pred, truth, iou_threshold=0.51).tp == 1


def test_iou_matrix_hand_values_dense_and_sparse():
    truth = np.array([[1, 1, 1, 0, 2, 2], [1, 0, 0, 0, 2, 2]])
    pred = np.array([[5, 5, 0, 0, 0, 6], [5, 5, 6, 6, 6, 6]])
    iou, pred_ids, truth_ids = iou_matrix(pred, truth)
    assert pred_ids.tolist() == [5, 6] and truth_ids.tolist() == [1, 2]
    # 5 = {(0,0),(0,1),(1,0),(1,1)}, 1 = {(0,0),(0,1),(0,2),(1,0)}: 3 shared of 5
    # 6 = 5 pixels, 2 = 4 pixels, 3 shared of 6; 6 and 1 share nothing
    np.testing.assert_allclose(iou, [[3 / 5, 0], [0, 3 / 6]])
    sp, _, _ = iou_matrix(pred, truth, sparse=True)
    assert sp.shape == (2, 2) and sp.nnz == 2
    np.testing.assert_allclose(sp.toarray(), iou)


def test_optimal_matching_finds_more_pairs_than_greedy():
    # 1D row: truth 1 = [0, 10), truth 2 = [10, 14); pred 1 = [3, 14), pred 2 = [0, 3)
    truth = np.zeros((1, 14), int)
    truth[0, :10], truth[0, 10:] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, 3:], pred[0, :3] = 1, 2
    iou, _, _ = iou_matrix(pred, truth)
    # p1-t1 7/14 = 0.5, p1-t2 4/11, p2-t1 3/10, p2-t2 0
    np.testing.assert_allclose(iou, [[0.5, 4 / 11], [0.3, 0.0]])
    # greedy (best IoU first) takes p1-t1 and then has nothing left above 0.25: 1 pair
    assert _greedy_tp(iou, 0.25) == 1
    r = match_instances(pred, truth, iou_threshold=0.25)
    assert r.tp == 2 and sorted(r.pairs.tolist()) == [[1, 2], [2, 1]]
    assert r.mean_matched_iou == pytest.approx((4 / 11 + 0.3) / 2)
    # above 0.5 there are no conflicts
    assert match_instances(pred, truth, iou_threshold=0.5).tp == 1


def test_matching_maximizes_pairs_not_summed_iou():
    # assignment by the largest IoU sum, thresholded afterwards (the old code), finds no pair here
    pred = np.array([[3, 3, 3, 3, 2, 2, 2, 2, 0, 0, 0, 0]])
    truth = np.array([[0, 1, 3, 3, 3, 0, 0, 0, 2, 2, 2, 0]])
    iou, _, _ = iou_matrix(pred, truth)
    np.testing.assert_allclose(iou, [[0, 0, 1 / 6], [0.25, 0, 0.4]])
    rows, cols = linear_sum_assignment(-iou)
    assert (iou[rows, cols] >= 0.3).sum() == 0
    r = match_instances(pred, truth, iou_threshold=0.3)
    assert r.tp == 1 and r.pairs.tolist() == [[3, 3]] and r.pair_iou[0] == pytest.approx(0.4)


def test_instance_scores_table_and_mean_ap():
    truth = np.zeros((6, 6), np.uint16)
    truth[:3, :3], truth[3:, 3:], truth[:2, 4:] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[:3, :3] = 1  # IoU 1
    pred[3:, 3:5] = 2  # 6 of 9 -> IoU 2/3
    s = instance_scores(pred, truth)
    assert s.thresholds.tolist() == list(DEFAULT_THRESHOLDS)
    table = s.table
    assert list(table) == list(metrics.INSTANCE_COLUMNS)
    # 2 of 3 found while 2/3 >= t (0.5..0.65), then 1 of 3
    expected_tp = [2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    assert table["tp"].tolist() == expected_tp
    assert table["fn"].tolist() == [3 - t for t in expected_tp]
    assert table["fp"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    ap = np.array([2 / 3] * 4 + [1 / 4] * 6)  # tp / (tp + fp + fn): 2 / 3, then 1 / 4
    np.testing.assert_allclose(table["ap"], ap)
    assert s.mean_ap == pytest.approx(ap.mean())
    np.testing.assert_allclose(table["mean_matched_iou"][:4], (1 + 2 / 3) / 2)
    np.testing.assert_allclose(table["mean_matched_iou"][4:], 1.0)


def test_semantic_scores_hand_values_and_ignore_index():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    s = semantic_scores(pred, truth, ignore_index=255, n_classes=3)
    # class 0: tp 1 fp 1 fn 1; class 1: tp 2 fp 1 fn 0; class 2: tp 1 fp 0 fn 1
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(s.dice, [2 / 4, 4 / 5, 2 / 3])
    assert s.mean_iou == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))
    assert s.mean_iou_foreground == pytest.approx(np.mean([2 / 3, 1 / 2]))
    assert s.pixel_accuracy == pytest.approx(4 / 6)
    assert s.confusion.sum() == 6
    assert s.table["true_pixels"].tolist() == [2, 2, 2]
    # a class in neither image is NaN and left out of the means
    s = semantic_scores(pred, truth, ignore_index=255, n_classes=5)
    assert np.isnan(s.iou[3:]).all() and np.isnan(s.dice[3:]).all()
    assert s.mean_iou == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))
    # ignoring a scored class: its pixels leave, it is not scored
    s = semantic_scores(np.array([[0, 1, 1]]), np.array([[0, 0, 1]]), ignore_index=0)
    assert np.isnan(s.iou[0]) and s.iou[1] == 1.0


def test_panoptic_quality_hand_values_with_class_maps():
    truth = np.zeros((4, 8), int)
    truth[:, :4], truth[:, 4:] = 1, 2  # two 16-pixel objects
    truth_cls = np.where(truth == 1, 1, 2)
    pred = np.zeros_like(truth)
    pred[:, :3] = 7  # IoU 12 / 16 = 0.75 with truth 1, same class
    pred[:, 4:] = 8  # IoU 1 with truth 2, but predicted as class 1
    pred_cls = np.ones_like(pred)
    agnostic = panoptic_quality(pred, truth)
    assert (agnostic.tp, agnostic.fp, agnostic.fn) == (2, 0, 0)
    assert agnostic.sq == pytest.approx(0.875) and agnostic.rq == 1.0
    assert agnostic.pq == pytest.approx(agnostic.sq * agnostic.rq)
    assert agnostic.table["class"].tolist() == ["all"]
    s = panoptic_quality(pred, truth, pred_classes=pred_cls, truth_classes=truth_cls)
    assert s.per_class["class"].tolist() == [1, 2]
    # class 1: 7-1 matched, 8 is a false positive; class 2: 2 missed
    assert s.per_class["tp"].tolist() == [1, 0]
    assert s.per_class["fp"].tolist() == [1, 0]
    assert s.per_class["fn"].tolist() == [0, 1]
    np.testing.assert_allclose(s.per_class["sq"], [0.75, 0.0])
    np.testing.assert_allclose(s.per_class["rq"], [1 / 1.5, 0.0])
    np.testing.assert_allclose(s.per_class["pq"], [0.5, 0.0])
    assert s.pq == pytest.approx(0.25) and (s.tp, s.fp, s.fn) == (1, 1, 1)
    # a lookup table and a mapping give the same
    by_table = panoptic_quality(
        pred, truth, pred_classes=np.array([0] * 9), truth_classes={1: 0, 2: 0}
    )
    assert by_table.pq == pytest.approx(agnostic.pq)


def test_error_masks_hand_values_and_overlap():
    truth = np.zeros((5, 6), int)
    truth[0:2, 0:2] = 1  # found
    truth[3:5, 0:3] = 2  # missed
    pred = np.zeros_like(truth)
    pred[0:2, 0:2] = 10
    pred[4, 2:6] = 11  # a false positive overlapping missed truth 2 at (4, 2)
    e = error_masks(pred, truth)
    assert e.fp_ids.tolist() == [11] and e.fn_ids.tolist() == [2]
    assert e.labels.dtype == np.uint8
    expected = np.zeros((5, 6), np.uint8)
    expected[4, 3:6] = 1
    expected[3:5, 0:3] = 2  # the false negative is drawn over the false positive
    np.testing.assert_array_equal(e.labels, expected)
    np.testing.assert_array_equal(e.false_positives, np.where(pred == 11, 11, 0))
    np.testing.assert_array_equal(e.false_negatives, np.where(truth == 2, 2, 0))
    np.testing.assert_array_equal(e.fp_mask, pred == 11)
    np.testing.assert_array_equal(e.fn_mask, truth == 2)
    np.testing.assert_allclose(e.fp_centroids, [[4, 3.5]])
    np.testing.assert_allclose(e.fn_centroids, [[3.5, 1]])
    assert e.match.tp == 1


# ---- edge cases ---------------------------------------------------------------------------------
def test_both_empty_scores_one():
    z = np.zeros((4, 5), np.int32)
    r = match_instances(z, z)
    assert (r.tp, r.fp, r.fn) == (0, 0, 0)
    assert (r.precision, r.recall, r.f1, r.ap) == (1.0, 1.0, 1.0, 1.0)
    assert np.isnan(r.mean_matched_iou) and r.pairs.shape == (0, 2)
    assert instance_scores(z, z).mean_ap == 1.0
    pq = panoptic_quality(z, z)
    assert (pq.pq, pq.sq, pq.rq) == (1.0, 1.0, 1.0)
    e = error_masks(z, z)
    assert e.fp_centroids.shape == (0, 2) and not e.labels.any()
    iou, p_ids, t_ids = iou_matrix(z, z)
    assert iou.shape == (0, 0) and p_ids.size == 0 and t_ids.size == 0


def test_empty_prediction_and_empty_truth_score_zero():
    truth = np.zeros((4, 4), int)
    truth[0, 0], truth[2:, 2:] = 1, 2
    empty = np.zeros_like(truth)
    r = match_instances(empty, truth)
    assert (r.tp, r.fp, r.fn) == (0, 0, 2)
    assert (r.precision, r.recall, r.f1, r.ap) == (0.0, 0.0, 0.0, 0.0)
    r = match_instances(truth, empty)
    assert (r.tp, r.fp, r.fn) == (0, 2, 0)
    assert (r.precision, r.recall, r.f1, r.ap) == (0.0, 0.0, 0.0, 0.0)
    assert instance_scores(empty, truth).mean_ap == 0.0
    pq = panoptic_quality(empty, truth)
    assert (pq.pq, pq.sq, pq.rq, pq.fn) == (0.0, 0.0, 0.0, 2)
    e = error_masks(empty, truth)
    np.testing.assert_array_equal(e.labels, np.where(truth > 0, 2, 0))
    np.testing.assert_allclose(e.fn_centroids, [[0, 0], [2.5, 2.5]])


def test_perfect_prediction_with_other_ids_scores_one_at_every_threshold():
    rng = np.random.default_rng(1)
    truth = _random_labels((20, 24), 8, rng)
    ids = np.unique(truth)[1:]
    lut = np.zeros(truth.max() + 1, np.int64)
    lut[ids] = rng.permutation(len(ids)) + 100
    pred = lut[truth]
    s = instance_scores(pred, truth)
    assert s.mean_ap == 1.0 and (s.table["ap"] == 1.0).all()
    assert (s.table["mean_matched_iou"] == 1.0).all()
    assert panoptic_quality(pred, truth).pq == 1.0


def test_one_pixel_objects():
    truth = np.zeros((3, 3), np.uint8)
    truth[0, 0], truth[2, 2] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, 0], pred[2, 1] = 5, 6  # one hit, one pixel off
    r = match_instances(pred, truth, iou_threshold=0.95)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1) and r.pair_iou.tolist() == [1.0]
    e = error_masks(pred, truth)
    np.testing.assert_allclose(e.fp_centroids, [[2, 1]])
    np.testing.assert_allclose(e.fn_centroids, [[2, 2]])


def test_3d_volumes():
    truth = np.zeros((4, 6, 6), np.int32)
    truth[:2, :3, :3] = 1  # 18 voxels
    truth[2:, 3:, 3:] = 2
    pred = np.zeros_like(truth)
    pred[:2, :3, :2] = 4  # 12 of 18: IoU 2/3
    pred[1:, 3:, 3:] = 5  # 18 in a 27-voxel box: IoU 2/3
    r = match_instances(pred, truth, iou_threshold=0.6)
    assert r.tp == 2
    np.testing.assert_allclose(r.pair_iou, [2 / 3, 2 / 3])
    assert match_instances(pred, truth, iou_threshold=0.7).tp == 0
    e = error_masks(pred, truth, iou_threshold=0.7)
    assert e.fp_centroids.shape == (2, 3)
    np.testing.assert_allclose(e.fn_centroids[0], [0.5, 1, 1])
    np.testing.assert_allclose(semantic_scores(pred > 0, truth > 0).iou[1], (12 + 18) / (18 + 27))


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64],
)
def test_every_integer_dtype_gives_the_same_scores(dtype):
    rng = np.random.default_rng(5)
    truth = _random_labels((16, 16), 6, rng)
    pred = _random_labels((16, 16), 6, rng)
    ref = instance_scores(pred, truth).table
    got = instance_scores(pred.astype(dtype), truth.astype(dtype)).table
    for col in ref:
        np.testing.assert_array_equal(got[col], ref[col], err_msg=col)


def test_int64_and_uint64_extremes():
    info, uinfo = np.iinfo(np.int64), np.iinfo(np.uint64)
    truth = np.array([[1, 1, 0, 2, 2, 3]])
    pred = np.array([[info.min, info.min, 0, info.max, info.max, -1]], np.int64)
    iou, pred_ids, _ = iou_matrix(pred, truth)
    assert pred_ids.tolist() == [info.min, -1, info.max]
    np.testing.assert_array_equal(iou, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    r = match_instances(pred, truth)
    assert r.tp == 3 and r.pairs.tolist() == [[info.min, 1], [info.max, 2], [-1, 3]]
    upred = np.array([[uinfo.max, uinfo.max, 0, 7, 7, uinfo.max - 1]], np.uint64)
    r = match_instances(upred, truth)
    assert r.tp == 3 and r.pairs[:, 0].tolist() == [uinfo.max, 7, uinfo.max - 1]
    e = error_masks(upred, np.zeros_like(truth))
    assert e.fp_ids.tolist() == [7, uinfo.max - 1, uinfo.max]
    assert e.false_positives.dtype == np.uint64


def test_bool_masks_are_one_object():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    r = match_instances(a, a[::-1])
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)


@pytest.mark.parametrize(
    "func",
    [iou_matrix, match_instances, instance_scores, semantic_scores, panoptic_quality, error_masks],
)
def test_bad_inputs_raise_clear_errors(func):
    a = np.zeros((3, 4), np.int32)
    with pytest.raises(ValueError, match=r"same shape.*pred \(3, 4\) and truth \(4, 3\)"):
        func(a, np.zeros((4, 3), np.int32))
    with pytest.raises(ValueError, match="pred must hold integer labels; got dtype float64"):
        func(a.astype(float), a)
    with pytest.raises(ValueError, match="truth must hold integer labels; got dtype float32"):
        func(a, a.astype(np.float32))


def test_bad_parameters_raise_clear_errors():
    a = np.zeros((3, 4), np.int32)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"iou_threshold must be in \\(0, 1\\]; got {bad}"):
            match_instances(a, a, iou_threshold=bad)
        with pytest.raises(ValueError, match="thresholds must be in"):
            instance_scores(a, a, thresholds=(0.5, bad))
    with pytest.raises(ValueError, match="at least one"):
        instance_scores(a, a, thresholds=())
    with pytest.raises(ValueError, match="truth has class 3 but n_classes is 2"):
        semantic_scores(a, a + 3, n_classes=2)
    with pytest.raises(ValueError, match="negative class -1"):
        semantic_scores(a - 1, a)
    with pytest.raises(ValueError, match="both pred_classes and truth_classes"):
        panoptic_quality(a, a, pred_classes={})
    b = a.copy()
    b[0, 0] = 4
    with pytest.raises(ValueError, match=r"gives no class for label\(s\) \[4\]"):
        panoptic_quality(b, b, pred_classes={}, truth_classes={4: 1})
    with pytest.raises(ValueError, match="has 2 entries but the labels reach 4"):
        panoptic_quality(b, b, pred_classes=[0, 1], truth_classes=[0, 1])


# ---- agreement with references on random cases ----------------------------------------------------
def _random_labels(shape, n, rng):
    """Up to ``n`` random boxes painted over each other (objects may be cut or lost)."""
    out = np.zeros(shape, np.int64)
    for k in rng.permutation(np.arange(1, n + 1) * 3):  # ids not 1..n, in random order
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [a + int(rng.integers(1, max(2, s // 2))) for a, s in zip(lo, shape, strict=True)]
        out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = k
    return out


def _brute_iou(pred, truth):
    p_ids, t_ids = np.unique(pred[pred != 0]), np.unique(truth[truth != 0])
    iou = np.zeros((len(p_ids), len(t_ids)))
    for i, p in enumerate(p_ids):
        for j, t in enumerate(t_ids):
            a, b = pred == p, truth == t
            iou[i, j] = (a & b).sum() / (a | b).sum()
    return iou, p_ids, t_ids


def _brute_match(iou, threshold):
    """Most pairs >= threshold, then the largest IoU sum, over every one-to-one assignment."""
    n_p, n_t = iou.shape
    best = (0, 0.0)
    slots = list(range(n_t)) + [None] * n_p
    for perm in set(itertools.permutations(slots, n_p)):
        ious = [iou[i, j] for i, j in enumerate(perm) if j is not None and iou[i, j] >= threshold]
        best = max(best, (len(ious), float(np.sum(ious))))
    return best


def _greedy_tp(iou, threshold):
    used_p, used_t, n = set(), set(), 0
    for k in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(k, iou.shape)
        if iou[i, j] >= threshold and i not in used_p and j not in used_t:
            used_p.add(i), used_t.add(j)
            n += 1
    return n


@pytest.mark.parametrize("seed", range(6))
def test_iou_matrix_agrees_with_brute_force_and_skimage(seed):
    from skimage.metrics import contingency_table

    rng = np.random.default_rng(seed)
    shape = (12, 14) if seed % 2 else (5, 6, 7)
    pred, truth = _random_labels(shape, 7, rng), _random_labels(shape, 7, rng)
    iou, p_ids, t_ids = iou_matrix(pred, truth)
    ref, rp, rt = _brute_iou(pred, truth)
    np.testing.assert_array_equal(p_ids, rp)
    np.testing.assert_array_equal(t_ids, rt)
    np.testing.assert_allclose(iou, ref, rtol=1e-12)
    # the intersections are scikit-image's contingency table
    cont = contingency_table(truth, pred).toarray()
    inter = np.zeros_like(iou)
    sp, _, _ = iou_matrix(pred, truth, sparse=True)
    sp = sp.tocoo()
    areas_p = np.array([(pred == p).sum() for p in p_ids])
    areas_t = np.array([(truth == t).sum() for t in t_ids])
    union = areas_p[sp.row] + areas_t[sp.col]
    inter[sp.row, sp.col] = sp.data * union / (1 + sp.data)  # iou = i / (a + b - i)
    np.testing.assert_allclose(inter, cont[np.ix_(t_ids, p_ids)].T, atol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_matching_agrees_with_exhaustive_search(seed):
    rng = np.random.default_rng(100 + seed)
    pred, truth = _random_labels((1, 14), 4, rng), _random_labels((1, 14), 4, rng)
    iou, _, _ = _brute_iou(pred, truth)
    for threshold in (0.1, 0.25, 0.4, 0.5, 0.7):
        r = match_instances(pred, truth, iou_threshold=threshold)
        n, total = _brute_match(iou, threshold)
        assert r.tp == n, threshold
        assert r.pair_iou.sum() == pytest.approx(total), threshold
        assert r.tp >= _greedy_tp(iou, threshold)
        assert (r.pair_iou >= threshold).all()
        assert len(set(r.pairs[:, 0])) == len(set(r.pairs[:, 1])) == r.tp


def test_semantic_scores_agree_with_scikit_learn():
    from sklearn.metrics import f1_score, jaccard_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 4, (20, 20))
    pred = np.where(rng.random((20, 20)) < 0.7, truth, rng.integers(0, 4, (20, 20)))
    s = semantic_scores(pred, truth)
    labels = [0, 1, 2, 3]
    np.testing.assert_allclose(
        s.iou, jaccard_score(truth.ravel(), pred.ravel(), labels=labels, average=None)
    )
    np.testing.assert_allclose(
        s.dice, f1_score(truth.ravel(), pred.ravel(), labels=labels, average=None)
    )
    assert s.pixel_accuracy == pytest.approx((pred == truth).mean())


@pytest.mark.parametrize("seed", range(4))
def test_panoptic_quality_agrees_with_a_direct_count(seed):
    rng = np.random.default_rng(30 + seed)
    truth = _random_labels((16, 16), 8, rng)
    pred = truth.copy()
    pred[rng.random(truth.shape) < 0.25] = 0  # eroded objects: some IoUs fall below 0.5
    pred[_random_labels((16, 16), 3, rng) > 0] = 999  # a spurious object
    t_cls = {int(t): int(t) % 2 for t in np.unique(truth) if t}
    p_cls = {int(p): (int(p) % 2 if rng.random() < 0.8 else 5) for p in np.unique(pred) if p}
    iou, p_ids, t_ids = _brute_iou(pred, truth)
    for classes in (False, True):
        rows = []
        cls_set = sorted(set(p_cls.values()) | set(t_cls.values())) if classes else [None]
        for c in cls_set:
            pi = [i for i, p in enumerate(p_ids) if c is None or p_cls[int(p)] == c]
            ti = [j for j, t in enumerate(t_ids) if c is None or t_cls[int(t)] == c]
            m = [iou[i, j] for i in pi for j in ti if iou[i, j] > 0.5]
            tp, fp, fn = len(m), len(pi) - len(m), len(ti) - len(m)
            rows.append(sum(m) / (tp + fp / 2 + fn / 2) if tp + fp + fn else 1.0)
        kwargs = {"pred_classes": p_cls, "truth_classes": t_cls} if classes else {}
        s = panoptic_quality(pred, truth, **kwargs)
        assert s.pq == pytest.approx(np.mean(rows)), classes


def test_class_map_gives_each_object_its_majority_class():
    truth = np.zeros((3, 6), int)
    truth[:, :3], truth[:, 3:] = 1, 2
    cls_map = np.zeros_like(truth)
    cls_map[:, :3] = 4
    cls_map[0, :3] = 9  # a minority of object 1 is class 9
    cls_map[:, 3:] = 9
    s = panoptic_quality(truth, truth, pred_classes=cls_map, truth_classes={1: 4, 2: 9})
    assert s.pq == 1.0 and s.per_class["class"].tolist() == [4, 9]


def test_error_centroids_agree_with_scipy():
    rng = np.random.default_rng(11)
    truth, pred = _random_labels((20, 20), 9, rng), _random_labels((20, 20), 9, rng)
    e = error_masks(pred, truth, iou_threshold=0.3)
    ref = ndimage.center_of_mass(np.ones_like(pred), pred, e.fp_ids)
    np.testing.assert_allclose(e.fp_centroids, np.reshape(ref, (-1, 2)))
    ref = ndimage.center_of_mass(np.ones_like(truth), truth, e.fn_ids)
    np.testing.assert_allclose(e.fn_centroids, np.reshape(ref, (-1, 2)))
    r = match_instances(pred, truth, iou_threshold=0.3)
    assert len(e.fp_ids) == r.fp and len(e.fn_ids) == r.fn
    assert not set(e.fp_ids) & set(r.pairs[:, 0]) and not set(e.fn_ids) & set(r.pairs[:, 1])


def test_many_objects_use_the_sparse_count():
    # 40 x 40 objects of 2 x 2 pixels: 1600 x 1600 pairs would be dense; still exact
    truth = np.kron(np.arange(1, 1601).reshape(40, 40), np.ones((2, 2), int))
    pred = truth.copy()
    pred[::2, ::2] = 0  # each object loses a quarter: IoU 0.75
    r = match_instances(pred, truth, iou_threshold=0.7)
    assert r.tp == 1600 and np.allclose(r.pair_iou, 0.75)
    iou, _, _ = iou_matrix(pred, truth, sparse=True)
    assert iou.nnz == 1600
