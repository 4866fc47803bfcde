"""Clinical operating metrics and paired comparison against references written independently:
plain-Python loops over thresholds, patients and permutations, and hand-computed examples."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from dermstack import clinical, metrics
from dermstack.clinical import bootstrap as clinical_bootstrap


def random_binary(seed, n=300, n_patients=40, prevalence=0.15, decimals=2):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    s = np.round(rng.random(n) * 0.7 + y * rng.uniform(0, 0.6, n), decimals)  # rounding makes ties
    patient = rng.integers(0, n_patients, n).astype(str)
    return y, s, patient


# --- references --------------------------------------------------------------------------------


def rates_by_threshold(y, s):
    """(threshold, sensitivity, specificity, flagged, found) for 'nothing flagged' and every distinct score."""
    P = sum(1 for v in y if v == 1)
    N = len(y) - P
    rows = [(float("inf"), 0.0, 1.0, 0, 0)]
    for t in sorted(set(s.tolist()), reverse=True):
        tp = sum(1 for yi, si in zip(y, s) if si >= t and yi == 1)
        fp = sum(1 for yi, si in zip(y, s) if si >= t and yi == 0)
        rows.append((t, tp / P if P else float("nan"), (N - fp) / N if N else float("nan"), tp + fp, tp))
    return rows


def ref_flagged_per_cancer(y, s, q):
    for _, sens, _, flagged, found in rates_by_threshold(y, s):
        if sens >= q - 1e-12:
            return flagged / found
    return float("nan")


def ref_sens_at_spec(y, s, q):
    return max(sens for _, sens, spec, _, _ in rates_by_threshold(y, s) if spec >= q - 1e-12)


def ref_spec_at_sens(y, s, q):
    return max(spec for _, sens, spec, _, _ in rates_by_threshold(y, s) if sens >= q - 1e-12)


def ref_top_k(y, s, patient, k):
    """Each cancer counts 1 if fewer than k lesions of its patient score higher and its tie group
    fits; a straddling tie group shares the free slots (slots / group size)."""
    hits = total = 0.0
    for p in set(patient.tolist()):
        rows = [i for i in range(len(y)) if patient[i] == p]
        for i in rows:
            if y[i] != 1:
                continue
            total += 1
            higher = sum(1 for j in rows if s[j] > s[i])
            tied = sum(1 for j in rows if s[j] == s[i])
            slots = k - higher
            hits += 0.0 if slots <= 0 else min(1.0, slots / tied)
    return hits / total


def ref_top_k_by_permutations(y, s, patient, k):
    """Average over every order of each patient's lesions of the cancers in a stable top-k."""
    hits = total = 0.0
    for p in set(patient.tolist()):
        rows = [i for i in range(len(y)) if patient[i] == p]
        perms = list(itertools.permutations(rows))
        found = 0
        for perm in perms:
            ranked = sorted(perm, key=lambda i: -s[i])  # Python's sort is stable: ties keep perm order
            found += sum(y[i] for i in ranked[:k])
        hits += found / len(perms)
        total += sum(y[i] for i in rows)
    return hits / total


def explicit_resample(y, patient, counts_row, patients):
    """Rows of a patient resample built by looping over patients, each repeated as often as drawn,
    and a label per drawn copy (a patient drawn twice is two patients for top-k)."""
    idx, copies = [], []
    for code, p in enumerate(patients):
        rows = [i for i in range(len(y)) if patient[i] == p]
        for copy in range(int(counts_row[code])):
            idx.extend(rows)
            copies.extend([f"{p}#{copy}"] * len(rows))
    return np.array(idx, dtype=int), np.array(copies)


# --- point metrics ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_point_metrics_match_threshold_loops(seed):
    y, s, patient = random_binary(seed)
    for q in (0.5, 0.8, 0.95, 1.0):
        assert clinical.flagged_per_cancer(y, s, q) == pytest.approx(ref_flagged_per_cancer(y, s, q))
        assert clinical.specificity_at_sensitivity(y, s, q) == pytest.approx(ref_spec_at_sens(y, s, q))
    for q in (0.5, 0.9, 0.95, 1.0):
        assert clinical.sensitivity_at_specificity(y, s, q) == pytest.approx(ref_sens_at_spec(y, s, q))
    for k in (1, 3, 15):
        assert clinical.top_k_sensitivity(y, s, patient, k) == pytest.approx(ref_top_k(y, s, patient, k))


