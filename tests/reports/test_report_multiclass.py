"""Reports of real multiclass and multi-label runs (made by ``dermstack.run``): per-class SHAP that adds
up to each library's margins and finds each class's planted signal, the HTML report, and ``report explain``."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from multiclass_run import CLASSES, LIBRARIES, RARE, SIGNAL, build_run

from dermstack.boosting.explain import load_fold_boosters
from dermstack.cli import cli
from dermstack.crossfit import align_rows
from dermstack.reports.build import ReportSettings, build_report
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import ShapValues, explain_model

TASKS = ["multiclass", "multilabel"]
#: rows explained per model: a class- and fold-stratified sample (multiclass) and every row (multi-label)
SHAP_SAMPLE = {"multiclass": 240, "multilabel": None}
SECTIONS = ["summary", "overview", "clinical", "comparison", "curves", "shap-groups", "top-features", "dependence", "subgroups"]


@dataclass
class Case:
    task: str
    run_dir: Path
    report_dir: Path

    @property
    def run(self) -> RunData:
        return RunData.load(self.run_dir)


@pytest.fixture(scope="session")
def case(tmp_path_factory):
    """``case(task)``: the run of ``task`` and its report, each built once per session."""
    built: dict[str, Case] = {}

    def get(task: str) -> Case:
        if task not in built:
            root = tmp_path_factory.mktemp(task)
            run_dir = build_run(root, task)
            build_report(run_dir, root / "report", settings=ReportSettings(shap_sample=SHAP_SAMPLE[task], n_boot=10))
            built[task] = Case(task, run_dir, root / "report")
        return built[task]

    return get


def link(task: str, raw: np.ndarray) -> np.ndarray:
    """Scores from margins: softmax over classes (multiclass), a sigmoid per class (multi-label)."""
    if task == "multiclass":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-raw))


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("task", TASKS)
def test_shap_slices_add_up_to_each_class_margin(case, task, library):
    c = case(task)
    run = c.run
    classes = run.task.classes
    assert classes == CLASSES + ([RARE] if task == "multilabel" else [])
    ids = run.task.image_ids
    folds = run.folds.fold_of(ids)
    features = align_rows(run.features.df, ids)
    oof = run.scores(library)
    boosters = load_fold_boosters(c.run_dir / "models" / library)
    assert sorted(b.fold for b in boosters) == [0, 1, 2]
    raw = np.full((len(ids), len(classes)), np.nan)
    for b in boosters:
        mask = folds == b.fold
        rows = features.filter(pl.Series(mask))
        values, base = b.shap_values(rows)
        assert values.shape == (rows.height, len(b.columns), len(classes)) and base.shape == (rows.height, len(classes))
        raw[mask] = b.raw_output(rows)
        np.testing.assert_allclose(values.sum(axis=1) + base, raw[mask], atol=1e-4)
        # the explained margins are those of the OOF scores the run stored
        np.testing.assert_allclose(link(task, raw[mask]), oof[mask], atol=1e-5)
    # the report's stored values (one seed: the own fold's booster), one slice per class
    sv = ShapValues.read(c.report_dir / "shap" / f"{library}.npz")
    assert sv.classes == classes and sv.values.shape == (len(sv), len(sv.features), len(classes))
    pos = {i: k for k, i in enumerate(ids)}
    rows = np.array([pos[i] for i in sv.image_ids])
    np.testing.assert_array_equal(sv.folds, folds[rows])
    np.testing.assert_allclose(sv.values.sum(axis=1) + sv.base, raw[rows], atol=1e-3)  # values stored as float32
    # a test row is explained by every fold's booster, averaged, as the run predicts it
    test = run.features.df.filter(pl.col("split") == "test")
    tv = explain_model(library, boosters, test, np.full(test.height, -1), classes, progress=False)
    mean_raw = np.mean([b.raw_output(test) for b in boosters], axis=0)
    np.testing.assert_allclose(tv.values.sum(axis=1) + tv.base, mean_raw, atol=1e-4)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("task", TASKS)
def test_each_class_is_explained_by_its_signal_feature(case, task, library):
    sv = ShapValues.read(case(task).report_dir / "shap" / f"{library}.npz")
    top = sv.top_features_by_class(3)
    for cls, feature in SIGNAL.items():
        values, _ = sv.output(cls)
        mean_abs = dict(zip(sv.features, np.abs(values).mean(axis=0)))
        assert max(mean_abs, key=mean_abs.get) == feature, (cls, {f: round(float(v), 3) for f, v in mean_abs.items()})
        mine = top.filter(pl.col("class") == cls).sort("rank")
        assert mine["feature"][0] == feature and mine["mean_abs_shap"][0] == pytest.approx(mean_abs[feature])
        assert mine["mean_abs_shap"].is_sorted(descending=True)
    # the report lists every class's drivers, since its plots show one class
    html = (case(task).report_dir / "index.html").read_text()
    assert f"{library}: the five features of largest mean |SHAP| for each class" in html
    importance = pl.read_parquet(case(task).report_dir / "shap_importance.parquet").filter(pl.col("model") == library)
    assert set(importance["feature"].head(3)) == set(SIGNAL.values())  # |SHAP| summed over classes


def test_multiclass_sample_is_stratified_by_class(case):
    c = case("multiclass")
    run = c.run
    sv = ShapValues.read(c.report_dir / "shap" / "lightgbm.npz")
    assert abs(len(sv) - SHAP_SAMPLE["multiclass"]) <= 9 and len(np.unique(sv.image_ids)) == len(sv)
    label = dict(zip(run.task.image_ids, run.task.y))
    in_sample = np.bincount([label[i] for i in sv.image_ids], minlength=3) / len(sv)
    overall = np.bincount(run.task.y, minlength=3) / len(run.task.y)
    np.testing.assert_allclose(in_sample, overall, atol=0.02)


def test_rare_label_without_training_positives_explains_as_a_constant(case):
    """The fold whose training part has no positive of the rare class stores a constant score, not a
    booster: its rows get zero SHAP for that class and the constant's (clipped) logit as base."""
    c = case("multilabel")
    sv = ShapValues.read(c.report_dir / "shap" / "catboost.npz")
    constant = sorted((c.run_dir / "models" / "catboost").glob(f"fold*_seed0.{RARE}.constant.json"))
    assert len(constant) == 1
    fold = int(re.match(r"fold(\d+)_", constant[0].name).group(1))
    values, base = sv.output(RARE)
    mine = sv.folds == fold
    assert mine.any() and (~mine).any()
    assert np.all(values[mine] == 0) and np.all(base[mine] < -10)
    assert np.all(base[~mine] > -10)  # other folds: a trained booster, not the clipped constant


