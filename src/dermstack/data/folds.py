"""FoldPlan: one patient-grouped, stratified K-fold assignment shared by every model of a run,
optionally grouped by a column as well (``[cv] group``: :mod:`dermstack.data.groups`)."""
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

from dermstack.config.limits import most
from dermstack.data.groups import HeldOutGroups
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError, DataError
from dermstack.parquet_io import read_described, write_described
from dermstack.provenance import file_digest
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)
META_KEY = b"dermstack.fold_plan"
#: what a fold file may be keyed by, finest first (the first present column is the key)
FOLD_KEYS = ("image_id", "lesion_id", "patient_id")


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


def _group_of(df: pl.DataFrame) -> tuple[str, np.ndarray]:
    """The column rows are grouped by (patient, else lesion, else image) and each row's group."""
    group_col = next((c for c in ("patient_id", "lesion_id") if df[c].null_count() < df.height), "image_id")
    return group_col, df.select(pl.coalesce(group_col, "lesion_id", "image_id")).to_series().to_numpy()


#: folds.parquet's column of each row's held-out group, when the plan is grouped by a column too
CV_GROUP = "cv_group"


@dataclass
class FoldPlan:
    """``folds``: image_id, group, fold (0..n_splits-1) for every training row, and ``cv_group`` (its
    held-out group) when grouped by a column. ``source``: the fold file a published split came from
    (``file``, ``sha256``, ``key``), None when made here. ``grouping``: the ``[cv] group`` column,
    ``leave_one_group_out``, the number of groups, the groups a patient ``merged`` and the rows with a
    ``missing`` value (:meth:`HeldOutGroups.describe`), None when grouped by patient alone."""

    folds: pl.DataFrame
    n_splits: int
    seed: int | None
    group_column: str
    source: dict | None = None
    grouping: dict | None = None

    @classmethod
    def make(cls, table: LesionTable, n_splits: int = 5, seed: int = 42, task: str = TaskKind.BINARY,
             group: str | None = None, leave_one_group_out: bool = False) -> FoldPlan:
        """StratifiedGroupKFold by patient (by lesion where no patient id, by image as the last resort).

        ``group``: a column whose every value (a site, a clinic) is kept in one fold too, its values
        merged where a patient spans several (:class:`~dermstack.data.groups.HeldOutGroups`).
        ``leave_one_group_out``: one fold per held-out group (``n_splits`` and ``seed`` unused),
        for few groups (at most ``groups.MAX_HELD_OUT_GROUPS``), each with both classes when binary."""
        if not leave_one_group_out and not 2 <= n_splits <= most("Folds"):
            raise ConfigError(f"n_splits = {n_splits}: from 2 to {most('Folds')} folds (docs: Limits)")
        df = table.train
        if df.height == 0:
            raise DataError("no training rows to split")
        if leave_one_group_out and not group:
            raise DataError("leave_one_group_out needs a column to group by ([cv] group)")
        group_col, groups = _group_of(df)
        y = stratum(table, task)
        held = HeldOutGroups.of(df, group, group_col, groups) if group else None
        if held is not None and leave_one_group_out:
            fold = held.leave_one_out(y, TaskKind(task).binary)
            folds = pl.DataFrame({"image_id": df["image_id"], "group": groups.astype(str), "fold": fold,
                                  CV_GROUP: held.names})
            return cls(folds, int(fold.max()) + 1, None, group_col, grouping=held.describe(True))
        split_by = held.names if held is not None else groups
        n_groups = len(np.unique(split_by))
        if n_groups < n_splits:
            what = f"held-out groups ([cv] group = {group!r}, merged through {group_col})" if held is not None else group_col
            hint = "; with few groups, set [cv] leave_one_group_out = true" if held is not None else ""
            raise DataError(f"{n_groups} groups ({what}) cannot make {n_splits} folds{hint}")
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
            for k, (_, valid) in enumerate(skf.split(np.zeros(df.height), y, split_by)):
                fold[valid] = k
        folds = pl.DataFrame({"image_id": df["image_id"], "group": groups.astype(str), "fold": fold})
        if held is None:
            return cls(folds, n_splits, seed, group_col)
        return cls(folds.with_columns(pl.Series(CV_GROUP, held.names)), n_splits, seed, group_col,
                   grouping=held.describe(False))

    @classmethod
    def from_file(cls, table: LesionTable, path: str | Path, group: str | None = None) -> FoldPlan:
        """Exactly the folds of a published or institutional split: a CSV or parquet file with a
        ``fold`` column keyed by ``image_id``, ``lesion_id`` or ``patient_id`` (the first present).
        Refused (DataError naming the id): a training row the file does not cover, an id with two
        folds, a patient or lesion whose images the file puts in different folds, fewer than 2 folds.
        Fold labels are numbered 0..K-1 in sorted order; ids the table lacks (e.g. test rows) are ignored.
        ``group``: a column whose held-out groups the file must keep whole too (checked, then recorded)."""
        path = Path(path)
        src = _read_fold_file(path)
        key = next((c for c in FOLD_KEYS if c in src.columns), None)
        if key is None or "fold" not in src.columns:
            raise DataError(f"a fold file needs a `fold` column and one of {list(FOLD_KEYS)}; it has {src.columns}",
                            file=str(path))
        src = _fold_numbers(src.filter(pl.col(key).is_not_null()), key, path)
        clash = src.group_by(key).agg(pl.col("fold").unique().sort()).filter(pl.col("fold").list.len() > 1)
        if clash.height:
            raise DataError(f"{key} {clash[key][0]!r} is listed in folds {clash['fold'][0].to_list()}",
                            file=str(path), column=key)
        df = table.train
        if df.height == 0:
            raise DataError("no training rows to split")
        rows = df.select("image_id", "lesion_id", "patient_id").join(
            src.unique(key), left_on=pl.col(key).cast(pl.String), right_on=key, how="left", maintain_order="left")
        missing = rows.filter(pl.col("fold").is_null())
        if missing.height:
            raise DataError(f"{missing.height} training rows have no fold in the file, e.g. image_id "
                            f"{missing['image_id'][0]!r} ({key} {missing[key][0]!r})", file=str(path), column=key)
        labels = sorted(rows["fold"].unique().to_list())
        if len(labels) > most("Folds"):
            raise DataError(f"the fold file has {len(labels)} folds for {df.height} training rows; at most {most('Folds')} "
                            "(docs: Limits): each fold is a fit of every model and seed", file=str(path), column="fold")
        for col in ("patient_id", "lesion_id"):  # one patient's or lesion's images in one fold, or the folds leak
            split = (rows.filter(pl.col(col).is_not_null()).group_by(col).agg(pl.col("fold").unique().sort())
                     .filter(pl.col("fold").list.len() > 1).sort(col))
            if split.height:
                raise DataError(f"the fold file splits {col} {split[col][0]!r} across folds {split['fold'][0].to_list()} "
                                f"({split.height} {col}s split): a paired CV needs each {col} in one fold",
                                file=str(path), column=key)
        if len(labels) < 2:
            raise DataError(f"the fold file puts every training row in fold {labels[0]}: cross-validation needs "
                            "at least 2 folds", file=str(path), column="fold")
        if labels != list(range(len(labels))):
            log.info("fold file %s: fold labels %s numbered 0..%d", path, labels, len(labels) - 1)
        extra = src.height - rows[key].n_unique()
        if extra > 0:
            log.info("fold file %s: %d %s values not among the training rows (ignored)", path, extra, key)
        fold = rows["fold"].replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int8)
        group_col, groups = _group_of(df)
        folds = pl.DataFrame({"image_id": df["image_id"], "group": groups.astype(str), "fold": fold})
        source = {"file": str(path), "sha256": file_digest(path), "key": key}
        if not group:
            return cls(folds, len(labels), None, group_col, source)
        held = HeldOutGroups.of(df, group, group_col, groups)
        folds = folds.with_columns(pl.Series(CV_GROUP, held.names))
        split = (folds.group_by(CV_GROUP).agg(pl.col("fold").unique().sort()).filter(pl.col("fold").list.len() > 1)
                 .sort(CV_GROUP))
        if split.height:
            raise DataError(f"the fold file splits the held-out group {split[CV_GROUP][0]!r} ([cv] group = {group!r}) "
                            f"across folds {split['fold'][0].to_list()} ({split.height} groups split): a site-held-out "
                            "CV needs each group in one fold", file=str(path), column=group)
        return cls(folds, len(labels), None, group_col, source, held.describe(False))

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
                "ids": ids_digest(self.folds["image_id"].to_list()), "source": self.source, "grouping": self.grouping}
        return write_described(self.folds, path, META_KEY, meta)

    @classmethod
    def read(cls, path: str | Path) -> FoldPlan:
        folds, meta = read_described(path, META_KEY, "fold plan")
        return cls(folds, meta["n_splits"], meta["seed"], meta["group_column"], meta.get("source"), meta.get("grouping"))

    def held_out_groups(self, image_ids: pl.Series | list[str]) -> np.ndarray | None:
        """Each row's held-out group (``[cv] group``) in the given order; None when the plan is
        grouped by patient alone."""
        if CV_GROUP not in self.folds.columns:
            return None
        ids = pl.DataFrame({"image_id": pl.Series(list(image_ids), dtype=pl.String)})
        return ids.join(self.folds.select("image_id", CV_GROUP), on="image_id", how="left",
                        maintain_order="left")[CV_GROUP].to_numpy()

    def same_split(self, other: FoldPlan) -> bool:
        """Whether two plans put the same rows in the same folds (what a paired comparison needs)."""
        a, b = (p.folds.select("image_id", "fold").sort("image_id") for p in (self, other))
        return a.equals(b)


