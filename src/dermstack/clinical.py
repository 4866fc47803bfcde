"""Clinical operating metrics and honest model comparison (issue 15, points 2 and 3).

Pure functions on arrays (scores follow the conventions in docs/ARCHITECTURE.md: ``(n,)`` binary,
``(n, C)`` otherwise); the caller puts their results in ``metrics.json`` and the report.

Conventions shared by every function here:

* A lesion is *flagged* at threshold ``t`` when ``score >= t``. Tied scores cannot be separated by
  any threshold, so every operating point is a vertex of the ROC curve (one vertex per distinct
  score, no interpolation): a tie group is flagged whole or not at all.
* "Reaches sensitivity q" means ``TP / P >= q`` (likewise for specificity, computed as ``TN / N``)
  with a tolerance of 1e-12, so 19 of 20 reaches 0.95 despite floating point.
* A value that is undefined on the data (no positives for a sensitivity, no negatives for a
  specificity) is NaN, never an exception, so bootstrap resamples that lack a class just drop out.
* Bootstraps resample *patients* with replacement and keep all of a patient's lesions together
  (lesions of one patient are correlated, so resampling rows gives intervals that are too narrow).
  A resample is a count per patient; a lesion's weight is its patient's count.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy import sparse
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from dermstack import metrics as _metrics
from dermstack.crossfit import apply_by_fold, fit_other_folds
from dermstack.taskkind import TaskKind

TOL = 1e-12


# ---------------------------------------------------------------------------------------------
# input checks


def _finite_scores(s, what: str = "score") -> np.ndarray:
    s = np.asarray(s, dtype=float)
    bad = np.flatnonzero(~np.isfinite(s.reshape(len(s), -1)).all(axis=1))
    if len(bad):
        raise ValueError(f"{what} is not finite at row {bad[0]} ({len(bad)} such rows)")
    return s


def _binary_labels(y, what: str = "binary label") -> np.ndarray:
    y = np.asarray(y)
    bad = np.argwhere((y != 0) & (y != 1))
    if len(bad):
        where = f"row {bad[0][0]}" + (f", column {bad[0][1]}" if y.ndim == 2 else "")
        raise ValueError(f"{what} must be 0 or 1; {where} has {y[tuple(bad[0])]!r}")
    return y.astype(bool)


def _binary_inputs(y, s) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).ravel(), np.asarray(s).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {len(y)} vs {len(s)}")
    return _binary_labels(y), _finite_scores(s)


def _patient_codes(patient, n: int) -> tuple[np.ndarray, int]:
    """Integer code per row (0..n_patients-1) for any patient labels."""
    patient = np.asarray(patient).ravel()
    if len(patient) != n:
        raise ValueError(f"patient ids and labels differ in length: {len(patient)} vs {n}")
    uniq, inv = np.unique(patient, return_inverse=True)
    return inv.ravel(), len(uniq)


# ---------------------------------------------------------------------------------------------
# operating points on a ROC curve


def _operating(tpr: np.ndarray, fpr: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray,
               specificities, sensitivities, flag_sensitivity: float) -> dict[str, np.ndarray]:
    """Operating points of ``B`` ROC curves at once.

    ``tpr``, ``fpr``: ``(B, m)`` vertices, thresholds descending, vertex 0 = nothing flagged;
    ``n_pos``, ``n_neg``: ``(B,)`` (weighted) class totals. Shared by the point estimates (one curve
    from sklearn) and the bootstrap (one curve per resample) so both pick points by one rule.
    """
    rows = np.arange(tpr.shape[0])
    no_pos, no_neg = n_pos <= 0, n_neg <= 0
    out = {}
    for q in specificities:
        # fpr is non-decreasing, so vertices with specificity >= q are a prefix; its last has the highest tpr
        j = ((1.0 - fpr) >= q - TOL).sum(axis=1) - 1
        out[f"sensitivity_at_specificity_{_pct(q)}"] = np.where(no_pos | no_neg, np.nan, tpr[rows, np.maximum(j, 0)])
    first = {}
    for q in {*sensitivities, flag_sensitivity}:
        # first vertex that reaches q: the fewest lesions flagged, hence the lowest fpr among those reaching q
        first[q] = np.minimum((tpr < q - TOL).sum(axis=1), tpr.shape[1] - 1)
    for q in sensitivities:
        out[f"specificity_at_sensitivity_{_pct(q)}"] = np.where(no_pos | no_neg, np.nan, 1.0 - fpr[rows, first[q]])
    j = first[flag_sensitivity]
    found = tpr[rows, j] * n_pos
    flagged = found + np.where(no_neg, 0.0, fpr[rows, j] * n_neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[f"flagged_per_cancer_at_sensitivity_{_pct(flag_sensitivity)}"] = np.where(no_pos, np.nan, flagged / found)
    return out


def _pct(q: float) -> str:
    return f"{100 * q:g}"


def _sklearn_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ROC vertex (``drop_intermediate=False`` keeps the collinear ones), as ``(1, m)`` rows.
    A missing class makes its rate 0/0; it is set to 0 (no negatives: nothing is a false positive)
    and :func:`_operating` returns NaN for the values that need it."""
    if not y.any():
        return np.zeros((1, 2)), np.zeros((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return tpr[None, :], np.nan_to_num(fpr)[None, :]


def _point(y, s, *, specificities=(), sensitivities=(), flag_sensitivity=0.8) -> dict[str, float]:
    y, s = _binary_inputs(y, s)
    tpr, fpr = _sklearn_curve(y, s)
    n_pos = np.array([float(y.sum())])
    vals = _operating(tpr, fpr, n_pos, len(y) - n_pos, specificities, sensitivities, flag_sensitivity)
    return {k: float(v[0]) for k, v in vals.items()}


def flagged_per_cancer(y, s, sensitivity: float = 0.8) -> float:
    """Lesions flagged per cancer found at the first threshold that reaches ``sensitivity``.

    The threshold is the highest score ``t`` for which flagging ``score >= t`` finds at least
    ``sensitivity`` of the cancers; a tie group at ``t`` is flagged whole (so the sensitivity reached
    can exceed the target). Result: ``#(score >= t) / #(cancer and score >= t)``, 1.0 at best; NaN
    when there is no cancer. The ISIC 2024 challenge paper reports 51.57 for its best model.
    """
    return _point(y, s, flag_sensitivity=sensitivity)[f"flagged_per_cancer_at_sensitivity_{_pct(sensitivity)}"]


def sensitivity_at_specificity(y, s, specificity: float) -> float:
    """Highest sensitivity among ROC vertices (``sklearn.metrics.roc_curve``) whose specificity is at
    least ``specificity``: the lowest threshold that keeps specificity; a tie group that would push
    specificity below the target is left unflagged. NaN when a class is absent."""
    return _point(y, s, specificities=(specificity,))[f"sensitivity_at_specificity_{_pct(specificity)}"]


def specificity_at_sensitivity(y, s, sensitivity: float) -> float:
    """Specificity at the first ROC vertex (``sklearn.metrics.roc_curve``, highest threshold) whose
    sensitivity reaches ``sensitivity``; a tie group is flagged whole, never split. NaN when a class
    is absent."""
    return _point(y, s, sensitivities=(sensitivity,))[f"specificity_at_sensitivity_{_pct(sensitivity)}"]


# ---------------------------------------------------------------------------------------------
# top-k per patient


def _topk_hits(y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_patients: int,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positives among each patient's top ``k``, positives of each patient), both ``(n_patients,)``.

    Ties: a tie group straddling rank ``k`` shares the remaining slots evenly (each member counts
    ``slots / group size``), the expectation of a random tie-break, independent of row order.
    """
    order = np.lexsort((-s, codes))  # by patient, then score descending
    p, sc = codes[order], s[order]
    n = len(order)
    pos = np.arange(n)
    new_patient = np.r_[True, p[1:] != p[:-1]]
    new_group = new_patient | np.r_[True, sc[1:] != sc[:-1]]
    patient_start = np.maximum.accumulate(np.where(new_patient, pos, 0))
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    group_id = np.cumsum(new_group) - 1
    group_size = np.bincount(group_id)[group_id]
    above = group_start - patient_start  # lesions of the same patient scored strictly higher
    credit = np.clip((k - above) / group_size, 0.0, 1.0)
    yy = y[order]
    hits = np.bincount(p, weights=credit * yy, minlength=n_patients)
    positives = np.bincount(p, weights=yy.astype(float), minlength=n_patients)
    return hits, positives


def top_k_sensitivity(y, s, patient, k: int = 15) -> float:
    """Share of all cancers that are among their patient's ``k`` highest-scored lesions, pooled
    over patients (the ISIC 2024 top-15 retrieval prize): ``sum_p hits_p / sum_p positives_p``.

    A patient with fewer than ``k`` lesions has all of them retrieved. A tie group straddling rank
    ``k`` shares the remaining slots evenly (expected value of a random tie-break). NaN when there
    is no cancer.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    y, s = _binary_inputs(y, s)
    codes, n_pat = _patient_codes(patient, len(y))
    hits, positives = _topk_hits(y, s, codes, n_pat, k)
    total = positives.sum()
    return float(hits.sum() / total) if total > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# patient bootstrap


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
    :func:`_operating` picks where sensitivity changes) and trapezoid areas are exact on the
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
    y, s = _binary_inputs(y, s)
    codes, n_pat = _patient_codes(patient, len(y))
    point = _point(y, s, specificities=specificities, sensitivities=sensitivities, flag_sensitivity=flag_sensitivity)
    hits, positives = _topk_hits(y, s, codes, n_pat, k)
    topk = f"top_{k}_sensitivity"
    point[topk] = float(hits.sum() / positives.sum()) if positives.sum() > 0 else float("nan")

    counts = patient_resamples(n_pat, n_boot, seed)
    boot = {name: np.full(n_boot, np.nan) for name in point}
    with np.errstate(invalid="ignore", divide="ignore"):
        boot[topk] = (counts @ hits) / (counts @ positives)
    if y.any():
        for rows, *curves in _ResampledCurves(y, s, codes, n_pat).chunks(counts):
            for name, v in _operating(*curves, specificities, sensitivities, flag_sensitivity).items():
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
        return _curve_metric_values(*_binary_inputs(y, s), codes, n_pat, counts, _CURVE_METRICS[fn])
    if fn is _metrics.macro_f1 and s.ndim == 2:
        return _macro_f1_values(y, s, codes, n_pat, counts)
    if fn is _metrics.macro_roc_auc and s.ndim == 2:
        return _macro_auc_values(y, s, codes, n_pat, counts)
    return _generic_values(fn, y, s, codes, counts)


def _prepared(y, s, patient, metric, n_boot: int, seed: int):
    fn = _resolve_metric(metric)
    y = np.asarray(y)
    codes, n_pat = _patient_codes(patient, len(y))
    return fn, y, codes, n_pat, patient_resamples(n_pat, n_boot, seed)


def metric_bootstrap(y, s, patient, metric: str | Callable, n_boot: int = 200, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """One model's ``metric`` with a patient-level bootstrap (1 - alpha) percentile interval, on the
    resamples :func:`paired_bootstrap` uses for the same seed (so its intervals and the paired
    differences describe the same resampled cohorts). ``n_valid``: resamples where it is defined."""
    s = _finite_scores(s)
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
    s_a, s_b = _finite_scores(s_a, "score of model a"), _finite_scores(s_b, "score of model b")
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
    per_class = np.stack([_curve_metric_values(*_binary_inputs(onehot[:, k], s[:, k]), codes, n_pat, counts, 0.0)
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
    return _f1_from_counts(tp, n_pred, n_true).mean(axis=1)


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


# ---------------------------------------------------------------------------------------------
# per-class decision rules that maximise macro F1 (multiclass, multi-label)


def _f1_from_counts(tp, n_pred, n_true) -> np.ndarray:
    """Per-class F1 = 2 TP / (predicted + true); 0 where both are 0, as sklearn's zero_division=0."""
    den = n_pred + n_true
    return np.divide(2.0 * tp, den, out=np.zeros(np.broadcast(tp, den).shape), where=den > 0)


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
        f1 = _f1_from_counts(tp, last + 1, yc.sum())
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
    return _f1_from_counts(tp, n_pred, n_true).mean(axis=1)


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
    return _metrics.macro_f1(y, decisions.astype(float), multilabel=True)


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
    s = _finite_scores(s)
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
        y = _binary_labels(y, "multi-label label").astype(int)
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
