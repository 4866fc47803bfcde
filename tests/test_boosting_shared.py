"""Boosting on the real development data (metadata only): MILK10k multi-label, HAM10000 multiclass, and the CLI."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dermstack.boosting import cross_validate, predict_saved
from dermstack.cli import cli
from dermstack.config import FeaturesConfig, ModelConfig
from dermstack.data.folds import FoldPlan
from dermstack.features.build import build_features
from dermstack.task import TaskSpec


def metadata_run(shared_data, fmt: str, task_kind: str, out=None):
    from dermstack.data.readers import ingest

    table, _ = ingest(fmt, shared_data / f"{fmt}-dev")
    fs = build_features(table, FeaturesConfig(patient=False, embedding=False))
    task = TaskSpec.from_table(table, task_kind)
    plan = FoldPlan.make(table, 5, 42, task_kind)
    return table, fs, task, plan, cross_validate(fs, task, plan, ModelConfig(kind="lightgbm"), out, bootstrap=50)


@pytest.mark.slow
def test_milk10k_multilabel_macro_f1(shared_data, tmp_path):
    table, fs, task, plan, res = metadata_run(shared_data, "milk10k", "multilabel", tmp_path)
    print(f"MILK10k metadata-only LightGBM macro F1 {res.metrics['macro_f1']:.4f} CI {res.metrics['ci95']['macro_f1']}")
    assert res.metrics["macro_f1"] >= 0.27
    assert len(task.classes) == 11 and res.test.height == table.test.height * 11
    # MAL_OTH has no positive in one training part: a constant member, saved explicitly and reloaded
    assert list((tmp_path / "lightgbm").glob("*.constant.json"))
    assert predict_saved(tmp_path / "lightgbm", fs).shape == (fs.df.height, 11)


@pytest.mark.slow
def test_ham10000_multiclass_balanced_accuracy(shared_data):
    _, _, task, _, res = metadata_run(shared_data, "ham10000", "multiclass")
    print(f"HAM10000 metadata-only LightGBM balanced accuracy {res.metrics['balanced_accuracy']:.4f}, "
          f"macro F1 {res.metrics['macro_f1']:.4f}")
    assert len(task.classes) == 7
    assert res.metrics["balanced_accuracy"] > 1 / 7 + 0.05  # chance is 1/7


def test_cli_train_and_predict(shared_data, tmp_path):
    from dermstack.data.readers import ingest

    table, _ = ingest("milk10k", shared_data / "milk10k-dev")
    table.write(tmp_path / "lesions.parquet")
    FoldPlan.make(table, 3, 0, "multilabel").write(tmp_path / "folds.parquet")
    build_features(table, FeaturesConfig(patient=False, embedding=False)).write(tmp_path / "features.parquet")
    (tmp_path / "run.toml").write_text('[data]\nformat = "milk10k"\ntask = "multilabel"\n\n'
                                       '[[models]]\nkind = "lightgbm"\nparams = { n_estimators = 30 }\n\n'
                                       '[[models]]\nkind = "lightgbm"\nname = "lgb_small"\n'
                                       'params = { n_estimators = 20, num_leaves = 4 }\n')
    args = ["boosting", "train", str(tmp_path / "features.parquet"), "--folds", str(tmp_path / "folds.parquet"),
            "--lesions", str(tmp_path / "lesions.parquet"), "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "lightgbm: macro_f1" in r.output and "lgb_small: macro_f1" in r.output
    summary = json.loads((tmp_path / "run" / "boosting_metrics.json").read_text())
    assert set(summary["models"]) == {"lightgbm", "lgb_small"} and summary["n_train"] == 1500
    for name in ("lightgbm", "lgb_small"):  # each model folder is complete: what `ensembles stack` reads
        assert all((tmp_path / "run" / "models" / name / f).exists() for f in ("model.json", "oof.parquet", "test.parquet"))
    r = CliRunner().invoke(cli, ["boosting", "predict", str(tmp_path / "run" / "models" / "lgb_small"),
                                 str(tmp_path / "features.parquet"), "--out", str(tmp_path / "pred.parquet")])
    assert r.exit_code == 0, r.output
    bad = CliRunner().invoke(cli, args[:-2] + ["--out", str(tmp_path / "run2"), "--model", "nope"])
    assert bad.exit_code == 2 and "no such [[models]] name" in bad.output
