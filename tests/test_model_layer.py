"""The layer between the stages: one predictions contract, the saved-model registry, the mean
ensemble's weighting, run-directory locks and invalidation, and the import layering."""
from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from boosting_toy import toy
from dermstack.errors import DataError, DermstackError
from dermstack.predictions import ModelResult, Predictions
from dermstack.rundir import RunLock, RunLockedError, check_current, finish, invalidate
from dermstack.saved import Inputs, dependency_order, load, predict_all
from tiny_runs import TinyRuns, booster, tiny_config

SRC = Path(__file__).resolve().parents[1] / "src" / "dermstack"


def test_no_stage_imports_the_orchestrator_or_the_cli():
    bad = []
    for stage in ("data", "extract", "features", "boosting", "linear", "ensembles", "reports"):
        for f in sorted((SRC / stage).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                bad += [f"{f.relative_to(SRC)}: {n}" for n in names if n in ("dermstack.run", "dermstack.cli")
                        or n.startswith(("dermstack.run.", "dermstack.cli."))]
    assert not bad, bad


def test_predictions_matrix_averages_seeds_and_orders_rows():
    ids, classes = ["a", "b", "c"], ["x", "y"]
    s0, s1 = np.arange(6.0).reshape(3, 2), np.arange(6.0, 12.0).reshape(3, 2)
    p = Predictions.from_seeds("m", ids, classes, [0, 1], np.stack([s0, s1]), np.array([0, 1, 2]))
    np.testing.assert_allclose(p.matrix(["c", "a"], classes), ((s0 + s1) / 2)[[2, 0]])
    binary = Predictions.from_scores("m", ids, ["target"], np.array([0.1, 0.2, 0.3]))
    assert binary.matrix(ids, ["target"]).shape == (3,)
    with pytest.raises(DataError, match="no score"):
        p.matrix(["a", "zzz"], classes)
    with pytest.raises(DataError, match="class"):
        p.matrix(ids, ["x", "w"])


def _member(name, task, plan, seeds, rng, test_ids):
    fold = plan.fold_of(task.image_ids)
    oof = rng.random((len(seeds), len(task.image_ids), 1))
    return ModelResult(name, Predictions.from_seeds(name, task.image_ids, ["target"], seeds, oof, fold),
                       Predictions.from_scores(name, test_ids, ["target"], rng.random(len(test_ids))))


def test_mean_ensemble_weights_members_once_on_oof_test_and_new_data(tmp_path):
    """A member with 3 seeds counts as much as one with 1 seed, the same way everywhere."""
    from dermstack.ensembles.weighted import weighted_mean

    _, _, task, plan = toy("binary", n=200, n_test=0, seed=3, positive_rate=0.3)
    rng = np.random.default_rng(0)
    test_ids = [f"T{i}" for i in range(7)]
    a, b = _member("a", task, plan, [0, 1, 2], rng, test_ids), _member("b", task, plan, [0], rng, test_ids)
    for m in (a, b):  # saved like base models, so the registry can apply the mean to new data
        from dermstack.saved import write_model

        write_model(tmp_path / m.name, {"format_version": 2, "name": m.name, "kind": "mean", "task": "binary",
                                        "classes": ["target"], "needs": {}, "weights": []}, m)
    res = weighted_mean([a, b], task, plan, out_dir=tmp_path)
    per_model = [m.oof.matrix(task.image_ids, ["target"]) for m in (a, b)]
    np.testing.assert_allclose(res.oof.matrix(task.image_ids, ["target"]), np.mean(per_model, axis=0))
    want_test = np.mean([m.test.matrix(test_ids, ["target"]) for m in (a, b)], axis=0)
    np.testing.assert_allclose(res.test.matrix(test_ids, ["target"]), want_test)
    # new data: the saved mean applied to its members' scores weights them the same way
    inputs = Inputs(test_ids, ["target"], scores={m.name: m.test for m in (a, b)})
    np.testing.assert_allclose(load(tmp_path / "mean").predict(inputs), want_test)
    assert [d.name for d in dependency_order(tmp_path, ["mean"])] == ["a", "b", "mean"]


def test_registry_reports_a_missing_dependency(tmp_path):
    _, _, task, plan = toy("binary", n=120, n_test=0, seed=4, positive_rate=0.3)
    from dermstack.ensembles.weighted import weighted_mean

    rng = np.random.default_rng(1)
    a, b = _member("a", task, plan, [0], rng, []), _member("b", task, plan, [0], rng, [])
    weighted_mean([a, b], task, plan, out_dir=tmp_path)
    with pytest.raises(DataError, match="'a'.*missing"):
        predict_all(tmp_path, Inputs([], ["target"]))


def test_second_run_into_a_held_directory_fails_naming_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid.*{os.getpid()}"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released on exit
        pass


def test_a_killed_run_leaves_no_stuck_lock(tmp_path):
    code = (f"from dermstack.rundir import RunLock; import time; RunLock({str(tmp_path)!r}).__enter__(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).__enter__()
    proc.kill()
    proc.wait()
    with RunLock(tmp_path):
        pass


def test_invalidate_removes_downstream_records_and_final_outputs(tmp_path):
    stages = tmp_path / "stages"
    stages.mkdir()
    deps = {"ingest": [], "folds": ["ingest"], "features": ["ingest"], "model-a": ["folds", "features"],
            "model-b": ["folds"], "model-mean": ["model-a", "model-b"]}
    for name, d in deps.items():
        (stages / f"{name}.json").write_text(json.dumps({"stage": name, "depends_on": d}))
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "submission.csv").write_text("x")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html>")
    (tmp_path / "report" / "my-notes.txt").write_text("the user's")
    finish(tmp_path, ["ingest"])  # records metrics.json and submission.csv as the run's final outputs
    (tmp_path / "oof.parquet").write_text("not recorded: not removed")
    assert invalidate(tmp_path, "features") == ["model-a", "model-mean"]
    assert sorted(p.stem for p in stages.glob("*.json")) == ["features", "folds", "ingest", "model-b"]
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "submission.csv").exists()
    assert not (tmp_path / "report" / "index.html").exists() and (tmp_path / "report" / "my-notes.txt").exists()
    assert (tmp_path / "oof.parquet").exists()


