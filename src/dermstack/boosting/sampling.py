"""Per-fold resampling of the training part for rare-positive binary tasks (ISIC 2024 winners' recipe).

Positives are first over-sampled (repeated) until positives/negatives reaches ``positive_oversample``,
then negatives are under-sampled until positives/negatives reaches ``negative_ratio`` (the
``imblearn`` ``sampling_strategy`` meaning: the minority/majority ratio after resampling). A ratio
the data already exceeds leaves it unchanged; 0 disables that step. Validation rows are never resampled.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from dermstack.errors import ConfigError
from dermstack.task import TaskKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    negative_ratio: float = 0.01
    positive_oversample: float = 0.003

    @classmethod
    def from_dict(cls, raw: dict | None, task: str) -> "SamplingConfig | None":
        """``None`` for non-binary tasks (resampling is binary only) or when both steps are off."""
        raw = dict(raw or {})
        if not TaskKind(task).binary:
            if raw:
                raise ConfigError(f"[[models]] sampling is for binary tasks only; this task is {task}")
            return None
        known = {"negative_ratio", "positive_oversample"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"[[models]] sampling: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**{k: float(v) for k, v in raw.items()})
        for k in known:
            if not 0 <= getattr(cfg, k) <= 1:
                raise ConfigError(f"[[models]] sampling.{k} must be in [0, 1], got {getattr(cfg, k)}")
        return cfg if (cfg.negative_ratio or cfg.positive_oversample) else None


def resample(idx: np.ndarray, y: np.ndarray, cfg: SamplingConfig | None, seed: int) -> np.ndarray:
    """Row indices (into the full table) of the resampled training part, in ascending order.

    ``idx`` are the fold's training rows, ``y`` the binary labels of the full table."""
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
    log.debug("resampled %d training rows to %d (%d positives)", len(idx), len(out), len(pos))
    return out