@pytest.mark.parametrize("task", TASKS)
def test_report_html_for_several_classes(case, task):
    c = case(task)
    run = c.run
    html = (c.report_dir / "index.html").read_text()
    for s in SECTIONS:
        assert f'<section id="{s}">' in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(v.startswith(("data:", "#")) for v in srcs)  # nothing loaded from disk or network
    assert re.findall(r"<script[^>]*>", html) == ["<script>"] and "http://" not in html and "https://" not in html
    assert ", ".join(run.task.classes) in html
    # curves: one view per class of the final model, and the argmax confusion matrix for multiclass only
    assert f"filled under mean: {CLASSES[0]}" in html
    assert ("<h3>Confusion matrix (argmax)</h3>" in html) == (task == "multiclass")
    ops = pl.read_parquet(c.report_dir / "operating_points.parquet").filter(pl.col("model") == "mean")
    assert set(ops["class"]) == set(run.task.classes)
    # SHAP: single-class plots show the table's positive class; shares over all rows (no "positives" subset)
    assert run.explained_class == "C"
    for library in LIBRARIES:
        assert f"{library}: SHAP per row (class C)" in html
    shares = pl.read_parquet(c.report_dir / "shap_groups.parquet")
    assert set(shares["model"]) == {*LIBRARIES, "final (mean)"} and set(shares["rows"]) == {"all"}
    for _, part in shares.group_by("model"):
        assert part["share"].sum() == pytest.approx(1.0)
    assert "age: age_approx" in html and "Age x site" in html
    # subgroups: the task's metrics per attribute, no positive counts
    sub = pl.read_parquet(c.report_dir / "subgroups.parquet")
    assert set(sub["metric"]) == {"macro_f1", "balanced_accuracy", "macro_roc_auc"}
    assert {"overall", "sex", "age", "image type", "site (anatom_site_general)", "skin tone (skin_tone)"} <= set(sub["attribute"])
    assert sub["n_pos"].null_count() == sub.height
    final = sub.filter((pl.col("model") == "mean") & (pl.col("metric") == "macro_f1") & (pl.col("kind") == "group"))
    assert final.filter(pl.col("attribute") == "sex")["n"].sum() == len(run.task.image_ids)
    assert "<figcaption>macro_f1</figcaption>" in html and "Model mean." in html
    metrics = pl.read_parquet(c.report_dir / "metrics.parquet")
    assert set(metrics["model"]) == {*LIBRARIES, "mean", "calibrated"}
    curves = json.loads((c.report_dir / "curves.json").read_text())
    for model in metrics["model"]:
        assert set(curves[model]) == set(run.task.classes)
        assert all(curves[model][cls]["roc_auc"] > 0.8 for cls in SIGNAL)  # the planted signal, one-vs-rest


@pytest.mark.slow
def test_cli_explain_one_multiclass_lesion(case, tmp_path):
    c = case("multiclass")
    lesions = pl.read_parquet(c.run_dir / "lesions.parquet")
    runner = CliRunner()
    for lesion in (lesions.filter(pl.col("split") == "train").row(5, named=True),
                   lesions.filter(pl.col("split") == "test").row(0, named=True)):
        res = runner.invoke(cli, ["report", "explain", str(c.run_dir), "--id", lesion["image_id"], "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
        page = (tmp_path / f"explain_{lesion['image_id']}.html").read_text()
        srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
        assert all(v.startswith(("data:", "#")) for v in srcs)
        # the final model's waterfall, then one per library (no lesion image)
        assert page.count("data:image/png;base64,") == 1 + len(LIBRARIES)
        assert page.index("final (mean): contributions add up to the probability of each class") < page.index("lightgbm: raw score")
        for library in LIBRARIES:
            assert f"{library}: raw score (log-odds) = base + contributions, class C" in page
        fold = "Out-of-fold: explained by the boosters of fold" if lesion["split"] == "train" else "Test lesion"
        assert fold in page
        for other in lesions.filter(pl.col("patient_id") == lesion["patient_id"])["image_id"]:
            assert other in page
