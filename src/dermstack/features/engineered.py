"""Engineered lesion features from the ISIC 2024 3D-TBP measurements, as polars expressions.

The public ISIC 2024 set (shared Kaggle notebooks, used by most top solutions). Each entry of
``ENGINEERED`` is one expression and its one-line definition; a feature is built only when every
column it reads is present, so tables without TBP measurements get none. A division by zero gives
null, not inf.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass

import polars as pl

c = pl.col


@dataclass(frozen=True)
class Engineered:
    """One engineered feature: its expression and a one-line definition."""

    expr: pl.Expr
    definition: str
    categorical: bool = False

    @property
    def inputs(self) -> list[str]:
        return sorted(set(self.expr.meta.root_names()))


def _sq(*names: str) -> pl.Expr:
    """Sum of squares that stays null when any input is null (unlike ``pl.sum_horizontal``)."""
    return functools.reduce(operator.add, [c(n) ** 2 for n in names])


def _delta_norm() -> pl.Expr:
    return _sq("tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL")


def _xyz_norm() -> pl.Expr:
    return _sq("tbp_lv_x", "tbp_lv_y", "tbp_lv_z").sqrt()


def _harmonic(a: str, b: str) -> pl.Expr:
    return c(a) * c(b) / (c(a) + c(b))


_border_complexity = c("tbp_lv_norm_border") + c("tbp_lv_symm_2axis")
_shape_index = c("tbp_lv_areaMM2") / c("tbp_lv_perimeterMM") ** 2

E = Engineered
#: name -> feature; the order is the column order of the output.
ENGINEERED: dict[str, Engineered] = {
    "lesion_size_ratio": E(c("tbp_lv_minorAxisMM") / c("clin_size_long_diam_mm"), "minorAxisMM / clin_size_long_diam_mm"),
    "lesion_shape_index": E(_shape_index, "areaMM2 / perimeterMM**2"),
    "hue_contrast": E((c("tbp_lv_H") - c("tbp_lv_Hext")).abs(), "|H - Hext|"),
    "luminance_contrast": E((c("tbp_lv_L") - c("tbp_lv_Lext")).abs(), "|L - Lext|"),
    "lesion_color_difference": E(_delta_norm().sqrt(), "sqrt(deltaA**2 + deltaB**2 + deltaL**2)"),
    "border_complexity": E(_border_complexity, "norm_border + symm_2axis"),
    "color_uniformity": E(c("tbp_lv_color_std_mean") / c("tbp_lv_radial_color_std_max"), "color_std_mean / radial_color_std_max"),
    "position_distance_3d": E(_xyz_norm(), "sqrt(x**2 + y**2 + z**2)"),
    "perimeter_to_area_ratio": E(c("tbp_lv_perimeterMM") / c("tbp_lv_areaMM2"), "perimeterMM / areaMM2"),
    "area_to_perimeter_ratio": E(c("tbp_lv_areaMM2") / c("tbp_lv_perimeterMM"), "areaMM2 / perimeterMM"),
    "lesion_visibility_score": E(c("tbp_lv_deltaLBnorm") + c("tbp_lv_norm_color"), "deltaLBnorm + norm_color"),
    "combined_anatomical_site": E(
        pl.concat_str([c("anatom_site_general"), c("tbp_lv_location")], separator="_"),
        "anatom_site_general + '_' + tbp_lv_location (categorical)", categorical=True,
    ),
    "symmetry_border_consistency": E(c("tbp_lv_symm_2axis") * c("tbp_lv_norm_border"), "symm_2axis * norm_border"),
    "consistency_symmetry_border": E(_harmonic("tbp_lv_symm_2axis", "tbp_lv_norm_border"),
                                     "symm_2axis * norm_border / (symm_2axis + norm_border)"),
    "color_consistency": E(c("tbp_lv_stdL") / c("tbp_lv_Lext"), "stdL / Lext"),
    "consistency_color": E(_harmonic("tbp_lv_stdL", "tbp_lv_Lext"), "stdL * Lext / (stdL + Lext)"),
    "size_age_interaction": E(c("clin_size_long_diam_mm") * c("age_approx"), "clin_size_long_diam_mm * age_approx"),
    "hue_color_std_interaction": E(c("tbp_lv_H") * c("tbp_lv_color_std_mean"), "H * color_std_mean"),
    "lesion_severity_index": E(
        (c("tbp_lv_norm_border") + c("tbp_lv_norm_color") + c("tbp_lv_eccentricity")) / 3,
        "(norm_border + norm_color + eccentricity) / 3",
    ),
    "shape_complexity_index": E(_border_complexity + _shape_index, "border_complexity + lesion_shape_index"),
    "color_contrast_index": E(
        c("tbp_lv_deltaA") + c("tbp_lv_deltaB") + c("tbp_lv_deltaL") + c("tbp_lv_deltaLBnorm"),
        "deltaA + deltaB + deltaL + deltaLBnorm",
    ),
    "log_lesion_area": E((c("tbp_lv_areaMM2") + 1).log(), "log(areaMM2 + 1)"),
    "normalized_lesion_size": E(c("clin_size_long_diam_mm") / c("age_approx"), "clin_size_long_diam_mm / age_approx"),
    "mean_hue_difference": E((c("tbp_lv_H") + c("tbp_lv_Hext")) / 2, "(H + Hext) / 2"),
    "std_dev_contrast": E((_delta_norm() / 3).sqrt(), "sqrt((deltaA**2 + deltaB**2 + deltaL**2) / 3)"),
    "color_shape_composite_index": E(
        (c("tbp_lv_color_std_mean") + c("tbp_lv_area_perim_ratio") + c("tbp_lv_symm_2axis")) / 3,
        "(color_std_mean + area_perim_ratio + symm_2axis) / 3",
    ),
    "lesion_orientation_3d": E(pl.arctan2(c("tbp_lv_y"), c("tbp_lv_x")), "atan2(y, x)"),
    "overall_color_difference": E((c("tbp_lv_deltaA") + c("tbp_lv_deltaB") + c("tbp_lv_deltaL")) / 3, "(deltaA + deltaB + deltaL) / 3"),
    "symmetry_perimeter_interaction": E(c("tbp_lv_symm_2axis") * c("tbp_lv_perimeterMM"), "symm_2axis * perimeterMM"),
    "comprehensive_lesion_index": E(
        (c("tbp_lv_area_perim_ratio") + c("tbp_lv_eccentricity") + c("tbp_lv_norm_color") + c("tbp_lv_symm_2axis")) / 4,
        "(area_perim_ratio + eccentricity + norm_color + symm_2axis) / 4",
    ),
    "color_variance_ratio": E(c("tbp_lv_color_std_mean") / c("tbp_lv_stdLExt"), "color_std_mean / stdLExt"),
    "border_color_interaction": E(c("tbp_lv_norm_border") * c("tbp_lv_norm_color"), "norm_border * norm_color"),
    "border_color_interaction_2": E(_harmonic("tbp_lv_norm_border", "tbp_lv_norm_color"),
                                    "norm_border * norm_color / (norm_border + norm_color)"),
    "size_color_contrast_ratio": E(c("clin_size_long_diam_mm") / c("tbp_lv_deltaLBnorm"), "clin_size_long_diam_mm / deltaLBnorm"),
    "age_normalized_nevi_confidence": E(c("tbp_lv_nevi_confidence") / c("age_approx"), "nevi_confidence / age_approx"),
    "age_normalized_nevi_confidence_2": E(
        _sq("clin_size_long_diam_mm", "age_approx").sqrt(), "sqrt(clin_size_long_diam_mm**2 + age_approx**2)"
    ),
    "color_asymmetry_index": E(c("tbp_lv_radial_color_std_max") * c("tbp_lv_symm_2axis"), "radial_color_std_max * symm_2axis"),
    "volume_approximation_3d": E(c("tbp_lv_areaMM2") * _xyz_norm(), "areaMM2 * sqrt(x**2 + y**2 + z**2)"),
    "color_range": E(
        (c("tbp_lv_L") - c("tbp_lv_Lext")).abs() + (c("tbp_lv_A") - c("tbp_lv_Aext")).abs() + (c("tbp_lv_B") - c("tbp_lv_Bext")).abs(),
        "|L - Lext| + |A - Aext| + |B - Bext|",
    ),
    "shape_color_consistency": E(c("tbp_lv_eccentricity") * c("tbp_lv_color_std_mean"), "eccentricity * color_std_mean"),
    "border_length_ratio": E(
        c("tbp_lv_perimeterMM") / (2 * math.pi * (c("tbp_lv_areaMM2") / math.pi).sqrt()),
        "perimeterMM / (2 pi sqrt(areaMM2 / pi)): perimeter over that of the circle of equal area",
    ),
    "age_size_symmetry_index": E(
        c("age_approx") * c("clin_size_long_diam_mm") * c("tbp_lv_symm_2axis"), "age_approx * clin_size_long_diam_mm * symm_2axis"
    ),
    "index_age_size_symmetry": E(c("age_approx") * c("tbp_lv_areaMM2") * c("tbp_lv_symm_2axis"), "age_approx * areaMM2 * symm_2axis"),
}
del E


def available(columns: list[str] | set[str]) -> list[str]:
    """Names of the engineered features whose input columns are all in ``columns``."""
    have = set(columns)
    return [name for name, f in ENGINEERED.items() if set(f.inputs) <= have]


def engineered_features(df: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """``image_id`` + every engineered feature that ``df`` can feed; returns (frame, categorical names)."""
    names = available(df.columns)
    exprs = []
    for name in names:
        f = ENGINEERED[name]
        if f.categorical:
            exprs.append(f.expr.alias(name))
        else:
            x = f.expr.cast(pl.Float64)
            exprs.append(pl.when(x.is_finite()).then(x).otherwise(None).alias(name))
    cats = [n for n in names if ENGINEERED[n].categorical]
    return df.select([pl.col("image_id"), *exprs]), cats
