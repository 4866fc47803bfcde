"""Errors that tell the user exactly where the problem is."""
from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: the most characters of one value from the data that a message, log line or report shows
SHOWN = 200


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``' (did you mean "x"?)'`` with difflib's closest known name, or ``''``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def clip(text, most: int = SHOWN, tail: int = 0):
    """``text`` as a message shows it: a value longer than ``most`` characters (a 10 MB metadata cell)
    cut, with its length said; anything else as it is. ``tail``: its last characters are kept too (a
    message's remedy comes last, after a list that may be long)."""
    if not isinstance(text, str) or len(text) <= most:
        return text
    return f"{text[:most - tail]}... ({len(text):,} characters)" + (f" ...{text[-tail:]}" if tail else "")


class DermstackError(Exception):
    """Base class for user-facing errors (the CLI prints these without a traceback).

    Examples
    --------
    >>> import dermstack as ds
    >>> issubclass(ds.DataError, ds.DermstackError) and issubclass(ds.ConfigError, ds.DermstackError)
    True
    """


class DataError(DermstackError):
    """Bad input data: names the file, and where known the row (1-based, as in an editor) and column.

    Examples
    --------
    >>> import dermstack as ds
    >>> e = ds.DataError("not a number: 'abc'", file="train-metadata.csv", row=3, column="age_approx")
    >>> str(e)
    "train-metadata.csv, row 3, column 'age_approx': not a number: 'abc'"
    >>> e.file, e.row, e.column
    ('train-metadata.csv', 3, 'age_approx')
    """

    def __init__(self, message: str, file: str | None = None, row: int | None = None, column: str | None = None):
        message, column = clip(message, 10 * SHOWN, tail=SHOWN), clip(column)
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
    """Bad configuration (unknown key, wrong type, unknown feature group ...): every problem of a config
    at once, each with the closest valid name.

    Examples
    --------
    >>> import dermstack as ds
    >>> try:
    ...     ds.RunConfig.from_dict({"data": {"fromat": "isic2024"}})
    ... except ds.ConfigError as e:
    ...     print(e)
    config: [data] fromat = "isic2024": unknown key (did you mean "format"?); known: format, path, ...
    """


class PluginError(ConfigError):
    """An installed plugin (entry-point group ``dermstack.kinds``) that could not be loaded; names the plugin.

    Examples
    --------
    >>> import dermstack as ds
    >>> issubclass(ds.PluginError, ds.ConfigError)  # a config naming a broken plugin's kind fails as a config
    True
    """


class RunLockedError(DermstackError):
    """Another live process holds the run directory (its ``.lock``); names the holder.

    Examples
    --------
    >>> import dermstack as ds
    >>> issubclass(ds.RunLockedError, ds.DermstackError)
    True
    """


@contextmanager
def reading(path, what: str) -> Iterator[None]:
    """Read one file that dermstack wrote (parquet, JSON, npz, a booster's or CNN's native file): the
    libraries' own errors on a damaged, truncated or foreign file (polars ComputeError, LightGBMError,
    JSONDecodeError, BadZipFile, KeyError ...) become a DataError naming the file and what it is."""
    try:
        yield
    except DermstackError:
        raise
    except FileNotFoundError:
        raise DataError(f"no {what} file", file=str(path)) from None
    except Exception as e:  # noqa: BLE001  each library raises its own types; the file is what matters
        raise DataError(f"unreadable {what} ({type(e).__name__}: {str(e).strip()[:200]}): damaged, truncated or "
                        "not written by dermstack", file=str(path)) from None


def why_missing(path) -> str | None:
    """Why an input path cannot be read as a file or folder (a symbolic link loop, a dangling link, nothing
    there), or None when it can."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop (a link that leads back to itself)"
        if os.path.islink(path):
            return f"a dangling symbolic link to {os.readlink(path)}"
        return "no such file or folder" if e.errno == errno.ENOENT else (e.strerror or str(e))
    return None
