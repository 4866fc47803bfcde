"""The pair CNNs whose leak-free views are the boosters' ``cnn`` feature group.

For each pair of folds {j, k} a CNN is trained without both; how the pair models become each
booster's view is :mod:`dermstack.features.scores` (shared with the linear probe's group). Pair CNNs
train the fixed schedule, no early stopping, so no fold's labels select them. K(K-1)/2 extra CNNs
(10 for 5 folds). The views reach a booster as one more feature group, handed over by the pipeline
(:attr:`dermstack.registry.ModelKind.feature_group`): the boosters never import the CNN.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from dermstack.atomic import write_json
from dermstack.cnn.train import CNNConfig, CNNTrainer, image_refs, save_net, training_frame
from dermstack.config import ModelConfig
from dermstack.crossfit import check_plan
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.features.scores import ScoreViews, nested_scores, pair_stem, views_file
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)


def nested_cnn_views(table: LesionTable, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                     out_dir: Path | None = None, progress: bool = True) -> ScoreViews:
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
                save_net(fm.net, ndir / f"{pair_stem(fold_of, train, plan.n_splits, seed)}.safetensors")
            return [trainer.score(fm.net, rows) for rows in score_sets]

        acc.append(nested_scores(fit_score, fold_of, plan.n_splits, test_df.height, task.n_outputs))
    views = ScoreViews.averaged(name, task, test_df["image_id"].to_list(), acc)
    if ndir:
        views.write(views_file(ndir.parent))
        write_json(ndir / "nested.json", {"name": name, "arch": trainer.template.arch, "task": task.kind,
                                          "classes": list(task.classes), "n_splits": plan.n_splits, "seeds": list(model.seeds)})
    return views
