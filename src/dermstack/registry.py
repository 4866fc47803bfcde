"""The one registry of model kinds and ensemble methods, in the spirit of timm's ``register_model``.

A :class:`ModelKind` is everything the rest of dermstack knows about a ``[[models]] kind``: its
``params`` schema (a pydantic dataclass, ``extra="forbid"``, which the config asks), how it
cross-validates (``cross_validate(FitInputs) -> ModelResult``, fold x seed jobs through
:func:`dermstack.crossfit.cross_fit`), the :class:`~dermstack.saved.SavedModel` class that
``model.json``'s ``kind`` loads, how the reports explain it (:class:`Explainer`, :class:`ScoreTerm`
or none), and what it is: a booster (its :attr:`ModelKind.adapter`), a giver of a feature group
(:attr:`ModelKind.feature_group`). Routing and labels come only from these declarations, never from
a kind's name. An :class:`EnsembleMethod` is the same for an ``[ensemble] method`` (and the ``calibrated`` step).

Each built-in kind registers itself from its own package (``register(ModelKind(...))``);
:data:`PLUGINS` lists those modules, imported on the first lookup, so that this module and the
config that asks it stay at the bottom of the import graph (its imports of other dermstack modules
are type names only). Kinds and methods of other installed packages are found the way pytest and
timm find plugins, through the entry-point group :data:`ENTRY_POINTS`: each entry point names a
ModelKind, an EnsembleMethod, a list of them, or a module that calls :func:`register` when imported.
A plugin that fails to load (an import error, a name registered twice, a bad params schema) is left
out with everything it registered, and named in :func:`plugin_problems`; the other kinds stay usable.
"""
from __future__ import annotations

import importlib
import logging
import re
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, is_dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # type names only: nothing here is imported when the registry is
    import numpy as np
    import polars as pl

    from dermstack.boosting.base import BoosterAdapter
    from dermstack.config import ModelConfig
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.dataprofile import DataProfile, DefaultChoice
    from dermstack.ensembles.explain import Attribution, Composer
    from dermstack.features.featureset import FeatureSet
    from dermstack.jobs import DaskJobs, LocalJobs
    from dermstack.predictions import ModelResult
    from dermstack.reports.rundata import RunData
    from dermstack.saved import SavedModel
    from dermstack.task import TaskSpec

#: the modules that register the built-in kinds and methods, in the order `dermstack kinds` and the default set list them
PLUGINS = (
    "dermstack.boosting.kind",
    "dermstack.linear.kind",
    "dermstack.cnn.kind",
    "dermstack.mlp.kind", "dermstack.knn.kind",
    "dermstack.ensembles.methods",
)
#: the entry-point group of other packages' kinds and methods (``[project.entry-points."dermstack.kinds"]``)
ENTRY_POINTS = "dermstack.kinds"
#: what a kind or method may be called: a model folder's name, and ``<booster>+<giver>``'s parts
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
#: ``[ensemble] method`` values that are not registered methods
RESERVED = ("auto", "none")

_KINDS: dict[str, ModelKind] = {}
_METHODS: dict[str, EnsembleMethod] = {}
#: name -> the module that registered it (its rank in PLUGINS orders the listing)
_ORIGIN: dict[str, str] = {}
#: plugin (entry point) -> why it was left out
_BROKEN: dict[str, str] = {}
_loaded = False
log = logging.getLogger(__name__)


# -- what a kind reads ----------------------------------------------------------------------------
class Embeddings(Protocol):
    """The run's image embeddings as a kind reads them (an EmbeddingStore or a view of one), per backbone and view key."""

    def backbones(self) -> list[str]: ...

    def image_ids(self, backbone: str) -> list[str]: ...

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray: ...


@dataclass
class FitInputs:
    """What a kind's cross-validation may read: the run's tables, its FoldPlan and the ``[[models]]`` entry.

    ``model.label`` names the model folder the kind writes under ``out_dir`` (``None``: write nothing)."""

    task: TaskSpec
    plan: FoldPlan
    model: ModelConfig
    out_dir: Path | None
    features: FeatureSet | None = None
    table: LesionTable | None = None
    store: Embeddings | None = None
    #: where the fold x seed jobs run (:mod:`dermstack.jobs`); None: in this process
    executor: LocalJobs | DaskJobs | None = None
    #: ``k -> FeatureSet`` that fold k trains, is validated and scores test rows on, when a feature group
    #: another kind gives differs by fold (:attr:`ModelKind.feature_group`); ``features`` is fold 0's
    fold_features: Callable[[int], FeatureSet] | None = None
    #: what the saved model needs from other saved models (``model.json`` ``needs``)
    needs: dict[str, Any] | None = None


