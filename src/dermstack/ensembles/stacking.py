"""Level-2 learners on the OOF scores of all base models (:mod:`dermstack.ensembles.level2`),
evaluated by nested cross-validation: the learner of fold k is fitted (and its own
hyper-parameters chosen) on the other folds' OOF rows only.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.crossfit import apply_by_fold, check_plan, check_same_plan, fit_other_folds, fold_metrics
from dermstack.data.folds import FoldPlan
from dermstack.ensembles.level2 import Level2, make_learner
from dermstack.errors import DataError
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import Inputs, SavedModel, model_spec, write_model
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)


# -- level-2 learner ------------------------------------------------------------------------------
def score_tensor(preds: list[Predictions], names: list[str], ids: list[str], classes: list[str], source: str) -> np.ndarray:
    """(n, M, C) seed/fold-averaged scores of models ``names`` for rows ``ids``; a missing score is a DataError."""
    return np.stack([np.reshape(p.matrix(ids, classes, source=f"model {n!r} {source}"), (len(ids), len(classes)))
                     for n, p in zip(names, preds)], axis=1)


def stack_models(outs: list[ModelResult], task: TaskSpec, plan: FoldPlan, method: str = "stack",
                 out_dir: Path | None = None) -> ModelResult:
    """Level-2 ``method`` ("stack": logistic regression on logits; "rank": weighted rank average) on the
    OOF scores of ``outs``, evaluated by nested CV over ``plan``; the final learner (fitted on every
    OOF row) scores the test rows and is saved in ``out_dir/<method>/model.json``."""
    t0 = time.perf_counter()
    names = [o.name for o in outs]
    if len(names) < 2:
        raise DataError(f"a level-2 stack needs at least two base models, got {names}")
    check_same_plan(outs, plan)
    X = score_tensor([o.oof for o in outs], names, task.image_ids, task.classes, "OOF")
    y = task.y
    fold_of = plan.fold_of(task.image_ids)
    oof = np.full((len(y), len(task.classes)), np.nan)
    folds = check_plan(plan, task)
    learners = fit_other_folds(fold_of, lambda tr: make_learner(method, task.kind, names).fit(X[tr], y[tr], fold_of[tr]),
                               [k for k, _, _ in folds])
    oof = apply_by_fold(fold_of, learners, lambda learner, rows: learner.predict(X[rows]), oof)
    final = make_learner(method, task.kind, names).fit(X, y, fold_of)
    test_ids = _common_test_ids(outs)
    test = (final.predict(score_tensor([o.test for o in outs], names, test_ids, task.classes, "test")) if test_ids
            else np.zeros((0, len(task.classes))))
    score = task.squeeze(oof)
    metrics = fold_metrics(task, score, [va for _, _, va in folds])
    metrics.update(base_models=names, weights=final.weights(), seconds=round(time.perf_counter() - t0, 2))
    importance = pl.DataFrame({"feature": names, "group": ["model"] * len(names), "gain": [final.weights()[m] for m in names]})
    result = ModelResult(method, Predictions.from_scores(method, task.image_ids, task.classes, oof, fold=fold_of),
                         Predictions.from_scores(method, test_ids, task.classes, test), metrics, importance)
    if out_dir:
        write_model(Path(out_dir) / method, model_spec(method, method, task, {"members": names}, learner=final.to_json()), result)
    return result


def _common_test_ids(outs: list[ModelResult]) -> list[str]:
    sets = [sorted(o.test.image_ids()) for o in outs]
    if any(s != sets[0] for s in sets):
        raise DataError(f"base models scored different test rows: {[(o.name, len(s)) for o, s in zip(outs, sets)]}")
    return outs[0].test.image_ids()


class SavedLevel2(SavedModel):
    """A level-2 learner over its members' scores."""

    @property
    def learner(self) -> Level2:
        return Level2.from_json(self.spec["learner"])

    def predict(self, inputs: Inputs) -> np.ndarray:
        learner = self.learner
        X = np.stack([np.reshape(inputs.matrix(m), (len(inputs.ids), len(inputs.classes))) for m in learner.models], axis=1)
        return learner.predict(X)


def comparison(results: list, task: TaskSpec) -> pl.DataFrame:
    """One row per model (base models, the stacked booster, the level-2 stack): every task metric with
    its bootstrap 95% interval, on the same OOF rows."""
    rows = []
    for r in results:
        row = {"model": r.name}
        for m in task.metrics:
            row[m] = r.metrics.get(m)
            lo, hi = (r.metrics.get("ci95", {}).get(m) or [None, None])
            row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
        rows.append(row)
    return pl.DataFrame(rows)
