"""The report directory, the CLI, the lesion explanation, and the page in a real (headless) browser."""
import json
import re
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from dermstack.cli import cli
from dermstack.reports.shap_ import ShapValues

SECTIONS = ["overview", "curves", "shap-groups", "top-features", "dependence", "subgroups"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def test_report_files_and_self_contained_html(report_dir, run_dir):
    html = (report_dir / "index.html").read_text()
    for s in SECTIONS:
        assert f'<section id="{s}">' in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(v.startswith(("data:", "#")) for v in srcs)  # nothing loaded from disk or network
    assert "<script" not in html and "http://" not in html and "https://" not in html
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
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); cannot render the report")
    return exe


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    exe = chromium()
    url = (report_dir / "index.html").resolve().as_uri()
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # any console message (error, failed load, script) fails the page
    for s in SECTIONS:
        assert f'id="{s}"' in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2400", url], capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20  # rendered content, not a blank page
