"""The one cross-fitting driver: every model kind trains fold x seed on the run's FoldPlan here.

Boosters, linear probes, CNNs and stacked boosters differ only in what one fit does, so they hand
:func:`cross_fit` a ``fit(job) -> (valid scores, test scores, record)`` callback; ``record`` (a dict:
files written, chosen iteration, ...) is what the kind keeps of the fit, collected in ``records``
in job order. The driver checks the plan, runs the fold x seed jobs through an executor
(:mod:`dermstack.jobs`: in this process, or each a task on a Dask cluster), collects OOF and test
scores, and scores the result the same way for every kind (task metrics, per fold, per seed,
bootstrap CIs). Also here, because every stage needs them: aligning rows to the task's order and
checking a plan against a task.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import polars as pl

from dermstack.data.folds import FoldPlan
from dermstack.errors import DataError
from dermstack.jobs import DaskJobs, FitFn, FoldJob, LocalJobs
from dermstack.metrics import bootstrap_cis, evaluate
from dermstack.predictions import ModelResult, Predictions
from dermstack.progress import progress_bar
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)
M = TypeVar("M")


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


def check_same_plan(outs: list[ModelResult], plan: FoldPlan) -> None:
    """Models combined by an ensemble were cross-fitted on ``plan``: a member whose OOF rows were
    scored by other folds (another fold seed, another plan) saw the other members' validation rows,
    and the ensemble's nested-CV score would be optimistic; a DataError names the model and a row."""
    want = plan.folds.select("image_id", pl.col("fold").alias("plan_fold"))
    for o in outs:
        scored = o.oof.frame.filter(pl.col("fold").is_not_null()).select("image_id", "fold").unique()
        bad = scored.join(want, on="image_id", how="left").filter(
            pl.col("plan_fold").is_null() | (pl.col("fold") != pl.col("plan_fold")))
        if bad.height:
            r = bad.row(0, named=True)
            where = "is not in the plan" if r["plan_fold"] is None else f"is in fold {r['plan_fold']} of the plan"
            raise DataError(f"model {o.name!r} was cross-fitted on another fold plan: row {r['image_id']} was scored by "
                            f"its fold {r['fold']} but {where} ({bad.height} such rows); models fitted on different "
                            "splits cannot be combined: refit it on this fold plan", file=str(o.dir or o.name))


def fold_metrics(task: TaskSpec, score: np.ndarray, valid_rows: list[np.ndarray], bootstrap: int = 200) -> dict:
    """Task metrics of the OOF scores, per fold, and their bootstrap 95% intervals."""
    y = task.y
    out: dict = evaluate(task.kind, y, score)
    out["folds"] = {m: [] for m in task.metrics}
    for va in valid_rows:
        for m, v in evaluate(task.kind, y[va], score[va]).items():
            out["folds"][m].append(v)
    out["ci95"] = {m: list(ci) for m, ci in bootstrap_cis(task.metrics, y, score, n=bootstrap).items()} if bootstrap else {}
    return out


# -- nested: fit on the other folds, apply to this fold -----------------------------------------
def fit_other_folds(fold_of: np.ndarray, fit: Callable[[np.ndarray], M], folds=None) -> dict:
    """``{k: fit(rows outside fold k)}`` (a boolean mask over ``fold_of``) for each fold ``k`` of
    ``folds`` (default: every fold in ``fold_of``): what a second-level step (a stack, a calibrator,
    decision thresholds) of OOF scores needs so that fold k's output never used fold k's labels."""
    fold_of = np.asarray(fold_of)
    return {plain(k): fit(fold_of != k) for k in (np.unique(fold_of) if folds is None else folds)}


def apply_by_fold(fold_of: np.ndarray, fitted: dict, apply: Callable[[M, np.ndarray], np.ndarray],
                  out: np.ndarray) -> np.ndarray:
    """``out`` with the rows of each fold ``k`` set to ``apply(fitted[k], rows of k)``."""
    fold_of = np.asarray(fold_of)
    for k, model in fitted.items():
        rows = fold_of == k
        out[rows] = apply(model, rows)
    return out


def plain(k):
    """A fold id as a plain Python value (a dict key that JSON and ``==`` treat alike)."""
    return k.item() if hasattr(k, "item") else k


@dataclass
class CrossFit:
    """What :func:`cross_fit` collected: ``oof`` (S, n, C), ``test`` (n_test, C) averaged over every fit."""

    task: TaskSpec
    seeds: list[int]
    folds: list[tuple[int, np.ndarray, np.ndarray]]
    oof: np.ndarray
    test: np.ndarray
    seconds: float
    records: list[dict] = field(default_factory=list)  # each fit's record, in job order (fold, then seed)
    executor: dict = field(default_factory=dict)  # where the jobs ran: executor, scheduler, worker of each job

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
        metrics["executor"] = self.executor
        oof = Predictions.from_seeds(name, task.image_ids, task.classes, self.seeds, self.oof, self.fold_of)
        test = Predictions.from_scores(name, test_ids, task.classes, self.test)
        log.info("%s: %s in %.1f s", name, {m: round(v, 4) for m, v in metrics.items() if isinstance(v, float)}, self.seconds)
        return ModelResult(name, oof, test, metrics, importance)


def cross_fit(task: TaskSpec, plan: FoldPlan, seeds: list[int], fit: FitFn, n_test: int = 0, desc: str = "model",
              executor: LocalJobs | DaskJobs | None = None) -> CrossFit:
    """Run ``fit`` for every fold of ``plan`` (outer) and seed (inner) through ``executor`` (default:
    in this process); see the module docstring."""
    t0 = time.perf_counter()
    executor = executor or LocalJobs()
    folds = check_plan(plan, task)
    n, n_out = len(task.image_ids), task.n_outputs
    oof = np.full((len(seeds), n, n_out), np.nan)
    test_sum = np.zeros((n_test, n_out))
    jobs = [FoldJob(k, seed, si, tr, va) for k, tr, va in folds for si, seed in enumerate(seeds)]
    records: dict[tuple[int, int], dict] = {}
    tests: dict[tuple[int, int], np.ndarray] = {}
    workers: dict[str, str] = {}
    seconds: dict[str, float] = {}
    bar = progress_bar(total=len(jobs), desc=desc, unit="fit", leave=False)
    for job, (valid, test, record), took, worker in executor.run(fit, jobs):
        oof[job.seed_index, job.valid] = np.reshape(valid, (len(job.valid), n_out))
        if n_test:
            tests[job.fold, job.seed_index] = np.reshape(test, (n_test, n_out))
        records[job.fold, job.seed_index] = record or {}
        workers[f"fold{job.fold}_seed{job.seed}"] = worker
        seconds[f"fold{job.fold}_seed{job.seed}"] = round(took, 3)
        bar.update()
    bar.close()
    for key in sorted(tests):  # in job order wherever the jobs ran, so that the sums agree to the bit
        test_sum += tests[key]
    where = executor.describe() | ({"workers": dict(sorted(workers.items()))} if isinstance(executor, DaskJobs) else {})
    where["job_seconds"] = dict(sorted(seconds.items()))
    return CrossFit(task, list(seeds), folds, oof, test_sum / max(1, len(jobs)), time.perf_counter() - t0,
                    [records[j.fold, j.seed_index] for j in jobs], where)
