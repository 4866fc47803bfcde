"""Cross-validation of one ``[[models]]`` entry over the run's FoldPlan, for each of its seeds."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from dermstack.boosting.base import FeatureMatrix
from dermstack.boosting.defaults import DEFAULT_SAMPLING, check_scores_vary, fold_size, resolve_params, size_overrides
from dermstack.boosting.registry import create_adapter
from dermstack.boosting.sampling import SamplingConfig, resample
from dermstack.boosting.store import ModelStore
from dermstack.boosting.weights import sample_weights
from dermstack.config import ModelConfig
from dermstack.data.folds import FoldPlan
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.metrics import TASK_METRICS, bootstrap_ci, evaluate
from dermstack.progress import progress_bar
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class CVResult:
    """``oof``: long (image_id, model, seed, fold, class, score); ``test``: long (image_id, model,
    class, score) averaged over folds and seeds, empty without test rows; ``metrics``: metric ->
    value of the seed-averaged OOF scores, plus ``ci95`` (metric -> [lo, hi], bootstrap),
    ``folds`` and ``seeds`` (metric -> list), ``best_iteration``, ``fit_rows`` and ``size_overrides`` (the
    defaults scaled to the fit's size) (one per fit, fold by fold, seeds within a fold), ``seconds``;
    ``importance``: feature, group, gain (mean over fitted models)."""

    name: str
    oof: pl.DataFrame
    test: pl.DataFrame
    metrics: dict
    importance: pl.DataFrame
    model_dir: Path | None = None
    oof_scores: np.ndarray | None = field(default=None, repr=False)

    def oof_matrix(self) -> np.ndarray:
        """Seed-averaged OOF scores in ``task.image_ids`` order: (n,) binary, (n, C) otherwise."""
        return self.oof_scores


def align_rows(df: pl.DataFrame, image_ids: list[str], source: str = "features") -> pl.DataFrame:
    """Rows of ``df`` in the order of ``image_ids``; an id without a row is a DataError naming it."""
    order = pl.DataFrame({"image_id": pl.Series(image_ids, dtype=pl.String)})
    out = order.join(df, on="image_id", how="left", maintain_order="left")
    missing = order.join(df.select("image_id"), on="image_id", how="anti")["image_id"].to_list()
    if missing:
        raise DataError(f"{len(missing)} training ids have no feature row, e.g. {missing[:5]}", file=source)
    if out.height != len(image_ids):
        raise DataError("feature table has duplicate image_id rows", file=source, column="image_id")
    return out


def usable_columns(df: pl.DataFrame, columns: list[str]) -> list[str]:
    """``columns`` without those that are null on every training row (each one logged as a warning)."""
    if not columns:
        raise DataError("no feature columns to train on: the selected feature groups built none for this data "
                        "(enable more groups in [features], e.g. image features from the masks)")
    nulls = df.select(pl.col(columns).null_count()).row(0)
    dead = [c for c, n in zip(columns, nulls) if n == df.height]
    float_cols = [c for c in columns if df.schema[c].is_float() and c not in dead]
    if float_cols:
        nans = df.select(pl.col(float_cols).is_nan().sum()).row(0, named=True)
        dead += [c for c in float_cols if nans[c] + df[c].null_count() == df.height]
    if dead:
        log.warning("dropping %d feature column(s) with no value in any training row: %s", len(dead), dead[:20])
    if len(dead) == len(columns):
        raise DataError(f"every selected feature column is empty in the training rows: {columns[:10]}")
    return [c for c in columns if c not in dead]


def check_plan(plan: FoldPlan, task: TaskSpec) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The plan's folds for the task's rows; a plan that does not cover exactly these ids, or a fold
    whose training part lacks a class, is a DataError; a single-class validation part is a warning."""
    plan_ids = set(plan.folds["image_id"].to_list())
    extra = plan_ids - set(task.image_ids)
    if extra:
        raise DataError(f"fold plan does not match the table: {len(extra)} plan ids are not training rows, "
                        f"e.g. {sorted(extra)[:3]}")
    folds = list(plan.splits(task.image_ids))
    y = task.y
    for k, tr, va in folds:
        if len(va) == 0:
            raise DataError(f"fold {k} of the fold plan has no validation rows")
        for part, rows in (("training", tr), ("validation", va)):
            labels = y[rows]
            lacking = _lacking_classes(task, labels)
            if not lacking:
                continue
            msg = f"fold {k}: the {part} part has no {lacking} rows"
            if part == "training" and task.kind == "binary":
                raise DataError(msg + "; a booster cannot learn a class it never sees (make a new fold plan)")
            log.warning(msg)
    return folds


def _lacking_classes(task: TaskSpec, labels: np.ndarray) -> list:
    if task.kind == "binary":
        return [c for c in (0, 1) if not (labels == c).any()]
    if task.kind == "multiclass":
        return [task.classes[c] for c in range(len(task.classes)) if not (labels == c).any()]
    return [f"positive {c}" for j, c in enumerate(task.classes) if not labels[:, j].any()]


def cross_validate(features: FeatureSet, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                   out_dir: Path | None = None, test: bool = True, client=None, bootstrap: int = 200,
                   fold_features: Callable[[int], FeatureSet] | None = None) -> CVResult:
    """Train ``model`` on every fold of ``plan`` for each seed; OOF, test predictions, metrics, importance.

    Models go to ``out_dir/<model name>/`` (native files, model.json, metrics.json, importance.parquet)
    when ``out_dir`` is given. ``client``: a ``distributed.Client`` to train through Dask.
    ``fold_features(k)``: the FeatureSet fold k trains, is validated and predicts test rows on, when
    some values differ by fold (leak-free CNN scores); ``features`` then fixes the columns."""
    t0 = time.perf_counter()
    name = model.label
    params = resolve_params(model.kind, task.kind, model.params)
    sampling = SamplingConfig.from_dict(model.sampling or (DEFAULT_SAMPLING if task.kind == "binary" else {}), task.kind)
    folds = check_plan(plan, task)
    train_df = align_rows(features.df, task.image_ids)
    columns = usable_columns(train_df, features.columns(model.features))
    matrix = FeatureMatrix.fit(train_df, columns, features.categorical)
    test_ids = features.df.filter(pl.col("split") == "test")["image_id"].to_list() if test else []

    def design(train: pl.DataFrame, fs: FeatureSet) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """Training and test matrices of ``fs`` (``train``: its training rows in task order)."""
        X_test = matrix.to_pandas(fs.df.filter(pl.col("split") == "test")) if test_ids else None
        return matrix.to_pandas(train), X_test

    y = task.y
    n, n_out = len(task.image_ids), task.n_outputs
    seeds = list(model.seeds)
    oof = np.full((len(seeds), n, n_out), np.nan)
    test_sum = np.zeros((len(test_ids), n_out))
    gain: dict[str, float] = {}
    store = ModelStore.create(Path(out_dir) / name, name, model, task, matrix, features.groups, params, sampling) if out_dir else None
    best_iter, fit_rows, sized = [], [], []
    X, X_test = design(train_df, features) if fold_features is None else (None, None)
    del train_df
    bar = progress_bar(total=len(seeds) * len(folds), desc=f"{name}", unit="fit", leave=False)
    for k, tr, va in folds:
        if fold_features is not None:
            X = X_test = None  # the previous fold's matrices go before this fold's are built
            fs = fold_features(k)
            X, X_test = design(align_rows(fs.df, task.image_ids), fs)
        for si, seed in enumerate(seeds):
            fit_idx = resample(tr, y, sampling, seed=seed * 1000 + k)
            rows, minority = fold_size(task.kind, y[fit_idx])
            fit_params = resolve_params(model.kind, task.kind, model.params, rows, minority)
            sized.append(size_overrides(model.kind, task.kind, rows, minority))
            adapter = create_adapter(model.kind, task.kind, task.classes, fit_params, seed, matrix.categorical, client=client)
            how = fit_params.get("class_weight")
            weight = sample_weights(task.kind, y[fit_idx], how, len(task.classes))
            valid_weight = sample_weights(task.kind, y[va], how, len(task.classes))
            adapter.fit(X.iloc[fit_idx], y[fit_idx], X.iloc[va], y[va], weight, valid_weight)
            oof[si, va] = adapter.predict_proba(X.iloc[va]).reshape(len(va), n_out)
            check_scores_vary(model.kind, name, k, oof[si, va], lambda: adapter.predict_proba(X.iloc[fit_idx]), fit_params,
                              rows, minority, per_output=task.kind == "multilabel", skip=getattr(adapter, "constant_outputs", ()),
                              best_iteration=adapter.best_iteration)
            if X_test is not None:
                test_sum += adapter.predict_proba(X_test).reshape(len(X_test), n_out)
            for f, g in adapter.importance().items():
                gain[f] = gain.get(f, 0.0) + g
            best_iter.append(adapter.best_iteration)
            fit_rows.append(len(fit_idx))
            if store:
                store.add(adapter, k, seed)
            bar.update()
    bar.close()
    n_fits = len(seeds) * len(folds)
    fold_of = np.empty(n, dtype=np.int32)
    for k, _, va in folds:
        fold_of[va] = k
    score = _squeeze(oof.mean(axis=0))
    metrics = fold_metrics(task, score, [va for _, _, va in folds], bootstrap)
    metrics["seeds"] = {m: [evaluate(task.kind, y, _squeeze(o))[m] for o in oof] for m in TASK_METRICS[task.kind]}
    metrics.update(best_iteration=best_iter, fit_rows=fit_rows, size_overrides=sized, seconds=round(time.perf_counter() - t0, 2))
    importance = pl.DataFrame({
        "feature": list(gain), "group": [features.groups.get(f, "metadata") for f in gain],
        "gain": [g / n_fits for g in gain.values()],
    }, schema={"feature": pl.String, "group": pl.String, "gain": pl.Float64}).sort("gain", descending=True)
    result = CVResult(
        name, oof_frame(name, task, seeds, oof, fold_of),
        test_frame(name, task.classes, test_ids, test_sum / max(n_fits, 1)),
        metrics, importance, store.dir if store else None, score,
    )
    if store:
        store.finish(result)
    log.info("%s: %s in %.1f s", name, {m: round(v, 4) for m, v in metrics.items() if isinstance(v, float)}, metrics["seconds"])
    return result


def _squeeze(s: np.ndarray) -> np.ndarray:
    return s[:, 0] if s.ndim == 2 and s.shape[1] == 1 else s


def fold_metrics(task: TaskSpec, score: np.ndarray, valid_rows: list[np.ndarray], bootstrap: int = 200) -> dict:
    """Task metrics of the OOF scores, per fold, and their bootstrap 95% intervals."""
    y = task.y
    out: dict = evaluate(task.kind, y, score)
    out["folds"] = {m: [] for m in TASK_METRICS[task.kind]}
    for va in valid_rows:
        for m, v in evaluate(task.kind, y[va], score[va]).items():
            out["folds"][m].append(v)
    out["ci95"] = {m: list(bootstrap_ci(fn, y, score, n=bootstrap)) for m, fn in TASK_METRICS[task.kind].items()} if bootstrap else {}
    return out


def oof_frame(name: str, task: TaskSpec, seeds: list[int], oof: np.ndarray, fold_of: np.ndarray) -> pl.DataFrame:
    """Long OOF table: image_id, model, seed, fold, class, score."""
    n = len(task.image_ids)
    parts = [
        pl.DataFrame({
            "image_id": pl.Series(task.image_ids, dtype=pl.String), "model": pl.repeat(name, n, eager=True),
            "seed": pl.repeat(seed, n, dtype=pl.Int32, eager=True), "fold": pl.Series(fold_of, dtype=pl.Int32),
            "class": pl.repeat(cls, n, eager=True), "score": pl.Series(oof[si, :, j], dtype=pl.Float64),
        })
        for si, seed in enumerate(seeds) for j, cls in enumerate(task.classes)
    ]
    return pl.concat(parts)


def test_frame(name: str, classes: list[str], image_ids: list[str], score: np.ndarray) -> pl.DataFrame:
    """Long test table: image_id, model, class, score (empty when there are no test rows)."""
    m = len(image_ids)
    schema = {"image_id": pl.String, "model": pl.String, "class": pl.String, "score": pl.Float64}
    parts = [
        pl.DataFrame({"image_id": image_ids, "model": [name] * m, "class": [cls] * m, "score": score[:, j]}, schema=schema)
        for j, cls in enumerate(classes)
    ]
    return pl.concat(parts) if m else pl.DataFrame(schema=schema)
