"""`dermstack predict` and `dermstack submit`: a finished run's saved models on new data, and its
validated competition submission."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.atomic import out_file, parquet_out, read_json, write_parquet
from dermstack.outputs.submission import FORMATS

_path = click.Path(path_type=Path)
_existing = click.Path(exists=True, path_type=Path)


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", type=_existing)
@click.option("--out", type=_path, required=True, callback=parquet_out, help="Predictions parquet (image_id, model, class, score).")
@click.option("--strict", is_flag=True, help="Stop on any unreadable row or image of DATA.")
@click.option("--allow-missing-features", is_flag=True,
              help="Score DATA even when it lacks feature columns the models were trained on (filled as missing, with a warning).")
def predict_command(run_dir: Path, data: Path, out: Path, strict: bool, allow_missing_features: bool) -> None:
    """Score DATA (a dataset folder in the run's format, or a LesionTable parquet) with RUN_DIR's saved models."""
    from dermstack.outputs.predict import predict_run

    preds = predict_run(run_dir, data, strict=strict, allow_missing_features=allow_missing_features)
    write_parquet(out, preds)
    click.echo(f"wrote {preds['image_id'].n_unique()} rows x {preds['model'].n_unique()} models to {out}")


@click.command("submit")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True)
@click.option("--out", type=_path, required=True, callback=out_file, help="Submission CSV to write.")
@click.option("--sample", type=_existing, default=None, help="The competition's sample submission to match.")
@click.option("--predictions", type=_existing, default=None,
              help="Predictions parquet from `dermstack predict` (default: the saved model's test predictions).")
@click.option("--model", default=None, help="Which model's scores (default: the run's calibrated final model).")
def submit_command(run_dir: Path, fmt: str, out: Path, sample: Path | None, predictions: Path | None, model: str | None) -> None:
    """Write a validated competition submission from RUN_DIR's test predictions (nothing is written on any problem).

    RUN_DIR is a `dermstack run` directory (checked to be current), or any folder whose models/
    the stage commands wrote (then --model names the one to submit)."""
    import polars as pl

    from dermstack.data.table import LesionTable
    from dermstack.errors import DataError, reading
    from dermstack.outputs.submission import check_run_format, write_submission
    from dermstack.rundir import check_current
    from dermstack.saved import load, model_dirs

    check_current(run_dir)
    metrics = read_json(run_dir / "metrics.json", "run metrics") if (run_dir / "metrics.json").exists() else {}
    model = model or metrics.get("submission_model") or metrics.get("oof_model")
    if predictions is not None:
        with reading(predictions, "predictions"):
            preds = pl.read_parquet(predictions)
    else:
        saved = model_dirs(run_dir / "models")
        if model not in saved:
            what = f"no saved model {model!r}" if model else "which model to submit?"
            raise DataError(f"{what} (have {sorted(saved)}); name one with --model", file=str(run_dir / "models"))
        test = load(saved[model]).result().test
        if not test.height:
            raise DataError("no test predictions: the run had no test rows; score new data with `dermstack predict`",
                            file=str(saved[model] / "test.parquet"))
        preds = test.frame
    spec = load(model_dirs(run_dir / "models")[model]).spec if model in model_dirs(run_dir / "models") else {}
    table = LesionTable.read(run_dir / "lesions.parquet") if (run_dir / "lesions.parquet").exists() else None
    ids = table.test["image_id"].to_list() if predictions is None and table is not None else None
    classes = metrics.get("classes") or spec.get("classes")
    check_run_format(fmt, metrics.get("task") or spec.get("task"), classes or [], str(run_dir))
    write_submission(preds, fmt, out, sample=sample, ids=ids, classes=classes, model=model)
    if ids is None and sample is None:
        click.echo(f"note: the ids of {predictions or 'the test predictions'} were not checked against a test set "
                   "(every predicted row is submitted): pass --sample to check them", err=True)
    click.echo(f"wrote validated {fmt} submission {out}")
