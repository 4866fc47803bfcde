"""Run configuration: a typed schema (pydantic dataclasses) checked completely when it is read.

Every section is a pydantic dataclass with ``extra="forbid"`` and strict scalar types (the TOML
string ``"false"`` is not a bool, ``3.5`` and ``"five"`` are not ints; an int is a fine float), so a
config is rejected as a whole, before any stage runs or any file is written, with one
:class:`ConfigError` listing every problem as ``[section] key = value: why`` (and the closest known
name for a misspelt one). They stay real dataclasses: ``dataclasses.asdict``/``replace``/``fields``
work on them. Vocabularies that need a heavy library (readers, timm backbones, booster parameter
names) are imported lazily, only when a config names one, so importing this module stays light.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Interval, Lt, MinLen
from pydantic import (
    AfterValidator, BeforeValidator, ConfigDict, Strict, ValidationError, ValidationInfo, field_validator, model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from dermstack.errors import ConfigError
from dermstack.taskkind import TaskKind

TASKS = TaskKind.KINDS
BOOSTER_KINDS = ("lightgbm", "xgboost", "catboost")
#: ``[[models]] kind``: the boosting libraries, then the fine-tuned CNN
MODEL_KINDS = (*BOOSTER_KINDS, "logistic", "cnn")
#: ``[ensemble] method``: auto (one model: itself; several: mean) | none | mean | stack | rank
ENSEMBLE_METHODS = ("auto", "none", "mean", "greedy", "stack", "rank")
#: the methods with which every booster is also trained on the first CNN's score ([ensemble] cnn_feature)
CNN_FEATURE_METHODS = ("auto", "greedy", "stack", "rank")
#: feature groups a FeatureSet column belongs to (``[[models]] features`` picks among them)
FEATURE_GROUPS = ("metadata", "engineered", "patient", "image", "embedding", "cnn")
#: ``[features] segmentation``: auto (the given mask, else automatic) | mask | automatic
SEGMENTATION_MODES = ("auto", "mask", "automatic")
#: Booster parameters dermstack handles itself; every other key goes to the library unchanged.
GENERIC_PARAMS = ("n_estimators", "early_stopping_rounds", "early_stopping_metric", "class_weight", "device", "threads")
#: test-time augmentations an extraction may average over
TTA_MODES = ("hflip", "vflip")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
SYNTHETIC_FORMAT = "synthetic-isic2024"

# -- problems and how they are reported ------------------------------------------------------------
_PROBLEM = "dermstack_config"
_NO_VALUE = object()


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``' (did you mean "x"?)'`` with difflib's closest known name, or ``''``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown(what: str, name: object, known: Iterable[str]) -> str:
    """``unknown <what> (did you mean "x"?); known: ...`` (the list only when it is short)."""
    known = list(known)
    listed = f"; known: {', '.join(known)}" if len(known) <= 20 else ""
    return f"unknown {what}{did_you_mean(name, known)}{listed}"


def _problem(items: list[tuple[str, Any, str]]) -> PydanticCustomError:
    """A validation error carrying (key below the current location, value, why) items."""
    return PydanticCustomError(_PROBLEM, "{why}", {"why": "; ".join(w for _, _, w in items), "items": items})


def _fail(why: str) -> PydanticCustomError:
    return _problem([("", _NO_VALUE, why)])


def _join(*parts: object) -> str:
    out = ""
    for p in parts:
        if p == "" or p is None:
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def problems_of(err: ValidationError, cls: type) -> list[tuple[str, Any, str]]:
    """(key, value, why) for each error of validating a dict against dataclass ``cls``."""
    known = [f.name for f in dataclasses.fields(cls)]
    out = []
    for e in err.errors(include_url=False):
        loc, ctx = e["loc"], e.get("ctx") or {}
        if e["type"] == _PROBLEM:
            out += [(_join(*loc, key), e["input"] if value is _NO_VALUE and not key else value, why)
                    for key, value, why in ctx["items"]]
        elif e["type"] == "unexpected_keyword_argument" and len(loc) == 1:
            out.append((_join(*loc), e["input"], unknown("key", loc[0], known)))
        elif e["type"] in ("dataclass_type", "dataclass_exact_type") and not loc:
            out.append(("", _NO_VALUE, f"expected a table, got {type(e['input']).__name__} {_show(e['input'])}"))
        else:
            out.append((_join(*loc), e["input"], e["msg"]))
    return out


def _show(value: Any) -> str:
    """A value as it reads in TOML (strings quoted, true/false)."""
    return json.dumps(value, default=str)


def _lines(where: str, items: list[tuple[str, Any, str]]) -> list[str]:
    return [f"{where}{' ' + key if key else ''}{'' if value is _NO_VALUE else ' = ' + _show(value)}: {why}"
            for key, value, why in items]


def _validate(cls: type, value: Any) -> tuple[Any, list[tuple[str, Any, str]]]:
    """``cls`` built from the dict ``value``, or None and its problems."""
    try:
        return cls.__pydantic_validator__.validate_python(value), []
    except ValidationError as e:
        return None, problems_of(e, cls)


_SCHEMA = ConfigDict(extra="forbid")


def schema(where: str, frozen: bool = False):
    """Make ``cls`` a pydantic dataclass whose constructor raises a ConfigError (not a pydantic
    traceback) that reads ``{where} key = value: why``, as a config file's problems do."""
    def wrap(cls):
        cls = dataclass(cls, config=_SCHEMA, frozen=frozen)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise ConfigError("; ".join(_lines(where, problems_of(e, type(self))))) from None

        cls.__init__ = __init__
        cls.WHERE = where
        return cls
    return wrap


