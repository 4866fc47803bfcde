"""TaskSpec: the training labels of a task (its kind: ``taskkind.TaskKind``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError, DataError, did_you_mean
from dermstack.metrics import PRIMARY_METRIC, TASK_METRICS
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)


def as_columns(values) -> np.ndarray:
    """Per-row values as (rows, columns): (n,) -> (n, 1), (n, C) unchanged, (n, M, C) -> (n, M*C).
    Also for n = 0 rows (a dataset without test rows), where ``reshape(n, -1)`` cannot infer the width."""
    a = np.asarray(values)
    return a.reshape(len(a), int(np.prod(a.shape[1:])))


#: fewer (positive) training rows than this in a class and its metrics are noted as resting on too few
MIN_POSITIVES = 5


@dataclass
class TaskSpec:
    """Labels of the training rows, aligned with ``image_ids`` (the table's training order).

    ``y`` is (n,) 0/1 for binary, (n,) class indices for multiclass, (n, C) 0/1 for multilabel.
    ``classes`` names the score columns: ["target"] for binary, the class names otherwise.
    """

    kind: TaskKind
    classes: list[str]
    image_ids: list[str]
    y: np.ndarray
    target_name: str = "malignant"

    def __post_init__(self) -> None:
        self.kind = TaskKind(self.kind)

    @property
    def n_outputs(self) -> int:
        return self.kind.n_outputs(self.classes)

    @property
    def metrics(self) -> dict:
        return TASK_METRICS[self.kind]

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    def squeeze(self, scores: np.ndarray) -> np.ndarray:
        return self.kind.squeeze(scores)

    def link(self, margin: np.ndarray) -> np.ndarray:
        return self.kind.link(margin)

    def lacking_classes(self, labels: np.ndarray) -> list:
        return self.kind.lacking_classes(labels, self.classes)

    def few_positives(self, minimum: int = MIN_POSITIVES) -> dict[str, int]:
        """Classes with fewer than ``minimum`` (positive) training rows: their ROC-AUC, pAUC, F1 and
        bootstrap intervals rest on a handful of rows and mean little."""
        return {c: n for c, n in self.kind.positives(self.y, self.classes).items() if n < minimum}

    def few_positive_notes(self) -> list[str]:
        """One sentence per class of :meth:`few_positives`, for metrics.json, the printout and the report."""
        return [f"class {c!r} has {n} (positive) training rows, fewer than {MIN_POSITIVES}: its ROC-AUC, pAUC, F1 and "
                "their intervals rest on too few rows to mean much" for c, n in self.few_positives().items()]

    def checked(self) -> TaskSpec:
        """Itself, after the one check of its labels that every model kind relies on: a single class in
        the training rows is a DataError (no kind can learn from it); a class no training row has is
        a warning (every kind scores it, from the other classes alone). Classes too rare for every
        fold are :meth:`dermstack.data.folds.FoldPlan.make`'s and ``crossfit.check_plan``'s to report."""
        what = f"binary target {self.target_name!r}" if self.kind.binary else f"{self.kind} task"
        if self.kind.single_class(self.y):
            raise DataError(f"{what} has a single class in the training rows ({len(self.y)} rows): "
                            "no model can learn from them", column="target" if self.kind.binary else "label")
        lacking = self.lacking_classes(self.y)
        if lacking:
            log.warning("%s: no training row has class(es) %s; their scores are learned from the other classes only",
                        what, lacking)
        return self

    @staticmethod
    def labelled(table: LesionTable, kind: str, target: str = "malignant", strict: bool = False) -> tuple[LesionTable, list[str]]:
        """``table`` without the training rows that have no label for this task (an ISIC export's
        "Indeterminate" rows, say), and their ids. They cannot be trained or scored against; test
        rows are kept. ``strict``: such a row is a DataError."""
        kind = TaskKind(kind)
        if kind.multilabel:
            return table, []
        col = "target" if kind.binary and target == "malignant" else "label"
        unlabelled = table.df.filter((pl.col("split") == "train") & pl.col(col).is_null())["image_id"].to_list()
        if unlabelled and strict:
            raise DataError(f"{len(unlabelled)} training rows have no {col}, e.g. {unlabelled[:5]} (--strict)", column=col)
        if not unlabelled:
            return table, []
        return LesionTable(table.df.filter(~pl.col("image_id").is_in(unlabelled)), table.meta), unlabelled

    @classmethod
    def from_table(cls, table: LesionTable, kind: str, target: str = "malignant", source: str = "config") -> TaskSpec:
        kind = TaskKind(kind)
        train = table.train
        ids = train["image_id"].to_list()
        if kind.binary:
            if target == "malignant":
                y = train["target"]
                if y.null_count():
                    bad = train.filter(pl.col("target").is_null())["image_id"].head(5).to_list()
                    raise DataError(f"{y.null_count()} training rows have no target, e.g. {bad}", column="target")
                y = y.to_numpy().astype(np.int8)
            else:
                check_target(table, kind, target, source)
                y = (train["label"] == target).fill_null(False).to_numpy().astype(np.int8)
            return cls(kind, ["target"], ids, y, target).checked()
        if kind.exclusive:
            classes = table.meta.classes or sorted(train["label"].drop_nulls().unique().to_list())
            index = {c: i for i, c in enumerate(classes)}
            labels = train["label"].to_list()
            bad = [(i, lab) for i, lab in zip(ids, labels) if lab not in index]
            if bad:
                raise DataError(f"{len(bad)} training rows have a label outside {classes}, e.g. {bad[:3]}", column="label")
            return cls(kind, list(classes), ids, np.array([index[lab] for lab in labels], dtype=np.int64), target).checked()
        cols = table.class_columns
        if not cols:
            raise ConfigError("multilabel task needs one-hot class columns (y_<CLASS>) in the LesionTable")
        y = train.select(cols).to_numpy()
        if np.isnan(y.astype(float)).any():
            raise DataError("multilabel class columns have missing values in training rows")
        return cls(kind, [c[2:] for c in cols], ids, y.astype(np.int8), target).checked()


def check_target(table: LesionTable, kind: str, target: str, source: str = "config") -> None:
    """A binary task's ``[data] target`` is "malignant" or a class of ``table``; else a ConfigError naming
    ``source`` (the config file), the key and the closest valid target. Which classes a dataset has
    (an ISIC Archive export's diagnoses) is known only once it is read."""
    if not TaskKind(kind).binary or target == "malignant":
        return
    known = sorted(set(table.meta.classes) | set(table.train["label"].drop_nulls().unique().to_list()))
    if target not in known:
        raise ConfigError(f'{source}: [data] target = "{target}": neither "malignant" nor a class of this data'
                          f"{did_you_mean(target, ['malignant', *known])}; its classes: "
                          + (", ".join(f'"{k}"' for k in known) or "none"))
