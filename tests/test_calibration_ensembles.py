"""Calibrated probabilities (prior correction, Platt/isotonic by nested CV, ECE) and ensembles that
never lose to their best member (greedy ensemble selection, ``method = "auto"``)."""
from __future__ import annotations

import numpy as np
import pytest

from boosting_toy import toy
from dermstack.calibration import Calibrator, calibrate, calibration_metrics, ece, nested_calibration, prior_factor, undo_prior
from dermstack.ensembles.level2 import GreedyEnsemble
from dermstack.predictions import ModelResult, Predictions


def test_ece_equal_count_bins_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 0])
    p = np.array([0.1, 0.1, 0.2, 0.2, 0.5, 0.5, 0.9, 0.9, 0.3, 0.3])
    # 5 equal-count bins of 2 rows in score order: (0.1,0.1|0,0) (0.2,0.2|1,1) (0.3,0.3|0,0) (0.5,0.5|0,1) (0.9,0.9|1,1)
    want = (2 * 0.1 + 2 * 0.8 + 2 * 0.3 + 2 * 0.0 + 2 * 0.1) / 10
    assert ece(y, p, bins=5) == pytest.approx(want)
    assert calibration_metrics("binary", y, p)["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_undoing_the_training_prior_restores_the_base_rate():
    """A logistic model fitted on negatives under-sampled 20x and positives weighted 3x predicts odds
    inflated 60x; the measured factor takes exactly that out."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n = 40_000
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x * 1.5 - 4)))).astype(int)
    neg = np.flatnonzero(y == 0)
    fit = np.sort(np.concatenate([np.flatnonzero(y == 1), rng.choice(neg, len(neg) // 20, replace=False)]))
    w = np.where(y[fit] == 1, 3.0, 1.0)
    m = LogisticRegression(C=1e6).fit(x[fit, None], y[fit], sample_weight=w)
    factor = prior_factor("binary", y, fit, w, 1.0)
    assert factor[0] == pytest.approx(60, rel=0.01)
    p = undo_prior("binary", m.predict_proba(x[:, None])[:, 1], factor)
    assert p.mean() == pytest.approx(y.mean(), rel=0.08)
    assert calibration_metrics("binary", y, p)["ece"] < 0.01


def test_multiclass_prior_and_temperature_keep_rows_summing_to_one_and_the_argmax():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 4)) * 3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=np.exp(r / 3) / np.exp(r / 3).sum()) for r in z])
    q = undo_prior("multiclass", p, np.array([2.0, 1.0, 1.0, 0.5]))
    assert np.allclose(q.sum(1), 1)
    cal = Calibrator("multiclass", "platt").fit(y, p)
    r = cal.apply(p)
    assert np.allclose(r.sum(1), 1) and (r.argmax(1) == p.argmax(1)).all()
    assert cal.maps[0]["temperature"] > 1.5  # the scores were over-confident by 3x
    again = Calibrator.from_json(cal.to_json()).apply(p)
    np.testing.assert_allclose(again, r)


@pytest.mark.parametrize("method", ["platt", "beta", "isotonic"])
def test_nested_calibration_of_fold_k_never_sees_fold_k_labels(method):
    rng = np.random.default_rng(2)
    n = 900
    s = rng.random(n)
    y = (rng.random(n) < s ** 2).astype(int)
    fold = np.arange(n) % 3
    a = nested_calibration("binary", y, s, fold, method)
    y2 = np.where(fold == 0, 1 - y, y)
    b = nested_calibration("binary", y2, s, fold, method)
    np.testing.assert_allclose(a[fold == 0], b[fold == 0])
    assert not np.allclose(a[fold != 0], b[fold != 0])


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
@pytest.mark.parametrize("method", ["none", "platt", "beta", "isotonic"])
def test_every_calibrator_is_strictly_increasing_so_no_score_is_tied_or_reordered(kind, method):
    """Scores near 0 and 1, beyond the fitted range and between isotonic blocks all keep their order."""
    rng = np.random.default_rng(7)
    n = 2000
    s = np.clip(rng.beta(0.5, 3, size=(n, 2)), 1e-12, 1 - 1e-9)
    y = (rng.random((n, 2)) < s ** 2).astype(int)
    y[:, 1] = 1 - y[:, 1]  # a column the score ranks backwards: a logistic slope held at its floor
    cal = Calibrator(kind, method).fit(y[:, 0] if kind == "binary" else y, s[:, 0] if kind == "binary" else s)
    grid = np.r_[1e-14, 1e-12, np.sort(rng.random(5000)), 1 - 1e-9, 1 - 1e-12]
    out = cal.apply(grid if kind == "binary" else np.stack([grid, grid], axis=1))
    assert np.all(np.diff(out, axis=0) > 0)
    again = Calibrator.from_json(cal.to_json()).apply(grid if kind == "binary" else np.stack([grid, grid], axis=1))
    np.testing.assert_array_equal(again, out)


def test_isotonic_interpolates_between_block_centres_instead_of_steps():
    rng = np.random.default_rng(8)
    s = rng.random(3000)
    y = (rng.random(3000) < s).astype(int)
    cal = Calibrator("binary", "isotonic").fit(y, s)
    steps = len(cal.maps[0]["centres"])
    assert 3 < steps < 300 and len(np.unique(cal.apply(s))) == len(np.unique(s))
    assert calibration_metrics("binary", y, cal.apply(s))["ece"] < 0.03


def test_multiclass_is_calibrated_only_by_maps_that_keep_the_argmax():
    with pytest.raises(ValueError, match="multiclass task must be one of"):
        Calibrator("multiclass", "isotonic")
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.ones(3), size=400)
    y = np.array([rng.choice(3, p=r) for r in p])
    _, nested, record = calibrate("multiclass", y, p, np.arange(400) % 4)
    assert set(record["candidates"]) == {"none", "platt"}


def test_the_calibrated_model_ranks_as_the_final_model_and_its_brier_is_of_nested_scores(tmp_path):
    """A score that over-states every probability, per fold differently (so that per-fold maps would
    reorder the pooled rows): the saved OOF and test scores keep the final model's order, the Brier
    score and ECE are of the nested scores saved beside them."""
    from dermstack.calibration import NESTED_OOF, calibrated_model
    from dermstack.metrics import evaluate

    table, _, task, plan = toy("binary", n=1500, n_test=40, seed=10, positive_rate=0.15)
    rng = np.random.default_rng(11)
    fold_of = plan.fold_of(task.image_ids)
    raw = 1 / (1 + np.exp(-(task.y * 2 + rng.normal(0, 1, len(task.y)) + fold_of * 0.4 - 1)))
    test_ids = table.test["image_id"].to_list()
    final = ModelResult("final", Predictions.from_scores("final", task.image_ids, ["target"], raw, fold=fold_of),
                        Predictions.from_scores("final", test_ids, ["target"], rng.random(len(test_ids))))
    cal = calibrated_model(final, task, plan, tmp_path)
    oof = cal.oof.matrix(task.image_ids, ["target"])
    assert evaluate("binary", task.y, oof) == evaluate("binary", task.y, raw)
    assert (np.argsort(oof, kind="stable") == np.argsort(raw, kind="stable")).all()
    test_raw, test_cal = final.test.matrix(test_ids, ["target"]), cal.test.matrix(test_ids, ["target"])
    assert (np.argsort(test_cal, kind="stable") == np.argsort(test_raw, kind="stable")).all()
    nested = Predictions.read(tmp_path / "calibrated" / NESTED_OOF).matrix(task.image_ids, ["target"])
    record = cal.metrics["calibration"]
    assert record["method"] != "none" and calibration_metrics("binary", task.y, nested) == record["after"]
    assert evaluate("binary", task.y, nested)["roc_auc"] != evaluate("binary", task.y, raw)["roc_auc"]  # why two sets


def test_calibrate_chooses_by_nested_brier_and_improves_a_miscalibrated_score():
    rng = np.random.default_rng(3)
    n = 3000
    s = rng.random(n)
    y = (rng.random(n) < s ** 3).astype(int)  # the score over-states every probability
    cal, nested, record = calibrate("binary", y, s, np.arange(n) % 5)
    assert record["method"] in ("platt", "beta", "isotonic")
    assert record["after"]["brier"] == min(c["brier"] for c in record["candidates"].values())
    assert record["after"]["ece"] < record["before"]["ece"] / 3
    assert calibration_metrics("binary", y, nested) == record["after"]


def test_greedy_selection_is_never_worse_than_its_best_member_and_drops_noise():
    from dermstack.ensembles.level2 import task_score

    rng = np.random.default_rng(4)
    n = 2000
    y = (rng.random(n) < 0.2).astype(int)
    good = 1 / (1 + np.exp(-(y * 2 + rng.normal(0, 1, n))))
    other = 1 / (1 + np.exp(-(y * 1.5 + rng.normal(0, 1, n))))
    noise = rng.random(n)
    X = np.stack([good, other, noise], axis=1)[:, :, None]
    g = GreedyEnsemble("binary", ["good", "other", "noise"]).fit(X, y, np.arange(n) % 5)
    assert task_score("binary", y, g.predict(X)) >= task_score("binary", y, X[:, 0]) - 1e-12
    assert g.weights()["noise"] < 0.1 and g.weights()["good"] > g.weights()["noise"]


def _result(name, task, plan, scores):
    return ModelResult(name, Predictions.from_scores(name, task.image_ids, ["target"], scores, seed=0,
                                                     fold=plan.fold_of(task.image_ids)), Predictions.empty())


def test_auto_ensemble_never_scores_below_its_best_member(tmp_path):
    from dermstack.ensembles.select import primary_score, select_ensemble

    _, _, task, plan = toy("binary", n=1200, n_test=0, seed=8, positive_rate=0.1)
    rng = np.random.default_rng(5)
    y = task.y
    members = [_result("strong", task, plan, 1 / (1 + np.exp(-(y * 3 + rng.normal(0, 1, len(y)))))),
               _result("weak", task, plan, 1 / (1 + np.exp(-(y * 0.5 + rng.normal(0, 1, len(y)))))),
               _result("noise", task, plan, rng.random(len(y)))]
    chosen, record = select_ensemble(members, task, plan, tmp_path)
    best = max(primary_score(m, task) for m in members)
    assert primary_score(chosen, task) >= best - 1e-12
    assert record["chosen"] == chosen.name and record["best_member"] == "strong"
    assert set(record["candidates"]) == {"best member: strong", "mean", "greedy", "stack"}
    assert (tmp_path / "greedy" / "model.json").exists() and (tmp_path / "ensemble_choice.json").exists()


def test_stack_survives_a_multilabel_class_absent_from_a_fold():
    """A rare class with no positive in some folds' rows (MILK10k's rarest) is a constant there."""
    from dermstack.ensembles.level2 import LogisticStack

    rng = np.random.default_rng(6)
    n = 300
    y = (rng.random((n, 3)) < [0.3, 0.3, 0.0]).astype(np.int8)
    y[0, 2] = 1  # one positive, in fold 0 only
    X = np.clip(y[:, None, :] * 0.5 + rng.random((n, 2, 3)) * 0.5, 0.01, 0.99)
    groups = np.arange(n) % 3
    s = LogisticStack("multilabel", ["a", "b"]).fit(X[groups != 0], y[groups != 0], groups[groups != 0]).predict(X[groups == 0])
    assert s.shape == (100, 3) and np.isfinite(s).all() and (s[:, 2] < 1e-6).all()
