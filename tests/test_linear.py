"""The linear probe (``kind = "logistic"``): leak-free OOF scores and C, files without pickle that
reproduce the scores, exact additive contributions, every task kind, and a whole run + predict."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import polars as pl
import pytest

from boosting_toy import toy
from dermstack.config import ModelConfig, RunConfig, default_models
from dermstack.crossfit import align_rows
from dermstack.errors import ConfigError
from dermstack.features.featureset import FeatureSet
from dermstack.linear import LinearParams, SavedLinear, cross_validate_linear
from dermstack.linear.design import Design, read_rows
from dermstack.linear.kind import LINEAR_PROBE_MAX_ROWS
from dermstack.saved import Inputs, load, predict_all
from extract_fixtures import TEST_MODEL
from test_run_predict import whole_run
from tiny_runs import TinyRuns

FAST = {"C": [0.01, 0.1, 1.0, 10.0], "inner_splits": 3}


class DictStore:
    """An in-memory embedding store; ids it lacks are images that failed to embed."""

    def __init__(self, ids, x, name="toynet"):
        self.name, self.x, self.pos = name, x, {i: k for k, i in enumerate(ids)}

    def backbones(self):
        return [self.name]

    def image_ids(self, backbone):
        return list(self.pos)

    def read(self, backbone, ids):
        return self.x[[self.pos[i] for i in ids]]


def toy_run(task="binary", n=300, n_test=20, seed=0, missing=0):
    table, fs, spec, plan = toy(task, n=n, n_test=n_test, seed=seed, positive_rate=0.2)
    ids = fs.df["image_id"].to_list()
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(ids), 12)).astype(np.float32)
    emb[:, 0] += 2.0 * fs.df["x2"].to_numpy()  # the embedding carries signal too
    kept = ids[missing:]
    return fs, DictStore(kept, emb[missing:]), spec, plan


def fold_scores(result, spec, plan, k):
    rows = np.flatnonzero(plan.fold_of(spec.image_ids) == k)
    return result.oof.matrix(spec.image_ids, spec.classes)[rows]


def chosen_C(result, k):
    return [c["C"] for c in result.metrics["C"] if c["fold"] == k]


def test_a_folds_oof_scores_and_C_never_see_its_labels():
    fs, store, spec, plan = toy_run()
    model = ModelConfig(kind="logistic", params=FAST)
    base = cross_validate_linear(fs, store, spec, plan, model, bootstrap=0)
    k = 1
    valid = plan.fold_of(spec.image_ids) == k
    flipped = dataclasses.replace(spec, y=np.where(valid, 1 - spec.y, spec.y).astype(spec.y.dtype))
    again = cross_validate_linear(fs, store, flipped, plan, model, bootstrap=0)
    np.testing.assert_array_equal(fold_scores(base, spec, plan, k), fold_scores(again, spec, plan, k))
    assert chosen_C(base, k) == chosen_C(again, k)
    # the flipped labels are training labels of the other folds: their scores do move
    assert not np.allclose(fold_scores(base, spec, plan, 0), fold_scores(again, spec, plan, 0))


def test_C_comes_from_the_training_rows_of_the_fold():
    """Fitting a fold's probe on its training rows alone chooses the C the cross-validation recorded."""
    from dermstack.linear.probe import fit_probe

    fs, store, spec, plan = toy_run()
    params = LinearParams.from_dict(FAST)
    result = cross_validate_linear(fs, store, spec, plan, ModelConfig(kind="logistic", params=FAST), bootstrap=0)
    groups = align_rows(plan.folds.select("image_id", "group"), spec.image_ids)["group"].to_numpy()
    numeric = [c for c in fs.feature_columns if c != "site"]
    rows = read_rows(fs.df, fs.feature_columns, store, ["toynet"], spec.image_ids)
    for k, tr, _ in plan.splits(spec.image_ids):
        design = Design.fit(rows.take(tr), numeric, ["site"])
        probe = fit_probe(design, design.matrix(rows.take(tr)), spec.y[tr], groups[tr], spec.kind, 1, params, seed=0)
        assert [probe.C] == chosen_C(result, k)


def saved_run(tmp_path, task="binary", missing=0, seeds=(0,)):
    fs, store, spec, plan = toy_run(task, missing=missing)
    result = cross_validate_linear(fs, store, spec, plan, ModelConfig(kind="logistic", params=FAST, seeds=list(seeds)),
                                   out_dir=tmp_path / "models", bootstrap=0)
    test_ids = fs.df.filter(pl.col("split") == "test")["image_id"].to_list()
    new = FeatureSet(fs.df.filter(pl.col("split") == "test"), fs.groups, fs.categorical)
    return fs, store, spec, plan, result, test_ids, Inputs(test_ids, spec.classes, features=new, embeddings=store)


