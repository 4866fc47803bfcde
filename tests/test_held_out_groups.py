"""`[cv] group` and `[cv] leave_one_group_out`: FoldPlans that hold out whole sites as well as whole
patients, their refusals, a fold file checked against the groups, and each group's figures in metrics.json."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from dermstack import clinical
from dermstack.atomic import jsonable
from dermstack.clinical_report import clinical_metrics
from dermstack.config import RunConfig
from dermstack.data.folds import CV_GROUP, FoldPlan
from dermstack.data.groups import MAX_HELD_OUT_GROUPS, MISSING
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError, DataError
from dermstack.task import TaskSpec
from lesion_tables import lesion_table
from test_bad_inputs import run_cli
from tiny_runs import booster


def sites_table(n_patients: int = 24, per_patient: int = 3, sites=("A", "B", "C", "D"), seed: int = 0, **extra) -> pl.DataFrame:
    """Patients each at one site (round robin), a few lesions each, about a third malignant."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    patient = [i // per_patient for i in range(n)]
    cols = {"image_id": [f"img{i:03d}" for i in range(n)], "lesion_id": [f"L{i}" for i in range(n)],
            "patient_id": [f"P{p:02d}" for p in patient], "site": [sites[p % len(sites)] for p in patient],
            "target": (np.arange(n) % 3 == 0).astype(int).tolist(), "age_approx": rng.uniform(20, 80, n).tolist()}
    return pl.DataFrame(cols | extra)


def whole(plan: FoldPlan, table, column: str) -> bool:
    """Every value of ``column`` of the table's rows sits in one fold."""
    df = table.train.select("image_id", column).join(plan.folds.select("image_id", "fold"), on="image_id")
    return bool((df.group_by(column).agg(pl.col("fold").n_unique())["fold"] == 1).all())


def test_grouped_k_fold_keeps_every_site_and_every_patient_whole(tmp_path):
    t = lesion_table(sites_table(sites=tuple("ABCDEFGH")).to_dict(as_series=False))
    plan = FoldPlan.make(t, n_splits=4, seed=3, group="site")
    assert whole(plan, t, "site") and whole(plan, t, "patient_id") and plan.n_splits == 4
    assert plan.grouping == {"column": "site", "leave_one_group_out": False, "groups": 8, "merged": [], "missing": 0}
    assert sorted(plan.folds[CV_GROUP].unique().to_list()) == list("ABCDEFGH")
    plan.write(tmp_path / "folds.parquet")
    back = FoldPlan.read(tmp_path / "folds.parquet")
    assert back.grouping == plan.grouping and back.same_split(plan)
    assert back.held_out_groups(["img004", "img000"]).tolist() == ["B", "A"]
    assert FoldPlan.make(t, n_splits=4).held_out_groups(["img000"]) is None  # patient grouping alone


def test_leave_one_group_out_holds_out_exactly_one_group_per_fold():
    t = lesion_table(sites_table().to_dict(as_series=False))
    plans = [FoldPlan.make(t, n_splits=n, seed=s, group="site", leave_one_group_out=True) for n, s in ((5, 1), (2, 9))]
    plan = plans[0]
    assert plan.n_splits == 4 and plan.seed is None and plans[1].same_split(plan)  # n_splits and seed unused
    per_fold = plan.folds.group_by("fold").agg(pl.col(CV_GROUP).unique())
    assert sorted(per_fold[CV_GROUP].list.len().to_list()) == [1, 1, 1, 1]
    assert dict(zip(per_fold["fold"], per_fold[CV_GROUP].list.first())) == {0: "A", 1: "B", 2: "C", 3: "D"}
    assert plan.grouping["leave_one_group_out"] and whole(plan, t, "patient_id")


def test_a_patient_at_two_sites_merges_them_and_says_so(caplog):
    df = sites_table().with_columns(  # patient P01 (site B) has one lesion recorded at site C
        site=pl.when(pl.col("image_id") == "img005").then(pl.lit("C")).otherwise(pl.col("site")))
    t = lesion_table(df.to_dict(as_series=False))
    plan = FoldPlan.make(t, group="site", leave_one_group_out=True)
    assert plan.n_splits == 3 and whole(plan, t, "patient_id") and whole(plan, t, "site")
    assert plan.grouping["merged"] == [{"group": "B + C", "values": ["B", "C"], "by": "patient_id", "patients": 1,
                                         "examples": ["P01"]}]
    assert set(plan.folds[CV_GROUP].unique().to_list()) == {"A", "B + C", "D"}
    assert "held out together as one group 'B + C'" in caplog.text


