"""The labels of another dataset, in the run's task: its binary target, or its classes.

The binary ``target`` (malignant) is what every reader writes, so a run trained for malignancy
reads it as it is. Classes go through one vocabulary (:func:`dermstack.data.diagnoses.diagnosis_code`):
a label that is one of the run's classes (any case) is that class; else it is the run class with
the same code, when exactly one has it. A label with no code, or whose code no run class (or
several) has, is not mapped: its rows are left out, named with their count.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dermstack.data.diagnoses import diagnosis_code, why_unmapped
from dermstack.data.table import CLASS_PREFIX, LesionTable
from dermstack.taskkind import TaskKind


@dataclass
class MappedLabels:
    """The rows of the new data that have a label in the run's task (``keep``), their labels ``y``
    (as ``TaskSpec.y``: (n,) 0/1 or class index, (n, C) one-hot), how each new label was read
    (``mapping``: label -> run class) and why the other rows were left out (``skipped``: reason -> rows)."""

    keep: np.ndarray
    y: np.ndarray
    mapping: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"mapping": self.mapping, "skipped": self.skipped}


def _labels(table: LesionTable) -> list[str | None]:
    """Each row's diagnosis: ``label``, else (one-hot data) the class whose column is 1."""
    labels = table.df["label"].to_list()
    cols = table.class_columns
    if cols and any(v is None for v in labels):
        onehot = table.df.select(cols).to_numpy()
        names = [c.removeprefix(CLASS_PREFIX) for c in cols]
        labels = [lab if lab is not None or not np.nansum(row) == 1 else names[int(np.nanargmax(row))]
                  for lab, row in zip(labels, onehot)]
    return labels


def class_map(labels: list[str | None], classes: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(label -> run class, label -> why it has none) for every distinct non-null label."""
    exact = {c.lower(): c for c in classes}
    by_code: dict[str, list[str]] = {}
    for c in classes:
        by_code.setdefault(diagnosis_code(c) or f"class:{c}", []).append(c)
    mapped, why = {}, {}
    for label in sorted({lab for lab in labels if lab is not None}):
        if label.lower() in exact:
            mapped[label] = exact[label.lower()]
            continue
        code = diagnosis_code(label)
        hits = by_code.get(code, []) if code else []
        if len(hits) == 1:
            mapped[label] = hits[0]
        elif code is None:
            why[label] = why_unmapped(label)
        elif not hits:
            why[label] = f"{code}: no class of the run"
        else:
            why[label] = f"{code}: several classes of the run ({', '.join(hits)})"
    return mapped, why


def map_labels(table: LesionTable, kind: TaskKind, classes: list[str], target: str = "malignant") -> MappedLabels:
    """The new rows' labels in the run's task (``kind``, ``classes``, binary ``target``)."""
    kind = TaskKind(kind)
    if kind.binary and target == "malignant":
        t = table.df["target"]
        keep = t.is_not_null().to_numpy()
        skipped = {"no malignancy label (target)": int((~keep).sum())} if (~keep).any() else {}
        return MappedLabels(keep, t.fill_null(0).to_numpy().astype(np.int8)[keep], {}, skipped)
    labels = _labels(table)
    run_classes = [target] if kind.binary else classes
    if kind.binary:  # one class against the rest: any other recognised diagnosis is the rest
        mapped, why = class_map(labels, run_classes)
        for label in list(why):
            if diagnosis_code(label):
                mapped[label], why[label] = "rest", None
        why = {k: v for k, v in why.items() if v}
    else:
        mapped, why = class_map(labels, run_classes)
    counts = Counter(lab for lab in labels if lab is not None and lab not in mapped)
    skipped = {f"label {lab!r} not mapped: {why[lab]}": n for lab, n in counts.most_common()}
    if (n := sum(lab is None for lab in labels)):
        skipped["no label"] = n
    keep = np.array([lab in mapped for lab in labels], dtype=bool)
    chosen = [mapped[lab] for lab, k in zip(labels, keep) if k]
    if kind.binary:
        y = np.array([c == target for c in chosen], dtype=np.int8)
    else:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[c] for c in chosen], dtype=np.int64)
        if kind.multilabel:
            y = np.eye(len(classes), dtype=np.int8)[y] if len(y) else np.zeros((0, len(classes)), np.int8)
    return MappedLabels(keep, y, mapped, skipped)


def label_frame(y: np.ndarray, kind: TaskKind, classes: list[str]) -> pl.Series:
    """``predictions.parquet`` ``label``: 0/1 for binary, the class name otherwise (``;``-joined for multi-label)."""
    kind = TaskKind(kind)
    if kind.binary:
        return pl.Series("label", y.astype(np.int8))
    if kind.exclusive:
        return pl.Series("label", [classes[i] for i in y], pl.String)
    return pl.Series("label", [";".join(c for c, v in zip(classes, row) if v) for row in y], pl.String)
