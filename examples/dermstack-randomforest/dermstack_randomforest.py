"""scikit-learn's random forest as a dermstack model kind, from a package of its own.

Its ``pyproject.toml`` declares ``KIND`` under the entry-point group ``dermstack.kinds``; once the
package is installed (``pip install examples/dermstack-randomforest``), a config may say::

    [[models]]
    kind = "random_forest"
    params = { n_estimators = 300, min_samples_leaf = 2 }

and ``dermstack kinds``, ``run``, ``predict`` and ``report`` use it like a built-in kind. What a kind
gives dermstack (:class:`dermstack.registry.ModelKind`): a params schema, ``cross_validate`` (one
``fit`` per fold and seed through :func:`dermstack.crossfit.cross_fit`, the model folder written by
:func:`dermstack.saved.write_model`) and a :class:`dermstack.saved.SavedModel` that scores new rows
from its own files. The forests are saved as arrays (``.npz``), never pickled. This kind declares no
explainer: the report notes that, and the final model's SHAP takes it as one term, its score.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.ensemble import RandomForestClassifier

from dermstack.atomic import atomic_path
from dermstack.config.problems import schema
from dermstack.config.types import Bool, PosInt
from dermstack.crossfit import align_rows, cross_fit
from dermstack.errors import reading
from dermstack.registry import FitInputs, ModelKind
from dermstack.saved import Inputs, SavedModel, model_folder, model_spec, write_model
from dermstack.taskkind import TaskKind

NAME = "random_forest"


@schema("[[models]] params")
class ForestParams:
    """``n_estimators`` trees of at most ``max_depth`` levels (None: grown until ``min_samples_leaf``);
    ``balanced``: class weights inversely proportional to the class counts."""

    n_estimators: PosInt = 200
    max_depth: PosInt | None = None
    min_samples_leaf: PosInt = 1
    balanced: Bool = True


def flatten(forest: RandomForestClassifier, kind: TaskKind, n_classes: int) -> dict[str, np.ndarray]:
    """The forest's trees end to end as arrays: child indices (-1 at a leaf), split feature and
    threshold, and per node the class fractions of the scored outputs ((nodes, C) columns in task order)."""
    trees = [e.tree_ for e in forest.estimators_]
    start = np.cumsum([0] + [t.node_count for t in trees[:-1]])
    classes = forest.classes_ if isinstance(forest.classes_, list) else [forest.classes_]
    # (output, class index) of each score column: binary class 1, multiclass every class, multi-label class 1 of each output
    wanted = [(0, 1)] if kind.binary else [(0, c) for c in range(n_classes)] if kind.exclusive else [(j, 1) for j in range(n_classes)]
    value = np.concatenate([t.value / t.value.sum(axis=2, keepdims=True) for t in trees])
    columns = [value[:, j, list(classes[j]).index(c)] if c in classes[j] else np.zeros(len(value)) for j, c in wanted]
    return {"start": start,
            "left": np.concatenate([np.where(t.children_left >= 0, t.children_left + s, -1) for t, s in zip(trees, start)]),
            "right": np.concatenate([np.where(t.children_right >= 0, t.children_right + s, -1) for t, s in zip(trees, start)]),
            "feature": np.concatenate([t.feature for t in trees]), "threshold": np.concatenate([t.threshold for t in trees]),
            "value": np.column_stack(columns)}


def score(trees: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """(n, C) mean over the trees of the leaf each row of ``X`` (no missing values) falls in."""
    rows, total = np.arange(len(X)), np.zeros((len(X), trees["value"].shape[1]))
    for s in trees["start"]:
        node = np.full(len(X), s)
        while (inner := trees["left"][node] >= 0).any():
            left = X[rows, trees["feature"][node]] <= trees["threshold"][node]
            node = np.where(inner, np.where(left, trees["left"][node], trees["right"][node]), node)
        total += trees["value"][node]
    return total / len(trees["start"])


def matrix(df: pl.DataFrame, columns: list[str], fill: np.ndarray | None = None) -> np.ndarray:
    """The feature columns as float, a missing value filled with the fold's training median."""
    X = df.select(pl.col(columns).cast(pl.Float64)).to_numpy() if columns else np.zeros((df.height, 0))
    return X if fill is None else np.where(np.isnan(X), fill, X)