def test_hand_computed_examples():
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 1])
    s = np.arange(10, 0, -1) / 10  # ranks 1..10
    # 4 cancers; 80 % needs all 4 (3.2 rounds up), the 4th is at rank 10
    assert clinical.flagged_per_cancer(y, s, 0.8) == pytest.approx(10 / 4)
    assert clinical.flagged_per_cancer(y, s, 0.75) == pytest.approx(6 / 3)  # 3 cancers by rank 6
    assert clinical.flagged_per_cancer(y, s, 0.5) == pytest.approx(3 / 2)
    assert clinical.specificity_at_sensitivity(y, s, 0.5) == pytest.approx(5 / 6)  # 1 negative flagged
    # 95 % specificity of 6 negatives allows none flagged: only the first cancer
    assert clinical.sensitivity_at_specificity(y, s, 0.95) == pytest.approx(1 / 4)
    assert clinical.sensitivity_at_specificity(y, s, 0.8) == pytest.approx(2 / 4)  # one negative allowed
    # 19 of 20 cancers is 95 % despite floating point
    y20 = np.r_[np.ones(20, int), np.zeros(5, int)]
    s20 = np.r_[np.linspace(1, 0.6, 19), 0.1, np.full(5, 0.5)]
    assert clinical.specificity_at_sensitivity(y20, s20, 0.95) == pytest.approx(1.0)


def test_ties_are_never_split():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    s = np.full(10, 0.3)
    assert clinical.flagged_per_cancer(y, s) == pytest.approx(10 / 2)  # all flagged together
    assert clinical.sensitivity_at_specificity(y, s, 0.9) == 0.0  # flagging the group drops specificity to 0
    assert clinical.specificity_at_sensitivity(y, s, 0.5) == 0.0
    s2 = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    y2 = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    # reaching 50 % takes the tie group {0.5 x 3}: 4 flagged, 1 found
    assert clinical.flagged_per_cancer(y2, s2, 0.5) == pytest.approx(4.0)
    assert clinical.specificity_at_sensitivity(y2, s2, 0.5) == pytest.approx(5 / 8)


def test_top_k_ties_and_small_patients():
    # patient a: 0.9 (neg) takes slot 1, the 0.8 tie {pos, neg} shares slot 2 -> 0.5; b: 1 lesion < k
    y = np.array([0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.8, 0.1, 0.2])
    patient = np.array(["a", "a", "a", "a", "b"])
    assert clinical.top_k_sensitivity(y, s, patient, k=2) == pytest.approx((0.5 + 1) / 2)
    assert clinical.top_k_sensitivity(y, s, patient, k=15) == 1.0
    assert clinical.top_k_sensitivity(y, s, patient, k=1) == pytest.approx(1 / 2)
    # the tie rule is the average over every order of tied lesions
    rng = np.random.default_rng(0)
    y = (rng.random(24) < 0.4).astype(int)
    s = rng.integers(0, 3, 24) / 2
    patient = np.repeat(np.arange(4), 6)
    for k in (1, 2, 4):
        expected = ref_top_k_by_permutations(y, s, patient, k)
        assert clinical.top_k_sensitivity(y, s, patient, k) == pytest.approx(expected)
    # row order does not matter
    perm = rng.permutation(24)
    assert clinical.top_k_sensitivity(y[perm], s[perm], patient[perm], 2) == pytest.approx(
        clinical.top_k_sensitivity(y, s, patient, 2))


def test_missing_classes_give_nan_and_bad_input_names_the_row():
    s = np.linspace(0, 1, 8)
    none = np.zeros(8, int)
    assert np.isnan(clinical.flagged_per_cancer(none, s))
    assert np.isnan(clinical.sensitivity_at_specificity(none, s, 0.9))
    assert np.isnan(clinical.specificity_at_sensitivity(none, s, 0.8))
    assert np.isnan(clinical.top_k_sensitivity(none, s, np.arange(8)))
    allpos = np.ones(8, int)
    assert clinical.flagged_per_cancer(allpos, s) == 1.0  # every flagged lesion is a cancer
    assert np.isnan(clinical.specificity_at_sensitivity(allpos, s, 0.8))
    out = clinical.operating_points(none, s, np.arange(8) % 3, n_boot=20)
    assert np.isnan(out["top_15_sensitivity"]["value"]) and out["top_15_sensitivity"]["n_valid"] == 0
    bad = s.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        clinical.flagged_per_cancer(np.r_[1, none[1:]], bad)
    with pytest.raises(ValueError, match="0 or 1"):
        clinical.sensitivity_at_specificity(np.r_[2, none[1:]], s, 0.9)
    with pytest.raises(ValueError, match="length"):
        clinical.top_k_sensitivity(none, s, np.arange(7))


