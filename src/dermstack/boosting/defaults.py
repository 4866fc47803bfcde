"""Default parameters per library and task.

Binary defaults are the tuned values of the public ISIC 2024 tabular pipeline that the top
solutions started from (shallow trees, strong column sub-sampling, bagging, a positive weight of
about 3 on top of per-fold negative under-sampling). Multi-class and multi-label defaults suit
small metadata tables (HAM10000, MILK10k): smaller leaves, more regularisation and class weights
so that argmax / the 0.5 threshold favour macro F1.

Keys of :data:`dermstack.boosting.base.GENERIC_PARAMS` are handled by dermstack
(``n_estimators``: maximum rounds; ``early_stopping_rounds``; ``early_stopping_metric``: auc | logloss;
``class_weight``: none | balanced |
sqrt | number, i.e. the positive weight of each binary/multi-label class or the weight of each
multiclass class; ``device``: auto | cpu | gpu); every other key is the library's own parameter.
"""
from __future__ import annotations

from typing import Any

from dermstack.config import BOOSTER_KINDS
from dermstack.errors import ConfigError

KINDS = BOOSTER_KINDS

_BINARY: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "learning_rate": 0.032, "max_depth": 4, "num_leaves": 103, "lambda_l1": 0.088, "lambda_l2": 0.004,
        "colsample_bytree": 0.83, "colsample_bynode": 0.40, "bagging_fraction": 0.77, "bagging_freq": 4,
        "min_data_in_leaf": 85, "scale_pos_weight": 2.8,
    },
    "xgboost": {
        "learning_rate": 0.085, "lambda": 8.88, "alpha": 0.68, "max_depth": 6, "subsample": 0.60,
        "colsample_bytree": 0.84, "colsample_bylevel": 0.55, "colsample_bynode": 0.99, "scale_pos_weight": 3.3,
    },
    "catboost": {
        "learning_rate": 0.069, "depth": 7, "l2_leaf_reg": 6.2, "subsample": 0.62, "min_data_in_leaf": 24,
        "bootstrap_type": "Bernoulli", "scale_pos_weight": 2.6,
    },
}
_SMALL_TABLE: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "learning_rate": 0.03, "num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 20, "lambda_l2": 1.0,
        "feature_fraction": 0.7, "bagging_fraction": 0.8, "bagging_freq": 1,
    },
    "xgboost": {
        "learning_rate": 0.03, "max_depth": 4, "min_child_weight": 2, "lambda": 1.0, "subsample": 0.8,
        "colsample_bytree": 0.7,
    },
    "catboost": {"learning_rate": 0.05, "depth": 5, "l2_leaf_reg": 3.0, "bootstrap_type": "Bernoulli", "subsample": 0.8},
}
_ROUNDS = {
    # binary stops on AUC: with under-sampled training rows the validation logloss only gets worse (the
    # prior moved), so logloss stopping keeps 1 tree (measured at 401k rows). Multi-class/label: F1 at a
    # fixed threshold needs calibrated scores, so (class-weighted) logloss
    "binary": {"n_estimators": 300, "early_stopping_rounds": 50, "early_stopping_metric": "auc"},
    "multiclass": {"n_estimators": 2000, "early_stopping_rounds": 100, "early_stopping_metric": "logloss", "class_weight": "sqrt"},
    "multilabel": {"n_estimators": 1000, "early_stopping_rounds": 100, "early_stopping_metric": "logloss", "class_weight": "balanced"},
}
#: ISIC 2024 winners' resampling (binary only): see :mod:`dermstack.boosting.sampling`.
DEFAULT_SAMPLING = {"negative_ratio": 0.01, "positive_oversample": 0.003}


def default_params(kind: str, task: str) -> dict[str, Any]:
    """Defaults for library ``kind`` on ``task``; user params are laid over these."""
    if kind not in KINDS:
        raise ConfigError(f"unknown boosting library {kind!r}; known: {list(KINDS)}")
    if task not in _ROUNDS:
        raise ConfigError(f"unknown task {task!r}")
    table = _BINARY if task == "binary" else _SMALL_TABLE
    return {**_ROUNDS[task], **table[kind]}


#: Synonyms the libraries accept for the same parameter (LightGBM's come from LightGBM itself).
_ALIASES: dict[str, list[set[str]]] = {
    "xgboost": [{"learning_rate", "eta"}, {"lambda", "reg_lambda"}, {"alpha", "reg_alpha"},
                {"min_split_loss", "gamma"}, {"seed", "random_state"}],
    "catboost": [{"learning_rate", "eta"}, {"depth", "max_depth"}, {"l2_leaf_reg", "reg_lambda"},
                 {"iterations", "n_estimators", "num_boost_round", "num_trees"}, {"random_seed", "random_state"},
                 {"min_data_in_leaf", "min_child_samples"}, {"rsm", "colsample_bylevel"}],
}


def _synonyms(kind: str, name: str) -> set[str]:
    if kind == "lightgbm":
        from lightgbm.basic import _ConfigAliases

        return set(_ConfigAliases.get(name)) | {name}
    return next((group for group in _ALIASES.get(kind, []) if name in group), {name})


def resolve_params(kind: str, task: str, user: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults for the library and task, overridden by the user's params, also when the user names a
    parameter by another of the library's aliases (``min_child_samples`` replaces ``min_data_in_leaf``)."""
    user = dict(user or {})
    merged = {k: v for k, v in default_params(kind, task).items() if not (_synonyms(kind, k) & set(user))}
    return {**merged, **user}
