"""Boosting stage: every library on every task, native save/load, reproducibility, categoricals, bad input."""
from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest

from boosting_toy import toy
from dermstack.boosting import FeatureMatrix, create_adapter, cross_validate, load_models, predict_saved
from dermstack.boosting.sampling import SamplingConfig, resample, stopping_rows
from dermstack.boosting.weights import sample_weights
from dermstack.config import ModelConfig
from dermstack.data.folds import FoldPlan
from dermstack.errors import ConfigError, DataError
from dermstack.features.featureset import FeatureSet

KINDS = ["lightgbm", "xgboost", "catboost"]
EXT = {"lightgbm": ".txt", "xgboost": ".json", "catboost": ".cbm"}
FAST = {"n_estimators": 60, "early_stopping_rounds": 20, "threads": 1}


@pytest.fixture(scope="module", params=["binary", "multiclass", "multilabel"])
def data(request):
    return toy(request.param, n=1200, n_test=40)


def model(kind: str, **kw) -> ModelConfig:
    return ModelConfig(kind=kind, params={**FAST, **kw.pop("params", {})}, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_cross_validate_every_task(kind, data, tmp_path):
    table, fs, task, plan = data
    res = cross_validate(fs, task, plan, model(kind), tmp_path, bootstrap=20)
    n, c = len(task.image_ids), len(task.classes)
    assert res.oof.height == n * c and res.oof.frame["score"].is_null().sum() == 0
    assert set(res.oof.frame["fold"].unique().to_list()) == {0, 1, 2}
    assert res.test.height == 40 * c and res.test.frame["image_id"].n_unique() == 40
    # planted signal: far above chance
    if task.kind == "binary":
        assert res.metrics["pauc_tpr80"] > 0.1 and res.metrics["roc_auc"] > 0.85
    else:
        assert res.metrics["macro_roc_auc"] > 0.8 and res.metrics["macro_f1"] > 0.5
    lo, hi = res.metrics["ci95"]["macro_f1" if task.kind != "binary" else "roc_auc"]
    assert lo <= hi and len(res.metrics["folds"]["macro_f1" if task.kind != "binary" else "roc_auc"]) == 3
    # signal features rank above noise features
    gain = dict(zip(res.importance["feature"], res.importance["gain"]))
    assert gain["x0"] > gain["x5"]
    assert set(res.importance["group"]) <= {"metadata", "engineered", "patient"}
    # native files, one per fold (per class for multi-label), and the saved models reproduce the test scores
    mdir = tmp_path / kind
    files = sorted(p.name for p in mdir.glob(f"fold*_seed0*{EXT[kind]}"))
    assert len(files) == 3 * (c if task.kind == "multilabel" else 1)
    assert not list(mdir.glob("*.pkl")) and not list(mdir.glob("*.pickle"))
    test_fs = FeatureSet(fs.df.filter(pl.col("split") == "test"), fs.groups, fs.categorical)
    saved = predict_saved(mdir, test_fs).reshape(40, c)
    wide = res.test.frame.pivot(on="class", index="image_id", values="score").sort("image_id")
    np.testing.assert_allclose(saved, wide.select(task.classes).to_numpy(), rtol=1e-9, atol=1e-12)
    spec = json.loads((mdir / "model.json").read_text())
    assert spec["features"]["categories"]["site"] == ["arm", "head", "leg", "torso"]
    assert (mdir / "importance.parquet").exists() and (mdir / "metrics.json").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_native_round_trip_identical(kind, tmp_path):
    table, fs, task, plan = toy("multiclass", n=800, n_test=0)
    m = FeatureMatrix.fit(fs.df, fs.columns(), fs.categorical)
    X = m.to_pandas(fs.df)
    a = create_adapter(kind, "multiclass", task.classes, FAST, seed=3, categorical=m.categorical)
    a.fit(X.iloc[:600], task.y[:600], X.iloc[600:], task.y[600:])
    paths = a.save(tmp_path / "fold0_seed3")
    assert [p.suffix for p in paths] == [EXT[kind]]
    b = type(a).load(tmp_path / "fold0_seed3", "multiclass", 3, m.categorical)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.predict_proba(X).shape == (800, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_reproducible_to_the_last_digit(kind):
    table, fs, task, plan = toy("binary", n=1500, n_test=0, positive_rate=0.02)
    cfg = model(kind, seeds=[7], sampling={"negative_ratio": 0.1, "positive_oversample": 0.05})
    a = cross_validate(fs, task, plan, cfg, bootstrap=0)
    b = cross_validate(fs, task, plan, cfg, bootstrap=0)
    assert a.oof.frame.equals(b.oof.frame)
    assert a.metrics["fit_rows"][0] < 1000  # negatives were under-sampled
    c = cross_validate(fs, task, plan, model(kind, seeds=[8], sampling=cfg.sampling), bootstrap=0)
    assert not np.array_equal(a.oof.frame["score"].to_numpy(), c.oof.frame["score"].to_numpy())


def test_unseen_category_is_missing_and_logged(caplog):
    table, fs, task, plan = toy("binary", n=600, n_test=0)
    m = FeatureMatrix.fit(fs.df, ["site", "x0"], ["site"])
    frame = pl.DataFrame({"site": ["leg", "palm", None, "head"], "x0": [0.1, 0.2, 0.3, 0.4]})
    with caplog.at_level(logging.WARNING):
        X = m.to_pandas(frame)
    assert "palm" in caplog.text
    assert X["site"].isna().tolist() == [False, True, True, False]
    assert list(X["site"].cat.categories) == ["arm", "head", "leg", "torso"]
    assert X["site"].cat.codes.tolist() == [2, -1, -1, 1]  # codes follow the training categories


def test_several_seeds_are_averaged_for_test(tmp_path):
    table, fs, task, plan = toy("binary", n=900, n_test=20)
    res = cross_validate(fs, task, plan, model("lightgbm", seeds=[0, 1]), tmp_path, bootstrap=0)
    assert res.oof.height == 2 * 900 and sorted(res.oof.frame["seed"].unique().to_list()) == [0, 1]
    assert len(load_models(tmp_path / "lightgbm")) == 6
    assert len(res.metrics["seeds"]["roc_auc"]) == 2


# -- bad input -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def binary():
    return toy("binary", n=600, n_test=0, positive_rate=0.1)


def test_unknown_feature_group(binary):
    _, fs, task, plan = binary
    with pytest.raises(ConfigError, match="unknown feature group"):
        cross_validate(fs, task, plan, model("lightgbm", features=["metadata", "shape"]))
    with pytest.raises(ConfigError, match="no columns"):
        cross_validate(fs, task, plan, model("lightgbm", features=["embedding"]))


def test_fold_plan_that_does_not_match(binary):
    _, fs, task, plan = binary
    short = FoldPlan(plan.folds.slice(10), plan.n_splits, plan.seed, plan.group_column)
    with pytest.raises(DataError, match="fold plan does not match"):
        cross_validate(fs, task, short, model("lightgbm"))
    extra = FoldPlan(pl.concat([plan.folds, pl.DataFrame({"image_id": ["ghost"], "group": ["g"], "fold": [0]},
                                                         schema=plan.folds.schema)]), 3, 1, "patient_id")
    with pytest.raises(DataError, match="ghost"):
        cross_validate(fs, task, extra, model("lightgbm"))


def test_single_class_fold(binary):
    _, fs, task, plan = binary
    folds = plan.folds.with_columns(fold=pl.Series(np.where(task.y == 1, 0, np.arange(len(task.y)) % 3).astype(np.int8)))
    bad = FoldPlan(folds, 3, 0, "image_id")
    with pytest.raises(DataError, match="fold 0: the training part has no \\[1\\] rows"):
        cross_validate(fs, task, bad, model("lightgbm"))


def test_all_null_columns(binary, caplog):
    _, fs, task, plan = binary
    df = fs.df.with_columns(x5=pl.lit(None, dtype=pl.Float32), x4=pl.lit(float("nan"), dtype=pl.Float32))
    holey = FeatureSet(df, fs.groups, fs.categorical)
    with caplog.at_level(logging.WARNING):
        res = cross_validate(holey, task, plan, model("lightgbm"), bootstrap=0)
    assert "x5" in caplog.text and "x4" in caplog.text
    assert "x5" not in res.importance["feature"].to_list()
    only_empty = FeatureSet(df.select("image_id", "split", "x4", "x5"), {"x4": "patient", "x5": "patient"})
    with pytest.raises(DataError, match="every selected feature column is empty"):
        cross_validate(only_empty, task, plan, model("lightgbm"))


def test_feature_rows_missing_and_bad_config(binary):
    table, fs, task, plan = binary
    gone = FeatureSet(fs.df.filter(pl.col("image_id") != task.image_ids[5]), fs.groups, fs.categorical)
    with pytest.raises(DataError, match=task.image_ids[5]):
        cross_validate(gone, task, plan, model("lightgbm"))
    with pytest.raises(ConfigError, match="unknown model kind"):  # rejected when the ModelConfig is built
        cross_validate(fs, task, plan, ModelConfig(kind="randomforest"))
    with pytest.raises(ConfigError, match=r"sampling\.ratio = 0.1: unknown key"):
        cross_validate(fs, task, plan, model("lightgbm", sampling={"ratio": 0.1}))
    with pytest.raises(ConfigError, match="class_weight"):
        cross_validate(fs, task, plan, model("lightgbm", params={"class_weight": "heavy"}))
    _, mfs, mtask, mplan = toy("multiclass", n=300, n_test=0)
    with pytest.raises(ConfigError, match="binary tasks only"):
        cross_validate(mfs, mtask, mplan, model("lightgbm", sampling={"negative_ratio": 0.1}))


# -- sampling and weights --------------------------------------------------------------------------

def test_resample_follows_the_winners_ratios():
    y = np.zeros(100_000, dtype=np.int8)
    y[:100] = 1
    idx = np.arange(100_000)
    out = resample(idx, y, SamplingConfig(negative_ratio=0.01, positive_oversample=0.003), seed=0)
    pos, neg = (y[out] == 1).sum(), (y[out] == 0).sum()
    assert pos == 300 and neg == 30_000  # 0.003 * 99,900 positives, then 100 negatives per positive
    assert np.array_equal(out, resample(idx, y, SamplingConfig(), seed=0))
    balanced = np.r_[np.ones(50, np.int8), np.zeros(50, np.int8)]
    assert np.array_equal(resample(np.arange(100), balanced, SamplingConfig(), seed=0), np.arange(100))
    assert SamplingConfig.from_dict({"negative_ratio": 0, "positive_oversample": 0}, "binary") is None


def test_early_stopping_watches_the_positives_and_sampled_negatives():
    y = np.zeros(100_000, dtype=np.int8)
    y[::5000] = 1
    valid = np.arange(0, 100_000, 5)  # 20 positives among 20,000 rows
    watched = stopping_rows(valid, y, SamplingConfig(), seed=3)
    assert set(watched) <= set(valid) and np.all(np.diff(watched) > 0)
    assert (y[watched] == 1).sum() == 20 and (y[watched] == 0).sum() == 2_000  # every positive, 100 negatives each
    assert np.array_equal(watched, stopping_rows(valid, y, SamplingConfig(), seed=3))
    for keep_all in (None, SamplingConfig(negative_ratio=0), SamplingConfig(negative_ratio=0.0005)):  # off, or met
        assert np.array_equal(stopping_rows(valid, y, keep_all, seed=3), valid)


def test_class_weights():
    y = np.array([0, 0, 0, 1])
    assert sample_weights("binary", y, "balanced").tolist() == [1, 1, 1, 3]
    assert sample_weights("binary", y, "none") is None
    w = sample_weights("multiclass", np.array([0, 0, 0, 1]), "balanced", 2)
    assert w[3] / w[0] == pytest.approx(3.0)
    Y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]])
    assert sample_weights("multilabel", Y, "sqrt")[:, 0].tolist() == pytest.approx([np.sqrt(3), 1, 1, 1])


def test_user_params_override_defaults_by_alias():
    from dermstack.boosting.defaults import default_params, resolve_params

    assert "min_data_in_leaf" in default_params("lightgbm", "binary")
    p = resolve_params("lightgbm", "binary", {"min_child_samples": 3})
    assert p["min_child_samples"] == 3 and "min_data_in_leaf" not in p
    p = resolve_params("xgboost", "binary", {"eta": 0.2})
    assert p["eta"] == 0.2 and "learning_rate" not in p
