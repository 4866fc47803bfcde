"""Metrics used by every stage: ISIC 2024 pAUC above 80% TPR, ROC-AUC, macro F1, balanced accuracy."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sklearn import metrics as skm

from dermstack.taskkind import TaskKind


@dataclass(frozen=True)
class Ranking:
    """Rows sorted by descending score (``order``) and the position in that order of the last row of
    each run of equal scores (``last``): the one sort every bootstrap draw of the ROC metrics reuses."""

    order: np.ndarray
    last: np.ndarray
    sorted_score: np.ndarray

    @classmethod
    def of(cls, score: np.ndarray) -> Ranking:
        s = np.asarray(score, dtype=float).ravel()
        order = np.argsort(-s, kind="mergesort")
        return cls(order, _run_ends(s[order]), s[order])

    @cached_property
    def flipped(self) -> Ranking:
        """The ranking of ``1 - score``: the reversed order (1 - s never increases where s does), with
        its own runs (1 - s can round distinct scores together)."""
        ranked = 1.0 - self.sorted_score[::-1]
        return Ranking(self.order[::-1], _run_ends(ranked), ranked)


def _run_ends(ranked: np.ndarray) -> np.ndarray:
    """Positions of the last element of each run of equal values in ``ranked`` (none when it is empty)."""
    return np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1] if len(ranked) else np.zeros(0, dtype=np.intp)


def roc_points(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None,
               ranking: Ranking | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) vertices of the binary ROC curve, ties grouped, starting at (0, 0).

    Plain numpy (sklearn's input validation costs milliseconds per call, which dominates
    bootstrap intervals over many subgroups). A single class or NaN scores raise ValueError, as
    sklearn does. ``weight``: integer row counts (a bootstrap draw; rows of count 0 are left out),
    which give exactly the curve of the rows repeated that often; ``ranking``: the scores' ranking
    (:class:`Ranking`), when the caller already has it (one sort for every draw of a bootstrap)."""
    y = np.asarray(y).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y and score differ in length: {y.shape} vs {s.shape}")
    if ranking is None:
        if np.isnan(s).any():
            raise ValueError("scores contain NaN")
        ranking = Ranking.of(s)
    pos = y[ranking.order] == 1
    if weight is None:
        tps = np.cumsum(pos)[ranking.last]
        fps = ranking.last + 1 - tps
    else:
        w = weight[ranking.order]  # integer counts: every sum below is exact
        tp_w = np.where(pos, w, 0)
        tps, fps = np.cumsum(tp_w)[ranking.last], np.cumsum(w - tp_w)[ranking.last]
        drawn = np.diff(np.r_[0, tps + fps]) > 0  # the runs of equal scores with a row in the draw
        tps, fps = tps[drawn], fps[drawn]
    n_pos, n_neg = (tps[-1], fps[-1]) if len(tps) else (0, 0)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("only one class present in y; ROC is undefined")
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def roc_auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None, ranking: Ranking | None = None) -> float:
    """Binary ROC-AUC (equal to sklearn's ``roc_auc_score``); ``weight``, ``ranking``: as :func:`roc_points`."""
    fpr, tpr = roc_points(y, score, weight, ranking)
    return float(np.trapezoid(tpr, fpr))


def partial_auc(y: np.ndarray, score: np.ndarray, min_tpr: float = 0.8, weight: np.ndarray | None = None,
                ranking: Ranking | None = None) -> float:
    """Partial AUC above ``min_tpr`` exactly as the ISIC 2024 Kaggle metric (range 0 to 0.2 for 0.8).

    The published definition flips labels and scores so that the region TPR >= min_tpr becomes
    FPR <= 1 - min_tpr, then integrates the ROC curve up to that FPR with linear interpolation
    at the cut. ``weight``, ``ranking``: as :func:`roc_points` (``ranking`` of the unflipped scores).
    """
    v_gt = np.abs(np.asarray(y, dtype=float) - 1)
    v_pred = 1.0 - np.asarray(score, dtype=float)
    max_fpr = abs(1 - min_tpr)
    fpr, tpr = roc_points(v_gt, v_pred, weight, None if ranking is None else ranking.flipped)
    if max_fpr == 1:
        return float(np.trapezoid(tpr, fpr))
    if not 0 < max_fpr < 1:
        raise ValueError(f"min_tpr must be in [0, 1), got {min_tpr}")
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return float(np.trapezoid(tpr, fpr))


