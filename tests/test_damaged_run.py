"""Never destroy, never pass off damage: each case a row of a table (as in test_bad_inputs.py).

- an ``--out`` folder that holds the user's files is refused, and nothing in it changes;
- a run directory damaged after the run (truncated, edited, linked to another run's, foreign)
  gives exit 2 naming the file and the stage to re-run, for ``submit``, ``predict``, ``report``
  and a rerun, never a traceback;
- values that would crash or hang later are refused at load, naming ``[section] key = value``;
- outputs honour what the path is (a link is written through; a FIFO, a device or ``-`` is refused);
- results that would be plausible but wrong are said (a note, a warning or an error naming them).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from dermstack.atomic import write_text
from dermstack.cli import cli
from dermstack.config import RunConfig
from dermstack.crossfit import check_same_plan
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError, DataError
from dermstack.outputs.submission import write_submission
from dermstack.predictions import ModelResult, Predictions
from dermstack.reports.shap_ import ShapValues
from dermstack.task import TaskSpec
from tiny_runs import booster


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tiny) -> tuple[Path, Path]:
    """(config, run directory) of one small finished run: two boosters and their mean; cases damage copies of it."""
    run = tiny.run(models=[booster("lightgbm"), booster("xgboost")], ensemble={"method": "mean"})
    return run.parent / "run.toml", run


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def link_other_runs_model(run: Path) -> None:
    other = run.parent / "other-run"
    shutil.copytree(run, other, symlinks=True)
    shutil.rmtree(run / "models" / "xgboost")
    (run / "models" / "xgboost").symlink_to(other / "models" / "xgboost", target_is_directory=True)


def edit_json(path: Path) -> None:
    path.write_text(path.read_text().replace("{", "{\"edited\": 1, ", 1))


#: (case, damage, file named, stage named, exit status of a rerun: 0 when the rerun rewrites what it
#: always rewrites (the final outputs), 2 when it refuses)
DAMAGE = [
    ("truncated model oof.parquet", lambda r: truncate(r / "models/lightgbm/oof.parquet"),
     "models/lightgbm/oof.parquet", "model-lightgbm", 2),
    ("damaged model.json", lambda r: (r / "models/lightgbm/model.json").write_text("{"),
     "models/lightgbm/model.json", "model-lightgbm", 2),
    ("damaged LightGBM file", lambda r: truncate(r / "models/lightgbm/fold0_seed0.txt"),
     "models/lightgbm/fold0_seed0.txt", "model-lightgbm", 2),
    ("edited test.parquet of the mean", lambda r: shutil.copy(r / "models/lightgbm/test.parquet", r / "models/mean/test.parquet"),
     "models/mean/test.parquet", "model-mean", 2),
    ("model folder linked to another run's", link_other_runs_model, "models/xgboost", "model-xgboost", 2),
    ("truncated run oof.parquet", lambda r: truncate(r / "oof.parquet"), "oof.parquet", "final outputs", 0),
    ("edited metrics.json", lambda r: edit_json(r / "metrics.json"), "metrics.json", "final outputs", 0),
    ("damaged stage record", lambda r: (r / "stages/run.json").write_text("{\"stage\""), "stages/run.json", "", 0),
    ("missing lesions.parquet", lambda r: (r / "lesions.parquet").unlink(), "lesions.parquet", "ingest", 0),
    ("damaged features.parquet", lambda r: truncate(r / "features.parquet"), "features.parquet", "features", 2),
]


def commands(run: Path, data: Path, tmp: Path) -> dict[str, list]:
    return {
        "submit": ["submit", run, "--format", "isic2024", "--out", tmp / "sub.csv"],
        "predict": ["predict", run, data, "--out", tmp / "pred.parquet"],
        "report": ["report", run, "--out", tmp / "report", "--shap-sample", 20, "--n-boot", 5],
    }


@pytest.mark.parametrize("case,damage,file,stage,rerun", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_a_damaged_run_directory_is_named_never_used(finished, tmp_path, case, damage, file, stage, rerun):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run, symlinks=True)
    damage(run)
    for name, args in commands(run, original / "lesions.parquet", tmp_path).items():
        r = invoke(*args)
        assert r.exit_code == 2, (name, r.output)
        assert "Traceback" not in r.output and str(run / file) in r.output and stage in r.output, (name, r.output)
        assert not (tmp_path / "sub.csv").exists() and not (tmp_path / "pred.parquet").exists(), name
    r = invoke("run", cfg, "--out", run)
    assert r.exit_code == rerun, r.output
    if rerun:
        assert str(run / file) in r.output and "Traceback" not in r.output, r.output


#: a stage-by-stage folder (no stage records to check against): the damaged file is named by the reader
UNRECORDED = [
    ("truncated oof.parquet", "models/lightgbm/oof.parquet", truncate, "unreadable predictions", "report"),
    ("model.json not JSON", "models/lightgbm/model.json", lambda p: p.write_text("{"), "unreadable model.json", "report"),
    ("truncated LightGBM file", "models/lightgbm/fold0_seed0.txt", truncate, "unreadable lightgbm model", "report"),
    ("metrics.json not JSON", "models/mean/metrics.json", lambda p: p.write_text("[1,"), "unreadable model metrics", "submit"),
    ("truncated test.parquet", "models/mean/test.parquet", truncate, "unreadable predictions", "submit"),
    ("truncated features.parquet", "features.parquet", truncate, "unreadable feature table", "report"),
]


@pytest.mark.parametrize("case,file,damage,said,command", UNRECORDED, ids=[c[0] for c in UNRECORDED])
def test_a_damaged_file_of_a_stage_by_stage_folder_is_named(finished, tmp_path, case, file, damage, said, command):
    _, original = finished
    folder = tmp_path / "stages-by-hand"
    shutil.copytree(original, folder, ignore=shutil.ignore_patterns("stages", "config.toml"))
    damage(folder / file)
    args = {"report": ["report", folder, "--out", tmp_path / "report", "--shap-sample", 20, "--n-boot", 5],
            "submit": ["submit", folder, "--format", "isic2024", "--model", "mean", "--out", tmp_path / "s.csv"]}[command]
    r = invoke(*args)
    assert r.exit_code == 2 and f"{folder / file}: {said}" in r.output and "Traceback" not in r.output, r.output


def test_a_run_directory_refused_for_damage_reruns_once_the_file_is_removed(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    truncate(run / "models/lightgbm/oof.parquet")
    assert invoke("run", cfg, "--out", run).exit_code == 2
    (run / "models/lightgbm/oof.parquet").unlink()
    r = invoke("-v", "run", cfg, "--out", run)
    assert r.exit_code == 0, r.output
    assert invoke("submit", run, "--format", "isic2024", "--out", tmp_path / "sub.csv").exit_code == 0


def test_a_model_folder_a_stage_command_added_is_used_and_said(finished, tmp_path, caplog):
    _, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    shutil.copytree(run / "models" / "lightgbm", run / "models" / "extra")
    with caplog.at_level(logging.WARNING):
        assert invoke("submit", run, "--format", "isic2024", "--out", tmp_path / "sub.csv").exit_code == 0
    assert "models/extra: a model folder no stage of this run wrote" in caplog.text


# -- --out on a folder with the user's files ----------------------------------------------------------
def home_like(folder: Path) -> dict[str, bytes]:
    """A folder like a home directory that also holds names a run writes (report/, models/, metrics.json)."""
    files = {".bashrc": b"alias ll='ls -l'\n", "notes.txt": b"mine\n", "metrics.json": b"{\"mine\": 1}\n",
             "report/draft.html": b"<p>mine</p>", "models/x/model.json": b"{}", "data/train-metadata.csv": b"a,b\n"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


OUT_COMMANDS = [
    ("run", lambda cfg, run, out: ["run", cfg, "--out", out]),
    ("demo", lambda cfg, run, out: ["demo", "--config", cfg, "--out", out]),
    ("report", lambda cfg, run, out: ["report", run, "--out", out]),
    ("report explain", lambda cfg, run, out: ["report", "explain", run, "--id", "ISIC_0000000", "--out", out]),
    ("data synth", lambda cfg, run, out: ["data", "synth", "--lesions", 20, "--out", out]),
    ("boosting train", lambda cfg, run, out: ["boosting", "train", run / "features.parquet", "--folds", run / "folds.parquet",
                                              "--lesions", run / "lesions.parquet", "--config", cfg, "--out", out]),
    ("ensembles stack", lambda cfg, run, out: ["ensembles", "stack", run / "models/lightgbm", run / "models/xgboost",
                                               "--lesions", run / "lesions.parquet", "--folds", run / "folds.parquet",
                                               "--method", "mean", "--out", out / "models" / "x" / ".."]),
    ("ensembles cnn", lambda cfg, run, out: ["ensembles", "cnn", run / "lesions.parquet", "--folds", run / "folds.parquet",
                                             "--backbone", "test_efficientnet", "--param", "pretrained=false", "--out", out]),
    ("compare", lambda cfg, run, out: ["compare", run, run, "--out", out]),
]


@pytest.mark.parametrize("name,args", OUT_COMMANDS, ids=[c[0] for c in OUT_COMMANDS])
def test_out_on_a_folder_of_the_users_files_is_refused_and_nothing_changes(finished, tmp_path, name, args):
    cfg, run = finished
    home = tmp_path / "home"
    home.mkdir()
    files = home_like(home)
    if name == "ensembles stack":  # models/<name>/ of a stage command: refused when it holds other files
        (home / "models" / "mean").mkdir()
        (home / "models" / "mean" / "my.txt").write_text("mine")
        files["models/mean/my.txt"] = b"mine"
    if name == "ensembles cnn":  # --out is the models folder: the CNN goes to OUT/cnn/
        (home / "cnn").mkdir()
        (home / "cnn" / "my.txt").write_text("mine")
        files["cnn/my.txt"] = b"mine"
    if name == "compare":  # the user's own files of compare's names are never taken for a comparison
        (home / "compare.html").write_text("<p>my comparison</p>")
        files["compare.html"] = b"<p>my comparison</p>"
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    r = invoke(*args(cfg, run, home))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "never deletes or overwrites" in r.output and "new or empty folder" in r.output
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before
    assert all((home / n).read_bytes() == data for n, data in files.items())
    if name == "ensembles cnn":  # the advice is another models folder, not one inside OUT/cnn/
        assert f"--out {home / 'dermstack-models'})" in r.output and "cnn/dermstack" not in r.output


@pytest.mark.parametrize("where", ["the run directory", "models/lightgbm", "a new folder inside the run"])
def test_compare_never_writes_inside_a_run_directory(finished, tmp_path, where):
    _, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    out = {"the run directory": run, "models/lightgbm": run / "models" / "lightgbm", "a new folder inside the run": run / "cmp"}[where]
    before = sorted(str(p) for p in run.rglob("*"))
    r = invoke("compare", original, original, "--out", out)
    assert r.exit_code == 2 and f"inside the run directory {run}" in r.output and "Traceback" not in r.output, r.output
    assert sorted(str(p) for p in run.rglob("*")) == before
    r = invoke("compare", original, original, "--out", tmp_path / "cmp", "--n-boot", 20)  # beside it: fine, and again
    assert r.exit_code == 0 and invoke("compare", original, original, "--out", tmp_path / "cmp", "--n-boot", 20).exit_code == 0


@pytest.mark.slow
def test_a_rerun_removes_only_what_the_run_wrote(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    assert invoke("report", run, "--shap-sample", 20, "--n-boot", 5).exit_code == 0
    (run / "report" / "my-notes.txt").write_text("mine")
    (run / "report" / "draft.parquet").write_text("mine too")
    changed = tmp_path / "changed.toml"
    changed.write_text(cfg.read_text().replace("n_estimators = 10", "n_estimators = 12", 1) + "\n[report]\nenabled = true\n"
                       "shap_sample = 20\n")
    r = invoke("run", changed, "--out", run)
    assert r.exit_code == 0, r.output
    assert (run / "report" / "my-notes.txt").read_text() == "mine" and (run / "report" / "draft.parquet").exists()
    assert (run / "report" / "index.html").exists()


def test_a_rerun_of_an_unchanged_run_keeps_its_report_and_rebuilds_one_made_otherwise(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    with_report = tmp_path / "with-report.toml"
    with_report.write_text(cfg.read_text() + "\n[report]\nenabled = true\nshap_sample = 20\n")
    assert invoke("run", with_report, "--out", run).exit_code == 0
    page, summary = run / "report" / "index.html", run / "report" / "summary.json"
    built = page.stat().st_mtime_ns
    assert invoke("run", with_report, "--out", run).exit_code == 0
    assert page.stat().st_mtime_ns == built  # nothing it reads changed: not built again
    assert invoke("report", run, "--shap-sample", 10, "--n-boot", 5).exit_code == 0  # the user's own settings
    assert json.loads(summary.read_text())["settings"]["shap_sample"] == 10
    assert invoke("run", with_report, "--out", run).exit_code == 0
    assert json.loads(summary.read_text())["settings"]["shap_sample"] == 20  # the run's report again


@pytest.mark.parametrize("args", [["report", "{run}", "--out", "{run}/models/my-report"],
                                  ["data", "synth", "--lesions", 20, "--out", "{run}/stages/x"]], ids=["report", "data synth"])
def test_no_output_folder_goes_where_a_run_keeps_its_own(finished, tmp_path, args):
    _, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    r = invoke(*[str(a).format(run=run) for a in args])
    assert r.exit_code == 2 and "which holds only what the run's stages write" in r.output, r.output
    assert not (run / "models" / "my-report").exists() and not (run / "stages" / "x").exists()


# -- values that would crash or hang later ------------------------------------------------------------
BAD_CONFIG = [
    ("negative seed", {"models": [{"kind": "lightgbm", "seeds": [-1]}]}, "seeds[0] = -1"),
    ("duplicate seeds", {"models": [{"kind": "lightgbm", "seeds": [0, 0]}]}, "seeds = [0, 0]: seed(s) [0] repeated"),
    ("infinite learning rate", {"models": [{"kind": "lightgbm", "params": {"learning_rate": float("inf")}}]},
     "params.learning_rate = Infinity: must be a finite number"),
    ("NaN CNN lr", {"models": [{"kind": "cnn", "params": {"lr": float("nan")}}]}, "params.lr = NaN"),
    ("huge repeats", {"cv": {"repeats": 1_000_000_000}}, "[cv] repeats = 1000000000"),
    ("negative fold seed", {"cv": {"seed": -1}}, "[cv] seed = -1"),
    ("no lesions", {"data": {"lesions": 0}}, "[data] lesions = 0"),
    ("negative threads", {"models": [{"kind": "xgboost", "params": {"threads": -1}}]},
     "params.threads = -1: Input should be greater than or equal to 1"),
    ("zero early stopping", {"models": [{"kind": "lightgbm", "params": {"early_stopping_rounds": 0}}]},
     "params.early_stopping_rounds = 0: Input should be greater than or equal to 1"),
    ("huge image size", {"extract": {"image_size": 99999}}, "[extract] image_size = 99999: at most 2,048 pixels a side"),
    ("huge CNN image size", {"models": [{"kind": "cnn", "image_size": 99999}]}, "image_size = 99999: at most 2,048"),
    ("huge batch", {"extract": {"batch_size": 10**9}}, "[extract] batch_size = 1000000000: at most 8,192"),
    ("huge CNN batch", {"models": [{"kind": "cnn", "params": {"batch_size": 10**6}}]}, "params.batch_size = 1000000: at most 8,192"),
    ("huge MLP layer", {"models": [{"kind": "mlp", "params": {"hidden": [10**7]}}]}, "params.hidden[0] = 10000000: at most 8,192"),
    ("huge PCA", {"extract": {"pca_components": 100000}}, "[extract] pca_components = 100000: at most 4,096"),
    ("10^12 trees", {"models": [{"kind": "lightgbm", "params": {"n_estimators": 10**12}}]},
     "params.n_estimators = 1000000000000: at most 100,000 boosting rounds"),
    ("10^12 trees by LightGBM's name", {"models": [{"kind": "lightgbm", "params": {"num_iterations": 10**12}}]},
     "params.num_iterations = 1000000000000: at most 100,000"),
    ("10^7 trees by CatBoost's name", {"models": [{"kind": "catboost", "params": {"iterations": 10**7}}]},
     "params.iterations = 10000000: at most 100,000"),
    ("a fold per lesion", {"cv": {"n_splits": 221}}, "[cv] n_splits = 221: at most 100 folds"),
    ("a million DataLoader workers", {"extract": {"workers": 10**6}}, "[extract] workers = 1000000: at most 256"),
    ("a million streams", {"extract": {"streams": 10**6}}, "[extract] streams = 1000000: at most 1,024"),
    ("10^9 synthetic lesions", {"data": {"lesions": 10**9}}, "[data] lesions = 1000000000: at most 1,000,000"),
    ("10^12 CNN samples", {"models": [{"kind": "cnn", "params": {"samples_per_epoch": 10**12}}]}, "at most 10,000,000"),
    ("a 1000-value C grid", {"models": [{"kind": "logistic", "params": {"C": [0.1 + i for i in range(1000)]}}]},
     "at most 100 values in a grid"),
    ("a negative Dask wait", {"cv": {"dask_wait": -1}}, "[cv] dask_wait = -1"),
    ("model named ..", {"models": [{"kind": "lightgbm", "name": ".."}]}, 'name = "..": a model name is a directory name'),
    ("model named with a slash", {"models": [{"kind": "lightgbm", "name": "a/b"}]}, 'name = "a/b"'),
    ("hidden model name", {"models": [{"kind": "lightgbm", "name": ".x"}]}, 'name = ".x"'),
]


@pytest.mark.parametrize("case,raw,named", BAD_CONFIG, ids=[c[0] for c in BAD_CONFIG])
def test_values_that_would_fail_later_are_refused_at_load(case, raw, named):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(raw)
    assert named in str(e.value)


BAD_OPTIONS = [
    ("data synth --lesions 0", ["data", "synth", "--lesions", 0, "--out", "x"], "--lesions"),
    ("data synth --seed -1", ["data", "synth", "--seed", -1, "--out", "x"], "--seed"),
    ("data folds --n-splits 1", ["data", "folds", "{lesions}", "--n-splits", 1, "--out", "x"], "--n-splits"),
    ("report --n-boot 0", ["report", "{run}", "--n-boot", 0], "--n-boot"),
    ("predict --out x.csv (parquet a spreadsheet would misread)", ["predict", "{run}", "{lesions}", "--out", "x.csv"],
     "give it a .parquet name"),
    ("extract run --image-size 99999", ["extract", "run", "{lesions}", "--image-size", 99999, "--out", "x"], "--image-size"),
    ("extract run --batch-size 10^9", ["extract", "run", "{lesions}", "--batch-size", 10**9, "--out", "x"], "--batch-size"),
    ("data synth --lesions 10^9", ["data", "synth", "--lesions", 10**9, "--out", "x"], "--lesions"),
    ("data folds --n-splits 221", ["data", "folds", "{lesions}", "--n-splits", 221, "--out", "x"], "--n-splits"),
    ("features build --pca-components 10^5", ["features", "build", "{lesions}", "--pca-components", 10**5, "--out", "x"],
     "--pca-components"),
    ("compare --n-boot 0", ["compare", "{run}", "{run}", "--n-boot", 0, "--out", "x"], "--n-boot"),
    ("compare --n-boot 10^9", ["compare", "{run}", "{run}", "--n-boot", 10**9, "--out", "x"], "--n-boot"),
    ("ensembles cnn --epochs 10^9", ["ensembles", "cnn", "{lesions}", "--folds", "{folds}", "--epochs", 10**9, "--out", "x"],
     "--epochs"),
    ("ensembles cnn --name ../x", ["ensembles", "cnn", "{lesions}", "--folds", "{folds}", "--name", "../x", "--out", "x"],
     'name = "../x": a model name is a directory name'),
]


@pytest.mark.parametrize("case,args,named", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_out_of_range_options_are_refused(finished, tmp_path, case, args, named):
    _, run = finished
    args = [str(a).format(lesions=run / "lesions.parquet", run=run, folds=run / "folds.parquet") for a in args]
    r = CliRunner().invoke(cli, args[:-1] + [str(tmp_path / args[-1])] if args[-2] == "--out" else args)
    assert r.exit_code == 2 and named in r.output, r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.csv").exists()


# -- what an output path is ---------------------------------------------------------------------------
def test_a_link_is_written_through_to_its_target(finished, tmp_path):
    _, run = finished
    target = tmp_path / "kept" / "submission.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert invoke("submit", run, "--format", "isic2024", "--out", link).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("isic_id,target")


SPECIAL = [
    ("FIFO", lambda p: os.mkfifo(p), "is a FIFO"),
    ("dash", None, "does not write to standard output"),
    ("character device", "/dev/null", "is a character device"),
]


@pytest.mark.parametrize("case,make,said", SPECIAL, ids=[c[0] for c in SPECIAL])
def test_a_fifo_a_device_or_dash_is_refused_never_replaced(finished, tmp_path, case, make, said):
    _, run = finished
    out = tmp_path / "fifo" if callable(make) else Path(make or "-")
    if callable(make):
        make(out)
    kind = out.lstat().st_mode if out.exists() else None
    r = invoke("submit", run, "--format", "isic2024", "--out", out)
    assert r.exit_code == 2 and said in r.output, r.output
    assert (out.lstat().st_mode if out.exists() else None) == kind
    assert not Path("-").exists()


def test_a_failed_shap_write_leaves_no_file(tmp_path, monkeypatch):
    sv = ShapValues("m", np.array(["a"]), np.array([0]), ["f"], np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)), ["target"])

    def disk_full(f, **arrays):
        f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError):
        sv.write(tmp_path / "shap" / "m.npz")
    assert list((tmp_path / "shap").iterdir()) == []


# -- plausible but wrong results are said ---------------------------------------------------------------
def test_models_fitted_on_another_fold_plan_are_not_combined(finished):
    _, run = finished
    table = LesionTable.read(run / "lesions.parquet")
    task = TaskSpec.from_table(table, "binary")
    other = FoldPlan.make(table, 3, 7, "binary")
    a = ModelResult.read(run / "models" / "lightgbm", "lightgbm")
    with pytest.raises(DataError, match="model 'lightgbm' was cross-fitted on another fold plan"):
        check_same_plan([a], other)
    check_same_plan([a], FoldPlan.read(run / "folds.parquet"))
    assert task.few_positives() == {}


def test_test_predictions_of_another_model_are_named(finished, tmp_path):
    _, run = finished
    d = tmp_path / "lightgbm"
    shutil.copytree(run / "models" / "lightgbm", d)
    Predictions.read(run / "models" / "xgboost" / "test.parquet").write(d / "test.parquet")
    with pytest.raises(DataError, match="do not match its partner oof.parquet") as e:
        ModelResult.read(d)
    assert e.value.file == str(d / "test.parquet")


def test_ids_a_spreadsheet_would_run_as_formulas_are_said(tmp_path, caplog):
    ids = ["=HYPERLINK(\"x\")", "ISIC_1"]
    preds = Predictions.from_scores("m", ids, ["target"], np.array([0.1, 0.2])).frame
    with caplog.at_level(logging.WARNING):
        write_submission(preds, "isic2024", tmp_path / "s.csv", ids=ids, classes=["target"])
    assert "1 ids start with = + - @" in caplog.text and "=HYPERLINK" in caplog.text


FEW = [
    ("binary, 3 positives", "binary", ["target"], np.array([0] * 50 + [1] * 3), {"target": 3}),
    ("multiclass, a class of 2", "multiclass", ["a", "b"], np.array([0] * 50 + [1] * 2), {"b": 2}),
    ("multi-label, enough", "multilabel", ["a", "b"], np.ones((6, 2), dtype=int), {}),
]


@pytest.mark.parametrize("case,kind,classes,y,few", FEW, ids=[c[0] for c in FEW])
def test_classes_with_too_few_positives_are_noted(case, kind, classes, y, few):
    task = TaskSpec(kind, classes, [str(i) for i in range(len(y))], y)
    assert task.few_positives() == few


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    r = invoke("run", tmp_path / "f", "--out", tmp_path / "f")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_write_text_replaces_the_target_of_a_dangling_link(tmp_path):
    link = tmp_path / "l"
    link.symlink_to(tmp_path / "new.txt")
    write_text(link, "hi")
    assert link.is_symlink() and (tmp_path / "new.txt").read_text() == "hi"


def test_extraction_never_appends_to_a_file_it_did_not_write(tmp_path):
    from dermstack.extract.store import writable_store

    (tmp_path / "notes.h5").write_text("not HDF5")
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f.create_dataset("my_data", data=np.arange(3))
    for name, said in (("notes.h5", "cannot be read as an HDF5 EmbeddingStore"),
                       ("mine.h5", r"entries dermstack did not write \(my_data\)")):
        with pytest.raises(DataError, match=said) as e:
            writable_store(tmp_path / name)
        assert e.value.file == str(tmp_path / name)
    assert writable_store(tmp_path / "new.h5") == tmp_path / "new.h5"


def test_submit_into_the_run_directory_does_not_make_it_look_damaged(finished, tmp_path):
    _, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    assert invoke("submit", run, "--format", "isic2024", "--model", "xgboost", "--out", run / "submission.csv").exit_code == 0
    assert invoke("submit", run, "--format", "isic2024", "--out", tmp_path / "s.csv").exit_code == 0


def test_a_rerun_with_force_never_writes_through_a_link(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    link_other_runs_model(run)
    theirs = run.parent / "other-run" / "models" / "xgboost"
    before = {f.name: f.read_bytes() for f in theirs.iterdir()}
    r = invoke("run", cfg, "--out", run, "--force")
    assert r.exit_code == 2 and str(run / "models" / "xgboost") in r.output, r.output
    assert {f.name: f.read_bytes() for f in theirs.iterdir()} == before


def files_of(run: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run)): f.read_bytes() for f in sorted(run.rglob("*")) if f.is_file() and f.name != ".lock"}


@pytest.mark.parametrize("mine", ["models/myexp/x.txt", "models/lightgbm/notes.txt"])
def test_a_rerun_refused_for_a_users_file_in_models_leaves_the_finished_run_as_it_was(finished, tmp_path, mine):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    (run / mine).parent.mkdir(exist_ok=True)
    (run / mine).write_text("mine")
    before = files_of(run)
    r = invoke("run", cfg, "--out", run, "--force")
    assert r.exit_code == 2 and f"{run / Path(mine).parent}: a model folder" in r.output and "Traceback" not in r.output, r.output
    assert files_of(run) == before  # metrics.json, oof.parquet, stages/run.json ... all still there, unchanged
    assert invoke("submit", run, "--format", "isic2024", "--out", tmp_path / "sub.csv").exit_code == 0
    (run / mine).unlink()
    if mine.startswith("models/myexp"):  # an empty folder no stage wrote is refused too
        (run / mine).parent.rmdir()
    assert invoke("run", cfg, "--out", run, "--force").exit_code == 0


def test_a_target_typo_on_a_finished_run_changes_nothing(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    typo = tmp_path / "typo.toml"
    typo.write_text(cfg.read_text().replace('[data]\n', '[data]\ntarget = "malignent"\n', 1))
    before = files_of(run)
    r = invoke("run", typo, "--out", run)
    assert r.exit_code == 2 and f'{typo}: [data] target = "malignent"' in r.output, r.output
    assert 'did you mean "malignant"' in r.output, r.output
    assert files_of(run) == before


def test_a_model_json_whose_features_were_edited_is_named_not_a_library_traceback(finished, tmp_path):
    from dermstack.boosting.store import predict_saved
    from dermstack.features.featureset import FeatureSet

    _, run = finished
    d = tmp_path / "lightgbm"
    shutil.copytree(run / "models" / "lightgbm", d)
    spec = json.loads((d / "model.json").read_text())
    spec["features"]["columns"] = spec["features"]["columns"][:-1]
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="its native files do not fit its model.json") as e:
        predict_saved(d, FeatureSet.read(run / "features.parquet"))
    assert e.value.file == str(d / "model.json")


RESUMABLE = [("a stage's own file edited", False, "refused"), ("a resumable store edited", True, "runs again")]


@pytest.mark.parametrize("case,resumable,expected", RESUMABLE, ids=[c[0] for c in RESUMABLE])
def test_a_changed_output_is_refused_unless_the_stage_resumes_it(tmp_path, case, resumable, expected):
    from dermstack.provenance import Stage

    out = tmp_path / "embeddings.h5"
    out.write_bytes(b"rows 1-512")
    stage = Stage(tmp_path, "extract", {"extract.backbones": ["b"]}, [], [out], [], resumable)
    stage.finish(0.1)
    assert stage.done()
    out.write_bytes(b"rows 1-512, then another backbone")
    if expected == "refused":
        with pytest.raises(DataError, match="changed since stage 'extract' wrote it") as e:
            stage.done()
        assert e.value.file == str(out)
    else:
        assert not stage.done()
    out.unlink()
    assert not stage.done()  # a missing output: the stage runs again


# -- sizes only the data decides: said before the allocation ------------------------------------------
def test_the_docs_list_every_limit():
    from dermstack.config.limits import LIMITS

    text = (Path(__file__).resolve().parents[1] / "docs" / "bad-input.md").read_text()
    for limit in LIMITS.values():
        assert f"| {limit.most:,} {limit.counts} | {limit.keys} |" in text, limit


def test_an_image_batch_that_cannot_fit_is_named_before_it_is_allocated(tmp_path, test_weights):
    from dermstack.extract import ExtractSettings, extract_embeddings
    from extract_fixtures import TEST_MODEL, make_table

    table = make_table(["a"], [str(tmp_path / "a.jpg")])
    settings = ExtractSettings(image_size=2048, batch_size=8192, streams=2, weights={TEST_MODEL: str(test_weights)})
    with pytest.raises(ConfigError, match=r"\[extract\] batch_size = 8192, image_size = 2048, streams = 2: embedding with "
                                          r"test_efficientnet would need at least [\d,.]+ GiB, more than the"):
        extract_embeddings(table, [TEST_MODEL], tmp_path / "e.h5", settings)
    assert not (tmp_path / "e.h5").exists()


def test_an_mlp_that_cannot_fit_is_named_before_it_is_allocated(monkeypatch):
    from dermstack.linear.design import Design
    from dermstack.mlp.net import fit_mlp
    from dermstack.mlp.params import MLPParams
    from dermstack.taskkind import TaskKind

    monkeypatch.setattr("dermstack.config.limits.free_memory", lambda device="cpu": 2**30)
    X = np.zeros((40, 5000), np.float32)
    with pytest.raises(ConfigError, match=r"mlp params.hidden = \[8192, 8192\]: an MLP on 5000 inputs would need at least "
                                          r"[\d.]+ GiB, more than the 1.0 GiB free"):
        fit_mlp(Design({}, [], {}, [], np.zeros(0), np.zeros(0), []), X, np.arange(40) % 2, np.arange(40), TaskKind.BINARY, 2,
                MLPParams(hidden=[8192, 8192]))


# -- a Dask worker that cannot see the run directory ---------------------------------------------------
def test_a_worker_that_cannot_see_the_run_directory_says_it_must_be_shared(tmp_path):
    import pickle

    from dermstack.jobs import file_input

    (tmp_path / "features.parquet").write_text("x")
    lazy = file_input("the client's copy", tmp_path / "features.parquet", Path.read_text)
    (tmp_path / "features.parquet").unlink()  # what a worker without the run directory sees
    with pytest.raises(DataError, match="must be on storage every Dask worker shares, at the same path") as e:
        pickle.loads(pickle.dumps(lazy)).get()
    assert e.value.file == str(tmp_path / "features.parquet")


# -- Ctrl-C during a run --------------------------------------------------------------------------------
SLOW = booster("lightgbm", params={"n_estimators": 100000, "early_stopping_rounds": 100000, "learning_rate": 0.00001})


@pytest.mark.slow
def test_ctrl_c_during_a_run_stops_within_seconds_with_exit_130_and_the_run_resumes(tiny, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    tiny.write(tmp_path / "run.toml", [SLOW], ensemble={"method": "mean"})
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dermstack.cli", "run", str(tmp_path / "run.toml"), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "stages" / "features.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # into the boosters' fits
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130 and took < 3, (proc.returncode, took, err[-2000:])
    assert "Interrupted (Ctrl-C): stopped" in err and "Traceback" not in err
    done = {p.stem for p in (run / "stages").glob("*.json")}
    assert {"ingest", "folds", "features"} <= done and "model-lightgbm" not in done
    quick = tiny.write(tmp_path / "quick.toml", [booster("lightgbm"), booster("xgboost")], ensemble={"method": "mean"})
    r = invoke("-v", "run", quick, "--out", run)  # the lock is free and the finished stages are kept
    assert r.exit_code == 0, r.output


def test_ctrl_c_sent_to_dermstack_alone_ends_its_worker_processes_too(tmp_path):
    """``kill -INT`` of dermstack alone (not the terminal's process group): its process-pool workers end with it."""
    import subprocess
    import sys

    import psutil

    script = tmp_path / "interrupted.py"
    script.write_text(
        "import os, time\n"
        "from dermstack import cli, jobs\n"
        "pool = jobs.process_pool(1)\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "pool.submit(time.sleep, 120)\n"
        "time.sleep(0.5)\n"
        "cli._interrupted()\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    worker = int(proc.stdout.split()[0])
    assert proc.returncode == 130, proc.stderr[-2000:]
    try:
        psutil.Process(worker).wait(timeout=5)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        psutil.Process(worker).kill()
        raise AssertionError("the worker process outlived the interrupted dermstack") from None


# -- a damaged store on a rerun --------------------------------------------------------------------------
def test_a_damaged_embedding_store_on_a_rerun_names_the_stage_and_the_runs_remedy(tmp_path, test_weights):
    from dermstack.run import Run
    from extract_fixtures import TEST_MODEL

    cfg = RunConfig.from_dict({"data": {"format": "synthetic-isic2024", "lesions": 30, "test_lesions": 0, "image_size": 16},
                               "extract": {"backbones": [TEST_MODEL], "image_size": 32, "weights": {TEST_MODEL: str(test_weights)},
                                           "pca_components": 100}})
    run = Run(cfg, tmp_path / "run")
    table = run.ingest()
    run.features(table, run.extract(table))  # the PCA capped by the 30 rows: recorded in the stage record too
    capped = json.loads((tmp_path / "run" / "stages" / "features.json").read_text())["pca_capped"]
    assert capped == {"emb_test_efficientnet": {"components": 30, "requested": 100, "by": "the 30 training rows with an embedding"}}
    truncate(tmp_path / "run" / "embeddings.h5")
    with pytest.raises(DataError) as e:
        Run(cfg, tmp_path / "run").extract(table)
    said = str(e.value)
    assert e.value.file == str(tmp_path / "run" / "embeddings.h5") and "stage extract of the run in" in said
    assert "remove it and run again" in said and "extract run" not in said


def test_a_run_whose_extract_settings_changed_embeds_again_but_never_changes_a_store_it_did_not_write(tmp_path, test_weights):
    from dermstack.run import Run
    from extract_fixtures import TEST_MODEL

    def config(size: int) -> RunConfig:
        return RunConfig.from_dict({"data": {"format": "synthetic-isic2024", "lesions": 30, "test_lesions": 0, "image_size": 16},
                                    "extract": {"backbones": [TEST_MODEL], "image_size": size,
                                                "weights": {TEST_MODEL: str(test_weights)}}})

    def size() -> int:
        with h5py.File(tmp_path / "run" / "embeddings.h5") as f:
            return json.loads(f[TEST_MODEL].attrs["recipe"])["data_config"]["input_size"][-1]

    run = Run(config(32), tmp_path / "run")
    table = run.ingest()
    run.extract(table)
    Run(config(48), tmp_path / "run").extract(table)
    assert size() == 48
    (tmp_path / "run" / "stages" / "extract.json").unlink()  # now a store no stage of this run wrote
    with pytest.raises(DataError, match="made with other settings"):
        Run(config(32), tmp_path / "run").extract(table)
    assert size() == 48


# -- records and model.json are data: a name in them never becomes a path out of the run ------------------
def test_a_record_naming_a_file_outside_the_run_never_removes_or_reads_it(finished, tmp_path):
    cfg, original = finished
    run = tmp_path / "box" / "run"
    shutil.copytree(original, run)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (tmp_path / "evil.json").write_text("{not json")
    record = json.loads((run / "stages" / "run.json").read_text())
    record["artifacts"]["../../precious.txt"] = {"bytes": 4, "sha256": "0" * 64}
    record["unverified"].append(str(precious))
    record["stages"]["../../evil"] = "fingerprint"
    (run / "stages" / "run.json").write_text(json.dumps(record))
    r = invoke("submit", run, "--format", "isic2024", "--out", tmp_path / "s.csv")
    assert r.exit_code == 2 and "evil" in r.output and str(tmp_path / "evil.json") not in r.output, r.output
    assert invoke("run", cfg, "--out", run, "--force").exit_code == 0  # a rerun removes what run.json lists: not this
    assert precious.read_text() == "mine"


@pytest.mark.parametrize("field,value", [("name", "../lightgbm"), ("members", ["../../x"]), ("cnn_views", "/etc"),
                                         ("name", "a\x00b"), ("members", ["y" * 300])])
def test_a_model_json_naming_a_path_is_refused(finished, tmp_path, field, value):
    from dermstack.saved import read_spec

    _, original = finished
    d = tmp_path / "mean"
    shutil.copytree(original / "models" / "mean", d)
    spec = json.loads((d / "model.json").read_text())
    if field == "name":
        spec["name"] = value
    else:
        spec["needs"][field] = value
    (d / "model.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="is not a model folder's name") as e:
        read_spec(d)
    assert e.value.file == str(d / "model.json")
