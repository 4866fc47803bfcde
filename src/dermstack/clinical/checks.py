"""Input checks shared by the clinical metrics: finite scores, 0/1 labels, patient codes."""
from __future__ import annotations

import numpy as np

TOL = 1e-12


# ---------------------------------------------------------------------------------------------
# input checks


def finite_scores(s, what: str = "score") -> np.ndarray:
    s = np.asarray(s, dtype=float)
    bad = np.flatnonzero(~np.isfinite(s.reshape(len(s), -1)).all(axis=1))
    if len(bad):
        raise ValueError(f"{what} is not finite at row {bad[0]} ({len(bad)} such rows)")
    return s


def binary_labels(y, what: str = "binary label") -> np.ndarray:
    y = np.asarray(y)
    bad = np.argwhere((y != 0) & (y != 1))
    if len(bad):
        where = f"row {bad[0][0]}" + (f", column {bad[0][1]}" if y.ndim == 2 else "")
        raise ValueError(f"{what} must be 0 or 1; {where} has {y[tuple(bad[0])]!r}")
    return y.astype(bool)


def binary_inputs(y, s) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).ravel(), np.asarray(s).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {len(y)} vs {len(s)}")
    return binary_labels(y), finite_scores(s)


def patient_codes(patient, n: int) -> tuple[np.ndarray, int]:
    """Integer code per row (0..n_patients-1) for any patient labels."""
    patient = np.asarray(patient).ravel()
    if len(patient) != n:
        raise ValueError(f"patient ids and labels differ in length: {len(patient)} vs {n}")
    uniq, inv = np.unique(patient, return_inverse=True)
    return inv.ravel(), len(uniq)


def f1_from_counts(tp, n_pred, n_true) -> np.ndarray:
    """Per-class F1 = 2 TP / (predicted + true); 0 where both are 0, as sklearn's zero_division=0."""
    den = n_pred + n_true
    return np.divide(2.0 * tp, den, out=np.zeros(np.broadcast(tp, den).shape), where=den > 0)
