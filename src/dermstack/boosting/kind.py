"""LightGBM, XGBoost and CatBoost as model kinds of the registry (:mod:`dermstack.registry`)."""
from __future__ import annotations

from functools import partial

from dermstack.boosting.cv import cross_validate
from dermstack.boosting.explain import feature_groups, load_fold_boosters
from dermstack.boosting.params import BOOSTER_KINDS, BoosterParams, param_problems
from dermstack.boosting.store import SavedBoosters
from dermstack.registry import FitInputs, ModelKind, register

DESCRIPTIONS = {
    "lightgbm": "LightGBM gradient-boosted trees on the feature table (size-aware defaults); params: these and every LightGBM parameter",
    "xgboost": "XGBoost gradient-boosted trees on the feature table (size-aware defaults); params: these and every XGBoost parameter",
    "catboost": "CatBoost gradient-boosted trees on the feature table (size-aware defaults); params: these and every CatBoost parameter",
}


def _cross_validate(inputs: FitInputs):
    return cross_validate(inputs.features, inputs.task, inputs.plan, inputs.model, inputs.out_dir, executor=inputs.executor,
                          fold_features=inputs.fold_features, needs=inputs.needs)


def explain(run, model_dir):
    """The fold x seed boosters (TreeSHAP) and each feature's group."""
    return load_fold_boosters(model_dir), feature_groups(model_dir) or dict(run.features.groups)


for _name in BOOSTER_KINDS:
    register(ModelKind(
        _name, DESCRIPTIONS[_name], BoosterParams, _cross_validate, SavedBoosters, explain,
        default=lambda n_train: True, check=partial(param_problems, _name), takes_cnn_feature=True))