def pauc_tpr80(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None, ranking: Ranking | None = None) -> float:
    return partial_auc(y, score, 0.8, weight, ranking)


#: Metrics that take a bootstrap draw as row counts over one sort of the scores (O(n) a draw, not O(n log n)).
_COUNTED = (roc_auc, pauc_tpr80)


def _as_2d(score: np.ndarray) -> np.ndarray:
    s = np.asarray(score, dtype=float)
    return s[:, None] if s.ndim == 1 else s


def _class_counts(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (true positives, true count, predicted count): argmax for class indices ``y``, ``score
    >= threshold`` per column for one-hot ``y``, ``score >= threshold`` for binary (n,) scores.
    Plain numpy, for the same reason as :func:`roc_points`: bootstrap intervals call these thousands of times."""
    y, s = np.asarray(y), np.asarray(score, dtype=float)
    if y.ndim == 2:
        truth, pred = y.astype(bool), _as_2d(s) >= threshold
    else:
        n_classes = 2 if s.ndim == 1 else s.shape[1]
        guess = (s >= threshold).astype(int) if s.ndim == 1 else s.argmax(axis=1)
        truth = y[:, None] == np.arange(n_classes)
        pred = guess[:, None] == np.arange(n_classes)
    return (truth & pred).sum(axis=0), truth.sum(axis=0), pred.sum(axis=0)


def macro_f1(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Macro F1 over every class (0 for a class never true nor predicted, as sklearn's
    ``zero_division=0``). Multiclass (``y`` 1-D class indices): argmax. Multi-label (``y`` 2-D
    one-hot): ``score >= threshold`` per class, as MILK10k scores."""
    tp, true, pred = _class_counts(y, score, threshold)
    denom = true + pred
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def balanced_accuracy(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Balanced accuracy: the mean recall of the classes present in ``y`` (argmax for class-score
    matrices, ``score >= threshold`` for binary scores). For one-hot ``y`` (multi-label), the mean
    over classes with both outcomes of each class's balanced accuracy."""
    y = np.asarray(y)
    if y.ndim == 2:
        tp, true, pred = _class_counts(y, score, threshold)
        n = len(y)
        both = (true > 0) & (true < n)
        if not both.any():
            return float("nan")
        tn = n - true - pred + tp
        recall_pos, recall_neg = tp[both] / true[both], tn[both] / (n - true[both])
        return float(np.mean((recall_pos + recall_neg) / 2))
    tp, true, _ = _class_counts(y, score, threshold)
    present = true > 0
    return float(np.mean(tp[present] / true[present]))


def macro_roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """One-vs-rest ROC-AUC averaged over classes that have both outcomes."""
    y = np.asarray(y)
    s = _as_2d(score)
    onehot = y if y.ndim == 2 else np.eye(s.shape[1], dtype=int)[y]
    vals = [roc_auc(onehot[:, k], s[:, k]) for k in range(s.shape[1]) if 0 < onehot[:, k].sum() < len(onehot)]
    return float(np.mean(vals)) if vals else float("nan")


def confusion_matrix(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    s = np.asarray(score, dtype=float)
    pred = (s >= threshold).astype(int) if s.ndim == 1 else s.argmax(axis=1)
    n = 2 if s.ndim == 1 else s.shape[1]
    return skm.confusion_matrix(np.asarray(y), pred, labels=np.arange(n))


#: The metrics reported per task.
TASK_METRICS: dict[TaskKind, dict[str, Callable]] = {
    TaskKind.BINARY: {"roc_auc": roc_auc, "pauc_tpr80": pauc_tpr80},
    TaskKind.MULTICLASS: {"macro_f1": macro_f1, "balanced_accuracy": balanced_accuracy, "macro_roc_auc": macro_roc_auc},
    TaskKind.MULTILABEL: {"macro_f1": macro_f1, "balanced_accuracy": balanced_accuracy, "macro_roc_auc": macro_roc_auc},
}
PRIMARY_METRIC: dict[TaskKind, str] = {TaskKind.BINARY: "pauc_tpr80", TaskKind.MULTICLASS: "macro_f1", TaskKind.MULTILABEL: "macro_f1"}
#: The ranking metric of each kind (ROC-AUC, macro over classes when there are several).
ROC_AUC_METRIC: dict[TaskKind, str] = {TaskKind.BINARY: "roc_auc", TaskKind.MULTICLASS: "macro_roc_auc",
                                       TaskKind.MULTILABEL: "macro_roc_auc"}


def evaluate(task: str, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Every metric of the task; a metric that is undefined on this data (one class) is NaN."""
    out = {}
    for name, fn in TASK_METRICS[TaskKind(task)].items():
        try:
            out[name] = fn(y, score)
        except ValueError:
            out[name] = float("nan")
    return out


def bootstrap_draws(fns: dict[str, Callable], y: np.ndarray, score: np.ndarray, n: int = 200, seed=0) -> dict[str, np.ndarray]:
    """Each metric of ``fns`` on the same ``n`` row resamples (NaN where it is undefined on a resample), in
    draw order, so two groups' draws can be combined (the CI of a difference between groups); each
    metric's values are those :func:`bootstrap_values` gives it alone with this seed. The ROC metrics
    take each draw as row counts over one ranking of the scores: the same values as on the resampled
    rows, without sorting every draw (seconds per model at 400k rows)."""
    rng = np.random.default_rng(seed)
    y, score = np.asarray(y), np.asarray(score)
    vals = {name: np.full(n, np.nan) for name in fns}
    s = score.astype(float)
    rankable = y.ndim == 1 and s.ndim == 1 and len(y) and not np.isnan(s).any()
    counted = {name: bool(rankable) and fn in _COUNTED for name, fn in fns.items()}
    ranking = Ranking.of(s) if any(counted.values()) else None
    for b in range(n):
        idx = rng.integers(0, len(y), len(y))
        weight = np.bincount(idx, minlength=len(y)) if ranking is not None else None
        for name, fn in fns.items():
            try:
                vals[name][b] = fn(y, score, weight=weight, ranking=ranking) if counted[name] else fn(y[idx], score[idx])
            except ValueError:
                continue
    return vals


def bootstrap_values(fn: Callable, y: np.ndarray, score: np.ndarray, n: int = 200, seed=0) -> np.ndarray:
    """``fn`` on ``n`` row resamples: :func:`bootstrap_draws` of one metric."""
    return bootstrap_draws({"value": fn}, y, score, n, seed)["value"]


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile (1-alpha) interval of bootstrap draws, ignoring undefined (NaN) draws."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(
    fn: Callable, y: np.ndarray, score: np.ndarray, n: int = 200, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1-alpha) interval of ``fn(y, score)`` over resampled rows."""
    return percentile_ci(bootstrap_values(fn, y, score, n, seed), alpha)


def bootstrap_cis(fns: dict[str, Callable], y: np.ndarray, score: np.ndarray, n: int = 200, seed: int = 0,
                  alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """:func:`bootstrap_ci` of each metric of ``fns``, on one set of resamples."""
    return {name: percentile_ci(v, alpha) for name, v in bootstrap_draws(fns, y, score, n, seed).items()}
