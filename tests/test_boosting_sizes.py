"""Size-aware booster defaults: tiny folds get leaves they can split, large ones keep the tuned values,
and a model that never split is an error naming the parameter that stopped it."""
from __future__ import annotations

import numpy as np
import pytest

from boosting_toy import toy
from dermstack.boosting import cross_validate
from dermstack.boosting.defaults import default_params, fold_size, resolve_params, size_overrides
from dermstack.config import ModelConfig
from dermstack.errors import DataError

KINDS = ["lightgbm", "xgboost", "catboost"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_isic2024_scale_keeps_the_tuned_defaults(kind, task):
    # a 401k-row ISIC 2024 fold after the winners' resampling: ~96k negatives, ~960 positives; CatBoost
    # drops its CTRs of categorical combinations there (their cost grows with the rows)
    single_ctr = {"max_ctr_complexity": 1} if kind == "catboost" else {}
    assert size_overrides(kind, task, 97_000, 960) == single_ctr
    assert resolve_params(kind, task, None, 97_000, 960) == default_params(kind, task) | single_ctr


def test_catboost_combines_categoricals_below_isic2024_scale_unless_told():
    assert "max_ctr_complexity" not in size_overrides("catboost", "binary", 7_500, 1_500)  # HAM10000-size
    assert size_overrides("catboost", "binary", 50_000, 500)["max_ctr_complexity"] == 1
    assert resolve_params("catboost", "binary", {"max_ctr_complexity": 3}, 97_000, 960)["max_ctr_complexity"] == 3


def test_small_folds_scale_leaves_and_stopping():
    ph2 = size_overrides("lightgbm", "binary", 20, 3)  # PH2: 20 training rows, 3 melanomas
    assert ph2["min_data_in_leaf"] == 2 and ph2["min_data_per_group"] == 2
    assert ph2["early_stopping_metric"] == "logloss"
    ham = size_overrides("lightgbm", "binary", 1980, 390)  # HAM10000 dev fold
    assert ham == {}  # 85 already fits 1,980 rows with 390 positives
    archive = size_overrides("lightgbm", "binary", 147, 70)
    assert archive == {"min_data_in_leaf": 7, "min_data_per_group": 7}
    leaves = [size_overrides("lightgbm", "binary", n, n // 5).get("min_data_in_leaf", 85) for n in (20, 100, 400, 2000, 10**5)]
    assert leaves == sorted(leaves) and leaves[-1] == 85
    assert size_overrides("xgboost", "binary", 20, 3)["min_child_weight"] < 1
    cb = size_overrides("catboost", "binary", 20, 3)
    assert cb["depth"] == 3 and cb["min_data_in_leaf"] == 2
    assert fold_size("binary", np.array([1, 0, 0, 0])) == (4, 1)
    assert fold_size("multiclass", np.array([0, 0, 2, 2, 2])) == (5, 2)
    assert fold_size("multilabel", np.array([[1, 0], [1, 0], [0, 0]])) == (3, 2)


def test_user_params_win_over_the_scaling_also_by_alias():
    p = resolve_params("lightgbm", "binary", {"min_child_samples": 85, "early_stopping_metric": "auc"}, 24, 4)
    assert p["min_child_samples"] == 85 and "min_data_in_leaf" not in p and p["early_stopping_metric"] == "auc"
    assert resolve_params("catboost", "binary", {"max_depth": 7}, 20, 3)["max_depth"] == 7


@pytest.mark.parametrize("kind", KINDS)
def test_default_config_trains_a_real_model_on_tiny_data(kind):
    """60 rows, ~9 positives, 3 folds: with ISIC-2024-scale leaves every fold would be one leaf."""
    _, fs, spec, plan = toy("binary", n=60, n_test=0, positive_rate=0.15, seed=3)
    res = cross_validate(fs, spec, plan, ModelConfig(kind=kind, params={"threads": 1}), bootstrap=0)
    assert res.metrics["roc_auc"] > 0.75
    assert all(o for o in res.metrics["size_overrides"])


def test_a_model_that_never_split_names_model_fold_and_parameter():
    _, fs, spec, plan = toy("binary", n=60, n_test=0, positive_rate=0.15, seed=3)
    m = ModelConfig(kind="lightgbm", name="lgb-big-leaves", params={"min_data_in_leaf": 85, "threads": 1})
    with pytest.raises(DataError, match=r"lgb-big-leaves, fold \d: .*same score.*min_data_in_leaf=85 with \d+ training rows"):
        cross_validate(fs, spec, plan, m, bootstrap=0)


def test_features_without_signal_are_named_not_passed_off_as_a_result(caplog):
    """No parameter to blame: the data gave the booster nothing on the fold. That is said (model, fold,
    why), and its constant scores stay visible as a fold metric of 0.5; the run goes on, so that one
    member of the default set cannot stop a run on a tiny export (the ensemble does not choose it)."""
    _, fs, spec, plan = toy("binary", n=60, n_test=0, positive_rate=0.15, seed=3)
    flat = fs.df.with_columns([fs.df[c].fill_null(0).clip(0, 0).alias(c) for c in ("x0", "x1", "x2")])
    fs = type(fs)(flat, {c: g for c, g in fs.groups.items() if c in ("x0", "x1", "x2")}, [])
    with caplog.at_level("WARNING"):
        res = cross_validate(fs, spec, plan, ModelConfig(kind="xgboost", params={"threads": 1}), bootstrap=0)
    assert any("xgboost, fold" in r.message and "same score" in r.message and "signal" in r.message for r in caplog.records)
    assert res.metrics["folds"]["roc_auc"] == [0.5] * plan.n_splits


def test_multilabel_leaves_follow_rows_not_the_rarest_class():
    assert size_overrides("lightgbm", "multilabel", 1200, 4) == {}  # MILK10k: 60 rows a leaf would fit; default 20
    assert size_overrides("lightgbm", "multilabel", 100, 4)["min_data_in_leaf"] == 5


def test_constant_check_per_output_and_skipped_columns():
    from dermstack.boosting.defaults import check_scores_vary

    varied, flat = np.array([0.1, 0.2, 0.3]), np.full(3, 0.5)
    both = np.column_stack([varied, flat])
    check_scores_vary("lightgbm", "m", 0, both, lambda: both, {}, 30, 5)  # softmax-like: one column varies
    check_scores_vary("lightgbm", "m", 0, both, lambda: both, {}, 30, 5, per_output=True, skip=[1])  # by design
    with pytest.raises(DataError, match=r"m, fold 2: .*output column\(s\) \[1\]"):
        check_scores_vary("lightgbm", "m", 2, both, lambda: both, {"min_data_in_leaf": 20}, 30, 5, per_output=True)
    check_scores_vary("xgboost", "m", 0, flat, lambda: varied, {}, 30, 5)  # varies on training rows: it did split
