"""When the default model set fine-tunes a CNN: the decision on the data's profile, and a tiny image-only run."""
from __future__ import annotations

import dataclasses
import doctest
import logging
from importlib.resources import files

import polars as pl
import pytest

import dermstack.cnn.kind as cnn_kind
import dermstack.config.modelconfig as modelconfig
import dermstack.dataprofile as dataprofile
from dermstack.cnn.params import CNNConfig
from dermstack.config import FeaturesConfig, RunConfig, default_choices, default_models
from dermstack.data.table import LesionTable
from dermstack.dataprofile import DataProfile
from dermstack.features.build import data_profile, table_feature_count
from dermstack.run import Run
from dermstack.task import TaskSpec
from extract_fixtures import TEST_MODEL
from tiny_runs import embedded, tiny_config

BOOSTERS = ["lightgbm", "xgboost", "catboost"]
#: image-only: no metadata, engineered, patient or mask features
IMAGE_ONLY = {"metadata": False, "engineered": False, "patient": False, "image": False}


def kinds(data) -> list[str]:
    return [m.kind for m in default_models(data)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_image_only_data_with_enough_rows_gets_the_cnn_and_the_log_says_why_and_what_it_costs(device):
    data = DataProfile(10_291, images=True, table_features=0, device=device, n_test=3)
    choice = default_choices(data)["cnn"]
    assert choice and kinds(data) == [*BOOSTERS, "logistic", "cnn"]
    seconds = cnn_kind.expected_seconds(data, CNNConfig.defaults(device))
    assert "image-only data with 10,291 training rows" in choice.why and f"about {seconds:,.0f} s more on {device}" in choice.why


@pytest.mark.parametrize(("data", "rule"), [
    (DataProfile(10_291, images=True, table_features=3), "3 table features beside the images"),
    (DataProfile(cnn_kind.CNN_MIN_ROWS - 1, images=True), f"(under {cnn_kind.CNN_MIN_ROWS:,})"),
    (DataProfile(401_059, images=True, device="cpu"), "over the 1,800 s the default spends on cpu"),
    (DataProfile(401_059, images=True, device="cuda"), "over the 3,600 s the default spends on cuda"),
])
def test_metadata_few_rows_or_too_much_time_leave_the_cnn_out_and_say_which_rule(data, rule):
    choice = default_choices(data)["cnn"]
    assert not choice and "cnn" not in kinds(data)
    assert choice.why.startswith("not in the default set") and rule in choice.why and 'kind = "cnn"' in choice.why


def test_without_images_the_cnn_is_not_considered_and_a_row_count_means_no_images():
    for data in (DataProfile(10_291, images=False), 10_291):
        choice = default_choices(data)["cnn"]
        assert not choice and choice.why == "" and kinds(data) == [*BOOSTERS, "logistic"]
    assert kinds(500) == kinds(DataProfile(500)) == [*BOOSTERS, "logistic"]


def test_expected_time_grows_with_rows_and_fewer_pair_epochs_cost_less():
    cfg = CNNConfig.defaults("cpu")
    small, big = (cnn_kind.expected_seconds(DataProfile(n, images=True), cfg) for n in (2_000, 20_000))
    assert 0 < small < big
    fewer = dataclasses.replace(cfg, pair_epochs=1)
    assert cnn_kind.expected_seconds(DataProfile(2_000, images=True), fewer) < small


def test_the_demo_names_its_models_so_the_default_set_adds_no_second_cnn():
    demo = RunConfig.from_toml(files("dermstack") / "configs" / "demo.toml")
    assert [m.kind for m in demo.models].count("cnn") == 1


def test_a_tiny_image_only_run_without_models_trains_the_cnn_and_its_feature_boosters(tmp_path, monkeypatch, caplog, test_weights):
    """The default set on image-only data (rows threshold lowered, the CNN's defaults made tiny)."""
    monkeypatch.setattr(cnn_kind, "CNN_MIN_ROWS", 100)
    tiny_cnn = CNNConfig(backbone=TEST_MODEL, pretrained=False, image_size=32, epochs=1, samples_per_epoch=32,
                         batch_size=32, freeze_fraction=0.0, tta=False)
    monkeypatch.setattr(CNNConfig, "defaults", classmethod(lambda cls, device: tiny_cnn))
    cfg = RunConfig.from_dict(tiny_config(features=IMAGE_ONLY, extract=embedded(test_weights), ensemble={"method": "greedy"}))
    with caplog.at_level(logging.INFO, logger="dermstack"):
        metrics = Run(cfg, tmp_path / "run").execute()
    assert "cnn: in the default set: image-only data with" in caplog.text
    assert [m.kind for m in RunConfig.from_toml(tmp_path / "run" / "config.toml").models] == [*BOOSTERS, "logistic", "cnn"]
    assert {f"{b}+cnn" for b in BOOSTERS} <= set(metrics["models"])

    table = LesionTable.read(tmp_path / "run" / "lesions.parquet")
    task = TaskSpec.from_table(table, "binary")
    profile = data_profile(table, cfg, len(task.image_ids))
    assert profile.image_only and profile.n_train == len(task.image_ids) and profile.n_splits == 3
    with_metadata = data_profile(table, RunConfig.from_dict(tiny_config()), len(task.image_ids))
    assert not with_metadata.image_only
    # the synthetic ISIC 2024 table: its metadata columns, read by the metadata group or through the
    # engineered and patient features they feed; masks: one more
    n_meta = table_feature_count(table, FeaturesConfig())
    assert n_meta == with_metadata.table_features > 10
    for only in ({"metadata": True}, {"engineered": True}, {"patient": True}):
        assert table_feature_count(table, FeaturesConfig(**{**IMAGE_ONLY, **only})) == n_meta
    masked = table.df.with_columns(mask_ref=pl.col("image_ref"))
    assert table_feature_count(LesionTable(masked, table.meta), FeaturesConfig(**{**IMAGE_ONLY, "image": "auto"})) == 1


@pytest.mark.parametrize("module", [cnn_kind, dataprofile, modelconfig])
def test_the_decision_docstring_examples(module):
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
