"""A model's scores as a booster feature group without leakage: nested views and the columns built from them.

Plain OOF scores are not enough: the training rows of booster k (folds j != k) would carry scores
of the fold-j model, which was trained on fold k, the rows booster k is evaluated on. Instead, for
each pair of folds {j, k} a model is fitted without both (``pair models``, :func:`nested_scores`).
The view of booster k is:

- a training row in fold j: the pair model {j, k};
- a validation row in fold k: the mean of the pair models {j, k} over j != k;
- a test row: the mean of every pair model (the same for all views).

So nothing booster k sees was trained on fold k, on the row itself, or selected with fold k's
labels. K(K-1)/2 extra fits (10 for 5 folds). The columns relative to other rows (the score within
its patient, within its site x age band x sex cohort) are computed inside each view, where every
row's score comes from models that never saw fold k.

The kinds that give such a group (the CNN, :mod:`dermstack.cnn.nested`; the linear probe,
:mod:`dermstack.linear.nested`; the kNN, :mod:`dermstack.knn.kind`) fit their pair models through
:func:`nested_scores`, write their :class:`ScoreViews` to :func:`views_file`, name the relative
columns they add (:data:`RELATIONS`), and give new rows and the run's own rows the group through
their saved model (:class:`NestedScoreGroup`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from dermstack.atomic import write_parquet
from dermstack.data.table import LesionTable
from dermstack.errors import DataError, reading
from dermstack.features.featureset import FeatureSet
from dermstack.features.patient import age_bin, site_column
from dermstack.task import TaskSpec, as_columns

#: fit_score(train_rows, [rows_a, rows_b, ...]) -> [scores_a, scores_b, ...], rows index training rows
#: 0..n-1 then test rows n..n+n_test-1; scores (len(rows), C).
FitScore = Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]]

#: the columns a score may get beside itself (suffix -> what it is):
RELATIONS = {
    "pz": "z-score within the patient (0 for a patient's only lesion)",
    "prank": "rank in [0, 1] within the patient (0.5 alone)",
    "pratio": "ratio to the patient's mean score (1 alone)",
    "cz": "z-score within the site x age band x sex cohort of the same split (0 alone)",
}


def views_file(model_dir: Path) -> Path:
    """Where the views of the pair models of the model saved in ``model_dir`` are."""
    return Path(model_dir) / "nested" / "views.parquet"


def pair_stem(fold_of: np.ndarray, train: np.ndarray, n_splits: int, seed: int) -> str:
    """The file stem of the pair model of ``seed`` fitted on rows ``train`` (all but two folds)."""
    j, k = sorted(set(range(n_splits)) - set(np.unique(fold_of[train]).tolist()))
    return f"without{j}-{k}_seed{seed}"


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


@dataclass
class ScoreViews:
    """``views[k]``: (n, C) scores booster k sees for the training rows; ``test``: (n_test, C)."""

    name: str
    classes: list[str]
    image_ids: list[str]
    views: np.ndarray
    test_ids: list[str]
    test: np.ndarray

    @classmethod
    def averaged(cls, name: str, task: TaskSpec, test_ids: list[str], per_seed: list[tuple[np.ndarray, np.ndarray]]) -> ScoreViews:
        """The views of :func:`nested_scores` results (one per seed), averaged over the seeds."""
        return cls(name, list(task.classes), list(task.image_ids), np.mean([v for v, _ in per_seed], axis=0),
                   list(test_ids), np.mean([t for _, t in per_seed], axis=0))

    def to_frame(self) -> pl.DataFrame:
        """Long: image_id, view (-1 for test rows), class, score."""
        parts = []
        for j, c in enumerate(self.classes):
            for k, v in enumerate(self.views):
                parts.append(pl.DataFrame({"image_id": self.image_ids, "view": k, "class": c, "score": v[:, j]}))
            parts.append(pl.DataFrame({"image_id": self.test_ids, "view": -1, "class": c, "score": self.test[:, j]},
                                      schema={"image_id": pl.String, "view": pl.Int64, "class": pl.String, "score": pl.Float64}))
        return pl.concat(parts, how="vertical_relaxed")

    def write(self, path: Path) -> Path:
        return write_parquet(path, self.to_frame())

    @classmethod
    def read(cls, path: Path, name: str) -> ScoreViews:
        """The views written by :meth:`write` (rows and classes in their written order)."""
        with reading(path, "nested score views"):
            long = pl.read_parquet(path)
        classes = long["class"].unique(maintain_order=True).to_list()

        def block(frame: pl.DataFrame) -> tuple[list[str], np.ndarray]:
            wide = frame.pivot(on="class", index="image_id", values="score")
            return wide["image_id"].to_list(), wide.select(classes).to_numpy()

        train = long.filter(pl.col("view") >= 0)
        n_views = int(train["view"].max()) + 1
        blocks = [block(train.filter(pl.col("view") == k)) for k in range(n_views)]
        test_ids, test = block(long.filter(pl.col("view") == -1)) if (long["view"] == -1).any() else ([], np.zeros((0, len(classes))))
        return cls(name, classes, blocks[0][0], np.stack([b[1] for b in blocks]), test_ids, test)


def patient_key(table: LesionTable) -> pl.DataFrame:
    """image_id, split, patient (patient_id, else lesion_id, else the image itself) and cohort (site x
    age band x sex, each missing value its own level)."""
    df = table.df
    parts = []
    site = site_column(df)
    if site:
        parts.append(pl.col(site).cast(pl.String))
    if "age_approx" in df.columns:
        parts.append(age_bin(pl.col("age_approx").cast(pl.Float64)))
    if "sex" in df.columns:
        parts.append(pl.col("sex").cast(pl.String))
    cohort = pl.concat_str([p.fill_null("<na>") for p in parts], separator="\x1f") if parts else pl.lit("")
    return df.select("image_id", "split", pl.coalesce("patient_id", "lesion_id", "image_id").alias("patient"),
                     cohort.alias("cohort"))


def _zscore(c: str, by: list[str]) -> pl.Expr:
    std = pl.col(c).std(ddof=0).over(by)
    return pl.when(std > 0).then((pl.col(c) - pl.col(c).mean().over(by)) / std).otherwise(0.0)


def _relation(c: str, relation: str) -> pl.Expr:
    patient, n = ["split", "patient"], pl.len().over(["split", "patient"])
    if relation == "pz":
        return _zscore(c, patient)
    if relation == "prank":
        return pl.when(n > 1).then((pl.col(c).rank("average").over(patient) - 1) / (n - 1)).otherwise(0.5)
    if relation == "pratio":
        mean = pl.col(c).mean().over(patient)
        return pl.when(mean > 0).then(pl.col(c) / mean).otherwise(1.0)
    if relation == "cz":
        return _zscore(c, ["split", "cohort"])
    raise ValueError(f"unknown score relation {relation!r}; known: {list(RELATIONS)}")


def score_feature_frame(views: ScoreViews, view: int, patients: pl.DataFrame,
                        relations: tuple[str, ...] = ("pz", "prank")) -> pl.DataFrame:
    """image_id + the group columns of booster ``view`` for training and test rows: the score
    (``<name>_score``, or ``<name>_<class>`` per class) and each of ``relations`` (:data:`RELATIONS`,
    ``<column>_<relation>``)."""
    ids = views.image_ids + views.test_ids
    scores = np.concatenate([views.views[view], views.test])
    cols = [f"{views.name}_score"] if views.classes == ["target"] else [f"{views.name}_{c}" for c in views.classes]
    df = pl.DataFrame({"image_id": ids, **{c: scores[:, j] for j, c in enumerate(cols)}})
    df = df.join(patients, on="image_id", how="left", maintain_order="left")
    return df.with_columns([_relation(c, r).alias(f"{c}_{r}") for c in cols for r in relations]).drop(
        [c for c in patients.columns if c != "image_id"])


def oof_score_frame(views: ScoreViews, fold_of: np.ndarray, patients: pl.DataFrame,
                    relations: tuple[str, ...] = ("pz", "prank")) -> pl.DataFrame:
    """image_id + the group columns as each row's own booster saw them: a training row of fold k from
    view k (what booster k scored it with), a test row from the mean of every pair model."""
    frames = [score_feature_frame(views, k, patients, relations) for k in range(len(views.views))]
    own = pl.DataFrame({"image_id": views.image_ids, "fold": np.asarray(fold_of, dtype=np.int64)})
    parts = [f.join(own.filter(pl.col("fold") == k), on="image_id", how="semi") for k, f in enumerate(frames)]
    parts.append(frames[0].filter(pl.col("image_id").is_in(views.test_ids)))
    return pl.concat(parts)


def new_rows_frame(name: str, classes: list[str], ids: list[str], table: LesionTable, nested_mean: np.ndarray,
                   relations: tuple[str, ...] = ("pz", "prank")) -> pl.DataFrame:
    """image_id + the group columns of new rows ``ids`` (``table``: their LesionTable rows) from the
    mean score of the pair models, as the booster's test rows had them."""
    scores = as_columns(nested_mean)
    views = ScoreViews(name, list(classes), [], np.zeros((1, 0, scores.shape[1])), list(ids), scores)
    return score_feature_frame(views, 0, patient_key(table), relations)


