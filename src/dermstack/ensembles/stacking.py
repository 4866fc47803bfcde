"""Stacking, both evaluated on the run's FoldPlan.

1. **CNN scores as a booster feature group** (``cnn``) without leakage. Plain OOF CNN scores are not
   enough: the training rows of booster k (folds j != k) would carry scores of CNN_j, which was
   trained on fold k, the rows booster k is evaluated on. Instead, for each pair of folds {j, k} a
   CNN is trained without both (``pair models``). The view of booster k is:

   - a training row in fold j: the pair model {j, k};
   - a validation row in fold k: the mean of the pair models {j, k} over j != k;
   - a test row: the mean of every pair model (the same for all views).

   So nothing booster k sees was trained on fold k, on the row itself, or selected with fold k's
   labels (pair models train the fixed schedule, no early stopping). K(K-1)/2 extra CNNs (10 for 5
   folds). Patient-relative versions (z-score and rank of the score within the patient) are
   computed inside each view, where a patient's rows all come from one source.
2. **Level-2 learner** on the OOF scores of all base models (:mod:`dermstack.ensembles.level2`),
   evaluated by nested cross-validation: the learner of fold k is fitted (and its own
   hyper-parameters chosen) on the other folds' OOF rows only.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import write_json
from dermstack.boosting.cv import cross_validate
from dermstack.config import ModelConfig
from dermstack.crossfit import apply_by_fold, check_plan, check_same_plan, fit_other_folds, fold_metrics
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.ensembles.cnn import CNNConfig, CNNTrainer, image_refs, save_net, training_frame
from dermstack.ensembles.cnnfeature import CNNViews, cnn_feature_frame, patient_key
from dermstack.ensembles.level2 import Level2, make_learner
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import Inputs, SavedModel, model_spec, write_model
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

#: fit_score(train_rows, [rows_a, rows_b, ...]) -> [scores_a, scores_b, ...], rows index training rows
#: 0..n-1 then test rows n..n+n_test-1; scores (len(rows), C).
FitScore = Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]


# -- 1. nested CNN scores -------------------------------------------------------------------------
def nested_scores(fit_score: FitScore, fold_of: np.ndarray, n_splits: int, n_test: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(views (K, n, C), test (n_test, C)) from one model per pair of folds, as described above."""
    n = len(fold_of)
    views = np.full((n_splits, n, n_out), np.nan)
    valid_sum = np.zeros((n, n_out))
    test_sum = np.zeros((n_test, n_out))
    rows_of = [np.flatnonzero(fold_of == k) for k in range(n_splits)]
    test_rows = np.arange(n, n + n_test)
    pairs = [(j, k) for j in range(n_splits) for k in range(j + 1, n_splits)]
    for j, k in pairs:
        train = np.flatnonzero((fold_of != j) & (fold_of != k))
        sj, sk, st = fit_score(train, [rows_of[j], rows_of[k], test_rows])
        views[k, rows_of[j]] = np.reshape(sj, (-1, n_out))
        views[j, rows_of[k]] = np.reshape(sk, (-1, n_out))
        valid_sum[rows_of[j]] += np.reshape(sj, (-1, n_out))
        valid_sum[rows_of[k]] += np.reshape(sk, (-1, n_out))
        test_sum += np.reshape(st, (-1, n_out))
    for k in range(n_splits):
        views[k, rows_of[k]] = valid_sum[rows_of[k]] / (n_splits - 1)
    return views, test_sum / len(pairs)


def nested_cnn_views(table: LesionTable, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                     out_dir: Path | None = None, progress: bool = True) -> CNNViews:
    """Train the pair CNNs of ``model`` (every seed) and return the booster views; the pair
    checkpoints go to ``out_dir/<name>/nested/`` (``predict`` scores new rows with all of them)."""
    cfg, name = CNNConfig.from_model(model), model.label
    train_df, test_df = training_frame(table, task), table.test
    trainer = CNNTrainer(cfg, task.kind, task.n_outputs, image_refs(train_df) + image_refs(test_df), progress)
    fold_of = plan.fold_of(task.image_ids)
    check_plan(plan, task)
    ndir = Path(out_dir) / name / "nested" if out_dir else None
    if ndir:
        ndir.mkdir(parents=True, exist_ok=True)
    acc = []
    for seed in model.seeds:
        count = [0]

        def fit_score(train: np.ndarray, score_sets: list[np.ndarray], seed=seed, count=count) -> list[np.ndarray]:
            count[0] += 1
            fm = trainer.fit(train, task.y[train], None, None, seed * 1000 + 100 + count[0], desc=f"{name} pair {count[0]}")
            if ndir:
                left = sorted(set(range(plan.n_splits)) - set(np.unique(fold_of[train]).tolist()))
                save_net(fm.net, ndir / f"without{left[0]}-{left[1]}_seed{seed}.safetensors")
            return [trainer.score(fm.net, rows) for rows in score_sets]

        acc.append(nested_scores(fit_score, fold_of, plan.n_splits, test_df.height, task.n_outputs))
    views = CNNViews(name, list(task.classes), list(task.image_ids), np.mean([a[0] for a in acc], axis=0),
                     test_df["image_id"].to_list(), np.mean([a[1] for a in acc], axis=0))
    if ndir:
        views.write(ndir / "views.parquet")
        write_json(ndir / "nested.json", {"name": name, "arch": trainer.template.arch, "task": task.kind,
                                          "classes": list(task.classes), "n_splits": plan.n_splits, "seeds": list(model.seeds)})
    return views


def _with_cnn(features: FeatureSet, views: CNNViews, view: int, patients: pl.DataFrame) -> FeatureSet:
    return features.add(cnn_feature_frame(views, view, patients), "cnn")


def _groups_with_cnn(model: ModelConfig) -> list[str] | None:
    if model.features is None:
        return None
    return list(model.features) + ([] if "cnn" in model.features else ["cnn"])


def cross_validate_stacked(features: FeatureSet, table: LesionTable, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                           views: CNNViews, out_dir: Path | None = None) -> ModelResult:
    """Booster ``model`` with the ``cnn`` feature group: fold k trains and is evaluated on view k only.

    Named ``<booster>+<cnn>``; native model files etc. in ``out_dir/<name>/`` (boosting's layout,
    ``needs.cnn_views`` naming the CNN), the test rows carry the mean of every pair CNN (what
    ``predict`` computes for new rows)."""
    if views.image_ids != list(task.image_ids):
        raise DataError(f"CNN views {views.name!r} were computed for other training rows than this task's")
    patients = patient_key(table)
    first = _with_cnn(features, views, 0, patients)
    cfg = dataclasses.replace(model, name=f"{model.label}+{views.name}", features=_groups_with_cnn(model))
    return cross_validate(first, task, plan, cfg, out_dir, needs={"cnn_views": views.name},
                          fold_features=lambda k: first if k == 0 else _with_cnn(features, views, k, patients))


# -- 2. level-2 learner ---------------------------------------------------------------------------
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
