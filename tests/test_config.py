"""RunConfig: a typed schema checked completely when read."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dermstack.boosting.base import adapter_class, booster_kinds
from dermstack.boosting.defaults import default_params
from dermstack.boosting.params import GENERIC_PARAMS
from dermstack.config import (
    TASKS,
    ExtractSettings,
    FeaturesConfig,
    ModelConfig,
    RunConfig,
    SamplingConfig,
)
from dermstack.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.toml")) + [REPO / "src" / "dermstack" / "configs" / "demo.toml"]
HEAD = '[data]\nformat = "synthetic-isic2024"\n'
TWO = '[[models]]\nkind = "lightgbm"\n[[models]]\nkind = "xgboost"\n'

#: (config body after HEAD, fragments the error must contain: section, key = value, why / closest name)
BAD = {
    "bool given as a string": ('[features]\npatient = "false"\n', ['[features] patient = "false"', "valid boolean"]),
    "int given as a word": ('[cv]\nn_splits = "five"\n', ['[cv] n_splits = "five"', "valid integer"]),
    "int given as a fraction": ("[cv]\nn_splits = 3.5\n", ["[cv] n_splits = 3.5", "valid integer"]),
    "one split": ("[cv]\nn_splits = 1\n", ["[cv] n_splits = 1", "greater than or equal to 2"]),
    "dask address without a port": ('[cv]\ndask_address = "tcp://scheduler"\n', ['[cv] dask_address = "tcp://scheduler"', "tcp://host:8786"]),
    "bare seed": ("[[models]]\nseeds = 0\n", ["[[models]] #1 (lightgbm) seeds = 0", "use seeds = [0]"]),
    "no seed": ("[[models]]\nseeds = []\n", ["[[models]] #1 (lightgbm) seeds = []", "at least 1"]),
    "unknown kind": ('[[models]]\nkind = "lightgbn"\n', ['[[models]] #1 (lightgbn) kind = "lightgbn"', 'did you mean "lightgbm"']),
    "misspelt method, one model": ('[[models]]\nkind = "lightgbm"\n[ensemble]\nmethod = "stak"\n',
                                   ['[ensemble] method = "stak"', 'did you mean "stack"']),
    "misspelt method, several models": (TWO + '[ensemble]\nmethod = "rnak"\n', ['[ensemble] method = "rnak"', 'did you mean "rank"']),
    "lightgbm learning_rat": ('[[models]]\nkind = "lightgbm"\nparams = { learning_rat = 0.1 }\n',
                              ["[[models]] #1 (lightgbm) params.learning_rat = 0.1", 'did you mean "learning_rate"']),
    "xgboost learning_rat": ('[[models]]\nkind = "xgboost"\nname = "xgb"\nparams = { learning_rat = 0.1 }\n',
                             ["[[models]] #1 (xgb) params.learning_rat = 0.1", 'did you mean "learning_rate"']),
    "catboost learning_rat": ('[[models]]\nkind = "catboost"\nparams = { learning_rat = 0.1 }\n',
                              ["[[models]] #1 (catboost) params.learning_rat = 0.1", 'did you mean "learning_rate"']),
    "misspelt generic param": ('[[models]]\nkind = "lightgbm"\nparams = { early_stoping_rounds = 5 }\n',
                               ["params.early_stoping_rounds = 5", 'did you mean "early_stopping_rounds"']),
    "unknown sampling key": ('[[models]]\nsampling = { negative_rato = 0.1 }\n',
                             ["[[models]] #1 (lightgbm) sampling.negative_rato = 0.1", 'did you mean "negative_ratio"']),
    "sampling out of range": ("[[models]]\nsampling = { positive_oversample = 2 }\n",
                              ["sampling.positive_oversample = 2", "less than or equal to 1"]),
    "unknown CNN param": ('[[models]]\nkind = "cnn"\nparams = { weight_decy = 0.1 }\n',
                          ["[[models]] #1 (cnn) params.weight_decy = 0.1", 'did you mean "weight_decay"']),
    "CNN param of the wrong type": ('[[models]]\nkind = "cnn"\nparams = { epochs = "3" }\n',
                                    ['[[models]] #1 (cnn) params.epochs = "3"', "valid integer"]),
    "CNN param out of its vocabulary": ('[[models]]\nkind = "cnn"\nparams = { precision = "fp61" }\n',
                                        ['params.precision = "fp61"', 'did you mean "fp16"']),
    "CNN settings on a booster": ("[[models]]\nkind = \"xgboost\"\nepochs = 3\n", ["[[models]] #1 (xgboost) epochs = 3", 'kind = "cnn"']),
    "unknown feature group": ('[[models]]\nfeatures = ["metadata", "embeding"]\n',
                              ['features[1] = "embeding"', 'did you mean "embedding"']),
    "unknown section": ("[featurs]\n", ["[featurs]", "unknown section", 'did you mean "features"']),
    "unknown key": ("[features]\npatinet = true\n", ["[features] patinet = true", "unknown key", 'did you mean "patient"']),
    "unknown reader": ('[data]\nformat = "ham1000"\npath = "x"\n', ['[data] format = "ham1000"', 'did you mean "ham10000"']),
    "unknown task": ('[data]\ntask = "binay"\n', ['[data] task = "binay"', 'did you mean "binary"']),
    "unknown TTA": ('[extract]\ntta = ["hflp"]\n', ['[extract] tta[0] = "hflp"', 'did you mean "hflip"']),
    "extract range": ("[extract]\nstreams = 0\n", ["[extract] streams = 0", "greater than or equal to 1"]),
    "ensemble names an absent model": (TWO + '[ensemble]\nmodels = ["lightgbm", "catbost"]\n',
                                       ['[ensemble] models = ["lightgbm", "catbost"]', "unknown model", "catbost"]),
    "cnn_feature names an absent booster": (TWO + '[[models]]\nkind = "cnn"\n[ensemble]\ncnn_feature = ["xgboost", "lightgbn"]\n',
                                            ['[ensemble] cnn_feature = ["xgboost", "lightgbn"]', 'did you mean "lightgbm"']),
    "cnn_feature names the CNN": (TWO + '[[models]]\nkind = "cnn"\n[ensemble]\ncnn_feature = ["cnn"]\n',
                                  ['[ensemble] cnn_feature = ["cnn"]', "unknown booster", "booster [[models]] only"]),
    "cnn_feature list without a CNN": (TWO + '[ensemble]\ncnn_feature = ["lightgbm"]\n',
                                       ['[ensemble] cnn_feature = ["lightgbm"]', 'kind = "cnn"']),
    "cnn_feature as a word": ('[ensemble]\ncnn_feature = "yes"\n',
                              ['[ensemble] cnn_feature = "yes"', "expected true, false or a list of [[models]] names"]),
    "stack of one model": ('[[models]]\nkind = "lightgbm"\n[ensemble]\nmethod = "stack"\n',
                           ['[ensemble] method = "stack"', "at least two base models"]),
    "duplicate names": (TWO.replace("xgboost", "lightgbm"), ['[[models]] name = "lightgbm"', "distinct"]),
    "sampling on a multiclass task": ('[data]\ntask = "multiclass"\n[[models]]\nsampling = { negative_ratio = 0.1 }\n',
                                      ["[[models]] #1 (lightgbm) sampling", "binary tasks only"]),
    "CNN stop metric of another task": ('[[models]]\nkind = "cnn"\nparams = { stop_metric = "macro_f1" }\n',
                                        ['params.stop_metric = "macro_f1"', "unknown binary metric"]),
}


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(body if body.startswith("[data]") else HEAD + body)
    return p


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_section_key_value(tmp_path, case):
    body, fragments = BAD[case]
    with pytest.raises(ConfigError) as err:
        RunConfig.from_toml(write(tmp_path, body))
    text = str(err.value)
    assert str(tmp_path / "bad.toml") in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def test_misspelt_method_with_one_model_does_not_talk_about_stacking(tmp_path):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_toml(write(tmp_path, BAD["misspelt method, one model"][0]))
    assert "level-2" not in str(err.value) and "base models" not in str(err.value)


def test_every_problem_is_reported_at_once(tmp_path):
    body = ('[cv]\nn_splits = "five"\n[features]\npatient = "false"\n[[models]]\nkind = "lightgbn"\n'
            '[[models]]\nkind = "xgboost"\nseeds = 0\nparams = { learning_rat = 0.1 }\n[ensemble]\nmethod = "stak"\n')
    with pytest.raises(ConfigError) as err:
        RunConfig.from_toml(write(tmp_path, body))
    text = str(err.value)
    assert "6 problems" in text
    for fragment in ('[cv] n_splits = "five"', '[features] patient = "false"', '#1 (lightgbn) kind = "lightgbn"',
                     "#2 (xgboost) seeds = 0", "#2 (xgboost) params.learning_rat", '[ensemble] method = "stak"'):
        assert fragment in text


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(config):
    cfg = RunConfig.from_toml(config)
    text = cfg.to_toml()
    assert RunConfig.from_dict(tomllib.loads(text)) == cfg
    assert not re.search(r"^\[[^\n]*\]\n(\n|\Z)", text, re.M)  # no empty table (params = {}) as a bare header


def test_round_trip_keeps_params_sampling_and_nested_tables(tmp_path):
    cfg = RunConfig.from_dict({
        "data": {"format": "ham10000", "path": "p", "task": "binary"},
        "extract": {"weights": {"resnet18": "/w/r.pth"}, "tta": ["hflip"], "pca_components": 4},
        "models": [{"kind": "lightgbm", "name": "lgb", "seeds": [0, 1], "params": {"num_leaves": 7, "learning_rate": 0.05},
                    "sampling": {"negative_ratio": 0.1}, "features": ["metadata"]},
                   {"kind": "xgboost", "params": {"eta": 0.1, "max_depth": 3}}],
        "ensemble": {"method": "rank", "models": ["lgb", "xgboost"]},
    })
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml())
    assert RunConfig.from_toml(p) == cfg


def test_ints_are_fine_floats():
    cfg = RunConfig.from_dict({"models": [{"kind": "lightgbm", "sampling": {"negative_ratio": 1}}],
                               "features": {"missingness_leak_auc": 1}})
    assert cfg.models[0].sampling == {"negative_ratio": 1} and cfg.features.missingness_leak_auc == 1.0


def test_booster_parameter_names_come_from_the_libraries():
    lightgbm, xgboost, catboost = (adapter_class(k).library_params() for k in ("lightgbm", "xgboost", "catboost"))
    assert {"min_child_samples", "min_data_in_leaf", "colsample_bytree", "feature_fraction", "verbosity"} <= lightgbm
    assert {"eta", "learning_rate", "lambda", "reg_lambda", "max_cat_to_onehot", "eval_metric", "rate_drop"} <= xgboost
    assert {"depth", "max_depth", "l2_leaf_reg", "bootstrap_type", "thread_count"} <= catboost
    assert not {"learning_rat"} & (lightgbm | xgboost | catboost)
    assert "name" not in xgboost  # the objective's own name in the saved config, not a parameter


@pytest.mark.parametrize("kind", booster_kinds())
@pytest.mark.parametrize("task", TASKS)
def test_dermstack_default_params_pass_the_check(kind, task):
    params = default_params(kind, task)
    assert set(params) - set(GENERIC_PARAMS)  # the check looks at library names, not only generic ones
    assert ModelConfig(kind=kind, params=params).params == params


def test_built_in_python_the_sections_raise_config_errors():
    with pytest.raises(ConfigError, match=r"\[extract\] streams = 0"):
        ExtractSettings(streams=0)
    with pytest.raises(ConfigError, match=r'\[features\] patient = "no"'):
        FeaturesConfig(patient="no")
    with pytest.raises(ConfigError, match=r"params\.learning_rat = 0\.1: unknown lightgbm parameter"):
        ModelConfig(kind="lightgbm", params={"learning_rat": 0.1})
    with pytest.raises(ConfigError, match="binary tasks only"):
        SamplingConfig.from_dict({"negative_ratio": 0.1}, "multiclass")
    assert SamplingConfig.from_dict({"negative_ratio": 0, "positive_oversample": 0}, "binary") is None


@pytest.mark.slow
def test_cli_run_with_a_bad_config_exits_2_before_writing_anything(tmp_path):
    bad = write(tmp_path, '[features]\npatient = "false"\n[[models]]\nkind = "lightgbn"\n')
    out = tmp_path / "D"
    r = subprocess.run([sys.executable, "-c", "from dermstack.cli import main; main()", "run", str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert '[features] patient = "false"' in r.stderr and 'did you mean "lightgbm"' in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("kind, params, says", [
    ("lightgbm", {"num_leaves": -3}, r"num_leaves.*> \(1\)"),
    ("xgboost", {"max_depth": -2}, "max_depth should be greater equal to 0"),
    ("catboost", {"depth": 40}, "Maximum tree depth is 16"),
    ("lightgbm", {"n_estimators": -1}, "must be greater than 0"),
])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_booster_parameter_values_are_checked_before_ingest(kind, params, says, task):
    """Names are the schema's; values only the library knows, so a probe fit on a tiny table asks it."""
    from dermstack.boosting.registry import probe_params

    with pytest.raises(ConfigError, match=rf"\[\[models\]\] x: params = .*: {kind} refuses them: .*{says}"):
        probe_params(kind, task, params, "[[models]] x:")
    probe_params(kind, task, {"learning_rate": 0.1}, "[[models]] x:")  # a good value passes