# -- strict scalar types and vocabularies ---------------------------------------------------------
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PosInt = Annotated[int, Strict(), Ge(1)]
NonNegInt = Annotated[int, Strict(), Ge(0)]
Fraction = Annotated[float, Strict(), Interval(ge=0, le=1)]


def one_of(what: str, known: tuple[str, ...] | Callable[[], Iterable[str]], base: Callable[[str], str] = str) -> Any:
    """A strict str that must be in ``known`` (a tuple, or a function returning the names: a lazy registry)."""
    def check(value: str) -> str:
        options = list(known() if callable(known) else known)
        if base(value) not in options:
            raise _fail(unknown(what, value, options))
        return value
    return Annotated[str, Strict(), AfterValidator(check)]


def _auto_bool(value: Any) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    raise _fail('expected true, false or "auto"')


#: true, false or "auto" (decided from the data)
AutoBool = Annotated[Any, AfterValidator(_auto_bool)]


def _reader_formats() -> list[str]:
    from dermstack.data.readers import READERS

    return [*READERS, SYNTHETIC_FORMAT]


def _known_backbone(name: str) -> str:
    from dermstack.extract.registry import check_name

    try:
        check_name(name)
    except ConfigError as e:
        raise _fail(str(e)) from None
    return name


Backbone = Annotated[str, Strict(), AfterValidator(_known_backbone)]
Device = one_of("device (cuda:N allowed)", DEVICES, base=lambda d: d.split(":")[0])
Precision = one_of("precision", PRECISIONS)


def _directory_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise _fail("a model name is a directory name: letters, digits and _ . + - only")
    return value


ModelName = Annotated[str, Strict(), AfterValidator(_directory_name)]


def _scheduler_address(value: str) -> str:
    if not re.fullmatch(r"((tcp|tls|ucx|ws|wss)://)?[^\s/]+:\d+", value):
        raise _fail("a Dask scheduler address looks like tcp://host:8786")
    return value


SchedulerAddress = Annotated[str, Strict(), AfterValidator(_scheduler_address)]


def _seed_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _fail(f"seeds is a list: use seeds = [{value}]")
    return value


Seeds = Annotated[list[Int], BeforeValidator(_seed_list), MinLen(1)]


# -- sections ---------------------------------------------------------------------------------------
@schema("[data]")
class DataConfig:
    format: one_of("dataset format", _reader_formats) = SYNTHETIC_FORMAT
    path: Str | None = None
    task: one_of("task", TASKS) = TaskKind.BINARY
    #: binary: "malignant" or one diagnosis code vs the rest
    target: Str = "malignant"
    #: synthetic-isic2024 only
    lesions: PosInt = 20_000
    test_lesions: NonNegInt = 100
    positive_rate: Fraction = 0.001
    image_size: Annotated[int, Strict(), Ge(8)] = 64
    seed: Int = 0
    strict: Bool = False
    #: the metadata CSVs' text encoding when not UTF-8 (e.g. "cp1252"); unset: UTF-8, anything else an error
    encoding: Str | None = None


