"""``kind = "knn"``: the labels of the nearest training rows in embedding space as a model kind of the
registry (:mod:`dermstack.registry`), and its nested scores as the boosters' ``knn`` feature group.

A member like any other: fold k's model is the training rows outside fold k, its score of a row the
weighted label mean of that row's ``n_neighbors`` nearest of them (:mod:`dermstack.knn.neighbours`).
As a feature group (``[ensemble] score_features = ["knn"]``), its pair models {j, k} are the training
rows outside folds j and k, nested as the CNN's and the linear probe's scores are
(:mod:`dermstack.features.scores`), with the four relations (patient z-score, rank, ratio; cohort z-score).

Saved without pickle: ``reference.npz`` holds the training rows' unit embeddings (float32), 0/1
labels, folds and ids, and with ``scale = "standard"`` the mean and scale that new rows are standardised
by; ``model.json`` (written last) its checksum, backbone and shape. Every fold
model and pair model is recomputed from it for new rows, so no pair model is saved.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.preprocessing import StandardScaler

from dermstack.atomic import write_json
from dermstack.crossfit import check_plan, cross_fit
from dermstack.data.audit import read_embeddings
from dermstack.data.table import split_key
from dermstack.dataprofile import DataProfile, DefaultChoice
from dermstack.errors import ConfigError, DataError, reading
from dermstack.features.scores import (
    NestedScoreGroup,
    ScoreViews,
    fold_features,
    nested_scores,
    views_file,
)
from dermstack.knn.neighbours import Candidates, KNNParams, candidates, label_matrix, unit_rows
from dermstack.registry import FeatureGroup, FitInputs, ModelKind, ScoreTerm, register
from dermstack.saved import Inputs, SavedModel, model_folder, model_spec, write_model
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

KIND = "knn"
#: the FeatureSet group its nested scores become for the boosters that read them
GROUP = "knn"
#: the columns beside each score (:data:`dermstack.features.scores.RELATIONS`)
RELATIONS = ("pz", "prank", "pratio", "cz")
#: the saved training rows: embeddings, labels, folds, ids (npz, no pickle) ...
REFERENCE = "reference.npz"
#: ... and with ``scale = "standard"`` each dimension's training mean and standard deviation
SCALE_ARRAYS = ("mean", "scale")


def _params(inputs: FitInputs) -> KNNParams:
    try:
        return KNNParams(**dict(inputs.model.params or {}))
    except ConfigError as e:
        raise ConfigError(f"[[models]] {inputs.model.label}: {e}") from None


def _backbone(store, params: KNNParams, where: str) -> str:
    plain = [b for b in store.backbones() if not split_key(b)[1]] if store is not None else []
    if not plain:
        raise ConfigError(f"{where}: kind = \"knn\" reads embeddings, and the run has none ([extract] backbones)")
    if params.backbone is None:
        return plain[0]
    if params.backbone not in plain:
        raise ConfigError(f"{where}: params.backbone = {params.backbone!r} is not in the run's embeddings {plain}")
    return params.backbone


def _embeddings(store, backbone: str, ids: list[str]) -> np.ndarray:
    x = read_embeddings(store, backbone, ids)
    if x is None:
        raise DataError(f"no {backbone} embeddings for these rows", file=str(getattr(store, "path", "embeddings")))
    missing = int(np.isnan(x).any(axis=1).sum())
    if missing:
        log.warning("knn: %d of %d rows have no %s embedding: nobody's neighbour, scored with the label mean",
                    missing, len(ids), backbone)
    return x


def _unit(x: np.ndarray, scaling: dict[str, np.ndarray]) -> np.ndarray:
    """The rows the cosine compares: standardised by ``scaling`` (its mean and scale; empty: as they are), unit length."""
    return unit_rows((x - scaling["mean"]) / scaling["scale"] if scaling else x)


class Reference:
    """The training rows a kNN model searches, with every query of the run: built once per model stage."""

    def __init__(self, inputs: FitInputs):
        self.params, where = _params(inputs), f"[[models]] {inputs.model.label}"
        task, plan = inputs.task, inputs.plan
        if len(task.image_ids) > self.params.max_rows:
            raise ConfigError(f"{where}: {len(task.image_ids):,} training rows, more than params.max_rows = "
                              f"{self.params.max_rows:,}: brute-force neighbours cost (rows)^2 x dimensions "
                              "(docs: Results); raise max_rows knowingly, or leave kind = \"knn\" out")
        check_plan(plan, task)
        self.backbone = _backbone(inputs.store, self.params, where)
        self.test_ids = inputs.features.df.filter(pl.col("split") == "test")["image_id"].to_list()
        self.fold_of = plan.fold_of(task.image_ids).astype(np.int64)
        self.n_splits = plan.n_splits
        self.labels = label_matrix(task.y, task.kind, len(task.classes))
        x = _embeddings(inputs.store, self.backbone, list(task.image_ids) + self.test_ids)
        n = len(task.image_ids)
        self.scaling = {}
        if self.params.scale == "standard":  # rows without an embedding (NaN) take no part in the fit
            fit = StandardScaler().fit(x[:n])
            self.scaling = {"mean": fit.mean_.astype(np.float32), "scale": fit.scale_.astype(np.float32)}
        x = _unit(x, self.scaling)
        self.train = x[:n]
        self.cand = candidates(self.train, self.fold_of, self.labels, x, self.params.n_neighbors, self.n_splits)

    def scores(self, rows: np.ndarray, folds) -> np.ndarray:
        return self.cand.scores(rows, folds, self.params.n_neighbors, self.params.weights)

    def save(self, folder: Path, image_ids: list[str]) -> dict:
        path = folder / REFERENCE
        np.savez(path, embeddings=self.train, labels=self.labels.astype(np.uint8), fold=self.fold_of.astype(np.int16),
                 image_id=np.asarray(image_ids, dtype=str), **self.scaling)
        return {"file": REFERENCE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": len(image_ids),
                "dimensions": int(self.train.shape[1]), "backbone": self.backbone, "n_splits": self.n_splits}


def cross_validate_knn(inputs: FitInputs):
    """OOF and test scores of the kNN model ``inputs.model`` on the run's FoldPlan (its seeds repeat the
    same scores: nothing in it is random); saved to ``inputs.out_dir/<name>/`` when given."""
    task, model, name = inputs.task, inputs.model, inputs.model.label
    ref = Reference(inputs)
    n, folds = len(task.image_ids), range(ref.n_splits)
    test_rows = np.arange(n, n + len(ref.test_ids))

    def fit(job):
        others = [f for f in folds if f != job.fold]
        return ref.scores(job.valid, others), ref.scores(test_rows, others) if len(test_rows) else None, {}

    cf = cross_fit(task, inputs.plan, list(model.seeds), fit, len(ref.test_ids), desc=name)
    result = cf.result(name, ref.test_ids, {"inputs": {"backbones": [ref.backbone]}})
    if inputs.out_dir is not None:
        folder = Path(inputs.out_dir) / name
        shutil.rmtree(model_folder(folder))  # only a model's own files (model_folder refuses others)
        folder.mkdir(parents=True)
        reference = ref.save(folder, list(task.image_ids))
        write_model(folder, model_spec(name, KIND, task, {}, params=ref.params.to_dict(), seeds=list(model.seeds),
                                       reference=reference), result)
    return result


def nested_knn_views(inputs: FitInputs) -> ScoreViews:
    """The pair models' booster views (:func:`dermstack.features.scores.nested_scores`), written to
    ``inputs.out_dir/<name>/nested/views.parquet`` when given."""
    task, name = inputs.task, inputs.model.label
    ref = Reference(inputs)
    every = set(range(ref.n_splits))

    def fit_score(train: np.ndarray, score_sets: list[np.ndarray]) -> list[np.ndarray]:
        kept = every & set(np.unique(ref.fold_of[train]).tolist())
        return [ref.scores(rows, kept) for rows in score_sets]

    per_seed = [nested_scores(fit_score, ref.fold_of, ref.n_splits, len(ref.test_ids), task.n_outputs)]
    views = ScoreViews.averaged(name, task, ref.test_ids, per_seed)
    if inputs.out_dir is not None:
        views.write(views_file(Path(inputs.out_dir) / name))
        write_json(views_file(Path(inputs.out_dir) / name).parent / "nested.json",
                   {"name": name, "task": task.kind, "classes": list(task.classes), "n_splits": ref.n_splits})
    return views


class SavedKNN(NestedScoreGroup, SavedModel):
    """A ``kind = "knn"`` model folder: new rows (their embeddings under the saved backbone, ``inputs.embeddings``)
    are scored by every fold model (the mean, as the run's test rows), and, for the boosters that read its
    ``knn`` group, by every pair model."""

    feature_group = GROUP
    relations = RELATIONS

    def reference(self) -> dict[str, np.ndarray]:
        """The saved training rows, checked against model.json (a damaged or foreign file is a DataError)."""
        spec, path = self.spec.get("reference") or {}, self.dir / REFERENCE
        if not path.is_file():
            raise DataError("the kNN model's training rows are missing", file=str(path))
        if hashlib.sha256(path.read_bytes()).hexdigest() != spec.get("sha256"):
            raise DataError("the kNN model's training rows do not match model.json's checksum: damaged or foreign",
                            file=str(path))
        with reading(path, "kNN training rows"), np.load(path, allow_pickle=False) as f:
            arrays = {k: np.array(f[k]) for k in f.files}
        n, d, c = spec["rows"], spec["dimensions"], TaskKind(self.spec["task"]).n_outputs(self.spec["classes"])
        shapes = {"embeddings": (n, d), "labels": (n, c), "fold": (n,), "image_id": (n,)}
        # a model saved before params.scale existed compared the raw embeddings
        if self.spec["params"].get("scale", "none") == "standard":
            shapes |= {k: (d,) for k in SCALE_ARRAYS}
        if (sorted(arrays) != sorted(shapes) or any(arrays[k].shape != s for k, s in shapes.items())
                or arrays["embeddings"].dtype != np.float32 or not np.isin(arrays["fold"], range(spec["n_splits"])).all()):
            raise DataError(f"the kNN model's training rows are not {shapes} (float32 embeddings, folds "
                            f"0..{spec['n_splits'] - 1})", file=str(path))
        return arrays

    def candidates(self, inputs: Inputs) -> tuple[Candidates, int]:
        key = (self.name, "candidates")
        if key not in inputs.cache:
            if inputs.embeddings is None:
                raise DataError(f"model {self.name!r} needs the new rows' embeddings", file=str(self.dir))
            ref, spec = self.reference(), self.spec["reference"]
            x = read_embeddings(inputs.embeddings, spec["backbone"], list(inputs.ids))
            if x is None or x.shape[1] != spec["dimensions"]:
                raise DataError(f"model {self.name!r} reads {spec['dimensions']}-dimensional {spec['backbone']} "
                                "embeddings, which the new rows lack", file=str(self.dir))
            k = self.spec["params"]["n_neighbors"]
            queries = _unit(x, {a: ref[a] for a in SCALE_ARRAYS if a in ref})
            inputs.cache[key] = (candidates(ref["embeddings"], ref["fold"].astype(np.int64),
                                            ref["labels"].astype(np.float32), queries, k, spec["n_splits"]),
                                 spec["n_splits"])
        return inputs.cache[key]

    def _mean(self, inputs: Inputs, leave_out: int) -> np.ndarray:
        """The mean score of the models without every ``leave_out`` folds (1: the fold models, 2: the pair models)."""
        cand, n_splits = self.candidates(inputs)
        p, rows = self.spec["params"], np.arange(len(inputs.ids))
        every = range(n_splits)
        out = [[f for f in every if f not in (j, k)] for j in every for k in every
               if (j == k if leave_out == 1 else j < k)]
        return np.mean([cand.scores(rows, kept, p["n_neighbors"], p["weights"]) for kept in out], axis=0)

    def predict(self, inputs: Inputs) -> np.ndarray:
        return TaskKind(self.spec["task"]).squeeze(self._mean(inputs, 1))

    def nested_mean(self, inputs: Inputs) -> np.ndarray:
        """The mean score of the pair models (what the boosters that read this model's group saw for test rows)."""
        return self._mean(inputs, 2)


def _fold_features(inputs: FitInputs, model_dir: Path):
    views = ScoreViews.read(views_file(model_dir), model_dir.name)
    return fold_features(inputs.features, inputs.table, inputs.task, views, GROUP, RELATIONS)


#: training rows from which a binary task gets the kNN and its group by default: on 2,479 HAM10000 dev rows
#: it lifted the final model's ROC-AUC by +0.010 (equal inputs) and +0.004 (mask features), CIs above 0,
#: and moved image-only data by +0.001 (docs/results.md); fewer rows were measured only on the 100-row
#: ISIC export, where the CIs span +-0.1
KNN_MIN_ROWS = 2_000
#: training rows up to which it is a default: each of its two stages makes one neighbour pass, about 2.7 s
#: per (10,000 rows)^2 on this project's 2-core CPU (benchmarks/knn_scale.py): about 25 s each at 30,000
KNN_DEFAULT_MAX_ROWS = 30_000


def knn_in_range(task, n_train: int | None) -> bool:
    """Whether a task of this kind with ``n_train`` training rows gets the kNN's group by default."""
    return (task is not None and TaskKind(task).binary and n_train is not None
            and KNN_MIN_ROWS <= n_train <= KNN_DEFAULT_MAX_ROWS)


def knn_default(data: DataProfile) -> DefaultChoice:
    """Whether the default model set has the kNN (and, with ``[ensemble] cnn_feature``, every booster again
    on its nested score): a binary task whose images are embedded, with :data:`KNN_MIN_ROWS` to
    :data:`KNN_DEFAULT_MAX_ROWS` training rows.

    >>> bool(knn_default(DataProfile(2_479, images=True, task="binary", embeddings=True)))
    True
    >>> bool(knn_default(DataProfile(2_479, images=True, task="multiclass", embeddings=True)))
    False
    """
    if not data.embeddings:
        return DefaultChoice(False)
    if not knn_in_range(data.task, data.n_train):
        return DefaultChoice(False, f"not in the default set: a {data.task} task with {data.n_train:,} training rows "
                                    f"(its default: binary, {KNN_MIN_ROWS:,} to {KNN_DEFAULT_MAX_ROWS:,} rows); "
                                    'add [[models]] kind = "knn" to fit it')
    return DefaultChoice(True, f"in the default set: a binary task with {data.n_train:,} training rows "
                               f"({KNN_MIN_ROWS:,} to {KNN_DEFAULT_MAX_ROWS:,}); the boosters also train on its nested score")


#: the pair models' views as the boosters' ``knn`` features: by default on binary tasks in :func:`knn_in_range`
KNN_GROUP = FeatureGroup(GROUP, nested_knn_views, lambda d: [views_file(d), views_file(d).parent], _fold_features,
                         default=knn_in_range)

register(ModelKind(
    KIND, "the distance-weighted label mean of the nearest training rows by cosine on one backbone's full, standardised embeddings "
    "(explained as one term, its score)", KNNParams, cross_validate_knn, SavedKNN, ScoreTerm("embedding neighbours (kNN)", GROUP),
    reads=("ingest", "folds", "features", "extract"), config_keys=("extract.backbones",), default=knn_default,
    feature_group=KNN_GROUP, smoke={"params": {"n_neighbors": 5}}))