def test_saved_model_has_no_pickle_and_reproduces_oof_and_test_scores(tmp_path):
    fs, store, spec, plan, result, test_ids, inputs = saved_run(tmp_path, seeds=(0, 1))
    folder = tmp_path / "models" / "logistic"
    spec_json = json.loads((folder / "model.json").read_text())
    assert spec_json["kind"] == "logistic" and spec_json["needs"] == {}
    assert {p.suffix for p in folder.iterdir()} <= {".json", ".npz", ".parquet"}
    for npz in folder.glob("*.npz"):
        with np.load(npz, allow_pickle=False) as a:  # object arrays would need pickle
            assert all(a[k].dtype != object for k in a.files)
    model = load(folder)
    assert isinstance(model, SavedLinear) and len(model.probes()) == 3 * 2
    # each fold's saved probes score its validation rows exactly as the cross-validation did
    rows = read_rows(fs.df, spec_json["inputs"]["columns"], store, ["toynet"], spec.image_ids)
    fold = plan.fold_of(spec.image_ids)
    oof = result.oof.frame
    for entry, probe in zip(spec_json["models"], model.probes()):
        va = np.flatnonzero(fold == entry["fold"])
        want = (oof.filter((pl.col("fold") == entry["fold"]) & (pl.col("seed") == entry["seed"]))
                .pipe(lambda f, va=va: pl.DataFrame({"image_id": [spec.image_ids[i] for i in va]}).join(f, on="image_id", how="left",
                                                                                              maintain_order="left"))["score"])
        np.testing.assert_allclose(probe.predict_proba(probe.design.matrix(rows.take(va))), want.to_numpy(), rtol=1e-12)
    # through the registry, the new rows get the run's test scores
    scores = predict_all(tmp_path / "models", inputs)["logistic"].matrix(test_ids, spec.classes)
    np.testing.assert_allclose(scores, result.test.matrix(test_ids, spec.classes), rtol=1e-12)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_contributions_add_up_to_the_margin_one_term_per_backbone(tmp_path, task):
    fs, store, spec, plan, result, test_ids, inputs = saved_run(tmp_path, task)
    model = load(tmp_path / "models" / "logistic")
    n_classes = len(spec.classes)
    probe = model.probes()[0]
    assert probe.design.terms == ["embedding:toynet", *[c for c in fs.feature_columns if c != "site"], "site"]
    X = probe.design.matrix(model.rows(inputs))
    values, base = probe.contributions(X)
    margin = probe.margin(X)
    k = 1 if task == "binary" else n_classes
    assert values.shape == ((len(test_ids), len(probe.design.terms)) if task == "binary" else (len(test_ids), len(probe.design.terms), k))
    np.testing.assert_allclose(values.sum(axis=1) + base, margin[:, 0] if task == "binary" else margin, rtol=1e-10, atol=1e-10)
    terms, mean_values, mean_base = model.contributions(inputs)
    mean_margin = np.mean([p.margin(p.design.matrix(model.rows(inputs))) for p in model.probes()], axis=0)
    np.testing.assert_allclose(mean_values.sum(axis=1) + mean_base, mean_margin[:, 0] if task == "binary" else mean_margin,
                               rtol=1e-10, atol=1e-10)
    # scores: the task's shapes, probabilities
    oof = result.oof.matrix(spec.image_ids, spec.classes)
    test = result.test.matrix(test_ids, spec.classes)
    assert oof.shape == ((len(spec.image_ids),) if task == "binary" else (len(spec.image_ids), n_classes))
    assert test.shape == ((len(test_ids),) if task == "binary" else (len(test_ids), n_classes))
    assert np.all((oof > 0) & (oof < 1))
    if task == "multiclass":
        np.testing.assert_allclose(oof.sum(axis=1), 1.0)
    assert set(result.metrics) >= set(spec.metrics)
    assert result.metrics["roc_auc" if task == "binary" else "macro_roc_auc"] > 0.75  # the planted signal is found


def test_failed_embeddings_get_the_mean_and_an_indicator(tmp_path):
    fs, store, spec, plan, result, test_ids, inputs = saved_run(tmp_path, missing=15)
    probe = load(tmp_path / "models" / "logistic").probes()[0]
    assert "toynet:missing" in probe.design.columns
    assert np.isfinite(result.oof.frame["score"].to_numpy()).all()


def test_unseen_category_at_predict_time_is_logged_and_scored(tmp_path, caplog):
    fs, store, spec, plan, result, test_ids, inputs = saved_run(tmp_path)
    odd = FeatureSet(inputs.features.df.with_columns(pl.lit("elbow").alias("site")), fs.groups, fs.categorical)
    with caplog.at_level(logging.WARNING, logger="dermstack.linear.design"):
        scores = load(tmp_path / "models" / "logistic").predict(dataclasses.replace(inputs, features=odd))
    assert "never seen in training" in caplog.text
    assert np.isfinite(scores).all()


def test_a_column_without_values_is_logged_once_per_model_not_per_fold(caplog):
    fs, store, spec, plan = toy_run()
    empty = FeatureSet(fs.df.with_columns(pl.lit(None, pl.Float64).alias("x0")), fs.groups, fs.categorical)
    with caplog.at_level(logging.INFO, logger="dermstack.linear"):
        cross_validate_linear(empty, store, spec, plan, ModelConfig(kind="logistic", params={"C": 1.0}), bootstrap=0)
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("left out there: x0"), said