# --- bootstrap --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_operating_points_bootstrap_matches_explicit_resampling(seed, monkeypatch):
    y, s, patient = random_binary(seed, n=200, n_patients=25)
    n_boot = 40
    out = clinical.operating_points(y, s, patient, n_boot=n_boot, seed=seed, k=3)
    monkeypatch.setattr(clinical_bootstrap._ResampledCurves, "_ELEMENTS", 500)  # many chunks: same intervals
    assert clinical.operating_points(y, s, patient, n_boot=n_boot, seed=seed, k=3) == out
    patients = np.unique(patient)
    counts = clinical.patient_resamples(len(patients), n_boot, seed)
    refs = {
        "flagged_per_cancer_at_sensitivity_80": lambda yy, ss, cc: ref_flagged_per_cancer(yy, ss, 0.8),
        "sensitivity_at_specificity_90": lambda yy, ss, cc: ref_sens_at_spec(yy, ss, 0.9),
        "sensitivity_at_specificity_95": lambda yy, ss, cc: ref_sens_at_spec(yy, ss, 0.95),
        "specificity_at_sensitivity_80": lambda yy, ss, cc: ref_spec_at_sens(yy, ss, 0.8),
        "specificity_at_sensitivity_95": lambda yy, ss, cc: ref_spec_at_sens(yy, ss, 0.95),
        "top_3_sensitivity": lambda yy, ss, cc: ref_top_k(yy, ss, cc, 3),
    }
    resamples = [explicit_resample(y, patient, row, patients) for row in counts]
    for name, ref in refs.items():
        vals = [ref(y[idx], s[idx], copies) for idx, copies in resamples]
        lo, hi = np.percentile(vals, [2.5, 97.5])
        assert out[name]["ci_low"] == pytest.approx(lo), name
        assert out[name]["ci_high"] == pytest.approx(hi), name
        assert out[name]["ci_low"] <= out[name]["value"] <= out[name]["ci_high"], name
    assert out["bootstrap"] == {"n_boot": n_boot, "seed": seed, "alpha": 0.05, "unit": "patient", "n_patients": 25}


def test_operating_points_values_are_the_point_functions():
    y, s, patient = random_binary(3, n=400, n_patients=10)  # 40 lesions a patient: top-15 misses some
    out = clinical.operating_points(y, s, patient, n_boot=50)
    assert out["flagged_per_cancer_at_sensitivity_80"]["value"] == clinical.flagged_per_cancer(y, s, 0.8)
    assert out["sensitivity_at_specificity_90"]["value"] == clinical.sensitivity_at_specificity(y, s, 0.9)
    assert out["specificity_at_sensitivity_95"]["value"] == clinical.specificity_at_sensitivity(y, s, 0.95)
    assert out["top_15_sensitivity"]["value"] == clinical.top_k_sensitivity(y, s, patient, 15)
    for name, v in out.items():
        if name != "bootstrap":
            assert v["ci_low"] <= v["value"] <= v["ci_high"] and v["ci_low"] < v["ci_high"], name


def test_paired_bootstrap_identical_and_clearly_better():
    rng = np.random.default_rng(0)
    n = 1500
    y = (rng.random(n) < 0.2).astype(int)
    patient = rng.integers(0, 150, n)
    good = y * 1.5 + rng.random(n)
    weak = y * 0.2 + rng.random(n)
    same = clinical.paired_bootstrap(y, good, good, patient, "roc_auc", n_boot=100, seed=1)
    assert same["diff"] == 0 and same["mean_diff"] == 0 and same["p_value"] == 1.0
    assert same["ci_low"] == same["ci_high"] == 0
    better = clinical.paired_bootstrap(y, good, weak, patient, "pauc_tpr80", n_boot=100, seed=1)
    assert better["p_value"] < 0.05 and 0 < better["ci_low"] <= better["diff"] <= better["ci_high"]
    assert better["value_a"] == pytest.approx(metrics.pauc_tpr80(y, good))
    worse = clinical.paired_bootstrap(y, weak, good, patient, metrics.pauc_tpr80, n_boot=100, seed=1)
    assert worse["mean_diff"] == pytest.approx(-better["mean_diff"]) and worse["p_value"] == better["p_value"]
    # two noisy copies of one model: p is about uniform, so p < 0.05 must be rare
    p_values = []
    for rep in range(20):
        a, b = good + rng.normal(0, 0.5, n), good + rng.normal(0, 0.5, n)
        p_values.append(clinical.paired_bootstrap(y, a, b, patient, "roc_auc", n_boot=100, seed=rep)["p_value"])
    assert np.mean(np.array(p_values) < 0.05) <= 0.2 and np.median(p_values) > 0.2


