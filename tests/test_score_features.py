"""A model's nested out-of-fold scores as a booster feature group: the linear probe's ``probe`` group is
leak-free as the CNN's is, its relative columns, and the ``[ensemble] score_features`` config."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from boosting_toy import toy
from dermstack.config import ModelConfig, RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.dataprofile import DataProfile
from dermstack.errors import ConfigError
from dermstack.features.scores import ScoreViews, fold_features, score_feature_frame
from dermstack.linear import nested
from dermstack.linear.feature import GROUP, RELATIONS
from dermstack.registry import model_kind
from dermstack.taskkind import TaskKind
from test_linear import DictStore


class FoldRecorder:
    """A stand-in probe whose score of every row says which outer folds it was trained on: digit f of
    ``score * 1e6`` counts the training rows' fold f (each fit adds one per fold it saw)."""

    def __init__(self, fold_of_group: dict):
        self.fold_of_group = fold_of_group

    def __call__(self, design, X, y, groups, kind, n_classes, params, seed):
        folds = {self.fold_of_group[g] for g in groups}
        value = sum(10.0 ** f for f in folds) * 1e-6

        class Fitted:
            def predict_proba(self, rows):
                return np.full(len(rows), value)

        return Fitted()


@pytest.mark.parametrize("n_splits", [3, 4])
def test_no_probe_score_a_booster_sees_was_made_with_its_validation_rows(monkeypatch, n_splits):
    table, fs, task, _ = toy("binary", n=240, n_test=12, seed=3, positive_rate=0.2)
    plan = FoldPlan.make(table, n_splits=n_splits, seed=1, task="binary")
    ids = fs.df["image_id"].to_list()
    store = DictStore(ids, np.random.default_rng(0).normal(size=(len(ids), 6)).astype(np.float32))
    groups = plan.folds.select("group", "fold").unique()
    monkeypatch.setattr(nested, "fit_probe", FoldRecorder(dict(zip(groups["group"], groups["fold"]))))
    views = nested.nested_probe_views(fs, store, task, plan, ModelConfig(kind="logistic", seeds=[0, 1]))
    fold_of = plan.fold_of(task.image_ids)
    sets = fold_features(fs, table, task, views, GROUP, RELATIONS)
    for k in range(n_splits):
        frame = sets(k).df
        train = frame.filter(pl.col("split") == "train").join(
            pl.DataFrame({"image_id": task.image_ids, "fold": fold_of}), on="image_id")
        counts = np.rint(train["logistic_score"].to_numpy() * 1e6 * (n_splits - 1)).astype(int)
        saw = [(counts // 10 ** f) % 10 for f in range(n_splits)]  # how many fits behind a score saw fold f
        assert (saw[k] == 0).all(), f"booster {k} sees a score of a probe trained on its validation fold"
        for j in range(n_splits):  # a training row's score: the pair model that left out its own fold too
            assert (saw[j][train["fold"].to_numpy() == j] == 0).all()
        assert {"logistic_score_pratio", "logistic_score_cz", "logistic_score_pz", "logistic_score_prank"} <= set(frame.columns)
        assert sets(k).groups["logistic_score_cz"] == GROUP
    # test rows: the mean of every pair model, the same in every view
    test = [sets(k).df.filter(pl.col("split") == "test")["logistic_score"].to_numpy() for k in range(n_splits)]
    assert all(np.array_equal(test[0], t) for t in test)


def test_ratio_to_the_patient_mean_and_z_score_within_the_cohort():
    ids = [f"i{j}" for j in range(6)]
    scores = np.array([0.1, 0.3, 0.2, 0.4, 0.6, 0.5])
    views = ScoreViews("logistic", ["target"], ids, scores[None, :, None], [], np.zeros((0, 1)))
    patients = pl.DataFrame({"image_id": ids, "split": ["train"] * 6, "patient": ["a", "a", "b", "c", "c", "c"],
                             "cohort": ["x", "x", "x", "y", "y", "z"]})
    f = score_feature_frame(views, 0, patients, RELATIONS)
    assert f.columns == ["image_id", "logistic_score"] + [f"logistic_score_{r}" for r in RELATIONS]
    np.testing.assert_allclose(f["logistic_score_pratio"], [0.5, 1.5, 1.0, 0.8, 1.2, 1.0])
    x = scores[:3]
    np.testing.assert_allclose(f["logistic_score_cz"], [*((x - x.mean()) / x.std()), -1.0, 1.0, 0.0], atol=1e-12)


MODELS = [{"kind": "lightgbm"}, {"kind": "xgboost"}, {"kind": "logistic"}, {"kind": "cnn", "name": "net"}]


def test_score_features_names_the_givers_and_the_cnn_alone_by_default():
    def again(**ensemble):
        return RunConfig.from_dict({"models": MODELS, "ensemble": ensemble}).feature_group_models()

    assert again() == ["lightgbm+net", "xgboost+net"]  # the rows are not known yet: the CNN's group alone
    assert again(score_features=["logistic", "net"]) == ["lightgbm+logistic", "xgboost+logistic", "lightgbm+net", "xgboost+net"]
    assert again(score_features=["logistic"], cnn_feature=["xgboost"]) == ["xgboost+logistic"]
    assert again(score_features=[]) == []
    # the default model set (no [[models]]) has the probe to name
    assert RunConfig.from_dict({"ensemble": {"score_features": ["logistic"]}}).ensemble.score_features == ["logistic"]


def test_a_giver_only_some_default_sets_have_is_checked_once_the_data_is_known():
    """Without [[models]], `score_features = ["knn"]` is accepted at parse time (a binary task of 2,000+
    embedded rows gets the kNN by default) and refused, naming the rule and the fix, where the data's
    default set has no kNN."""
    def cfg():
        return RunConfig.from_dict({"data": {"task": "binary"}, "ensemble": {"score_features": ["knn"]}})

    embedded = cfg()
    embedded.resolve(DataProfile(2_479, images=True, task="binary", embeddings=True))
    assert "knn" in [m.label for m in embedded.models] and embedded.ensemble.score_features == ["knn"]
    assert "lightgbm+knn" in embedded.feature_group_models()
    with pytest.raises(ConfigError) as e:
        cfg().resolve(DataProfile(500, images=True, task="binary", embeddings=True))
    for text in ('[ensemble] score_features = ["knn"]', "has no", "500 training rows", '[[models]] kind = "knn"'):
        assert text in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match='did you mean "knn"'):
        RunConfig.from_dict({"ensemble": {"score_features": ["kn"]}})


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_without_score_features_the_cnn_alone_gives_its_scores_and_the_run_records_it(task):
    cfg = RunConfig.from_dict({"data": {"task": task}, "models": MODELS})
    assert cfg.resolve(5000) == ["ensemble.score_features"]
    assert cfg.ensemble.score_features == ["net"]  # the probe's group is not a default (docs/results.md)
    assert RunConfig.from_dict({"data": {"task": task}}).resolve(5000) == ["models", "ensemble.score_features"]
    off = RunConfig.from_dict({"data": {"task": task}, "models": MODELS, "ensemble": {"cnn_feature": False}})
    off.resolve(5000)
    assert off.ensemble.score_features == [] and RunConfig.from_dict(off.to_dict()) == off  # a run's config.toml reads back
    assert model_kind("logistic").feature_group.default(TaskKind(task), 5000) is False


@pytest.mark.parametrize("ensemble,expected", [
    ({"score_features": ["logistik"]}, ['[ensemble] score_features = ["logistik"]', 'did you mean "logistic"']),
    ({"score_features": ["lightgbm"]}, ['"lightgbm" is a kind = "lightgbm" model', "give no feature group", "logistic"]),
    ({"score_features": ["net", "net"]}, ['"net" is named twice']),
    ({"score_features": ["logistic"], "cnn_feature": False}, ["cnn_feature = false trains no booster"]),
    ({"score_features": "logistic"}, ["score_features"]),
])
def test_score_features_errors_name_the_key_and_suggest(ensemble, expected):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"models": MODELS, "ensemble": ensemble})
    for text in expected:
        assert text in str(e.value), str(e.value)
