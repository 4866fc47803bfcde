"""`dermstack ensembles cnn|stack|validate`: the stage commands of the CNN, the ensembles and submission checks."""
from __future__ import annotations

import json
from pathlib import Path

import click

from dermstack.config import MAX_SEED
from dermstack.config.limits import option
from dermstack.outputs.submission import FORMATS
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
    from dermstack.cnn.train import cross_validate_cnn
    from dermstack.config import ModelConfig
    from dermstack.distributed import torchrun_world
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
        from dermstack.cnn.nested import nested_cnn_views

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
    from dermstack.outputs.submission import validate_submission

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
