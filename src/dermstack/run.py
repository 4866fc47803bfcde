"""`dermstack run`: the whole pipeline from one TOML config, stage by stage, through files in RUN_DIR.

Each stage writes its outputs plus ``stages/<stage>.json`` (config, input digests, versions) and is
skipped on a re-run when that fingerprint is unchanged.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np
import polars as pl

from dermstack.config import ModelConfig, RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.errors import ConfigError
from dermstack.metrics import PRIMARY_METRIC, evaluate
from dermstack.provenance import Stage, versions
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)
PACKAGE_CONFIGS = Path(__file__).parent / "configs"


@dataclass
class RunPaths:
    root: Path

    lesions = property(lambda s: s.root / "lesions.parquet")
    ingest_report = property(lambda s: s.root / "ingest_report.json")
    folds = property(lambda s: s.root / "folds.parquet")
    embeddings = property(lambda s: s.root / "embeddings.h5")
    features = property(lambda s: s.root / "features.parquet")
    models = property(lambda s: s.root / "models")
    oof = property(lambda s: s.root / "oof.parquet")
    test_predictions = property(lambda s: s.root / "test_predictions.parquet")
    metrics = property(lambda s: s.root / "metrics.json")
    submission = property(lambda s: s.root / "submission.csv")
    synthetic = property(lambda s: s.root / "data")
    report = property(lambda s: s.root / "report")


@dataclass
class ModelOutput:
    """OOF and test predictions of one model (base or ensemble), as stored in ``models/<name>/``."""

    name: str
    oof: pl.DataFrame
    test: pl.DataFrame
    metrics: dict = field(default_factory=dict)


def _timed(stage: Stage, fn, **extra):
    if stage.done():
        log.info("stage %s: unchanged, skipped", stage.name)
        return False
    t0 = time.perf_counter()
    fn()
    stage.finish(time.perf_counter() - t0, **extra)
    log.info("stage %s: done in %.1f s", stage.name, time.perf_counter() - t0)
    return True


def scores_matrix(long: pl.DataFrame, ids: list[str], classes: list[str]) -> np.ndarray:
    """Average a long prediction frame (image_id, class, score) over seeds/folds into (n,) or (n, C) in ``ids`` order."""
    wide = (long.group_by("image_id", "class").agg(pl.col("score").mean())
            .pivot(on="class", index="image_id", values="score"))
    order = pl.DataFrame({"image_id": ids}).join(wide, on="image_id", how="left", maintain_order="left")
    mat = order.select(classes).to_numpy().astype(float)
    return mat[:, 0] if classes == ["target"] else mat


@dataclass
class SelectedBackbones:
    """The configured backbones of an EmbeddingStore that may hold others from earlier runs."""

    store: object
    names: list[str]

    def backbones(self) -> list[str]:
        return [b for b in self.store.backbones() if b in self.names]

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        return self.store.read(backbone, image_ids)

    def image_ids(self, backbone: str) -> list[str]:
        return self.store.image_ids(backbone)


class Run:
    """One pipeline run into ``run_dir``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, force: bool = False, config_dir: Path | None = None):
        self.cfg = cfg
        if cfg.data.path:
            cfg.data.path = str(resolve_data_path(cfg.data.path, config_dir))
        self.paths = RunPaths(Path(run_dir))
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if force:
            shutil.rmtree(self.paths.root / "stages", ignore_errors=True)

    # -- stages -----------------------------------------------------------------
    def ingest(self) -> LesionTable:
        d, p = self.cfg.data, self.paths

        def work():
            from dermstack.data.readers import ingest

            if d.format == "synthetic-isic2024":
                from dermstack.data.synth import synthesize_isic2024

                shutil.rmtree(p.synthetic, ignore_errors=True)
                synthesize_isic2024(p.synthetic, lesions=d.lesions, test_lesions=d.test_lesions, image_size=d.image_size,
                                    seed=d.seed, positive_rate=d.positive_rate)
                table, report = ingest("isic2024", p.synthetic, strict=d.strict)
            else:
                if not d.path:
                    raise ConfigError(f"[data] path is required for format {d.format!r}")
                table, report = ingest(d.format, d.path, strict=d.strict)
            table.write(p.lesions)
            report.write_json(p.ingest_report)
            click.echo(report.summary(), err=True)

        inputs = [Path(d.path)] if d.path and d.format != "synthetic-isic2024" else []
        _timed(Stage(p.root, "ingest", asdict(d), inputs, [p.lesions, p.ingest_report]), work)
        return LesionTable.read(p.lesions)

    def folds(self, table: LesionTable) -> FoldPlan:
        p, cv = self.paths, self.cfg.cv
        stage = Stage(p.root, "folds", {"n_splits": cv.n_splits, "seed": cv.seed, "task": self.cfg.data.task},
                      [p.lesions], [p.folds])
        _timed(stage, lambda: FoldPlan.make(table, cv.n_splits, cv.seed, self.cfg.data.task).write(p.folds))
        plan = FoldPlan.read(p.folds)
        plan.check_matches(table)
        return plan

    def extract(self, table: LesionTable):
        ex, p = self.cfg.extract, self.paths
        if not ex.backbones:
            return None
        from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings

        settings = ExtractSettings.from_config(ex)

        def work():
            report = extract_embeddings(table, list(ex.backbones), p.embeddings, settings, strict=self.cfg.data.strict)
            click.echo(report.summary(), err=True)

        # The store is resumable on its own; the stage record only saves re-opening it.
        _timed(Stage(p.root, "extract", asdict(ex), [p.lesions], [p.embeddings]), work)
        return SelectedBackbones(EmbeddingStore(p.embeddings), list(ex.backbones))

    def features(self, table: LesionTable, store) -> "FeatureSet":  # noqa: F821
        from dermstack.features.build import build_features
        from dermstack.features.featureset import FeatureSet
        from dermstack.features.transform import FeatureTransform

        p = self.paths
        inputs = [p.lesions] + ([p.embeddings] if store is not None else [])
        cfg = {**asdict(self.cfg.features), "pca_components": self.cfg.extract.pca_components,
               "backbones": self.cfg.extract.backbones}

        def work():
            fs = build_features(table, self.cfg.features, store, pca_components=self.cfg.extract.pca_components)
            fs.write(p.features)

        _timed(Stage(p.root, "features", cfg, inputs, [p.features, FeatureTransform.path_for(p.features)]), work)
        return FeatureSet.read(p.features)

    def _model_stage(self, name: str, cfg: dict, fit) -> ModelOutput:
        """Run ``fit() -> CVResult`` unless ``models/<name>/`` is up to date; return its predictions."""
        p = self.paths
        mdir = p.models / name
        outputs = [mdir / "oof.parquet", mdir / "test.parquet", mdir / "metrics.json"]
        inputs = [p.lesions, p.folds, p.features] + ([p.embeddings] if p.embeddings.exists() else [])

        def work():
            res = fit()
            mdir.mkdir(parents=True, exist_ok=True)
            res.oof.write_parquet(mdir / "oof.parquet")
            res.test.write_parquet(mdir / "test.parquet")
            (mdir / "metrics.json").write_text(json.dumps(res.metrics, indent=2, default=float))

        _timed(Stage(p.root, f"model-{name}", cfg, inputs, outputs), work)
        return ModelOutput(name, pl.read_parquet(outputs[0]), pl.read_parquet(outputs[1]),
                           json.loads(outputs[2].read_text()))

    def model(self, m: ModelConfig, table: LesionTable, features, task: TaskSpec, plan: FoldPlan) -> ModelOutput:
        cfg = {"model": asdict(m), "task": task.kind, "target": task.target_name}
        if m.kind == "cnn":
            from dermstack.ensembles.cnn import cross_validate_cnn

            return self._model_stage(m.label, cfg, lambda: cross_validate_cnn(table, task, plan, m, self.paths.models))
        from dermstack.boosting import cross_validate
        from dermstack.boosting.dask_ import connect

        def fit():
            client = connect(self.cfg.cv.dask_address)
            try:
                return cross_validate(features, task, plan, m, self.paths.models, client=client)
            finally:
                if client is not None:
                    client.close()

        return self._model_stage(m.label, cfg, fit)

    def cnn_feature_models(self, table: LesionTable, features, task: TaskSpec, plan: FoldPlan) -> list[ModelOutput]:
        """Each booster again with the ``cnn`` feature group (ISIC 2024 style), leak-free through pair CNNs."""
        cnns = [m for m in self.cfg.models if m.kind == "cnn"]
        boosters = [m for m in self.cfg.models if m.kind != "cnn"]
        if not (self.cfg.ensemble.cnn_feature and self.cfg.ensemble.method in ("stack", "rank") and cnns and boosters):
            return []
        from dermstack.ensembles.stacking import CNNViews, cross_validate_stacked, nested_cnn_views

        cnn = cnns[0]
        views_file = self.paths.models / cnn.label / "nested" / "views.parquet"
        views_stage = Stage(self.paths.root, f"nested-{cnn.label}", {"model": asdict(cnn), "task": task.kind},
                            [self.paths.lesions, self.paths.folds], [views_file])
        _timed(views_stage, lambda: nested_cnn_views(table, task, plan, cnn, self.paths.models))
        views = CNNViews.read(views_file, cnn.label)
        outs = []
        for b in boosters:
            name = f"{b.label}+{cnn.label}"
            cfg = {"model": asdict(b), "cnn": asdict(cnn), "task": task.kind, "target": task.target_name}
            outs.append(self._model_stage(name, cfg, lambda b=b: cross_validate_stacked(
                features, table, task, plan, b, views, self.paths.models)))
        return outs

    def ensemble(self, outs: list[ModelOutput], task: TaskSpec, plan: FoldPlan) -> ModelOutput:
        """The run's final prediction: the only model, the mean of several, or a stack."""
        method = self.cfg.ensemble.method
        chosen = [o for o in outs if not self.cfg.ensemble.models or o.name in self.cfg.ensemble.models]
        if len(chosen) == 1 and method in ("none", "auto", "mean"):
            return chosen[0]
        if method in ("none", "auto", "mean"):
            oof = pl.concat([o.oof for o in chosen]).with_columns(pl.lit("mean").alias("model"))
            test = pl.concat([o.test for o in chosen]).with_columns(pl.lit("mean").alias("model")) if chosen[0].test.height else chosen[0].test
            return self._scored(ModelOutput("mean", oof, test), task)
        from dermstack.ensembles.stacking import stack_models

        return self._scored(stack_models(chosen, task, plan, method=method, out_dir=self.paths.models), task)

    # -- outputs --------------------------------------------------------------
    def _scored(self, out: ModelOutput, task: TaskSpec) -> ModelOutput:
        out.metrics = evaluate(task.kind, task.y, scores_matrix(out.oof, task.image_ids, task.classes))
        return out

    def write_outputs(self, table: LesionTable, task: TaskSpec, outs: list[ModelOutput], final: ModelOutput) -> dict:
        p = self.paths
        base = {o.name: {k: v for k, v in o.metrics.items() if isinstance(v, (int, float))} for o in outs}
        for o in outs:  # recompute on the run's labels so every model is scored the same way
            base[o.name].update(evaluate(task.kind, task.y, scores_matrix(o.oof, task.image_ids, task.classes)))
        frames = [o.oof for o in outs] + ([final.oof] if final not in outs else [])
        pl.concat([f.select("image_id", "model", "seed", "fold", "class", "score") for f in frames]).write_parquet(p.oof)
        tests = [o.test for o in outs + ([final] if final not in outs else []) if o.test.height]
        if tests:
            pl.concat([t.select("image_id", "model", "class", "score") for t in tests]).write_parquet(p.test_predictions)
        metrics = {
            "task": task.kind, "target": task.target_name if task.kind == "binary" else None,
            "classes": task.classes, "dataset": table.meta.dataset,
            "n_train": len(task.image_ids), "n_test": table.test.height,
            "n_positive": int(task.y.sum()) if task.kind == "binary" else None,
            "primary_metric": PRIMARY_METRIC[task.kind],
            "oof_model": final.name,
            "oof": evaluate(task.kind, task.y, scores_matrix(final.oof, task.image_ids, task.classes)),
            "models": base,
        }
        p.metrics.write_text(json.dumps(metrics, indent=2, default=float))
        if table.test.height and final.test.height:
            self.write_submission(table, task, final)
        return metrics

    def write_submission(self, table: LesionTable, task: TaskSpec, final: ModelOutput) -> None:
        from dermstack.ensembles.submission import submission_format, write_submission

        fmt = submission_format(table, task)
        if fmt is None:
            log.info("no Kaggle-style submission format for %s / %s", table.meta.dataset, task.kind)
            return
        ids = table.test["image_id"].to_list()
        write_submission(final.test, fmt, self.paths.submission, ids=ids, classes=task.classes)
        log.info("wrote %s", self.paths.submission)

    # -- all --------------------------------------------------------------------
    def execute(self) -> dict:
        t0 = time.perf_counter()
        (self.paths.root / "config.toml").write_text(to_toml(self.cfg.to_dict()))
        (self.paths.root / "versions.json").write_text(json.dumps(versions(), indent=2))
        table = self.ingest()
        task = TaskSpec.from_table(table, self.cfg.data.task, self.cfg.data.target)
        plan = self.folds(table)
        store = self.extract(table)
        features = self.features(table, store)
        outs = [self.model(m, table, features, task, plan) for m in self.cfg.models]
        outs += self.cnn_feature_models(table, features, task, plan)
        final = self.ensemble(outs, task, plan)
        metrics = self.write_outputs(table, task, outs, final)
        if self.cfg.report.enabled:
            from dermstack.reports import build_report

            build_report(self.paths.root, self.paths.report, shap_sample=self.cfg.report.shap_sample)
        log.info("run finished in %.1f s: %s", time.perf_counter() - t0, self.paths.root)
        return metrics


