"""Library name -> adapter class, and :func:`create_adapter` for any task (multi-label: one booster per class)."""
from __future__ import annotations

import importlib
from functools import partial
from typing import Any

from dermstack.boosting.base import BoosterAdapter, PerClassAdapter
from dermstack.boosting.defaults import KINDS
from dermstack.errors import ConfigError
from dermstack.task import TaskKind

_LOCAL = {
    "lightgbm": "dermstack.boosting.lightgbm_:LightGBMAdapter",
    "xgboost": "dermstack.boosting.xgboost_:XGBoostAdapter",
    "catboost": "dermstack.boosting.catboost_:CatBoostAdapter",
}
_DASK = {
    "lightgbm": "dermstack.boosting.dask_:DaskLightGBMAdapter",
    "xgboost": "dermstack.boosting.dask_:DaskXGBoostAdapter",
}


def adapter_class(kind: str, dask: bool = False) -> type[BoosterAdapter]:
    """The adapter class of library ``kind`` (imported on first use)."""
    table = _DASK if dask else _LOCAL
    if kind not in table:
        if kind in KINDS:
            raise ConfigError(f"{kind} has no Dask training path; Dask supports {sorted(_DASK)}")
        raise ConfigError(f"unknown boosting library {kind!r}; known: {list(KINDS)}")
    module, name = table[kind].split(":")
    return getattr(importlib.import_module(module), name)


def create_adapter(kind: str, task: str, classes: list[str], params: dict[str, Any] | None = None, seed: int = 0,
                   categorical: list[str] | None = None, threads: int | None = None, client=None):
    """An unfitted adapter for ``task``: binary -> (n,) scores, multiclass -> (n, C) softmax,
    multilabel -> :class:`PerClassAdapter` with one binary booster per class. ``client``: a
    ``distributed.Client`` to train through Dask."""
    cls, task = adapter_class(kind, dask=client is not None), TaskKind(task)
    extra = {"client": client} if client is not None else {}
    if task.multilabel:
        return PerClassAdapter(partial(cls, "binary", 1, params or {}, seed, categorical, threads, **extra), classes)
    return cls(str(task), task.n_outputs(classes), params or {}, seed, categorical, threads, **extra)


def load_adapter(kind: str, task: str, classes: list[str], stem, categorical: list[str] | None = None):
    """Read the native model file(s) written by ``adapter.save(stem)``."""
    cls, task = adapter_class(kind), TaskKind(task)
    if task.multilabel:
        return PerClassAdapter.load(cls, stem, classes, categorical)
    return cls.load(stem, str(task), task.n_outputs(classes), categorical)