def fold_features(features: FeatureSet, table: LesionTable, task: TaskSpec, views: ScoreViews, group: str,
                  relations: tuple[str, ...] = ("pz", "prank")) -> Callable[[int], FeatureSet]:
    """``k -> features`` plus group ``group`` from view k: what the model of fold k trains, is
    validated and scores test rows on (fold 0's set also fixes the columns)."""
    if views.image_ids != list(task.image_ids):
        raise DataError(f"nested views {views.name!r} were computed for other training rows than this task's")
    patients = patient_key(table)
    first = features.add(score_feature_frame(views, 0, patients, relations), group)
    return lambda k: first if k == 0 else features.add(score_feature_frame(views, k, patients, relations), group)


class NestedScoreGroup:
    """What a saved model whose nested scores are a feature group gives the models that read it (mixed
    into a :class:`~dermstack.saved.SavedModel` with a ``nested_mean(inputs)``, the mean score of its pair
    models for ``inputs.ids``, and the ``relations`` its group has)."""

    relations: ClassVar[tuple[str, ...]] = ("pz", "prank")

    def nested_mean(self, inputs) -> np.ndarray:
        raise NotImplementedError

    def feature_frame(self, inputs) -> pl.DataFrame:
        """The group of new rows: from the mean of the pair models, as the boosters' test rows had it."""
        return new_rows_frame(self.name, inputs.classes, inputs.ids, inputs.table, self.nested_mean(inputs), self.relations)

    def oof_feature_frame(self, table: LesionTable, plan) -> pl.DataFrame:
        """The group of the run's rows, each training row as its own fold's booster saw it."""
        views = ScoreViews.read(views_file(self.dir), self.name)
        return oof_score_frame(views, plan.fold_of(views.image_ids), patient_key(table), self.relations)
