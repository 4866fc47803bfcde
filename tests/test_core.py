"""LesionTable, FoldPlan, RunConfig and TaskSpec."""
import numpy as np
import polars as pl
import pytest

from dermstack.config import RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.errors import ConfigError, DataError
from dermstack.task import TaskSpec


def make_table(n_patients=40, per=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for j in range(per):
            rows.append({"image_id": f"I{p}_{j}", "patient_id": f"P{p}", "split": "train",
                         "target": int(rng.random() < 0.2), "label": "x", "age_approx": float(rng.integers(20, 80))})
    df = finalize_frame(pl.DataFrame(rows))
    return LesionTable(df, TableMeta("toy", feature_columns=["age_approx"]))


def test_table_roundtrip(tmp_path):
    t = make_table()
    t.write(tmp_path / "t.parquet")
    back = LesionTable.read(tmp_path / "t.parquet")
    assert back.meta == t.meta and back.df.equals(t.df)


def test_table_rejects_duplicates_and_leaky_features():
    t = make_table()
    with pytest.raises(DataError, match="duplicate image_id"):
        LesionTable(pl.concat([t.df, t.df.head(1)]), t.meta)
    df = t.df.with_columns(pl.lit("histo").alias("dx_type"))
    with pytest.raises(DataError, match="label-provenance"):
        LesionTable(df, TableMeta("toy", feature_columns=["dx_type"]))


def test_foldplan_groups_patients_and_roundtrips(tmp_path):
    t = make_table()
    plan = FoldPlan.make(t, n_splits=5, seed=1)
    per_patient = plan.folds.group_by("group").agg(pl.col("fold").n_unique())
    assert per_patient["fold"].max() == 1  # a patient never spans two folds
    assert plan.folds["fold"].n_unique() == 5
    plan.write(tmp_path / "f.parquet")
    back = FoldPlan.read(tmp_path / "f.parquet")
    assert back.folds.equals(plan.folds) and back.n_splits == 5
    ids = t.train["image_id"].to_list()
    seen = np.concatenate([v for _, _, v in back.splits(ids)])
    assert sorted(seen) == list(range(len(ids)))
    with pytest.raises(DataError, match="fold plan does not match"):
        back.fold_of(ids + ["nope"])


def test_config_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"data": {"formt": "x"}})
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"dat": {}})
    cfg = RunConfig.from_dict({"data": {"format": "ham10000", "path": "p"},
                               "models": [{"kind": "lightgbm", "params": {"num_leaves": 7}}]})
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml())
    assert RunConfig.from_toml(p) == cfg


def test_taskspec_binary_and_label_target():
    t = make_table()
    spec = TaskSpec.from_table(t, "binary")
    assert spec.y.tolist() == t.train["target"].to_list()
    with pytest.raises(ConfigError, match="neither"):
        TaskSpec.from_table(t, "binary", target="MEL")


def test_stage_skips_when_unchanged_and_reruns_on_change(tmp_path):
    from dermstack.provenance import Stage

    inp, out = tmp_path / "in.txt", tmp_path / "out.txt"
    inp.write_text("a")
    calls = []

    def stage(cfg):
        s = Stage(tmp_path, "s", cfg, [inp], [out])
        if not s.done():
            calls.append(cfg)
            out.write_text("x")
            s.finish(0.0)

    stage({"k": 1})
    stage({"k": 1})
    assert len(calls) == 1  # unchanged: skipped
    stage({"k": 2})
    inp.write_text("b")
    stage({"k": 2})
    assert len(calls) == 3  # config change, then input change


def test_progress_bars_follow_tqdm_disable_at_call_time(monkeypatch):
    from dermstack.progress import progress_bar

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress_bar(range(3)).disable and progress_bar(range(3), enabled=False).disable
