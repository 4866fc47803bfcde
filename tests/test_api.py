"""The Python API (``import dermstack as ds``): the CLI's code path, its errors, no side effects, light
imports, and every public name's example run as a doctest on one tiny run (``runs/tiny``)."""
import copy
import doctest
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import dermstack as ds
from dermstack.cli import cli

ROOT = Path(__file__).resolve().parents[1]
#: the config of the examples' run (:mod:`dermstack.api`'s docstrings fit it into ``runs/tiny``)
CONFIG = {"data": {"format": "synthetic-isic2024", "lesions": 150, "test_lesions": 10, "positive_rate": 0.1, "image_size": 16},
          "cv": {"n_splits": 3},
          "models": [{"kind": "lightgbm", "params": {"n_estimators": 10, "threads": 1}}]}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder holding ``runs/tiny``, fitted once; the working directory of the tests that use it."""
    root = tmp_path_factory.mktemp("api")
    ds.fit(CONFIG, out=root / "runs" / "tiny")
    return root


@pytest.fixture
def run(work, monkeypatch) -> ds.FittedRun:
    monkeypatch.chdir(work)
    return ds.load("runs/tiny")


def test_public_names():
    for name in ds.__all__:
        obj = getattr(ds, name)
        assert name == "__version__" or (obj.__doc__ and ">>>" in obj.__doc__), f"{name}: no docstring with an example"
    assert {"fit", "load", "compare", "kinds", "FittedRun", "DataError", "ConfigError"} <= set(ds.__all__)
    assert ds.DataError is __import__("dermstack.errors").errors.DataError
    for module in pkgutil.iter_modules(ds.__path__):  # a submodule, once imported, would shadow the name
        assert module.name not in ds.__all__, module.name
    assert (ROOT / "src" / "dermstack" / "py.typed").is_file()


DOCTESTED = ["dermstack", "dermstack.api", "dermstack.fitted", "dermstack.errors", "dermstack.reports.explain",
             "dermstack.config.runconfig", "dermstack.data.table"]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples(module, run):
    __import__(module)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(sys.modules[module], optionflags=flags, verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed (output above)"
    assert result.attempted or module == "dermstack.config.runconfig"


def test_fit_resumes_and_never_changes_the_callers_config(run, tmp_path):
    given = copy.deepcopy(CONFIG)
    again = ds.fit(given, out="runs/tiny")  # every stage current: nothing refitted
    assert given == CONFIG and again.metrics == run.metrics
    (tmp_path / "empty").mkdir()  # a relative [data] path the run resolves; no HAM10000 files, so it stops at ingest
    cfg = ds.RunConfig.from_dict({"data": {"format": "ham10000", "path": os.path.relpath(tmp_path / "empty")}})
    before = cfg.to_dict()
    with pytest.raises(ds.DataError):
        ds.fit(cfg, out=tmp_path / "x")
    assert cfg.to_dict() == before and cfg.models == []
    with pytest.raises(ds.ConfigError, match="did you mean"):
        ds.fit({"data": {"fromat": "isic2024"}}, out=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(ds.ConfigError, match="not list"):
        ds.fit([], out=tmp_path / "y")


def test_fit_from_a_toml_file_is_dermstack_run(run, tmp_path):
    """The same config as TOML through the CLI: the same run directory layout and metrics."""
    import tomli_w

    toml = tmp_path / "tiny.toml"
    toml.write_text(tomli_w.dumps(CONFIG))
    done = CliRunner().invoke(cli, ["run", str(toml), "--out", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    # what this run wrote: its test rows' submission, no report ([report] enabled is false)
    assert f"\nresults in {tmp_path / 'cli'}/ (metrics.json, oof.parquet, submission.csv, models/)\n" in done.output, done.output
    a, b = json.loads((tmp_path / "cli" / "metrics.json").read_text()), run.metrics
    scores = lambda m: {k: v for k, v in m["oof"].items() if k != "seconds"}  # noqa: E731
    assert scores(a) == scores(b) and a["oof_model"] == b["oof_model"]
    assert ds.load(tmp_path / "cli").oof.equals(run.oof)


def test_the_closing_line_names_the_report_and_the_submission_only_when_written(tmp_path):
    from dermstack.run import closing_line

    for name in ("metrics.json", "oof.parquet", "models/lightgbm/model.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert closing_line(tmp_path) == f"results in {tmp_path}/ (metrics.json, oof.parquet, models/)"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html>")
    assert closing_line(tmp_path) == f"results in {tmp_path}/ (metrics.json, oof.parquet, report/index.html, models/)"


def test_oof_layout(run):
    oof = run.oof
    assert oof.columns == ["image_id", "label", "lightgbm", "calibrated"]
    assert oof.schema["label"] == pl.Int8 and oof.schema["lightgbm"] == pl.Float64
    lesions = pl.read_parquet("runs/tiny/lesions.parquet").filter(pl.col("split") == "train")
    joined = oof.join(lesions.select("image_id", "target"), on="image_id")
    assert joined.height == oof.height == run.metrics["n_train"] and (joined["label"] == joined["target"]).all()


def test_predict_is_dermstack_predict_and_takes_dataframes(run, tmp_path):
    lesions = pl.read_parquet("runs/tiny/lesions.parquet")
    test = lesions.filter(pl.col("split") == "test")
    done = CliRunner().invoke(cli, ["predict", "runs/tiny", "runs/tiny/lesions.parquet", "--out", str(tmp_path / "p.parquet")])
    assert done.exit_code == 0, done.output
    cli_long = pl.read_parquet(tmp_path / "p.parquet")
    wide = run.predict("runs/tiny/lesions.parquet")
    assert wide.columns == ["image_id", "lightgbm", "calibrated"] and wide.height == test.height
    for model in ("lightgbm", "calibrated"):
        want = cli_long.filter(pl.col("model") == model).select("image_id", pl.col("score").alias(model))
        assert wide.select("image_id", model).sort("image_id").equals(want.sort("image_id"))
    # a DataFrame of the raw metadata: ISIC's isic_id, no image_id, split, target or label; polars or pandas
    raw = test.drop("image_id", "split", "target", "label")
    for frame in (raw, raw.to_pandas()):
        assert run.predict(frame).sort("image_id").equals(wide.sort("image_id"))
    with pytest.raises(ds.DataError, match="image_id"):
        run.predict(raw.drop("isic_id"))
    with pytest.raises(ds.DataError, match="feature column.*pass allow_missing_features=True to score") as e:
        run.predict(raw.drop("age_approx"))  # a notebook has no command-line flag
    assert "--allow" not in str(e.value)
    assert run.predict(raw.drop("age_approx"), allow_missing_features=True).height == test.height


def test_predict_takes_a_test_metadata_file(run, tmp_path):
    """ISIC 2024's test-metadata.csv named instead of its folder: that file's lesions are scored."""
    from dermstack.data.synth import synthesize_isic2024

    synthesize_isic2024(tmp_path / "new", lesions=20, test_lesions=5, image_size=16, seed=7, positive_rate=0.2, workers=1)
    scores = run.predict(tmp_path / "new" / "test-metadata.csv")
    assert sorted(scores["image_id"]) == sorted(pl.read_csv(tmp_path / "new" / "test-metadata.csv")["isic_id"])

def test_predict_proba_is_n_by_classes_in_predicts_order(run):
    new = pl.read_parquet("runs/tiny/lesions.parquet").filter(pl.col("split") == "test")
    wide, proba = run.predict(new), run.predict_proba(new)
    assert proba.shape == (wide.height, 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(proba[:, 1], wide["calibrated"].to_numpy())
    assert np.array_equal(run.predict_proba(new, model="lightgbm")[:, 1], wide["lightgbm"].to_numpy())
    with pytest.raises(ds.ConfigError, match="no model 'xgboost'.*lightgbm, calibrated"):
        run.predict_proba(new, model="xgboost")


def test_submit_is_dermstack_submit(run, tmp_path):
    done = CliRunner().invoke(cli, ["submit", "runs/tiny", "--format", "isic2024", "--out", str(tmp_path / "cli.csv")])
    assert done.exit_code == 0, done.output
    path = run.submit(tmp_path / "api.csv", format="isic2024")
    assert path.read_text() == (tmp_path / "cli.csv").read_text()
    # the frame predict gives, wide, is a submission's predictions too (the final calibrated model's)
    scored = run.submit(tmp_path / "scored.csv", format="isic2024", predictions=run.predict("runs/tiny/lesions.parquet"))
    assert pl.read_csv(scored).sort("isic_id").equals(pl.read_csv(path).sort("isic_id"))
    with pytest.raises(ds.DataError, match="no saved model 'nope'"):
        run.submit(tmp_path / "x.csv", format="isic2024", model="nope")
    assert not (tmp_path / "x.csv").exists()


def test_evaluate_is_dermstack_evaluate(run, tmp_path):
    from dermstack.data.readers import ingest
    from dermstack.data.synth import synthesize_isic2024

    other = tmp_path / "other"
    synthesize_isic2024(other, lesions=60, test_lesions=0, image_size=16, seed=7, positive_rate=0.2)
    e = run.evaluate(other, out=tmp_path / "api")
    done = CliRunner().invoke(cli, ["evaluate", "runs/tiny", str(other), "--out", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    same = ("rows", "models", "operating_points", "subgroups", "overlap")
    assert {k: e[k] for k in same} == {k: v for k, v in json.loads((tmp_path / "cli" / "evaluation.json").read_text()).items() if k in same}
    # the same lesions as a pandas DataFrame, labels included
    frame = ingest("isic2024", other)[0].df.drop("image_id").to_pandas()
    assert run.evaluate(frame, out=tmp_path / "frame")["models"] == e["models"]


def test_explain_adds_up_and_names_an_unknown_lesion(run):
    train_id, test_id = run.oof["image_id"][0], run.predict("runs/tiny/lesions.parquet")["image_id"][0]
    for image_id in (train_id, test_id):
        why = run.explain(image_id)
        assert why.image_id == image_id and why.model == "calibrated"
        assert abs(why.base + why.contributions["contribution"].sum() - why.score) < 1e-6
        sizes = why.contributions["contribution"].abs()
        assert (sizes.diff().drop_nulls() <= 1e-12).all()  # largest first
    with pytest.raises(ds.DataError, match="no lesion with image_id 'nope'"):
        run.explain("nope")


def test_load_refuses_what_the_cli_refuses(run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree("runs/tiny", damaged)
    (damaged / "models" / "lightgbm" / "oof.parquet").write_bytes(b"not parquet")
    with pytest.raises(ds.DermstackError) as api_error:
        ds.load(damaged)
    done = CliRunner().invoke(cli, ["predict", str(damaged), "runs/tiny/lesions.parquet", "--out", str(tmp_path / "p.parquet")])
    assert done.exit_code == 2 and str(api_error.value) in done.output
    (damaged / "stages" / "run.json").unlink()
    with pytest.raises(ds.DermstackError, match="did not finish"):
        ds.load(damaged)
    with pytest.raises(ds.DataError, match="no such run directory"):
        ds.load(tmp_path / "nowhere")


def test_kinds_is_dermstack_kinds():
    listed = ds.kinds()
    out = CliRunner().invoke(cli, ["kinds"]).output
    for name, kind in listed["models"].items():
        assert f"{name}: {kind['description']}" in out
        for param, p in kind["params"].items():
            assert f"    {param} ({p['type']}) = {p['default']}" in out
    assert all(f"  {m}: {what}" in out for m, what in listed["ensembles"].items())


def _python(code: str, cwd: Path = ROOT, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_import_sets_nothing_and_loads_no_heavy_library():
    done = _python("import os, sys; before = dict(os.environ); import dermstack as ds; ds.DataError; ds.__version__; "
                   "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
                   "heavy = [m for m in ('torch', 'lightgbm', 'xgboost', 'catboost', 'timm', 'sklearn', 'polars') if m in sys.modules]; "
                   "assert not heavy, heavy")
    assert done.returncode == 0, done.stderr


def test_help_the_store_and_the_kinds_load_neither_torch_nor_timm():
    """`dermstack --help` lists every command, and a stage that reads embeddings imports the store: neither
    pays the seconds of importing torch and timm; nor does registering every kind (any run does), so that a
    metadata-only run never imports them, nor checking a config with the default backbone (loading a run)."""
    code = ("import sys; sys.argv = ['dermstack', '--help']\nfrom dermstack.cli import main\ntry: main()\n"
            "except SystemExit: pass\nfrom dermstack.extract import EmbeddingStore\n"
            "print('HEAVY', [m for m in ('torch', 'timm') if m in sys.modules])\n"
            "from dermstack.registry import model_kinds\nassert {'cnn', 'mlp'} <= set(model_kinds())\n"
            "from dermstack.config import RunConfig\nRunConfig.from_dict({'extract': {'backbones': ['efficientnet_lite0']}})\n"
            "print('KINDS', [m for m in ('torch', 'timm') if m in sys.modules])")
    done = _python(code)
    assert "HEAVY []" in done.stdout and "run" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "KINDS []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_command_sets_passive_openmp_waiting_unless_the_user_did():
    code = ("import os, sys; sys.argv = ['dermstack', '--version']\nfrom dermstack.cli import main\ntry: main()\n"
            "except SystemExit: pass\nprint('OMP', os.environ.get('OMP_WAIT_POLICY'))")
    assert "OMP PASSIVE" in _python(code).stdout
    assert "OMP ACTIVE" in _python(code, OMP_WAIT_POLICY="ACTIVE").stdout


def test_notebook_example(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "isic_id,target" and len(lines) == 11
    assert "contribution" in done.stdout


def test_predict_proba_defaults_to_the_model_the_run_submits(tmp_path):
    """A multiclass run submits its final model's own scores, not the calibrated ones: predict_proba's
    default is the submitted model, as ``dermstack submit``'s (binary: calibrated, the test above)."""
    from dermstack.predictions import Predictions
    from reports.multiclass_run import CONFIG as SIGNAL_CONFIG
    from reports.multiclass_run import PreparedRun, signal_table

    config = tmp_path / "multiclass.toml"
    config.write_text(SIGNAL_CONFIG.format(task="multiclass"))
    cfg = ds.RunConfig.from_toml(config)
    cfg.models = cfg.models[:1]  # LightGBM alone: its own scores and the calibrated ones are enough
    PreparedRun(cfg, tmp_path / "run", signal_table("multiclass")).execute()
    run = ds.load(tmp_path / "run")
    submitted = run.metrics["submission_model"]
    assert submitted != "calibrated"
    test = pl.read_parquet(tmp_path / "run" / "lesions.parquet").filter(pl.col("split") == "test")
    proba = run.predict_proba(test)
    order = run.predict(test)["image_id"].to_list()
    want = Predictions.read(tmp_path / "run" / "test_predictions.parquet").for_model(submitted).matrix(order, run.metrics["classes"])
    np.testing.assert_allclose(proba, want, atol=1e-6)
    assert not np.allclose(run.predict_proba(test, model="calibrated"), want, atol=1e-3)  # so the default matters
