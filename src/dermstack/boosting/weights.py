"""Sample weights from ``class_weight``: positive weights (binary, multi-label) or class weights (multiclass).

``none`` (all 1), ``balanced`` (negatives/positives, or n / (C * n_c)), ``sqrt`` (the square root of
balanced: a milder push that suits F1 at a fixed 0.5 threshold) or a number (the positive weight).
"""
from __future__ import annotations

import numpy as np

from dermstack.errors import ConfigError
from dermstack.taskkind import TaskKind

CHOICES = ("none", "balanced", "sqrt")


def _factor(balanced: np.ndarray, how) -> np.ndarray:
    if how in (None, "none"):
        return np.ones_like(balanced)
    if how == "balanced":
        return balanced
    if how == "sqrt":
        return np.sqrt(balanced)
    if isinstance(how, (int, float)) and not isinstance(how, bool) and how > 0:
        return np.full_like(balanced, float(how))
    raise ConfigError(f"model param class_weight must be one of {CHOICES} or a positive number, got {how!r}")


def sample_weights(task: str, y: np.ndarray, how, n_classes: int = 1) -> np.ndarray | None:
    """Weights for training labels ``y``: (n,) for binary/multiclass, (n, C) for multi-label; None when all 1."""
    if how in (None, "none"):
        return None
    y = np.asarray(y)
    if TaskKind(task).exclusive:
        counts = np.bincount(y, minlength=n_classes).astype(float)
        balanced = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 1.0)
        w = _factor(balanced, how)[y]
        return w / w.mean()
    y2 = y[:, None] if y.ndim == 1 else y
    pos = y2.sum(axis=0).astype(float)
    neg = len(y2) - pos
    # a class with no positive or no negative row here (a fold of a rare or common class): nothing to balance
    balanced = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    w = np.where(y2 == 1, _factor(balanced, how)[None, :], 1.0)
    return w[:, 0] if y.ndim == 1 else w