@schema("[cv]")
class CVConfig:
    n_splits: Annotated[int, Strict(), Ge(2)] = 5
    seed: Int = 42
    #: the grouped CV N times, fold seeds seed, seed + 1, ...: every model refitted on each FoldPlan
    #: (RUN_DIR/repeats/<r>/), metrics.json ``repeats`` = mean and std of each model's primary metric
    repeats: PosInt = 1
    #: Dask scheduler address: each fold x seed job of every model is a task on that cluster, its
    #: workers reading the run directory (default: $DERMSTACK_DASK_ADDRESS, else in this process)
    dask_address: SchedulerAddress | None = None
    #: a published split: CSV or parquet with `fold` keyed by image_id, lesion_id or patient_id
    #: (dermstack.data.folds.FoldPlan.from_file); n_splits and seed are then unused
    folds: Str | None = None

    @model_validator(mode="after")
    def _fold_file(self):
        items = []
        if self.folds is not None and Path(self.folds).suffix.lower() not in (".csv", ".parquet"):
            items.append(("folds", self.folds, "a fold file is a .csv or .parquet file"))
        if self.folds is not None and self.repeats > 1:
            items.append(("repeats", self.repeats, "repeats draw new fold seeds; a fold file fixes the folds"))
        if items:
            raise _problem(items)
        return self


@schema("[extract]")
class ExtractSettings:
    """How to embed (``dermstack.extract``). ``image_size=None`` uses the model's default; ``weights``
    maps backbone -> local file. ``None`` for batch_size, workers, streams and threads means "what is
    fastest on the device" (dermstack.extract.settings.resolve_parallelism; benchmarks/extract_throughput.py)."""

    image_size: Annotated[int, Strict(), Ge(8)] | None = None
    #: images per forward pass (per stream); None: 8 on CPU, 64 on a GPU
    batch_size: PosInt | None = None
    #: DataLoader processes decoding images; None: 0 on CPU (each stream decodes its own batches), else up to 8
    workers: NonNegInt | None = None
    #: model replicas run side by side in threads, sharing the weights; None: one per core up to 4 on CPU, 1 on a GPU
    streams: PosInt | None = None
    #: torch threads per stream on CPU; None: cores / streams
    threads: PosInt | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: list[one_of("TTA mode", TTA_MODES)] = field(default_factory=list)
    weights: dict[Str, Str] = field(default_factory=dict)
    #: retry images recorded as failed by an earlier run
    retry_failed: Bool = False

    @classmethod
    def from_config(cls, cfg: "ExtractSettings") -> "ExtractSettings":
        """The settings part of an ``[extract]`` section (an ExtractConfig)."""
        return cls(**{f.name: copy.copy(getattr(cfg, f.name)) for f in dataclasses.fields(cls)})


@schema("[extract]")
class ExtractConfig(ExtractSettings):
    """``[extract]``: the backbones to embed with, how (ExtractSettings), and the PCA the run joins."""

    backbones: list[Backbone] = field(default_factory=list)
    pca_components: PosInt = 32


@schema("[features]")
class FeaturesConfig:
    metadata: Bool = True
    engineered: Bool = True
    patient: Bool = True
    #: "auto": on when the dataset ships lesion masks (features.build.image_enabled)
    image: AutoBool = "auto"
    embedding: Bool = True
    segmentation: one_of("segmentation", SEGMENTATION_MODES) = "auto"
    #: drop a metadata column whose missingness alone separates the classes (ROC-AUC of is-null)
    missingness_leak_auc: Annotated[float, Strict(), Interval(ge=0.5, le=1)] = 0.65
    workers: NonNegInt = 2


@schema("[[models]] sampling", frozen=True)
class SamplingConfig:
    """Per-fold resampling of a binary task's training part (:mod:`dermstack.boosting.sampling`):
    minority/majority ratios after over-sampling positives and under-sampling negatives; 0 turns a step off."""

    negative_ratio: Fraction = 0.01
    positive_oversample: Fraction = 0.003

    @classmethod
    def from_dict(cls, raw: dict | None, task: str) -> "SamplingConfig | None":
        """``None`` for non-binary tasks (resampling is binary only) or when both steps are off."""
        raw = dict(raw or {})
        if not TaskKind(task).binary:
            if raw:
                raise ConfigError(f"[[models]] sampling is for binary tasks only; this task is {task}")
            return None
        cfg = cls(**raw)
        return cfg if (cfg.negative_ratio or cfg.positive_oversample) else None


