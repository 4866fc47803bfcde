"""A threshold chosen on one data set, applied to another: what it promised there, what it realises here.

:func:`chosen_thresholds` finds the score thresholds of the operating points
:func:`~dermstack.clinical.bootstrap.operating_points` reports (the same ROC vertices: the first that
reaches a sensitivity, the last that keeps a specificity); :func:`realised` applies one threshold
to other labelled data (flagged when ``score >= threshold``) and gives the sensitivity,
specificity and lesions flagged per cancer found there, with patient-bootstrap intervals on the
resamples every other interval uses (:func:`~dermstack.clinical.bootstrap.patient_resamples`).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_curve

from dermstack.clinical.bootstrap import _ci, patient_resamples
from dermstack.clinical.checks import TOL, binary_inputs, patient_codes
from dermstack.clinical.operating import _pct


def chosen_thresholds(y, s, sensitivities=(0.8, 0.95), specificities=(0.9, 0.95)) -> dict[str, dict]:
    """``{name: {"threshold", "target", "sensitivity", "specificity"}}`` of each operating point on
    ``(y, s)``, named as ``metrics.json`` ``clinical`` names it (``specificity_at_sensitivity_80``
    is the threshold that reaches sensitivity 0.8 ...); the rates are those on ``(y, s)``."""
    y, s = binary_inputs(y, s)
    if not y.any() or y.all():
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thr = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    out = {}
    for q in sensitivities:
        j = min(int((tpr < q - TOL).sum()), len(tpr) - 1)
        out[f"specificity_at_sensitivity_{_pct(q)}"] = {"target": {"sensitivity": q}, "threshold": float(thr[j]),
                                                         "sensitivity": float(tpr[j]), "specificity": float(1 - fpr[j])}
    for q in specificities:
        j = max(int(((1.0 - fpr) >= q - TOL).sum()) - 1, 0)
        out[f"sensitivity_at_specificity_{_pct(q)}"] = {"target": {"specificity": q}, "threshold": float(thr[j]),
                                                         "sensitivity": float(tpr[j]), "specificity": float(1 - fpr[j])}
    return out


def realised(y, s, patient, threshold: float, n_boot: int = 200, seed: int = 0, alpha: float = 0.05) -> dict:
    """Sensitivity, specificity and lesions flagged per cancer found of ``score >= threshold`` on
    ``(y, s)``, each ``{"value", "ci95"}`` over ``n_boot`` patient resamples (NaN where undefined)."""
    y, s = binary_inputs(y, s)
    codes, n_pat = patient_codes(patient, len(y))
    flag = s >= threshold
    per = np.stack([np.bincount(codes, weights=w.astype(float), minlength=n_pat)
                    for w in (flag & y, y, flag & ~y, ~y)])  # (4, patients): tp, pos, fp, neg
    counts = np.vstack([np.ones(n_pat), patient_resamples(n_pat, n_boot, seed)])  # row 0: the data as it is
    tp, pos, fp, neg = (counts @ per.T).T
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {"sensitivity": tp / pos, "specificity": 1 - fp / neg, "flagged_per_cancer": (tp + fp) / tp}
    out = {}
    for name, v in values.items():
        lo, hi = _ci(v[1:], alpha)
        out[name] = {"value": float(v[0]), "ci95": [lo, hi], "n_valid": int(np.isfinite(v[1:]).sum())}
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "n_patients": n_pat}
    return out
