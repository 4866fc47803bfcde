"""``[[models]]``: one entry per model, its ``kind`` and ``params`` checked against the kind's own
schema in the registry (:mod:`dermstack.registry`)."""
from __future__ import annotations

import logging
import math
from dataclasses import field
from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator

from dermstack.config.limits import CNNImageSide, Epochs
from dermstack.config.problems import problem, schema, validate
from dermstack.config.sections import SamplingConfig
from dermstack.config.types import FEATURE_GROUPS, Backbone, ModelName, Seeds, Str, one_of
from dermstack.dataprofile import DataProfile, DefaultChoice
from dermstack.registry import kind_names, model_kind, model_kinds, plugin_problems

log = logging.getLogger(__name__)
#: [[models]] keys that only some kinds read (``ModelKind.model_keys``)
KIND_KEYS = ("backbone", "epochs", "image_size")
#: the kind of a ``[[models]]`` entry that names none
DEFAULT_KIND = "lightgbm"


def _left_out() -> str:
    """What an unknown kind's message adds: the installed plugins that could not be loaded, and why."""
    return "".join(f"; {plugin} was left out: {why}" for plugin, why in plugin_problems().items())


@schema("[[models]]")
class ModelConfig:
    """``[[models]]``: one entry per model; without any, the default set for the data's size."""

    #: a registered model kind (`dermstack kinds`)
    kind: one_of("model kind", kind_names, note=_left_out) = DEFAULT_KIND
    #: the model's folder name under models/ and its name in metrics.json; unset: the kind
    name: ModelName | None = None
    #: one fit per seed and fold; the seeds' scores are averaged
    seeds: Seeds = field(default_factory=lambda: [0])
    #: the kind's own parameters (docs: Model kinds); boosters also take every parameter of their library
    params: dict[Str, Any] = field(default_factory=dict)
    #: the feature groups this model reads; unset: every group the features stage built
    features: list[one_of("feature group", FEATURE_GROUPS)] | None = None
    #: binary tasks: per-fold resampling of the training part ([[models]] sampling below)
    sampling: dict[Str, Any] = field(default_factory=dict)
    #: image kinds only (cnn): the timm backbone to fine-tune
    backbone: Backbone | None = None
    #: image kinds only (cnn): training epochs
    epochs: Epochs | None = None
    #: image kinds only (cnn): the side images are resized to, in pixels
    image_size: CNNImageSide | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind

    @field_validator("params")
    @classmethod
    def _params_known(cls, params: dict, info: ValidationInfo) -> dict:
        items = param_problems(info.data["kind"], params) if "kind" in info.data else []  # (a bad kind is reported)
        items += [(k, v, "must be a finite number") for k, v in params.items()
                  if isinstance(v, float) and not math.isfinite(v) and k not in {i[0] for i in items}]
        if items:
            raise problem(items)
        return params

    @field_validator("sampling")
    @classmethod
    def _sampling_known(cls, sampling: dict) -> dict:
        items = validate(SamplingConfig, sampling)[1]
        if items:
            raise problem(items)
        return sampling

    @model_validator(mode="after")
    def _kind_keys(self):
        kind = model_kind(self.kind)
        takers = " or ".join(f'kind = "{k.name}"' for k in model_kinds().values() if k.model_keys)
        items = [(k, getattr(self, k), f"only for {takers}") for k in KIND_KEYS
                 if getattr(self, k) is not None and k not in kind.model_keys]
        if items:
            raise problem(items)
        return self


def param_problems(kind: str, params: dict) -> list[tuple[str, Any, str]]:
    """``params`` checked by the kind's own hook, or against its params schema."""
    k = model_kind(kind)
    return k.check(params) if k.check else validate(k.params, params)[1]


def default_choices(data: DataProfile | int) -> dict[str, DefaultChoice]:
    """Each registered kind's answer to its ``default`` for ``data`` (a :class:`DataProfile`, or a number of
    training rows: a table without images), with the rule that gave it where the kind says one."""
    profile = data if isinstance(data, DataProfile) else DataProfile(int(data))
    out = {}
    for k in model_kinds().values():
        choice = k.default(profile)
        out[k.name] = choice if isinstance(choice, DefaultChoice) else DefaultChoice(bool(choice))
    return out


def default_models(data: DataProfile | int) -> list[ModelConfig]:
    """What a config without ``[[models]]`` trains: each registered kind whose ``default`` accepts ``data``
    (:func:`default_choices`): the boosters always, the linear probe on small data, the CNN on image-only
    data where its time is affordable on the device (:func:`dermstack.cnn.kind.cnn_default`), in registry
    order; the ensemble (``method = "auto"``) then keeps whichever combination scores best by nested CV.

    >>> [m.kind for m in default_models(500)]
    ['lightgbm', 'xgboost', 'catboost', 'logistic']
    """
    choices = default_choices(data)
    for name, choice in choices.items():
        if choice.why:  # the rule that fired, e.g. the CNN's, with what it costs
            log.info("%s: %s", name, choice.why)
    return [ModelConfig(kind=name) for name, choice in choices.items() if choice]
