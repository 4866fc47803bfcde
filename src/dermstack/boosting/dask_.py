"""Training through Dask (``lightgbm.dask``, ``xgboost.dask``) for data that outgrows one machine.

The adapters differ from the local ones only in ``fit``: the fold's rows are split into one
partition per Dask worker and trained by the cluster; the result is the same native booster, so
prediction, saving and loading are the local adapters' own. ``lightgbm.dask`` has no early
stopping, so LightGBM trains ``n_estimators`` rounds and keeps the best iteration on the fold's
validation part (the same metric the local adapter stops on).
"""
from __future__ import annotations

import logging
import os
import warnings

import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from dermstack.boosting.lightgbm_ import LightGBMAdapter
from dermstack.boosting.xgboost_ import XGBoostAdapter
from dermstack.cluster import WORKER_WAIT, dask_client
from dermstack.errors import ConfigError
from dermstack.jobs import DASK_ADDRESS_ENV
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)



def connect(address: str | None = None, timeout: str | None = None, worker_wait: float = WORKER_WAIT):
    """A ``distributed.Client`` for ``address`` (or ``$DERMSTACK_DASK_ADDRESS``), checked and connected by
    :func:`dermstack.cluster.dask_client`; None when neither is set."""
    address = address or os.environ.get(DASK_ADDRESS_ENV)
    return dask_client(address, timeout, worker_wait) if address else None


def _partitions(client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def _to_dask(client, X: pd.DataFrame, y: np.ndarray | None = None, weight: np.ndarray | None = None):
    n = _partitions(client)
    frame = X.reset_index(drop=True)
    ddf = dd.from_pandas(frame, npartitions=n, sort=False)
    out = [ddf]
    for v in (y, weight):
        out.append(None if v is None else dd.from_pandas(pd.Series(np.asarray(v)), npartitions=n, sort=False))
    return out


class DaskClient:
    """Mixin: an adapter that trains through the ``distributed.Client`` given as ``client=``."""

    def __init__(self, *args, client=None, **kwargs):
        super().__init__(*args, **kwargs)
        if client is None:
            raise ConfigError(f"the Dask {self.kind} adapter needs a distributed.Client")
        self.client = client


class DaskLightGBMAdapter(DaskClient, LightGBMAdapter):

    def fit(self, X, y, X_valid, y_valid, weight=None, valid_weight=None):
        from lightgbm.dask import DaskLGBMClassifier

        self.feature_names = list(X.columns)
        params = self.train_params()
        for key in ("metric", "num_threads"):  # no early stopping in lightgbm.dask; workers own their threads
            params.pop(key, None)
        dX, dy, dw = _to_dask(self.client, X, y, weight)
        model = DaskLGBMClassifier(client=self.client, n_estimators=self.n_estimators, **params)
        with warnings.catch_warnings():  # the workers own their threads: lightgbm.dask ignores n_jobs
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(dX, dy, sample_weight=dw)
        booster = model.booster_
        self.best_iteration = best_iteration(booster, X_valid, y_valid, valid_weight, self.problem, self.stopping_metric)
        self.native = lgb.Booster(model_str=booster.model_to_string(num_iteration=self.best_iteration))
        return self


def best_iteration(booster: lgb.Booster, X: pd.DataFrame, y: np.ndarray, weight, problem: str, metric: str) -> int:
    """The iteration (1-based) with the best validation ``metric`` (auc or logloss) of a trained booster."""
    n_iter = booster.current_iteration()
    per_tree = [np.asarray(booster.predict(X, start_iteration=i, num_iteration=1, raw_score=True)) for i in range(n_iter)]
    raw = np.cumsum(np.stack(per_tree), axis=0)
    scores = []
    for r in raw:
        if TaskKind(problem).binary:
            p = 1.0 / (1.0 + np.exp(-r))
            scores.append(skm.roc_auc_score(y, p, sample_weight=weight) if metric == "auc"
                          else -skm.log_loss(y, p, sample_weight=weight, labels=[0, 1]))
        else:
            e = np.exp(r - r.max(axis=1, keepdims=True))
            scores.append(-skm.log_loss(y, e / e.sum(axis=1, keepdims=True), sample_weight=weight, labels=np.arange(r.shape[1])))
    return int(np.argmax(scores)) + 1


class DaskXGBoostAdapter(DaskClient, XGBoostAdapter):

    def fit(self, X, y, X_valid, y_valid, weight=None, valid_weight=None):
        import xgboost.dask as dxgb
        from xgboost.core import XGBoostError

        self.feature_names = list(X.columns)
        dX, dy, dw = _to_dask(self.client, X, y, weight)
        vX, vy, vw = _to_dask(self.client, X_valid, y_valid, valid_weight)
        dtrain = dxgb.DaskDMatrix(self.client, dX, dy, weight=dw, enable_categorical=True)
        dvalid = dxgb.DaskDMatrix(self.client, vX, vy, weight=vw, enable_categorical=True)
        params = self.train_params()
        params.pop("nthread", None)
        for attempt in range(1, COLLECTIVE_ATTEMPTS + 1):
            try:
                out = dxgb.train(self.client, params, dtrain, num_boost_round=self.n_estimators, evals=[(dvalid, "valid")],
                                 early_stopping_rounds=self.early_stopping_rounds, verbose_eval=False)
                break
            except XGBoostError as e:
                if attempt == COLLECTIVE_ATTEMPTS or not collective_failure(e):
                    raise
                log.warning("xgboost.dask: the workers' collective failed (%s); training again (attempt %d of %d)",
                            str(e).splitlines()[0][:200], attempt + 1, COLLECTIVE_ATTEMPTS)
        self.set_booster(out["booster"])
        return self


#: tries of one XGBoost training on Dask: the workers' ring (allreduce / allgather over sockets) can fail on a
#: busy machine or network (a socket poll error), and the same training again gives the same booster
COLLECTIVE_ATTEMPTS = 3


def collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is XGBoost's collective communication failing, not the training itself."""
    return any(k in str(error) for k in ("allreduce", "allgather", "Poll error", "collective"))
