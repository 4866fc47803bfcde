"""`dermstack compare`: runs paired on the same rows and folds through clinical.paired_bootstrap,
Holm over the runs, per-subgroup differences, refusals of runs that cannot be paired."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from dermstack import clinical
from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.predictions import Predictions
from dermstack.reports.compare import compare_runs, holm, load_sides
from dermstack.task import TaskSpec
from reports.multiclass_run import CONFIG as SIGNAL_CONFIG
from reports.multiclass_run import PreparedRun, signal_table
from test_bad_inputs import run_cli
from tiny_runs import booster

SYNTH = {"lesions": 300, "test_lesions": 5, "positive_rate": 0.15, "image_size": 8}


def binary_run(tiny, data: dict, n_splits: int = 3, engineered: bool = False, kind: str = "lightgbm"):
    return tiny.run(data=data, cv={"n_splits": n_splits, "seed": 42}, models=[booster(kind, 15)],
                    features={"embedding": False, "image": False, "engineered": engineered})


@pytest.fixture(scope="module")
def binary_runs(tiny):
    """meta: metadata only; eng: + engineered features; xgb: XGBoost; other_folds: 4 folds, not 3."""
    meta = binary_run(tiny, SYNTH)
    data = {"format": "isic2024", "path": str(meta / "data")}
    return {"meta": meta, "eng": binary_run(tiny, data, engineered=True),
            "xgb": binary_run(tiny, data, kind="xgboost"), "other_folds": binary_run(tiny, data, n_splits=4)}


def oof(run_dir, model, ids, classes):
    return Predictions.read(run_dir / "oof.parquet").for_model(model).matrix(ids, classes)


def test_two_runs_are_paired_through_the_metrics_json_bootstrap(binary_runs, tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "compare", str(binary_runs["meta"]), str(binary_runs["eng"]),
                        "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    got = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    table = LesionTable.read(binary_runs["meta"] / "lesions.parquet")
    task = TaskSpec.from_table(table, "binary")
    patient = pl.DataFrame({"image_id": task.image_ids}).join(table.df, on="image_id", how="left",
                                                              maintain_order="left")["patient_id"]
    units = np.array([f"patient_id:{p}" for p in patient])
    a, b = (oof(binary_runs[r], "lightgbm", task.image_ids, task.classes) for r in ("meta", "eng"))
    assert got["unit"] == "patient_id" and got["n_rows"] == len(task.image_ids) and got["metrics"] == ["pauc_tpr80", "roc_auc"]
    (c,) = got["comparisons"]
    for m in ("pauc_tpr80", "roc_auc"):
        want = clinical.paired_bootstrap(task.y, b, a, units, m, n_boot=200, seed=0)
        e = c["metrics"][m]
        assert e["difference"] == pytest.approx(want["diff"]) and e["p_value"] == pytest.approx(want["p_value"])
        assert e["ci95"] == pytest.approx([want["ci_low"], want["ci_high"]]) and e["p_holm"] == pytest.approx(e["p_value"])
    metrics_json = json.loads((binary_runs["eng"] / "metrics.json").read_text())
    assert c["metrics"]["pauc_tpr80"]["value"] == pytest.approx(metrics_json["primary_ci"]["value"])
    attributes = {r["attribute"] for r in c["subgroups"]}
    assert {"sex", "age"} <= attributes and any(a.startswith("site") for a in attributes)
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert html.index('id="summary"') < html.index('id="subgroups0"') and "http" not in html.split("<body>")[1]
    assert f"{c['metrics']['pauc_tpr80']['difference']:+.3f}" in html


def test_subgroup_differences_are_paired_bootstraps_of_the_group_rows(binary_runs):
    sides = load_sides([binary_runs["meta"], binary_runs["eng"]], [])
    got = compare_runs(sides, n_boot=50)
    run = sides[0].run
    ids = run.task.image_ids
    a, b = (oof(binary_runs[r], "lightgbm", ids, run.task.classes) for r in ("meta", "eng"))
    sex = run.train["sex"].fill_null("(missing)").to_numpy()
    units = np.array([f"patient_id:{p}" for p in run.train["patient_id"]])
    row = next(r for r in got["comparisons"][0]["subgroups"] if r["attribute"] == "sex" and r["metric"] == "roc_auc"
               and r["group"] != "(missing)")
    keep = sex == row["group"]
    want = clinical.paired_bootstrap(run.task.y[keep], b[keep], a[keep], units[keep], "roc_auc", n_boot=50, seed=0)
    assert row["n"] == keep.sum() and row["difference"] == pytest.approx(want["diff"])
    assert row["ci95"] == pytest.approx([want["ci_low"], want["ci_high"]])


def test_three_runs_get_holm_corrected_p_values(binary_runs):
    got = compare_runs(load_sides([binary_runs["meta"], binary_runs["eng"], binary_runs["xgb"]], []), n_boot=50)
    assert [c["model"] for c in got["comparisons"]] == ["lightgbm", "xgboost"]
    for m in got["metrics"]:
        p = [c["metrics"][m]["p_value"] for c in got["comparisons"]]
        assert [c["metrics"][m]["p_holm"] for c in got["comparisons"]] == pytest.approx(holm(p))


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])
    out = holm([0.02, float("nan"), 0.9])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.9)


def test_other_folds_and_unknown_models_are_refused_with_exit_2(binary_runs, tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "compare", str(binary_runs["meta"]), str(binary_runs["other_folds"]),
                        "--out", str(tmp_path / "x"))
    assert code == 2 and "different FoldPlans" in err and "3 folds, seed 42 vs 4 folds" in err and "Traceback" not in err
    code, err = run_cli(monkeypatch, capsys, "compare", str(binary_runs["meta"]), str(binary_runs["eng"]),
                        "--model", "catboost", "--out", str(tmp_path / "x"))
    assert code == 2 and "no model 'catboost'" in err
    assert not (tmp_path / "x").exists()


#: the signal run's config with one small LightGBM (``leaves`` changes the model, not the folds)
CONFIG = SIGNAL_CONFIG.split("[[models]]")[0] + """[[models]]
kind = "lightgbm"
params = {{ n_estimators = 20, threads = 1, num_leaves = {leaves} }}
"""


def prepared(root, name: str, task: str, leaves: int = 7, drop: int = 0):
    (root / f"{name}.toml").write_text(CONFIG.format(task=task, leaves=leaves))
    table = signal_table(task)
    table.df = table.df.slice(drop)
    PreparedRun(RunConfig.from_toml(root / f"{name}.toml"), root / name, table).execute()
    return root / name


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_multiclass_and_multilabel_runs_compare_and_other_rows_are_refused(task, tmp_path, monkeypatch, capsys):
    a, b = prepared(tmp_path, "a", task), prepared(tmp_path, "b", task, leaves=3)
    got = compare_runs(load_sides([a, b], []), n_boot=30)
    assert got["metrics"] == ["macro_f1", "macro_roc_auc"]
    e = got["comparisons"][0]["metrics"]["macro_f1"]
    assert e["ci95"][0] <= e["difference"] <= e["ci95"][1] or np.isclose(e["difference"], e["ci95"]).any()
    assert {"skin tone (skin_tone)", "sex"} <= {r["attribute"] for r in got["comparisons"][0]["subgroups"]}
    if task == "multilabel":
        return
    fewer = prepared(tmp_path, "fewer", task, drop=8)
    code, err = run_cli(monkeypatch, capsys, "compare", str(a), str(fewer), "--out", str(tmp_path / "x"))
    assert code == 2 and "different training rows (8 only in" in err
