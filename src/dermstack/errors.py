"""Errors that tell the user exactly where the problem is."""
from __future__ import annotations


class DermstackError(Exception):
    """Base class for user-facing errors (the CLI prints these without a traceback)."""


class DataError(DermstackError):
    """Bad input data: names the file, and where known the row (1-based, as in an editor) and column."""

    def __init__(self, message: str, file: str | None = None, row: int | None = None, column: str | None = None):
        self.file, self.row, self.column, self.reason = file, row, column, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ConfigError(DermstackError):
    """Bad configuration (unknown key, wrong type, unknown feature group ...)."""