def test_rows_without_a_value_form_their_own_group():
    df = sites_table().with_columns(site=pl.when(pl.col("patient_id") == "P03").then(None).otherwise(pl.col("site")))
    plan = FoldPlan.make(lesion_table(df.to_dict(as_series=False)), group="site", leave_one_group_out=True)
    assert plan.grouping["missing"] == 3 and MISSING in plan.folds[CV_GROUP].to_list() and plan.n_splits == 5


@pytest.mark.parametrize("change, says", [
    ({"site": "A"}, "every training row is in one group ('A')"),
    ({"site_of": lambda p: f"S{p}"}, f"more than the {MAX_HELD_OUT_GROUPS} that leave-one-group-out takes"),
    ({"no_positives_at": "D"}, "1 group(s) have only one class: 'D' (18 rows, 0 positive)"),
])
def test_leave_one_group_out_refuses_groups_it_cannot_hold_out(change, says):
    df = sites_table()
    if "site" in change:
        df = df.with_columns(site=pl.lit(change["site"]))
    if "site_of" in change:
        df = df.with_columns(site=pl.col("patient_id").str.slice(1).cast(pl.Int32).map_elements(change["site_of"], pl.String))
    if "no_positives_at" in change:
        df = df.with_columns(target=pl.when(pl.col("site") == change["no_positives_at"]).then(0).otherwise(pl.col("target")))
    with pytest.raises(DataError) as err:
        FoldPlan.make(lesion_table(df.to_dict(as_series=False)), group="site", leave_one_group_out=True)
    assert says in str(err.value) and "column 'site'" in str(err.value)


def test_small_groups_are_warned_about_and_grouped_k_fold_needs_enough_groups(caplog):
    t = lesion_table(sites_table().to_dict(as_series=False))
    FoldPlan.make(t, group="site", leave_one_group_out=True)
    assert "small held-out group(s) 'A' (18 rows, 6 positive)" in caplog.text
    with pytest.raises(DataError, match=r"4 groups \(held-out groups \(\[cv\] group = 'site'.*set \[cv\] leave_one_group_out = true"):
        FoldPlan.make(t, n_splits=5, group="site")


def test_a_group_column_must_exist_and_not_be_the_label():
    t = lesion_table(sites_table().to_dict(as_series=False))
    with pytest.raises(ConfigError, match=r"\[cv\] group = 'stie': the lesion table has no such column \(did you mean \"site\"\?\)"):
        FoldPlan.make(t, group="stie")
    with pytest.raises(ConfigError, match="the label and row bookkeeping cannot group the folds"):
        FoldPlan.make(t, group="target")


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_every_task_kind_groups_and_holds_out(task):
    df = sites_table()
    labels = [["nv", "mel", "bcc"][i % 3] for i in range(df.height)]
    df = df.with_columns(label=pl.Series(labels))
    if task == "multilabel":
        df = df.with_columns(*(pl.Series(f"y_{c}", [int(v == c) for v in labels]) for c in ("nv", "mel", "bcc")))
    t = lesion_table(df.to_dict(as_series=False))
    if task == "multilabel":
        t = LesionTable(t.df, dataclasses.replace(t.meta, classes=["nv", "mel", "bcc"]))
        assert t.class_columns
    for logo in (False, True):
        plan = FoldPlan.make(t, n_splits=2, group="site", task=task, leave_one_group_out=logo)
        assert whole(plan, t, "site") and plan.n_splits == (4 if logo else 2)


def test_a_fold_file_must_keep_the_groups_whole(tmp_path):
    t = lesion_table(sites_table().to_dict(as_series=False))
    sites = pl.DataFrame({"patient_id": [f"P{p:02d}" for p in range(24)], "fold": [p % 2 for p in range(24)]})
    sites.write_csv(tmp_path / "by_site.csv")  # patient p is at site "ABCD"[p % 4]: sites A, C in fold 0; B, D in 1
    plan = FoldPlan.from_file(t, tmp_path / "by_site.csv", group="site")
    assert plan.grouping["column"] == "site" and plan.source["key"] == "patient_id" and whole(plan, t, "site")
    sites.with_columns(fold=pl.Series([p % 3 for p in range(24)])).write_csv(tmp_path / "mixed.csv")
    with pytest.raises(DataError, match=r"mixed.csv, column 'site': the fold file splits the held-out group 'A'"):
        FoldPlan.from_file(t, tmp_path / "mixed.csv", group="site")