def test_paired_bootstrap_matches_explicit_loop_for_every_task_metric():
    rng = np.random.default_rng(4)
    n, C = 240, 3
    patient = rng.integers(0, 30, n).astype(str)
    patients = np.unique(patient)
    yb = (rng.random(n) < 0.3).astype(int)
    ym = rng.integers(0, C, n)
    yl = (rng.random((n, C)) < 0.3).astype(int)
    cases = {
        "binary": (yb, rng.random(n) + yb * 0.5, rng.random(n) + yb * 0.3),
        "multiclass": (ym, rng.dirichlet(np.ones(C), n) + np.eye(C)[ym] * 0.3, rng.dirichlet(np.ones(C), n)),
        "multilabel": (yl, rng.random((n, C)) * 0.8 + yl * 0.3, rng.random((n, C))),
    }
    n_boot = 15
    counts = clinical.patient_resamples(len(patients), n_boot, 7)
    for task, (y, sa, sb) in cases.items():
        for name, fn in metrics.TASK_METRICS[task].items():
            out = clinical.paired_bootstrap(y, sa, sb, patient, name, n_boot=n_boot, seed=7)
            diffs = []
            for row in counts:
                idx, _ = explicit_resample(y, patient, row, patients)
                diffs.append(fn(y[idx], sa[idx]) - fn(y[idx], sb[idx]))
            assert out["mean_diff"] == pytest.approx(np.mean(diffs)), (task, name)
            lo, hi = np.percentile(diffs, [2.5, 97.5])
            assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi)), (task, name)
            share = min(np.mean(np.array(diffs) <= 0), np.mean(np.array(diffs) >= 0))
            assert out["p_value"] == pytest.approx(min(1.0, 2 * share)), (task, name)
    with pytest.raises(ValueError, match="unknown metric"):
        clinical.paired_bootstrap(yb, sa, sb, patient, "accuracy")


# --- per-class thresholds by nested CV ------------------------------------------------------------


def multilabel_data(seed, n=300, C=3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, C)) < [0.1, 0.3, 0.5][:C]).astype(int)
    s = np.clip(rng.random((n, C)) * 0.4 + y * 0.25, 0, 1)  # calibrated badly: 0.5 is a poor cut
    return y, s, rng.integers(0, 4, n)


def multiclass_data(seed, n=400):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    logits = rng.normal(size=(n, 3)) + np.eye(3)[y] * 1.5 + np.log([0.6, 0.3, 0.1]) * 2.0  # rare class under-scored
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, s, rng.integers(0, 4, n)


def test_multilabel_thresholds_are_the_best_cut_per_class():
    y, s, folds = multilabel_data(0)
    out = clinical.tune_thresholds(y, s, folds, "multilabel")
    t = np.array(out["thresholds"])
    for c in range(y.shape[1]):
        cuts = np.unique(s[:, c])[:, None]  # every distinct cut at once
        flagged = s[:, c][None, :] >= cuts
        best = (2 * (flagged & (y[:, c] == 1)).sum(axis=1) / (flagged.sum(axis=1) + y[:, c].sum())).max()
        assert f1_score(y[:, c], s[:, c] >= t[c], zero_division=0) == pytest.approx(best)
    assert out["f1_before"] == pytest.approx(metrics.macro_f1(y, s))
    assert out["f1_after"] > out["f1_before"] + 0.05


