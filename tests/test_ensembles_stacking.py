"""The nested CNN feature group never leaks the evaluated fold; level-2 learners by nested CV."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from boosting_toy import toy
from dermstack.config import ModelConfig
from dermstack.ensembles.stacking import score_tensor, stack_models
from dermstack.features.featureset import FeatureSet
from dermstack.features.scores import ScoreViews, fold_features, nested_scores, oof_score_frame, patient_key, score_feature_frame
from dermstack.metrics import roc_auc
from dermstack.pipeline import fit_with_group
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import load

LGBM = ModelConfig(kind="lightgbm", params={"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 7, "verbose": -1},
                   sampling={})


def cross_validate_stacked(features, table, task, plan, model, views, out_dir=None):
    """``model`` with the ``cnn`` group of ``views``, handed over as the pipeline hands it."""
    return fit_with_group(model, views.name, "cnn", fold_features(features, table, task, views, "cnn"), task, plan, out_dir, table)


@pytest.mark.parametrize("n_splits", [3, 5])
def test_every_view_is_free_of_its_fold_and_of_in_sample_scores(n_splits):
    """A 'model' that outputs 1 when it trained on the scored row, or on any row of fold ``w``: view w
    (everything booster w trains and is evaluated on) must be all zeros, for every w."""
    rng = np.random.default_rng(0)
    fold_of = rng.permutation(np.repeat(np.arange(n_splits), 8))
    n, n_test = len(fold_of), 4
    for w in range(n_splits):
        def fit_score(train, score_sets, w=w):
            assert (train < n).all()  # test rows are never trained on
            saw_w = bool((fold_of[train] == w).any())
            seen = set(train.tolist())
            return [np.array([[1.0 if saw_w or r in seen else 0.0] for r in rows]) for rows in score_sets]

        views, test = nested_scores(fit_score, fold_of, n_splits, n_test, 1)
        assert views.shape == (n_splits, n, 1) and test.shape == (n_test, 1)
        assert not np.isnan(views).any()
        assert views[w].max() == 0.0, f"view {w} carries scores of a model trained on fold {w}"


def _noise_features(table, seed=0):
    rng = np.random.default_rng(seed)
    df = table.df.select("image_id", "split").with_columns(
        [pl.Series(f"noise{j}", rng.normal(size=table.df.height)) for j in range(3)])
    return FeatureSet(df, {f"noise{j}": "metadata" for j in range(3)})


def test_label_memorising_cnn_does_not_inflate_stacked_oof():
    """The leakage test: a CNN whose score is the label on the rows it trained on (noise elsewhere),
    stacked into a booster that has only noise besides, leaves the OOF ROC-AUC at chance; the same
    booster given in-sample scores (what a leaky assembly would pass) scores ~1."""
    table, _, task, plan = toy("binary", n=900, n_test=30, seed=3, positive_rate=0.2)
    features = _noise_features(table)
    y = task.y.astype(float)
    rng = np.random.default_rng(1)

    def memoriser(train, score_sets):
        seen = set(train.tolist())
        return [np.array([[y[r] if r in seen else rng.random()] for r in rows]) for rows in score_sets]

    fold_of = plan.fold_of(task.image_ids)
    views, test = nested_scores(memoriser, fold_of, plan.n_splits, table.test.height, 1)
    test_ids = table.test["image_id"].to_list()
    honest = cross_validate_stacked(features, table, task, plan, LGBM, ScoreViews("cnn", ["target"], task.image_ids, views, test_ids, test))
    assert honest.name == "lightgbm+cnn"
    assert honest.metrics["roc_auc"] < 0.62, honest.metrics["roc_auc"]

    leaky = np.repeat(y[None, :, None], plan.n_splits, axis=0)  # scores of a CNN that saw every row
    leaky_views = ScoreViews("cnn", ["target"], task.image_ids, leaky, test_ids, test)
    inflated = cross_validate_stacked(features, table, task, plan, LGBM, leaky_views)
    assert inflated.metrics["roc_auc"] > 0.95


def test_stacked_booster_uses_an_honest_cnn_signal(tmp_path):
    """A CNN score that really predicts the label (on every row) is picked up by the booster."""
    table, _, task, plan = toy("binary", n=600, n_test=20, seed=4, positive_rate=0.2)
    features = _noise_features(table)
    rng = np.random.default_rng(2)
    y = task.y.astype(float)
    views = np.repeat((y + rng.normal(0, 0.6, len(y)))[None, :, None], plan.n_splits, axis=0)
    v = ScoreViews("cnn", ["target"], task.image_ids, views, table.test["image_id"].to_list(), rng.random((20, 1)))
    res = cross_validate_stacked(features, table, task, plan, LGBM, v, tmp_path)
    assert res.metrics["roc_auc"] > 0.75
    assert (res.importance.filter(pl.col("group") == "cnn")["gain"].sum()
            > res.importance.filter(pl.col("group") == "metadata")["gain"].sum())
    assert (tmp_path / "lightgbm+cnn" / "model.json").exists()
    assert res.test.height == 20


def test_patient_relative_cnn_columns():
    table, _, task, plan = toy("binary", n=12, n_test=0, positive_rate=0.3)
    scores = np.arange(12, dtype=float)[:, None] / 12
    v = ScoreViews("cnn", ["target"], task.image_ids, scores[None], [], np.zeros((0, 1)))
    f = score_feature_frame(v, 0, patient_key(table))
    # toy: 4 rows per patient; scores increase within each patient
    assert f.columns == ["image_id", "cnn_score", "cnn_score_pz", "cnn_score_prank"]
    first = f.head(4)
    assert np.allclose(first["cnn_score_prank"].to_numpy(), [0, 1 / 3, 2 / 3, 1])
    z = (scores[:4, 0] - scores[:4, 0].mean()) / scores[:4, 0].std()
    assert np.allclose(first["cnn_score_pz"].to_numpy(), z)


def _base_outputs(task, plan, n_test=10, seed=0):
    """Two base models with independent errors (each informative) and one noise model."""
    rng = np.random.default_rng(seed)
    y = task.y.astype(float)
    fold = plan.fold_of(task.image_ids)
    outs = []
    for name, noise in (("a", 1.0), ("b", 1.0), ("noise", None)):
        z = rng.normal(size=len(y)) if noise is None else y * 1.5 + rng.normal(0, noise, len(y))
        s = 1 / (1 + np.exp(-z))
        oof = pl.DataFrame({"image_id": task.image_ids, "model": name, "seed": 0, "fold": fold, "class": "target", "score": s})
        test = pl.DataFrame({"image_id": [f"T{i}" for i in range(n_test)], "model": name, "class": "target",
                             "score": rng.random(n_test)})
        outs.append(ModelResult(name, Predictions(oof), Predictions(test)))
    return outs


@pytest.mark.parametrize("method", ["stack", "rank"])
def test_level2_beats_each_base_model_by_nested_cv(tmp_path, method):
    table, _, task, plan = toy("binary", n=1500, n_test=0, seed=5, positive_rate=0.2)
    outs = _base_outputs(task, plan)
    res = stack_models(outs, task, plan, method=method, out_dir=tmp_path)
    base_auc = [roc_auc(task.y, score_tensor([o.oof], [o.name], task.image_ids, ["target"], "OOF")[:, 0, 0]) for o in outs]
    assert res.metrics["roc_auc"] > max(base_auc) + 0.02, (res.metrics["roc_auc"], base_auc)
    assert res.metrics["weights"]["noise"] < 0.2
    assert res.oof.frame["fold"].to_list() == plan.fold_of(task.image_ids).tolist()
    # the stored learner reproduces the test scores
    learner = load(tmp_path / method).learner
    X = score_tensor([o.test for o in outs], learner.models, res.test.frame["image_id"].to_list(), ["target"], "test")
    assert np.allclose(learner.predict(X)[:, 0], res.test.frame["score"].to_numpy())
    assert res.test.frame["score"].is_between(0, 1).all()


def test_level2_fold_k_never_sees_fold_k_labels():
    """Flipping every label of fold 0 changes no OOF score outside fold 0 ... and none inside it either,
    since fold 0's learner is fitted on the other folds only."""
    table, _, task, plan = toy("binary", n=600, n_test=0, seed=6, positive_rate=0.3)
    outs = _base_outputs(task, plan, n_test=0)
    a = stack_models(outs, task, plan, method="stack")
    fold = plan.fold_of(task.image_ids)
    task.y = np.where(fold == 0, 1 - task.y, task.y)
    b = stack_models(outs, task, plan, method="stack")
    in0 = fold == 0
    sa, sb = (r.oof.matrix(task.image_ids, task.classes) for r in (a, b))
    assert np.allclose(sa[in0], sb[in0])
    assert not np.allclose(sa[~in0], sb[~in0])