# -- how the reports explain a kind ----------------------------------------------------------------
@runtime_checkable
class FoldExplainer(Protocol):
    """One saved fold x seed model as the reports explain it (:func:`dermstack.reports.shap_.explain_model`):
    every member the reports read. ``shap_values`` are in the model's raw-score units (log-odds, softmax
    logits) and add up, with the base, to its raw output; the report averages them over seeds, each
    training row explained by the models of its own fold."""

    fold: int
    seed: int

    @property
    def columns(self) -> list[str]:
        """The features (terms) it is explained by, in the order of ``shap_values``' second axis."""

    @property
    def n_outputs(self) -> int:
        """1 for a binary model, else one per class."""

    def shap_values(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(values (n, F) or (n, F, C), base (n,) or (n, C)) of the rows of ``df`` (image_id + features)."""

    def plot_matrix(self, df: pl.DataFrame) -> tuple[np.ndarray, dict[str, list[str]]]:
        """(each feature's value as float (n, F): categoricals as codes, NaN missing; the codes' category names)."""


@runtime_checkable
class Explainer(Protocol):
    """How the reports explain a kind's saved model feature by feature: ``explainer(run, model_dir) ->
    (fold x seed models, feature -> feature group)``. The boosters' (TreeSHAP) and the linear probe's
    and MLP's (exact or sampled contributions) are functions of this shape."""

    def __call__(self, run: RunData, model_dir: Path) -> tuple[Sequence[FoldExplainer], dict[str, str]]: ...


@dataclass(frozen=True)
class ScoreTerm:
    """A kind explained as one term, its score: in the final model's SHAP, a member of this kind
    contributes its score minus its mean OOF score as the feature ``label`` of group ``group``."""

    label: str
    group: str


#: what a kind without an explainer contributes to the final model's SHAP: one term, ``<model> (score)``
NO_EXPLAINER_GROUP = "other"


# -- what a kind gives -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureGroup:
    """A feature group that a kind's scores become for the booster kinds: the CNN's scores as the
    boosters' ``cnn`` group, the linear probe's as their ``probe`` group (``[ensemble] score_features``
    names the models that give theirs), leak-free because each fold's booster reads scores of models
    that never saw that fold (:mod:`dermstack.features.scores`). The pipeline fits it and hands it over
    (:attr:`FitInputs.fold_features`), so that the boosters never import the kind that gives it; its
    saved model gives new rows the group (:meth:`dermstack.saved.SavedModel.feature_frame`)."""

    #: its name in the FeatureSet's groups
    name: str
    #: ``fit(inputs)``: the fits whose scores make the group, written under ``inputs.out_dir / <model>``
    fit: Callable[[FitInputs], Any]
    #: ``files(model_dir)``: what ``fit`` writes there (its stage's outputs)
    files: Callable[[Path], list[Path]]
    #: ``fold_features(inputs, model_dir)``: ``k ->`` ``inputs.features`` plus the group as fold k's model sees it
    fold_features: Callable[[FitInputs, Path], Callable[[int], FeatureSet]]
    #: ``default(task kind, training rows or None)``: given without ``[ensemble] score_features`` (docs: Results)
    default: Callable[[Any, int | None], bool] = field(default=lambda kind, n_train: False)


@dataclass(frozen=True)
class ModelKind:
    """Everything dermstack knows about one ``[[models]] kind``; :func:`register` adds it.

    The config validates an entry's ``params`` against ``params`` (or ``check``), the pipeline calls
    ``cross_validate`` in the kind's model stage (after the stages in ``reads``), :func:`dermstack.saved.load`
    reads its folder with ``saved``, and the report explains it through ``explainer``. A kind that
    declares a booster ``adapter`` is trained again with the feature group a kind with a
    ``feature_group`` gives; ``smoke`` is what makes an entry of it cheap for smoke runs and tests.

    Example: the MLP kind (:mod:`dermstack.mlp.kind`), and a lookup::

        register(ModelKind(
            "mlp", "an MLP on the standardised full embeddings plus table features", MLPParams,
            _cross_validate, SavedMLP, explain_design_model, reads=("ingest", "folds", "features", "extract"),
            config_keys=("extract.backbones",), smoke={"params": {"hidden": [8], "epochs": 5}}))

    >>> kind = model_kind("mlp")
    >>> kind.reads, kind.adapter is None, kind.feature_group is None
    (('ingest', 'folds', 'features', 'extract'), True, True)
    """

    name: str
    description: str
    #: the ``[[models]] params`` schema: a pydantic dataclass with ``extra="forbid"``
    params: type
    cross_validate: Callable[[FitInputs], ModelResult]
    #: the SavedModel subclass that loads its folder
    saved: type[SavedModel]
    #: how the reports explain its saved model: feature by feature (:class:`Explainer`), as one term
    #: (:class:`ScoreTerm`), or None: the report notes it has no explainer, and the final model's SHAP
    #: takes it as one term, ``<model> (score)``
    explainer: Explainer | ScoreTerm | None = None
    #: the stages its cross-validation reads (its model stage depends on them)
    reads: tuple[str, ...] = ("ingest", "folds", "features")
    #: config keys beyond ``models.<name>`` and the task that its model stage reads
    config_keys: tuple[str, ...] = ()
    #: in the default model set (no ``[[models]]``) of this data: ``default(profile)`` -> bool, or a DefaultChoice (rule logged)
    default: Callable[[DataProfile], bool | DefaultChoice] = field(default=lambda profile: False)
    #: checks ``params`` (a dict) and returns (key, value, why) problems; None: validate against ``params``
    check: Callable[[dict], list] | None = None
    #: ``[[models]]`` keys beyond the common ones that this kind reads (cnn: backbone, epochs, image_size)
    model_keys: tuple[str, ...] = ()
    #: a booster: its :class:`~dermstack.boosting.base.BoosterAdapter` subclass (its library and native
    #: files). A booster trains on the feature table and takes the feature group another kind gives
    adapter: type[BoosterAdapter] | None = None
    #: the feature group its scores become for the boosters (``[ensemble] score_features``, ``cnn_feature``)
    feature_group: FeatureGroup | None = None
    #: ``[[models]]`` keys (``params`` merged into the entry's) that make an entry cheap: smoke runs of the
    #: shipped configs (:func:`dermstack.testing.smoke_config`) and every kind's test
    smoke: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleMethod:
    """An ``[ensemble] method`` (or the ``calibrated`` step): how it is fitted on the members' OOF scores,
    loaded, and explained in the final model's SHAP; :func:`register` adds it.

    Example: the mean (:mod:`dermstack.ensembles.methods`), and a lookup::

        register(EnsembleMethod("mean", "every member once, its seeds averaged first", _mean, SavedWeighted,
                                explain_mean, auto_candidate=True))

    >>> stack = ensemble_methods()["stack"]
    >>> stack.auto_candidate, stack.min_members, "stack" in method_names()
    (True, 2, True)
    """

    name: str
    description: str
    #: ``fit(outs, task, plan, out_dir) -> ModelResult``; None for a step that is not an [ensemble] method
    fit: Callable[..., ModelResult] | None
    saved: type[SavedModel]
    #: ``explain(composer, spec, member attributions) -> Attribution``: its step applied to the members'
    #: contributions (:mod:`dermstack.ensembles.explain`)
    explain: Callable[[Composer, dict, list[Attribution]], Attribution]
    #: a candidate of ``method = "auto"`` (simplest first, in registration order)
    auto_candidate: bool = False
    #: its members include the boosters trained again with a feature group ([ensemble] score_features)
    group_members: bool = False
    #: the smallest number of members
    min_members: int = 1


def register(entry: ModelKind | EnsembleMethod) -> ModelKind | EnsembleMethod:
    """Add a model kind or an ensemble method to the registry, after checking what it declares; a name
    may be registered once. Kinds call it from their own module (listed in :data:`PLUGINS`); e.g. the
    linear probe (:mod:`dermstack.linear.kind`)::

        register(ModelKind("logistic", "logistic regression on the full embeddings plus table features", LinearParams,
                           _cross_validate, SavedLinear, explain_design_model, reads=("ingest", "folds", "features", "extract")))
    """
    return _register(entry, sys._getframe(1).f_globals.get("__name__", "?"))


def _register(entry: ModelKind | EnsembleMethod, origin: str) -> ModelKind | EnsembleMethod:
    problems = entry_problems(entry)
    if problems:
        raise TypeError(f"{type(entry).__name__} {getattr(entry, 'name', '?')!r}: " + "; ".join(problems))
    if entry.name in _KINDS or entry.name in _METHODS:
        raise ValueError(f"{entry.name!r} is registered twice (first by {_ORIGIN.get(entry.name, '?')})")
    (_KINDS if isinstance(entry, ModelKind) else _METHODS)[entry.name] = entry
    _ORIGIN[entry.name] = origin
    return entry


def entry_problems(entry: object) -> list[str]:
    """What is wrong with a ModelKind or EnsembleMethod before it is registered (empty when nothing)."""
    if not isinstance(entry, (ModelKind, EnsembleMethod)):
        return [f"is a {type(entry).__name__}, not a ModelKind or EnsembleMethod"]
    out = []
    if not isinstance(entry.name, str) or not NAME.fullmatch(entry.name) or entry.name in RESERVED:
        out.append(f"name must be a letter then letters, digits, '_', '.' or '-' (not {RESERVED}), got {entry.name!r}")
    if not isinstance(entry.saved, type) or not callable(getattr(entry.saved, "predict", None)):
        out.append(f"saved must be a SavedModel class, got {entry.saved!r}")
    if isinstance(entry, EnsembleMethod):
        return out + ([] if callable(entry.explain) else [f"explain must be callable, got {entry.explain!r}"])
    config = getattr(entry.params, "__pydantic_config__", None)
    if not (isinstance(entry.params, type) and is_dataclass(entry.params) and isinstance(config, dict)
            and config.get("extra") == "forbid"):
        out.append("params must be a pydantic dataclass with extra='forbid' (dermstack.config.problems.schema), "
                   f"got {entry.params!r}")
    if not callable(entry.cross_validate):
        out.append(f"cross_validate must be callable, got {entry.cross_validate!r}")
    if entry.explainer is not None and not isinstance(entry.explainer, (Explainer, ScoreTerm)):
        out.append(f"explainer must be an Explainer (run, model_dir) -> (fold models, groups), a ScoreTerm or None, "
                   f"got {entry.explainer!r}")
    return out


def _discover() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PLUGINS:
            importlib.import_module(module)
        for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: (e.name, e.value)):
            _load_plugin(ep)


