"""The config sections other than ``[[models]]``: one pydantic dataclass each."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Interval, Le
from pydantic import AllowInfNan, Strict, model_validator

from dermstack.config.limits import Batch, Components, Folds, ImageSide, Lesions, Processes, SomeLesions, Threads
from dermstack.config.problems import problem, schema
from dermstack.config.types import (
    MAX_REPEATS,
    SEGMENTATION_MODES,
    SYNTHETIC_FORMAT,
    TASKS,
    TTA_MODES,
    AutoBool,
    Backbone,
    Bool,
    BoolOrNames,
    Device,
    Fraction,
    PosInt,
    Precision,
    SchedulerAddress,
    Seed,
    Str,
    one_of,
    reader_formats,
)
from dermstack.errors import ConfigError
from dermstack.registry import method_names
from dermstack.taskkind import TaskKind


# -- sections ---------------------------------------------------------------------------------------
@schema("[data]")
class DataConfig:
    """``[data]``: the dataset, in the layout it is published in, and what to predict."""

    #: the layout of ``path`` (docs: Data formats), or "synthetic-isic2024" to generate one
    format: one_of("dataset format", reader_formats) = SYNTHETIC_FORMAT
    #: the dataset folder as published (required unless the format is synthetic)
    path: Str | None = None
    #: binary (one target vs the rest), multiclass (one label per image) or multilabel
    task: one_of("task", TASKS) = TaskKind.BINARY
    #: binary: "malignant" or one diagnosis code vs the rest
    target: Str = "malignant"
    #: synthetic-isic2024 only: training lesions to generate
    lesions: Lesions = 20_000
    #: synthetic-isic2024 only: test lesions (no labels) to generate
    test_lesions: SomeLesions = 100
    #: synthetic-isic2024 only: the share of malignant lesions
    positive_rate: Fraction = 0.001
    #: synthetic-isic2024 only: the side of the generated JPEG crops, in pixels
    image_size: ImageSide = 64
    #: synthetic-isic2024 only: the generator's seed
    seed: Seed = 0
    #: make every row the reader skips, and every note it makes about the data, an error
    strict: Bool = False
    #: the metadata CSVs' text encoding when not UTF-8 (e.g. "cp1252"); unset: UTF-8, anything else an error
    encoding: Str | None = None
    #: metadata columns kept as data but never used as features: one the data the run will score lacks
    #: (HAM10000's own `localization` beside `anatom_site_general`, for evaluation on ISIC exports)
    not_features: list[Str] = field(default_factory=list)


@schema("[cv]")
class CVConfig:
    """``[cv]``: the one FoldPlan every model is cross-validated on (grouped by patient, stratified)."""

    #: folds of the patient-grouped, stratified split
    n_splits: Folds = 5
    #: the split's seed
    seed: Seed = 42
    #: the grouped CV N times, fold seeds seed, seed + 1, ...: every model refitted on each FoldPlan
    #: (RUN_DIR/repeats/<r>/), metrics.json ``repeats`` = mean and std of each model's primary metric
    repeats: Annotated[int, Strict(), Ge(1), Le(MAX_REPEATS)] = 1
    #: Dask scheduler address: each fold x seed job of every model is a task on that cluster, its
    #: workers reading the run directory (unset: $DERMSTACK_DASK_ADDRESS, else in this process)
    dask_address: SchedulerAddress | None = None
    #: seconds a Dask cluster without a worker is waited for (said at once), then an error naming the scheduler
    dask_wait: Annotated[float, Strict(), AllowInfNan(False), Interval(ge=0, le=86_400)] = 120.0
    #: a published split: CSV or parquet with `fold` keyed by image_id, lesion_id or patient_id
    #: (dermstack.data.folds.FoldPlan.from_file); n_splits and seed are then unused
    folds: Str | None = None
    #: a column whose every value (HAM10000 `dataset`, ISIC `attribution`: a site, a clinic) is kept in
    #: one fold as well as every patient (values a patient spans are merged); metrics.json
    #: ``held_out_groups`` gives each group's figures (dermstack.data.groups)
    group: Str | None = None
    #: one fold per held-out group of `group` (at most 20 groups, each with both classes when binary);
    #: n_splits and seed are then unused
    leave_one_group_out: Bool = False

    @model_validator(mode="after")
    def _fold_file(self):
        items = []
        if self.folds is not None and Path(self.folds).suffix.lower() not in (".csv", ".parquet"):
            items.append(("folds", self.folds, "a fold file is a .csv or .parquet file"))
        if self.folds is not None and self.repeats > 1:
            items.append(("repeats", self.repeats, "repeats draw new fold seeds; a fold file fixes the folds"))
        if self.leave_one_group_out and self.group is None:
            items.append(("leave_one_group_out", True, "needs [cv] group, the column whose groups are held out"))
        if self.leave_one_group_out and self.folds is not None:
            items.append(("leave_one_group_out", True, "a fold file fixes the folds; use one or the other"))
        if self.leave_one_group_out and self.repeats > 1:
            items.append(("repeats", self.repeats, "repeats draw new fold seeds; leave-one-group-out folds have none "
                          "(every repeat would be the same)"))
        if items:
            raise problem(items)
        return self


@schema("[extract]")
class ExtractSettings:
    """How to embed (``dermstack.extract``). ``image_size=None`` uses the model's default; ``weights``
    maps backbone -> local file. ``None`` for batch_size, workers, streams and threads means "what is
    fastest on the device" (dermstack.extract.settings.resolve_parallelism; benchmarks/extract_throughput.py)."""

    #: the side images are resized to, in pixels; unset: each backbone's own input size
    image_size: ImageSide | None = None
    #: images per forward pass (per stream); unset: 8 on CPU, 64 on a GPU
    batch_size: Batch | None = None
    #: DataLoader processes decoding images; unset: 0 on CPU (each stream decodes its own batches), else up to 8
    workers: Processes | None = None
    #: model replicas run side by side in threads, sharing the weights; unset: one per core up to 4 on CPU, 1 on a GPU
    streams: Threads | None = None
    #: torch threads per stream on CPU; unset: cores / streams
    threads: Threads | None = None
    #: auto (a GPU when there is one), cpu, cuda, cuda:N or mps
    device: Device = "auto"
    #: auto: bf16 on a CPU with native bf16 (else fp32), fp16 on a GPU (bf16 where CUDA supports it)
    precision: Precision = "auto"
    #: test-time flips averaged into each embedding
    tta: list[one_of("TTA mode", TTA_MODES)] = field(default_factory=list)
    #: backbone -> a local weights file (safetensors or a state dict) instead of the packaged or hub weights
    weights: dict[Str, Str] = field(default_factory=dict)
    #: retry images recorded as failed by an earlier run
    retry_failed: Bool = False

    @classmethod
    def from_config(cls, cfg: ExtractSettings) -> ExtractSettings:
        """The settings part of an ``[extract]`` section (an ExtractConfig)."""
        return cls(**{f.name: copy.copy(getattr(cfg, f.name)) for f in dataclasses.fields(cls)})


