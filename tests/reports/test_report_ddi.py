"""The summary's skin-tone fairness on the DDI metadata (../shared/data): a metadata-only run
(no backbones), one small booster, whose report shows each Fitzpatrick group with a CI and the
best-worst gap."""
import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from dermstack.cli import cli

CONFIG = """
[data]
format = "ddi"
path = "{path}"

[cv]
n_splits = 3

[extract]
backbones = []

[[models]]
kind = "lightgbm"
seeds = [0]
params = {{ n_estimators = 30 }}

[ensemble]
method = "none"

[report]
enabled = true
shap_sample = 200
"""


@pytest.fixture(scope="module")
def ddi_run(shared_data, tmp_path_factory):
    if not (shared_data / "ddi" / "ddi_metadata.csv").exists():
        pytest.skip("DDI metadata not in the shared data")
    root = tmp_path_factory.mktemp("ddi")
    (root / "run.toml").write_text(CONFIG.format(path=shared_data / "ddi"))
    res = CliRunner().invoke(cli, ["run", str(root / "run.toml"), "--out", str(root / "run")])
    assert res.exit_code == 0, res.output
    return root / "run"


def test_summary_shows_skin_tone_groups_with_cis_and_gap(ddi_run):
    report = ddi_run / "report"
    head = json.loads((report / "summary.json").read_text())["first_screen"]
    assert head["dataset"] == "ddi" and head["rows"] == 653 and head["drivers"]["features"][0]["feature"] == "skin_tone"
    (tone,) = head["skin_tone"]
    assert tone["attribute"] == "skin tone (skin_tone)"
    auc = {g["group"]: g for g in tone["groups"] if g["metric"] == "roc_auc"}
    assert set(auc) == {"12", "34", "56"}  # Fitzpatrick I-II, III-IV, V-VI
    for g in auc.values():
        assert g["n"] > 150 and g["ci_low"] < g["value"] < g["ci_high"]
    # each group's value is the ROC-AUC of the final model's OOF scores on that group
    lesions = pl.read_parquet(ddi_run / "lesions.parquet").filter(pl.col("split") == "train")
    oof = (pl.read_parquet(ddi_run / "oof.parquet").filter(pl.col("model") == head["final_model"])
           .group_by("image_id").agg(pl.col("score").mean()))
    df = lesions.join(oof, on="image_id")
    for tone_value, g in auc.items():
        part = df.filter(pl.col("skin_tone").cast(pl.String) == tone_value)
        assert g["value"] == pytest.approx(roc_auc_score(part["target"], part["score"]))
    (gap,) = [g for g in tone["gaps"] if g["metric"] == "roc_auc"]
    values = {k: v["value"] for k, v in auc.items()}
    assert gap["best"] == max(values, key=values.get) and gap["worst"] == min(values, key=values.get)
    assert gap["value"] == pytest.approx(max(values.values()) - min(values.values()))
    assert np.isfinite(gap["ci_low"]) and gap["ci_low"] < gap["value"] < gap["ci_high"]
    html = (report / "index.html").read_text()
    summary = html[html.index('<section id="summary">'):html.index('<section id="overview">')]
    assert "Fairness: skin tone (skin_tone)" in summary and "best - worst" in summary
    assert f"{gap['value']:.3f} [{gap['ci_low']:.3f}, {gap['ci_high']:.3f}] ({gap['best']} - {gap['worst']})" in summary
    assert "ECE <b>" in summary  # calibration of the metadata-only model, before and after
