"""Competition submission files, validated before they are written (and any CSV on demand).

Checks, in the spirit of isic-challenge-scoring: the id column and score columns are exactly the
competition's (names and order, as in its sample file when given), every expected id appears
exactly once, no other id appears, every score is a number in [0, 1] (no empty cell, no NaN).
Every problem names its file line (header = line 1), id and column.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dermstack.atomic import atomic_path
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.predictions import Predictions
from dermstack.task import TaskSpec
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)
#: first characters that make a spreadsheet read a CSV cell as a formula (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

MILK10K_CLASSES = ["AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC"]


@dataclass(frozen=True)
class SubmissionFormat:
    name: str
    id_column: str
    score_columns: tuple[str, ...] | None  # None: the task's classes

    def columns(self, classes: list[str] | None = None) -> list[str]:
        return [self.id_column, *(self.score_columns or classes or [])]


FORMATS = {
    "isic2024": SubmissionFormat("isic2024", "isic_id", ("target",)),
    "milk10k": SubmissionFormat("milk10k", "lesion_id", tuple(MILK10K_CLASSES)),
}
#: Show at most this many offending rows per kind of problem.
MAX_SHOWN = 5


def get_format(name: str) -> SubmissionFormat:
    if name not in FORMATS:
        raise DataError(f"unknown submission format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name]


def submission_format(table: LesionTable, task: TaskSpec) -> str | None:
    """The competition format that fits this data and task, or None."""
    dataset = (table.meta.dataset or "").lower()
    if task.kind.binary and "isic2024" in dataset.replace("-", "").replace("_", ""):
        return "isic2024"
    if "milk10k" in dataset and not task.kind.binary and set(task.classes) == set(MILK10K_CLASSES):
        return "milk10k"
    return None


def check_run_format(fmt: str, task: str | None, classes: list[str], where: str) -> None:
    """A run's scores must be what the format holds: an ISIC 2024 file (one malignancy probability)
    of a MILK10k multi-label run would pass every column check and score nothing. Any binary run
    may write the ISIC 2024 layout (isic_id, target): an ISIC archive export is scored that way."""
    if task is None:
        return  # nothing records the task: the id and column checks are all there is
    binary = TaskKind(task).binary
    fits = (fmt == "isic2024" and binary) or (fmt == "milk10k" and not binary and set(classes) == set(MILK10K_CLASSES))
    if not fits:
        need = "a binary task" if fmt == "isic2024" else f"the {len(MILK10K_CLASSES)} MILK10k classes"
        raise DataError(f"--format {fmt} needs {need}; this run is {task} over {len(classes)} classes", file=where)


# -- checking --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    message: str
    line: int | None = None
    id: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}" if self.line else "", f"id {self.id!r}" if self.id else "",
                 f"column {self.column!r}" if self.column else ""]
        where_s = ", ".join(w for w in where if w)
        return f"{where_s}: {self.message}" if where_s else self.message


def check_submission(df: pl.DataFrame, fmt: SubmissionFormat, expected_ids: list[str] | None = None,
                     columns: list[str] | None = None) -> list[Problem]:
    """Every problem of a submission frame (string or numeric cells); empty when it is valid.

    ``columns``: the expected header (from the sample file); default the format's own."""
    expected_cols = columns or fmt.columns()
    problems: list[Problem] = []
    missing_cols = [c for c in expected_cols if c not in df.columns]
    extra_cols = [c for c in df.columns if c not in expected_cols]
    if missing_cols:
        problems.append(Problem(f"missing column(s) {missing_cols}; expected header {expected_cols}", line=1))
    if extra_cols:
        problems.append(Problem(f"unexpected column(s) {extra_cols}; expected header {expected_cols}", line=1))
    if not missing_cols and not extra_cols and list(df.columns) != expected_cols:
        problems.append(Problem(f"columns in the wrong order: {list(df.columns)}; expected {expected_cols}", line=1))
    id_col = fmt.id_column if fmt.id_column in df.columns else None
    ids = df[id_col].cast(pl.String).to_list() if id_col else [None] * df.height
    if id_col:
        problems += _id_problems(ids, expected_ids, id_col)
    for c in expected_cols[1:]:
        if c in df.columns:
            problems += _score_problems(df[c], ids, c)
    return problems


