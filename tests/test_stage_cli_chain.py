"""The documented stage commands chain: ingest -> folds -> extract -> features -> boosting train ->
ensembles cnn -> ensembles stack -> submit -> report, and the stacked submission they make equals
the one `dermstack run` writes for the same config (`submit --model stack`: the run itself submits
the calibrated stack)."""
from __future__ import annotations

import polars as pl
import pytest
from click.testing import CliRunner

from dermstack.cli import cli
from extract_fixtures import TEST_MODEL
from tiny_runs import TinyRuns, booster, cnn_entry, embedded

SYNTH = {"lesions": 150, "test_lesions": 10, "image_size": 32, "seed": 0, "positive_rate": 0.1}

def invoke(*args) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.slow
def test_stage_commands_chain_to_the_runs_submission(tmp_path, test_weights):
    cfg = TinyRuns.write(tmp_path / "run.toml", data=SYNTH, cv={"seed": 42}, extract=embedded(test_weights, precision="fp32"),
                         models=[booster("lightgbm", 30), cnn_entry(epochs=2, samples_per_epoch=96)],
                         ensemble={"method": "stack", "cnn_feature": False}, report={"enabled": False})
    invoke("run", cfg, "--out", tmp_path / "run")

    data, c = tmp_path / "data", tmp_path / "chain"
    invoke("data", "synth", "--lesions", SYNTH["lesions"], "--test-lesions", SYNTH["test_lesions"], "--image-size",
           SYNTH["image_size"], "--seed", SYNTH["seed"], "--positive-rate", SYNTH["positive_rate"], "--workers", 1, "--out", data)
    invoke("data", "ingest", "isic2024", data, "--out", c / "lesions.parquet")
    invoke("data", "folds", c / "lesions.parquet", "--out", c / "folds.parquet", "--n-splits", 3, "--seed", 42)
    invoke("extract", "run", c / "lesions.parquet", "--backbone", TEST_MODEL, "--image-size", 32, "--precision", "fp32",
           "--weights", f"{TEST_MODEL}={test_weights}", "--out", c / "embeddings.h5")
    invoke("features", "build", c / "lesions.parquet", "--embeddings", c / "embeddings.h5", "--pca-components", 4,
           "--out", c / "features.parquet")
    invoke("boosting", "train", c / "features.parquet", "--folds", c / "folds.parquet", "--lesions", c / "lesions.parquet",
           "--config", cfg, "--out", c)
    invoke("ensembles", "cnn", c / "lesions.parquet", "--folds", c / "folds.parquet", "--out", c / "models", "--name", "cnn",
           "--backbone", TEST_MODEL, "--epochs", 2, "--image-size", 32, "--param", "pretrained=false",
           "--param", "samples_per_epoch=96", "--param", "batch_size=32", "--param", "lr=0.003", "--param", "freeze_fraction=0.0")
    invoke("ensembles", "stack", c / "models" / "lightgbm", c / "models" / "cnn", "--lesions", c / "lesions.parquet",
           "--folds", c / "folds.parquet", "--method", "stack", "--out", c / "models")
    invoke("submit", c, "--format", "isic2024", "--model", "stack", "--out", c / "submission.csv")
    out = invoke("report", c, "--out", c / "report", "--shap-sample", 50, "--n-boot", 5)
    assert (c / "report" / "index.html").exists(), out

    invoke("submit", tmp_path / "run", "--format", "isic2024", "--model", "stack", "--out", tmp_path / "run-stack.csv")
    ours, theirs = (pl.read_csv(p).sort("isic_id") for p in (c / "submission.csv", tmp_path / "run-stack.csv"))
    assert ours["isic_id"].to_list() == theirs["isic_id"].to_list() and ours.height == SYNTH["test_lesions"]
    assert (ours["target"] - theirs["target"]).abs().max() < 1e-6