CNNImageSize = Annotated[int, Strict(), Ge(16)]


@schema("[[models]] params")
class CNNParams:
    """How a CNN is fine-tuned (``[[models]] kind = "cnn"`` params; ``dermstack.ensembles.cnnconfig.CNNConfig``
    adds the device defaults). ``balance``: sampling weight of a row is (its class's count)^-balance,
    so 1 draws every class equally often and 0 keeps the data's frequencies. ``samples_per_epoch``
    caps the rows drawn per epoch (None: as many as training rows). ``freeze_fraction``: the first
    share of the backbone's parameter tensors (stem, early blocks) stays fixed."""

    backbone: Backbone = "efficientnet_lite0"
    image_size: CNNImageSize = 64
    epochs: PosInt = 3
    batch_size: PosInt = 64
    lr: Annotated[float, Strict(), Interval(gt=0)] = 1e-3
    weight_decay: Annotated[float, Strict(), Ge(0)] = 0.01
    warmup: Fraction = 0.1
    samples_per_epoch: PosInt | None = 2048
    balance: Annotated[float, Strict(), Ge(0)] = 0.5
    patience: NonNegInt = 2
    freeze_fraction: Annotated[float, Strict(), Ge(0), Lt(1)] = 0.25
    pretrained: Bool = True
    weights: Str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: Bool = True
    workers: NonNegInt = 0
    #: early-stopping metric (a metric of the task; default its primary metric)
    stop_metric: Str | None = None


@schema("[[models]]")
class ModelConfig:
    kind: one_of("model kind", MODEL_KINDS) = "lightgbm"
    name: ModelName | None = None
    seeds: Seeds = field(default_factory=lambda: [0])
    params: dict[Str, Any] = field(default_factory=dict)
    features: list[one_of("feature group", FEATURE_GROUPS)] | None = None
    sampling: dict[Str, Any] = field(default_factory=dict)
    #: cnn only
    backbone: Backbone | None = None
    epochs: PosInt | None = None
    image_size: CNNImageSize | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind

    @field_validator("params")
    @classmethod
    def _params_known(cls, params: dict, info: ValidationInfo) -> dict:
        items = _param_problems(info.data["kind"], params) if "kind" in info.data else []  # (a bad kind is reported)
        if items:
            raise _problem(items)
        return params

    @field_validator("sampling")
    @classmethod
    def _sampling_known(cls, sampling: dict) -> dict:
        items = _validate(SamplingConfig, sampling)[1]
        if items:
            raise _problem(items)
        return sampling

    @model_validator(mode="after")
    def _cnn_settings(self):
        if self.kind != "cnn":
            items = [(k, getattr(self, k), 'only for kind = "cnn"') for k in ("backbone", "epochs", "image_size")
                     if getattr(self, k) is not None]
            if items:
                raise _problem(items)
        return self


def _param_problems(kind: str, params: dict) -> list[tuple[str, Any, str]]:
    """``params`` checked against the CNN schema, or against the names the booster library knows."""
    if kind == "cnn":
        return _validate(CNNParams, params)[1]
    if kind == "logistic":  # the probe's own schema (lazily: it lives with the probe)
        from dermstack.linear.probe import LinearParams

        try:
            LinearParams.from_dict(params)
        except ConfigError as e:
            return [("", params, str(e).split(": ", 1)[-1])]
        return []
    names = BOOSTER_PARAMS.get(kind)
    if not params or names is None:
        return []
    known = {*names(), *GENERIC_PARAMS}
    return [(p, v, unknown(f"{kind} parameter", p, sorted(known)))
            for p, v in params.items() if p not in known]


@functools.cache
def _lightgbm_params() -> frozenset[str]:
    """Every LightGBM parameter and alias, from LightGBM itself (LGBM_DumpParamAliases)."""
    from lightgbm.basic import _ConfigAliases

    aliases = _ConfigAliases._get_all_param_aliases()
    return frozenset(aliases) | {a for names in aliases.values() for a in names}


