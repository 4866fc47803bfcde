"""A whole `dermstack run` (synthetic ISIC 2024, extraction, every feature group, LightGBM) and
`predict` on its test lesions from the saved models and fitted feature transform only."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.features.featureset import FeatureSet
from dermstack.features.transform import FeatureTransform
from dermstack.outputs.predict import predict_run
from lesion_tables import assert_features_equal
from tiny_runs import booster, embedded


def whole_run(weights) -> dict:
    """400 synthetic lesions with embeddings of the test backbone, every feature group, one LightGBM."""
    return {"data": {"lesions": 400, "test_lesions": 30, "positive_rate": 0.08, "image_size": 32}, "extract": embedded(weights),
            "features": {"metadata": True, "engineered": True, "patient": True, "embedding": True},
            "models": [booster("lightgbm", 30, seeds=[0])], "report": {"enabled": False}}


@pytest.fixture(scope="module")
def run_dir(tiny, test_weights):
    return tiny.run(**whole_run(test_weights))


def test_run_writes_the_fitted_transform_beside_the_features(run_dir):
    fs = FeatureSet.read(run_dir / "features.parquet")
    t = FeatureTransform.read(FeatureTransform.path_for(run_dir / "features.parquet"))
    prefix = next(iter(t.pca))
    assert t.pca[prefix].components.shape[0] == 4 and fs.transform is not None
    assert [c for c, g in fs.groups.items() if g == "embedding"] == [f"{prefix}_pc{i:02d}" for i in range(4)]


def test_predict_reproduces_the_runs_test_scores_from_new_rows_alone(run_dir):
    table = LesionTable.read(run_dir / "lesions.parquet")
    new = LesionTable(table.test, table.meta)
    got = predict_run(run_dir, new).filter(pl.col("model") == "lightgbm").sort("image_id")
    want = pl.read_parquet(run_dir / "test_predictions.parquet").filter(pl.col("model") == "lightgbm").sort("image_id")
    assert got.height == new.df.height == want.height
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-6)



def test_new_rows_get_the_features_the_run_gave_its_test_rows(run_dir, tmp_path):
    """Same leaky-column decisions, same PCA (not refitted), same patient context (the new rows only)."""
    from dermstack.outputs.predict import _features, as_run_rows

    table = LesionTable.read(run_dir / "lesions.parquet")
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    new = LesionTable(table.test, table.meta)
    fs = _features(cfg, run_dir, as_run_rows(table, new), new.df["image_id"].to_list(), tmp_path)
    run_fs = FeatureSet.read(run_dir / "features.parquet")
    assert fs.groups == run_fs.groups
    assert_features_equal(fs.df, run_fs.df.filter(pl.col("split") == "test"), fs.feature_columns)
