"""TaskKind: binary | multiclass | multilabel and what the kind of task decides.

A bottom module: it imports nothing of dermstack, so the config, metrics and every stage can ask it.
"""
from __future__ import annotations

import numpy as np


class TaskKind(str):
    """``binary`` | ``multiclass`` | ``multilabel``, and what each kind decides, in one place: the
    number of score columns, the link from model margins to scores, stratification. A ``str``, so
    JSON keeps working; other modules ask its properties (``binary``, ``exclusive``, ``multilabel``)
    instead of comparing strings. Metrics per kind: ``metrics.TASK_METRICS``, keyed by TaskKind."""

    KINDS = ("binary", "multiclass", "multilabel")
    BINARY: TaskKind
    MULTICLASS: TaskKind
    MULTILABEL: TaskKind

    def __new__(cls, value: str) -> TaskKind:
        if isinstance(value, TaskKind):
            return value
        if value not in cls.KINDS:
            raise ValueError(f"unknown task {value!r}; known: {list(cls.KINDS)}")
        return super().__new__(cls, value)

    @property
    def binary(self) -> bool:
        """One score per row (the positive class's probability), class name "target"."""
        return str.__eq__(self, "binary")

    @property
    def exclusive(self) -> bool:
        """Exactly one class per row: softmax over the classes, labels are class indices."""
        return str.__eq__(self, "multiclass")

    @property
    def multilabel(self) -> bool:
        """Independent 0/1 labels per class: one sigmoid (one binary model) per class."""
        return str.__eq__(self, "multilabel")

    def n_outputs(self, classes: list[str]) -> int:
        return 1 if self.binary else len(classes)

    def squeeze(self, scores: np.ndarray) -> np.ndarray:
        """(n, 1) -> (n,) for a binary task; (n, C) unchanged otherwise."""
        scores = np.asarray(scores)
        return scores[:, 0] if self.binary and scores.ndim == 2 else scores

    def link(self, margin: np.ndarray) -> np.ndarray:
        """Raw model output (log-odds, per-class margins) -> scores: softmax over the classes when
        they are exclusive, a sigmoid per output otherwise."""
        margin = np.asarray(margin, dtype=np.float64)
        if self.exclusive:
            z = np.exp(margin - margin.max(axis=-1, keepdims=True))
            return z / z.sum(axis=-1, keepdims=True)
        return 1 / (1 + np.exp(-margin))

    def stratum(self, y: np.ndarray) -> np.ndarray:
        """The class a row is stratified on: its label, or a multi-label row's first positive class."""
        y = np.asarray(y)
        return y.argmax(axis=1) if self.multilabel else y

    def positives(self, labels: np.ndarray, classes: list[str]) -> dict[str, int]:
        """Rows per class (binary: the positive class ``classes[0]``; multi-label: positive rows)."""
        if self.binary:
            return {classes[0]: int((labels == 1).sum())}
        if self.exclusive:
            return {c: int((labels == i).sum()) for i, c in enumerate(classes)}
        return {c: int(labels[:, j].sum()) for j, c in enumerate(classes)}

    def single_class(self, labels: np.ndarray) -> bool:
        """No class to tell apart: one label value (binary, multiclass), no class column with both
        outcomes (multi-label)."""
        labels = np.asarray(labels)
        if self.multilabel:
            return not (labels.min(axis=0) < labels.max(axis=0)).any() if len(labels) else True
        return len(np.unique(labels)) < 2

    def lacking_classes(self, labels: np.ndarray, classes: list[str]) -> list:
        """Classes with no (positive) row among ``labels``."""
        if self.binary:
            return [c for c in (0, 1) if not (labels == c).any()]
        if self.exclusive:
            return [c for i, c in enumerate(classes) if not (labels == i).any()]
        return [f"positive {c}" for j, c in enumerate(classes) if not labels[:, j].any()]


TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.MULTILABEL = (TaskKind(k) for k in TaskKind.KINDS)
