"""Booster fits side by side in threads (jobs.LocalJobs(parallel=...)) and the one-sort bootstrap:
the same results as one fit after another and as resampling rows."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from boosting_toy import toy
from dermstack import metrics
from dermstack.boosting import cross_validate
from dermstack.boosting.cv import local_executor
from dermstack.config import ModelConfig
from dermstack.crossfit import cross_fit
from dermstack.jobs import DaskJobs, LocalJobs, job_threads


def test_fits_run_side_by_side_each_with_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("dermstack.jobs.available_cores", lambda: 4)
    _, _, task, plan = toy(n=400)
    seen, lock = [], threading.Lock()

    def fit(job):
        with lock:
            seen.append((job.fold, job_threads(), threading.current_thread().name))
        return np.full(len(job.valid), job.fold / 10), None, {"fold": job.fold}

    cf = cross_fit(task, plan, [0], fit, executor=LocalJobs(parallel=2))
    assert sorted(f for f, _, _ in seen) == list(range(plan.n_splits))
    assert {t for _, t, _ in seen} == {2}  # 4 cores shared by 2 fits
    assert all(name.startswith("dermstack-fit") for _, _, name in seen)
    assert [r["fold"] for r in cf.records] == list(range(plan.n_splits))  # job order, whatever finished first
    assert job_threads() is None  # the main thread has every core


def test_an_error_in_one_fit_is_raised():
    _, _, task, plan = toy(n=400)

    def fit(job):
        if job.fold == 1:
            raise ValueError("fold 1 broke")
        return np.zeros(len(job.valid)), None, {}

    with pytest.raises(ValueError, match="fold 1 broke"):
        cross_fit(task, plan, [0], fit, executor=LocalJobs(parallel=2))


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "catboost"])
def test_side_by_side_boosters_score_as_one_after_another(kind, monkeypatch):
    _, features, task, plan = toy(n=600)
    model = ModelConfig(kind=kind, seeds=[0], params={"n_estimators": 30})
    monkeypatch.setattr("dermstack.boosting.cv.available_cores", lambda: 2)
    side = cross_validate(features, task, plan, model, test=False, bootstrap=0)
    assert side.metrics["executor"]["parallel"] == 2
    monkeypatch.setattr("dermstack.boosting.cv.available_cores", lambda: 1)
    alone = cross_validate(features, task, plan, model, test=False, bootstrap=0)
    assert "parallel" not in alone.metrics["executor"]
    a, b = (r.oof.matrix(task.image_ids, task.classes) for r in (side, alone))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_a_cluster_or_a_gpu_keeps_its_executor(monkeypatch):
    cluster = DaskJobs.__new__(DaskJobs)
    assert local_executor(cluster, {}, 5) is cluster
    monkeypatch.setattr("dermstack.boosting.cv.available_cores", lambda: 16)
    assert local_executor(None, {}, 5).parallel == 4
    assert local_executor(None, {}, 2).parallel == 2
    assert local_executor(None, {"device": "gpu"}, 5).parallel == 1
    assert local_executor(LocalJobs(), {"threads": 2}, 5).parallel == 1  # the user sized each fit


@pytest.mark.parametrize("fn", [metrics.roc_auc, metrics.pauc_tpr80])
def test_one_sort_bootstrap_equals_resampling_rows(fn):
    rng = np.random.default_rng(3)
    for trial in range(12):
        n = int(rng.integers(5, 300))
        y = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(int)
        s = np.round(rng.random(n), int(rng.integers(1, 4)))  # ties
        if trial % 4 == 0:
            s = s * 1e-17  # 1 - s rounds distinct scores together: the flipped curve groups them
        draws = np.random.default_rng(trial)
        want = np.full(40, np.nan)
        for b in range(40):
            idx = draws.integers(0, n, n)
            try:
                want[b] = fn(y[idx], s[idx])
            except ValueError:  # a draw with one class
                pass
        np.testing.assert_array_equal(metrics.bootstrap_values(fn, y, s, 40, trial), want)


def test_metrics_bootstrapped_together_equal_each_alone():
    """fold_metrics' intervals draw once for every metric: each metric's draws are those it gets alone."""
    rng = np.random.default_rng(5)
    y = (rng.random(500) < 0.1).astype(int)
    s = np.round(rng.random(500) + 0.2 * y, 2)
    fns = {"roc_auc": metrics.roc_auc, "pauc_tpr80": metrics.pauc_tpr80,
           "f1": lambda y, s: metrics.macro_f1(y, np.c_[1 - s, s])}  # not a ROC metric: resampled rows
    together = metrics.bootstrap_draws(fns, y, s, 30, seed=7)
    for name, fn in fns.items():
        np.testing.assert_array_equal(together[name], metrics.bootstrap_values(fn, y, s, 30, seed=7))
