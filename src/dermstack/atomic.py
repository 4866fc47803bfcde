"""One way to write a file: into a temporary sibling, then rename over the target (and to read back JSON).

A reader never sees a half-written file, a killed writer leaves the old file (or none), and a
failed write removes its temporary file. ``atomic_path`` hands the temporary path to a writer
that wants a file name (parquet, HDF5, npz, CSV); ``write_text``/``write_json`` cover the rest.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dermstack.errors import DataError, DermstackError


def writable_target(path: str | Path) -> Path:
    """The regular file that writing ``path`` replaces: a symbolic link is written through (its final
    target is replaced, the link stays); ``-``, a FIFO, a device or a socket is refused (an atomic
    write would replace the node with a regular file, and parquet, npz and HDF5 cannot be streamed)."""
    path = Path(path)
    if str(path) == "-":
        raise DermstackError("-: dermstack does not write to standard output; give a file name")
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, a file name is expected here", str(path))
    if path.exists() and not path.is_file():
        mode = path.stat().st_mode
        what = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise DermstackError(f"{path}: is {what}; dermstack writes regular files (a temporary file renamed over the "
                             "target) and will not replace it: give a file name")
    return path


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (ending in ``suffix``, for writers that insist on an
    extension); on success it replaces ``path``, on any error it is removed and the error re-raised.

    An OS error (permission, read-only or full disk) is re-raised naming ``path``, not the temporary
    file the user never asked for; what ``path`` is decides the target (:func:`writable_target`).
    """
    path = writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename in (None, str(tmp), tmp):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def jsonable(x):
    """numpy scalars and arrays as Python values, NaN as null, keys as strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(jsonable(obj), indent=2))


def read_json(path: str | Path, what: str = "JSON file"):
    """A JSON file dermstack wrote; a damaged one is a DataError naming it (not a JSONDecodeError)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"unreadable {what} ({e}): damaged or not written by dermstack", file=str(path)) from None


#: names other programs open as text: a parquet file under one of them would be misread
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".json")


def out_file(ctx, param, path: Path | None) -> Path | None:
    """Click callback of every option that names a file to write: what the path is (``-``, a FIFO, a
    device, a folder: :func:`writable_target`) is refused when the command line is read, before any
    work, not when the result is written."""
    if path is not None:
        import click

        try:
            writable_target(path)
        except DermstackError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
        except OSError as e:
            raise click.BadParameter(f"{e.filename}: {e.strerror}", ctx=ctx, param=param) from None
    return path


def parquet_out(ctx, param, path: Path | None) -> Path | None:
    """Click callback of an ``--out`` that is written as parquet (:func:`out_file`): a text name
    (``predictions.csv``) is refused rather than filled with parquet bytes a spreadsheet or
    ``read_csv`` would misread."""
    if out_file(ctx, param, path) is not None and path.suffix.lower() in TEXT_SUFFIXES:
        import click

        raise click.BadParameter(f"{path}: this output is a parquet file; give it a .parquet name (not {path.suffix})",
                                 ctx=ctx, param=param)
    return path


def write_csv(path: str | Path, df, **options) -> Path:
    """A polars frame as CSV (``options`` go to ``write_csv``)."""
    with atomic_path(path) as tmp:
        df.write_csv(tmp, **options)
    return Path(path)


def write_parquet(path: str | Path, df) -> Path:
    """A polars frame as parquet."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return Path(path)