#: XGBoost boosters whose saved configuration lists the parameters of each booster, tree method and objective
_XGB_PROBES = (
    {"objective": "binary:logistic"}, {"objective": "multi:softprob", "num_class": 2}, {"booster": "dart"},
    {"booster": "gblinear"}, {"booster": "gblinear", "updater": "coord_descent"}, {"tree_method": "approx"},
    {"tree_method": "exact"}, {"objective": "reg:tweedie"}, {"objective": "reg:pseudohubererror"},
    {"objective": "reg:quantileerror", "quantile_alpha": 0.5}, {"objective": "rank:ndcg"}, {"objective": "survival:aft"},
)


@functools.cache
def _xgboost_params() -> frozenset[str]:
    """XGBoost's parameter names, from XGBoost itself: every leaf key of ``Booster.save_config()`` (which
    lists each parameter, aliases such as learning_rate/reg_lambda included) of one-round boosters of
    each kind and objective, plus those the sklearn wrapper passes to ``xgboost.train``."""
    import numpy as np
    import xgboost as xgb

    names = set(xgb.XGBModel().get_xgb_params())
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.0, 1.0])
    for probe in _XGB_PROBES:
        data = xgb.DMatrix(X, label=y)
        if probe.get("objective") == "rank:ndcg":
            data.set_group([2])
        if probe.get("objective") == "survival:aft":
            data.set_float_info("label_lower_bound", y + 1)
            data.set_float_info("label_upper_bound", y + 2)
        _leaf_keys(json.loads(xgb.train({**probe, "nthread": 1}, data, 1).save_config()), names)
    return frozenset(names - {"name"})  # "name" is the objective's / updater's own name, not a parameter


def _leaf_keys(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _leaf_keys(v, out) if isinstance(v, (dict, list)) else out.add(k)
    elif isinstance(node, list):
        for v in node:
            _leaf_keys(v, out)


@functools.cache
def _catboost_params() -> frozenset[str]:
    """The keyword arguments of ``CatBoostClassifier`` (every CatBoost parameter and alias)."""
    import inspect

    from catboost import CatBoostClassifier

    return frozenset(inspect.signature(CatBoostClassifier.__init__).parameters) - {"self"}


#: booster kind -> the parameter names its library accepts (a kind without an entry is not checked)
BOOSTER_PARAMS: dict[str, Callable[[], frozenset[str]]] = {
    "lightgbm": _lightgbm_params, "xgboost": _xgboost_params, "catboost": _catboost_params,
}


@schema("[ensemble]")
class EnsembleConfig:
    method: one_of("ensemble method", ENSEMBLE_METHODS) = "auto"
    models: list[Str] | None = None
    #: with a CNN among the models: also train every booster with the CNN score as a feature group
    #: (leak-free, via CNNs trained without each pair of folds) and add those as base models
    cnn_feature: Bool = True


@schema("[report]")
class ReportConfig:
    enabled: Bool = False
    shap_sample: PosInt = 2000


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "cv": CVConfig, "extract": ExtractConfig, "features": FeaturesConfig,
    "models": ModelConfig, "ensemble": EnsembleConfig, "report": ReportConfig,
}


#: training rows up to which the default model set includes the linear probe (cheap and strong on few rows)
LINEAR_PROBE_MAX_ROWS = 12_000


def default_models(n_train: int) -> list[ModelConfig]:
    """What a config without ``[[models]]`` trains: LightGBM, XGBoost and CatBoost (their defaults
    scale with the data, dermstack.boosting.defaults) and, up to :data:`LINEAR_PROBE_MAX_ROWS`
    training rows, a linear probe on the full embeddings; the ensemble (``method = "auto"``) then
    keeps whichever combination scores best by nested CV."""
    models = [ModelConfig(kind=k) for k in BOOSTER_KINDS]
    if n_train <= LINEAR_PROBE_MAX_ROWS and "logistic" in MODEL_KINDS:
        models.append(ModelConfig(kind="logistic"))
    return models


