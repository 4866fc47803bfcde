"""The report directory, the CLI, the lesion explanation, and the page in a real (headless) browser."""
import json
import re

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from dermstack.cli import cli
from dermstack.reports import browser
from dermstack.reports.html import COLLAPSE_ROWS
from dermstack.reports.shap_ import ShapValues

SECTIONS = ["summary", "overview", "clinical", "comparison", "curves", "shap-groups", "top-features", "dependence", "subgroups"]


def assert_self_contained(html: str) -> None:
    """Sections in order, summary first; nothing loaded from disk or network; one inline script."""
    at = [html.find(f'<section id="{s}">') for s in SECTIONS]
    assert -1 not in at and at == sorted(at), dict(zip(SECTIONS, at))
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(v.startswith(("data:", "#")) for v in srcs)
    assert re.findall(r"<script[^>]*>", html) == ["<script>"]  # one inline script, no src
    assert "http://" not in html and "https://" not in html and "fetch(" not in html and "XMLHttpRequest" not in html


def assert_long_tables_collapsed(html: str) -> None:
    """Every table is sortable; one of more than COLLAPSE_ROWS rows sits in a closed <details>."""
    chunks = html.split("<table")
    assert len(chunks) > 3
    for before, chunk in zip(chunks, chunks[1:]):
        assert chunk.startswith(' class="sortable"')
        rows = chunk[:chunk.index("</table>")].count("<tr") - 1
        assert before.endswith("</summary>") == (rows > COLLAPSE_ROWS), (rows, before[-80:])


def test_report_files_and_self_contained_html(report_dir, run_dir):
    html = (report_dir / "index.html").read_text()
    assert_self_contained(html)
    assert_long_tables_collapsed(html)
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) >= 10
    summary = json.loads((report_dir / "summary.json").read_text())
    n_pos = int(pl.read_parquet(run_dir / "lesions.parquet").filter(pl.col("split") == "train")["target"].sum())
    for model in ("lightgbm", "xgboost", "catboost"):
        sv = ShapValues.read(report_dir / "shap" / f"{model}.npz")
        assert len(sv) == summary["shap_rows"][model] and len(sv) >= n_pos  # every positive plus sampled negatives
        assert "age_approx" in sv.features and sv.categories["sex"] == ["female", "male"]
    metrics = pl.read_parquet(report_dir / "metrics.parquet")
    assert set(metrics["model"]) == {"lightgbm", "xgboost", "catboost", "ensemble"}
    sub = pl.read_parquet(report_dir / "subgroups.parquet")
    assert {"skin tone (skin_tone)", "sex", "age", "site (anatom_site_general)", "image type"} <= set(sub["attribute"])
    ops = pl.read_parquet(report_dir / "operating_points.parquet")
    assert (ops.filter(pl.col("rule") == "specificity >= 0.95")["specificity"] >= 0.95).all()
    assert "age_approx x anatom_site_general" in html or "Age x site" in html


def test_summary_first_screen(report_dir, run_dir):
    """The summary reads the report's own numbers when metrics.json lacks the newer keys."""
    head = json.loads((report_dir / "summary.json").read_text())["first_screen"]
    html = (report_dir / "index.html").read_text()
    summary = html[html.index('<section id="summary">'):html.index('<section id="overview">')]
    metrics = pl.read_parquet(report_dir / "metrics.parquet").filter(pl.col("model") == "ensemble").row(0, named=True)
    train = pl.read_parquet(run_dir / "lesions.parquet").filter(pl.col("split") == "train")
    assert head["final_model"] == "ensemble" and head["rows"] == train.height and head["positives"] == train["target"].sum()
    assert head["primary"]["value"] == pytest.approx(metrics["pauc_tpr80"])
    assert head["primary"]["ci_low"] == pytest.approx(metrics["pauc_tpr80_ci_low"]) and head["primary"]["source"].startswith("report: 20 ")
    assert head["chosen"] is None and head["calibration"] is None and "Calibration</h3><p>not computed" in summary
    assert head["drivers"]["model"].startswith("final (") and 5 <= len(head["drivers"]["features"]) <= 8  # the final prediction explained
    assert [o["rule"] for o in head["operating_points"]["rows"]][-1] == "specificity >= 0.95"
    sub = pl.read_parquet(report_dir / "subgroups.parquet").filter(pl.col("model") == "ensemble")
    below = sub.filter((pl.col("kind") == "group") & (pl.col("metric") == "pauc_tpr80") & (pl.col("ci_high") < pl.col("overall")))
    assert [(r["attribute"], r["group"]) for r in head["below_overall"]] == list(zip(below["attribute"], below["group"]))
    (tone,) = head["skin_tone"]
    assert tone["attribute"] == "skin tone (skin_tone)" and {g["group"] for g in tone["groups"]} == {"12", "34", "56"}
    assert all(g["ci_low"] <= g["value"] <= g["ci_high"] for g in tone["groups"] if g["metric"] == "roc_auc")
    assert {g["metric"] for g in tone["gaps"]} == {"pauc_tpr80", "roc_auc"}
    assert "Fairness: skin tone (skin_tone)" in summary and "best - worst" in summary
    assert "<details>" not in summary  # no long table on the first screen


