"""SHAP of the final prediction (``dermstack.reports.final_shap``): per row, the contributions plus the
base add up to the score the run stored for that model (OOF for training rows, the test score for test
rows) in the stated space, for every kind of final model a run makes: a single booster, a linear probe,
a CNN, ``mean``, ``greedy``, ``rank``, ``stack`` and ``calibrated``, on binary, multiclass and
multi-label runs. The scores compared with are read from the model folders, not recomputed."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from multiclass_run import CONFIG as MULTI_CONFIG
from multiclass_run import PreparedRun, signal_table

from dermstack.cli import cli
from dermstack.config import RunConfig
from dermstack.ensembles.stacking import stack_models
from dermstack.errors import DataError
from dermstack.predictions import ModelResult, Predictions
from dermstack.reports.final_shap import explain_final, explained_model
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import ShapValues
from tiny_runs import booster, cnn_entry, embedded

#: LightGBM (2 seeds, resampled), the linear probe and a CNN on 150 synthetic lesions with embeddings; "auto" ensemble
BINARY = {"data": {"test_lesions": 6, "positive_rate": 0.15, "image_size": 32}, "report": {"enabled": False},
          "models": [booster("lightgbm", 30, seeds=[0, 1], sampling={"negative_ratio": 0.5, "positive_oversample": 0}),
                     {"kind": "logistic", "params": {"C": [0.1]}}, cnn_entry()]}


def stored(run_dir: Path, model: str, ids: list[str], folds: np.ndarray, classes: list[str]) -> np.ndarray:
    """(n, C) scores of ``model`` as its folder stores them: OOF for training rows, test scores for the rest."""
    d = run_dir / "models" / model
    out = np.full((len(ids), len(classes)), np.nan)
    for rows, file in ((folds >= 0, "oof.parquet"), (folds < 0, "test.parquet")):
        sub = [i for i, r in zip(ids, rows) if r]
        if sub:
            out[rows] = np.reshape(Predictions.read(d / file).matrix(sub, classes), (len(sub), len(classes)))
    return out


def assert_adds_up(sv: ShapValues, run_dir: Path, model: str, task: str, classes: list[str]) -> None:
    """values + base == the stored score in the stated space: log-odds (binary, multi-label) or probability."""
    s = stored(run_dir, model, list(sv.image_ids), sv.folds, classes)
    target = s if task == "multiclass" else np.log(np.clip(s, 1e-12, 1)) - np.log1p(-np.clip(s, 0, 1 - 1e-12))
    total = sv.values.sum(axis=1) + sv.base
    np.testing.assert_allclose(np.reshape(total, target.shape), target, atol=1e-6, rtol=0)
    assert np.isfinite(sv.values).all() and np.abs(sv.values).sum() > 0


def rows(run: RunData, n_train: int = 45) -> tuple[list[str], np.ndarray]:
    """Training rows (binary: every positive, then others) of every fold and every test row, with their folds (-1: test)."""
    ids = list(run.task.image_ids)
    pick = np.random.default_rng(0).permutation(len(ids))
    if run.task.kind.binary:
        pick = pick[np.argsort(-run.task.y[pick], kind="stable")]
    train = [ids[i] for i in sorted(pick[:n_train])]
    test = run.table.df.filter(run.table.df["split"] == "test")["image_id"].to_list()
    folds = np.concatenate([run.folds.fold_of(train), -np.ones(len(test), dtype=np.int64)])
    return train + test, folds


# -- binary: the report fixture run (three boosters, their mean) --------------------------------------
def test_mean_of_boosters_adds_up_to_the_stored_oof_log_odds(run_dir):
    run = RunData.load(run_dir)
    ids = list(run.task.image_ids)
    fin = explain_final(run, ids, run.folds.fold_of(ids), progress=False)
    assert fin.explained == "ensemble" and fin.values.model == "final (ensemble)" and "log-odds" in fin.space
    assert_adds_up(fin.values, run_dir, "ensemble", "binary", ["target"])
    # composed from the members' SHAP, the stored scores are met before any residual is shared
    assert max(fin.gaps.values()) < 1e-6 and set(fin.gaps) == {"lightgbm", "xgboost", "catboost", "ensemble"}
    assert len(set(fin.values.features)) == len(fin.values.features)
    assert fin.groups["color_contrast"] == "engineered"


def test_a_model_whose_files_changed_is_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    spec_path = copy / "models" / "ensemble" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["weights"] = [1.0, 0.0, 0.0]
    spec_path.write_text(json.dumps(spec))
    run = RunData.load(copy)
    with pytest.raises(DataError, match="ensemble.*does not reproduce its stored score"):
        explain_final(run, list(run.task.image_ids), run.folds.fold_of(run.task.image_ids), progress=False)


@pytest.mark.slow
def test_report_puts_the_final_model_first(report_dir, run_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    assert list(summary["shap_rows"])[0] == "final (ensemble)"
    sv = ShapValues.read(report_dir / "shap" / "final.npz")
    assert_adds_up(sv, run_dir, "ensemble", "binary", ["target"])
    html = (report_dir / "index.html").read_text()
    assert html.index("<h3>final (ensemble)</h3>") < html.index("<h3>lightgbm</h3>")
    assert "log-odds of the score of ensemble" in html and "rescale" in html


# -- binary: every member kind and every ensemble a run makes -----------------------------------------
@pytest.fixture(scope="module")
def binary_run(tiny, test_weights, tmp_path_factory) -> Path:
    """A run with LightGBM (2 seeds, resampled: prior undone), the linear probe, a CNN and LightGBM on the
    CNN's nested scores; "auto" saves mean, greedy and stack, the final one is calibrated; plus a rank
    ensemble of the same members."""
    root = tmp_path_factory.mktemp("final_shap_binary")
    tiny.copy(tiny.run(**BINARY, extract=embedded(test_weights, precision="fp32")), root / "run")
    run = RunData.load(root / "run")
    members = json.loads((root / "run" / "models" / "stack" / "model.json").read_text())["needs"]["members"]
    stack_models([ModelResult.read(run.models_dir / m, m) for m in members], run.task, run.folds, method="rank",
                 out_dir=run.models_dir)
    return root / "run"


BINARY_MODELS = [None, "mean", "greedy", "rank", "stack", "lightgbm", "lightgbm+cnn", "logistic", "cnn"]


@pytest.mark.slow
@pytest.mark.parametrize("model", BINARY_MODELS)
def test_binary_final_models_add_up_on_training_and_test_rows(binary_run, model):
    run = RunData.load(binary_run)
    ids, folds = rows(run)
    fin = explain_final(run, ids, folds, model=model, progress=False)
    name = model or explained_model(run)
    assert_adds_up(fin.values, binary_run, name, "binary", ["target"])
    assert max(fin.gaps.values()) < 1e-6
    if model is None:  # binary runs submit the calibrated final model, so that is what is explained
        final = run.final_model
        assert fin.explained == "calibrated" and fin.values.model == f"final (calibrated {final})"
        assert set(fin.gaps) >= {"calibrated", final}
    if model in (None, "mean", "greedy", "rank", "stack", "cnn"):
        uses_cnn = model == "cnn" or "cnn" in fin.gaps
        assert ("image (CNN)" in fin.values.features) == uses_cnn
        if uses_cnn:
            assert fin.groups["image (CNN)"] == "cnn"
    if model == "stack":  # members' features merged by name: each feature once, each with its group
        assert len(set(fin.values.features)) == len(fin.values.features)
        assert {"embedding:test_efficientnet", "image (CNN)", "cnn_score"} <= set(fin.values.features)
        assert "other" not in {fin.groups[f] for f in fin.values.features}


@pytest.mark.slow
def test_explain_page_shows_the_final_model_first(binary_run, tmp_path):
    run = RunData.load(binary_run)
    image_id = run.task.image_ids[int(np.argmax(run.task.y))]
    r = CliRunner().invoke(cli, ["report", "explain", str(binary_run), "--id", image_id, "--out", str(tmp_path)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", (tmp_path / f"explain_{image_id}.html").read_text())
    waterfalls = [c for c in captions if "add up" in c or "raw score" in c]
    assert waterfalls[0].startswith(f"final (calibrated {run.final_model})") and "log-odds" in waterfalls[0]
    assert any(c.startswith("lightgbm:") for c in waterfalls[1:])


# -- multiclass and multi-label ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in built:
            root = tmp_path_factory.mktemp(f"final_shap_{task}")
            config = MULTI_CONFIG.format(task=task).replace('method = "mean"', 'method = "auto"')
            config = (config[:config.index('[[models]]\nkind = "catboost"')] + config[config.index("[ensemble]"):]
                      + "\n[report]\nenabled = false\n")
            (root / "run.toml").write_text(config)
            PreparedRun(RunConfig.from_toml(root / "run.toml"), root / "run", signal_table(task)).execute()
            built[task] = root / "run"
        return built[task]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("model", [None, "mean", "greedy", "stack", "lightgbm"])
def test_multi_output_final_models_add_up(multi_run, task, model):
    run_dir = multi_run(task)
    run = RunData.load(run_dir)
    ids, folds = rows(run, n_train=60)
    fin = explain_final(run, ids, folds, model=model, progress=False)
    name = model or run.final_model
    assert fin.explained == name  # multiclass / multi-label runs submit the final model's own scores
    assert fin.values.values.shape == (len(ids), len(fin.values.features), len(run.task.classes))
    assert_adds_up(fin.values, run_dir, name, task, list(run.task.classes))
    assert max(fin.gaps.values()) < 1e-5  # multi-label: a class a fold never saw is a constant, clipped to 1e-6
    if task == "multiclass":
        assert fin.space.startswith("probability")
        # probabilities sum to one, so each feature's contributions sum to zero over the classes
        np.testing.assert_allclose(fin.values.values.sum(axis=2), 0, atol=1e-6)
