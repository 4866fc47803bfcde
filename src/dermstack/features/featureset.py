"""FeatureSet: the features table every model reads (parquet), with each column's group."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dermstack.config import FEATURE_GROUPS
from dermstack.errors import ConfigError, DataError
from dermstack.features.transform import FeatureTransform
from dermstack.parquet_io import read_described, write_described

META_KEY = b"dermstack.features"
#: The named feature groups, in report order.
GROUPS = FEATURE_GROUPS
ID_COLUMNS = ("image_id", "split")


@dataclass
class FeatureSet:
    """``df`` holds ``image_id``, ``split`` and one column per feature; ``groups`` maps feature -> group."""

    df: pl.DataFrame
    groups: dict[str, str]
    categorical: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    #: what was fitted on the training rows (written beside the parquet file), for new rows
    transform: FeatureTransform | None = None
    #: the parquet file it was read from (a Dask worker reads it again there), None when built in memory
    source: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for c in ID_COLUMNS:
            if c not in self.df.columns:
                raise DataError(f"feature table lacks {c!r}", column=c)
        unknown = sorted(set(self.groups.values()) - set(GROUPS))
        if unknown:
            raise DataError(f"unknown feature groups {unknown}; known: {list(GROUPS)}")
        absent = [c for c in self.groups if c not in self.df.columns]
        if absent:
            raise DataError(f"feature columns listed but absent: {absent[:10]}")

    @property
    def feature_columns(self) -> list[str]:
        return [c for c in self.df.columns if c in self.groups]

    def columns(self, groups: list[str] | None = None) -> list[str]:
        """Feature columns of the given groups (all when None), in table order.

        A group name that does not exist is a ConfigError; a known group with no columns in this
        table is an error too, so that a config never silently trains on less than it says."""
        if groups is None:
            return self.feature_columns
        bad = [g for g in groups if g not in GROUPS]
        if bad:
            raise ConfigError(f"unknown feature group(s) {bad}; known groups: {list(GROUPS)}")
        present = set(self.groups.values())
        empty = [g for g in groups if g not in present]
        if empty:
            raise ConfigError(f"feature group(s) {empty} have no columns in this feature table (built groups: {sorted(present)})")
        return [c for c in self.feature_columns if self.groups[c] in groups]

    def add(self, other: pl.DataFrame, group: str, categorical: list[str] = ()) -> FeatureSet:
        """Join ``other`` (image_id + features) into a new FeatureSet; losing a row is an error."""
        missing = self.df.join(other, on="image_id", how="anti")
        if missing.height:
            raise DataError(f"{missing.height} ids have no {group} features, e.g. {missing['image_id'].head(5).to_list()}")
        new = [c for c in other.columns if c != "image_id"]
        df = self.df.join(other, on="image_id", how="left", maintain_order="left")
        return FeatureSet(df, {**self.groups, **{c: group for c in new}}, self.categorical + list(categorical), self.info,
                          self.transform)

    # -- io ---------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """The parquet file, plus ``<name>.transform.npz`` beside it when the set carries a transform."""
        meta = {"groups": self.groups, "categorical": self.categorical, "info": self.info}
        if self.transform is not None:
            self.transform.write(FeatureTransform.path_for(path))
        return write_described(self.df, path, META_KEY, meta)

    @classmethod
    def read(cls, path: str | Path) -> FeatureSet:
        df, meta = read_described(path, META_KEY, "feature table")
        sibling = FeatureTransform.path_for(path)
        transform = FeatureTransform.read(sibling) if sibling.exists() else None
        return cls(df, meta["groups"], meta["categorical"], meta.get("info", {}), transform, Path(path))
