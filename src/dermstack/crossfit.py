"""The one cross-fitting driver: every model kind trains fold x seed on the run's FoldPlan here.

Boosters, CNNs and stacked boosters differ only in what one fit does, so they hand
:func:`cross_fit` a ``fit(job) -> (valid scores, test scores)`` callback (and, for features whose
values differ by fold, a ``prepare(fold)`` hook run once before a fold's seeds). The driver checks
the plan, loops folds (outer) x seeds (inner), collects OOF and test scores, and scores the result
the same way for every kind (task metrics, per fold, per seed, bootstrap CIs). Also here, because
every stage needs them: aligning rows to the task's order and checking a plan against a task.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from dermstack.data.folds import FoldPlan
from dermstack.errors import DataError
from dermstack.metrics import bootstrap_ci, evaluate
from dermstack.predictions import ModelResult, Predictions
from dermstack.progress import progress_bar
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)


def align_rows(df: pl.DataFrame, image_ids: list[str], source: str = "features") -> pl.DataFrame:
    """Rows of ``df`` in the order of ``image_ids``; an id without a row is a DataError naming it."""
    order = pl.DataFrame({"image_id": pl.Series(image_ids, dtype=pl.String)})
    out = order.join(df, on="image_id", how="left", maintain_order="left")
    missing = order.join(df.select("image_id"), on="image_id", how="anti")["image_id"].to_list()
    if missing:
        raise DataError(f"{len(missing)} training ids have no row, e.g. {missing[:5]}", file=source)
    if out.height != len(image_ids):
        raise DataError("duplicate image_id rows", file=source, column="image_id")
    return out


def check_plan(plan: FoldPlan, task: TaskSpec) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The plan's folds for the task's rows; a plan that does not cover exactly these ids, or a fold
    whose training part lacks a class, is a DataError; a single-class validation part is a warning."""
    extra = set(plan.folds["image_id"].to_list()) - set(task.image_ids)
    if extra:
        raise DataError(f"fold plan does not match the table: {len(extra)} plan ids are not training rows, "
                        f"e.g. {sorted(extra)[:3]}")
    folds = list(plan.splits(task.image_ids))
    for k, tr, va in folds:
        if len(va) == 0:
            raise DataError(f"fold {k} of the fold plan has no validation rows")
        for part, rows in (("training", tr), ("validation", va)):
            lacking = task.lacking_classes(task.y[rows])
            if not lacking:
                continue
            msg = f"fold {k}: the {part} part has no {lacking} rows"
            if part == "training" and task.kind.binary:
                raise DataError(msg + "; a model cannot learn a class it never sees (make a new fold plan)")
            log.warning(msg + ("; this fold's models score them from the other classes only" if part == "training"
                               else "; this fold's metrics leave them out"))
    return folds


def fold_metrics(task: TaskSpec, score: np.ndarray, valid_rows: list[np.ndarray], bootstrap: int = 200) -> dict:
    """Task metrics of the OOF scores, per fold, and their bootstrap 95% intervals."""
    y = task.y
    out: dict = evaluate(task.kind, y, score)
    out["folds"] = {m: [] for m in task.metrics}
    for va in valid_rows:
        for m, v in evaluate(task.kind, y[va], score[va]).items():
            out["folds"][m].append(v)
    out["ci95"] = {m: list(bootstrap_ci(fn, y, score, n=bootstrap)) for m, fn in task.metrics.items()} if bootstrap else {}
    return out


@dataclass(frozen=True)
class FoldJob:
    """One fit: fold ``fold``'s training rows ``train`` and validation rows ``valid`` (indices into the
    task's rows), for seed ``seed`` (``seed_index`` in the model's seed list)."""

    fold: int
    seed: int
    seed_index: int
    train: np.ndarray
    valid: np.ndarray


#: fit(job) -> (scores of job.valid, scores of the test rows or None); each (rows,) or (rows, C)
FitFn = Callable[[FoldJob], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class CrossFit:
    """What :func:`cross_fit` collected: ``oof`` (S, n, C), ``test`` (n_test, C) averaged over every fit."""

    task: TaskSpec
    seeds: list[int]
    folds: list[tuple[int, np.ndarray, np.ndarray]]
    oof: np.ndarray
    test: np.ndarray
    seconds: float

    @property
    def fold_of(self) -> np.ndarray:
        out = np.full(len(self.task.image_ids), -1, dtype=np.int32)
        for k, _, va in self.folds:
            out[va] = k
        return out

    def score(self) -> np.ndarray:
        """Seed-averaged OOF scores in the task's row order: (n,) binary, (n, C) otherwise."""
        return self.task.squeeze(self.oof.mean(axis=0))

    def result(self, name: str, test_ids: list[str], extra: dict | None = None,
               importance: pl.DataFrame | None = None, bootstrap: int = 200) -> ModelResult:
        task = self.task
        metrics = fold_metrics(task, self.score(), [va for _, _, va in self.folds], bootstrap)
        metrics["seeds"] = {m: [evaluate(task.kind, task.y, task.squeeze(o))[m] for o in self.oof] for m in task.metrics}
        metrics.update(extra or {})
        metrics["seconds"] = round(self.seconds, 2)
        oof = Predictions.from_seeds(name, task.image_ids, task.classes, self.seeds, self.oof, self.fold_of)
        test = Predictions.from_scores(name, test_ids, task.classes, self.test)
        log.info("%s: %s in %.1f s", name, {m: round(v, 4) for m, v in metrics.items() if isinstance(v, float)}, self.seconds)
        return ModelResult(name, oof, test, metrics, importance)


def cross_fit(task: TaskSpec, plan: FoldPlan, seeds: list[int], fit: FitFn, n_test: int = 0,
              prepare: Callable[[int], None] | None = None, desc: str = "model") -> CrossFit:
    """Run ``fit`` for every fold of ``plan`` (outer) and seed (inner); see the module docstring."""
    t0 = time.perf_counter()
    folds = check_plan(plan, task)
    n, n_out = len(task.image_ids), task.n_outputs
    oof = np.full((len(seeds), n, n_out), np.nan)
    test_sum = np.zeros((n_test, n_out))
    bar = progress_bar(total=len(seeds) * len(folds), desc=desc, unit="fit", leave=False)
    for k, tr, va in folds:
        if prepare is not None:
            prepare(k)
        for si, seed in enumerate(seeds):
            valid, test = fit(FoldJob(k, seed, si, tr, va))
            oof[si, va] = np.reshape(valid, (len(va), n_out))
            if n_test:
                test_sum += np.reshape(test, (n_test, n_out))
            bar.update()
    bar.close()
    return CrossFit(task, list(seeds), folds, oof, test_sum / max(1, len(seeds) * len(folds)), time.perf_counter() - t0)
