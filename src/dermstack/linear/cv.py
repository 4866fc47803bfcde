"""Cross-validation of a ``kind = "logistic"`` model (a linear probe) through the shared driver
(:mod:`dermstack.crossfit`), and the model set a small data set should get by default.

Inputs: the full embeddings of every configured backbone, read from the EmbeddingStore (not the
features stage's PCA of them), plus the table feature groups. ``features`` of the model entry picks
the groups as for a booster, with ``"embedding"`` meaning the full embeddings; unset: every table
group except the embedding PCA columns, and the embeddings when the run has any. Each fold fits its
own :class:`~dermstack.linear.design.Design` on its training rows; each fold and seed a
:class:`~dermstack.linear.probe.Probe`, whose C an inner CV on those rows chooses.
"""
from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.config import ModelConfig
from dermstack.crossfit import align_rows, cross_fit
from dermstack.data.folds import FoldPlan
from dermstack.data.table import split_key
from dermstack.errors import ConfigError
from dermstack.extract.store import EmbeddingStore
from dermstack.features.featureset import FeatureSet
from dermstack.jobs import FoldJob, Lazy, file_input
from dermstack.linear.design import Design, embedding_term, read_rows, split_columns
from dermstack.linear.probe import LinearParams, fit_probe
from dermstack.predictions import ModelResult
from dermstack.saved import model_folder, model_spec, write_model
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

KIND = "logistic"


def select_inputs(features: FeatureSet, store, groups: list[str] | None, where: str) -> tuple[list[str], list[str]]:
    """(table feature columns, embedding keys) a model with feature groups ``groups`` reads: every
    backbone, and each further view of a row that has any image of it (:mod:`dermstack.extract.store`)."""
    backbones = [b for b in store.backbones() if not split_key(b)[1] or store.image_ids(b)] if store is not None else []
    if groups is None:
        columns = [c for c in features.feature_columns if features.groups[c] != "embedding"]
    else:
        table_groups = [g for g in groups if g != "embedding"]
        columns = features.columns(table_groups) if table_groups else []
        if "embedding" not in groups:
            backbones = []
        elif not backbones:
            raise ConfigError(f"{where}: features lists 'embedding' but the run has no embeddings ([extract] backbones)")
    if not columns and not backbones:
        raise ConfigError(f"{where}: no inputs: no embeddings and no table feature columns")
    return columns, backbones


def _read_inputs(features: Lazy, columns: list[str], store: Lazy | None, backbones: list[str], ids: list[str]):
    return read_rows(features.get().df, columns, store.get() if store else None, backbones, ids)


def cross_validate_linear(features: FeatureSet, store, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                          out_dir: Path | None = None, test: bool = True, bootstrap: int = 200,
                          executor=None) -> ModelResult:
    """Train the linear probe ``model`` on every fold of ``plan`` for each seed; OOF and test scores,
    metrics (with the C each fit chose), importance (mean |contribution| per term, in the ``gain``
    column, on the validation rows). ``store``: the run's embeddings (``.backbones()``, ``.read()``),
    or None. Saved to ``out_dir/<model name>/`` when ``out_dir`` is given. ``executor``: where the
    fold x seed jobs run (:mod:`dermstack.crossfit`; a Dask worker reads the features and embeddings files)."""
    params = LinearParams.from_dict(model.params, f"[[models]] {model.label}")
    return cross_validate_design(features, store, task, plan, model, KIND, params, fit_probe, out_dir, test, bootstrap,
                                 executor)


