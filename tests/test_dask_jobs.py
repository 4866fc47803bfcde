"""Cross-validation jobs on a Dask cluster of real processes (LocalCluster): every model kind gives the
local run's scores and names the scheduler and workers (a whole run too, in its stage records); a
worker dying mid-fold is survived; a lost scheduler and an unreachable one are errors naming the
address."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time

import dask
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from boosting_toy import toy
from dermstack.boosting import cross_validate
from dermstack.cli import cli
from dermstack.cnn.train import cross_validate_cnn
from dermstack.config import ModelConfig, RunConfig
from dermstack.crossfit import cross_fit
from dermstack.errors import ConfigError, DataError
from dermstack.features.featureset import FeatureSet
from dermstack.jobs import DaskJobs, connect_jobs
from dermstack.linear import cross_validate_linear
from dermstack.run import Run
from ensembles_toy import setup, tiny_cnn
from test_run_predict import whole_run
from tiny_runs import TinyRuns

pytestmark = pytest.mark.slow  # the heavy tests: `make test` runs them, `make test-fast` does not

distributed = pytest.importorskip("distributed")


def cluster():
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address=None)


@pytest.fixture(scope="module")
def jobs():
    with cluster() as c, connect_jobs(c.scheduler_address) as j:
        yield j


def _same(a, b, name, atol=1e-9):
    np.testing.assert_allclose(a.oof.frame.sort("image_id", "seed", "class")["score"].to_numpy(),
                               b.oof.frame.sort("image_id", "seed", "class")["score"].to_numpy(), rtol=0, atol=atol,
                               err_msg=name)
    np.testing.assert_allclose(a.test.frame.sort("image_id", "class")["score"].to_numpy(),
                               b.test.frame.sort("image_id", "class")["score"].to_numpy(), rtol=0, atol=atol,
                               err_msg=name)


def test_every_kind_on_the_cluster_equals_the_local_run(jobs, tmp_path):
    _, fs, spec, plan = toy("binary", n=400, n_test=20, positive_rate=0.2)
    fs = FeatureSet.read(fs.write(tmp_path / "features.parquet"))  # workers read it by path
    workers = set(jobs.client.scheduler_info()["workers"])
    models = [ModelConfig(kind=k, seeds=[0, 1], params={"n_estimators": 30, "threads": 1})
              for k in ("lightgbm", "xgboost", "catboost")]
    for m in models:
        there = cross_validate(fs, spec, plan, m, tmp_path / "dask", bootstrap=0, executor=jobs)
        here = cross_validate(fs, spec, plan, m, tmp_path / "local", bootstrap=0)
        _same(there, here, m.kind)
        where = there.metrics["executor"]
        assert where["scheduler"] == jobs.address and set(where["workers"].values()) <= workers
        assert len(where["workers"]) == 6 and here.metrics["executor"]["executor"] == "local"
        assert set(where["job_seconds"]) == set(where["workers"])
        assert sorted(p.name for p in (tmp_path / "dask" / m.label).iterdir()) == \
            sorted(p.name for p in (tmp_path / "local" / m.label).iterdir())
    probe = ModelConfig(kind="logistic", params={"C": [0.1, 1.0], "inner_splits": 2})
    _same(cross_validate_linear(fs, None, spec, plan, probe, tmp_path / "dask", bootstrap=0, executor=jobs),
          cross_validate_linear(fs, None, spec, plan, probe, bootstrap=0), "logistic")

    table, task, plan = setup(tmp_path / "img", "binary")  # the workers decode the images from their paths
    cnn = tiny_cnn(epochs=1)
    _same(cross_validate_cnn(table, task, plan, cnn, tmp_path / "dask", progress=False, executor=jobs),
          cross_validate_cnn(table, task, plan, cnn, None, progress=False), "cnn", atol=1e-3)  # float32 sums over other thread counts


def test_a_worker_dying_mid_fold_is_survived_and_a_lost_scheduler_named(tmp_path, caplog):
    _, fs, spec, plan = toy("binary", n=120, n_test=0, positive_rate=0.3)
    marker = tmp_path / "died-once"

    def fit(job):
        if job.fold == 1 and not marker.exists():
            marker.write_text("x")
            os._exit(1)  # the worker process dies in the middle of a fold
        time.sleep(0.5 if job.fold == 2 else 0)
        return np.full(len(job.valid), 0.5), None, {"fold": job.fold}

    with cluster() as c, connect_jobs(c.scheduler_address) as j:
        cf = cross_fit(spec, plan, [0], fit, executor=j)
        assert marker.exists() and [r["fold"] for r in cf.records] == [0, 1, 2] and not np.isnan(cf.oof).any()

        def bad_input(job):
            raise DataError(f"fold {job.fold}: bad input")

        with pytest.raises(DataError, match="bad input"):  # raised as is, not retried
            cross_fit(spec, plan, [0], bad_input, executor=j)

    def slow(job):
        time.sleep(30)
        return np.full(len(job.valid), 0.5), None, {}

    c = cluster()
    j = DaskJobs(distributed.Client(c.scheduler_address, set_as_default=False, timeout="3s"))
    threading.Timer(3, c.close).start()
    try:
        with caplog.at_level(logging.WARNING), j, pytest.raises(
                DataError, match=f"lost the Dask scheduler at {j.address}.*run again to resume"):
            cross_fit(spec, plan, [0], slow, executor=j)
    finally:
        c.close()
    # the one message is dermstack's: distributed's own errors (with tracebacks) are kept back
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno >= logging.ERROR]


def test_an_unreachable_scheduler_is_refused_before_ingest(tmp_path):
    with pytest.raises(ConfigError, match=r"dask_address = 'tcp://127.0.0.1:9'"):
        connect_jobs("tcp://127.0.0.1:9", timeout="1s")
    config = tmp_path / "c.toml"
    config.write_text('[data]\nformat = "synthetic-isic2024"\nlesions = 50\n[cv]\ndask_address = "tcp://127.0.0.1:9"\n')
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = CliRunner().invoke(cli, ["run", str(config), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "tcp://127.0.0.1:9" in res.output, res.output
    assert not (tmp_path / "run" / "lesions.parquet").exists()


def test_a_run_fits_its_models_on_the_cluster_and_records_where(jobs, tmp_path, test_weights):
    config = TinyRuns.write(tmp_path / "config.toml", **whole_run(test_weights))
    out = tmp_path / "out"
    Run(RunConfig.from_toml(config), out).execute()
    local = pl.read_parquet(out / "models" / "lightgbm" / "oof.parquet")
    (out / "stages" / "model-lightgbm.json").unlink()  # this model again, on the cluster; the stages before it are kept
    cfg = RunConfig.from_toml(config)
    cfg = dataclasses.replace(cfg, cv=dataclasses.replace(cfg.cv, dask_address=jobs.address))
    run = Run(cfg, out)
    run.execute()
    assert "model-lightgbm" in run.stages
    record = json.loads((out / "stages" / "model-lightgbm.json").read_text())
    assert record["executor"]["scheduler"] == jobs.address
    assert set(record["executor"]["workers"].values()) <= set(jobs.client.scheduler_info()["workers"])
    there = pl.read_parquet(out / "models" / "lightgbm" / "oof.parquet")
    assert there.equals(local)