def _load_plugin(ep: EntryPoint) -> None:
    """Register what entry point ``ep`` names; on any error, nothing of it (see the module docstring)."""
    dist = f", package {ep.dist.name} {ep.dist.version}" if ep.dist else ""
    where = f"plugin {ep.name!r} ({ep.group} entry point {ep.value!r}{dist})"
    before = {*_KINDS, *_METHODS}
    try:
        loaded = ep.load()
        entries = [] if isinstance(loaded, types.ModuleType) else list(loaded) if isinstance(loaded, (list, tuple)) else [loaded]
        for entry in entries:
            if _KINDS.get(getattr(entry, "name", None)) is not entry and _METHODS.get(getattr(entry, "name", None)) is not entry:
                _register(entry, where)
    except Exception as e:  # noqa: BLE001 - whatever a plugin raises, the other kinds stay usable
        for name in {*_KINDS, *_METHODS} - before:
            _KINDS.pop(name, None), _METHODS.pop(name, None), _ORIGIN.pop(name, None)
        _BROKEN[where] = f"{type(e).__name__}: {e}"
        log.warning("%s is left out: %s", where, _BROKEN[where])


def plugin_problems() -> dict[str, str]:
    """Each installed plugin that could not be loaded -> why (empty when every plugin loaded)."""
    _discover()
    return dict(_BROKEN)


