"""Small numpy-made LesionTables and FeatureSets with planted signal, for the boosting tests."""
from __future__ import annotations

import numpy as np
import polars as pl

from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.features.featureset import FeatureSet
from dermstack.task import TaskSpec

CLASSES = ["A", "B", "C"]


def toy(task: str = "binary", n: int = 2000, n_test: int = 50, seed: int = 0, positive_rate: float = 0.05):
    """(table, features, task spec, fold plan): features x0..x5 (x0, x1 and site carry the signal),
    a categorical ``site`` and an ``engineered`` + ``patient`` group."""
    rng = np.random.default_rng(seed)
    m = n + n_test
    x = rng.normal(size=(m, 6)).astype(np.float32)
    site = rng.choice(["head", "torso", "leg", "arm"], size=m)
    logit = 1.6 * x[:, 0] - 1.2 * x[:, 1] + np.where(site == "head", 1.5, 0.0)
    df = pl.DataFrame({
        "image_id": [f"I{i:06d}" for i in range(m)],
        "patient_id": [f"P{i // 4:05d}" for i in range(m)],
        "split": ["train"] * n + ["test"] * n_test,
    })
    classes: list[str] = []
    if task == "binary":
        thr = np.quantile(logit, 1 - positive_rate)
        noisy = logit + rng.normal(scale=0.8, size=m)
        df = df.with_columns(target=pl.Series((noisy > thr).astype(np.int8)))
    elif task == "multiclass":
        classes = CLASSES
        z = np.column_stack([logit, x[:, 2] * 2, -logit]) + rng.gumbel(size=(m, 3))
        df = df.with_columns(label=pl.Series([CLASSES[i] for i in z.argmax(1)]))
    else:
        classes = CLASSES
        ys = np.column_stack([logit + rng.normal(size=m) > 1, x[:, 2] > 0.8, x[:, 3] + (site == "leg") > 1.2]).astype(np.int8)
        df = df.with_columns([pl.Series(f"y_{c}", ys[:, j]) for j, c in enumerate(CLASSES)])
    df = df.with_columns(site=pl.Series(site), **{f"x{j}": pl.Series(x[:, j]) for j in range(6)})
    test_rows = pl.col("split") == "test"
    df = df.with_columns([pl.when(test_rows).then(None).otherwise(pl.col(c)).alias(c)
                          for c in ("target", "label") if c in df.columns])
    table = LesionTable(finalize_frame(df), TableMeta("toy", classes=classes, feature_columns=["site"] + [f"x{j}" for j in range(6)],
                                                      categorical_columns=["site"]))
    groups = {"site": "metadata", "x0": "metadata", "x1": "engineered", "x2": "engineered", "x3": "patient",
              "x4": "patient", "x5": "patient"}
    fs = FeatureSet(table.df.select(["image_id", "split", *groups]), groups, ["site"])
    spec = TaskSpec.from_table(table, task)
    plan = FoldPlan.make(table, n_splits=3, seed=1, task=task)
    return table, fs, spec, plan
