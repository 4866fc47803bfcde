"""Operating points on a ROC curve (flagged per cancer, sensitivity / specificity at a target) and
the top-k lesions per patient."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from dermstack.clinical.checks import TOL, binary_inputs, patient_codes


def operating(tpr: np.ndarray, fpr: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray,
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
    and :func:`operating` returns NaN for the values that need it."""
    if not y.any():
        return np.zeros((1, 2)), np.zeros((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _ = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return tpr[None, :], np.nan_to_num(fpr)[None, :]


def point_values(y, s, *, specificities=(), sensitivities=(), flag_sensitivity=0.8) -> dict[str, float]:
    y, s = binary_inputs(y, s)
    tpr, fpr = _sklearn_curve(y, s)
    n_pos = np.array([float(y.sum())])
    vals = operating(tpr, fpr, n_pos, len(y) - n_pos, specificities, sensitivities, flag_sensitivity)
    return {k: float(v[0]) for k, v in vals.items()}


def flagged_per_cancer(y, s, sensitivity: float = 0.8) -> float:
    """Lesions flagged per cancer found at the first threshold that reaches ``sensitivity``.

    The threshold is the highest score ``t`` for which flagging ``score >= t`` finds at least
    ``sensitivity`` of the cancers; a tie group at ``t`` is flagged whole (so the sensitivity reached
    can exceed the target). Result: ``#(score >= t) / #(cancer and score >= t)``, 1.0 at best; NaN
    when there is no cancer. The ISIC 2024 challenge paper reports 51.57 for its best model.
    """
    return point_values(y, s, flag_sensitivity=sensitivity)[f"flagged_per_cancer_at_sensitivity_{_pct(sensitivity)}"]


def sensitivity_at_specificity(y, s, specificity: float) -> float:
    """Highest sensitivity among ROC vertices (``sklearn.metrics.roc_curve``) whose specificity is at
    least ``specificity``: the lowest threshold that keeps specificity; a tie group that would push
    specificity below the target is left unflagged. NaN when a class is absent."""
    return point_values(y, s, specificities=(specificity,))[f"sensitivity_at_specificity_{_pct(specificity)}"]


def rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    """(sensitivity, specificity) of flagging ``s >= t`` (boolean ``y``); NaN for an absent class."""
    flagged = s >= t
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = float((flagged & y).sum() / n_pos) if n_pos else float("nan")
    spec = float((~flagged & ~y).sum() / n_neg) if n_neg else float("nan")
    return sens, spec


def specificity_threshold(y, s, specificity: float) -> dict:
    """The threshold of :func:`sensitivity_at_specificity`: the lowest score ``t`` whose flagging
    ``score >= t`` keeps ``specificity`` (None when even the highest score breaks it, or a class is
    absent), with the sensitivity and specificity it has on these rows."""
    y, s = binary_inputs(y, s)
    out = {"target_specificity": specificity, "threshold": None, "sensitivity": float("nan"), "specificity": float("nan")}
    neg = np.sort(s[~y])
    if not y.any() or not len(neg):
        return out
    distinct = np.unique(s)
    kept = np.searchsorted(neg, distinct, "left") / len(neg) >= specificity - TOL  # negatives below each candidate
    if kept.any():
        out["threshold"] = float(distinct[np.argmax(kept)])
        out["sensitivity"], out["specificity"] = rates(y, s, out["threshold"])
    return out


def specificity_at_sensitivity(y, s, sensitivity: float) -> float:
    """Specificity at the first ROC vertex (``sklearn.metrics.roc_curve``, highest threshold) whose
    sensitivity reaches ``sensitivity``; a tie group is flagged whole, never split. NaN when a class
    is absent."""
    return point_values(y, s, sensitivities=(sensitivity,))[f"specificity_at_sensitivity_{_pct(sensitivity)}"]


# ---------------------------------------------------------------------------------------------
# top-k per patient


def topk_hits(y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_patients: int,
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
    y, s = binary_inputs(y, s)
    codes, n_pat = patient_codes(patient, len(y))
    hits, positives = topk_hits(y, s, codes, n_pat, k)
    total = positives.sum()
    return float(hits.sum() / total) if total > 0 else float("nan")