def test_summary_reads_newer_metrics_keys(report_dir, run_dir):
    """primary_ci, clinical, ensemble and calibration from metrics.json win over the report's own numbers."""
    from dermstack.reports.rundata import RunData
    from dermstack.reports.summary import headline, summary_section

    run = RunData.load(run_dir)
    run.metrics |= {
        "primary_ci": {"value": 0.1234, "ci_low": 0.1, "ci_high": 0.15, "n_boot": 500, "unit": "patients"},
        "clinical": {"sensitivity_at_specificity_90": {"value": 0.61, "ci_low": 0.5, "ci_high": 0.7, "n_valid": 480},
                     "bootstrap": {"n": 500, "unit": "patients"}},
        "ensemble": {"method": "auto", "chosen": "ensemble", "why": "highest nested-CV OOF pauc_tpr80"},
        "calibration": {"method": "platt", "chosen_by": "nested-CV Brier score", "bins": "10 equal-count bins",
                        "before": {"brier": 0.2, "ece": 0.05}, "after": {"brier": 0.19, "ece": 0.012}}}
    head = headline(run, pl.read_parquet(report_dir / "metrics.parquet"), pl.read_parquet(report_dir / "operating_points.parquet"),
                    {}, pl.read_parquet(report_dir / "subgroups.parquet"), 20)
    html = summary_section(head).render()
    assert "pauc_tpr80 0.123 [0.100, 0.150]" in html and "500 bootstrap resamples of patients" in html
    assert "sensitivity_at_specificity_90" in html and "0.610 [0.500, 0.700]" in html and "bootstrap</td>" not in html
    assert "chosen by <code>auto</code>: highest nested-CV OOF pauc_tpr80" in html
    assert "ECE <b>0.0500 &rarr; 0.0120</b> (10 equal-count bins)" in html
    assert "Top drivers</h3><p>not computed" in html


@pytest.mark.parametrize(("ensemble", "says"), [
    ({"method": "mean", "chosen": "mean"}, 'set by the config: <code>[ensemble] method = "mean"</code>'),
    ({"method": "none", "chosen": "ensemble"}, "no ensemble (one model"),
])
def test_summary_says_what_chose_a_model_and_which_unit_was_resampled(report_dir, run_dir, ensemble, says):
    """A fixed method records no reason ("chosen by mean:" then nothing, before); without patient ids
    the bootstrap draws lesions (it said "patient bootstrap" regardless)."""
    from dermstack.reports.rundata import RunData
    from dermstack.reports.summary import headline, summary_section

    run = RunData.load(run_dir)
    run.metrics |= {"ensemble": ensemble, "clinical": {
        "sensitivity_at_specificity_90": {"value": 0.61, "ci_low": 0.5, "ci_high": 0.7, "n_valid": 200},
        "bootstrap": {"n": 200, "unit": "lesion_id"}}}
    head = headline(run, pl.read_parquet(report_dir / "metrics.parquet"), pl.read_parquet(report_dir / "operating_points.parquet"),
                    {}, pl.read_parquet(report_dir / "subgroups.parquet"), 20)
    html = summary_section(head).render()
    assert says in html and "chosen by" not in html
    assert "bootstrap resamples of lesion_id" in html and "patient bootstrap" not in html


