"""Every config in configs/ (and the packaged demo config) and every script in benchmarks/ runs as
shipped, on a tiny copy of its data (``dermstack.testing``): so that neither can rot unnoticed."""
from __future__ import annotations

import runpy
import sys
import tempfile

import pytest
import torch

from dermstack.config import RunConfig
from dermstack.run import PACKAGE_CONFIGS, Run
from dermstack.testing import REPO, smoke_dataset

pytestmark = pytest.mark.slow  # the heavy tests: `make test` runs them, `make test-fast` does not

CONFIGS = sorted((REPO / "configs").glob("*.toml")) + [PACKAGE_CONFIGS / "demo.toml"]
#: dask_scale has its own test (tests/test_benchmark_dask_scale.py), which also checks its scores agree
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if p.stem != "dask_scale")
#: arguments beside --smoke: the scripts that run whole configs run one (the test above runs them all)
SMOKE_ARGS = {"configs_table": ["--only", "ph2-image"], "ensemble_vs_best": ["--only", "ph2"]}


@pytest.fixture(autouse=True)
def _small(monkeypatch, tmp_path):
    """One torch thread (tiny tensors) and temporary folders under this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_end_to_end_on_a_tiny_copy_of_its_data(path, tmp_path, shared_data):
    cfg = smoke_dataset(RunConfig.from_toml(path), tmp_path / "data", path.parent)
    m = Run(cfg, tmp_path / "run").execute()
    assert m["n_train"] > 0 and (tmp_path / "run" / "models" / m["oof_model"] / "model.json").exists()
    assert (tmp_path / "run" / "report" / "index.html").exists() == cfg.report.enabled


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_at_its_smoke_size(script, monkeypatch, capsys, shared_data):
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", *SMOKE_ARGS.get(script.stem, [])])
    monkeypatch.chdir(REPO)
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_boosting_scale_per_round_measures_the_defaults_and_each_variant(monkeypatch, capsys):
    script = REPO / "benchmarks" / "boosting_scale.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke", "--kinds", "lightgbm", "--per-round", '{"max_bin": 63}'])
    monkeypatch.chdir(REPO)
    runpy.run_path(str(script), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if "ms per round" in line]
    assert [line.split()[:2] for line in lines] == [["lightgbm", "defaults"], ["lightgbm", '{"max_bin":']]


def test_boosting_scale_pairs_a_variant_with_an_earlier_cv(monkeypatch, capsys, tmp_path):
    """--oof keeps the scores, --against pairs them: the same params give a zero difference, a
    changed library alone moves."""
    script = REPO / "benchmarks" / "boosting_scale.py"
    monkeypatch.chdir(REPO)
    base = ["--smoke", "--skip-rows", "--kinds", "lightgbm,xgboost"]
    monkeypatch.setattr(sys, "argv", [str(script), *base, "--oof", str(tmp_path / "before")])
    runpy.run_path(str(script), run_name="__main__")
    assert sorted(p.name for p in (tmp_path / "before").iterdir()) == ["lightgbm.parquet", "xgboost.parquet"]
    capsys.readouterr()
    variant = ["--params", '{"xgboost": {"max_depth": 2}}', "--against", str(tmp_path / "before")]
    monkeypatch.setattr(sys, "argv", [str(script), *base, *variant])
    runpy.run_path(str(script), run_name="__main__")
    paired = {line.split()[0]: line for line in capsys.readouterr().out.split("paired with", 1)[1].splitlines()[1:]}
    assert "pauc_tpr80" in paired["lightgbm"] and "+0.0000 [+0.0000, +0.0000]" in paired["lightgbm"]
    assert "+0.0000 [+0.0000, +0.0000]; roc_auc" not in paired["xgboost"]


def test_demo_says_what_it_trimmed(monkeypatch, tmp_path):
    """The demo config's opening comment names each trim the config makes, and `dermstack demo` prints it."""
    from click.testing import CliRunner

    from dermstack import run

    path = PACKAGE_CONFIGS / "demo.toml"
    cfg, said = RunConfig.from_toml(path), " ".join(run.header_comment(path))
    catboost, cnn = (next(m for m in cfg.models if m.kind == k) for k in ("catboost", "cnn"))
    left_out = [b for b in cfg.boosters() if f"{b}+{cnn.label}" not in cfg.feature_group_models()]
    assert left_out == ["catboost"] and "CatBoost is not trained a second time" in said
    assert f"CatBoost with {catboost.params['border_count']} borders" in said
    assert cnn.params["tta"] is False and "without flip TTA" in said
    monkeypatch.setattr(run.Run, "execute", lambda self: {})
    monkeypatch.setattr(run, "print_metrics", lambda metrics: None)
    out = CliRunner().invoke(run.demo_command, ["--out", str(tmp_path / "demo")])
    assert out.exit_code == 0 and all(line in out.output for line in run.header_comment(path))
