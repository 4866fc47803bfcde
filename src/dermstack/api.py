"""dermstack's Python API: fit, load, predict, evaluate, submit, report, explain, compare, the way notebooks work.

Every function here is the same code as its command (``dermstack run``, ``predict``, ``evaluate``,
``submit``, ``report``, ``report explain``, ``compare``, ``kinds``): the commands are thin layers over the
functions these call, so a run fitted here is the run directory the CLI makes, and either reads the
other's. Errors are the CLI's: :class:`~dermstack.errors.ConfigError` for a config,
:class:`~dermstack.errors.DataError` naming the file, row and column of bad data or a damaged run.

The examples share one tiny run, fitted by :func:`fit`'s example into ``runs/tiny`` (synthetic ISIC
2024 data, one small LightGBM model); the test suite runs them all.

Examples
--------
>>> import dermstack as ds
>>> run = ds.load("runs/tiny")  # fitted by fit's example
>>> run.metrics["primary_metric"]
'pauc_tpr80'
>>> run.predict("runs/tiny/lesions.parquet").height  # its test rows (training rows have out-of-fold scores)
10
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dermstack.fitted import FittedRun

if TYPE_CHECKING:
    from dermstack.config import RunConfig

__all__ = ["FittedRun", "fit", "load", "compare", "kinds"]


def fit(config: str | os.PathLike | Mapping | RunConfig, out: str | os.PathLike, *, force: bool = False,
        dask_address: str | None = None) -> FittedRun:
    """Run the pipeline of ``config`` into the run directory ``out`` (as ``dermstack run CONFIG --out OUT``).

    A rerun into the same ``out`` skips every stage whose inputs are unchanged, and a killed one
    resumes. The config is checked whole before anything is written; the caller's object is never changed.

    Parameters
    ----------
    config : path, dict or RunConfig
        A TOML file (a relative ``[data] path`` is also looked up beside it), the same tables as a
        dict, or a :class:`~dermstack.config.RunConfig`.
    out : str or os.PathLike
        The run directory: new, empty, or one dermstack wrote.
    force : bool
        Re-run every stage even when its inputs are unchanged.
    dask_address : str, optional
        A Dask scheduler for the fold x seed jobs (overrides ``[cv] dask_address``).

    Returns
    -------
    FittedRun

    Raises
    ------
    ConfigError
        A config problem, all of them listed, each with the closest valid name.
    DataError
        Bad data, naming file, row and column.

    Examples
    --------
    >>> import dermstack as ds
    >>> config = {"data": {"format": "synthetic-isic2024", "lesions": 150, "test_lesions": 10, "positive_rate": 0.1,
    ...                    "image_size": 16},
    ...           "cv": {"n_splits": 3},
    ...           "models": [{"kind": "lightgbm", "params": {"n_estimators": 10, "threads": 1}}]}
    >>> run = ds.fit(config, out="runs/tiny")
    >>> run.metrics["n_train"]
    150
    >>> ds.fit({"data": {"fromat": "isic2024"}}, out="runs/typo")
    Traceback (most recent call last):
    ...
    dermstack.errors.ConfigError: config: [data] fromat = "isic2024": unknown key (did you mean "format"?); ...
    """
    from dermstack.run import fit_run

    fit_run(config, out, force=force, dask_address=dask_address)
    return FittedRun(out)


def load(run_dir: str | os.PathLike) -> FittedRun:
    """Open a finished run directory (from :func:`fit` or ``dermstack run``).

    It is checked as ``dermstack predict`` checks it: a run that did not finish, a file changed
    or damaged since, or a config that no longer matches its stages is refused, naming the file or
    the stage to re-run.

    Parameters
    ----------
    run_dir : str or os.PathLike

    Returns
    -------
    FittedRun

    Raises
    ------
    DataError, DermstackError
        Not a finished, current run directory.

    Examples
    --------
    >>> import dermstack as ds
    >>> ds.load("runs/tiny").metrics["task"]
    'binary'
    >>> ds.load("runs/nowhere")
    Traceback (most recent call last):
    ...
    dermstack.errors.DataError: runs/nowhere: no such run directory
    """
    from dermstack.rundir import check_finished

    return FittedRun(check_finished(run_dir))


def compare(runs: Sequence[FittedRun | str | os.PathLike], out: str | os.PathLike, *, models: Sequence[str] = (),
            n_boot: int | None = None) -> dict:
    """Is one run's final model better than another's? (as ``dermstack compare``).

    Each later run is paired with the first (the reference) on the out-of-fold rows both scored, in
    the same folds (runs with other rows or folds are refused): the difference in the primary metric
    and ROC-AUC with its 95% CI and Holm-corrected p-value, overall and per subgroup.

    Parameters
    ----------
    runs : sequence of FittedRun or paths
        Two or more runs; the first is the reference.
    out : str or os.PathLike
        Folder for ``compare.json`` and ``compare.html`` (outside every run directory).
    models : sequence of str
        The model compared instead of each run's final one: once (every run) or once per run.
    n_boot : int, optional
        Patient resamples of the paired bootstrap (default: as ``metrics.json``).

    Returns
    -------
    dict
        What ``compare.json`` holds.

    Examples
    --------
    >>> import dermstack as ds
    >>> result = ds.compare([ds.load("runs/tiny"), "runs/tiny"], out="runs/compare", n_boot=20)
    >>> result["primary_metric"], len(result["comparisons"])
    ('pauc_tpr80', 1)
    """
    from dermstack.reports.compare import N_BOOT
    from dermstack.reports.compare import compare as compare_dirs

    dirs = [r.root if isinstance(r, FittedRun) else Path(r) for r in runs]
    return compare_dirs(dirs, out, list(models), N_BOOT if n_boot is None else n_boot)


def kinds() -> dict[str, dict]:
    """The registry: every model kind (installed plugins' too) with its parameters, and every ensemble method (as ``dermstack kinds``).

    Returns
    -------
    dict
        ``models``: kind -> ``description``, ``origin`` and ``params`` (name -> ``type``, ``default``);
        ``ensembles``: each ``[ensemble] method`` -> what it does.

    Examples
    --------
    >>> import dermstack as ds
    >>> listed = ds.kinds()
    >>> "lightgbm" in listed["models"] and "stack" in listed["ensembles"]
    True
    >>> listed["models"]["lightgbm"]["params"]["n_estimators"]["default"]
    'None'
    """
    from dermstack.catalogue import catalogue

    return catalogue()