def origin(name: str) -> str:
    """Where kind or method ``name`` comes from: the dermstack module, or the plugin, that registered it."""
    _discover()
    return _ORIGIN[name]


def _rank(name: str) -> int:
    origin = _ORIGIN.get(name, "")
    return PLUGINS.index(origin) if origin in PLUGINS else len(PLUGINS)


def model_kinds() -> dict[str, ModelKind]:
    """Every kind: the built-in ones in :data:`PLUGINS` order, then the others in registration order."""
    _discover()
    return dict(sorted(_KINDS.items(), key=lambda kv: _rank(kv[0])))


def ensemble_methods() -> dict[str, EnsembleMethod]:
    _discover()
    return dict(sorted(_METHODS.items(), key=lambda kv: _rank(kv[0])))


def kind_names() -> list[str]:
    return list(model_kinds())


def method_names() -> list[str]:
    """The ``[ensemble] method`` values: auto, none, then every registered method with a ``fit``."""
    return [*RESERVED, *(m.name for m in ensemble_methods().values() if m.fit is not None)]


def auto_candidates() -> list[str]:
    """The ensembles ``method = "auto"`` compares with the best member, simplest first."""
    return [m.name for m in ensemble_methods().values() if m.auto_candidate]


def model_kind(name: str) -> ModelKind:
    """The registered kind ``name`` (a KeyError naming the known kinds when there is none).

    >>> model_kind("lightgbm").adapter.kind
    'lightgbm'
    >>> model_kind("cnn").feature_group.name
    'cnn'
    """
    kinds = model_kinds()
    if name not in kinds:
        raise KeyError(f"unknown model kind {name!r}; known: {list(kinds)}")
    return kinds[name]


def saved_class(kind: str) -> type | None:
    """The SavedModel class of a ``model.json`` ``kind`` (a model kind or an ensemble method)."""
    entry = model_kinds().get(kind) or ensemble_methods().get(kind)
    return entry.saved if entry else None


def saved_kinds() -> list[str]:
    return [*model_kinds(), *ensemble_methods()]
