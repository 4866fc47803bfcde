"""clinical.metric_bootstrap (one model's interval) against the metric called on explicitly
repeated rows, for every task metric (the curve and confusion-count fast paths included)."""
from __future__ import annotations

import numpy as np
import pytest

from dermstack import clinical, metrics


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
