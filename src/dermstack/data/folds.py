"""FoldPlan: one patient-grouped, stratified K-fold assignment shared by every model of a run."""
from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedGroupKFold

from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.parquet_io import read_described, write_described
from dermstack.task import TaskKind

log = logging.getLogger(__name__)
META_KEY = b"dermstack.fold_plan"


def ids_digest(ids: list[str]) -> str:
    """Order-independent fingerprint of a set of ids."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def stratum(table: LesionTable, task: str) -> np.ndarray:
    """The class each training row is stratified on."""
    df, kind = table.train, TaskKind(task)
    if kind.binary:
        if df["target"].null_count():
            raise DataError("training rows without a target cannot be stratified", column="target")
        return df["target"].to_numpy()
    if kind.multilabel and table.class_columns:
        return kind.stratum(df.select(table.class_columns).to_numpy())
    return df["label"].fill_null("<none>").to_numpy()


@dataclass
class FoldPlan:
    """``folds``: image_id, group, fold (0..n_splits-1) for every training row."""

    folds: pl.DataFrame
    n_splits: int
    seed: int
    group_column: str

    @classmethod
    def make(cls, table: LesionTable, n_splits: int = 5, seed: int = 42, task: str = "binary") -> "FoldPlan":
        """StratifiedGroupKFold by patient (by lesion where no patient id, by image as the last resort)."""
        df = table.train
        if df.height == 0:
            raise DataError("no training rows to split")
        group_col = next((c for c in ("patient_id", "lesion_id") if df[c].null_count() < df.height), "image_id")
        groups = df.select(pl.coalesce(group_col, "lesion_id", "image_id")).to_series().to_numpy()
        y = stratum(table, task)
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise DataError(f"{n_groups} groups ({group_col}) cannot make {n_splits} folds")
        values, counts = np.unique(y, return_counts=True)
        names = [c[2:] for c in table.class_columns] if TaskKind(task).multilabel and table.class_columns else None
        rare = {names[v] if names else str(v): int(c) for v, c in zip(values, counts) if c < n_splits}
        if rare:
            log.warning("rows per class %s: fewer than the %d folds, so some folds' validation parts lack "
                        "these classes and some training parts may too (reported per fold when a model trains)",
                        rare, n_splits)
        skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        fold = np.full(df.height, -1, dtype=np.int8)
        with warnings.catch_warnings():  # said above, in dermstack's words
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            for k, (_, valid) in enumerate(skf.split(np.zeros(df.height), y, groups)):
                fold[valid] = k
        folds = pl.DataFrame({"image_id": df["image_id"], "group": groups.astype(str), "fold": fold})
        return cls(folds, n_splits, seed, group_col)

    # -- use ------------------------------------------------------------------
    def fold_of(self, image_ids: pl.Series | list[str]) -> np.ndarray:
        """Fold of each id in the given order (a DataError names ids the plan does not know)."""
        ids = pl.DataFrame({"image_id": pl.Series(list(image_ids), dtype=pl.String)})
        joined = ids.join(self.folds.select("image_id", "fold"), on="image_id", how="left", maintain_order="left")
        missing = joined.filter(pl.col("fold").is_null())["image_id"].to_list()
        if missing:
            raise DataError(f"fold plan does not match the table: {len(missing)} training ids have no fold, e.g. {missing[:5]}")
        return joined["fold"].to_numpy()

    def splits(self, image_ids: pl.Series | list[str]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(fold, train row indices, validation row indices) for rows in the given order."""
        fold = self.fold_of(image_ids)
        for k in range(self.n_splits):
            yield k, np.flatnonzero(fold != k), np.flatnonzero(fold == k)

    def check_matches(self, table: LesionTable) -> None:
        """Error unless the plan covers exactly the table's training rows."""
        train_ids = set(table.train["image_id"].to_list())
        plan_ids = set(self.folds["image_id"].to_list())
        if train_ids != plan_ids:
            extra, missing = sorted(plan_ids - train_ids), sorted(train_ids - plan_ids)
            raise DataError(
                f"fold plan does not match the table: {len(missing)} training rows without a fold "
                f"(e.g. {missing[:3]}), {len(extra)} plan ids not in the table (e.g. {extra[:3]})"
            )

    # -- io ---------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        meta = {"n_splits": self.n_splits, "seed": self.seed, "group_column": self.group_column,
                "ids": ids_digest(self.folds["image_id"].to_list())}
        return write_described(self.folds, path, META_KEY, meta)

    @classmethod
    def read(cls, path: str | Path) -> "FoldPlan":
        folds, meta = read_described(path, META_KEY, "fold plan")
        return cls(folds, meta["n_splits"], meta["seed"], meta["group_column"])
