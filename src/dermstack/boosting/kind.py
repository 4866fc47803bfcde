"""LightGBM, XGBoost and CatBoost as model kinds of the registry (:mod:`dermstack.registry`): each
adapter class describes its library, and :func:`booster_kind` makes a kind of it."""
from __future__ import annotations

from functools import partial

from dermstack.boosting.base import BoosterAdapter
from dermstack.boosting.catboost_ import CatBoostAdapter
from dermstack.boosting.cv import cross_validate
from dermstack.boosting.explain import explain_boosters
from dermstack.boosting.lightgbm_ import LightGBMAdapter
from dermstack.boosting.params import BoosterParams, param_problems
from dermstack.boosting.store import SavedBoosters
from dermstack.boosting.xgboost_ import XGBoostAdapter
from dermstack.registry import FitInputs, ModelKind, register

#: a cheap booster for smoke runs and tests (dermstack.testing)
SMOKE = {"params": {"n_estimators": 40, "early_stopping_rounds": 10}}


def _cross_validate(inputs: FitInputs):
    return cross_validate(inputs.features, inputs.task, inputs.plan, inputs.model, inputs.out_dir, executor=inputs.executor,
                          fold_features=inputs.fold_features, needs=inputs.needs)


def booster_kind(adapter: type[BoosterAdapter], default=lambda profile: True) -> ModelKind:
    """The registry kind of a booster library: its name and description from ``adapter``, dermstack's
    booster params plus every parameter the library accepts, the shared cross-validation, saved
    folders and TreeSHAP explainer, in the default model set (``default(profile)``: always)."""
    return ModelKind(adapter.kind, adapter.description, BoosterParams, _cross_validate, SavedBoosters, explain_boosters,
                     default=default, check=partial(param_problems, adapter), adapter=adapter, smoke=SMOKE)


for _adapter in (LightGBMAdapter, XGBoostAdapter, CatBoostAdapter):
    register(booster_kind(_adapter))