def test_multiclass_weights_raise_macro_f1():
    y, s, folds = multiclass_data(0)
    out = clinical.tune_thresholds(y, s, folds, "multiclass")
    w = np.array(out["thresholds"])
    assert out["f1_before"] == pytest.approx(metrics.macro_f1(y, s))
    assert metrics.macro_f1(y, s * w) > out["f1_before"] + 0.05  # fitted on these rows
    assert out["f1_after"] > out["f1_before"] + 0.03  # nested: honest estimate, still better
    assert np.array_equal(clinical.apply_thresholds(s, w, "multiclass"), (s * w).argmax(axis=1))


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_nested_tuning_never_sees_the_outer_fold(task):
    y, s, folds = (multiclass_data if task == "multiclass" else multilabel_data)(1)
    out = clinical.tune_thresholds(y, s, folds, task)
    decisions = np.zeros((len(y),) + y.shape[1:], dtype=int)
    for k in np.unique(folds):
        inner = folds != k
        # the rule applied to fold k is the rule fitted on the other folds alone
        alone = clinical.tune_thresholds(y[inner], s[inner], folds[inner], task)["thresholds"]
        assert out["fold_thresholds"][k] == pytest.approx(alone)
        decisions[~inner] = clinical.apply_thresholds(s[~inner], alone, task)
        # permuting fold k's labels changes nothing applied to fold k, but changes the other folds' rules
        y_perm = y.copy()
        y_perm[~inner] = np.random.default_rng(int(k)).permutation(y[~inner])
        perm = clinical.tune_thresholds(y_perm, s, folds, task)
        assert perm["fold_thresholds"][k] == out["fold_thresholds"][k]
        assert any(perm["fold_thresholds"][j] != out["fold_thresholds"][j] for j in out["fold_thresholds"] if j != k)
    average = "macro"
    expected = (f1_score(y, decisions, average=average, labels=np.arange(s.shape[1]), zero_division=0)
                if task == "multiclass" else f1_score(y, decisions, average=average, zero_division=0))
    assert out["f1_after"] == pytest.approx(expected)


def test_tune_thresholds_rejects_bad_input():
    y, s, folds = multilabel_data(2)
    with pytest.raises(ValueError, match="task_kind"):
        clinical.tune_thresholds(y, s, folds, "binary")
    with pytest.raises(ValueError, match="two folds"):
        clinical.tune_thresholds(y, s, np.zeros(len(y)), "multilabel")
    with pytest.raises(ValueError, match="must match"):
        clinical.tune_thresholds(y[:, :2], s, folds, "multilabel")
    with pytest.raises(ValueError, match="row 3"):
        clinical.tune_thresholds(np.r_[0, 1, 2, 5], np.full((4, 3), 1 / 3), np.r_[0, 0, 1, 1], "multiclass")
    y_bad = y.copy()
    y_bad[7, 2] = 3
    with pytest.raises(ValueError, match="row 7, column 2"):
        clinical.tune_thresholds(y_bad, s, folds, "multilabel")
    s_bad = s.copy()
    s_bad[9, 1] = np.inf
    with pytest.raises(ValueError, match="row 9"):
        clinical.tune_thresholds(y, s_bad, folds, "multilabel")
    with pytest.raises(ValueError, match="model b is not finite at row 9"):
        clinical.paired_bootstrap(y, s, s_bad, np.arange(len(y)), "macro_f1", n_boot=5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk", [None, 300])
def test_vectorised_roc_areas_equal_the_metrics_on_repeated_rows(seed, chunk, monkeypatch):
    """paired_bootstrap's fast path for roc_auc / pauc_tpr80 against calling the metric per resample
    (also in small chunks of resamples, of different sizes for the two models' curves)."""
    if chunk:
        monkeypatch.setattr(clinical_bootstrap._ResampledCurves, "_ELEMENTS", chunk)
    y, s, patient = random_binary(seed, n=400, n_patients=30, decimals=1 + seed)
    s_b = np.round(np.random.default_rng(seed).random(len(y)), 2)
    for name, fn in metrics.TASK_METRICS["binary"].items():
        fast = clinical.paired_bootstrap(y, s, s_b, patient, name, n_boot=30, seed=seed)
        slow = clinical.paired_bootstrap(y, s, s_b, patient, lambda yy, ss, fn=fn: fn(yy, ss), n_boot=30, seed=seed)
        for key in ("value_a", "value_b", "mean_diff", "ci_low", "ci_high", "p_value", "n_valid"):
            assert fast[key] == pytest.approx(slow[key], abs=1e-12), (name, key)
    # resamples that lose every cancer are left out, not an error
    y = np.zeros(60, int)
    y[0] = 1
    out = clinical.paired_bootstrap(y, np.linspace(0, 1, 60), np.linspace(1, 0, 60), np.arange(60) // 2, "roc_auc",
                                    n_boot=50)
    assert 0 < out["n_valid"] < 50
