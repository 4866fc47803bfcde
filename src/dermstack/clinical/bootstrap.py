"""The patient bootstrap: resamples of patients (counts per patient), the operating points'
intervals over them, any metric's interval and the paired comparison of two models on the same resamples."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import sparse

from dermstack import metrics as _metrics
from dermstack.clinical.checks import binary_inputs, f1_from_counts, finite_scores, patient_codes
from dermstack.clinical.operating import operating, point_values, topk_hits


def patient_resamples(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_patients)`` counts: how often each patient is drawn in each resample of
    ``n_patients`` patients with replacement. The same seed gives the same resamples, which is
    what makes :func:`paired_bootstrap` paired."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot)


class _ResampledCurves:
    """ROC curves of patient resamples of one binary data set, vectorised over resamples.

    Rows are sorted once. Only the ROC vertices where the curve turns are kept: the end of each tie
    group holding a positive, the end of the group just before it, and the last row. Between kept
    vertices the curve is a horizontal run of negative-only groups, so operating points (which
    :func:`operating` picks where sensitivity changes) and trapezoid areas are exact on the
    reduced curve. A resample is a vector of patient counts; the weighted counts up to each kept
    vertex are ``cumsum(segment-by-patient histogram @ counts)``, a sparse product with at most ``n``
    non-zeros, so the cost does not grow with rows x resamples.
    """

    _ELEMENTS = 1 << 22  # resamples x vertices per chunk (32 MB per float array)

    def __init__(self, y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_patients: int):
        order = np.argsort(-s, kind="stable")
        ys, ps = y[order], codes[order]
        last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]  # last sorted row of each distinct score
        group = np.repeat(np.arange(len(last)), np.diff(np.r_[-1, last]))
        pos_groups = np.unique(group[ys])
        before = pos_groups[pos_groups > 0] - 1
        cuts = last[np.unique(np.r_[pos_groups, before, len(last) - 1])]
        seg = np.searchsorted(cuts, np.arange(len(ys)))  # segment of each row: the first cut at or after it
        shape = (len(cuts), n_patients)
        self.hist_all = sparse.csr_matrix((np.ones(len(ys)), (seg, ps)), shape=shape)
        self.hist_pos = sparse.csr_matrix((np.ones(int(ys.sum())), (seg[ys], ps[ys])), shape=shape)

    @property
    def step(self) -> int:
        return max(1, self._ELEMENTS // self.hist_all.shape[0])

    def chunks(self, counts: np.ndarray, step: int | None = None):
        """Yield ``(rows, tpr, fpr, n_pos, n_neg)`` per ``step`` resamples: ``tpr``/``fpr``
        ``(b, m+1)`` with column 0 = nothing flagged, weighted class totals ``(b,)``."""
        step = step or self.step
        for b0 in range(0, len(counts), step):
            ct = counts[b0:b0 + step].T.astype(float)
            tp = np.cumsum(self.hist_pos @ ct, axis=0).T
            fp = np.cumsum(self.hist_all @ ct, axis=0).T - tp
            n_pos, n_neg = tp[:, -1], fp[:, -1]
            zero = np.zeros((len(tp), 1))
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr = np.hstack([zero, tp / n_pos[:, None]])
                fpr = np.hstack([zero, fp / n_neg[:, None]])
            yield slice(b0, b0 + len(tp)), tpr, fpr, n_pos, n_neg


def _area_above(tpr: np.ndarray, fpr: np.ndarray, min_tpr: float) -> np.ndarray:
    """Row-wise area between piecewise-linear ROC curves and the line TPR = ``min_tpr`` where the
    curve is above it: ROC-AUC for 0, the ISIC 2024 pAUC for 0.8 (``metrics.partial_auc``)."""
    t0, t1, width = tpr[:, :-1] - min_tpr, tpr[:, 1:] - min_tpr, np.diff(fpr, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = 0.5 * np.maximum(t1, 0) ** 2 / (t1 - t0)  # segment rising through the line: the triangle above
    height = np.where(t0 >= 0, (t0 + t1) / 2, np.where(t1 > 0, crossing, 0.0))
    return (width * height).sum(axis=1)


#: Metrics that are areas under the ROC curve, computed on all resamples at once in paired_bootstrap.
_CURVE_METRICS: dict[Callable, float] = {_metrics.roc_auc: 0.0, _metrics.pauc_tpr80: 0.8}


def _ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def operating_points(y, s, patient, n_boot: int = 200, seed: int = 0, *, k: int = 15,
                     specificities=(0.9, 0.95), sensitivities=(0.8, 0.95), flag_sensitivity: float = 0.8,
                     alpha: float = 0.05) -> dict:
    """Every clinical operating metric of a binary task with patient-level bootstrap intervals.

    Returns ``{name: {"value", "ci_low", "ci_high"}, ..., "bootstrap": {...}}`` with names
    ``flagged_per_cancer_at_sensitivity_80``, ``top_15_sensitivity``,
    ``sensitivity_at_specificity_{90,95}``, ``specificity_at_sensitivity_{80,95}``. Values are the
    functions above on all rows; intervals are percentile (1 - alpha) intervals over ``n_boot``
    patient resamples (resamples where a value is undefined are left out, ``n_valid`` says how
    many remain). Vectorised: rows are sorted once and each resample is a vector of patient
    counts (:class:`_ResampledCurves`).
    """
    y, s = binary_inputs(y, s)
    codes, n_pat = patient_codes(patient, len(y))
    point = point_values(y, s, specificities=specificities, sensitivities=sensitivities, flag_sensitivity=flag_sensitivity)
    hits, positives = topk_hits(y, s, codes, n_pat, k)
    topk = f"top_{k}_sensitivity"
    point[topk] = float(hits.sum() / positives.sum()) if positives.sum() > 0 else float("nan")

    counts = patient_resamples(n_pat, n_boot, seed)
    boot = {name: np.full(n_boot, np.nan) for name in point}
    with np.errstate(invalid="ignore", divide="ignore"):
        boot[topk] = (counts @ hits) / (counts @ positives)
    if y.any():
        for rows, *curves in _ResampledCurves(y, s, codes, n_pat).chunks(counts):
            for name, v in operating(*curves, specificities, sensitivities, flag_sensitivity).items():
                boot[name][rows] = v
    out: dict = {}
    for name, value in point.items():
        lo, hi = _ci(boot[name], alpha)
        out[name] = {"value": value, "ci_low": lo, "ci_high": hi, "n_valid": int(np.isfinite(boot[name]).sum())}
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "alpha": alpha, "unit": "patient", "n_patients": n_pat}
    return out


# ---------------------------------------------------------------------------------------------
# paired model comparison


def _resolve_metric(metric: str | Callable) -> Callable:
    if callable(metric):
        return metric
    for fns in _metrics.TASK_METRICS.values():
        if metric in fns:
            return fns[metric]
    known = sorted({m for fns in _metrics.TASK_METRICS.values() for m in fns})
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(known)}")


def _safe(fn: Callable, y, s) -> float:
    try:
        return float(fn(y, s))
    except ValueError:  # a class absent from this resample
        return float("nan")


def _resampled_values(fn: Callable, y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_pat: int,
                      counts: np.ndarray) -> np.ndarray:
    """``fn(y, s)`` on every patient resample (``counts``), NaN where it is undefined. ROC areas
    come from the resampled curves and macro F1 from per-patient confusion counts, all resamples at
    once; any other metric is called on each resample's rows."""
    if fn in _CURVE_METRICS and s.ndim == 1:
        return _curve_metric_values(*binary_inputs(y, s), codes, n_pat, counts, _CURVE_METRICS[fn])
    if fn is _metrics.macro_f1 and s.ndim == 2:
        return _macro_f1_values(y, s, codes, n_pat, counts)
    if fn is _metrics.macro_roc_auc and s.ndim == 2:
        return _macro_auc_values(y, s, codes, n_pat, counts)
    return _generic_values(fn, y, s, codes, counts)


