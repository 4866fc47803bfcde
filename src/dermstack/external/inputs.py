"""What another dataset gives the run's models: the feature columns it lacks (and which saved models
read them), and its categorical values in the run's vocabulary.

Formats describe the same thing in different words: ``Male``/``male``, ``posterior_torso``/``posterior
torso`` (the readers already map HAM10000 ``localization`` and MILK10k ``site`` onto ISIC's
``anatom_site_general``). A value that is one of the run's training values up to case, spaces,
``-`` and ``_`` is rewritten as the run wrote it; a value the run never saw is named with its count
(the models score it as an unseen category).
"""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from dermstack.data.table import LesionTable
from dermstack.features.engineered import ENGINEERED
from dermstack.saved import model_dirs, needed, read_spec


def _spec_columns(spec: dict) -> set[str]:
    """The feature columns a saved model reads itself (boosters: ``features``; probes, MLPs: ``inputs``)."""
    cols = (spec.get("features") or {}).get("columns") or (spec.get("inputs") or {}).get("columns") or []
    return set(cols)


def model_columns(models_root: str | Path) -> dict[str, set[str]]:
    """Saved model name -> the feature columns it reads, its members' included."""
    dirs = model_dirs(models_root)
    specs = {name: read_spec(d) for name, d in dirs.items()}
    out: dict[str, set[str]] = {}

    def columns(name: str, seen: tuple[str, ...] = ()) -> set[str]:
        if name not in out:
            spec = specs.get(name, {})
            out[name] = _spec_columns(spec).union(*[columns(m, seen + (name,)) for m in needed(spec) if m not in seen])
        return out[name]

    for name in specs:
        columns(name)
    return out


def reads(feature: str, column: str) -> bool:
    """Whether the feature ``feature`` is built from the table column ``column`` (itself, an
    engineered feature with it among its inputs, or a patient-relative ``<column>_...`` feature)."""
    if feature == column or feature.startswith(column + "_"):
        return True
    eng = ENGINEERED.get(feature)
    return eng is not None and column in eng.inputs


def missing_features(run_table: LesionTable, new: LesionTable, models_root: str | Path) -> dict[str, list[str]]:
    """Each feature column of the run (``meta.feature_columns``) that ``new`` lacks (or has empty in
    every row) -> the saved models that read it."""
    used = model_columns(models_root)
    out = {}
    for c in run_table.meta.feature_columns:
        if c in new.df.columns and new.df[c].null_count() < new.df.height:
            continue
        out[c] = sorted(name for name, cols in used.items() if any(reads(f, c) for f in cols))
    return out


def _key(value: str) -> str:
    return re.sub(r"[\s\-_]+", " ", value.strip().lower())


def map_vocabulary(run_table: LesionTable, new: LesionTable) -> tuple[LesionTable, dict[str, dict]]:
    """``new`` with each categorical feature column's values written as the run's training rows write
    them, and per column ``{"mapped": {value: run value}, "unseen": {value: rows}}`` (columns with
    neither are left out)."""
    df, out = new.df, {}
    train = run_table.train
    for c in run_table.meta.categorical_columns:
        if c not in df.columns or c not in train.columns:
            continue
        known = train[c].cast(pl.String).drop_nulls().unique().to_list()
        by_key = {_key(v): v for v in known}
        values = df[c].cast(pl.String).drop_nulls().value_counts(sort=True)
        mapped, unseen = {}, {}
        for value, n in values.rows():
            if value in known:
                continue
            if _key(value) in by_key:
                mapped[value] = by_key[_key(value)]
            else:
                unseen[value] = int(n)
        if mapped and df.schema[c] == pl.String:
            df = df.with_columns(pl.col(c).replace(mapped))
        if mapped or unseen:
            out[c] = {"mapped": mapped, "unseen": unseen}
    return LesionTable(df, new.meta), out