def test_overview_names_the_binary_target_not_its_score_column(report_dir):
    html = (report_dir / "index.html").read_text()
    overview = html[html.index('<section id="overview">'):]
    overview = overview[:overview.index("</table>")]
    assert "positive class" in overview and "malignant (vs rest)" in overview and ">target<" not in overview


@pytest.mark.slow
def test_cli_report_and_explain(run_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "r"), "--shap-sample", "60", "--n-boot", "5"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "index.html").exists() and json.loads((tmp_path / "r" / "summary.json").read_text())["settings"]["n_boot"] == 5
    lesion = pl.read_parquet(run_dir / "lesions.parquet").filter(pl.col("split") == "train").row(0, named=True)
    res = runner.invoke(cli, ["report", "explain", str(run_dir), "--id", lesion["image_id"], "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / f"explain_{lesion['image_id']}.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 + 3  # image, mask, outline + one waterfall per booster library
    same_patient = pl.read_parquet(run_dir / "lesions.parquet").filter(pl.col("patient_id") == lesion["patient_id"])
    for other in same_patient["image_id"]:
        assert other in page
    res = runner.invoke(cli, ["report", "explain", str(run_dir), "--id", "ISIC_none", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "ISIC_none" in res.output


def chromium() -> str:
    exe = browser.find_chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); cannot render the report")
    return exe


#: run after the page's own script: where the summary ends, and a header clicked twice
PROBE = """<script>
var b = document.body, s = document.getElementById("summary").getBoundingClientRect();
b.dataset.summaryBottom = s.bottom;
b.dataset.closedDetails = document.querySelectorAll("details:not([open])").length;
var t = document.querySelectorAll("#overview table")[1];  // out-of-fold metrics per model
var heads = Array.prototype.slice.call(t.querySelectorAll("thead th"));
var col = heads.findIndex(function (h) { return h.textContent === "roc_auc"; });
function column() { return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[col].textContent; }).join("|"); }
b.dataset.before = column(); heads[col].click(); b.dataset.asc = column(); heads[col].click(); b.dataset.desc = column();
</script></body>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    exe = chromium()
    page = (report_dir / "index.html").read_text()
    probe = tmp_path / "index.html"
    probe.write_text(page.replace("</body>", PROBE))
    dom = browser.dump_dom(probe, exe=exe)
    assert dom.console == [], dom.console  # any console message (error, failed load, script) fails the page
    for s in SECTIONS:
        assert f'id="{s}"' in dom.dom
    data = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom.dom).group(0)))
    assert 0 < float(data["summary-bottom"]) <= browser.SCREEN[1]  # the summary fits one 1280x800 screen
    assert int(data["closed-details"]) >= 1
    before, asc, desc = ([float(v) for v in data[k].split("|")] for k in ("before", "asc", "desc"))
    assert len(before) >= 3 and asc == sorted(before) and desc == sorted(before, reverse=True)
    for size in (browser.SCREEN, (1280, 2400)):
        shot = browser.screenshot(report_dir / "index.html", tmp_path / f"report_{size[1]}.png", size, exe=exe)
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.shape == (size[1], size[0]) and pixels.std() > 20  # rendered content, not a blank page


def test_a_report_built_again_explains_the_rows_the_run_configured(tmp_path):
    """`dermstack report RUN` and `FittedRun.report()` without --shap-sample use the run's [report] shap_sample."""
    from dermstack.reports.build import ReportSettings

    assert ReportSettings.for_run(tmp_path).shap_sample == 2000  # no config.toml: the [report] default
    (tmp_path / "config.toml").write_text('[data]\nformat = "synthetic-isic2024"\n\n[report]\nshap_sample = 123\n')
    assert ReportSettings.for_run(tmp_path).shap_sample == 123
    assert ReportSettings.for_run(tmp_path, 50, n_boot=5) == ReportSettings(shap_sample=50, n_boot=5)
    assert ReportSettings.for_run(tmp_path, 0).shap_sample is None  # every row
