"""clinical.metric_bootstrap (one model's interval) against the metric called on explicitly
repeated rows, for every task metric (the curve and confusion-count fast paths included)."""
from __future__ import annotations

import numpy as np
import pytest

from dermstack import clinical, metrics
from dermstack.clinical import bootstrap as clinical_bootstrap


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_metric_bootstrap_matches_the_metric_on_each_resample(task):
    rng = np.random.default_rng(3)
    n, C = 260, 3
    patient = rng.integers(0, 35, n)
    if task == "binary":
        y = (rng.random(n) < 0.25).astype(int)
        s = np.round(rng.random(n) + y * 0.4, 2)
    elif task == "multiclass":
        y, s = rng.integers(0, C, n), rng.dirichlet(np.ones(C), n)
    else:
        y = (rng.random((n, C)) < 0.3).astype(int)
        s = rng.random((n, C)) * 0.7 + y * 0.3
    codes = np.unique(patient, return_inverse=True)[1]
    counts = clinical.patient_resamples(codes.max() + 1, 25, 5)
    for name, fn in metrics.TASK_METRICS[task].items():
        out = clinical.metric_bootstrap(y, s, patient, name, n_boot=25, seed=5)
        vals = []
        for row in counts:
            idx = np.repeat(np.arange(n), row[codes])
            vals.append(fn(y[idx], s[idx]))
        assert out["value"] == pytest.approx(fn(y, s)), name
        assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(np.percentile(vals, [2.5, 97.5]))), name
        assert out["n_valid"] == 25 and out["n_patients"] == codes.max() + 1


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_macro_auc_fast_path_averages_the_classes_each_resample_has(task):
    """A class whose only positives are one patient's is absent from some resamples: those
    resamples average the other classes, as metrics.macro_roc_auc does on their rows."""
    rng = np.random.default_rng(8)
    n, C = 120, 3
    patient = np.arange(n) // 4
    if task == "multiclass":
        y = rng.integers(0, 2, n)
        y[:4] = 2
        s = rng.dirichlet(np.ones(C), n)
    else:
        y = (rng.random((n, C)) < 0.3).astype(int)
        y[:, 2] = np.arange(n) < 4
        s = rng.random((n, C))
    codes = np.unique(patient, return_inverse=True)[1]
    counts = clinical.patient_resamples(codes.max() + 1, 40, 1)
    got = clinical_bootstrap._resampled_values(metrics.macro_roc_auc, y, s, codes, codes.max() + 1, counts)
    want = [metrics.macro_roc_auc(y[idx], s[idx]) for idx in (np.repeat(np.arange(n), row[codes]) for row in counts)]
    assert (counts[:, 0] == 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-9)
