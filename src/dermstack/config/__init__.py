"""Run configuration: a typed schema (pydantic dataclasses) checked completely when it is read.

Every section is a pydantic dataclass with ``extra="forbid"`` and strict scalar types (the TOML
string ``"false"`` is not a bool, ``3.5`` and ``"five"`` are not ints; an int is a fine float), so a
config is rejected as a whole, before any stage runs or any file is written, with one
:class:`ConfigError` listing every problem as ``[section] key = value: why`` (and the closest known
name for a misspelt one). They stay real dataclasses: ``dataclasses.asdict``/``replace``/``fields``
work on them. Model kinds, their params schemas and the ensemble methods come from
:mod:`dermstack.registry`.

- :mod:`~dermstack.config.problems`: how problems are reported; the ``schema`` decorator.
- :mod:`~dermstack.config.types`: strict scalar types and vocabularies.
- :mod:`~dermstack.config.sections`: ``[data]``, ``[cv]``, ``[extract]``, ``[features]``, ``[ensemble]``, ``[clinical]``, ``[report]``.
- :mod:`~dermstack.config.modelconfig`: ``[[models]]`` and the default model set.
- :mod:`~dermstack.config.runconfig`: RunConfig and the checks across sections.
"""
from dermstack.config.modelconfig import ModelConfig, default_choices, default_models
from dermstack.config.problems import did_you_mean, schema, unknown
from dermstack.config.runconfig import RunConfig
from dermstack.config.sections import (
    ClinicalConfig,
    CVConfig,
    DataConfig,
    EnsembleConfig,
    ExtractConfig,
    ExtractSettings,
    FeaturesConfig,
    ReportConfig,
    SamplingConfig,
)
from dermstack.config.types import (
    DEVICES,
    FEATURE_GROUPS,
    MAX_REPEATS,
    MAX_SEED,
    PRECISIONS,
    SEGMENTATION_MODES,
    SYNTHETIC_FORMAT,
    TASKS,
    TTA_MODES,
)

__all__ = [
    "ClinicalConfig", "CVConfig", "DataConfig", "EnsembleConfig", "ExtractConfig", "ExtractSettings", "FeaturesConfig", "ModelConfig",
    "ReportConfig", "RunConfig", "SamplingConfig", "default_choices", "default_models", "did_you_mean", "schema", "unknown",
    "DEVICES", "FEATURE_GROUPS", "MAX_REPEATS", "MAX_SEED", "PRECISIONS", "SEGMENTATION_MODES", "SYNTHETIC_FORMAT", "TASKS", "TTA_MODES",
]