def cross_validate(inputs: FitInputs):
    """A forest per fold and seed on the numeric feature columns, through dermstack's cross-fitting driver."""
    task, model, fs = inputs.task, inputs.model, inputs.features
    params = ForestParams(**model.params)
    columns = [c for c in fs.columns(model.features) if fs.df.schema[c].is_numeric()]
    X = matrix(align_rows(fs.df, task.image_ids), columns)
    test = fs.df.filter(pl.col("split") == "test")
    X_test, test_ids = matrix(test, columns), test["image_id"].to_list()
    out = model_folder(Path(inputs.out_dir) / model.label) if inputs.out_dir else None

    def fit(job):
        with warnings.catch_warnings():  # a column missing on every training row is filled with 0
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nan_to_num(np.nanmedian(X[job.train], axis=0))
        forest = RandomForestClassifier(n_estimators=params.n_estimators, max_depth=params.max_depth,
                                        min_samples_leaf=params.min_samples_leaf, random_state=job.seed * 1000 + job.fold,
                                        class_weight="balanced" if params.balanced else None)
        forest.fit(np.where(np.isnan(X[job.train]), median, X[job.train]), task.y[job.train])
        trees = flatten(forest, task.kind, len(task.classes)) | {"median": median}
        record = {"gain": dict(zip(columns, forest.feature_importances_.tolist()))}
        if out:
            stem = f"fold{job.fold}_seed{job.seed}.npz"
            with atomic_path(out / stem) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, **trees)
            record["file"] = {"fold": job.fold, "seed": job.seed, "file": stem}
        return (score(trees, np.where(np.isnan(X[job.valid]), median, X[job.valid])),
                score(trees, np.where(np.isnan(X_test), median, X_test)), record)

    cf = cross_fit(task, inputs.plan, list(model.seeds), fit, len(test_ids), desc=model.label, executor=inputs.executor)
    gain = np.mean([[r["gain"][c] for c in columns] for r in cf.records], axis=0) if columns else []
    importance = pl.DataFrame({"feature": columns, "group": [fs.groups.get(c, "metadata") for c in columns],
                               "gain": np.asarray(gain, dtype=float)}, schema={"feature": pl.String, "group": pl.String,
                                                                                 "gain": pl.Float64})
    result = cf.result(model.label, test_ids, importance=importance.sort("gain", descending=True))
    if out:
        write_model(out, model_spec(model.label, NAME, task, inputs.needs, columns=columns,
                                    models=[r["file"] for r in cf.records]), result)
    return result


class SavedForest(SavedModel):
    """A ``random_forest`` model folder: the forests of every fold and seed, averaged."""

    def predict(self, inputs: Inputs) -> np.ndarray:
        columns = self.spec["columns"]
        X = matrix(align_rows(inputs.features.df, inputs.ids, source=str(self.dir)), columns)
        scores = []
        for entry in self.spec["models"]:
            with reading(self.dir / entry["file"], "random forest"), np.load(self.dir / entry["file"]) as z:
                trees = {k: z[k] for k in z.files}
            scores.append(score(trees, np.where(np.isnan(X), trees["median"], X)))
        mean = np.mean(scores, axis=0)
        return mean[:, 0] if TaskKind(self.spec["task"]).binary else mean


#: what the entry point names: dermstack registers it on its first lookup
KIND = ModelKind(NAME, "scikit-learn random forest on the numeric feature table (a plugin: examples/dermstack-randomforest)",
                 ForestParams, cross_validate, SavedForest, explainer=None, smoke={"params": {"n_estimators": 10}})