@schema("config")
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    #: empty: the default set for the data's size (:func:`default_models`), resolved after ingest
    models: list[ModelConfig] = field(default_factory=list)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        """Validate every section of ``raw`` (a parsed TOML document); one ConfigError lists every problem."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        for name, value in raw.items():
            kind = _SECTIONS.get(name)
            if kind is None:
                problems.append(f"[{name}]: {unknown('section', name, _SECTIONS)}")
            elif name != "models":
                sections[name], items = _validate(kind, value)
                problems += _lines(f"[{name}]", items)
            elif not isinstance(value, list):
                problems.append("models: must be an array of tables ([[models]]), got " + _show(value))
            else:
                sections[name] = []
                for i, entry in enumerate(value):
                    model, items = _validate(ModelConfig, entry)
                    sections[name].append(model)
                    label = (entry.get("name") or entry.get("kind", "lightgbm")) if isinstance(entry, dict) else "?"
                    problems += _lines(f"[[models]] #{i + 1} ({label})", items)
        if not problems:
            cfg = cls(**sections)
            problems = cfg.problems()
        if problems:
            raise ConfigError(_summary(source, problems))
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(raw, str(path))

    def problems(self) -> list[str]:
        """What is wrong across sections (each section is valid on its own)."""
        out = []
        where = {id(m): f"[[models]] #{i + 1} ({m.label})" for i, m in enumerate(self.models)}
        names = [m.label for m in self.models or default_models(0)]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            out.append(f'[[models]] name = "{dup}": two [[models]] share this name; give each a distinct `name`')
        for m in self.models:
            if m.sampling and not TaskKind(self.data.task).binary:
                out += _lines(where[id(m)], [("sampling", m.sampling, f"resampling is for binary tasks only; this task is {self.data.task}")])
        out += self._stop_metric_problems(where)
        ens = self.ensemble
        available = names + self.cnn_feature_models()
        for n in ens.models or []:
            if n not in available:
                out.append(f'[ensemble] models = {_show(ens.models)}: {unknown("model", n, available)} (no [[models]] has that name)')
        chosen = [n for n in available if not ens.models or n in ens.models]
        if ens.method in ("greedy", "stack", "rank") and len(chosen) < 2:
            out.append(f'[ensemble] method = "{ens.method}": a level-2 {ens.method} needs at least two base models, '
                       f'this config has {chosen}; use method = "auto" or add [[models]]')
        return out

    def cnn_feature_models(self) -> list[str]:
        """With ``[ensemble] cnn_feature``, each booster is also trained on the first CNN's score
        (leak-free, dermstack.ensembles.stacking): the names of those models, ``<booster>+<cnn>``."""
        cnns = [m.label for m in self.models if m.kind == "cnn"]
        boosters = [m.label for m in self.models if m.kind in BOOSTER_KINDS]
        if not (self.ensemble.cnn_feature and cnns and self.ensemble.method in CNN_FEATURE_METHODS):
            return []
        return [f"{b}+{cnns[0]}" for b in boosters]

    def _stop_metric_problems(self, where: dict[int, str]) -> list[str]:
        models = [m for m in self.models if m.kind == "cnn" and m.params.get("stop_metric") is not None]
        if not models:
            return []
        from dermstack.metrics import TASK_METRICS

        metrics = list(TASK_METRICS[self.data.task])
        return [line for m in models if m.params["stop_metric"] not in metrics
                for line in _lines(where[id(m)], [("params.stop_metric", m.params["stop_metric"],
                                                   unknown(f"{self.data.task} metric", m.params["stop_metric"], metrics))])]

    def check(self, source: str = "config") -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(_summary(source, problems))

    def to_dict(self) -> dict:
        return _pruned(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """The config as TOML (``from_toml`` reads it back equal)."""
        import tomli_w

        return tomli_w.dumps(_pruned(dataclasses.asdict(self), empty_tables=True))


def _summary(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)


def _pruned(x: Any, empty_tables: bool = False) -> Any:
    """``x`` without None values (TOML has no null) and, with ``empty_tables``, without the empty
    tables (params = {}, weights = {}: the defaults) that tomli-w would write as bare headers."""
    if isinstance(x, dict):
        return {k: _pruned(v, empty_tables) for k, v in x.items() if v is not None and not (empty_tables and v == {})}
    if isinstance(x, list):
        return [_pruned(v, empty_tables) for v in x]
    return x
