"""`dermstack ensembles cnn|stack|validate`, `dermstack predict` and `dermstack submit`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from dermstack.atomic import out_file, parquet_out, read_json, write_parquet
from dermstack.config import MAX_SEED
from dermstack.config.limits import option
from dermstack.ensembles.submission import FORMATS
from dermstack.taskkind import TaskKind

_path = click.Path(path_type=Path)
_existing = click.Path(exists=True, path_type=Path)


@click.group()
def ensembles() -> None:
    """Fine-tuned CNNs per fold, stacking, submissions."""


def _load(lesions: Path, folds: Path, task_kind: str, target: str):
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.task import TaskSpec

    table = LesionTable.read(lesions)
    plan = FoldPlan.read(folds)
    plan.check_matches(table)
    return table, TaskSpec.from_table(table, task_kind, target), plan


def _print_metrics(name: str, metrics: dict) -> None:
    click.echo(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


@ensembles.command("cnn")
@click.argument("lesions", type=_existing)
@click.option("--folds", type=_existing, required=True, help="FoldPlan parquet (dermstack data folds).")
@click.option("--out", type=_path, required=True, help="Models directory; the CNN goes to OUT/<name>/.")
@click.option("--task", "task_kind", type=click.Choice(TaskKind.KINDS), default="binary", show_default=True)
@click.option("--target", default="malignant", show_default=True)
@click.option("--name", default="cnn", show_default=True)
@click.option("--backbone", default=None, help="timm model name (default efficientnet_lite0).")
@click.option("--epochs", type=option("Epochs"), default=None)
@click.option("--image-size", type=option("ImageSide", 16), default=None)
@click.option("--seed", "seeds", type=click.IntRange(0, MAX_SEED), multiple=True, default=(0,), show_default=True)
@click.option("--param", "params", multiple=True, help="Extra CNN setting KEY=JSON_VALUE, e.g. lr=0.0003.")
@click.option("--nested", is_flag=True, help="Also train the pair CNNs whose scores stacked boosters use.")
def cnn_command(lesions, folds, out, task_kind, target, name, backbone, epochs, image_size, seeds, params, nested) -> None:
    """Fine-tune a CNN on every fold of FOLDS for the images of LESIONS; OOF/test scores and checkpoints."""
    from dermstack.config import ModelConfig
    from dermstack.distributed import torchrun_world
    from dermstack.ensembles.cnn import cross_validate_cnn
    from dermstack.errors import ConfigError

    world = torchrun_world()
    if world and nested:
        raise ConfigError("--nested trains its pair CNNs in one process: run it without torchrun")
    table, task, plan = _load(lesions, folds, task_kind, target)
    model = ModelConfig(kind="cnn", name=name, seeds=list(seeds), backbone=backbone, epochs=epochs, image_size=image_size,
                        params=_params(params))
    res = cross_validate_cnn(table, task, plan, model, out)
    if world is None or world.main:
        _print_metrics(name, res.metrics)
    if nested:
        from dermstack.ensembles.stacking import nested_cnn_views

        nested_cnn_views(table, task, plan, model, out)
        click.echo(f"nested pair CNNs and views in {out / name / 'nested'}")


def _params(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@ensembles.command("stack")
@click.argument("model_dirs", type=_existing, nargs=-1, required=True)
@click.option("--lesions", type=_existing, required=True)
@click.option("--folds", type=_existing, required=True)
@click.option("--task", "task_kind", type=click.Choice(TaskKind.KINDS), default="binary", show_default=True)
@click.option("--target", default="malignant", show_default=True)
@click.option("--method", type=click.Choice(["stack", "greedy", "rank", "mean"]), default="stack", show_default=True)
@click.option("--out", type=_path, required=True, help="Models directory; the ensemble goes to OUT/<method>/.")
def stack_command(model_dirs, lesions, folds, task_kind, target, method, out) -> None:
    """Ensemble saved models (MODEL_DIR: a models/<name>/ folder) evaluated by nested CV on FOLDS."""
    from dermstack.ensembles.stacking import comparison, stack_models
    from dermstack.ensembles.weighted import weighted_mean
    from dermstack.saved import load

    _, task, plan = _load(lesions, folds, task_kind, target)
    outs = [load(d).result() for d in model_dirs]
    if method == "mean":
        res = weighted_mean(outs, task, plan, out_dir=out)
    else:
        res = stack_models(outs, task, plan, method=method, out_dir=out)
    click.echo(comparison(outs + [res], task))


@ensembles.command("validate")
@click.argument("csv", type=_existing)
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True)
@click.option("--sample", type=_existing, default=None, help="The competition's sample submission (header and ids).")
def validate_command(csv: Path, fmt: str, sample: Path | None) -> None:
    """Check any submission CSV: header, every id exactly once, scores numbers in [0, 1]."""
    from dermstack.ensembles.submission import validate_submission

    problems = validate_submission(csv, sample, fmt)
    if problems:
        for p in problems:
            click.echo(f"{csv}: {p}", err=True)
        raise SystemExit(1)
    if sample is None:
        click.echo(f"{csv}: valid {fmt} submission format (header, scores, no repeated id); ids NOT checked "
                   "against the test set: pass --sample to check that every test id is there")
    else:
        click.echo(f"{csv}: valid {fmt} submission (every id of {sample.name} exactly once)")


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", type=_existing)
@click.option("--out", type=_path, required=True, callback=parquet_out, help="Predictions parquet (image_id, model, class, score).")
@click.option("--strict", is_flag=True, help="Stop on any unreadable row or image of DATA.")
@click.option("--allow-missing-features", is_flag=True,
              help="Score DATA even when it lacks feature columns the models were trained on (filled as missing, with a warning).")
def predict_command(run_dir: Path, data: Path, out: Path, strict: bool, allow_missing_features: bool) -> None:
    """Score DATA (a dataset folder in the run's format, or a LesionTable parquet) with RUN_DIR's saved models."""
    from dermstack.ensembles.predict import predict_run

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
    from dermstack.ensembles.submission import check_run_format, write_submission
    from dermstack.errors import DataError, reading
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