@schema("[extract]")
class ExtractConfig(ExtractSettings):
    """``[extract]``: the backbones to embed with, how (ExtractSettings), and the PCA the run joins."""

    #: timm backbones to embed every image with; [] is a metadata-only run
    backbones: list[Backbone] = field(default_factory=list)
    #: PCA components per backbone and view that the boosters get (the linear probe reads the full embeddings)
    pca_components: Components = 32


@schema("[features]")
class FeaturesConfig:
    """``[features]``: the feature groups the features stage builds (each model may pick among them)."""

    #: the dataset's own metadata columns (age, sex, site, ISIC 2024 TBP measurements ...)
    metadata: Bool = True
    #: engineered lesion features from the TBP measurements (ratios, contrasts, colour and shape indices)
    engineered: Bool = True
    #: each lesion relative to the patient's other lesions ("ugly duckling"); needs a real patient_id
    patient: Bool = True
    #: "auto": on when the dataset ships lesion masks (features.build.image_enabled)
    image: AutoBool = "auto"
    #: the PCA of each backbone's embeddings ([extract] backbones)
    embedding: Bool = True
    #: image features from the dataset's masks, from automatic segmentation, or auto (the mask when there is one)
    segmentation: one_of("segmentation", SEGMENTATION_MODES) = "auto"
    #: drop a metadata column whose missingness alone separates the classes (ROC-AUC of is-null)
    missingness_leak_auc: Annotated[float, Strict(), Interval(ge=0.5, le=1)] = 0.65
    #: processes computing the image features
    workers: Processes = 2


