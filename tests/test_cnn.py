"""The per-fold CNN: heads for every task, checkpoints that reload to the same scores, augmentation, config."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from dermstack.cnn.augment import Augment, cache_size
from dermstack.cnn.params import CNNConfig
from dermstack.cnn.saved import predict_cnn_saved
from dermstack.cnn.train import cross_validate_cnn, sampling_weights
from dermstack.config import ModelConfig
from dermstack.errors import ConfigError
from ensembles_toy import setup, tiny_cnn


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_cnn_cross_validation_every_head(tmp_path, kind):
    table, task, plan = setup(tmp_path / "img", kind)
    res = cross_validate_cnn(table, task, plan, tiny_cnn(), tmp_path / "models", progress=False)
    n, n_test, C = len(task.image_ids), table.test.height, len(task.classes)
    assert res.oof.height == n * C and res.test.height == n_test * C
    assert res.oof.frame["score"].is_between(0, 1).all() and res.test.frame["score"].is_between(0, 1).all()
    folds = dict(zip(plan.folds["image_id"], plan.folds["fold"]))
    assert all(folds[i] == f for i, f in res.oof.frame.select("image_id", "fold").iter_rows())
    if kind == "multiclass":
        sums = res.oof.frame.group_by("image_id").agg(pl.col("score").sum())
        assert np.allclose(sums["score"].to_numpy(), 1, atol=1e-3)
    mdir = tmp_path / "models" / "cnn"
    spec = json.loads((mdir / "model.json").read_text())
    assert [m["fold"] for m in spec["models"]] == [0, 1, 2] and spec["task"] == kind
    assert set(res.metrics) >= {"folds", "ci95", "best_epoch", "history"}


def test_saved_checkpoints_reproduce_test_scores(tmp_path):
    table, task, plan = setup(tmp_path / "img", "binary")
    res = cross_validate_cnn(table, task, plan, tiny_cnn(), tmp_path / "models", progress=False)
    from safetensors.torch import load_file

    from dermstack.data.table import LesionTable

    state = load_file(str(tmp_path / "models" / "cnn" / "fold0_seed0.safetensors"))  # tensors only, no pickle
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())

    again = predict_cnn_saved(tmp_path / "models" / "cnn", LesionTable(table.test, table.meta), progress=False)
    assert np.allclose(again, res.test.frame["score"].to_numpy(), atol=1e-6)


def test_cnn_learns_a_visible_signal(tmp_path):
    table, task, plan = setup(tmp_path / "img", "binary", n=90)
    res = cross_validate_cnn(table, task, plan, tiny_cnn(epochs=4, samples_per_epoch=192), None, progress=False)
    assert res.metrics["roc_auc"] > 0.75, res.metrics


def test_rows_without_image_are_named(tmp_path):
    from dermstack.data.table import LesionTable
    from dermstack.errors import DataError

    table, task, plan = setup(tmp_path / "img", "binary")
    df = table.df.with_columns(pl.when(pl.col("image_id") == "img005").then(None).otherwise(pl.col("image_ref")).alias("image_ref"))
    with pytest.raises(DataError, match="img005"):
        cross_validate_cnn(LesionTable(df, table.meta), task, plan, tiny_cnn(), None, progress=False)


def test_config_from_model_and_unknown_param():
    cfg = CNNConfig.from_model(ModelConfig(kind="cnn", backbone="resnet18", epochs=5, image_size=96, params={"lr": 0.01}))
    assert (cfg.backbone, cfg.epochs, cfg.image_size, cfg.lr) == ("resnet18", 5, 96, 0.01)
    with pytest.raises(ConfigError, match="learning_rate"):
        CNNConfig.from_model(ModelConfig(kind="cnn", params={"learning_rate": 0.01}))
    with pytest.raises(ConfigError, match="precision"):
        CNNConfig.from_model(ModelConfig(kind="cnn", params={"precision": "int8"}))


def test_balanced_sampling_weights():
    y = np.array([0] * 90 + [1] * 10)
    w = sampling_weights("binary", y, 1.0)
    assert np.isclose(w[y == 0].sum(), w[y == 1].sum())
    w0 = sampling_weights("binary", y, 0.0)
    assert np.allclose(w0, 1)
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    wm = sampling_weights("multilabel", Y, 1.0)
    assert np.allclose(wm, [0.5, 0.5, 1, 1])


def test_augment_shapes_and_determinism():
    aug = Augment(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.randint(0, 256, (4, 3, cache_size(32), cache_size(32)), dtype=torch.uint8)
    a = aug(x, train=True, generator=torch.Generator().manual_seed(1))
    b = aug(x, train=True, generator=torch.Generator().manual_seed(1))
    c = aug(x, train=True, generator=torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    e = aug(x, train=False)
    off = (cache_size(32) - 32) // 2
    expect = (x[:, :, off:off + 32, off:off + 32].float() / 255 - 0.5) / 0.25
    assert torch.allclose(e, expect, atol=1e-5)
