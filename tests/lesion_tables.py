"""Small hand-made LesionTables and a fake EmbeddingStore for the features tests."""
from __future__ import annotations

import numpy as np
import polars as pl

from dermstack.data.table import LesionTable, TableMeta, default_feature_columns, finalize_frame


def lesion_table(columns: dict[str, list], dataset: str = "test") -> LesionTable:
    """A LesionTable of ``columns`` (core columns missing from it are null); ``split`` defaults to train."""
    df = pl.DataFrame(columns)
    if "split" not in df.columns:
        df = df.with_columns(pl.lit("train").alias("split"))
    df = finalize_frame(df)
    feats, cats = default_feature_columns(df)
    return LesionTable(df, TableMeta(dataset, feature_columns=feats, categorical_columns=cats))


def random_tbp_table(n_patients: int = 6, per_patient: int = 8, seed: int = 0) -> LesionTable:
    """Random lesions with a few numeric metadata columns and a site, several per patient."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    return lesion_table({
        "image_id": [f"img{i:04d}" for i in range(n)],
        "patient_id": [f"P{i // per_patient}" for i in range(n)],
        "target": (rng.random(n) < 0.3).astype(int).tolist(),
        "age_approx": rng.choice([35.0, 50.0, 70.0], n).tolist(),
        "anatom_site_general": rng.choice(["torso", "head/neck", "lower extremity"], n).tolist(),
        "clin_size_long_diam_mm": rng.uniform(2, 10, n).tolist(),
        "tbp_lv_minorAxisMM": rng.uniform(1, 5, n).tolist(),
        "tbp_lv_H": rng.uniform(30, 70, n).tolist(),
        "tbp_lv_Hext": rng.uniform(30, 70, n).tolist(),
    })


class FakeStore:
    """The two methods of ``dermstack.extract.store.EmbeddingStore`` the features stage calls."""

    def __init__(self, ids: list[str], arrays: dict[str, np.ndarray]):
        self.pos = {i: k for k, i in enumerate(ids)}
        self.arrays = arrays

    def backbones(self) -> list[str]:
        return list(self.arrays)

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        return self.arrays[backbone][[self.pos[i] for i in image_ids]]


def assert_features_equal(got: pl.DataFrame, want: pl.DataFrame, columns: list[str], atol: float = 1e-5) -> None:
    """Same rows (by image_id) and, per column, numbers within ``atol`` or equal values."""
    got, want = got.sort("image_id"), want.sort("image_id")
    assert got["image_id"].to_list() == want["image_id"].to_list()
    for c in columns:
        if got.schema[c].is_numeric():
            np.testing.assert_allclose(got[c].to_numpy().astype(float), want[c].to_numpy().astype(float), atol=atol, err_msg=c)
        else:
            assert got[c].to_list() == want[c].to_list(), c
