"""Cross-validation of one booster ``[[models]]`` entry through the shared driver (:mod:`dermstack.crossfit`)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from dermstack.boosting.base import FeatureMatrix, adapter_class, resolve_device
from dermstack.boosting.defaults import DEFAULT_SAMPLING, check_scores_vary, fold_size, resolve_params, size_overrides
from dermstack.boosting.registry import create_adapter
from dermstack.boosting.sampling import SamplingConfig, resample, stopping_rows
from dermstack.boosting.store import ModelStore
from dermstack.boosting.weights import sample_weights
from dermstack.calibration import training_prior, undo_prior
from dermstack.config import ModelConfig
from dermstack.crossfit import align_rows, cross_fit
from dermstack.data.folds import FoldPlan
from dermstack.errors import ConfigError, DataError
from dermstack.features.featureset import FeatureSet
from dermstack.jobs import FoldJob, LocalJobs, SharedLock, available_cores, file_input
from dermstack.predictions import ModelResult
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

#: At most this many fits side by side in one process: each holds its own copy of its training rows.
MAX_SIDE_BY_SIDE = 4


def local_executor(executor, params: dict, n_jobs: int):
    """Where the fold x seed fits of one booster run: ``executor`` when it is a cluster; in this process,
    side by side (one per core, at most :data:`MAX_SIDE_BY_SIDE`, the cores shared out) on a CPU.
    Sequential fits with every core each left one of the two cores idle most of the time: HAM10000-size
    folds fit in 0.1-2 s, where a library's threads mostly wait on each other."""
    if executor is not None and not isinstance(executor, LocalJobs):
        return executor
    on_cpu = resolve_device(params.get("device", "auto")) == "cpu" and "threads" not in params
    return LocalJobs(parallel=min(available_cores(), MAX_SIDE_BY_SIDE, n_jobs) if on_cpu else 1)


def usable_columns(df: pl.DataFrame, columns: list[str]) -> list[str]:
    """``columns`` without those that are null on every training row (each one logged as a warning)."""
    if not columns:
        raise DataError("no feature columns to train on: the selected feature groups built none for this data "
                        "(enable more groups in [features], e.g. image features from the masks)")
    nulls = df.select(pl.col(columns).null_count()).row(0)
    dead = [c for c, n in zip(columns, nulls) if n == df.height]
    schema = df.schema  # built per access
    float_cols = [c for c in columns if schema[c].is_float() and c not in dead]
    if float_cols:
        nans = df.select(pl.col(float_cols).is_nan().sum()).row(0, named=True)
        dead += [c for c in float_cols if nans[c] + df[c].null_count() == df.height]
    if dead:
        log.warning("dropping %d feature column(s) with no value in any training row: %s", len(dead), dead[:20])
    if len(dead) == len(columns):
        raise DataError(f"every selected feature column is empty in the training rows: {columns[:10]}")
    return [c for c in columns if c not in dead]


