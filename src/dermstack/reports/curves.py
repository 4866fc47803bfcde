"""The numbers behind the performance plots: ROC, precision-recall, calibration, operating points."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn import metrics as skm

from dermstack import metrics
from dermstack.taskkind import TaskKind


def class_views(task: str, classes: list[str], y: np.ndarray, score: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One-vs-rest (name, y 0/1, score) per class; a binary task has the single view "target"."""
    if TaskKind(task).binary:
        return [(classes[0], np.asarray(y), np.asarray(score))]
    onehot = y if y.ndim == 2 else np.eye(len(classes), dtype=int)[y]
    return [(c, onehot[:, k], score[:, k]) for k, c in enumerate(classes) if 0 < onehot[:, k].sum() < len(onehot)]


def threshold_at_specificity(y: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Smallest threshold whose specificity (negatives scored below it) is at least ``specificity``."""
    neg = np.sort(np.asarray(score)[np.asarray(y) == 0])
    if len(neg) == 0:
        return float("nan")
    k = min(int(np.ceil(specificity * len(neg))), len(neg))
    # scores strictly above neg[k-1] are positive calls; ties count as negatives
    return float(np.nextafter(neg[k - 1], np.inf)) if k > 0 else float(neg[0])


@dataclass
class OperatingPoint:
    """Decisions at one threshold (``score >= threshold`` is a positive call)."""

    threshold: float
    recall: float
    specificity: float
    precision: float
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def at(cls, y: np.ndarray, score: np.ndarray, threshold: float) -> OperatingPoint:
        y = np.asarray(y).astype(bool)
        call = np.asarray(score) >= threshold
        tp, fp = int((call & y).sum()), int((call & ~y).sum())
        fn, tn = int((~call & y).sum()), int((~call & ~y).sum())
        div = lambda a, b: a / b if b else float("nan")  # noqa: E731
        return cls(float(threshold), div(tp, tp + fn), div(tn, tn + fp), div(tp, tp + fp), tp, fp, fn, tn)

    @property
    def confusion(self) -> np.ndarray:
        """[[tn, fp], [fn, tp]] as sklearn orders it."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


@dataclass
class BinaryCurves:
    """ROC, PR and calibration of one (model, class) view, thinned for plotting and JSON."""

    name: str
    n: int
    n_pos: int
    roc_auc: float
    pauc_tpr80: float
    average_precision: float
    fpr: list[float]
    tpr: list[float]
    precision: list[float]
    recall: list[float]
    calib_pred: list[float]
    calib_obs: list[float]
    calib_n: list[int]
    operating_points: list[dict]

    @classmethod
    def compute(cls, name: str, y: np.ndarray, score: np.ndarray, specificities=(0.8, 0.9, 0.95),
                threshold: float = 0.5, n_bins: int = 10, max_points: int = 400) -> BinaryCurves:
        y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
        fpr, tpr, _ = skm.roc_curve(y, score)
        prec, rec, _ = skm.precision_recall_curve(y, score)
        cp, co, cn = calibration_bins(y, score, n_bins)
        points = [{"rule": f"threshold {threshold:g}", **asdict(OperatingPoint.at(y, score, threshold))}]
        for sp in specificities:
            op = OperatingPoint.at(y, score, threshold_at_specificity(y, score, sp))
            points.append({"rule": f"specificity >= {sp:g}", **asdict(op)})
        return cls(name, len(y), int(y.sum()), metrics.roc_auc(y, score), metrics.pauc_tpr80(y, score),
                   float(skm.average_precision_score(y, score)), *_thin(fpr, tpr, max_points),
                   *_thin(prec[::-1], rec[::-1], max_points), cp, co, cn, points)


def _thin(a: np.ndarray, b: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points of a curve, always keeping both ends."""
    if len(a) > max_points:
        idx = np.unique(np.r_[np.linspace(0, len(a) - 1, max_points).astype(int), len(a) - 1])
        a, b = a[idx], b[idx]
    return [float(v) for v in a], [float(v) for v in b]


def calibration_bins(y: np.ndarray, score: np.ndarray, n_bins: int = 10) -> tuple[list[float], list[float], list[int]]:
    """Mean predicted vs observed positive rate in equal-count score bins (equal-count keeps rare positives visible)."""
    order = np.argsort(score, kind="stable")
    pred, obs, cnt = [], [], []
    for chunk in np.array_split(order, min(n_bins, len(order))):
        if len(chunk):
            pred.append(float(score[chunk].mean()))
            obs.append(float(y[chunk].mean()))
            cnt.append(int(len(chunk)))
    return pred, obs, cnt
