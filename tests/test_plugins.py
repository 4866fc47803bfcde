"""Kinds from other installed packages (entry-point group ``dermstack.kinds``): the example plugin end to
end, and plugins that cannot be loaded."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from dermstack import registry
from dermstack.cli import cli
from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError
from tiny_runs import TinyRuns, booster

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dermstack-randomforest"
#: a booster and the plugin's forest, their mean, and the report (the forest has no explainer)
CONFIG = {"data": {"positive_rate": 0.15}, "ensemble": {"method": "mean"}, "report": {"enabled": True, "shap_sample": 100},
          "models": [booster("lightgbm", 15), {"kind": "random_forest", "params": {"n_estimators": 10}}]}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The example installed with pip into a temporary folder, never into the venv: a subprocess with
    the folder on PYTHONPATH finds its entry point through the dist-info there, and removing the folder
    uninstalls it, whatever the test did. The source is copied first, so the build leaves nothing in examples/."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, work / "src")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(work / "site"), str(work / "src")], check=True, capture_output=True)
    yield work / "site"
    shutil.rmtree(work)


def dermstack(plugin: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "dermstack.cli", *map(str, args)], env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_the_example_plugin_lists_runs_saves_predicts_and_is_noted_in_the_report(plugin, tmp_path):
    listed = dermstack(plugin, "kinds")
    assert listed.returncode == 0, listed.stderr
    assert "random_forest: scikit-learn random forest" in listed.stdout and "    n_estimators (PosInt) = 200" in listed.stdout
    assert "plugin 'random_forest'" in listed.stdout  # where it comes from

    config = TinyRuns.write(tmp_path / "rf.toml", check=False, **CONFIG)  # this process does not know random_forest
    run = dermstack(plugin, "run", config, "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "run"
    assert "random_forest" in pl.read_parquet(out / "oof.parquet")["model"].unique().to_list()
    assert (out / "models" / "random_forest" / "model.json").exists()
    assert list((out / "models" / "random_forest").glob("fold*_seed0.npz"))
    page = (out / "report" / "index.html").read_text()
    assert "Model random_forest (kind random_forest) has no explainer" in page
    assert "random_forest (score)" in page  # its one term in the final model's SHAP

    table = LesionTable.read(out / "lesions.parquet")
    LesionTable(table.test, table.meta).write(tmp_path / "new.parquet")
    scored = dermstack(plugin, "predict", out, tmp_path / "new.parquet", "--out", tmp_path / "scores.parquet")
    assert scored.returncode == 0, scored.stderr[-3000:]
    got = pl.read_parquet(tmp_path / "scores.parquet").filter(pl.col("model") == "random_forest").sort("image_id")
    want = pl.read_parquet(out / "test_predictions.parquet").filter(pl.col("model") == "random_forest").sort("image_id")
    assert got.height == 10
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-9)
    assert "random_forest" not in registry.model_kinds()  # this process (the venv) never saw it


# -- plugins that cannot be loaded ----------------------------------------------------------------
BROKEN = '''
from dermstack.boosting.params import BoosterParams
from dermstack.boosting.store import SavedBoosters
from dermstack.registry import ModelKind, register


def fit(inputs):
    raise NotImplementedError


GOOD = ModelKind("fine_kind", "a kind that loads", BoosterParams, fit, SavedBoosters)
DUPLICATE = ModelKind("lightgbm", "a second lightgbm", BoosterParams, fit, SavedBoosters)
BAD_SCHEMA = ModelKind("bad_schema", "params that are not a schema", dict, fit, SavedBoosters)
'''
HALF = '''
from dermstack.boosting.params import BoosterParams
from dermstack.boosting.store import SavedBoosters
from dermstack.registry import ModelKind, register

register(ModelKind("half_kind", "registered before its module failed", BoosterParams, print, SavedBoosters))
raise RuntimeError("the plugin's own bug")
'''
ENTRY_POINTS = """
[dermstack.kinds]
broken_import = no_such_module_xyz:KIND
duplicate = brokenplug:DUPLICATE
bad_schema = brokenplug:BAD_SCHEMA
fine = brokenplug:GOOD
half = halfplug
"""


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A package whose entry points fail in every way, discovered again in this process (the registry's
    state restored afterwards)."""
    (tmp_path / "brokenplug.py").write_text(textwrap.dedent(BROKEN))
    (tmp_path / "halfplug.py").write_text(textwrap.dedent(HALF))
    info = tmp_path / "brokenplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    registry.model_kinds()  # the built-in kinds first
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("_KINDS", "_METHODS", "_ORIGIN", "_BROKEN"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_loaded", False)
    for module in ("brokenplug", "halfplug"):
        monkeypatch.delitem(sys.modules, module, raising=False)


def test_a_broken_plugin_is_named_and_leaves_the_other_kinds_usable(broken_plugins):
    problems = registry.plugin_problems()
    why = {p.split("'")[1]: reason for p, reason in problems.items()}
    assert set(why) == {"broken_import", "duplicate", "bad_schema", "half"}
    assert why["broken_import"].startswith("ModuleNotFoundError") and "no_such_module_xyz" in why["broken_import"]
    assert "'lightgbm' is registered twice" in why["duplicate"]
    assert "params must be a pydantic dataclass" in why["bad_schema"]
    assert "the plugin's own bug" in why["half"]
    assert all("package brokenplug 0.1" in p for p in problems)
    kinds = registry.model_kinds()
    assert "fine_kind" in kinds and "half_kind" not in kinds  # what a failing plugin registered is taken back
    assert kinds["lightgbm"].adapter is not None  # the built-in one, not the plugin's

    out = CliRunner().invoke(cli, ["kinds"])
    assert out.exit_code == 2
    assert "lightgbm: LightGBM" in out.output and "fine_kind: a kind that loads" in out.output
    assert "4 plugin(s) left out" in out.output and "plugin 'bad_schema'" in out.output

    with pytest.raises(ConfigError, match=r"unknown model kind.*plugin 'bad_schema' .* was left out: TypeError"):
        RunConfig.from_dict({"models": [{"kind": "bad_schema"}]})
    assert RunConfig.from_dict({"models": [{"kind": "lightgbm"}]}).models[0].kind == "lightgbm"