def _id_problems(ids: list[str | None], expected: list[str] | None, col: str) -> list[Problem]:
    out = []
    seen: dict[str, int] = {}
    for i, v in enumerate(ids):
        line = i + 2
        if v is None or v == "":
            out.append(Problem("empty id", line=line, column=col))
        elif v in seen:
            out.append(Problem(f"duplicate id (first on line {seen[v]})", line=line, id=v, column=col))
        else:
            seen[v] = line
    if expected is not None:
        exp = set(expected)
        extra = [(line, v) for v, line in seen.items() if v not in exp]
        for line, v in extra[:MAX_SHOWN]:
            out.append(Problem("id is not a test id of this data", line=line, id=v, column=col))
        if len(extra) > MAX_SHOWN:
            out.append(Problem(f"... {len(extra) - MAX_SHOWN} more ids that are not test ids", column=col))
        missing = [v for v in expected if v not in seen]
        if missing:
            out.append(Problem(f"{len(missing)} test id(s) missing from the submission: {missing[:MAX_SHOWN]}"
                               + (" ..." if len(missing) > MAX_SHOWN else ""), column=col))
    return _cap(out)


def _score_problems(values: pl.Series, ids: list[str | None], col: str) -> list[Problem]:
    raw = values.cast(pl.String)
    num = values.cast(pl.Float64, strict=False) if values.dtype == pl.String else values.cast(pl.Float64)
    out = []
    for i, (r, v) in enumerate(zip(raw.to_list(), num.to_list())):
        line, rid = i + 2, ids[i]
        if r is None or r.strip() == "":
            out.append(Problem("empty score", line=line, id=rid, column=col))
        elif v is None:
            out.append(Problem(f"score {r!r} is not a number", line=line, id=rid, column=col))
        elif v != v:
            out.append(Problem("score is NaN", line=line, id=rid, column=col))
        elif not 0.0 <= v <= 1.0:
            out.append(Problem(f"score {v!r} is outside [0, 1]", line=line, id=rid, column=col))
    return _cap(out)