@pytest.mark.slow
def test_cli_run_with_a_bad_parameter_value_exits_2_before_ingest(tmp_path):
    bad = write(tmp_path, '[data]\nformat = "synthetic-isic2024"\n[[models]]\nkind = "lightgbm"\nparams = { num_leaves = -3 }\n')
    out = tmp_path / "D"
    r = subprocess.run([sys.executable, "-c", "from dermstack.cli import main; main()", "run", str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "lightgbm refuses them: Check failed: (num_leaves) > (1)" in r.stderr
    assert not out.exists()


def test_cnn_feature_names_the_boosters_trained_again():
    models = [{"kind": "lightgbm"}, {"kind": "xgboost"}, {"kind": "catboost"}, {"kind": "cnn", "name": "net"}]
    def again(value):
        return RunConfig.from_dict({"models": models, "ensemble": {"cnn_feature": value}}).feature_group_models()
    assert again(True) == ["lightgbm+net", "xgboost+net", "catboost+net"]
    assert again(["xgboost", "lightgbm"]) == ["lightgbm+net", "xgboost+net"]  # in [[models]] order
    assert again(False) == again([]) == []
    cfg = RunConfig.from_dict({"models": models, "ensemble": {"cnn_feature": ["lightgbm"], "models": ["lightgbm+net", "net"]}})
    assert RunConfig.from_dict(tomllib.loads(cfg.to_toml())) == cfg
    with pytest.raises(ConfigError, match=r'\[ensemble\] models .*"catboost\+net"'):
        RunConfig.from_dict({"models": models, "ensemble": {"cnn_feature": ["lightgbm"], "models": ["catboost+net", "net"]}})
