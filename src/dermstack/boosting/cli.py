"""`dermstack boosting`: cross-validated boosters (LightGBM, XGBoost, CatBoost, a plugin's) on a feature table and a fold plan."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from dermstack.atomic import parquet_out

log = logging.getLogger(__name__)


@click.group()
def boosting() -> None:
    """Train gradient-boosted trees on the run's FoldPlan; predict with saved models."""


@boosting.command("train")
@click.argument("features_path", metavar="FEATURES.parquet", type=click.Path(exists=True, path_type=Path))
@click.option("--folds", "folds_path", type=click.Path(exists=True, path_type=Path), required=True, help="FoldPlan parquet.")
@click.option("--lesions", "lesions_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="LesionTable parquet with the labels.")
@click.option("--config", "config_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Run config TOML: [data] task/target and the [[models]] entries.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--model", "only", multiple=True, help="Train only these [[models]] names (repeatable).")
@click.option("--dask", "dask_address", help="Dask scheduler address (default: $DERMSTACK_DASK_ADDRESS, else local).")
def train_command(features_path: Path, folds_path: Path, lesions_path: Path, config_path: Path, out: Path,
                  only: tuple[str, ...], dask_address: str | None) -> None:
    """Cross-validate every booster [[models]] entry of CONFIG on FEATURES.parquet.

    Writes OUT/models/<name>/ (native model files, model.json, OOF and test predictions,
    metrics.json, importance.parquet: what `ensembles stack`, `submit` and `report` read) and a
    summary OUT/boosting_metrics.json."""
    from dermstack.atomic import write_json
    from dermstack.boosting.base import booster_kinds
    from dermstack.boosting.cv import cross_validate
    from dermstack.boosting.dask_ import connect
    from dermstack.boosting.registry import probe_models
    from dermstack.config import RunConfig
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.errors import ConfigError
    from dermstack.features.featureset import FeatureSet
    from dermstack.rundir import STAGE_DIR_FILES, claim_dir
    from dermstack.task import TaskSpec

    cfg = RunConfig.from_toml(config_path)
    probe_models(cfg.models, cfg.data.task)
    table = LesionTable.read(lesions_path)
    plan = FoldPlan.read(folds_path)
    plan.check_matches(table)
    features = FeatureSet.read(features_path)
    task = TaskSpec.from_table(table, cfg.data.task, cfg.data.target)
    cfg.resolve(len(task.image_ids))  # the default model set where the config has no [[models]]
    unknown = sorted(set(only) - {m.label for m in cfg.models})
    if unknown:
        raise ConfigError(f"--model {unknown}: no such [[models]] name in {config_path}")
    chosen, boosters = [m for m in cfg.models if not only or m.label in only], booster_kinds()
    for m in chosen:
        if m.kind not in boosters:
            log.warning("[[models]] %s is a %s model, trained by its own stage, not by `boosting train`", m.label, m.kind)
    chosen = [m for m in chosen if m.kind in boosters]
    if not chosen:
        raise ConfigError(f"{config_path}: no booster [[models]] entry (kind one of {tuple(boosters)}) to train")
    claim_dir(out, "stage output folder", owned=STAGE_DIR_FILES)
    client = connect(dask_address, worker_wait=cfg.cv.dask_wait)
    out.mkdir(parents=True, exist_ok=True)
    results = [cross_validate(features, task, plan, m, out / "models", client=client) for m in chosen]
    primary = task.primary_metric
    summary = {
        "task": task.kind, "classes": task.classes, "n_train": len(task.image_ids), "n_test": table.test.height,
        "primary_metric": primary,
        "models": {r.name: {k: v for k, v in r.metrics.items() if isinstance(v, float)} | {"ci95": r.metrics["ci95"]}
                   for r in results},
    }
    write_json(out / "boosting_metrics.json", summary)
    for r in results:
        ci = r.metrics["ci95"].get(primary, [float("nan")] * 2)
        click.echo(f"{r.name}: {primary} {r.metrics[primary]:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}), {r.metrics['seconds']:.0f} s")
    if client is not None:
        client.close()


@boosting.command("predict")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("features_path", metavar="FEATURES.parquet", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, callback=parquet_out,
              help="Parquet of image_id, class, score.")
def predict_command(model_dir: Path, features_path: Path, out: Path) -> None:
    """Score every row of FEATURES.parquet with the saved fold/seed models of MODEL_DIR (averaged)."""
    from dermstack.boosting.store import predict_saved, read_spec
    from dermstack.features.featureset import FeatureSet
    from dermstack.predictions import Predictions

    features = FeatureSet.read(features_path)
    spec = read_spec(model_dir)
    ids = features.df["image_id"].to_list()
    preds = Predictions.from_scores(spec["name"], ids, spec["classes"], predict_saved(model_dir, features))
    preds.write(out)
    click.echo(f"wrote {preds.height} scores ({len(spec['classes'])} class(es), {len(ids)} rows) to {out}")
