"""Metadata features and the missingness-leak guard."""
from __future__ import annotations

import numpy as np
import polars as pl

from dermstack.config import FeaturesConfig
from dermstack.features.build import build_features
from dermstack.features.metadata import metadata_features, missingness_auc
from lesion_tables import lesion_table


def _table(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 4 == 0).astype(int)
    # recorded for every benign lesion but only for a quarter of the malignant ones
    leaky = np.where((y == 1) & (rng.random(n) < 0.75), np.nan, rng.normal(size=n))
    # blank at random, independent of the label
    honest = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    return lesion_table({
        "image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 5}" for k in range(n)], "target": y.tolist(),
        "leaky_field": [None if np.isnan(v) else float(v) for v in leaky],
        "honest_field": [None if np.isnan(v) else float(v) for v in honest],
        "sex": rng.choice(["male", "female"], n).tolist(),
    })


def test_is_null_auc_by_hand():
    y = {"target": np.array([1, 1, 0, 0])}
    assert missingness_auc(np.array([True, False, False, False]), y) == 0.75
    assert missingness_auc(np.array([False, False, False, False]), y) is None


def test_leaky_missingness_column_dropped_and_recorded():
    table = _table()
    meta = metadata_features(table, leak_auc=0.65)
    assert list(meta.dropped) == ["leaky_field"] and meta.dropped["leaky_field"] > 0.8
    assert "honest_field" in meta.numeric and meta.categorical == ["sex"]
    fs = build_features(table, FeaturesConfig())
    assert "leaky_field" not in fs.df.columns and not any(c.startswith("leaky_field") for c in fs.df.columns)
    assert fs.info["metadata"]["dropped_missingness_leak"] == meta.dropped
    assert fs.df.schema["sex"] == pl.String and "sex" in fs.categorical
    # a blank value stays a null feature, it does not break the row
    assert fs.df["honest_field"].null_count() == table.df["honest_field"].null_count() > 0


def test_threshold_one_keeps_everything():
    assert metadata_features(_table(), leak_auc=1.0).dropped == {}
