"""Boosting through Dask on a small LocalCluster: the same adapters, native boosters, reloadable locally."""
from __future__ import annotations

import numpy as np
import pytest

from boosting_toy import toy
from dermstack.boosting import cross_validate, predict_saved
from dermstack.boosting.dask_ import connect
from dermstack.config import ModelConfig
from dermstack.errors import ConfigError

pytestmark = pytest.mark.slow  # the heavy tests: `make test` runs them, `make test-fast` does not

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.mark.parametrize("kind,task", [("lightgbm", "binary"), ("lightgbm", "multiclass"), ("xgboost", "binary"),
                                       ("xgboost", "multilabel")])
def test_dask_training_matches_local_quality(client, kind, task, tmp_path):
    _, fs, spec, plan = toy(task, n=900, n_test=30)
    cfg = ModelConfig(kind=kind, params={"n_estimators": 40, "early_stopping_rounds": 10, "threads": 1})
    res = cross_validate(fs, spec, plan, cfg, tmp_path, client=client, bootstrap=0)
    local = cross_validate(fs, spec, plan, cfg, bootstrap=0)
    metric = "roc_auc" if task == "binary" else "macro_roc_auc"
    assert res.metrics[metric] > 0.85
    assert res.metrics[metric] > local.metrics[metric] - 0.03
    assert all(1 <= (b if isinstance(b, int) else min(b)) <= 40 for b in res.metrics["best_iteration"])
    # the boosters are plain native models: the local adapters reload them
    saved = predict_saved(tmp_path / kind, fs)
    assert saved.shape[0] == fs.df.height and np.isfinite(saved).all()


def test_dask_not_for_catboost_and_bad_address(client):
    _, fs, spec, plan = toy("binary", n=300, n_test=0)
    with pytest.raises(ConfigError, match="no Dask training path"):
        cross_validate(fs, spec, plan, ModelConfig(kind="catboost"), client=client)
    assert connect(None) is None
    with pytest.raises(ConfigError, match="'tcp://127.0.0.1:9': cannot connect"):
        connect("tcp://127.0.0.1:9", timeout="1s")


def test_xgboost_on_dask_trains_again_when_the_workers_collective_fails(client, monkeypatch, tmp_path):
    """A socket failure of the workers' ring is retried (the same training gives the same booster); any other error is not."""
    import xgboost.dask as dxgb
    from xgboost.core import XGBoostError

    train, calls = dxgb.train, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise XGBoostError("[learner.cc:801]:\n- [allreduce.cc:39]: Ring allreduce small failed.\n- [socket.h:79]: Poll error")
        return train(*a, **k)

    monkeypatch.setattr(dxgb, "train", flaky)
    _, fs, spec, plan = toy("binary", n=300, n_test=0)
    cfg = ModelConfig(kind="xgboost", params={"n_estimators": 5, "early_stopping_rounds": 5, "threads": 1})
    cross_validate(fs, spec, plan, cfg, tmp_path, client=client, bootstrap=0)
    assert len(calls) > plan.n_splits  # one fit failed once and trained again; the others once each

    def broken(*a, **k):
        raise XGBoostError("Check failed: labels are not in [0, 1]")

    monkeypatch.setattr(dxgb, "train", broken)
    with pytest.raises(XGBoostError, match="labels"):
        cross_validate(fs, spec, plan, cfg, tmp_path / "again", client=client, bootstrap=0)