def resolve_data_path(path: str, config_dir: Path | None) -> Path:
    """A relative ``[data] path`` is taken from the working directory, else from the config's folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or config_dir is None:
        return p.resolve() if p.exists() else p
    alt = config_dir / p
    return alt.resolve() if alt.exists() else p


def to_toml(d: dict, prefix: str = "") -> str:
    """Minimal TOML writer for RunConfig dicts (tables, arrays of tables, scalars, lists, inline dicts)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    lines = []
    for section, body in d.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {val(v)}" for k, v in item.items()]
                lines.append("")
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {val(v)}" for k, v in body.items()]
            lines.append("")
    return "\n".join(lines)


def print_metrics(metrics: dict) -> None:
    click.echo(f"task {metrics['task']}: {metrics['n_train']} training rows, {metrics['n_test']} test rows")
    for name, m in {**metrics["models"], f"final ({metrics['oof_model']})": metrics["oof"]}.items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float) and not k.endswith(("_lo", "_hi")))
        click.echo(f"  {name}: {shown}")


@click.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@click.option("--force", is_flag=True, help="Re-run every stage even when its inputs are unchanged.")
def run_command(config: Path, out: Path, force: bool) -> None:
    """Run the pipeline described by CONFIG (TOML) into the run directory OUT."""
    metrics = Run(RunConfig.from_toml(config), out, force=force, config_dir=config.parent).execute()
    print_metrics(metrics)
    click.echo(f"results in {out}/ (metrics.json, oof.parquet, models/)")


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another config instead of the embedded demo config.")
def demo_command(out: Path, config: Path | None) -> None:
    """End-to-end demo on synthetic ISIC 2024 data with the embedded default config."""
    config = config or PACKAGE_CONFIGS / "demo.toml"
    click.echo(f"dermstack demo: config {config}, run directory {out}", err=True)
    metrics = Run(RunConfig.from_toml(config), out).execute()
    print_metrics(metrics)
    click.echo(f"results in {out}/")
