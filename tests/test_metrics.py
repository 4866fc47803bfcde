"""Metrics against values computed independently from their published definitions."""
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from dermstack import metrics


def roc_points(y, s):
    """ROC vertices computed by hand (ties grouped), no sklearn."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    P, N = y.sum(), len(y) - y.sum()
    tpr, fpr = [0.0], [0.0]
    tp = fp = 0
    for i in range(len(y)):
        tp += y[i]
        fp += 1 - y[i]
        if i == len(y) - 1 or s[i + 1] != s[i]:
            tpr.append(tp / P)
            fpr.append(fp / N)
    return np.array(fpr), np.array(tpr)


def pauc_by_definition(y, s, min_tpr=0.8):
    """Area between the ROC curve and the line TPR = min_tpr, where the curve is above it."""
    fpr, tpr = roc_points(y, s)
    grid = np.linspace(0, 1, 400_001)
    curve = np.interp(grid, fpr, tpr)  # fpr is non-decreasing; vertical steps resolved by the fine grid
    return np.trapezoid(np.clip(curve - min_tpr, 0, None), grid)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_partial_auc_matches_definition(seed):
    rng = np.random.default_rng(seed)
    n = 400
    y = (rng.random(n) < 0.2).astype(int)
    s = rng.random(n) + y * rng.uniform(0.1, 1.0)
    s = np.round(s, 2)  # ties
    assert metrics.partial_auc(y, s) == pytest.approx(pauc_by_definition(y, s), abs=2e-4)


def test_partial_auc_range():
    y = np.array([0] * 50 + [1] * 50)
    assert metrics.partial_auc(y, y.astype(float)) == pytest.approx(0.2)
    assert metrics.partial_auc(y, 1 - y.astype(float)) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200_000)
    assert metrics.partial_auc(y, rng.random(len(y))) == pytest.approx(0.02, abs=0.002)


def test_roc_metrics_of_no_rows_or_one_class_are_undefined_not_an_error():
    for y, s in (([], []), ([1, 1], [0.2, 0.7])):
        for fn in (metrics.roc_auc, metrics.pauc_tpr80):
            with pytest.raises(ValueError, match="only one class"):
                fn(np.array(y), np.array(s))
    assert np.isnan(metrics.evaluate("binary", np.array([]), np.array([]))["pauc_tpr80"])


def test_macro_f1_multiclass_and_multilabel():
    y = np.array([0, 1, 2, 2])
    s = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    # predictions 0,1,2,0: class0 f1=2/3, class1 f1=1, class2 f1=2/3
    assert metrics.macro_f1(y, s) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    Y = np.array([[1, 0], [0, 1], [1, 1]])
    S = np.array([[0.6, 0.2], [0.4, 0.5], [0.3, 0.9]])
    # class0: pred 1,0,0 -> tp1 fn1 -> f1 2/3; class1: pred 0,1,1 -> f1 1
    assert metrics.macro_f1(Y, S) == pytest.approx((2 / 3 + 1) / 2)


def test_balanced_accuracy_and_evaluate():
    y = np.array([0, 0, 0, 1])
    s = np.array([0.1, 0.6, 0.2, 0.9])
    assert metrics.balanced_accuracy(y, s) == pytest.approx((2 / 3 + 1) / 2)
    out = metrics.evaluate("binary", y, s)
    assert set(out) == {"roc_auc", "pauc_tpr80"} and out["roc_auc"] == pytest.approx(1.0)


def test_bootstrap_ci_brackets_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = y * 0.5 + rng.random(500)
    lo, hi = metrics.bootstrap_ci(metrics.roc_auc, y, s, n=100)
    assert lo < metrics.roc_auc(y, s) < hi


@pytest.mark.parametrize("seed", range(20))
def test_multiclass_and_multilabel_metrics_equal_sklearns(seed):
    """The numpy metrics (bootstrap intervals call them thousands of times) against sklearn's, with
    classes absent from y, ties and classes never predicted."""
    rng = np.random.default_rng(seed)
    n, C = int(rng.integers(2, 40)), int(rng.integers(2, 6))
    y = rng.integers(0, C - seed % 2, n)
    s = np.round(rng.random((n, C)), 1 if seed % 3 == 0 else 6)
    Y = (rng.random((n, C)) < 0.3).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert metrics.macro_f1(y, s) == pytest.approx(skm.f1_score(y, s.argmax(1), labels=np.arange(C), average="macro", zero_division=0))
        assert metrics.balanced_accuracy(y, s) == pytest.approx(skm.balanced_accuracy_score(y, s.argmax(1)))
        assert metrics.macro_f1(Y, s) == pytest.approx(skm.f1_score(Y, (s >= 0.5).astype(int), average="macro", zero_division=0))
        both = [k for k in range(C) if 0 < Y[:, k].sum() < n]
        want = np.mean([skm.balanced_accuracy_score(Y[:, k], s[:, k] >= 0.5) for k in both]) if both else np.nan
        assert metrics.balanced_accuracy(Y, s) == pytest.approx(want, nan_ok=True)
        onehot = np.eye(C, dtype=int)[y]
        present = [k for k in range(C) if 0 < onehot[:, k].sum() < n]
        want = np.mean([skm.roc_auc_score(onehot[:, k], s[:, k]) for k in present]) if present else np.nan
        assert metrics.macro_roc_auc(y, s) == pytest.approx(want, nan_ok=True)
