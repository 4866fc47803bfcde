"""The linear probe's scores as the boosters' ``probe`` feature group: pair probes and their views.

One probe per pair of folds {j, k}, fitted without both (its design standardised and its C chosen
by inner CV on the remaining rows only), as the CNN's pair models are: how they become each
booster's leak-free view, and the columns beside the score, is :mod:`dermstack.features.scores`.
The pair probes are saved under ``<model>/nested/`` (``without<j>-<k>_seed<s>.npz/.json``); their
mean scores new rows (:meth:`dermstack.linear.probe.SavedLinear.feature_frame`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import write_json
from dermstack.config import ModelConfig
from dermstack.crossfit import align_rows, check_plan
from dermstack.data.folds import FoldPlan
from dermstack.features.featureset import FeatureSet
from dermstack.features.scores import ScoreViews, nested_scores, pair_stem, views_file
from dermstack.linear.cv import select_inputs
from dermstack.linear.design import Design, read_rows, split_columns
from dermstack.linear.feature import NESTED_JSON
from dermstack.linear.probe import LinearParams, fit_probe
from dermstack.task import TaskSpec, as_columns


def nested_probe_views(features: FeatureSet, store, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                       out_dir: Path | None = None) -> ScoreViews:
    """Fit the pair probes of ``model`` (every seed) on the inputs its cross-validation reads and return
    the booster views; with ``out_dir``, the pair probes and views go to ``out_dir/<name>/nested/``."""
    name, where = model.label, f"[[models]] {model.label}"
    params = LinearParams.from_dict(model.params, where)
    columns, backbones = select_inputs(features, store, model.features, where)
    numeric, categorical = split_columns(features.df, columns, features.categorical)
    test_ids = features.df.filter(pl.col("split") == "test")["image_id"].to_list()
    inputs = read_rows(features.df, columns, store, backbones, list(task.image_ids) + test_ids)
    groups = align_rows(plan.folds.select("image_id", "group"), task.image_ids, source="folds")["group"].to_numpy()
    check_plan(plan, task)
    fold_of = plan.fold_of(task.image_ids)
    ndir = Path(out_dir) / name / "nested" if out_dir else None
    if ndir:
        ndir.mkdir(parents=True, exist_ok=True)
    stems, per_seed = [], []
    for seed in model.seeds:
        def fit_score(train: np.ndarray, score_sets: list[np.ndarray], seed=seed) -> list[np.ndarray]:
            design = Design.fit(inputs.take(train), numeric, categorical)
            X = design.matrix(inputs)
            probe = fit_probe(design, X[train], task.y[train], groups[train], task.kind, len(task.classes), params, seed)
            if ndir:
                stem = pair_stem(fold_of, train, plan.n_splits, seed)
                probe.save(ndir / stem)
                stems.append(stem)
            return [as_columns(probe.predict_proba(X[rows])) for rows in score_sets]

        per_seed.append(nested_scores(fit_score, fold_of, plan.n_splits, len(test_ids), task.n_outputs))
    views = ScoreViews.averaged(name, task, test_ids, per_seed)
    if ndir:
        views.write(views_file(ndir.parent))
        write_json(ndir / NESTED_JSON, {"name": name, "task": task.kind, "classes": list(task.classes),
                                        "n_splits": plan.n_splits, "seeds": list(model.seeds), "stems": stems})
    return views
