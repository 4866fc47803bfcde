"""Read a published CSV exactly as written (all strings) and validate it row by row, vectorised.

Rows carry their editor line number (header = line 1) in ``ROW``; every rejected row is
reported through the IngestReport with file, line and column, never dropped silently.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl

from dermstack.data.report import IngestReport
from dermstack.errors import DataError

#: Column holding the 1-based line number of each CSV row (dropped before the table is built).
ROW = "__row"
#: Optional column naming the file of each row, when a frame combines several files.
FILE = "__file"


#: Encodings read as they are (UTF-8, with or without a byte-order mark).
UTF8 = ("utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig")
#: Delimiters other tools write; a header split by one of them is named in the error.
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def read_csv(path: Path, separator: str = ",", report: IngestReport | None = None, count: bool = True,
             keep_blank: bool = False) -> pl.DataFrame:
    """Every cell as a string (empty = null) plus ``ROW``, the record's first line in the file.

    UTF-8 is read as is; another encoding only when declared (``report.encoding``, ``--encoding``),
    never guessed, so no cell is silently turned into replacement characters. Blank lines are
    dropped with a note (``keep_blank`` keeps them, for files whose blank line ends the data).
    Empty, ragged, unparseable or differently delimited files raise DataError with the line.
    ``count`` adds the rows to ``report.rows_read``.
    """
    if not path.is_file():
        raise DataError("file not found" + (" (dangling symbolic link)" if path.is_symlink() else ""), file=str(path))
    encoding = (report.encoding if report is not None else None) or "utf-8"
    source = path if encoding.lower() in UTF8 else io.BytesIO(_recode(path, encoding))
    try:
        df = pl.read_csv(source, infer_schema=False, separator=separator, encoding="utf8")
    except pl.exceptions.NoDataError as e:
        raise DataError("empty file (no header, no rows)", file=str(path)) from e
    except pl.exceptions.ComputeError as e:
        if "utf-8" in str(e).lower() or "utf8" in str(e).lower():
            _recode(path, "utf-8")  # raises, naming the line of the first bad byte
        row, detail = _locate_problem(path, separator, encoding)
        raise DataError(detail or f"cannot parse CSV: {str(e).splitlines()[0]}", file=str(path), row=row) from e
    df = df.rename({c: c.strip().lstrip("\ufeff") for c in df.columns})
    _check_delimiter(df, path, separator)
    header_lines = 1 + sum(c.count("\n") for c in df.columns)
    extra = pl.sum_horizontal(pl.col(pl.String).str.count_matches("\n", literal=True).fill_null(0))
    df = df.with_columns(pl.col(pl.String).str.strip_chars().replace("", None))
    df = df.with_columns((header_lines + 1 + pl.int_range(pl.len()) + extra.cum_sum() - extra).cast(pl.Int64).alias(ROW))
    data_columns = [c for c in df.columns if c != ROW]
    blank = pl.all_horizontal(pl.col(data_columns).is_null())
    n_blank = df.select(blank.sum()).item()
    if n_blank == df.height:
        raise DataError("header but no data rows" + (f" (only {n_blank} blank lines)" if n_blank else ""), file=str(path))
    if n_blank and not keep_blank:
        lines = df.filter(blank)[ROW].head(5).to_list()
        df = df.filter(~blank)
        if report is not None:
            report.note(f"{path.name}: {n_blank} blank line(s) ignored (line {', '.join(map(str, lines))}"
                        + (" ..." if n_blank > 5 else "") + ")")
    if report is not None and count:
        report.rows_read += df.height
    return df.select(ROW, *data_columns)


def _recode(path: Path, encoding: str) -> bytes:
    """The file's bytes decoded with ``encoding`` and re-encoded as UTF-8; DataError naming the line of the
    first byte that is not valid in that encoding (and how to declare another)."""
    raw = path.read_bytes()
    try:
        return raw.decode(encoding).encode("utf-8")
    except LookupError as e:
        raise DataError(f"unknown encoding {encoding!r} (use a Python codec name, e.g. cp1252, latin-1)", file=str(path)) from e
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        hint = ("; if the file is Latin-1 / Windows-1252 (Excel on Windows), pass --encoding cp1252 "
                '(`dermstack run`: [data] encoding = "cp1252")' if encoding.lower() in UTF8 else "; pass the right --encoding")
        raise DataError(f"not valid {encoding}: byte 0x{raw[e.start]:02x} at offset {e.start}{hint}",
                        file=str(path), row=line) from e


def _check_delimiter(df: pl.DataFrame, path: Path, separator: str) -> None:
    """A one-column header that another delimiter splits: say which, instead of 'column missing'."""
    if df.width != 1:
        return
    header = df.columns[0]
    for delimiter, name in OTHER_DELIMITERS.items():
        if delimiter != separator and delimiter in header:
            raise DataError(f"the header is {name}-separated ({header!r}), "
                            f"dermstack reads {'comma' if separator == ',' else repr(separator)}"
                            f"-separated CSV: save it with {separator!r} as the delimiter", file=str(path), row=1)


def _locate_problem(path: Path, separator: str, encoding: str) -> tuple[int | None, str | None]:
    """Line and message of the first record polars could not parse: a quote that never closes, or a
    field count that differs from the header's."""
    with open(path, newline="", encoding=encoding, errors="replace") as f:
        reader = csv.reader(f, delimiter=separator, strict=True)
        try:
            header = next(reader, [])
        except csv.Error as e:
            return 1, f"cannot parse the header: {e}"
        start = reader.line_num + 1
        try:
            for fields in reader:
                if fields and len(fields) != len(header):
                    return start, f"{len(fields)} fields, header has {len(header)}"
                start = reader.line_num + 1
        except csv.Error as e:
            if "end of data" in str(e).lower() or "eof" in str(e).lower():
                return start, f"unterminated quote: the quoted field that opens on this line never closes ({e})"
            return reader.line_num, f"cannot parse CSV: {e}"
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


