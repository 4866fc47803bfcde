"""Sensitivity with a guarantee (dermstack.clinical.guarantee): the order-statistic threshold keeps its
promise by simulation, is not absurdly conservative, is undefined with too few positives, and sits in
metrics.json's operating points beside the empirical threshold (binary, and one-vs-rest per class)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import beta, binom

from dermstack import clinical
from dermstack.clinical.guarantee import guaranteed_rank, min_positives, sensitivity_threshold
from dermstack.clinical_report import clinical_metrics, summary_lines
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.task import TaskSpec
from lesion_tables import lesion_table

REPS = 2000


def coverage(n_pos: int, target: float, delta: float, draw, sens_of, seed: int = 0) -> tuple[float, float, float]:
    """Over REPS simulated calibration sets of ``n_pos`` positives: the share whose guaranteed
    threshold has sensitivity >= target on new data, the same for the empirical threshold, and the
    guaranteed threshold's mean sensitivity on new data."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(5, bool)]
    hit_g, hit_e, sens = [], [], []
    for _ in range(REPS):
        s = np.r_[draw(rng, n_pos), np.full(5, 0.01)]
        r = sensitivity_threshold(y, s, target, delta)
        sg, se = sens_of(r["guaranteed"]["threshold"]), sens_of(r["threshold"])
        hit_g.append(sg >= target)
        hit_e.append(se >= target)
        sens.append(sg)
    return float(np.mean(hit_g)), float(np.mean(hit_e)), float(np.mean(sens))


@pytest.mark.parametrize("n_pos, target, delta", [(40, 0.8, 0.05), (150, 0.8, 0.1), (120, 0.95, 0.05)])
def test_the_promise_holds_by_simulation_and_is_tight(n_pos, target, delta):
    """Continuous scores (Beta(2, 5)): the sensitivity of threshold t on new data is exactly beta.sf(t);
    coverage >= 1 - delta within Monte Carlo error, and no higher than the exact binomial confidence of
    the rank chosen (so the threshold is as high as the guarantee allows), while the empirical
    threshold keeps its promise about half the time."""
    k = guaranteed_rank(n_pos, target, delta)
    exact = binom.sf(k - 1, n_pos, 1 - target)
    assert exact >= 1 - delta and binom.sf(k, n_pos, 1 - target) < 1 - delta  # k is the largest rank that keeps it
    cov_g, cov_e, mean_sens = coverage(n_pos, target, delta, lambda rng, n: rng.beta(2, 5, n), lambda t: beta.sf(t, 2, 5))
    se = np.sqrt(exact * (1 - exact) / REPS) + 1e-3
    assert cov_g >= 1 - delta - 3 * se and abs(cov_g - exact) <= 4 * se
    assert cov_e < 0.75 and target < mean_sens < target + 0.12


def test_the_promise_holds_on_split_calibration_and_new_sets():
    """Positives drawn as a pool, split into a calibration set and a large new set: the guaranteed
    threshold's realised sensitivity on the new set reaches 0.8 in at least 1 - delta of the splits."""
    rng = np.random.default_rng(7)
    n_cal, n_new, target, delta = 60, 20000, 0.8, 0.05
    hits = []
    for _ in range(REPS // 2):
        pool = rng.lognormal(0.0, 1.0, n_cal + n_new)
        cal, new = pool[:n_cal], pool[n_cal:]
        t = sensitivity_threshold(np.ones(n_cal, bool), cal, target, delta)["guaranteed"]["threshold"]
        hits.append(np.mean(new >= t) >= target)
    assert np.mean(hits) >= 1 - delta - 3 * np.sqrt(delta * (1 - delta) / len(hits))


def test_tied_scores_only_make_it_conservative():
    """Scores on a coarse grid (many ties): the bound holds with room to spare."""
    grid = np.linspace(0, 1, 11)
    probs = np.full(11, 1 / 11)

    def sens_of(t):
        return float(probs[grid >= t - 1e-12].sum())
    cov_g, _, _ = coverage(50, 0.8, 0.05, lambda rng, n: rng.choice(grid, n, p=probs), sens_of)
    assert cov_g >= 0.95


def test_too_few_positives_leave_the_threshold_undefined():
    assert min_positives(0.8, 0.05) == 14 and min_positives(0.95, 0.05) == 59 and min_positives(0.95, 0.1) == 45
    assert guaranteed_rank(58, 0.95, 0.05) is None and guaranteed_rank(59, 0.95, 0.05) == 1
    y = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    s = np.r_[np.linspace(0.4, 1, 30), np.linspace(0, 0.6, 30)]
    r = sensitivity_threshold(y, s, 0.95, 0.05)
    g = r["guaranteed"]
    assert g["threshold"] is None and g["k"] is None and g["n_pos"] == 30 and g["min_positives"] == 59
    assert "too few positives for the guarantee: 30 < 59" in g["note"] and r["threshold"] is not None  # empirical: still there
    assert sensitivity_threshold(np.zeros(5, bool), np.arange(5.0), 0.8, 0.05)["guaranteed"]["note"].startswith("no positives")


def test_the_empirical_threshold_is_the_operating_points_vertex():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(20, 200))
        y = rng.random(n) < 0.3
        s = np.round(rng.random(n) + 0.3 * y, 2)  # ties
        for q in (0.8, 0.95):
            r = sensitivity_threshold(y, s, q, 0.05)
            assert r["specificity"] == pytest.approx(clinical.specificity_at_sensitivity(y, s, q))
            assert r["sensitivity"] >= q - 1e-12
            g = r["guaranteed"]
            if g["threshold"] is not None:
                assert g["threshold"] <= r["threshold"] and g["sensitivity"] >= r["sensitivity"] and g["confidence"] >= 0.95


