"""Per-class decision rules that maximise macro F1 (multiclass, multi-label), their effect
measured by nested CV."""
from __future__ import annotations

import numpy as np

from dermstack import metrics as _metrics
from dermstack.clinical.checks import TOL, binary_labels, f1_from_counts, finite_scores
from dermstack.crossfit import apply_by_fold, fit_other_folds
from dermstack.taskkind import TaskKind


def _fit_multilabel(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """One threshold per class: macro F1 over independent labels is the mean of per-class F1s, so
    each class is optimised on its own, exactly, over all cuts between distinct scores. The
    threshold is the midpoint between the lowest flagged and the highest unflagged score (a tie goes
    to the higher threshold); a class without positives keeps 0.5."""
    thresholds = np.full(s.shape[1], 0.5)
    for c in range(s.shape[1]):
        yc, sc = y[:, c].astype(bool), s[:, c]
        if not yc.any():
            continue
        order = np.argsort(-sc, kind="stable")
        ss, ys = sc[order], yc[order]
        last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]
        tp = np.cumsum(ys)[last]
        f1 = f1_from_counts(tp, last + 1, yc.sum())
        j = int(np.argmax(f1))
        below = ss[last[j] + 1] if last[j] + 1 < len(ss) else ss[last[j]]
        thresholds[c] = (ss[last[j]] + below) / 2
    return thresholds


