"""Metadata features: the LesionTable's feature columns, minus those whose missingness leaks the label.

Real exports leave fields blank more often for one class (a site that only records age for
biopsied lesions, say). A column whose is-null indicator alone separates the training classes
(ROC-AUC above ``leak_auc`` or below ``1 - leak_auc``) is dropped with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dermstack.data.table import LesionTable
from dermstack.metrics import roc_auc

log = logging.getLogger(__name__)


@dataclass
class MetadataFeatures:
    """``frame``: image_id + the kept columns; ``dropped``: column -> is-null ROC-AUC of the worst class."""

    frame: pl.DataFrame
    numeric: list[str]
    categorical: list[str]
    dropped: dict[str, float | None] = field(default_factory=dict)


def class_indicators(table: LesionTable) -> dict[str, np.ndarray]:
    """One 0/1 vector per class over the training rows (binary: the target; else one-vs-rest)."""
    train = table.train
    if train.height == 0:
        return {}
    if train["target"].null_count() < train.height:
        known = train["target"].fill_null(0).to_numpy()
        return {"target": known.astype(np.int8)}
    if table.class_columns:
        return {c: train[c].fill_null(0).to_numpy().astype(np.int8) for c in table.class_columns}
    labels = train["label"].to_numpy()
    return {str(v): (labels == v).astype(np.int8) for v in train["label"].drop_nulls().unique().to_list()}


def missingness_auc(is_null: np.ndarray, classes: dict[str, np.ndarray]) -> float | None:
    """ROC-AUC of ``is_null`` as a score for the class it separates best (None when undefined)."""
    if is_null.all() or not is_null.any():
        return None
    worst = None
    for y in classes.values():
        if 0 < y.sum() < len(y):
            auc = roc_auc(y, is_null.astype(np.float64))
            if worst is None or abs(auc - 0.5) > abs(worst - 0.5):
                worst = auc
    return worst


def metadata_features(table: LesionTable, leak_auc: float = 0.65, dropped: list[str] | None = None) -> MetadataFeatures:
    """The table's ``meta.feature_columns``; categoricals as String, leaky-missingness columns dropped
    (found on the training rows, or ``dropped`` as a finished run found them)."""
    meta = table.meta
    cats = set(meta.categorical_columns)
    columns = list(dict.fromkeys(meta.feature_columns))
    if dropped is not None:
        dropped = {c: None for c in dropped if c in columns}
    else:
        dropped = leaky_missingness(table, table.df.select(columns), leak_auc)
    kept = [c for c in columns if c not in dropped]
    exprs = []
    numeric, categorical = [], []
    schema = table.df.schema  # built per access
    for col in kept:
        dtype = schema[col]
        if col in cats or dtype in (pl.String, pl.Categorical, pl.Boolean, pl.Enum):
            exprs.append(pl.col(col).cast(pl.String))
            categorical.append(col)
        elif dtype.is_numeric():
            exprs.append(pl.col(col).cast(pl.Float64))
            numeric.append(col)
        else:
            log.warning("metadata column %r has type %s, neither numeric nor categorical: skipped", col, dtype)
    frame = table.df.select([pl.col("image_id"), *exprs])
    return MetadataFeatures(frame, numeric, categorical, dropped)


def leaky_missingness(table: LesionTable, frame: pl.DataFrame, leak_auc: float) -> dict[str, float]:
    """Column of ``frame`` (one row per table row) -> ROC-AUC of "is blank" for the label on the
    training rows, for the columns beyond ``leak_auc``."""
    train = (table.df["split"] == "train").to_numpy()
    classes = class_indicators(table)
    dropped: dict[str, float] = {}
    for col in frame.columns:
        values = frame[col]
        blank = values.is_nan().fill_null(True) if values.dtype.is_float() else values.is_null()
        auc = missingness_auc(blank.to_numpy().astype(bool)[train], classes)
        if auc is not None and (auc > leak_auc or auc < 1 - leak_auc):
            dropped[col] = round(auc, 4)
            log.warning("dropping feature %r: whether it is blank alone separates the classes (ROC-AUC %.3f)", col, auc)
    return dropped