def _cap(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= 2 * MAX_SHOWN:
        return problems
    return problems[: 2 * MAX_SHOWN] + [Problem(f"... and {len(problems) - 2 * MAX_SHOWN} more of these", column=problems[0].column)]


def raise_problems(problems: list[Problem], source: str) -> None:
    if problems:
        raise DataError(f"invalid submission ({len(problems)} problem(s)):\n  " + "\n  ".join(map(str, problems)), file=source)


# -- reading the sample file / any CSV -------------------------------------------------------------
def read_csv_strings(path: str | Path) -> pl.DataFrame:
    """A CSV with every cell as a string (so bad numbers are reported, not guessed); blank lines at the
    end of the file (what editors and scripts often leave) are not rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    body = path.read_bytes().rstrip(b"\r\n\t ") + b"\n"
    try:
        return pl.read_csv(io.BytesIO(body), infer_schema=False)
    except pl.exceptions.PolarsError as e:
        raise DataError(f"cannot parse CSV: {str(e).splitlines()[0]}", file=str(path)) from e


def sample_spec(sample: str | Path, fmt: SubmissionFormat) -> tuple[list[str], list[str]]:
    """(header, ids) of a competition sample submission."""
    df = read_csv_strings(sample)
    if fmt.id_column not in df.columns:
        raise DataError(f"sample file has no {fmt.id_column!r} column (header {df.columns}); is it a {fmt.name} sample?",
                        file=str(sample))
    return list(df.columns), df[fmt.id_column].to_list()


def validate_submission(path: str | Path, sample_or_ids: str | Path | list[str] | None, format: str) -> list[Problem]:
    """Every problem of the CSV at ``path`` against a sample submission file (header and ids) or a
    list of expected ids (header: the format's); empty when the file is valid."""
    fmt = get_format(format)
    columns, ids = None, None
    if isinstance(sample_or_ids, (str, Path)):
        columns, ids = sample_spec(sample_or_ids, fmt)
    elif sample_or_ids is not None:
        ids = list(sample_or_ids)
    return check_submission(read_csv_strings(path), fmt, ids, columns)


# -- writing ---------------------------------------------------------------------------------------
def submission_frame(predictions: pl.DataFrame, fmt: SubmissionFormat, columns: list[str], model: str | None = None) -> pl.DataFrame:
    """Wide frame in ``columns`` order from long predictions (image_id, [model], class, score); a frame
    that already has the id column is taken as the wide table itself."""
    if fmt.id_column in predictions.columns:
        return predictions
    long = predictions
    if "model" in long.columns:
        models = long["model"].unique().to_list()
        if model is not None:
            long = long.filter(pl.col("model") == model)
            if long.height == 0:
                raise DataError(f"no predictions of model {model!r}; present: {sorted(models)}")
        elif len(models) > 1:
            raise DataError(f"predictions of several models {sorted(models)}: say which one to submit")
    if "model" not in long.columns:
        long = long.with_columns(pl.lit(model or "model").alias("model"))
    ids = long["image_id"].unique(maintain_order=True).to_list()
    classes = long["class"].unique(maintain_order=True).to_list()
    ordered = [c for c in columns if c in classes] + [c for c in classes if c not in columns]
    mat = Predictions(long).matrix(ids, ordered, require=False).reshape(len(ids), -1)
    return pl.DataFrame({fmt.id_column: pl.Series(ids, dtype=pl.String), **{c: mat[:, j] for j, c in enumerate(ordered)}})


def write_submission(test_predictions: pl.DataFrame, format: str, out: str | Path, sample: str | Path | None = None,
                     ids: list[str] | None = None, classes: list[str] | None = None, model: str | None = None) -> Path:
    """Validate, then write the submission CSV. Expected ids: the sample file's, else ``ids``, else
    (with a warning-free fallback) those predicted. Rows follow the sample's (or ``ids``) order.
    Nothing is written when any check fails (DataError listing every problem)."""
    fmt = get_format(format)
    columns = fmt.columns(classes)
    expected = ids
    if sample is not None:
        columns, expected = sample_spec(sample, fmt)
    df = submission_frame(test_predictions, fmt, columns, model)
    if expected is not None:
        order = pl.DataFrame({fmt.id_column: pl.Series(expected, dtype=pl.String)}).with_row_index("_order")
        df = df.join(order, on=fmt.id_column, how="left").sort("_order", nulls_last=True).drop("_order")
    raise_problems(check_submission(df, fmt, expected, columns), str(out))
    formula = [i for i in df[fmt.id_column].to_list() if i and i[0] in FORMULA_STARTS]
    if formula:  # kept as they are (the competition matches ids exactly), but said
        log.warning("%s: %d ids start with = + - @ or a tab, which spreadsheet programs (Excel, LibreOffice) run as "
                    "formulas when the CSV is opened there, e.g. %s", out, len(formula), formula[:3])
    out = Path(out)
    with atomic_path(out) as tmp:
        df.write_csv(tmp, float_precision=None)
    return out


def default_model(metrics: dict) -> str | None:
    """The model a run's scores are taken from when none is named (``submit``, ``FittedRun.predict_proba``):
    its ``submission_model`` (binary: the calibrated final model; multiclass and multi-label: the final
    model's own scores, see :mod:`dermstack.calibration`), else its final model (``oof_model``)."""
    return metrics.get("submission_model") or metrics.get("oof_model")


def submit_run(run_dir: str | Path, format: str, out: str | Path, sample: str | Path | None = None,
               predictions: str | Path | pl.DataFrame | None = None, model: str | None = None) -> Path:
    """Write the validated ``format`` submission ``out`` of a run's test predictions, or of ``predictions``
    (a parquet file or frame from ``predict``, long or wide); nothing is written on any problem.

    ``run_dir`` is a ``dermstack run`` directory (checked to be current) or a folder whose ``models/``
    the stage commands wrote; ``model`` is the one submitted (default: :func:`default_model`). Without
    ``sample`` or the run's own test rows the ids predicted are not checked against a test set, which is logged."""
    from dermstack.atomic import read_json, writable_target
    from dermstack.errors import reading
    from dermstack.rundir import check_current
    from dermstack.saved import load, model_dirs

    writable_target(out)  # before any work: not a folder, a device or stdout
    run_dir = Path(run_dir)
    check_current(run_dir)
    metrics = read_json(run_dir / "metrics.json", "run metrics") if (run_dir / "metrics.json").exists() else {}
    model = model or default_model(metrics)
    saved = model_dirs(run_dir / "models")
    if isinstance(predictions, pl.DataFrame):
        preds = predictions if {"model", "class"} <= set(predictions.columns) or get_format(format).id_column in predictions.columns \
            else Predictions.from_wide(predictions).frame
    elif predictions is not None:
        with reading(predictions, "predictions"):
            preds = pl.read_parquet(predictions)
    else:
        if model not in saved:
            what = f"no saved model {model!r}" if model else "which model to submit?"
            raise DataError(f"{what} (have {sorted(saved)}); name one with --model", file=str(run_dir / "models"))
        test = load(saved[model]).result().test
        if not test.height:
            raise DataError("no test predictions: the run had no test rows; score new data with `dermstack predict`",
                            file=str(saved[model] / "test.parquet"))
        preds = test.frame
    spec = load(saved[model]).spec if model in saved else {}
    table = LesionTable.read(run_dir / "lesions.parquet") if (run_dir / "lesions.parquet").exists() else None
    ids = table.test["image_id"].to_list() if predictions is None and table is not None else None
    classes = metrics.get("classes") or spec.get("classes")
    check_run_format(format, metrics.get("task") or spec.get("task"), classes or [], str(run_dir))
    write_submission(preds, format, out, sample=sample, ids=ids, classes=classes, model=model)
    if ids is None and sample is None:
        log.warning("the ids of %s were not checked against a test set (every predicted row is submitted): pass a "
                    "sample submission to check them", "the predictions given" if predictions is not None else "the test predictions")
    return Path(out)
