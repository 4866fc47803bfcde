"""The kNN kind (``kind = "knn"``): neighbours as sklearn finds them, fold by fold, a ``knn`` feature
group no booster sees a score of its own validation rows in, a saved model that reproduces the run's
scores and refuses a damaged or foreign file, every task kind, and a whole run + predict."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from boosting_toy import toy
from dermstack.config import ModelConfig, RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.errors import ConfigError, DataError
from dermstack.features.scores import fold_features
from dermstack.knn import kind as knn
from dermstack.knn.neighbours import KNNParams, candidates, label_matrix, unit_rows
from dermstack.registry import FitInputs, model_kind
from dermstack.saved import Inputs, load
from dermstack.task import as_columns
from dermstack.taskkind import TaskKind
from extract_fixtures import TEST_MODEL
from test_linear import toy_run
from test_run_predict import whole_run
from tiny_runs import TinyRuns


@pytest.mark.parametrize("weights", ["distance", "uniform"])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_neighbours_of_a_union_of_folds_are_sklearns(weights, task):
    rng = np.random.default_rng(0)
    n, n_new = 300, 40
    x = unit_rows(rng.normal(size=(n + n_new, 16)))
    y = rng.integers(0, 2 if task == "binary" else 3, n)
    fold = rng.integers(0, 5, n)
    cand = candidates(x[:n], fold, label_matrix(y, TaskKind(task), 3), x, 7, 5)
    new = np.arange(n, n + n_new)
    for kept in ([0, 1, 2], [1, 2, 3, 4], [4]):
        rows = np.isin(fold, kept)
        want = KNeighborsClassifier(7, weights=weights).fit(x[:n][rows], y[rows]).predict_proba(x[new])
        got = cand.scores(new, kept, 7, weights)
        np.testing.assert_allclose(got, want[:, 1:] if task == "binary" else want, atol=1e-6)


def fit_inputs(task="binary", n_splits=3, params=None, out_dir=None, seed=0):
    fs, store, spec, _ = toy_run(task, n=240, n_test=12, seed=seed)
    table = toy(task, n=240, n_test=12, seed=seed)[0]
    plan = FoldPlan.make(table, n_splits=n_splits, seed=1, task=task)
    return FitInputs(spec, plan, ModelConfig(kind="knn", params=params or {"n_neighbors": 5}), out_dir,
                     features=fs, table=table, store=store)


@pytest.mark.parametrize("n_splits", [3, 4])
def test_no_knn_score_a_booster_sees_was_made_with_its_validation_rows(monkeypatch, n_splits):
    inputs = fit_inputs(n_splits=n_splits, params={"n_neighbors": 3, "weights": "uniform"})
    fold_of = inputs.plan.fold_of(inputs.task.image_ids)
    # each training row's "label" says its fold: base-100 digit f of score * 3 counts the neighbours from fold f
    monkeypatch.setattr(knn, "label_matrix", lambda y, kind, n: (100.0 ** fold_of)[:, None].astype(np.float32))
    views = knn.nested_knn_views(inputs)
    sets = fold_features(inputs.features, inputs.table, inputs.task, views, knn.GROUP, knn.RELATIONS)
    for k in range(n_splits):
        frame = sets(k).df
        train = frame.filter(pl.col("split") == "train").join(
            pl.DataFrame({"image_id": inputs.task.image_ids, "fold": fold_of}), on="image_id")
        counts = np.rint(train["knn_score"].to_numpy() * 3 * (n_splits - 1)).astype(np.int64)
        saw = [(counts // 100 ** f) % 100 for f in range(n_splits)]  # neighbours from fold f behind a score
        assert (saw[k] == 0).all(), f"booster {k} sees a score made with its validation fold's labels"
        for j in range(n_splits):  # a training row's score: the pair model that left out its own fold too
            assert (saw[j][train["fold"].to_numpy() == j] == 0).all()
        assert {f"knn_score_{r}" for r in knn.RELATIONS} <= set(frame.columns)
        assert sets(k).groups["knn_score_cz"] == knn.GROUP
    test = [sets(k).df.filter(pl.col("split") == "test")["knn_score"].to_numpy() for k in range(n_splits)]
    assert all(np.array_equal(test[0], t) for t in test)
    # the member's own OOF score of a fold-k row: neighbours from the other folds only
    oof = knn.cross_validate_knn(inputs).oof.matrix(inputs.task.image_ids, inputs.task.classes)
    counts = np.rint(np.ravel(oof) * 3).astype(np.int64)
    assert all(((counts[fold_of == k] // 100 ** k) % 100 == 0).all() for k in range(n_splits))


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_saved_model_reproduces_the_runs_scores(tmp_path, task):
    inputs = fit_inputs(task, out_dir=tmp_path)
    result = knn.cross_validate_knn(inputs)
    views = knn.nested_knn_views(inputs)
    spec = inputs.task
    oof = as_columns(result.oof.matrix(spec.image_ids, spec.classes))
    assert oof.shape == (len(spec.image_ids), spec.n_outputs) and np.isfinite(oof).all()
    if TaskKind(task).exclusive and not TaskKind(task).binary:
        np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-6)
    model = load(tmp_path / "knn")
    test_ids = result.test.frame["image_id"].unique(maintain_order=True).to_list()
    new = Inputs(test_ids, spec.classes, embeddings=inputs.store, table=inputs.table)
    np.testing.assert_allclose(model.predict(new), result.test.matrix(test_ids, spec.classes), rtol=1e-6)
    test_rows = [views.test_ids.index(i) for i in test_ids]
    np.testing.assert_allclose(as_columns(model.nested_mean(new)), views.test[test_rows], rtol=1e-6)
    assert np.load(tmp_path / "knn" / knn.REFERENCE, allow_pickle=False)["embeddings"].dtype == np.float32


def test_standard_scale_is_sklearns_scaler_over_the_training_rows_then_cosine():
    inputs = fit_inputs(params={"n_neighbors": 5})  # scale = "standard", the default
    spec, fold_of = inputs.task, inputs.plan.fold_of(inputs.task.image_ids)
    x = StandardScaler().fit_transform(inputs.store.read("toynet", list(spec.image_ids)))
    x = unit_rows(x)
    oof = knn.cross_validate_knn(inputs).oof.matrix(spec.image_ids, spec.classes)
    for k in range(inputs.plan.n_splits):
        fit = KNeighborsClassifier(5, weights="distance").fit(x[fold_of != k], spec.y[fold_of != k])
        np.testing.assert_allclose(np.ravel(oof)[fold_of == k], fit.predict_proba(x[fold_of == k])[:, 1], atol=1e-5)
    raw = knn.cross_validate_knn(fit_inputs(params={"n_neighbors": 5, "scale": "none"}))
    assert not np.allclose(raw.oof.matrix(spec.image_ids, spec.classes), oof)


def test_a_model_saved_before_scale_existed_compares_raw_embeddings(tmp_path):
    inputs = fit_inputs(params={"n_neighbors": 5, "scale": "none"}, out_dir=tmp_path)
    result = knn.cross_validate_knn(inputs)
    spec = json.loads((tmp_path / "knn" / "model.json").read_text())
    del spec["params"]["scale"]
    (tmp_path / "knn" / "model.json").write_text(json.dumps(spec))
    test_ids = result.test.frame["image_id"].unique(maintain_order=True).to_list()
    new = Inputs(test_ids, inputs.task.classes, embeddings=inputs.store, table=inputs.table)
    np.testing.assert_allclose(load(tmp_path / "knn").predict(new), result.test.matrix(test_ids, inputs.task.classes), rtol=1e-6)


def test_a_damaged_or_foreign_reference_is_refused(tmp_path):
    inputs = fit_inputs(out_dir=tmp_path)
    knn.cross_validate_knn(inputs)
    folder = tmp_path / "knn"
    new = Inputs(inputs.task.image_ids[:5], inputs.task.classes, embeddings=inputs.store)
    path = folder / knn.REFERENCE
    good = path.read_bytes()
    path.write_bytes(good[:-20] + bytes(20))
    with pytest.raises(DataError, match="checksum"):
        load(folder).predict(new)
    np.savez(path, embeddings=np.zeros((3, 2), np.float32))  # another model's file, its checksum recorded
    spec = json.loads((folder / "model.json").read_text())
    spec["reference"]["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="training rows are not"):
        load(folder).predict(new)
    path.unlink()
    with pytest.raises(DataError, match="missing"):
        load(folder).predict(new)


def test_params_and_the_size_rule_are_checked():
    with pytest.raises(ConfigError, match='did you mean "distance"'):
        KNNParams(weights="distanse")
    with pytest.raises(ConfigError, match="n_neighbors"):
        KNNParams(n_neighbors=0)
    with pytest.raises(ConfigError, match="neighbours"):
        KNNParams(neighbours=5)
    with pytest.raises(ConfigError, match="max_rows"):
        knn.cross_validate_knn(fit_inputs(params={"max_rows": 100}))
    with pytest.raises(ConfigError, match="not in the run's embeddings"):
        knn.cross_validate_knn(fit_inputs(params={"backbone": "resnet18"}))
    with pytest.raises(ConfigError, match="params.weights"):
        RunConfig.from_dict({"models": [{"kind": "knn", "params": {"weights": "gaussian"}}]})
    cfg = RunConfig.from_dict({"models": [{"kind": "lightgbm"}, {"kind": "knn"}], "ensemble": {"score_features": ["knn"]}})
    assert cfg.feature_group_models() == ["lightgbm+knn"]
    assert model_kind("knn").feature_group.name == "knn"


def test_a_row_without_an_embedding_gets_the_label_mean():
    x = unit_rows(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [np.nan, np.nan]], np.float32))
    labels = np.array([[1.0], [1.0], [0.0]], np.float32)
    cand = candidates(x[:3], np.array([0, 1, 1]), labels, x, 2, 2)
    np.testing.assert_allclose(cand.scores(np.array([3]), [0, 1], 2, "distance"), [[2 / 3]])


@pytest.mark.slow
def test_run_gives_the_knn_group_and_predict_reproduces_its_test_scores(tmp_path, test_weights):
    from dermstack.data.table import LesionTable
    from dermstack.outputs.predict import predict_run
    from dermstack.run import Run

    run = whole_run(test_weights)
    run |= {"models": [*run["models"], {"kind": "knn", "params": {"n_neighbors": 10}}],
            "ensemble": {"method": "stack", "score_features": ["knn"]}}
    out = tmp_path / "out"
    metrics = Run(RunConfig.from_toml(TinyRuns.write(tmp_path / "run.toml", **run)), out).execute()
    assert set(metrics["models"]) == {"lightgbm", "knn", "lightgbm+knn"} and metrics["oof_model"] == "stack"
    spec = json.loads((out / "models" / "knn" / "model.json").read_text())
    assert spec["reference"]["backbone"] == TEST_MODEL and not list((out / "models" / "knn").rglob("*.pkl"))
    importance = pl.read_parquet(out / "models" / "lightgbm+knn" / "importance.parquet")
    assert "knn" in importance["group"].to_list()
    table = LesionTable.read(out / "lesions.parquet")
    got = predict_run(out, LesionTable(table.test, table.meta))
    test = pl.read_parquet(out / "test_predictions.parquet")
    for name in ("knn", "lightgbm+knn", "stack"):  # new rows get the knn group from the saved training rows
        a = got.filter(pl.col("model") == name).sort("image_id")["score"].to_numpy()
        b = test.filter(pl.col("model") == name).sort("image_id")["score"].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_binary_tasks_of_2000_to_30000_embedded_rows_get_the_knn_and_its_group_by_default():
    from dermstack.dataprofile import DataProfile

    def resolved(task, n, embeddings=True):
        cfg = RunConfig.from_dict({"data": {"task": task}})
        cfg.resolve(DataProfile(n, images=embeddings, table_features=3, task=task, embeddings=embeddings))
        return [m.kind for m in cfg.models], cfg.ensemble.score_features

    assert resolved("binary", 2_479) == (["lightgbm", "xgboost", "catboost", "logistic", "knn"], ["knn"])
    assert resolved("binary", knn.KNN_DEFAULT_MAX_ROWS + 1)[1] == []
    for task, n, embeddings in (("binary", knn.KNN_MIN_ROWS - 1, True), ("binary", 2_479, False),
                                ("multiclass", 2_479, True), ("multilabel", 2_479, True)):
        kinds, givers = resolved(task, n, embeddings)
        assert "knn" not in kinds and givers == [], (task, n, embeddings)
    # named explicitly, the group follows the same rule; score_features = [] keeps it off
    explicit = {"models": [{"kind": "lightgbm"}, {"kind": "knn"}], "data": {"task": "binary"}}
    cfg = RunConfig.from_dict(explicit)
    cfg.resolve(5_000)
    assert cfg.ensemble.score_features == ["knn"] and cfg.feature_group_models() == ["lightgbm+knn"]
    cfg = RunConfig.from_dict(explicit | {"ensemble": {"score_features": []}})
    cfg.resolve(5_000)
    assert cfg.feature_group_models() == []
