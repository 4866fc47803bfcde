"""ISIC vocabularies (from the ``isic-metadata`` package) and the maps of other datasets onto them."""
from __future__ import annotations

import typing

import polars as pl
from isic_metadata import FIELD_REGISTRY
from isic_metadata.fields import AnatomSiteGeneralEnum, DiagnosisEnum, ImageTypeEnum
from isic_metadata.metadata import MetadataRow

from dermstack.data.report import IngestReport


def _literals(annotation) -> tuple[str, ...]:
    """String values of a (possibly optional) ``Literal`` annotation."""
    return tuple(v for a in typing.get_args(annotation) for v in (typing.get_args(a) or (a,)) if isinstance(v, str))


#: ``sex`` values the ISIC Archive accepts.
SEX = _literals(MetadataRow.model_fields["sex"].annotation)
#: ``anatom_site_general`` values the ISIC Archive accepts.
ANATOM_SITE_GENERAL = tuple(e.value for e in AnatomSiteGeneralEnum)
#: Top level of the ISIC diagnosis hierarchy: Benign / Malignant / Indeterminate.
DIAGNOSIS_1 = tuple(sorted({DiagnosisEnum.levels(e.value)[0] for e in DiagnosisEnum}))
IMAGE_TYPE = {e.name: e.value for e in ImageTypeEnum}
#: Metadata fields the ISIC Archive defines (current schema) plus its computed/legacy export columns.
ISIC_FIELDS = frozenset(FIELD_REGISTRY) | frozenset(MetadataRow.model_fields) | {
    "isic_id", "attribution", "copyright_license", "age_approx", "pixels_x", "pixels_y",
    "benign_malignant", "diagnosis", "mel_class", "mel_type", "nevus_type", "anatom_site_special",
}

#: HAM10000 ``localization`` -> ISIC ``anatom_site_general`` (``trunk``/``unknown`` have no match).
HAM_SITES = {
    "back": "posterior torso", "abdomen": "anterior torso", "chest": "anterior torso",
    "face": "head/neck", "scalp": "head/neck", "ear": "head/neck", "neck": "head/neck",
    "upper extremity": "upper extremity", "hand": "upper extremity",
    "lower extremity": "lower extremity", "foot": "lower extremity",
    "genital": "oral/genital", "acral": "palms/soles",
}
#: MILK10k ``site`` -> ISIC ``anatom_site_general`` (``trunk`` has no match).
MILK_SITES = {
    "head_neck_face": "head/neck", "upper_extremity": "upper extremity", "hand": "upper extremity",
    "lower_extremity": "lower extremity", "foot": "lower extremity", "genital": "oral/genital",
}
#: Valid (inclusive) ranges of numeric metadata; a value outside, or a NaN / inf anywhere, is read as
#: missing with a note (an error under --strict). Columns not listed only have to be finite.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age_approx": (0, 120),
    "clin_size_long_diam_mm": (0, 1000), "mel_thick_mm": (0, 100),
    "tbp_lv_areaMM2": (0, 1e6), "tbp_lv_perimeterMM": (0, 1e4), "tbp_lv_minorAxisMM": (0, 1000),
    "tbp_lv_nevi_confidence": (0, 100), "tbp_lv_dnn_lesion_confidence": (0, 100),
    "tbp_lv_eccentricity": (0, 1), "tbp_lv_H": (0, 360), "tbp_lv_Hext": (0, 360),
    "tbp_lv_L": (0, 100), "tbp_lv_Lext": (0, 100), "tbp_lv_symm_2axis_angle": (0, 360),
    "skin_tone_class": (0, 5),  # MILK10k: Fitzpatrick-like 0-5
    "pixels_x": (1, 1e6), "pixels_y": (1, 1e6),
}
#: Ranges by column prefix (MONET concept scores are probabilities).
NUMERIC_RANGE_PREFIXES: dict[str, tuple[float, float]] = {"MONET_": (0, 1)}


def valid_range(column: str) -> tuple[float, float] | None:
    """The (low, high) a value of ``column`` must lie in, or None when any finite number will do."""
    if column in NUMERIC_RANGES:
        return NUMERIC_RANGES[column]
    return next((r for p, r in NUMERIC_RANGE_PREFIXES.items() if column.startswith(p)), None)


assert set(HAM_SITES.values()) | set(MILK_SITES.values()) <= set(ANATOM_SITE_GENERAL)


def map_values(df: pl.DataFrame, source: str, target: str, mapping: dict[str, str], report: IngestReport) -> pl.DataFrame:
    """Add ``target`` = ``mapping`` applied to ``source``; note the values that have no match."""
    unmatched = df.filter(pl.col(source).is_not_null() & ~pl.col(source).is_in(list(mapping)))[source].value_counts(sort=True)
    if unmatched.height:
        shown = ", ".join(f"{v!r} ({n})" for v, n in unmatched.rows())
        report.note(f"{source} values without an ISIC {target} equivalent left null in {target} (kept in {source}): {shown}")
    return df.with_columns(pl.col(source).replace_strict(mapping, default=None, return_dtype=pl.String).alias(target))


def check_vocabulary(df: pl.DataFrame, column: str, allowed: tuple[str, ...], report: IngestReport,
                     null_values: tuple[str, ...] = ()) -> pl.DataFrame:
    """Normalise case; ``null_values`` (e.g. HAM's 'unknown') become null; other unknown values are kept and noted."""
    if column not in df.columns:
        return df
    lowered = {a.lower(): a for a in allowed}
    col = pl.col(column)
    df = df.with_columns(
        pl.when(col.str.to_lowercase().is_in(list(null_values))).then(None)
        .otherwise(col.str.to_lowercase().replace(lowered)).alias(column))
    odd = df.filter(col.is_not_null() & ~col.is_in(list(allowed)))[column].value_counts(sort=True)
    if odd.height:
        shown = ", ".join(f"{v!r} ({n})" for v, n in odd.rows()[:10])
        report.note(f"{column}: values outside the ISIC vocabulary kept as they are: {shown}")
    if null_values and (n := df[column].null_count()):  # nothing to say with no row missing
        report.note(f"{column}: {', '.join(null_values)} read as missing ({n} rows without {column})")
    return df


def diagnosis_label(df: pl.DataFrame, levels: list[str]) -> pl.Expr:
    """``label``: the first non-empty of the diagnosis columns ``levels`` (most specific first) the file has."""
    present = [c for c in levels if c in df.columns]
    return (pl.coalesce(present) if present else pl.lit(None, pl.String)).alias("label")