def metadata_run(rounds: int) -> dict:
    """One booster on 300 synthetic lesions without embeddings."""
    return {"data": {"lesions": 300, "test_lesions": 12}, "features": {"embedding": False}, "models": [booster("lightgbm", rounds)]}


@pytest.fixture()
def finished_run(tiny, tmp_path):
    """(its config, a copy of the shared run directory) to change."""
    return tiny.write(tmp_path / "run.toml", **metadata_run(20)), tiny.copy(tiny.run(**metadata_run(20)), tmp_path / "run")


def test_interrupted_rerun_leaves_nothing_that_looks_current(finished_run, monkeypatch):
    """A rerun with a changed config killed in its model stage: the old metrics and submission are
    gone and `submit` refuses, naming what to re-run; a finished rerun makes them current again."""
    from dermstack.cli import cli
    from dermstack.config import RunConfig
    from dermstack.run import Run

    cfg, run = finished_run
    check_current(run)
    assert (run / "submission.csv").exists()
    TinyRuns.write(cfg, **metadata_run(25))

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("dermstack.boosting.kind.cross_validate", killed)
    with pytest.raises(KeyboardInterrupt):
        Run(RunConfig.from_toml(cfg), run).execute()
    monkeypatch.undo()
    assert not (run / "metrics.json").exists() and not (run / "submission.csv").exists()
    with pytest.raises(DermstackError, match="did not finish"):
        check_current(run)
    r = CliRunner().invoke(cli, ["submit", str(run), "--format", "isic2024", "--out", str(run / "s.csv")])
    assert r.exit_code == 2 and "did not finish" in r.output and not (run / "s.csv").exists()
    Run(RunConfig.from_toml(cfg), run).execute()
    check_current(run)