#: the row number of each fold-file row as the user finds it: a CSV's editor line (header = 1), a parquet row from 1
_ROW = "__row"


def _read_fold_file(path: Path) -> pl.DataFrame:
    """The rows of a fold file (a CSV's cells as text) with their row numbers (``_ROW``)."""
    if not path.is_file():
        raise DataError("no such fold file", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df, first = pl.read_parquet(path), 1
        elif suffix == ".csv":
            df, first = pl.read_csv(path, infer_schema=False), 2
        else:
            raise DataError("a fold file is a .csv or .parquet file", file=str(path))
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataError(f"cannot read fold file: {e}", file=str(path)) from None
    if df.height == 0:
        raise DataError("the fold file has a header but no rows", file=str(path))
    return df.with_row_index(_ROW, offset=first)


def _fold_numbers(src: pl.DataFrame, key: str, path: Path) -> pl.DataFrame:
    """(key as text, fold as an integer); a blank or non-integer fold is a DataError naming its row."""
    text = pl.col("fold").cast(pl.String).str.strip_chars()
    number = text.cast(pl.Float64, strict=False)
    src = src.with_columns(text.alias("text"), number.alias("number"))
    bad = src.filter(pl.col("number").is_null() | (pl.col("number") != pl.col("number").round()) | pl.col("number").is_infinite())
    if bad.height:
        row = bad.row(0, named=True)
        what = "no fold (a blank cell)" if not row["text"] else f"fold {row['text']!r} is not a whole number"
        raise DataError(f"{key} {row[key]!r}: {what}", file=str(path), row=row[_ROW], column="fold")
    return src.select(pl.col(key).cast(pl.String), pl.col("number").cast(pl.Int64).alias("fold"))
