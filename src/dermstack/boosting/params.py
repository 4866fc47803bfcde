"""The boosters' ``[[models]] params``: dermstack's own keys (:class:`BoosterParams`) plus every
parameter the library itself accepts, its names read from the library (never a hand-kept list)."""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import xgboost as xgb
from catboost import CatBoostClassifier
from lightgbm.basic import _ConfigAliases
from pydantic import Strict

from dermstack.config.limits import Rounds, Threads
from dermstack.config.problems import schema, unknown, validate

BOOSTER_KINDS = ("lightgbm", "xgboost", "catboost")
#: Booster parameters dermstack handles itself; every other key goes to the library unchanged.
GENERIC_PARAMS = ("n_estimators", "early_stopping_rounds", "early_stopping_metric", "class_weight", "device", "threads")


@schema("[[models]] params")
class BoosterParams:
    """The keys dermstack handles itself (dermstack.boosting.defaults); a kind's defaults fill the
    unset ones. Every other key must be a parameter of the booster's library."""

    n_estimators: Rounds | None = None
    early_stopping_rounds: Rounds | None = None
    #: auc | logloss
    early_stopping_metric: Annotated[str, Strict()] | None = None
    #: none | balanced | sqrt | a number
    class_weight: Any = None
    #: auto | cpu | gpu
    device: Annotated[str, Strict()] | None = None
    #: threads per fit; unset: the fits of a model run side by side on a CPU, the cores shared out
    threads: Threads | None = None


def round_synonyms(kind: str) -> frozenset[str]:
    """The library's own names for the number of rounds and the early-stopping patience: bounded
    like ``n_estimators`` (a library given 10^12 rounds overflows or runs for ever)."""
    if kind == "lightgbm":
        return frozenset(_ConfigAliases.get("num_iterations", "early_stopping_round"))
    return {"catboost": frozenset({"iterations", "num_boost_round", "num_trees", "od_wait"})}.get(kind, frozenset())


def param_problems(kind: str, params: dict) -> list[tuple[str, Any, str]]:
    """``params`` keys that neither dermstack nor library ``kind`` knows, dermstack's own keys checked
    against :class:`BoosterParams`, and the library's names for the rounds against its limit."""
    if not params:
        return []
    known = {*BOOSTER_PARAMS[kind](), *GENERIC_PARAMS}
    rounds = round_synonyms(kind) - set(GENERIC_PARAMS)
    return ([(p, v, unknown(f"{kind} parameter", p, sorted(known))) for p, v in params.items() if p not in known]
            + validate(BoosterParams, {k: v for k, v in params.items() if k in GENERIC_PARAMS})[1]
            + [(k, v, why) for k, v in params.items() if k in rounds
               for _, _, why in validate(BoosterParams, {"n_estimators": v})[1]])


@functools.cache
def _lightgbm_params() -> frozenset[str]:
    """Every LightGBM parameter and alias, from LightGBM itself (LGBM_DumpParamAliases)."""
    aliases = _ConfigAliases._get_all_param_aliases()
    return frozenset(aliases) | {a for names in aliases.values() for a in names}


#: XGBoost boosters whose saved configuration lists the parameters of each booster, tree method and objective
_XGB_PROBES = (
    {"objective": "binary:logistic"}, {"objective": "multi:softprob", "num_class": 2}, {"booster": "dart"},
    {"booster": "gblinear"}, {"booster": "gblinear", "updater": "coord_descent"}, {"tree_method": "approx"},
    {"tree_method": "exact"}, {"objective": "reg:tweedie"}, {"objective": "reg:pseudohubererror"},
    {"objective": "reg:quantileerror", "quantile_alpha": 0.5}, {"objective": "rank:ndcg"}, {"objective": "survival:aft"},
)


@functools.cache
def _xgboost_params() -> frozenset[str]:
    """XGBoost's parameter names, from XGBoost itself: every leaf key of ``Booster.save_config()`` (which
    lists each parameter, aliases such as learning_rate/reg_lambda included) of one-round boosters of
    each kind and objective, plus those the sklearn wrapper passes to ``xgboost.train``."""
    names = set(xgb.XGBModel().get_xgb_params())
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.0, 1.0])
    for probe in _XGB_PROBES:
        data = xgb.DMatrix(X, label=y)
        if probe.get("objective") == "rank:ndcg":
            data.set_group([2])
        if probe.get("objective") == "survival:aft":
            data.set_float_info("label_lower_bound", y + 1)
            data.set_float_info("label_upper_bound", y + 2)
        _leaf_keys(json.loads(xgb.train({**probe, "nthread": 1}, data, 1).save_config()), names)
    return frozenset(names - {"name"})  # "name" is the objective's / updater's own name, not a parameter


def _leaf_keys(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _leaf_keys(v, out) if isinstance(v, (dict, list)) else out.add(k)
    elif isinstance(node, list):
        for v in node:
            _leaf_keys(v, out)


@functools.cache
def _catboost_params() -> frozenset[str]:
    """The keyword arguments of ``CatBoostClassifier`` (every CatBoost parameter and alias)."""
    return frozenset(inspect.signature(CatBoostClassifier.__init__).parameters) - {"self"}


#: booster kind -> the parameter names its library accepts (a kind without an entry is not checked)
BOOSTER_PARAMS: dict[str, Callable[[], frozenset[str]]] = {
    "lightgbm": _lightgbm_params, "xgboost": _xgboost_params, "catboost": _catboost_params,
}

