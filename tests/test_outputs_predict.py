"""`predict_run`: new data scored with a run's saved models only reproduces the run's own test scores."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from dermstack.boosting import cross_validate
from dermstack.cnn.nested import nested_cnn_views
from dermstack.cnn.train import cross_validate_cnn
from dermstack.config import FeaturesConfig, ModelConfig, RunConfig
from dermstack.data.table import LesionTable
from dermstack.ensembles.stacking import stack_models
from dermstack.errors import DataError
from dermstack.features.build import build_features
from dermstack.features.scores import fold_features
from dermstack.outputs.predict import predict_run
from dermstack.pipeline import fit_with_group
from ensembles_toy import setup, tiny_cnn
from lesion_tables import FakeStore, assert_features_equal


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("run")
    # 5 lesions per patient: patient P009 has 3 training and 2 test lesions, whose patient features see all 5
    table, task, plan = setup(root / "images", "binary", n=48, n_test=6, per_patient=5)
    features_cfg = FeaturesConfig(metadata=True, engineered=False, patient=True, image=False, embedding=False)
    cfg = RunConfig(features=features_cfg, models=[ModelConfig(kind="lightgbm", params={"n_estimators": 20, "verbose": -1}, sampling={}),
                                                   tiny_cnn()])
    cfg.ensemble.method = "stack"
    (root / "config.toml").write_text(cfg.to_toml())
    table.write(root / "lesions.parquet")
    fs = build_features(table, features_cfg)
    fs.write(root / "features.parquet")
    models = root / "models"
    lgbm = cross_validate(fs, task, plan, cfg.models[0], models)
    cnn = cross_validate_cnn(table, task, plan, cfg.models[1], models, progress=False)
    views = nested_cnn_views(table, task, plan, cfg.models[1], models, progress=False)
    stacked = fit_with_group(cfg.models[0], "cnn", "cnn", fold_features(fs, table, task, views, "cnn"), task, plan, models, table)
    stack = stack_models([lgbm, cnn, stacked], task, plan, "stack", models)
    (root / "metrics.json").write_text(json.dumps({"classes": task.classes, "oof_model": "stack"}))
    new = LesionTable(table.test, table.meta)
    new.write(root / "new.parquet")
    return root, {r.name: r.test for r in (lgbm, cnn, stacked, stack)}


def test_predict_reproduces_the_runs_test_scores(run_dir):
    root, expected = run_dir
    counts = pl.read_parquet(root / "features.parquet").filter(pl.col("split") == "test")["patient_lesion_count"]
    assert counts.max() == 5  # a test lesion whose patient also has training lesions
    preds = predict_run(root, root / "new.parquet")
    assert set(preds["model"].unique()) == {"lightgbm", "cnn", "lightgbm+cnn", "stack"}
    for name, test in expected.items():
        got = preds.filter(pl.col("model") == name).sort("image_id")["score"].to_numpy()
        want = test.frame.sort("image_id")["score"].to_numpy()
        assert np.allclose(got, want, atol=1e-5), name


def test_new_lesions_see_their_patients_run_lesions(run_dir, tmp_path):
    """Patient features of a new lesion are computed next to the run's lesions of its patient."""
    from dermstack.outputs.predict import _features, as_run_rows

    root, _ = run_dir
    table = LesionTable.read(root / "lesions.parquet")
    new = LesionTable(table.test, table.meta)
    fs = _features(RunConfig.from_toml(root / "config.toml"), root, as_run_rows(table, new), new.df["image_id"].to_list(), tmp_path)
    want = pl.read_parquet(root / "features.parquet").filter(pl.col("split") == "test")
    assert_features_equal(fs.df, want, fs.columns(["patient"]))