def cross_validate(features: FeatureSet, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                   out_dir: Path | None = None, test: bool = True, client=None, bootstrap: int = 200,
                   fold_features: Callable[[int], FeatureSet] | None = None, needs: dict | None = None,
                   executor=None) -> ModelResult:
    """Train ``model`` on every fold of ``plan`` for each seed; OOF, test predictions, metrics, importance.

    The model goes to ``out_dir/<model name>/`` (native files per fold and seed plus the registry's
    files) when ``out_dir`` is given. ``client``: a ``distributed.Client`` to train each fit through
    ``lightgbm.dask`` / ``xgboost.dask`` (one fit over the cluster); ``executor``: where the fold x
    seed jobs run (:mod:`dermstack.crossfit`; on a Dask cluster each job reads the features file).
    ``fold_features(k)``: the FeatureSet fold k trains, is validated and predicts test rows on, when
    some values differ by fold (leak-free CNN scores); ``features`` then fixes the columns and
    ``needs`` says which saved model those values come from."""
    if client is not None and executor is not None and not isinstance(executor, LocalJobs):
        raise ConfigError("a booster trains either each fit over the Dask cluster (client) or each job on a worker, not both")
    name, adapter_cls = model.label, adapter_class(model.kind)  # the class travels with the fits (a Dask worker too)
    params = resolve_params(adapter_cls, task.kind, model.params)
    sampling = SamplingConfig.from_dict(model.sampling or (DEFAULT_SAMPLING if task.kind.binary else {}), task.kind)
    train_df = align_rows(features.df, task.image_ids)
    columns = usable_columns(train_df, features.columns(model.features))
    matrix = FeatureMatrix.fit(train_df, columns, features.categorical)
    del train_df
    test_ids = features.df.filter(pl.col("split") == "test")["image_id"].to_list() if test else []
    store = ModelStore.create(Path(out_dir) / name, name, model, task, matrix, features.groups, params, sampling,
                              needs) if out_dir else None
    source = file_input(features, features.source, FeatureSet.read)
    current: dict = {}
    building = SharedLock()  # fits side by side share one build of the matrices
    y = task.y

    def design(fold: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The fold's matrices (one for every fold unless its feature values differ by fold)."""
        key = fold if fold_features else "all"
        with building:
            if current.get("key") != key:
                current.clear()  # the previous fold's matrices go before this fold's are built (a running fit keeps its own)
                fs = fold_features(fold) if fold_features else source.get()
                current.update(key=key, X=matrix.to_pandas(align_rows(fs.df, task.image_ids)),
                               X_test=matrix.to_pandas(fs.df.filter(pl.col("split") == "test")) if test_ids else None)
            return current["X"], current["X_test"]

    def fit(job: FoldJob):
        X, X_test = design(job.fold)
        fit_idx = resample(job.train, y, sampling, seed=job.seed * 1000 + job.fold)
        rows, minority = fold_size(task.kind, y[fit_idx])  # the defaults scale with what this fit sees
        fit_params = resolve_params(adapter_cls, task.kind, model.params, rows, minority)
        adapter = create_adapter(adapter_cls, task.kind, task.classes, fit_params, job.seed, matrix.categorical, client=client)
        how = fit_params.get("class_weight")
        weight = sample_weights(task.kind, y[fit_idx], how, len(task.classes))
        stop_idx = stopping_rows(job.valid, y, sampling, seed=job.seed * 1000 + job.fold)
        valid_weight = sample_weights(task.kind, y[stop_idx], how, len(task.classes))
        adapter.fit(X.iloc[fit_idx], y[fit_idx], X.iloc[stop_idx], y[stop_idx], weight, valid_weight)
        valid_raw = adapter.predict_proba(X.iloc[job.valid])
        check_scores_vary(adapter_cls, name, job.fold, valid_raw, lambda: adapter.predict_proba(X.iloc[fit_idx]), fit_params,
                          rows, minority, per_output=task.kind.multilabel, skip=getattr(adapter, "constant_outputs", ()),
                          best_iteration=adapter.best_iteration)
        # the odds the resampling and weights put into the model, taken out again (dermstack.calibration)
        factor = training_prior(task.kind, y[job.train], np.searchsorted(job.train, fit_idx), weight,
                                float(fit_params.get("scale_pos_weight", 1.0)))
        record = {"gain": adapter.importance(), "best_iteration": adapter.best_iteration, "fit_rows": len(fit_idx),
                  "size_overrides": size_overrides(adapter_cls, task.kind, rows, minority),
                  "file": store.save(adapter, job.fold, job.seed, factor) if store else None}
        valid = undo_prior(task.kind, valid_raw, factor)
        return valid, (undo_prior(task.kind, adapter.predict_proba(X_test), factor) if X_test is not None else None), record

    if client is None:
        executor = local_executor(executor, params, len(model.seeds) * plan.n_splits)
    cf = cross_fit(task, plan, list(model.seeds), fit, len(test_ids), desc=name, executor=executor)
    gain: dict[str, float] = {}
    for r in cf.records:
        for f, g in r["gain"].items():
            gain[f] = gain.get(f, 0.0) + g
    n_fits = max(1, len(cf.records))
    importance = pl.DataFrame({
        "feature": list(gain), "group": [features.groups.get(f, "metadata") for f in gain],
        "gain": [g / n_fits for g in gain.values()],
    }, schema={"feature": pl.String, "group": pl.String, "gain": pl.Float64}).sort("gain", descending=True)
    extra = {k: [r[k] for r in cf.records] for k in ("best_iteration", "fit_rows", "size_overrides")}
    result = cf.result(name, test_ids, extra, importance, bootstrap)
    if store:
        store.finish(result, [r["file"] for r in cf.records])
    return result
