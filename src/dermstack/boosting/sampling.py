"""Per-fold resampling of the training part for rare-positive binary tasks (ISIC 2024 winners' recipe).

Positives are first over-sampled (repeated) until positives/negatives reaches ``positive_oversample``,
then negatives are under-sampled until positives/negatives reaches ``negative_ratio`` (the
``imblearn`` ``sampling_strategy`` meaning: the minority/majority ratio after resampling). A ratio
the data already exceeds leaves it unchanged; 0 disables that step.

Every validation row is scored for the out-of-fold predictions. Early stopping watches fewer
(:func:`stopping_rows`): the validation positives and their negatives under-sampled to the same
``negative_ratio``. AUC does not depend on the ratio of negatives to positives, so the stopping round
is the same in expectation; at ISIC 2024 scale (80 positives among 80,000 validation rows) the
libraries then score 8,000 rows a round instead of 80,000.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dermstack.config import SamplingConfig  # noqa: F401  (the schema lives with the run config; re-exported)

log = logging.getLogger(__name__)


def resample(idx: np.ndarray, y: np.ndarray, cfg: SamplingConfig | None, seed: int) -> np.ndarray:
    """Row indices (into the full table) of the resampled part ``idx`` of a fold, in ascending order.

    ``y`` are the binary labels of the full table."""
    if cfg is None:
        return idx
    rng = np.random.default_rng(seed)
    pos, neg = idx[y[idx] == 1], idx[y[idx] == 0]
    if len(pos) == 0 or len(neg) == 0:
        return idx
    if cfg.positive_oversample and len(pos) / len(neg) < cfg.positive_oversample:
        want = int(np.ceil(cfg.positive_oversample * len(neg)))
        pos = np.concatenate([pos, rng.choice(pos, want - len(pos), replace=True)])
    if cfg.negative_ratio and len(pos) / len(neg) < cfg.negative_ratio:
        keep = int(np.ceil(len(pos) / cfg.negative_ratio))
        neg = rng.choice(neg, keep, replace=False)
    out = np.sort(np.concatenate([pos, neg]))
    log.debug("resampled %d rows to %d (%d positives)", len(idx), len(out), len(pos))
    return out


def stopping_rows(idx: np.ndarray, y: np.ndarray, cfg: SamplingConfig | None, seed: int) -> np.ndarray:
    """Row indices of the validation part ``idx`` that early stopping watches, in ascending order: every
    positive and the negatives under-sampled to ``cfg.negative_ratio`` (all rows when it is off or met)."""
    return idx if cfg is None else resample(idx, y, dataclasses.replace(cfg, positive_oversample=0), seed)