def _multiclass_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 of each row of ``pred`` (``(K, n)`` class labels), vectorised over candidates."""
    K = pred.shape[0]
    flat = pred + n_classes * np.arange(K)[:, None]
    n_pred = np.bincount(flat.ravel(), minlength=K * n_classes).reshape(K, n_classes)
    tp = np.bincount(flat.ravel(), weights=(pred == y).ravel(), minlength=K * n_classes).reshape(K, n_classes)
    n_true = np.bincount(y, minlength=n_classes)
    return f1_from_counts(tp, n_pred, n_true).mean(axis=1)


def _fit_multiclass(y: np.ndarray, s: np.ndarray, n_candidates: int = 64, max_rounds: int = 10) -> np.ndarray:
    """Per-class multiplicative weights ``w`` (prediction ``argmax(s * w)``) by coordinate ascent.

    For class ``c`` with the other weights fixed, a row switches to ``c`` once ``w_c`` exceeds
    ``max_{j != c} w_j s_j / s_c``; candidate values of ``w_c`` are geometric midpoints between
    quantiles of those break points, and the best is kept only if it raises macro F1 (so the
    ascent stops). Weights start at 1 (plain argmax) and are scaled so their geometric mean is 1.
    """
    n, C = s.shape
    w = np.ones(C)
    best = _multiclass_f1(y, (s * w).argmax(axis=1)[None, :], C)[0]
    eps = np.finfo(float).tiny
    for _ in range(max_rounds):
        improved = False
        for c in range(C):
            others = np.delete(s * w, c, axis=1)
            rest = np.delete(np.arange(C), c)[others.argmax(axis=1)]  # each row's prediction if not c
            rival = others.max(axis=1)
            brk = np.log(np.maximum(rival, eps)) - np.log(np.maximum(s[:, c], eps))
            q = np.unique(np.quantile(brk, np.linspace(0, 1, n_candidates)))
            cand = np.exp(np.r_[q[0] - 1.0, (q[1:] + q[:-1]) / 2, q[-1] + 1.0])
            switch = cand[:, None] * s[:, c][None, :] > rival[None, :]
            pred = np.where(switch, c, rest[None, :])
            f1 = _multiclass_f1(y, pred, C)
            j = int(np.argmax(f1))
            if f1[j] > best + TOL:
                best, w[c], improved = f1[j], cand[j], True
        if not improved:
            break
    return w / np.exp(np.log(w).mean())


def apply_thresholds(s, thresholds, task_kind: str) -> np.ndarray:
    """Decisions from :func:`tune_thresholds` output: multiclass labels ``argmax(s * weights)``,
    multi-label 0/1 ``s >= thresholds`` per class."""
    s, t, kind = np.asarray(s, dtype=float), np.asarray(thresholds, dtype=float), _multi_kind(task_kind)
    return (s * t).argmax(axis=1) if kind.exclusive else (s >= t).astype(int)


def _multi_kind(task_kind: str) -> TaskKind:
    kind = TaskKind(task_kind)
    if kind.binary:
        raise ValueError(f"task_kind must be 'multiclass' or 'multilabel', got {task_kind!r}")
    return kind


def _macro_f1_of(y: np.ndarray, decisions: np.ndarray, task_kind: str, n_classes: int) -> float:
    if TaskKind(task_kind).exclusive:  # labels as one-hot scores, so metrics.macro_f1's argmax reproduces them
        return _metrics.macro_f1(y, np.eye(n_classes)[decisions])
    return _metrics.macro_f1(y, decisions.astype(float))


def tune_thresholds(y, s, groups, task_kind: str) -> dict:
    """Per-class decision rule that maximises macro F1, its effect measured by nested CV.

    ``multiclass``: ``y`` ``(n,)`` class indices, rule = per-class weights on the probabilities
    before argmax (:func:`_fit_multiclass`). ``multilabel``: ``y`` ``(n, C)`` one-hot, rule = one
    threshold per class (:func:`_fit_multilabel`). ``groups`` are the CV fold ids of the rows: for
    each fold ``k`` the rule is fitted on the other folds' rows and applied to fold ``k``, so
    ``f1_after`` (macro F1 of those out-of-fold decisions, pooled) never uses a row's own label;
    ``f1_before`` is the default rule (argmax, or 0.5 per class). ``thresholds`` is the rule fitted
    on all rows, what is applied to test rows (:func:`apply_thresholds`); ``fold_thresholds[k]``
    the rule applied to fold ``k``.
    """
    kind = _multi_kind(task_kind)
    y, s, groups = np.asarray(y), np.asarray(s, dtype=float), np.asarray(groups).ravel()
    if s.ndim != 2 or len(s) != len(y) or len(groups) != len(y):
        raise ValueError(f"need (n, C) scores with one label and one fold id per row; got scores "
                         f"{s.shape}, labels {y.shape}, folds {groups.shape}")
    s = finite_scores(s)
    n_classes = s.shape[1]
    if kind.exclusive:
        y = y.astype(int).ravel()
        if y.min() < 0 or y.max() >= n_classes:
            bad = np.flatnonzero((y < 0) | (y >= n_classes))[0]
            raise ValueError(f"class index out of range 0..{n_classes - 1} at row {bad}: {y[bad]}")
        fit = _fit_multiclass
    else:
        if y.shape != s.shape:
            raise ValueError(f"multi-label labels {y.shape} must match scores {s.shape}")
        y = binary_labels(y, "multi-label label").astype(int)
        fit = _fit_multilabel
    folds = np.unique(groups)
    if len(folds) < 2:
        raise ValueError("nested threshold tuning needs at least two folds")
    default = np.ones(n_classes) if kind.exclusive else np.full(n_classes, 0.5)
    fitted = fit_other_folds(groups, lambda inner: fit(y[inner], s[inner]), folds)
    decisions = apply_by_fold(groups, fitted, lambda t, rows: apply_thresholds(s[rows], t, task_kind),
                              np.zeros_like(apply_thresholds(s, default, task_kind)))
    fold_thresholds = {k: t.tolist() for k, t in fitted.items()}
    return {
        "task": task_kind,
        "rule": "argmax(score * weight)" if kind.exclusive else "score >= threshold",
        "f1_before": _macro_f1_of(y, apply_thresholds(s, default, task_kind), task_kind, n_classes),
        "f1_after": _macro_f1_of(y, decisions, task_kind, n_classes),
        "thresholds": fit(y, s).tolist(),
        "fold_thresholds": fold_thresholds,
    }
