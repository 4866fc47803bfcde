"""Shared last steps of every reader: images found/missing/corrupt, then a validated LesionTable."""
from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from dermstack.data.readers.content import with_digests
from dermstack.data.readers.csvio import ROW, RowProblems
from dermstack.data.report import IngestReport
from dermstack.data.table import CORE_COLUMNS, LesionTable, TableMeta, default_feature_columns, finalize_frame, is_admin
from dermstack.errors import clip

#: Helper column: why the image of a row is unusable (null when fine or absent).
IMAGE_PROBLEM = "__image_problem"


def resolve_images(df: pl.DataFrame, problems: RowProblems, report: IngestReport, ref: str = "image_ref",
                   record_missing: bool = True) -> pl.DataFrame:
    """Skip rows whose image is corrupt (``IMAGE_PROBLEM``); list kept rows whose ``ref`` is null as missing images."""
    if IMAGE_PROBLEM in df.columns:
        problems.add(df, pl.col(IMAGE_PROBLEM).is_not_null(), ref, pl.col(IMAGE_PROBLEM))
        df = problems.apply(df).drop(IMAGE_PROBLEM)
    if record_missing:
        missing = df.filter(pl.col(ref).is_null())
        # a test row has no label: counted apart, not as a "labelled case" (--strict refuses either)
        if "split" in missing.columns and not report.strict:
            test = missing.filter(pl.col("split") != "train").height
            missing = missing.filter(pl.col("split") == "train")
            if test:
                report.note(f"{test} unlabelled test row(s) without an image")
        for id_, row, file in missing.select(problems.key, ROW, problems.file(df)).iter_rows():
            report.missing_image(id_, file, row)
    return df


def finish(df: pl.DataFrame, report: IngestReport, meta: TableMeta, known: Iterable[str] | None = None,
           not_features: Iterable[str] = ()) -> LesionTable:
    """Drop helper columns, fill ``lesion_id`` from ``image_id``, record each image's SHA-256, choose
    features, record unknown columns.

    Columns not in ``known`` (when given) are kept in the table but are not features: a column
    nobody has looked at may encode the label.
    """
    df = df.drop([c for c in df.columns if c.startswith("__")])
    df = finalize_frame(df)
    df = df.with_columns(pl.coalesce("lesion_id", "image_id").alias("lesion_id"))
    unknown = [c for c in df.columns if known is not None and c not in known and c not in CORE_COLUMNS and not is_admin(c)]
    meta.source = meta.source or report.source
    df = with_digests(df, meta.source or None)
    report.unknown_columns.extend(clip(c) for c in unknown)
    if unknown:
        report.note(f"unknown columns kept in the table but not used as features: {', '.join(unknown)}")
    train = df.filter(pl.col("split") == "train")
    untrained = [c for c in df.columns if c not in CORE_COLUMNS and not is_admin(c) and train.height and df[c].null_count() < df.height
                 and train[c].null_count() == train.height]
    if untrained:
        report.note(f"columns with no value in any training row (e.g. only in the test file) are not features: {', '.join(untrained)}")
    meta.feature_columns, meta.categorical_columns = default_feature_columns(
        df, exclude=set(not_features) | set(unknown) | set(untrained))
    report.rows_kept = df.height
    return LesionTable(df, meta)