def cross_validate_design(features: FeatureSet, store, task: TaskSpec, plan: FoldPlan, model: ModelConfig, kind: str,
                          params, fit_model, out_dir: Path | None = None, test: bool = True, bootstrap: int = 200,
                          executor=None) -> ModelResult:
    """Cross-validate a model on a fold's :class:`Design` (standardised full embeddings + table
    features): ``fit_model(design, X, y, groups, task kind, n_classes, params, seed)`` returns a
    fitted model with ``predict_proba``, ``contributions``, ``save(stem)`` and ``summary`` (what
    each fit chose, e.g. ``{"C": ...}``, gathered per key into the metrics)."""
    name = model.label
    where = f"[[models]] {name}"
    columns, backbones = select_inputs(features, store, model.features, where)
    numeric, categorical = split_columns(features.df, columns, features.categorical)
    test_ids = features.df.filter(pl.col("split") == "test")["image_id"].to_list() if test else []
    n = len(task.image_ids)
    rows = Lazy(partial(_read_inputs, file_input(features, features.source, FeatureSet.read), columns,
                        file_input(store, getattr(store, "path", None), EmbeddingStore) if store is not None else None,
                        backbones, task.image_ids + test_ids))
    groups = align_rows(plan.folds.select("image_id", "group"), task.image_ids, source="folds")["group"].to_numpy()
    folder = Path(out_dir) / name if out_dir else None
    if folder is not None:
        shutil.rmtree(model_folder(folder))  # only a model's own files (model_folder refuses others)
        folder.mkdir(parents=True)
    current: dict = {}
    terms = [embedding_term(b) for b in backbones] + numeric + categorical

    def fit(job: FoldJob):
        inputs = rows.get()
        if current.get("fold") != job.fold:  # one design per fold, shared by its seeds
            current.clear()
            design = Design.fit(inputs.take(job.train), numeric, categorical)
            current.update(fold=job.fold, design=design, X=design.matrix(inputs))
        X = current["X"]
        fitted = fit_model(current["design"], X[job.train], task.y[job.train], groups[job.train], task.kind,
                           len(task.classes), params, job.seed)
        values, _ = fitted.contributions(X[job.valid])
        record = {"chosen": {"fold": job.fold, "seed": job.seed, **fitted.summary},
                  "impact": np.abs(values).reshape(len(job.valid), len(terms), -1).mean(axis=(0, 2)),
                  "dimensions": {b: int(inputs.embeddings[b].shape[1]) for b in backbones},
                  "left_out": current["design"].left_out}
        if folder is not None:
            stem = folder / f"fold{job.fold}_seed{job.seed}"
            record["file"] = {"fold": job.fold, "seed": job.seed, "stem": stem.name, **fitted.summary,
                              "files": [p.name for p in fitted.save(stem)]}
        return fitted.predict_proba(X[job.valid]), (fitted.predict_proba(X[n:]) if test_ids else None), record

    cf = cross_fit(task, plan, list(model.seeds), fit, len(test_ids), desc=name, executor=executor)
    chosen = [r["chosen"] for r in cf.records]
    left_out = {c for r in cf.records for c in r["left_out"]}
    if left_out:
        log.info("%s: %d feature column(s) have (almost) no value in the training rows of at least one fold and are "
                 "left out there: %s", name, len(left_out), ", ".join(t for t in terms if t in left_out))
    impact = np.sum([r["impact"] for r in cf.records], axis=0)
    group_of = {embedding_term(b): "embedding" for b in backbones} | {c: features.groups.get(c, "metadata") for c in columns}
    importance = pl.DataFrame({"feature": terms, "group": [group_of[t] for t in terms],
                               "gain": impact / max(1, len(chosen))},
                              schema={"feature": pl.String, "group": pl.String, "gain": pl.Float64}).sort("gain", descending=True)
    keys = [k for k in chosen[0] if k not in ("fold", "seed")] if chosen else []
    extra = {k: [{"fold": c["fold"], "seed": c["seed"], k: c[k]} for c in chosen] for k in keys}
    extra["inputs"] = {"backbones": backbones, "columns": len(columns), "dimensions": cf.records[0]["dimensions"]}
    result = cf.result(name, test_ids, extra, importance, bootstrap)
    if folder is not None:
        spec = model_spec(name, kind, task, {}, params=params.to_dict(), seeds=list(model.seeds),
                          models=[r["file"] for r in cf.records],
                          inputs={"backbones": backbones, "columns": columns, "requested_groups": model.features,
                                  "groups": {c: features.groups.get(c) for c in columns}})
        write_model(folder, spec, result)
    return result
