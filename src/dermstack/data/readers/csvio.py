"""Read a published CSV exactly as written (all strings) and validate it row by row, vectorised.

Rows carry their editor line number (header = line 1) in ``ROW``; every rejected row is
reported through the IngestReport with file, line and column, never dropped silently.
"""
from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from dermstack.data.report import IngestReport
from dermstack.errors import DataError

#: Column holding the 1-based line number of each CSV row (dropped before the table is built).
ROW = "__row"
#: Optional column naming the file of each row, when a frame combines several files.
FILE = "__file"


def read_csv(path: Path, separator: str = ",", report: IngestReport | None = None) -> pl.DataFrame:
    """Every cell as a string (empty = null) plus ``ROW``; empty or ragged files raise DataError."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        df = pl.read_csv(path, infer_schema=False, separator=separator, encoding="utf8-lossy")
    except pl.exceptions.NoDataError as e:
        raise DataError("empty file (no header, no rows)", file=str(path)) from e
    except pl.exceptions.ComputeError as e:
        row, detail = _locate_ragged(path, separator)
        raise DataError(detail or f"cannot parse CSV: {str(e).splitlines()[0]}", file=str(path), row=row) from e
    df = df.rename({c: c.strip().lstrip("\ufeff") for c in df.columns})
    if df.height == 0:
        raise DataError("header but no data rows", file=str(path))
    df = df.with_columns(pl.col(pl.String).str.strip_chars().replace("", None))
    df = df.with_row_index(ROW, offset=2).with_columns(pl.col(ROW).cast(pl.Int64))
    if report is not None:
        report.rows_read += df.height
    return df


def _locate_ragged(path: Path, separator: str) -> tuple[int | None, str | None]:
    """Line and message of the first row whose field count differs from the header's."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=separator)
        header = next(reader, [])
        for line, fields in enumerate(reader, start=2):
            if fields and len(fields) != len(header):
                return line, f"{len(fields)} fields, header has {len(header)}"
    return None, None


def require_columns(df: pl.DataFrame, columns: list[str], path: Path) -> None:
    """DataError naming the first required column the file lacks."""
    for c in columns:
        if c not in df.columns:
            raise DataError(f"required column missing (has: {', '.join(df.columns)})", file=str(path), column=c)


class RowProblems:
    """Collects bad cells of one frame; ``apply`` reports one skip per key and removes those rows.

    ``key`` groups rows that stand or fall together (the image id, or the lesion id when
    several CSV rows make one sample); rows without a key stand alone.
    """

    def __init__(self, path: Path, report: IngestReport, key: str):
        self.path, self.report, self.key = path, report, key
        self.found: list[pl.DataFrame] = []

    def _key(self) -> pl.Expr:
        return pl.coalesce(pl.col(self.key).cast(pl.String), pl.format("<row {}>", pl.col(ROW)))

    def file(self, df: pl.DataFrame) -> pl.Expr:
        """The file each row came from: ``FILE`` when the frame has it, else this problem list's file."""
        return (pl.col(FILE) if FILE in df.columns else pl.lit(str(self.path))).alias("file")

    def add(self, df: pl.DataFrame, bad: pl.Expr, column: str | None, reason: pl.Expr | str, row_only: bool = False) -> None:
        """Mark rows where ``bad`` is true, with ``reason`` (an expression or a fixed text).

        ``row_only`` drops just the marked row (e.g. a repeated id) instead of every row of its key.
        """
        reason = pl.lit(reason) if isinstance(reason, str) else reason
        key = pl.format("<row {}>", pl.col(ROW)) if row_only else self._key()
        hits = df.select(
            pl.col(ROW), key.alias("key"), pl.col(self.key).cast(pl.String).alias("id"), self.file(df),
            pl.lit(column, pl.String).alias("column"), reason.cast(pl.String).alias("reason"), bad.fill_null(False).alias("bad"),
        ).filter("bad").drop("bad")
        if hits.height:
            self.found.append(hits)

    def apply(self, df: pl.DataFrame) -> pl.DataFrame:
        """Report the first problem of each bad key (in file order) and drop the rows concerned."""
        if not self.found:
            return df
        hits = pl.concat(self.found).sort(ROW, maintain_order=True).unique(subset="key", keep="first", maintain_order=True)
        self.found = []
        for row, _, id_, file, column, reason in hits.iter_rows():
            self.report.skip(reason, file, row, column, id_)
        keys = hits["key"].implode()
        return df.filter(~self._key().is_in(keys) & ~pl.format("<row {}>", pl.col(ROW)).is_in(keys))


def check_ids(df: pl.DataFrame, column: str, problems: RowProblems) -> None:
    """Rows without an id, and repeated ids (the first occurrence is kept)."""
    problems.add(df, pl.col(column).is_null(), column, f"empty {column}")
    first = pl.col(ROW).min().over(column)
    problems.add(df, pl.col(column).is_not_null() & (pl.col(ROW) != first), column,
                 pl.format("duplicate {} (first at row {})", pl.col(column), first), row_only=True)


def parse_numbers(df: pl.DataFrame, columns: list[str], problems: RowProblems) -> pl.DataFrame:
    """Cast columns to Float64; non-empty cells that are not numbers are reported as problems."""
    for c in columns:
        if c in df.columns:
            problems.add(df, pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64, strict=False).is_null(),
                         c, pl.format("not a number: '{}'", pl.col(c)))
    return df.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in columns if c in df.columns])


def parse_flags(df: pl.DataFrame, column: str, problems: RowProblems) -> pl.DataFrame:
    """A 0/1 (or true/false) column as Int8; anything else is reported."""
    text = pl.col(column).str.to_lowercase()
    value = (pl.when(text.is_in(["1", "1.0", "true"])).then(1)
             .when(text.is_in(["0", "0.0", "false"])).then(0).otherwise(None).cast(pl.Int8))
    problems.add(df, pl.col(column).is_not_null() & value.is_null(), column, pl.format("not 0/1: '{}'", pl.col(column)))
    return df.with_columns(value.alias(column))


def infer_types(df: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Give still-string columns their natural type: Float64 or Boolean when every value parses, else String."""
    casts = []
    for c in columns:
        if c not in df.columns or df.schema[c] != pl.String:
            continue
        s = df[c]
        n = s.null_count()
        if s.cast(pl.Float64, strict=False).null_count() == n and n < len(s):
            casts.append(pl.col(c).cast(pl.Float64, strict=False))
        elif n < len(s) and s.str.to_lowercase().is_in(["true", "false"]).sum() == len(s) - n:
            casts.append((pl.col(c).str.to_lowercase() == "true").alias(c))
    return df.with_columns(casts) if casts else df
