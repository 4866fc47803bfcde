"""Engineered ISIC 2024 features against values computed by hand."""
from __future__ import annotations

import math

import polars as pl
import pytest

from dermstack.features.engineered import ENGINEERED, available, engineered_features

ROW = {
    "image_id": ["a", "b", "c"],
    "tbp_lv_minorAxisMM": [2.0, 1.0, None], "clin_size_long_diam_mm": [4.0, 5.0, 3.0],
    "tbp_lv_areaMM2": [math.pi * 4, 3.0, 2.0], "tbp_lv_perimeterMM": [math.pi * 4, 6.0, 4.0],
    "tbp_lv_H": [50.0, 40.0, 60.0], "tbp_lv_Hext": [55.0, 45.0, 58.0],
    "tbp_lv_L": [40.0, 50.0, 60.0], "tbp_lv_Lext": [55.0, 52.0, 59.0],
    "tbp_lv_deltaA": [3.0, 0.0, 1.0], "tbp_lv_deltaB": [4.0, 0.0, 1.0], "tbp_lv_deltaL": [12.0, 0.0, 1.0],
    "tbp_lv_norm_border": [2.0, 0.0, 1.0], "tbp_lv_symm_2axis": [0.5, 0.0, 1.0],
    "anatom_site_general": ["torso", None, "head/neck"], "tbp_lv_location": ["Torso Back", "Left Arm", "Head & Neck"],
}


@pytest.fixture(scope="module")
def feats() -> pl.DataFrame:
    frame, cats = engineered_features(pl.DataFrame(ROW))
    assert cats == ["combined_anatomical_site"]
    return frame


def test_definitions_match_hand_computed_values(feats):
    a = feats.row(0, named=True)
    assert a["lesion_size_ratio"] == pytest.approx(0.5)
    assert a["lesion_shape_index"] == pytest.approx(4 * math.pi / (16 * math.pi**2))
    assert a["hue_contrast"] == pytest.approx(5.0)
    assert a["luminance_contrast"] == pytest.approx(15.0)
    assert a["lesion_color_difference"] == pytest.approx(13.0)  # 3-4-12-13
    assert a["std_dev_contrast"] == pytest.approx(13.0 / math.sqrt(3))
    assert a["border_complexity"] == pytest.approx(2.5)
    assert a["symmetry_border_consistency"] == pytest.approx(1.0)
    assert a["consistency_symmetry_border"] == pytest.approx(1.0 / 2.5)
    assert a["shape_complexity_index"] == pytest.approx(2.5 + 1 / (4 * math.pi))
    assert a["perimeter_to_area_ratio"] == pytest.approx(1.0)
    assert a["log_lesion_area"] == pytest.approx(math.log(4 * math.pi + 1))
    # a circle of radius 2 has area 4 pi and perimeter 4 pi: its border_length_ratio is 1
    assert a["border_length_ratio"] == pytest.approx(1.0)
    assert a["combined_anatomical_site"] == "torso_Torso Back"


def test_missing_inputs_and_division_by_zero_give_null(feats):
    b, c = feats.row(1, named=True), feats.row(2, named=True)
    assert c["lesion_size_ratio"] is None  # minorAxisMM missing
    assert c["hue_contrast"] == pytest.approx(2.0)  # other features of that row are still built
    assert b["consistency_symmetry_border"] is None  # 0 * 0 / (0 + 0)
    assert b["combined_anatomical_site"] is None
    assert feats.height == 3


def test_only_features_whose_inputs_are_present():
    names = available(["image_id", "tbp_lv_H", "tbp_lv_Hext"])
    assert names == ["hue_contrast", "mean_hue_difference"]
    frame, _ = engineered_features(pl.DataFrame({"image_id": ["x"], "age_approx": [40.0]}))
    assert frame.columns == ["image_id"]


def test_registry_is_documented():
    assert len(ENGINEERED) >= 40
    for name, f in ENGINEERED.items():
        assert f.definition and f.inputs, name


def test_all_built_on_real_isic2024_columns(shared_data):
    df = pl.read_csv(shared_data / "isic2024-train-sample" / "train-metadata.csv", infer_schema_length=None)
    frame, _ = engineered_features(df.rename({"isic_id": "image_id"}))
    assert frame.width - 1 == len(ENGINEERED)
    assert frame["lesion_size_ratio"].to_list()[:3] == pytest.approx(
        (df["tbp_lv_minorAxisMM"] / df["clin_size_long_diam_mm"]).to_list()[:3])