@schema("[[models]] sampling", frozen=True)
class SamplingConfig:
    """Per-fold resampling of a binary task's training part (:mod:`dermstack.boosting.sampling`):
    minority/majority ratios after over-sampling positives and under-sampling negatives; 0 turns a step off."""

    #: then negatives are under-sampled until positives/negatives reaches this, and so are the validation
    #: rows early stopping watches (every validation row is still scored); 0: keep every negative
    negative_ratio: Fraction = 0.01
    #: positives are first repeated until positives/negatives reaches this; 0: no over-sampling
    positive_oversample: Fraction = 0.003

    @classmethod
    def from_dict(cls, raw: dict | None, task: str) -> SamplingConfig | None:
        """``None`` for non-binary tasks (resampling is binary only) or when both steps are off."""
        raw = dict(raw or {})
        if not TaskKind(task).binary:
            if raw:
                raise ConfigError(f"[[models]] sampling is for binary tasks only; this task is {task}")
            return None
        cfg = cls(**raw)
        return cfg if (cfg.negative_ratio or cfg.positive_oversample) else None



@schema("[ensemble]")
class EnsembleConfig:
    """``[ensemble]``: how the models become the final model (docs: Configuration)."""

    #: auto: the best of the best member and each auto method by nested CV; none: the first model alone
    method: one_of("ensemble method", method_names) = "auto"
    #: the [[models]] names to ensemble; unset: every model
    models: list[Str] | None = None
    #: the [[models]] (by name) whose nested out-of-fold scores become a booster feature group (leak-free,
    #: via models fitted without each pair of folds): a "cnn" gives the ``cnn`` group, a "logistic" probe
    #: the ``probe`` group, a "knn" the ``knn`` group; each booster is trained again once per giver (named
    #: booster+giver, e.g. "lightgbm+logistic"). Unset: the CNN's, and the kNN's on binary tasks of 2,000 to
    #: 30,000 rows (the probe's is not a default: docs Results); [] none
    score_features: list[Str] | None = None
    #: which boosters are trained again with each score feature group: true every booster, false none,
    #: a list of booster [[models]] names only those (e.g. ["lightgbm", "xgboost"]: CatBoost once)
    cnn_feature: BoolOrNames = True


@schema("[clinical]")
class ClinicalConfig:
    """``[clinical]``: the operating points of metrics.json ``clinical`` (binary) and ``thresholds`` (one-vs-rest per class)."""

    #: each target sensitivity also gets a threshold whose sensitivity on new data reaches the target with
    #: probability >= 1 - delta (dermstack.clinical.guarantee); 0.05 matches the 95 % intervals beside it
    delta: Annotated[float, Strict(), AllowInfNan(False), Interval(gt=0, le=0.5)] = 0.05


@schema("[report]")
class ReportConfig:
    """``[report]``: the self-contained HTML report (``dermstack report`` writes it for a finished run)."""

    #: write RUN_DIR/report/index.html at the end of the run
    enabled: Bool = False
    #: training rows explained by SHAP (all positives, then fold-stratified negatives)
    shap_sample: PosInt = 2000

