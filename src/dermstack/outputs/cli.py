"""`dermstack predict` and `dermstack submit`: a finished run's saved models on new data, and its
validated competition submission."""
from __future__ import annotations

from pathlib import Path

import click

from dermstack.atomic import out_file, parquet_out, write_parquet
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
    """Score DATA (a dataset folder in the run's format or its metadata file, or a LesionTable parquet) with RUN_DIR's saved models."""
    from dermstack.outputs.predict import CLI_ALLOW_MISSING, predict_run

    preds = predict_run(run_dir, data, strict=strict, allow_missing_features=allow_missing_features,
                        allow_missing_option=CLI_ALLOW_MISSING)
    write_parquet(out, preds)
    click.echo(f"wrote {preds['image_id'].n_unique()} rows x {preds['model'].n_unique()} models to {out}")


@click.command("submit")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True)
@click.option("--out", type=_path, required=True, callback=out_file, help="Submission CSV to write.")
@click.option("--sample", type=_existing, default=None, help="The competition's sample submission to match.")
@click.option("--predictions", type=_existing, default=None,
              help="Predictions parquet from `dermstack predict` (default: the saved model's test predictions).")
@click.option("--model", default=None, help="Which model's scores (default: the run's submission_model in metrics.json).")
def submit_command(run_dir: Path, fmt: str, out: Path, sample: Path | None, predictions: Path | None, model: str | None) -> None:
    """Write a validated competition submission from RUN_DIR's test predictions (nothing is written on any problem).

    RUN_DIR is a `dermstack run` directory (checked to be current), or any folder whose models/
    the stage commands wrote (then --model names the one to submit)."""
    from dermstack.outputs.submission import submit_run

    click.echo(f"wrote validated {fmt} submission {submit_run(run_dir, fmt, out, sample, predictions, model)}")
