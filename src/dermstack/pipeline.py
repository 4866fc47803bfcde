"""The pipeline of `dermstack run`: from one TOML config, stage by stage, through files in RUN_DIR.

Each stage writes its outputs plus ``stages/<stage>.json`` (config, input digests, versions) and is
skipped on a re-run when that fingerprint is unchanged."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from dermstack.atomic import read_json, write_text
from dermstack.config import ModelConfig, RunConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable, split_key
from dermstack.errors import ConfigError
from dermstack.inputpaths import resolve_inputs
from dermstack.jobs import DaskJobs, LocalJobs, connect_jobs
from dermstack.modelfolders import check_model_folders, could_be_default, prune_model_folders
from dermstack.outputs.final import write_outputs
from dermstack.predictions import ModelResult
from dermstack.provenance import Stage, file_digest, versions
from dermstack.registry import FitInputs, auto_candidates, ensemble_methods, model_kind
from dermstack.rundir import (
    RunLock,
    RunPaths,
    claimed_run_dir,
    finish,
    flat_config,
    forget_overwritten,
    invalidate,
    records_of,
)
from dermstack.saved import GROUP_SOURCE
from dermstack.task import TaskSpec, check_target

log = logging.getLogger(__name__)


@dataclass
class SelectedBackbones:
    """The configured backbones (each of their views) of an EmbeddingStore that may hold others from earlier runs."""

    store: object
    names: list[str]

    def backbones(self) -> list[str]:
        return [b for b in self.store.backbones() if split_key(b)[0] in self.names]

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        return self.store.read(backbone, image_ids)

    def image_ids(self, backbone: str) -> list[str]:
        return self.store.image_ids(backbone)


class Pipeline:
    """One pipeline run into ``run_dir``: stages in order, each skipped when its record is current,
    each invalidating what depends on it before it re-runs (:mod:`dermstack.rundir`)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, force: bool = False, config_dir: Path | None = None,
                 config_file: Path | None = None):
        cfg = self.cfg = copy.deepcopy(cfg)  # resolved paths and the default models are the run's, never the caller's
        self.source = str(config_file) if config_file else "config"  # what messages about the config name
        # before anything is written into the run directory
        resolve_inputs(cfg, config_dir or (config_file.parent if config_file else None), self.source)
        self.paths = RunPaths(Path(run_dir))
        self.force = force
        self.flat = flat_config(cfg.to_dict())
        self.stages: list[str] = []
        self.unlabelled: list[str] = []
        self.ensemble_choice: dict | None = None
        self.jobs: LocalJobs | DaskJobs = LocalJobs()  # where the fold x seed jobs run ([cv] dask_address)
        self.clinical = True  # metrics.json primary_ci, clinical / thresholds, comparison (dermstack.clinical_report)
        self.audit: dict | None = None  # metrics.json audit: duplicates across folds (dermstack.data.audit)

    def keys(self, *prefixes: str) -> dict:
        """The config keys a stage reads: every ``section.key`` starting with one of ``prefixes``."""
        return {k: v for k, v in self.flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}

    def stage(self, name: str, keys: dict, inputs: list[Path], outputs: list[Path], depends_on: list[str], fn,
               record: dict | None = None, resumable: bool = False, read=None) -> bool:
        """Run ``fn()`` unless the stage is current; ``read``: what may still refuse it (a config key the data
        rejects), run first, its result handed to ``fn`` after the stage invalidated what depends on it."""
        stage = Stage(self.paths.root, name, keys, inputs, outputs, depends_on, resumable)
        self.stages.append(name)
        stage.check_inside()
        if not self.force and stage.done(f"remove it and re-run (stage {name} re-runs), or re-run with --force"):
            log.info("stage %s: unchanged, skipped", name)
            return False
        t0 = time.perf_counter()
        got = read() if read else None
        dropped = invalidate(self.paths.root, name)
        if dropped:
            log.info("stage %s re-runs: invalidated %s", name, dropped)
        out = fn(got) if read else fn()
        where = out.metrics.get("executor") if isinstance(out, ModelResult) else None  # the scheduler and workers of a model
        stage.finish(time.perf_counter() - t0, **(record or {}), **({"executor": where} if where else {}))
        forget_overwritten(self.paths.root, name)
        log.info("stage %s: done in %.1f s", name, time.perf_counter() - t0)
        return True

    # -- stages -----------------------------------------------------------------
    def ingest(self) -> LesionTable:
        d, p = self.cfg.data, self.paths

        def read():  # the data read and its [data] target checked before anything of the run is changed
            from dermstack.data.readers import ingest

            table, report = ingest(d.format, d.path, strict=d.strict, encoding=d.encoding)
            self.check_data(table)
            return table, report

        def work(got=None):
            from dermstack.data.readers import ingest

            if d.format == "synthetic-isic2024":  # written before it can be read: synthesised as the stage runs
                from dermstack.data.synth import synthesize_isic2024

                synthesize_isic2024(p.synthetic, lesions=d.lesions, test_lesions=d.test_lesions, image_size=d.image_size,
                                    seed=d.seed, positive_rate=d.positive_rate)
                got = ingest("isic2024", p.synthetic, strict=d.strict)
            table, report = got
            table.without_features(d.not_features).write(p.lesions)
            report.write_json(p.ingest_report)
            click.echo(report.summary(), err=True)

        inputs = [Path(d.path)] if d.path and d.format != "synthetic-isic2024" else []
        outputs = [p.lesions, p.ingest_report] + ([p.synthetic] if d.format == "synthetic-isic2024" else [])
        # the readers use neither: a new target is checked (TaskSpec.from_table) before the folds stage re-runs
        keys = {k: v for k, v in self.keys("data").items() if k not in ("data.task", "data.target")}
        self.stage("ingest", keys, inputs, outputs, [], work, read=None if d.format == "synthetic-isic2024" else read)
        table, self.unlabelled = TaskSpec.labelled(LesionTable.read(p.lesions), d.task, d.target, d.strict)
        if self.unlabelled:
            log.warning("%d training rows have no label for this task and are left out of training, e.g. %s",
                        len(self.unlabelled), self.unlabelled[:5])
        return table

    def check_data(self, table: LesionTable) -> None:
        """The config keys only the data can refuse: ``[data] target``, ``[extract] backbones`` and ``[features]
        image`` on data without images; a ConfigError naming the config file, before the run's outputs change."""
        from dermstack.features.build import check_images

        check_target(table, self.cfg.data.task, self.cfg.data.target, self.source)
        check_images(table, self.cfg, self.source)

    def folds(self, table: LesionTable) -> FoldPlan:
        p, cv = self.paths, self.cfg.cv
        grouping = ("cv.group", "cv.leave_one_group_out", "data.task", "data.target")
        if cv.folds:  # a published split: the file is an input, so a changed file re-runs this stage and all after it
            source = Path(cv.folds)
            keys, inputs = self.keys("cv.folds", *grouping), [p.lesions, source]
            make, record = ((lambda: FoldPlan.from_file(table, source, group=cv.group)),
                            {"fold_file": {"file": str(source), "sha256": file_digest(source)}})
        else:
            # leave-one-group-out folds use neither n_splits nor seed: changing them re-runs nothing
            keys, inputs = self.keys(*(() if cv.leave_one_group_out else ("cv.n_splits", "cv.seed")), *grouping), [p.lesions]
            make, record = (lambda: FoldPlan.make(table, cv.n_splits, cv.seed, self.cfg.data.task, cv.group,
                                                  cv.leave_one_group_out)), None
        self.stage("folds", keys, inputs, [p.folds], ["ingest"], lambda: make().write(p.folds), record)
        plan = FoldPlan.read(p.folds)
        plan.check_matches(table)
        return plan

    def extract(self, table: LesionTable):
        ex, p = self.cfg.extract, self.paths
        if not ex.backbones:
            if n := table.df["image_ref"].drop_nulls().len():  # a config of [data] alone reads no pixels but the masks'
                log.info("%d images not embedded: [extract] backbones = [] (backbones = [\"efficientnet_lite0\"] embeds them)", n)
            return None
        from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings

        settings = ExtractSettings.from_config(ex)

        def work():
            hint = (f"stage extract of the run in {p.root}: remove it and run again (stage extract embeds every image "
                    "again), or give the run another --out")
            # a store this run's extract stage wrote follows its config; one put there by hand is never changed
            ours = "extract" in records_of(p.root)
            report = extract_embeddings(table, list(ex.backbones), p.embeddings, settings, strict=self.cfg.data.strict,
                                        damaged_hint=hint, replace_changed=ours)
            click.echo(report.summary(), err=True)

        # The store is resumable on its own; the stage record only saves re-opening it.
        keys = {k: v for k, v in self.keys("extract").items() if k != "extract.pca_components"}
        self.stage("extract", keys, [p.lesions], [p.embeddings], ["ingest"], work, resumable=True)
        return SelectedBackbones(EmbeddingStore(p.embeddings), list(ex.backbones))

    def features(self, table: LesionTable, store) -> FeatureSet:  # noqa: F821
        from dermstack.features.build import build_features
        from dermstack.features.featureset import FeatureSet
        from dermstack.features.transform import FeatureTransform

        p = self.paths
        inputs = [p.lesions] + ([p.embeddings] if store is not None else [])
        record: dict = {}

        def work():
            fs = build_features(table, self.cfg.features, store, pca_components=self.cfg.extract.pca_components)
            fs.write(p.features)
            capped = {k: v for k, v in fs.info.get("embedding", {}).items() if "requested" in v}
            if capped:  # recorded beside features.transform.npz's own record of it
                record["pca_capped"] = {k: {"components": v["components"], "requested": v["requested"], "by": v["capped_by"]}
                                        for k, v in capped.items()}

        self.stage("features", self.keys("features", "extract.pca_components", "extract.backbones", "data.task", "data.target"),
                    inputs, [p.features, FeatureTransform.path_for(p.features)], ["ingest", "extract"], work, record)
        return FeatureSet.read(p.features)

    def model_stage(self, name: str, keys: dict, depends_on: list[str], fit, more_inputs: list[Path] = ()) -> ModelResult:
        """Run ``fit() -> ModelResult`` (which writes ``models/<name>/``) unless that folder is current."""
        mdir = self.paths.models / name
        outputs = [mdir / f for f in ModelResult.FILES] + [mdir / "model.json", mdir]
        self.stage(f"model-{name}", keys, self.read_files(depends_on) + list(more_inputs), outputs, depends_on, fit)
        return ModelResult.read(mdir, name)

    def read_files(self, reads: list[str]) -> list[Path]:
        """The files whose digests a stage that reads the stages ``reads`` holds: the labels and folds, the
        features and the EmbeddingStore only when it reads them (a CNN is not fitted again for [features])."""
        p = self.paths
        return [p.lesions, p.folds] + ([p.features] if "features" in reads else []) + (
            [p.embeddings] if "extract" in reads and p.embeddings.exists() else [])

    def _model_keys(self, *labels: str) -> dict:
        return self.keys(*(f"models.{label}" for label in labels), "data.task", "data.target")

    def model(self, m: ModelConfig, table: LesionTable, features, task: TaskSpec, plan: FoldPlan, store=None) -> ModelResult:
        """Cross-validate one ``[[models]]`` entry through its kind in the registry."""
        kind = model_kind(m.kind)
        inputs = FitInputs(task, plan, m, self.paths.models, features=features, table=table, store=store, executor=self.jobs)
        return self.model_stage(m.label, self._model_keys(m.label) | self.keys(*kind.config_keys), list(kind.reads),
                                 lambda: kind.cross_validate(inputs))

    def feature_group_models(self, table: LesionTable, features, task: TaskSpec, plan: FoldPlan, store=None) -> list[ModelResult]:
        """Each booster again with the feature group each giver gives (the CNN's, the linear probe's
        scores, ISIC 2024 style), leak-free through the giver's nested fits (:class:`~dermstack.registry.FeatureGroup`)."""
        names, outs, p = self.cfg.feature_group_models(), [], self.paths
        for giver in (g for g in self.cfg.group_givers() if any(n.endswith(f"+{g.label}") for n in names)):
            mine = [n for n in names if n.endswith(f"+{giver.label}")]
            if left_out := [b for b in self.cfg.boosters() if f"{b}+{giver.label}" not in mine]:
                log.info("the %s feature for %s only: %s not trained again ([ensemble] cnn_feature)", giver.label, mine, left_out)
            kind = model_kind(giver.kind)
            group, gdir = kind.feature_group, p.models / giver.label
            self.stage(f"nested-{giver.label}", self._model_keys(giver.label) | self.keys(*kind.config_keys), self.read_files(kind.reads),
                        group.files(gdir), list(kind.reads),
                        lambda giver=giver, group=group: group.fit(FitInputs(task, plan, giver, p.models, features=features,
                                                                             table=table, store=store)))
            outs += [self.model_stage(
                f"{b.label}+{giver.label}", self._model_keys(b.label, giver.label) | self.keys("ensemble.cnn_feature"),
                ["ingest", "folds", "features", f"nested-{giver.label}"],
                lambda b=b, giver=giver, group=group, gdir=gdir: fit_with_group(b, giver.label, group.name, group.fold_features(
                    FitInputs(task, plan, giver, p.models, features=features, table=table), gdir), task, plan, p.models, table))
                for b in self.cfg.models if f"{b.label}+{giver.label}" in mine]
        return outs

    def expected_models(self) -> list[str]:
        """Every model folder this config makes (base, stacked, ensemble)."""
        names = self.model_names()
        method = self.ensemble_method(len(names))
        if method == "auto":
            return names + auto_candidates() + ["calibrated"]
        return names + ([method] if method != "none" else []) + ["calibrated"]

    def model_names(self) -> list[str]:
        """The base and stacked models this config trains."""
        return [m.label for m in self.cfg.models] + self.cfg.feature_group_models()

    def ensemble_method(self, n_models: int) -> str:
        """The configured method, resolved: "none" (the first model is the final one) with one model."""
        chosen = len(self.cfg.ensemble.models) if self.cfg.ensemble.models else n_models
        return "none" if chosen < 2 else self.cfg.ensemble.method

    def prune_models(self) -> None:
        """Remove the model folders this config does not make, and the ensemble choice when it names the method."""
        from dermstack.ensembles.select import CHOICE_FILE

        auto = self.ensemble_method(len(self.model_names())) == "auto"
        prune_model_folders(self.paths, set(self.expected_models()), {} if auto else {"ensemble-auto": self.paths.models / CHOICE_FILE})

    def makes_model(self) -> Callable[[str], bool]:
        """Whether this config makes a model folder of that name; without ``[[models]]`` (the default set
        is resolved after ingest), whether some data's default set could."""
        return set(self.expected_models()).__contains__ if self.cfg.models else could_be_default

    def ensemble(self, outs: list[ModelResult], task: TaskSpec, plan: FoldPlan) -> ModelResult:
        """The run's final prediction: the only model, or an ensemble of them saved like any other model."""
        chosen = [o for o in outs if not self.cfg.ensemble.models or o.name in self.cfg.ensemble.models]
        method = self.ensemble_method(len(outs))
        if method == "none":
            return chosen[0]
        keys, needs = self.keys("ensemble", "data.task", "data.target"), [f"model-{o.name}" for o in chosen] + ["folds"]
        if method == "auto":
            from dermstack.ensembles.select import CHOICE_FILE, select_ensemble

            models = self.paths.models
            self.stage("ensemble-auto", keys, [], [models / CHOICE_FILE] + [models / c / "model.json" for c in auto_candidates()]
                        + [models / c for c in auto_candidates()],
                        needs, lambda: select_ensemble(chosen, task, plan, models))
            self.ensemble_choice = read_json(models / CHOICE_FILE, "ensemble choice")
            name = self.ensemble_choice["chosen"]
            return next((o for o in chosen if o.name == name), None) or ModelResult.read(models / name, name)

        fit = ensemble_methods()[method].fit
        return self.model_stage(method, keys, needs, lambda: fit(chosen, task, plan, out_dir=self.paths.models))

    def calibrate(self, final: ModelResult, task: TaskSpec, plan: FoldPlan) -> ModelResult:
        """The final model's probabilities calibrated on its OOF scores (dermstack.calibration)."""
        from dermstack.calibration import calibrated_model

        # the final model's scores are inputs: another [ensemble] method on the same run directory makes
        # another final model, and a calibrator of the previous one would be stale
        scored = [self.paths.models / final.name / f for f in ("oof.parquet", "test.parquet")]
        return self.model_stage("calibrated", self.keys("data.task", "data.target"),
                                 [f"model-{final.name}", "ensemble-auto", "folds"],
                                 lambda: calibrated_model(final, task, plan, self.paths.models), scored)

    # -- outputs --------------------------------------------------------------
    def repeat(self, table: LesionTable, store, features) -> list[dict]:
        """The metrics of ``[cv] repeats`` child runs (none here; :class:`dermstack.run.Run` makes them)."""
        return []

    def execute(self) -> dict:
        t0 = time.perf_counter()
        p = self.paths
        from dermstack.boosting.registry import probe_models

        probe_models(self.cfg.models, self.cfg.data.task)  # before anything is read or written
        # before ingest: an unreachable scheduler, or one without workers for [cv] dask_wait, is refused here
        self.jobs = connect_jobs(self.cfg.cv.dask_address, worker_wait=self.cfg.cv.dask_wait)
        with claimed_run_dir(p.root), self.jobs, RunLock(p.root):
            # every refusal of a model folder before the first stage invalidates the finished run's outputs
            check_model_folders(p, self.makes_model())
            table = self.ingest()
            self.check_data(table)  # again: the ingest stage was skipped, or a synthesised dataset was read
            task = TaskSpec.from_table(table, self.cfg.data.task, self.cfg.data.target, self.source)
            from dermstack.features.build import data_profile  # each kind's default rule is logged (config.default_models)
            if filled := self.cfg.resolve(data_profile(table, self.cfg, len(task.image_ids))):
                self.flat = flat_config(self.cfg.to_dict())
                log.info("resolved for %d training rows: [[models]] %s, [ensemble] score_features %s (%s were unset)",
                         len(task.image_ids), [m.label for m in self.cfg.models], self.cfg.ensemble.score_features, filled)
            if not (p.config.exists() and _previous_config(p.config) == self.cfg.to_dict()):
                invalidate(p.root, "config")  # a changed config: the old final outputs are not its outputs
            write_text(p.config, self.cfg.to_toml())  # as run: with the models it resolved to
            write_text(p.versions, json.dumps(versions(), indent=2))
            plan = self.folds(table)
            store = self.extract(table)
            features = self.features(table, store)
            from dermstack.data.audit import audit_run_folds

            dataset = "synthetic-isic2024" if self.cfg.data.format == "synthetic-isic2024" else table.meta.dataset
            self.audit = audit_run_folds(table, plan.folds, store, dataset)
            self.prune_models()
            outs = [self.model(m, table, features, task, plan, store) for m in self.cfg.models]
            outs += self.feature_group_models(table, features, task, plan, store)
            final = self.ensemble(outs, task, plan)
            calibrated = self.calibrate(final, task, plan)
            repeats = self.repeat(table, store, features)
            metrics = write_outputs(self, table, task, outs, final, calibrated, plan, repeats)
            finish(p.root, self.stages, final_model=final.name)
            if self.cfg.report.enabled:
                from dermstack.reports import run_report

                run_report(p.root, self.keys("report"), self.cfg.report.shap_sample, force=self.force)
        log.info("run finished in %.1f s: %s", time.perf_counter() - t0, p.root)
        return metrics


def fit_with_group(model: ModelConfig, source: str, group: str, fold_features, task: TaskSpec, plan: FoldPlan,
                   out_dir: Path | None = None, table: LesionTable | None = None) -> ModelResult:
    """``model`` again with the feature group ``group`` that the saved model ``source`` gives: named
    ``<model>+<source>``, cross-validated by its own kind, fold k trained, validated and scoring test
    rows on ``fold_features(k)`` (``needs`` names ``source``, whose saved model gives new rows the group)."""
    groups = None if model.features is None else list(model.features) + ([] if group in model.features else [group])
    named = dataclasses.replace(model, name=f"{model.label}+{source}", features=groups)
    # the fold feature sets are built here, not from the run directory's files: the fits run in this process
    inputs = FitInputs(task, plan, named, out_dir, features=fold_features(0), table=table, fold_features=fold_features,
                       needs={GROUP_SOURCE: source})
    return model_kind(model.kind).cross_validate(inputs)


def _previous_config(path: Path) -> dict | None:
    try:
        return RunConfig.from_toml(path).to_dict()
    except ConfigError:
        return None