def test_config_refuses_leave_one_group_out_without_a_group_or_with_fixed_folds():
    for cv, says in (({"leave_one_group_out": True}, "needs [cv] group"),
                     ({"leave_one_group_out": True, "group": "site", "folds": "f.csv"}, "a fold file fixes the folds"),
                     ({"leave_one_group_out": True, "group": "site", "repeats": 2}, "every repeat would be the same")):
        with pytest.raises(ConfigError) as err:
            RunConfig.from_dict({"cv": cv})
        assert says in str(err.value)
    assert RunConfig.from_dict({"cv": {"group": "site", "repeats": 2}}).cv.group == "site"  # grouped K-fold repeats fine


def test_stage_cli_makes_the_grouped_plan(tmp_path, monkeypatch, capsys):
    t = lesion_table(sites_table().to_dict(as_series=False))
    t.write(tmp_path / "lesions.parquet")
    code, _ = run_cli(monkeypatch, capsys, "data", "folds", str(tmp_path / "lesions.parquet"), "--group", "site",
                      "--leave-one-group-out", "--out", str(tmp_path / "plan.parquet"))
    assert code == 0
    assert FoldPlan.read(tmp_path / "plan.parquet").same_split(FoldPlan.make(t, group="site", leave_one_group_out=True))
    code, err = run_cli(monkeypatch, capsys, "data", "folds", str(tmp_path / "lesions.parquet"), "--group", "nope",
                        "--out", str(tmp_path / "plan2.parquet"))
    assert code == 2 and "no such column" in err and "Traceback" not in err


def test_held_out_groups_block_gives_each_groups_figures_for_every_model():
    t = lesion_table(sites_table().to_dict(as_series=False))
    task = TaskSpec.from_table(t, "binary")
    plan = FoldPlan.make(t, group="site", leave_one_group_out=True)
    rng = np.random.default_rng(1)
    scores = {"a": task.y * 0.4 + rng.random(len(task.y)), "b": rng.random(len(task.y))}
    h = clinical_metrics(t, task, scores, "a", plan, n_boot=30)["held_out_groups"]
    assert {k: h[k] for k in ("column", "leave_one_group_out", "n_groups", "final", "metrics", "unit")} == {
        "column": "site", "leave_one_group_out": True, "n_groups": 4, "final": "a", "metrics": ["pauc_tpr80", "roc_auc"],
        "unit": "patient_id"}
    assert [g["group"] for g in h["groups"]] == ["A", "B", "C", "D"] and [g["fold"] for g in h["groups"]] == [0, 1, 2, 3]
    names = plan.held_out_groups(task.image_ids)
    for g in h["groups"]:
        rows = names == g["group"]
        assert g["n"] == rows.sum() and g["n_positive"] == task.y[rows].sum() and g["small"] and g["classes"] is None
        assert set(g["models"]) == {"a", "b"}
        fig = g["models"]["a"]["roc_auc"]
        ref = clinical.metric_bootstrap(task.y[rows], scores["a"][rows], t.train["patient_id"].to_numpy()[rows],
                                        "roc_auc", 30, 0)
        assert fig["value"] == pytest.approx(ref["value"]) and fig["ci95"] == pytest.approx([ref["ci_low"], ref["ci_high"]])
    assert all(len(g["at_thresholds"]) == 2 for g in h["groups"])
    json.dumps(jsonable(h), allow_nan=False)  # what metrics.json writes


def write_run(tiny, tmp_path, **cv) -> None:
    """run.toml: two boosters on the synthetic ISIC 2024 folder ``tmp_path/data`` grouped by site, ``cv`` laid over."""
    tiny.write(tmp_path / "run.toml", [booster("lightgbm", 15), booster("xgboost", 15)],
               data={"format": "isic2024", "path": str(tmp_path / "data")}, cv={"group": "attribution", **cv},
               features={"embedding": False, "image": False}, ensemble={"method": "mean"}, clinical={"delta": 0.1})


