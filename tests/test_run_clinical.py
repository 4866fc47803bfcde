"""metrics.json's clinical blocks (primary_ci, clinical, thresholds, comparison) and `[cv] repeats`
wired into `dermstack run`, checked against dermstack.clinical on oof.parquet and by brute force."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from dermstack import clinical
from dermstack import metrics as M
from dermstack.clinical_report import submitted_model
from dermstack.config import RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.predictions import Predictions
from dermstack.run import Run, print_metrics
from dermstack.rundir import check_current
from dermstack.task import TaskSpec
from tiny_runs import TinyRuns, booster

#: lightgbm and xgboost, their mean, on 300 synthetic lesions without embeddings
RUN = {"data": {"lesions": 300, "positive_rate": 0.12}, "features": {"embedding": False},
       "models": [booster("lightgbm", 15), booster("xgboost", 15)], "ensemble": {"method": "mean"}}


def run_into(root, repeats: int):
    config = TinyRuns.write(root / "run.toml", **RUN, cv={"repeats": repeats})
    return Run(RunConfig.from_toml(config), root / "out").execute()


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clinical_run")
    return run_into(root, repeats=2), root


def oof_scores(run_dir, model):
    table = LesionTable.read(run_dir / "lesions.parquet")
    task = TaskSpec.from_table(table, "binary")
    s = Predictions.read(run_dir / "oof.parquet").for_model(model).matrix(task.image_ids, task.classes)
    patient = pl.DataFrame({"image_id": task.image_ids}).join(table.df, on="image_id", how="left",
                                                              maintain_order="left")["patient_id"].to_numpy()
    return task.y, task.squeeze(s), patient


def test_binary_run_reports_operating_points_equal_to_clinical_on_the_oof_scores(binary_run):
    metrics, root = binary_run
    run_dir = root / "out"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    final = on_disk["oof_model"]
    y, s, patient = oof_scores(run_dir, final)
    ci = on_disk["primary_ci"]
    assert ci["unit"] == "patient_id" and ci["model"] == final and ci["n_boot"] == 200
    assert ci["value"] == pytest.approx(on_disk["oof"]["pauc_tpr80"])
    assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    units = np.array([f"patient_id:{p}" for p in patient])
    ref = clinical.operating_points(y, s, units, n_boot=200, seed=0)
    op = on_disk["clinical"]
    for name in ("flagged_per_cancer_at_sensitivity_80", "top_15_sensitivity", "sensitivity_at_specificity_90",
                 "sensitivity_at_specificity_95", "specificity_at_sensitivity_80", "specificity_at_sensitivity_95"):
        for key in ("value", "ci_low", "ci_high", "n_valid"):
            assert op[name][key] == pytest.approx(ref[name][key]), (name, key)
    # brute force: flag lesions from the highest score down, whole tie groups, until 80 % of cancers are found
    for t in np.unique(s)[::-1]:
        flagged = s >= t
        if y[flagged].sum() >= 0.8 * y.sum():
            break
    assert op["flagged_per_cancer_at_sensitivity_80"]["value"] == pytest.approx(flagged.sum() / y[flagged].sum())
    # the comparison: every base model and the calibrated one against the final, on shared resamples
    comp = on_disk["comparison"]
    assert comp["reference"] == final and comp["metric"] == "pauc_tpr80"
    assert set(comp["models"]) == ({*on_disk["models"], "calibrated"} - {final})
    for name, c in comp["models"].items():
        y2, s2, _ = oof_scores(run_dir, name)
        want = clinical.paired_bootstrap(y, s2, s, units, "pauc_tpr80", n_boot=200, seed=0)
        assert c["diff"] == pytest.approx(want["diff"]) and c["p_value"] == pytest.approx(want["p_value"])
        assert c["value_a"] == pytest.approx(on_disk["models"].get(name, {}).get("pauc_tpr80", c["value_a"]))


def test_final_against_itself_is_no_difference(binary_run):
    from dermstack.clinical_report import compare_models

    _, root = binary_run
    y, s, patient = oof_scores(root / "out", "mean")
    out = compare_models(y, {"mean": s}, s, patient, "pauc_tpr80", n_boot=50)["models"]["mean"]
    assert out["diff"] == 0 and out["mean_diff"] == 0 and out["p_value"] == 1.0


def test_repeats_refit_every_model_on_new_folds_in_child_runs(binary_run, capsys):
    metrics, root = binary_run
    run_dir = root / "out"
    rep = metrics["repeats"]
    assert rep["n"] == 2 and rep["fold_seeds"] == [42, 43] and rep["metric"] == "pauc_tpr80"
    child = run_dir / "repeats" / "1"
    check_current(run_dir)
    check_current(child)
    child_metrics = json.loads((child / "metrics.json").read_text())
    assert "clinical" not in child_metrics and not (child / "report").exists()
    assert RunConfig.from_toml(child / "config.toml").cv.seed == 43
    assert not pl.read_parquet(child / "folds.parquet").equals(pl.read_parquet(run_dir / "folds.parquet"))
    assert (child / "features.parquet").stat().st_ino == (run_dir / "features.parquet").stat().st_ino
    for name in [*metrics["models"], "final"]:
        values = rep["models"][name]["values"]
        assert len(values) == 2
        assert rep["models"][name]["mean"] == pytest.approx(np.mean(values))
        assert rep["models"][name]["std"] == pytest.approx(np.std(values, ddof=1))
    assert rep["models"]["lightgbm"]["values"] == pytest.approx(
        [metrics["models"]["lightgbm"]["pauc_tpr80"], child_metrics["models"]["lightgbm"]["pauc_tpr80"]])
    print_metrics(metrics)
    out = capsys.readouterr().out
    assert "flagged per cancer" in out and "CV repeats" in out and "95% CI" in out


def test_a_changed_repeats_reruns_only_the_repeats(binary_run, caplog):
    import logging

    _, root = binary_run
    with caplog.at_level(logging.INFO, logger="dermstack"):
        metrics = run_into(root, repeats=1)
    ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ") and "done in" in r.getMessage()]
    assert ran == [], ran
    assert "repeats" not in metrics and not (root / "out" / "repeats").exists()
    check_current(root / "out")


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    from reports.multiclass_run import build_run

    return build_run(tmp_path_factory.mktemp("multiclass_clinical"), "multiclass")


def test_multiclass_run_reports_nested_thresholds(multiclass_run):
    from dermstack.data.folds import FoldPlan

    m = json.loads((multiclass_run / "metrics.json").read_text())
    assert "clinical" not in m and m["primary_ci"]["metric"] == "macro_f1"
    th = m["thresholds"]
    assert th["f1_after"] is not None and th["f1_before"] == pytest.approx(m["oof"]["macro_f1"])
    assert len(th["thresholds"]) == len(m["classes"]) == len(th["classes"])
    table = LesionTable.read(multiclass_run / "lesions.parquet")
    task = TaskSpec.from_table(table, "multiclass")
    s = Predictions.read(multiclass_run / "oof.parquet").for_model(m["oof_model"]).matrix(task.image_ids, task.classes)
    folds = FoldPlan.read(multiclass_run / "folds.parquet").fold_of(task.image_ids)
    ref = clinical.tune_thresholds(task.y, s, folds, "multiclass")
    assert th["f1_after"] == pytest.approx(ref["f1_after"]) and th["thresholds"] == pytest.approx(ref["thresholds"])
    # an independent macro F1 of the out-of-fold decisions
    pred = np.empty(len(task.y), int)
    for k, w in ref["fold_thresholds"].items():
        pred[folds == k] = (s[folds == k] * np.array(w)).argmax(axis=1)
    from sklearn.metrics import f1_score

    assert th["f1_after"] == pytest.approx(f1_score(task.y, pred, labels=range(len(task.classes)), average="macro"))
    assert set(m["comparison"]["models"]) == {*m["models"], "calibrated"} - {m["oof_model"]}
    assert M.macro_f1(task.y, s) == pytest.approx(m["primary_ci"]["value"])


@pytest.mark.slow
def test_report_shows_the_clinical_and_comparison_blocks(binary_run, tmp_path):
    from dermstack.reports.build import ReportSettings, _clinical_section, _comparison_section, build_report
    from dermstack.reports.rundata import RunData

    _, root = binary_run
    run_dir = root / "out"
    run_into(root, repeats=2)  # the repeats test before may have set repeats = 1
    html = build_report(run_dir, tmp_path / "report", settings=ReportSettings(shap_sample=60, n_boot=10)).read_text()
    m = json.loads((run_dir / "metrics.json").read_text())
    for title in ("Clinical operating points", "Model comparison", "2 cross-validation repeats"):
        assert title in html
    assert "flagged_per_cancer_at_sensitivity_80" in html and "51.57" in html
    assert f"{m['clinical']['top_15_sensitivity']['value']:.4g}" in html
    assert f"{m['comparison']['models']['calibrated']['p_value']:.4g}" in html
    old = RunData.load(run_dir)
    old.metrics = {"oof_model": m["oof_model"]}  # a run directory from before these blocks
    for sec in (_clinical_section(old), _comparison_section(old)):
        assert "metrics.json has no" in sec.render()


def test_report_of_a_multiclass_run_lists_the_thresholds(multiclass_run):
    from dermstack.reports.build import _clinical_section, _comparison_section
    from dermstack.reports.rundata import RunData

    run = RunData.load(multiclass_run)
    clin, comp = _clinical_section(run).render(), _comparison_section(run).render()
    assert "argmax(score * weight)" in clin and "fold 0" in clin and "metrics.json has no" not in clin + comp
    assert f"{run.metrics['thresholds']['f1_after']:.4g}" in clin


def test_top_15_needs_real_patient_ids(caplog):
    """Without patient ids each "patient" is one lesion, whose top 15 holds it: 1.0 by construction;
    the log names the unit resampled (it said "patient resamples" either way)."""
    from dermstack.clinical_report import clinical_metrics
    from lesion_tables import lesion_table

    rng = np.random.default_rng(0)
    n = 80
    y = (np.arange(n) % 4 == 0).astype(int)
    cols = {"image_id": [f"I{i}" for i in range(n)], "lesion_id": [f"L{i}" for i in range(n)], "target": y.tolist()}
    for with_patients in (False, True):
        if with_patients:
            cols["patient_id"] = [f"P{i % 8}" for i in range(n)]
        table = lesion_table(cols)
        task = TaskSpec.from_table(table, "binary")
        s = np.clip(task.y * 0.3 + rng.random(n) * 0.7, 0, 1)
        caplog.clear()
        with caplog.at_level("INFO", logger="dermstack.clinical_report"):
            out = clinical_metrics(table, task, {"m": s}, "m", FoldPlan.make(table, 4), n_boot=20)
        assert f"(20 bootstrap resamples of {'patient_id' if with_patients else 'lesion_id'})" in caplog.text
        top = out["clinical"]["top_15_sensitivity"]
        if with_patients:
            assert out["clinical"]["bootstrap"]["unit"] == "patient_id" and top["value"] == pytest.approx(
                clinical.top_k_sensitivity(task.y, s, cols["patient_id"], 15))
        else:
            assert top["value"] is None and "needs a patient_id on every row" in top["note"]
            assert out["clinical"]["sensitivity_at_specificity_90"]["value"] is not None  # the rest still computed


def test_the_summaries_name_the_final_model_as_submitted_when_calibration_chose_no_map():
    base = {"submission_model": "calibrated", "oof_model": "lightgbm"}
    assert submitted_model({**base, "calibration": {"method": "isotonic"}}) == "calibrated"
    assert submitted_model({**base, "calibration": {"method": "none"}}) == "lightgbm"
    assert submitted_model({"submission_model": "mean", "oof_model": "mean"}) == "mean"  # multiclass: no calibrated step