def test_params_are_checked_naming_the_key():
    with pytest.raises(ConfigError, match="Cs.*unknown key"):
        LinearParams.from_dict({"Cs": [1.0]})
    with pytest.raises(ConfigError, match="params.C"):
        LinearParams.from_dict({"C": [0.1, -1]})
    with pytest.raises(ConfigError, match="params.class_weight"):
        LinearParams.from_dict({"class_weight": "sqrt"})
    with pytest.raises(ConfigError, match="params.inner_splits"):
        LinearParams.from_dict({"inner_splits": 1})
    assert LinearParams.from_dict({"C": 0.5}).C == (0.5,)


def test_features_choose_the_inputs():
    fs, store, spec, plan = toy_run()
    only_meta = cross_validate_linear(fs, store, spec, plan, ModelConfig(kind="logistic", params={"C": 1.0},
                                                                         features=["metadata"]), bootstrap=0)
    assert set(only_meta.importance["feature"]) == {"site", "x0"}
    with pytest.raises(ConfigError, match="no embeddings"):
        cross_validate_linear(fs, None, spec, plan, ModelConfig(kind="logistic", features=["embedding"]), bootstrap=0)


def test_default_models_add_the_probe_on_small_data():
    assert [m.kind for m in default_models(500)] == ["lightgbm", "xgboost", "catboost", "logistic"]
    assert [m.kind for m in default_models(LINEAR_PROBE_MAX_ROWS + 1)] == ["lightgbm", "xgboost", "catboost"]


def probe_run(weights) -> dict:
    """test_run_predict's run with the linear probe beside LightGBM, stacked, and LightGBM again on the
    probe's nested scores (``[ensemble] score_features``)."""
    run = whole_run(weights)
    return run | {"models": [*run["models"], {"kind": "logistic", "params": {"C": [0.01, 1.0], "inner_splits": 2}}],
                  "ensemble": {"method": "stack", "score_features": ["logistic"]}}


@pytest.mark.slow
def test_run_stacks_the_probe_and_predict_reproduces_its_test_scores(tmp_path, test_weights):
    from dermstack.data.table import LesionTable
    from dermstack.outputs.predict import predict_run
    from dermstack.run import Run

    out = tmp_path / "out"
    metrics = Run(RunConfig.from_toml(TinyRuns.write(tmp_path / "run.toml", **probe_run(test_weights))), out).execute()
    assert set(metrics["models"]) == {"lightgbm", "logistic", "lightgbm+logistic"} and metrics["oof_model"] == "stack"
    spec = json.loads((out / "models" / "logistic" / "model.json").read_text())
    assert spec["inputs"]["backbones"] == [TEST_MODEL]
    assert len(list((out / "models" / "logistic" / "nested").glob("without*_seed0.npz"))) == 3  # 3 folds: 3 pairs
    importance = pl.read_parquet(out / "models" / "lightgbm+logistic" / "importance.parquet")
    assert "probe" in importance["group"].to_list()
    table = LesionTable.read(out / "lesions.parquet")
    got = predict_run(out, LesionTable(table.test, table.meta))
    test = pl.read_parquet(out / "test_predictions.parquet")
    for name in ("logistic", "lightgbm+logistic", "stack"):  # new rows get the probe group from the pair probes
        a = got.filter(pl.col("model") == name).sort("image_id")["score"].to_numpy()
        b = test.filter(pl.col("model") == name).sort("image_id")["score"].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9)
    # the report explains the probe like a booster: exact contributions, one term per backbone
    from dermstack.reports import build_report
    from dermstack.reports.explain import explain_lesion
    from dermstack.reports.shap_ import ShapValues

    build_report(out, out / "report", shap_sample=60)
    sv = ShapValues.read(out / "report" / "shap" / "logistic.npz")
    assert f"embedding:{TEST_MODEL}" in sv.features and not any(f.startswith("emb_") and "_pc" in f for f in sv.features)
    assert "logistic" in (out / "report" / "index.html").read_text()
    assert explain_lesion(out, table.test["image_id"][0], out / "report").exists()


def test_C_path_stops_past_the_best_and_chooses_as_the_whole_grid(monkeypatch):
    from dermstack.linear import probe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 30))
    y = (X[:, 0] + rng.normal(size=240) > 0).astype(int)
    groups, params = np.arange(240) // 2, LinearParams(jobs=2)
    C, loss = probe.choose_C(X, y, groups, params, 0, 2)
    assert len(loss) < len(params.C)
    monkeypatch.setattr(probe, "PATIENCE", len(params.C))
    whole_C, whole = probe.choose_C(X, y, groups, dataclasses.replace(params, jobs=1), 0, 2)
    assert len(whole) == len(params.C) and C == whole_C
    np.testing.assert_allclose(loss, whole[:len(loss)], rtol=1e-6)
