"""ISIC Archive export as isic-cli writes it: ``metadata.csv`` + ``ISIC_*.jpg``, any schema generation.

Malignancy: the current ``diagnosis_1`` (Benign / Malignant / Indeterminate) when decisive, else
the legacy ``benign_malignant`` (benign / malignant / indeterminate*). A lesion neither source
calls benign or malignant keeps ``target`` null, with a note. ``label`` is the most specific
diagnosis: ``diagnosis_3``, else legacy ``diagnosis``, else ``diagnosis_2`` / ``diagnosis_1``.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.data.readers.build import finish
from dermstack.data.readers.csvio import RowProblems, check_ids, infer_types, null_invalid_numbers, parse_numbers, read_csv, require_columns
from dermstack.data.readers.files import attach_files
from dermstack.data.readers.vocab import ANATOM_SITE_GENERAL, ISIC_FIELDS, SEX, check_vocabulary, diagnosis_label
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable, TableMeta
from dermstack.errors import DataError

NUMERIC_COLUMNS = ["age_approx", "clin_size_long_diam_mm", "mel_thick_mm", "pixels_x", "pixels_y", "acquisition_day"]
LABEL_LEVELS = ["diagnosis_3", "diagnosis", "diagnosis_2", "diagnosis_1"]


def read_isic_archive(path: Path, report: IngestReport) -> LesionTable:
    """``path`` is the export folder (or its ``metadata.csv``)."""
    path = Path(path)
    csv = path if path.is_file() else path / "metadata.csv"
    root = csv.parent
    df = read_csv(csv, report=report)
    require_columns(df, ["isic_id"], csv)
    if "diagnosis_1" not in df.columns and "benign_malignant" not in df.columns:
        raise DataError("needs diagnosis_1 or benign_malignant to tell malignant from benign", file=str(csv),
                        column="diagnosis_1")
    problems = RowProblems(csv, report, "isic_id")
    check_ids(df, "isic_id", problems)
    df = parse_numbers(df, NUMERIC_COLUMNS, problems)
    df = problems.apply(df)
    df = check_vocabulary(df, "sex", SEX, report)
    df = check_vocabulary(df, "anatom_site_general", ANATOM_SITE_GENERAL, report)
    df = df.with_columns(_malignant(df, report), diagnosis_label(df, LABEL_LEVELS),
                         pl.col("isic_id").alias("image_id"), pl.lit("train").alias("split"))
    schema = df.schema  # built per access
    other = [c for c, t in schema.items() if t == pl.String and c not in ("isic_id", "image_id", "split", "label")]
    df = infer_types(df, other)
    schema = df.schema
    df = null_invalid_numbers(df, [c for c in other if schema[c] == pl.Float64], problems)
    df = attach_files(df, root, problems, report, refs={"image_ref": ("isic_id", ".jpg")})
    meta = TableMeta(dataset="isic-archive", positive_classes=[])
    return finish(df, report, meta, known=ISIC_FIELDS | {"image_id", "split", "target", "label", "image_ref"})


def _malignant(df: pl.DataFrame, report: IngestReport) -> pl.Expr:
    """0/1 from diagnosis_1, falling back to benign_malignant; null (noted) when neither decides."""
    def call(column: str, malignant: str, benign: str) -> pl.Expr:
        if column not in df.columns:
            return pl.lit(None, pl.Int8)
        v = pl.col(column).str.to_lowercase()
        return pl.when(v == malignant).then(1).when(v == benign).then(0).otherwise(None).cast(pl.Int8)

    current, legacy = call("diagnosis_1", "malignant", "benign"), call("benign_malignant", "malignant", "benign")
    counts = df.select(
        fallback=(current.is_null() & legacy.is_not_null()).sum(),
        disagree=(current != legacy).sum(),
        undecided=(current.is_null() & legacy.is_null()).sum(),
    ).row(0, named=True)
    if counts["fallback"] and "diagnosis_1" in df.columns:
        report.note(f"{counts['fallback']} rows with diagnosis_1 missing or Indeterminate take target from benign_malignant")
    if counts["disagree"]:
        report.note(f"{counts['disagree']} rows where diagnosis_1 and benign_malignant disagree: target follows diagnosis_1")
    if counts["undecided"]:
        report.note(f"{counts['undecided']} rows are neither benign nor malignant (Indeterminate / indeterminate* / empty): "
                    "target left null (usable for multiclass labels, not for the binary task)")
    return pl.coalesce(current, legacy).alias("target")
