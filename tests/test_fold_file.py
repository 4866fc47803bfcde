"""`[cv] folds = FILE` and `dermstack data folds --from FILE`: a published split used exactly, refused when it leaks."""
from __future__ import annotations

import json

import polars as pl
import pytest

from dermstack.config import RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.errors import ConfigError, DataError
from dermstack.run import Run
from lesion_tables import lesion_table
from test_bad_inputs import run_cli


def table():
    """Six patients, two lesions each, two images per lesion (24 rows)."""
    n = 24
    return lesion_table({
        "image_id": [f"img{i:02d}" for i in range(n)],
        "lesion_id": [f"L{i // 2}" for i in range(n)],
        "patient_id": [f"P{i // 4}" for i in range(n)],
        "target": [i % 3 == 0 for i in range(n)],
        "age_approx": [40.0 + i for i in range(n)],
    })


def by_patient(folds: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"patient_id": [f"P{p}" for p in range(6)], "fold": folds})


@pytest.mark.parametrize("key", ["image_id", "lesion_id", "patient_id"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_file_is_used_exactly(tmp_path, key, suffix):
    t = table()
    patient_fold = {f"P{p}": 1 + p % 3 for p in range(6)}  # folds labelled 1..3, as papers often do
    rows = t.df.select("image_id", "lesion_id", "patient_id").with_columns(
        pl.col("patient_id").replace_strict(patient_fold).alias("fold"))
    src = rows.select(key, "fold").unique(key, maintain_order=True)
    path = tmp_path / f"folds{suffix}"
    src.write_csv(path) if suffix == ".csv" else src.write_parquet(path)
    plan = FoldPlan.from_file(t, path)
    assert plan.n_splits == 3 and plan.source["key"] == key and len(plan.source["sha256"]) == 64
    assert plan.fold_of(rows["image_id"]).tolist() == (rows["fold"] - 1).to_list()
    plan.write(tmp_path / "plan.parquet")
    back = FoldPlan.read(tmp_path / "plan.parquet")
    assert back.source == plan.source and back.same_split(plan)


@pytest.mark.parametrize("frame, says", [
    (by_patient([0, 0, 0, 0, 0, 0]), "at least 2 folds"),
    (pl.DataFrame({"lesion_id": [f"L{i}" for i in range(12)], "fold": [i % 2 for i in range(12)]}), "splits patient_id 'P0'"),
    (pl.DataFrame({"image_id": [f"img{i:02d}" for i in range(24)], "fold": [(i // 4) % 2 if i != 5 else 0 for i in range(24)]}),
     "splits patient_id 'P1'"),
    (pl.concat([by_patient([0, 1, 0, 1, 0, 1]), by_patient([1, 1, 0, 1, 0, 1])]), "patient_id 'P0' is listed in folds [0, 1]"),
    (pl.DataFrame({"patient": ["P0"], "fold": [0]}), "needs a `fold` column"),
    (pl.DataFrame({"patient_id": [f"P{p}" for p in range(6)], "fold": ["a", "b"] * 3}), "fold 'a' is not a whole number"),
])
def test_a_leaking_or_partial_file_is_refused_naming_the_id(tmp_path, frame, says):
    path = tmp_path / "folds.parquet"
    frame.write_parquet(path)
    with pytest.raises(DataError) as err:
        FoldPlan.from_file(table(), path)
    assert says in str(err.value) and "folds.parquet" in str(err.value)


def test_missing_rows_name_an_image(tmp_path):
    path = tmp_path / "folds.csv"
    by_patient([0, 1, 2, 0, 1, 2]).filter(pl.col("patient_id") != "P5").write_csv(path)
    with pytest.raises(DataError, match=r"4 training rows have no fold in the file, e.g. image_id 'img20' \(patient_id 'P5'\)"):
        FoldPlan.from_file(table(), path)


def test_stage_cli_builds_the_same_plan_and_refuses_with_exit_2(tmp_path, monkeypatch, capsys):
    t = table()
    t.write(tmp_path / "lesions.parquet")
    by_patient([0, 1, 2, 0, 1, 2]).write_csv(tmp_path / "folds.csv")
    code, _ = run_cli(monkeypatch, capsys, "data", "folds", str(tmp_path / "lesions.parquet"), "--from",
                      str(tmp_path / "folds.csv"), "--out", str(tmp_path / "plan.parquet"))
    assert code == 0
    assert FoldPlan.read(tmp_path / "plan.parquet").same_split(FoldPlan.from_file(t, tmp_path / "folds.csv"))
    by_patient([0, 0, 0, 0, 0, 0]).write_csv(tmp_path / "one.csv")
    code, err = run_cli(monkeypatch, capsys, "data", "folds", str(tmp_path / "lesions.parquet"), "--from",
                        str(tmp_path / "one.csv"), "--out", str(tmp_path / "plan2.parquet"))
    assert code == 2 and "at least 2 folds" in err and "Traceback" not in err


def test_config_checks_the_fold_file():
    with pytest.raises(ConfigError, match=r'\[cv\] folds = "f.txt": a fold file is a .csv or .parquet file'):
        RunConfig.from_dict({"cv": {"folds": "f.txt"}})
    with pytest.raises(ConfigError, match=r"\[cv\] repeats = 3"):
        RunConfig.from_dict({"cv": {"folds": "f.csv", "repeats": 3}})
    with pytest.raises(ConfigError, match="no such file"):
        Run(RunConfig.from_dict({"cv": {"folds": "/nonexistent/f.csv"}}), "/tmp/never")


RUN = """
[data]
format = "isic2024"
path = "{data}"

[cv]
folds = "folds.csv"

[features]
embedding = false
image = false

[[models]]
kind = "lightgbm"
params = {{ n_estimators = 10, threads = 1 }}
"""


def test_a_run_uses_the_file_and_a_changed_file_reruns_the_folds(tmp_path):
    from dermstack.data.readers import ingest
    from dermstack.data.synth import synthesize_isic2024

    synthesize_isic2024(tmp_path / "data", lesions=120, test_lesions=5, image_size=8, positive_rate=0.15, workers=1)
    t, _ = ingest("isic2024", tmp_path / "data")
    patients = t.train["patient_id"].unique().sort().to_list()
    pl.DataFrame({"patient_id": patients, "fold": [i % 3 for i in range(len(patients))]}).write_csv(tmp_path / "folds.csv")
    (tmp_path / "run.toml").write_text(RUN.format(data=tmp_path / "data"))
    cfg = RunConfig.from_toml(tmp_path / "run.toml")
    Run(cfg, tmp_path / "out", config_dir=tmp_path).execute()
    plan = FoldPlan.read(tmp_path / "out" / "folds.parquet")
    assert plan.n_splits == 3 and plan.same_split(FoldPlan.from_file(t, tmp_path / "folds.csv"))
    record = json.loads((tmp_path / "out" / "stages" / "folds.json").read_text())
    assert record["fold_file"]["sha256"] == plan.source["sha256"]
    model_record = json.loads((tmp_path / "out" / "stages" / "model-lightgbm.json").read_text())["finished"]

    pl.DataFrame({"patient_id": patients, "fold": [i % 4 for i in range(len(patients))]}).write_csv(tmp_path / "folds.csv")
    Run(RunConfig.from_toml(tmp_path / "run.toml"), tmp_path / "out", config_dir=tmp_path).execute()
    assert FoldPlan.read(tmp_path / "out" / "folds.parquet").n_splits == 4
    assert json.loads((tmp_path / "out" / "stages" / "folds.json").read_text())["fold_file"]["sha256"] != plan.source["sha256"]
    oof = pl.read_parquet(tmp_path / "out" / "oof.parquet")
    assert sorted(oof["fold"].unique().drop_nulls().to_list()) == [0, 1, 2, 3]
    assert json.loads((tmp_path / "out" / "stages" / "model-lightgbm.json").read_text())["finished"] >= model_record
