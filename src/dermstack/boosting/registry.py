""":func:`create_adapter` and :func:`load_adapter` for any task (multi-label: one booster per class) and
any booster kind (its adapter class from the registry, :func:`~dermstack.boosting.base.adapter_class`),
and the probe fit that checks a user's booster params before a run starts."""
from __future__ import annotations

import importlib
from functools import partial
from typing import Any

import numpy as np

from dermstack.boosting.base import BoosterAdapter, PerClassAdapter, adapter_class, booster_kinds
from dermstack.errors import ConfigError, reading
from dermstack.taskkind import TaskKind


def dask_adapter_class(kind: str | type[BoosterAdapter]) -> type[BoosterAdapter]:
    """The adapter of ``kind`` that trains each fit through a Dask cluster (imported on first use)."""
    cls = adapter_class(kind)
    if cls.dask_adapter is None:
        dask = [k for k in booster_kinds() if adapter_class(k).dask_adapter]
        raise ConfigError(f"{cls.kind} has no Dask training path; Dask supports {sorted(dask)}")
    module, name = cls.dask_adapter.split(":")
    return getattr(importlib.import_module(module), name)


def create_adapter(kind: str | type[BoosterAdapter], task: str, classes: list[str], params: dict[str, Any] | None = None,
                   seed: int = 0, categorical: list[str] | None = None, threads: int | None = None, client=None):
    """An unfitted adapter of booster kind ``kind`` (a name or an adapter class) for ``task``: binary ->
    (n,) scores, multiclass -> (n, C) softmax, multilabel -> :class:`PerClassAdapter` with one binary
    booster per class. ``client``: a ``distributed.Client`` to train through Dask."""
    cls, task = (adapter_class(kind) if client is None else dask_adapter_class(kind)), TaskKind(task)
    extra = {"client": client} if client is not None else {}
    if task.multilabel:
        return PerClassAdapter(partial(cls, TaskKind.BINARY, 1, params or {}, seed, categorical, threads, **extra), classes)
    return cls(str(task), task.n_outputs(classes), params or {}, seed, categorical, threads, **extra)


def load_adapter(kind: str | type[BoosterAdapter], task: str, classes: list[str], stem, categorical: list[str] | None = None):
    """Read the native model file(s) written by ``adapter.save(stem)``."""
    cls, task = adapter_class(kind), TaskKind(task)
    with reading(stem.with_name(stem.name + cls.ext), f"{cls.kind} model"):
        if task.multilabel:
            return PerClassAdapter.load(cls, stem, classes, categorical)
        return cls.load(stem, str(task), task.n_outputs(classes), categorical)


#: rows of the probe fit in :func:`probe_params`: enough for every library to build a tree
_PROBE_ROWS = 60


def probe_params(kind: str, task: str, params: dict[str, Any], where: str) -> None:
    """Fit ``kind`` with the user's ``params`` for a few rounds on a tiny synthetic table, so that a
    value the library refuses (``num_leaves = -3``) is a ConfigError before ingest, not a library
    traceback from the first fold hours later. Names are checked by the config schema; values only
    the library knows. Rounds are capped at 3 unless the user's value is itself the bad one."""
    import pandas as pd

    from dermstack.boosting.defaults import resolve_params

    task, adapter = TaskKind(task), adapter_class(kind)
    classes = ["malignant"] if task.binary else ["a", "b", "c"]
    codes = np.arange(_PROBE_ROWS) % (2 if task.binary else len(classes))
    probe = resolve_params(adapter, task, params, _PROBE_ROWS, _PROBE_ROWS // 3)
    for name in adapter.synonyms("n_estimators") | {"n_estimators"}:
        if isinstance(probe.get(name), int) and probe[name] > 0:
            probe[name] = min(probe[name], 3)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(_PROBE_ROWS, 3)), columns=["f0", "f1", "f2"])
    y = np.eye(len(classes), dtype=int)[codes] if task.multilabel else codes
    try:
        create_adapter(adapter, task, classes, probe, threads=1).fit(X, y, X, y)
    except Exception as e:  # noqa: BLE001 - each library raises its own types; the message is what matters
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} params = {params}: {kind} refuses them: {msg}") from None


def probe_models(models, task: str) -> None:
    """:func:`probe_params` for every booster ``[[models]]`` entry that sets params."""
    boosters = booster_kinds()
    for m in models:
        if m.kind in boosters and m.params:
            probe_params(m.kind, task, m.params, f"[[models]] {m.label}:")
