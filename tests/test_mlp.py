"""``kind = "mlp"``, added through the registry alone: every task kind, seeds honoured, files without
pickle that reproduce the scores, contributions (exact and sampled) that add up to the margin."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dermstack.config import ModelConfig, RunConfig
from dermstack.errors import ConfigError
from dermstack.features.featureset import FeatureSet
from dermstack.mlp.net import EXACT_MAX_TERMS, FittedMLP
from dermstack.registry import FitInputs, model_kind
from dermstack.saved import Inputs, load, predict_all
from dermstack.taskkind import TaskKind
from test_linear import toy_run

FAST = {"hidden": [16], "epochs": 20, "patience": 3, "inner_splits": 3, "permutations": 4}


def run_mlp(tmp_path, task, seeds=(0,), params=FAST):
    fs, store, spec, plan = toy_run(task, n=200)
    model = ModelConfig(kind="mlp", params=dict(params), seeds=list(seeds))
    result = model_kind("mlp").cross_validate(FitInputs(spec, plan, model, tmp_path / "models", features=fs, store=store))
    return fs, store, spec, plan, result


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_every_task_kind_scores_saves_and_explains(tmp_path, task):
    fs, store, spec, plan, result = run_mlp(tmp_path, task)
    oof = result.oof.matrix(spec.image_ids, spec.classes)
    assert np.isfinite(oof).all() and result.metrics[spec.primary_metric] > 0
    saved = load(tmp_path / "models" / "mlp")
    test_ids = fs.df.filter(pl.col("split") == "test")["image_id"].to_list()
    new = FeatureSet(fs.df.filter(pl.col("split") == "test"), fs.groups, fs.categorical)
    inputs = Inputs(test_ids, spec.classes, features=new, embeddings=store)
    np.testing.assert_allclose(predict_all(tmp_path / "models", inputs)["mlp"].matrix(test_ids, spec.classes),
                               result.test.matrix(test_ids, spec.classes), atol=1e-6)
    for net in saved.probes():  # contributions add up to each network's margin
        X = net.design.matrix(saved.rows(inputs))
        values, base = net.contributions(X)
        total = values.sum(1) + base
        np.testing.assert_allclose(total.reshape(len(X), -1), net.margin(X), atol=1e-8)
    assert not list((tmp_path / "models" / "mlp").glob("*.pkl"))


def test_seeds_are_honoured(tmp_path):
    one = run_mlp(tmp_path / "a", "binary")[-1].oof.frame
    again = run_mlp(tmp_path / "b", "binary")[-1].oof.frame
    other = run_mlp(tmp_path / "c", "binary", seeds=(1,))[-1].oof.frame
    assert one["score"].to_list() == again["score"].to_list()
    assert one["score"].to_list() != other["score"].to_list()


def test_exact_and_sampled_shapley_agree_on_an_additive_network():
    """A network with no hidden nonlinearity in play (weights positive, inputs positive) is additive:
    every Shapley value is the term's own linear share, exactly or sampled."""
    rng = np.random.default_rng(0)
    for T in (3, EXACT_MAX_TERMS + 2):  # exact subsets, sampled permutations

        class Layout:  # the two attributes contributions() reads from a Design
            terms = [f"t{i}" for i in range(T)]
            term_index = np.arange(T)

        W1, W2 = np.abs(rng.normal(size=(5, T))), np.abs(rng.normal(size=(1, 5)))
        X = np.abs(rng.normal(size=(7, T)))
        net = FittedMLP(Layout(), TaskKind.BINARY, [W1, np.zeros(5), W2, np.zeros(1)], 1, permutations=3)
        values, base = net.contributions(X)
        np.testing.assert_allclose(values, X * (W2 @ W1)[0], atol=1e-9)
        np.testing.assert_allclose(base, 0.0)


def test_params_are_checked_by_the_kinds_schema():
    with pytest.raises(ConfigError, match="hidden"):
        RunConfig.from_dict({"models": [{"kind": "mlp", "params": {"hidden": [8, 8, 8]}}]})
    with pytest.raises(ConfigError, match="dropout"):
        RunConfig.from_dict({"models": [{"kind": "mlp", "params": {"dropout": 1.5}}]})


def test_the_probe_start_is_the_linear_probe_plus_a_residual_that_starts_at_zero():
    """Epoch 0 of ``start = "probe"`` scores exactly as the probe fitted with the same class weights;
    the residual's epochs are chosen on the inner split, then everything is refitted on every row."""
    from dermstack.linear.probe import LinearParams, fit_probe
    from dermstack.mlp.net import _probe, _train, fit_mlp
    from dermstack.mlp.params import MLPParams

    rng = np.random.default_rng(1)
    n, T = 240, 6

    class Layout:
        terms = [f"t{i}" for i in range(T)]
        term_index = np.arange(T)

    X = rng.normal(size=(n, T))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=n) > 0.5).astype(int)
    groups = np.arange(n) // 2
    params = MLPParams(hidden=[8], epochs=30, patience=3, inner_splits=3)
    skip = _probe(Layout(), X, y, groups, TaskKind.BINARY, 1, params, 0)
    probe = fit_probe(Layout(), X, y, groups, TaskKind.BINARY, 1, LinearParams(class_weight="balanced", inner_splits=3), 0)
    weights, epochs = _train(X, y, np.arange(n), np.arange(0), skip, TaskKind.BINARY, 1, params, 0, epochs=0)
    zero = FittedMLP(Layout(), TaskKind.BINARY, weights, epochs, skip=skip)
    assert epochs == 0
    np.testing.assert_allclose(zero.margin(X), probe.margin(X), atol=1e-9)
    net = fit_mlp(Layout(), X, y, groups, TaskKind.BINARY, 1, params, 0)
    values, base = net.contributions(X)
    np.testing.assert_allclose(values.sum(1) + base, net.margin(X)[:, 0], atol=1e-8)
    plain = fit_mlp(Layout(), X, y, groups, TaskKind.BINARY, 1, MLPParams(hidden=[8], epochs=30, start="random"), 0)
    assert plain.skip is None and net.skip is not None