def small_table(task: str):
    n = 240
    rng = np.random.default_rng(0)
    cols = {"image_id": [f"I{i}" for i in range(n)], "patient_id": [f"P{i // 4}" for i in range(n)],
            "target": (np.arange(n) % 3 == 0).astype(int).tolist()}
    labels = [["nv", "mel", "bcc"][i % 3] for i in range(n)]
    if task != "binary":
        cols["label"] = labels
    if task == "multilabel":
        cols |= {f"y_{c}": [int(v == c) for v in labels] for c in ("nv", "mel", "bcc")}
    table = lesion_table(cols)
    if task == "multilabel":
        table = LesionTable(table.df, dataclasses.replace(table.meta, classes=["nv", "mel", "bcc"]))
    spec = TaskSpec.from_table(table, task)
    k = len(spec.classes)
    s = rng.random((n, k)) + (np.eye(k)[spec.y] if task == "multiclass" else spec.y if task == "multilabel" else 0)
    s = s[:, 0] + 0.5 * spec.y if task == "binary" else s / s.sum(axis=1, keepdims=True)
    return table, spec, s


def test_metrics_json_binary_operating_points_carry_both_thresholds():
    table, task, s = small_table("binary")
    out = clinical_metrics(table, task, {"m": s}, "m", FoldPlan.make(table, 4), n_boot=20, delta=0.1)
    op = out["clinical"]
    assert op["guarantee"]["delta"] == 0.1 and "order statistic" in op["guarantee"]["method"]
    for key, q in (("specificity_at_sensitivity_80", 0.8), ("specificity_at_sensitivity_95", 0.95),
                   ("flagged_per_cancer_at_sensitivity_80", 0.8)):
        p = op[key]
        assert p["target_sensitivity"] == q and p["threshold"] is not None
        g = p["guaranteed"]
        assert set(g) == {"threshold", "delta", "n_pos", "k", "confidence", "min_positives", "sensitivity", "specificity",
                          "method", "note"}
        assert g["delta"] == 0.1 and g["n_pos"] == 80 and g["threshold"] <= p["threshold"]
    for key, q in (("sensitivity_at_specificity_90", 0.9), ("sensitivity_at_specificity_95", 0.95)):
        p = op[key]
        assert p["target_specificity"] == q and p["sensitivity"] == pytest.approx(p["value"]) and p["specificity"] >= q
    text = "\n".join(summary_lines(out))
    assert "sensitivity >= 0.8: threshold" in text and "guaranteed with probability >= 0.9 (delta 0.1, 80 positives)" in text


@pytest.mark.parametrize("task_kind", ["multiclass", "multilabel"])
def test_metrics_json_one_vs_rest_points_per_class(task_kind):
    table, task, s = small_table(task_kind)
    out = clinical_metrics(table, task, {"m": s}, "m", FoldPlan.make(table, 4, task=task_kind), n_boot=20)
    th = out["thresholds"]
    assert th["guarantee"]["delta"] == 0.05 and set(th["one_vs_rest"]) == {"bcc", "mel", "nv"}
    for c, v in th["one_vs_rest"].items():
        assert v["n_pos"] == 80
        for key in ("specificity_at_sensitivity_80", "specificity_at_sensitivity_95"):
            p = v[key]
            col = task.classes.index(c)
            yc = task.y[:, col] if task_kind == "multilabel" else task.y == col
            assert p["value"] == pytest.approx(clinical.specificity_at_sensitivity(yc, s[:, col], p["target_sensitivity"]))
            assert p["ci_low"] <= p["value"] <= p["ci_high"] and p["guaranteed"]["threshold"] is not None
    assert "one-vs-rest sensitivity >= 0.95, guaranteed with probability >= 0.95: 3 of 3 classes" in "\n".join(summary_lines(out))