def parse_numbers(df: pl.DataFrame, columns: list[str], problems: RowProblems,
                  ranges_of: dict[str, str] | None = None) -> pl.DataFrame:
    """Cast columns to Float64; non-empty cells that are not numbers are reported as problems, numbers
    that cannot be right are read as missing (``null_invalid_numbers``). Columns keep the file's names
    here, so that a problem names the column the user sees; ``ranges_of`` maps such a name to the
    dermstack column whose valid range applies (HAM10000 ``age`` -> ``age_approx``)."""
    present = [c for c in columns if c in df.columns]
    for c in present:
        problems.add(df, pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64, strict=False).is_null(),
                     c, pl.format("not a number: '{}'", pl.col(c)))
    df = df.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in present])
    return null_invalid_numbers(df, present, problems, ranges_of)


def null_invalid_numbers(df: pl.DataFrame, columns: list[str], problems: RowProblems,
                         ranges_of: dict[str, str] | None = None) -> pl.DataFrame:
    """NaN, inf and values outside the column's valid range (``vocab.valid_range`` of ``ranges_of``'s name
    for it, else its own) become null: a model must not learn from an age of -5 or 300. One note per
    column and reason (count, example ids and rows); under --strict the first is an error naming file,
    row and column."""
    from dermstack.data.readers.vocab import valid_range

    fixed = []
    for c in columns:
        x = pl.col(c)
        why = pl.when(x.is_nan() | x.is_infinite()).then(pl.lit("not a finite number"))
        if (bounds := valid_range((ranges_of or {}).get(c, c))) is not None:
            lo, hi = bounds
            why = why.when((x < lo) | (x > hi)).then(pl.lit(f"outside the valid range [{lo:g}, {hi:g}]"))
        why = why.otherwise(None)
        hits = df.filter(why.is_not_null()).select(ROW, pl.col(problems.key).cast(pl.String), x, why.alias("why"), problems.file(df))
        for (reason, file), group in hits.group_by("why", "file", maintain_order=True):
            problems.report.nulled(file, c, reason, group[ROW].to_list(), group[problems.key].to_list(), group[c].to_list())
        if hits.height:
            fixed.append(pl.when(why.is_null()).then(x).alias(c))
    return df.with_columns(fixed) if fixed else df


def parse_flags(df: pl.DataFrame, column: str, problems: RowProblems) -> pl.DataFrame:
    """A 0/1 (or true/false) column as Int8; anything else is reported."""
    text = pl.col(column).str.to_lowercase()
    value = (pl.when(text.is_in(["1", "1.0", "true"])).then(1)
             .when(text.is_in(["0", "0.0", "false"])).then(0).otherwise(None).cast(pl.Int8))
    problems.add(df, pl.col(column).is_not_null() & value.is_null(), column, pl.format("not 0/1: '{}'", pl.col(column)))
    return df.with_columns(value.alias(column))


def infer_types(df: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Give still-string columns their natural type: Float64 or Boolean when every value parses, else String."""
    casts, schema = [], df.schema  # a frame's schema is built per access
    for c in columns:
        if schema.get(c) != pl.String:
            continue
        s = df[c]
        n = s.null_count()
        if s.cast(pl.Float64, strict=False).null_count() == n and n < len(s):
            casts.append(pl.col(c).cast(pl.Float64, strict=False))
        elif n < len(s) and s.str.to_lowercase().is_in(["true", "false"]).sum() == len(s) - n:
            casts.append(truth(pl.col(c)).alias(c))
    return df.with_columns(casts) if casts else df


def truth(text: pl.Expr) -> pl.Expr:
    """Text "true" / "false" (any case) as Boolean, any other value null: how a column of such text becomes
    Boolean (:func:`infer_types`; new rows taking a run's types, ``outputs.predict``)."""
    lower = text.str.to_lowercase()
    return pl.when(lower == "true").then(True).when(lower == "false").then(False).otherwise(None)