def test_readers_refuse_a_config_edited_after_the_run(finished_run):
    from dermstack.cli import cli

    _, run = finished_run
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("n_estimators = 20", "n_estimators = 99"))
    for args in (["submit", str(run), "--format", "isic2024", "--out", str(run / "s.csv")],
                 ["report", str(run), "--out", str(run / "rep")],
                 ["predict", str(run), str(run / "lesions.parquet"), "--out", str(run / "p.parquet")]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2, (args, r.output)
        assert "stage 'model-lightgbm'" in r.output and "Traceback" not in r.output, r.output


@pytest.mark.slow
def test_second_live_run_into_the_same_directory_fails_at_once(finished_run):
    cfg, run = finished_run
    code = (f"from dermstack.rundir import RunLock; import time; RunLock({str(run)!r}).__enter__(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(run)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "in use by a live run" in r.stderr and str(proc.pid) in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and time.perf_counter() - t0 < 30
    finally:
        proc.kill()
        proc.wait()


def test_a_model_added_to_or_removed_from_models_reruns_the_ensemble(tiny, tmp_path):
    """A model new to [[models]] never ran, so no stage it feeds was invalidated: the ensemble stage
    must still see that its members changed, and the run's final metrics must be the new ensemble's."""
    from dermstack.config import RunConfig
    from dermstack.run import Run

    two = [booster("lightgbm", 10), booster("xgboost", 10)]
    run = tiny.copy(tiny.run(two, ensemble={"method": "mean"}), tmp_path / "run")

    def members() -> list[str]:
        return json.loads((run / "models" / "mean" / "model.json").read_text())["needs"]["members"]

    assert members() == ["lightgbm", "xgboost"]
    for models in (two + [booster("catboost", 10)], two[:1] + [booster("catboost", 10)]):
        cfg = TinyRuns.write(tmp_path / "run.toml", models, ensemble={"method": "mean"})
        Run(RunConfig.from_toml(cfg), run).execute()
        assert members() == [m["kind"] for m in models]
        final, mean = (json.loads((d / "metrics.json").read_text()) for d in (run, run / "models" / "mean"))
        assert list(final["models"]) == [m["kind"] for m in models] and final["oof"]["roc_auc"] == mean["roc_auc"]


def test_a_method_named_after_auto_removes_the_choice_auto_wrote(tiny, tmp_path):
    from dermstack.config import RunConfig
    from dermstack.run import Run

    two = [booster("lightgbm", 10), booster("xgboost", 10)]
    run = tiny.copy(tiny.run(two), tmp_path / "run")
    assert (run / "models" / "ensemble_choice.json").is_file()
    Run(RunConfig.from_toml(TinyRuns.write(tmp_path / "run.toml", two, ensemble={"method": "mean"})), run).execute()
    assert not (run / "models" / "ensemble_choice.json").exists() and not (run / "stages" / "ensemble-auto.json").exists()
    assert json.loads((run / "metrics.json").read_text())["ensemble"] == {"method": "mean", "chosen": "mean"}


#: config edits a user makes between two runs into the same directory
EDITS = {
    "a model added": lambda c: c["models"].append(booster("catboost", 10)),
    "a model dropped": lambda c: c["models"].pop(0),
    "a booster's params": lambda c: c["models"][0]["params"].update(n_estimators=12),
    "another seed": lambda c: c["models"][1].update(seeds=[0, 1]),
    "the ensemble named": lambda c: c.update(ensemble={"method": "greedy"}),
    "the folds": lambda c: c["cv"].update(n_splits=4),
    "a feature group off": lambda c: c["features"].update(patient=False),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_rerun_after_a_config_edit_equals_a_fresh_run_of_the_edited_config(tiny, tmp_path, edit):
    """What a rerun keeps from the earlier config must be exactly what the edited config would make:
    every stage whose inputs changed runs again, and nothing the earlier config made is left in use."""
    from dermstack.config import RunConfig
    from dermstack.run import Run

    models, sections = [booster("lightgbm", 10), booster("xgboost", 10)], {"features": {"embedding": False}}
    edited = copy.deepcopy(tiny_config(models, **sections))
    EDITS[edit](edited)
    resumed = tiny.copy(tiny.run(models, **sections), tmp_path / "resumed")
    for out in (resumed, tmp_path / "fresh"):
        Run(RunConfig.from_dict(edited), out).execute()

    def timeless(d):
        return {k: timeless(v) for k, v in d.items() if k != "seconds"} if isinstance(d, dict) else d

    def outputs(run: Path) -> tuple:
        return timeless(json.loads((run / "metrics.json").read_text())), sorted(p.name for p in (run / "models").iterdir())

    assert outputs(resumed) == outputs(tmp_path / "fresh")
    assert pl.read_parquet(resumed / "oof.parquet").equals(pl.read_parquet(tmp_path / "fresh" / "oof.parquet"))


@pytest.mark.slow
def test_a_features_edit_keeps_the_cnn_and_its_pair_cnns(tiny, tmp_path, caplog):
    """The CNN reads images, labels and folds, not features.parquet: a [features] edit re-runs the
    boosters (and the boosters on the CNN feature), never the fine-tuning, and the rerun equals a fresh run."""
    from dermstack.config import RunConfig
    from dermstack.run import Run
    from tiny_runs import cnn_entry

    models = [booster("lightgbm", 10), cnn_entry()]
    edited = tiny_config(models, features={"patient": False})
    resumed = tiny.copy(tiny.run(models), tmp_path / "resumed")
    with caplog.at_level("INFO", logger="dermstack.pipeline"):
        Run(RunConfig.from_dict(edited), resumed).execute()
    said = caplog.text
    assert "stage model-cnn: unchanged, skipped" in said and "stage nested-cnn: unchanged, skipped" in said
    assert "stage features: done" in said and "stage model-lightgbm+cnn: done" in said
    Run(RunConfig.from_dict(edited), tmp_path / "fresh").execute()
    assert pl.read_parquet(resumed / "oof.parquet").equals(pl.read_parquet(tmp_path / "fresh" / "oof.parquet"))