def test_level2_multiclass_rows_sum_to_one():
    table, _, task, plan = toy("multiclass", n=300, n_test=0, seed=7)
    rng = np.random.default_rng(0)
    outs = []
    for name in ("a", "b"):
        p = np.eye(3)[task.y] * 2 + rng.random((len(task.y), 3)) * 3
        p /= p.sum(1, keepdims=True)
        oof = pl.concat([pl.DataFrame({"image_id": task.image_ids, "model": name, "seed": 0, "fold": plan.fold_of(task.image_ids),
                                       "class": c, "score": p[:, j]})
                         for j, c in enumerate(task.classes)])
        outs.append(ModelResult(name, Predictions(oof), Predictions.empty()))
    for method in ("stack", "rank"):
        res = stack_models(outs, task, plan, method=method)
        assert np.allclose(res.oof.matrix(task.image_ids, task.classes).sum(1), 1)
        assert res.metrics["macro_f1"] > 0.5


def test_cnn_views_roundtrip(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    v = ScoreViews("cnn", ["a", "b"], ["i1", "i2", "i3"], rng.random((4, 3, 2)), ["t1", "t2"], rng.random((2, 2)))
    back = ScoreViews.read(v.write(tmp_path / "v.parquet"), "cnn")
    assert back.image_ids == v.image_ids and back.test_ids == v.test_ids and back.classes == v.classes
    np.testing.assert_allclose(back.views, v.views)
    np.testing.assert_allclose(back.test, v.test)


def test_oof_score_frame_takes_each_row_from_its_own_fold_view():
    import numpy as np
    import polars as pl

    ids = [f"i{j}" for j in range(6)]
    views = np.stack([np.full((6, 1), float(k)) for k in range(3)])  # view k scores every row k
    v = ScoreViews("cnn", ["target"], ids, views, ["t0"], np.array([[9.0]]))
    fold = np.array([0, 1, 2, 0, 1, 2])
    patients = pl.DataFrame({"image_id": ids + ["t0"], "split": ["train"] * 6 + ["test"], "patient": ["p"] * 7})
    frame = oof_score_frame(v, fold, patients).sort("image_id")
    got = dict(zip(frame["image_id"], frame["cnn_score"]))
    assert [got[i] for i in ids] == [float(k) for k in fold] and got["t0"] == 9.0