def _prepared(y, s, patient, metric, n_boot: int, seed: int):
    fn = _resolve_metric(metric)
    y = np.asarray(y)
    codes, n_pat = patient_codes(patient, len(y))
    return fn, y, codes, n_pat, patient_resamples(n_pat, n_boot, seed)


def metric_draws(y, s, patient, metric: str | Callable, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """``metric`` on each patient resample, in draw order (NaN where undefined): the draws behind
    :func:`metric_bootstrap`'s interval, for intervals of differences between independent data sets."""
    s = finite_scores(s)
    fn, y, codes, n_pat, counts = _prepared(y, s, patient, metric, n_boot, seed)
    return _resampled_values(fn, y, s, codes, n_pat, counts)


def metric_bootstrap(y, s, patient, metric: str | Callable, n_boot: int = 200, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """One model's ``metric`` with a patient-level bootstrap (1 - alpha) percentile interval, on the
    resamples :func:`paired_bootstrap` uses for the same seed (so its intervals and the paired
    differences describe the same resampled cohorts). ``n_valid``: resamples where it is defined."""
    s = finite_scores(s)
    if len(s) != len(np.asarray(y)):
        raise ValueError(f"labels and scores differ in length: {len(np.asarray(y))} vs {len(s)}")
    fn, y, codes, n_pat, counts = _prepared(y, s, patient, metric, n_boot, seed)
    values = _resampled_values(fn, y, s, codes, n_pat, counts)
    lo, hi = _ci(values, alpha)
    return {"value": _safe(fn, y, s), "ci_low": lo, "ci_high": hi, "n_boot": n_boot,
            "n_valid": int(np.isfinite(values).sum()), "seed": seed, "alpha": alpha, "unit": "patient",
            "n_patients": n_pat}


def paired_bootstrap(y, s_a, s_b, patient, metric: str | Callable, n_boot: int = 200, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Paired patient-level bootstrap of ``metric(y, s_a) - metric(y, s_b)``.

    Both models are scored on the *same* resamples (same patients, same multiplicities), so what
    varies between them is only the model. ``metric`` is a name from
    ``dermstack.metrics.TASK_METRICS`` or any ``fn(y, score) -> float``; ``y`` and the scores may be
    binary ``(n,)``, multiclass ``(n,)`` labels with ``(n, C)`` scores, or multi-label ``(n, C)``.

    Returns ``value_a``, ``value_b``, ``diff`` (on all rows), ``mean_diff`` (over resamples),
    ``ci_low``/``ci_high`` (percentile 1 - alpha interval of the resampled differences) and
    ``p_value``: two-sided, ``min(1, 2 * min(share of differences <= 0, share >= 0))`` over the
    resamples where both values are defined; 1 for identical models, 0 when every resample favours
    one model (read it as p < 1 / n_valid). ``roc_auc``, ``pauc_tpr80``, ``macro_roc_auc`` (weighted
    ROC curves, per class) and ``macro_f1`` (weighted confusion counts) are computed on all resamples at once
    (:func:`_resampled_values`); any other metric is called on each resample's rows.
    """
    s_a, s_b = finite_scores(s_a, "score of model a"), finite_scores(s_b, "score of model b")
    if s_a.shape != s_b.shape or len(s_a) != len(np.asarray(y)):
        raise ValueError(f"labels {np.asarray(y).shape} and scores {s_a.shape}, {s_b.shape} must have the same rows")
    fn, y, codes, n_pat, counts = _prepared(y, s_a, patient, metric, n_boot, seed)
    diffs = _resampled_values(fn, y, s_a, codes, n_pat, counts) - _resampled_values(fn, y, s_b, codes, n_pat, counts)
    value_a, value_b = _safe(fn, y, s_a), _safe(fn, y, s_b)
    d = diffs[np.isfinite(diffs)]
    lo, hi = _ci(diffs, alpha)
    p = float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))) if len(d) else float("nan")
    return {"value_a": value_a, "value_b": value_b, "diff": value_a - value_b,
            "mean_diff": float(d.mean()) if len(d) else float("nan"), "ci_low": lo, "ci_high": hi,
            "p_value": p, "n_boot": n_boot, "n_valid": int(len(d)), "seed": seed, "alpha": alpha,
            "unit": "patient", "n_patients": n_pat}


def _curve_metric_values(y, s, codes, n_pat, counts, min_tpr: float) -> np.ndarray:
    """ROC areas of every resample at once; NaN where a resample lacks a class."""
    values = np.full(len(counts), np.nan)
    if not y.any() or y.all():
        return values
    for rows, tpr, fpr, n_pos, n_neg in _ResampledCurves(y, s, codes, n_pat).chunks(counts):
        values[rows] = np.where((n_pos > 0) & (n_neg > 0), _area_above(tpr, fpr, min_tpr), np.nan)
    return values


def _macro_auc_values(y, s, codes, n_pat, counts) -> np.ndarray:
    """``metrics.macro_roc_auc`` of every resample at once: each class's one-vs-rest ROC-AUC from the
    resampled curves, averaged over the classes with both outcomes in the resample (NaN: none)."""
    onehot = y if y.ndim == 2 else np.eye(s.shape[1], dtype=int)[y.astype(int)]
    per_class = np.stack([_curve_metric_values(*binary_inputs(onehot[:, k], s[:, k]), codes, n_pat, counts, 0.0)
                          for k in range(s.shape[1])], axis=1)
    with warnings.catch_warnings():  # a resample without any class of both outcomes is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_class, axis=1)


def _macro_f1_values(y, s, codes, n_pat, counts) -> np.ndarray:
    """``metrics.macro_f1`` of every resample at once: a resample's TP, predicted and true counts
    per class are its patient counts times each patient's counts (argmax decisions for ``(n,)``
    labels, ``score >= 0.5`` per class for one-hot labels, as ``macro_f1`` decides)."""
    if y.ndim == 2:
        pred, true = s >= 0.5, y.astype(bool)
    else:
        eye = np.eye(s.shape[1], dtype=bool)
        pred, true = eye[s.argmax(axis=1)], eye[y.astype(int)]

    def per_patient(m: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(codes, weights=m[:, c], minlength=n_pat) for c in range(m.shape[1])], axis=1)

    ct = counts.astype(float)
    tp, n_pred, n_true = (ct @ per_patient(m.astype(float)) for m in (pred & true, pred, true))
    return f1_from_counts(tp, n_pred, n_true).mean(axis=1)


def _generic_values(fn, y, s, codes, counts) -> np.ndarray:
    """Any metric: the rows of each resample, repeated as often as their patient was drawn."""
    # Rows in descending-score order: the metrics are invariant to row order, and sorting already
    # sorted rows is cheaper.
    order = np.argsort(-s, kind="stable") if s.ndim == 1 else np.arange(len(y))
    values = np.full(len(counts), np.nan)
    for b, row in enumerate(counts):
        idx = np.repeat(order, row[codes[order]])
        values[b] = _safe(fn, y[idx], s[idx])
    return values