def test_predict_and_submit_commands(run_dir, tmp_path):
    from dermstack.outputs.cli import predict_command, submit_command

    root, expected = run_dir
    out = tmp_path / "p.parquet"
    r = CliRunner().invoke(predict_command, [str(root), str(root / "new.parquet"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == 4 * 6
    sub = tmp_path / "submission.csv"
    r = CliRunner().invoke(submit_command, [str(root), "--format", "isic2024", "--out", str(sub), "--predictions", str(out)])
    assert r.exit_code == 0, r.output
    df = pl.read_csv(sub)
    assert df.columns == ["isic_id", "target"] and df.height == 6
    # a binary run's scores in the MILK10k layout would fail on columns; say why before that
    r = CliRunner().invoke(submit_command, [str(root), "--format", "milk10k", "--out", str(tmp_path / "m.csv"), "--predictions", str(out)])
    assert r.exit_code == 1 and "--format milk10k needs the 11 MILK10k classes; this run is binary" in str(r.exception)
    assert not (tmp_path / "m.csv").exists()


def test_isic2024_format_needs_a_binary_run():
    """A MILK10k multi-label run's lesion ids in the ISIC 2024 layout would pass every column check."""
    from dermstack.outputs.submission import MILK10K_CLASSES, check_run_format

    with pytest.raises(DataError, match="--format isic2024 needs a binary task; this run is multilabel over 11 classes"):
        check_run_format("isic2024", "multilabel", MILK10K_CLASSES, "run")
    check_run_format("milk10k", "multilabel", MILK10K_CLASSES, "run")
    check_run_format("isic2024", "binary", ["malignant"], "run")
    check_run_format("isic2024", None, [], "a stage-by-stage folder")  # nothing to check against


def test_predict_leaves_out_training_ids(run_dir, caplog):
    """A dataset folder that grew since the run: its training rows are left out (in-sample scores
    would look better than they are), the new ones scored; --strict, or nothing new, is an error."""
    root, expected = run_dir
    table = LesionTable.read(root / "lesions.parquet")
    with pytest.raises(DataError, match="3 of 3 rows are training rows of this run.*nothing else to score"):
        predict_run(root, LesionTable(table.train.head(3), table.meta))
    mixed = LesionTable(pl.concat([table.train.head(3), table.test]), table.meta)
    with pytest.raises(DataError, match="3 of 9 rows are training rows of this run"):
        predict_run(root, mixed, strict=True)
    with caplog.at_level("WARNING"):
        preds = predict_run(root, mixed)
    assert "left out, scoring the other 6 rows" in caplog.text
    assert set(preds["image_id"]) == set(table.test["image_id"])
    got = preds.filter(pl.col("model") == "stack").sort("image_id")["score"].to_numpy()
    want = expected["stack"].frame.sort("image_id")["score"].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_new_and_run_stores_read_as_one():
    """predict reads new images from its own store and the patients' run lesions from the run's."""
    from dermstack.outputs.predict import _Stores

    class Listed(FakeStore):
        def image_ids(self, backbone):
            return list(self.pos)

    rng = np.random.default_rng(0)
    new, run = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    both = _Stores(Listed(["n0", "n1", "n2"], {"b": new}), Listed([f"r{i}" for i in range(5)], {"b": run}))
    assert both.backbones() == ["b"] and sorted(both.image_ids("b")) == ["n0", "n1", "n2", "r0", "r1", "r2", "r3", "r4"]
    np.testing.assert_array_equal(both.read("b", ["r3", "n1", "r0", "n2"]), np.stack([run[3], new[1], run[0], new[2]]))


def test_predict_refuses_new_data_missing_feature_columns(run_dir, caplog):
    from dermstack.outputs.cli import predict_command

    root, expected = run_dir
    table = LesionTable.read(root / "lesions.parquet")
    column = table.meta.feature_columns[0]
    meta = replace(table.meta, feature_columns=[c for c in table.meta.feature_columns if c != column],
                   categorical_columns=[c for c in table.meta.categorical_columns if c != column])
    new = LesionTable(table.test.drop(column), meta)
    with pytest.raises(DataError, match=f"lacks 1 feature column.*pass allow_missing_features=True.*{column}"):
        predict_run(root, new)  # Python's spelling of the option; the command's is its flag
    new.write(root / "lacking.parquet")
    r = CliRunner().invoke(predict_command, [str(root), str(root / "lacking.parquet"), "--out", str(root / "lacking-out.parquet")])
    assert r.exit_code == 1 and "pass --allow-missing-features to score" in str(r.exception)
    with caplog.at_level("WARNING"):
        preds = predict_run(root, new, allow_missing_features=True)
    assert preds["image_id"].n_unique() == 6 and any(column in r.message and "filled" in r.message for r in caplog.records)


def test_new_columns_take_the_runs_types(run_dir):
    """A column a reader typed otherwise than the run's (all empty, so read as text) stacks onto the
    run's rows in the run's type; a value that does not convert is a DataError naming it, not polars'."""
    from dermstack.outputs.predict import as_run_rows

    root, _ = run_dir
    table = LesionTable.read(root / "lesions.parquet")
    flag = pl.Series("flag", [True] * table.df.height)  # a Boolean column of the run, as family_hx_mm
    run_table = LesionTable(table.df.with_columns(flag), table.meta)
    empty = LesionTable(table.test.with_columns(pl.lit(None, pl.String).alias("flag")), table.meta)
    rows = as_run_rows(run_table, empty, "new.csv").df
    assert rows.schema == run_table.df.schema and rows.head(6)["flag"].null_count() == 6
    text = LesionTable(table.test.with_columns(pl.lit("False").alias("flag")), table.meta)
    assert not as_run_rows(run_table, text).df.head(6)["flag"].any()
    bad = LesionTable(table.test.with_columns(pl.Series("flag", ["true", "maybe"] * 3)), table.meta)
    second = table.test["image_id"][1]
    with pytest.raises(DataError, match=f"new.csv, column 'flag': 'maybe' in the row of image_id '{second}' is not a Boolean"):
        as_run_rows(run_table, bad, "new.csv")
