"""The default config on a real export a careful user would try first: an ISIC archive export
(100 images) whose three "Indeterminate" rows have no benign/malignant call either. The run trains
(unlabelled rows left out, with a note), the final model is at least its best member, and its
probabilities are calibrated and reported."""
from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from dermstack.cli import cli

CONFIG = """
[data]
format = "isic-archive"
path = "{path}"
{strict}
"""


def undecided_export(shared_data, out):
    """The dev export with the legacy call blanked where diagnosis_1 is Indeterminate (images linked)."""
    src = shared_data / "isic-archive-dev" / "2024-export"
    out.mkdir()
    for f in src.glob("*.jpg"):
        (out / f.name).symlink_to(f)
    with open(src / "metadata.csv", newline="") as fin, open(out / "metadata.csv", "w", newline="") as fout:
        reader = csv.DictReader(fin)
        writer = csv.DictWriter(fout, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["diagnosis_1"] == "Indeterminate":
                row["benign_malignant"] = ""
            writer.writerow(row)
    return out


def run(tmp_path, shared_data, strict: bool):
    cfg = tmp_path / "run.toml"
    data = undecided_export(shared_data, tmp_path / "export")
    cfg.write_text(CONFIG.format(path=data, strict="strict = true" if strict else ""))
    return CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "run")])


def test_default_config_on_an_export_with_unlabelled_rows(tmp_path, shared_data):
    r = run(tmp_path, shared_data, strict=False)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["unlabelled_training_rows"]["count"] == 3 and len(m["unlabelled_training_rows"]["examples"]) == 3
    assert m["n_train"] == 100 - 3
    assert {"lightgbm", "xgboost", "catboost"} <= set(m["models"])  # the default model set, sized to the data
    primary = m["primary_metric"]
    best = max(v[primary] for v in m["models"].values())
    assert m["oof"][primary] >= best - 0.002, (m["oof_model"], m["oof"][primary], best)
    assert m["ensemble"]["method"] == "auto" and m["ensemble"]["why"]
    cal = m["calibration"]
    assert cal["method"] in ("platt", "beta", "isotonic") and cal["after"]["brier"] <= cal["before"]["brier"] + 1e-9
    assert all("ece" in v and "brier" in v for v in m["models"].values())
    config = (tmp_path / "run" / "config.toml").read_text()
    assert "[[models]]" in config  # the resolved default set is recorded, so a rerun and `predict` see it


def test_strict_keeps_the_unlabelled_rows_error(tmp_path, shared_data):
    r = run(tmp_path, shared_data, strict=True)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "neither benign nor malignant" in r.output or "no target" in r.output, r.output
