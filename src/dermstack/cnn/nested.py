"""CNN scores as a booster feature group (``cnn``) without leakage: the pair CNNs and their views.

Plain OOF CNN scores are not enough: the training rows of booster k (folds j != k) would carry
scores of CNN_j, which was trained on fold k, the rows booster k is evaluated on. Instead, for each
pair of folds {j, k} a CNN is trained without both (``pair models``). The view of booster k is:

- a training row in fold j: the pair model {j, k};
- a validation row in fold k: the mean of the pair models {j, k} over j != k;
- a test row: the mean of every pair model (the same for all views).

So nothing booster k sees was trained on fold k, on the row itself, or selected with fold k's
labels (pair models train the fixed schedule, no early stopping). K(K-1)/2 extra CNNs (10 for 5
folds). Patient-relative versions (z-score and rank of the score within the patient) are
computed inside each view, where a patient's rows all come from one source.

The views reach a booster as one more feature group, handed over by the pipeline
(:attr:`dermstack.registry.ModelKind.feature_group`): the boosters never import the CNN.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dermstack.atomic import write_json
from dermstack.cnn.feature import GROUP, CNNViews, cnn_feature_frame, patient_key, views_file
from dermstack.cnn.train import CNNConfig, CNNTrainer, image_refs, save_net, training_frame
from dermstack.config import ModelConfig
from dermstack.crossfit import check_plan
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

#: fit_score(train_rows, [rows_a, rows_b, ...]) -> [scores_a, scores_b, ...], rows index training rows
#: 0..n-1 then test rows n..n+n_test-1; scores (len(rows), C).
FitScore = Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]


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
    """Train the pair CNNs of ``model`` (every seed; ``params.pair_epochs`` epochs) and return the booster views; the pair
    checkpoints go to ``out_dir/<name>/nested/`` (``predict`` scores new rows with all of them)."""
    cfg, name = CNNConfig.from_model(model), model.label
    cfg = dataclasses.replace(cfg, epochs=cfg.pair_epochs or cfg.epochs)
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
        views.write(views_file(ndir.parent))
        write_json(ndir / "nested.json", {"name": name, "arch": trainer.template.arch, "task": task.kind,
                                          "classes": list(task.classes), "n_splits": plan.n_splits, "seeds": list(model.seeds)})
    return views


def fold_features(features: FeatureSet, table: LesionTable, task: TaskSpec, views: CNNViews) -> Callable[[int], FeatureSet]:
    """``k -> features`` plus the ``cnn`` group of view k: what the model of fold k trains, is validated
    and scores test rows on (fold 0's set also fixes the columns)."""
    if views.image_ids != list(task.image_ids):
        raise DataError(f"CNN views {views.name!r} were computed for other training rows than this task's")
    patients = patient_key(table)
    first = features.add(cnn_feature_frame(views, 0, patients), GROUP)
    return lambda k: first if k == 0 else features.add(cnn_feature_frame(views, k, patients), GROUP)