@pytest.mark.slow
def test_a_run_holds_out_each_site_and_reports_it(tiny, tmp_path, capsys):
    """`dermstack run` with `[cv] group = "attribution"`: leave-one-group-out folds shared by every model,
    metrics.json `held_out_groups` naming each site with every model's figures, the printout and the
    report; switching to grouped K-fold re-runs the folds and the models."""
    from dermstack.data.readers import ingest
    from dermstack.data.synth import synthesize_isic2024
    from dermstack.reports import build_report
    from dermstack.run import Run, print_metrics

    synthesize_isic2024(tmp_path / "data", lesions=200, test_lesions=5, image_size=8, positive_rate=0.15, workers=1)
    sites = sorted(ingest("isic2024", tmp_path / "data")[0].train["attribution"].unique().to_list())
    write_run(tiny, tmp_path, leave_one_group_out=True)
    out = tmp_path / "out"
    metrics = Run(RunConfig.from_toml(tmp_path / "run.toml"), out).execute()
    plan = FoldPlan.read(out / "folds.parquet")
    assert plan.n_splits == len(sites) == 4 and plan.grouping["column"] == "attribution"
    record = json.loads((out / "stages" / "folds.json").read_text())
    assert record["config"]["cv.group"] == "attribution" and record["config"]["cv.leave_one_group_out"] is True
    assert "cv.n_splits" not in record["config"]
    on_disk = json.loads((out / "metrics.json").read_text())
    h = on_disk["held_out_groups"]
    assert sorted(g["group"] for g in h["groups"]) == sites and h["final"] == on_disk["oof_model"] == "mean"
    assert all(set(g["models"]) == {"lightgbm", "xgboost", "mean", "calibrated"} for g in h["groups"])
    assert all(g["models"]["mean"]["pauc_tpr80"]["ci95"][0] is not None for g in h["groups"])
    assert on_disk["clinical"]["specificity_at_sensitivity_80"]["guaranteed"]["delta"] == 0.1
    print_metrics(metrics)
    printed = capsys.readouterr().out
    assert "held-out groups (attribution, leave-one-group-out, 4 groups)" in printed and all(s in printed for s in sites)
    assert "guaranteed with probability >= 0.9" in printed

    build_report(out, out / "report", shap_sample=50)
    page = (out / "report" / "index.html").read_text()
    assert 'id="held-out"' in page and "Held-out groups: attribution (4 groups, one held out per fold)" in page
    assert "Sensitivity with a guarantee (P &ge; 0.9, delta 0.1, " in page

    write_run(tiny, tmp_path, n_splits=2, repeats=2)
    before = json.loads((out / "stages" / "model-lightgbm.json").read_text())["finished"]
    Run(RunConfig.from_toml(tmp_path / "run.toml"), out).execute()
    plan = FoldPlan.read(out / "folds.parquet")
    assert plan.n_splits == 2 and not plan.grouping["leave_one_group_out"]
    assert json.loads((out / "stages" / "model-lightgbm.json").read_text())["finished"] >= before
    h = json.loads((out / "metrics.json").read_text())["held_out_groups"]
    assert not h["leave_one_group_out"] and sorted(g["group"] for g in h["groups"]) == sites
    assert sorted({g["fold"] for g in h["groups"]}) == [0, 1]
    child = FoldPlan.read(out / "repeats" / "1" / "folds.parquet")  # a repeat: new fold seed, sites still whole
    assert child.seed == plan.seed + 1 and child.grouping["column"] == "attribution"
    assert (child.folds.group_by(CV_GROUP).agg(pl.col("fold").n_unique())["fold"] == 1).all()


def test_many_groups_get_values_without_intervals(monkeypatch):
    import dermstack.clinical_report as report

    monkeypatch.setattr(report, "MAX_GROUP_INTERVALS", 3)
    t = lesion_table(sites_table().to_dict(as_series=False))
    task = TaskSpec.from_table(t, "binary")
    s = task.y * 0.5 + np.random.default_rng(0).random(len(task.y))
    h = clinical_metrics(t, task, {"a": s}, "a", FoldPlan.make(t, n_splits=2, group="site"), n_boot=30)["held_out_groups"]
    assert h["n_boot"] == 0 and "4 groups: figures without intervals" in h["note"]
    g = h["groups"][0]
    rows = FoldPlan.make(t, n_splits=2, group="site").held_out_groups(task.image_ids) == g["group"]
    assert g["models"]["a"]["roc_auc"] == {"value": pytest.approx(clinical.metric_bootstrap(
        task.y[rows], s[rows], np.arange(rows.sum()), "roc_auc", 1, 0)["value"]), "ci95": [None, None]}


def test_multiclass_held_out_groups_use_macro_metrics_and_class_counts():
    df = sites_table().with_columns(label=pl.Series([["nv", "mel", "bcc"][i % 3] for i in range(72)]))
    t = lesion_table(df.to_dict(as_series=False))
    task = TaskSpec.from_table(t, "multiclass")
    s = np.random.default_rng(2).dirichlet(np.ones(3), len(task.y)) + np.eye(3)[task.y] * 0.3
    out = clinical_metrics(t, task, {"m": s}, "m", FoldPlan.make(t, task="multiclass", group="site",
                                                                 leave_one_group_out=True), n_boot=20)
    h = out["held_out_groups"]
    assert h["metrics"] == ["macro_f1", "macro_roc_auc"] and len(h["groups"]) == 4
    g = h["groups"][0]
    assert g["n_positive"] is None and g["classes"] == {c: 6 for c in task.classes} and "at_thresholds" not in g
    assert g["models"]["m"]["macro_f1"]["value"] is not None and len(g["models"]["m"]["macro_roc_auc"]["ci95"]) == 2
