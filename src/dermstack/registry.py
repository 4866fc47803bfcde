"""The one registry of model kinds and ensemble methods, in the spirit of timm's ``register_model``.

A :class:`ModelKind` is everything the rest of dermstack knows about a ``[[models]] kind``: its
``params`` schema (a pydantic dataclass, ``extra="forbid"``, which the config asks), how it
cross-validates (``cross_validate(FitInputs) -> ModelResult``, fold x seed jobs through
:func:`dermstack.crossfit.cross_fit`), the :class:`~dermstack.saved.SavedModel` class that
``model.json``'s ``kind`` loads, and how the final-model SHAP explains it (``explain``). An
:class:`EnsembleMethod` is the same for an ``[ensemble] method`` (and the ``calibrated`` step).

Each kind registers itself from its own package (``register(ModelKind(...))``); :data:`PLUGINS`
lists those modules, imported on the first lookup like entry points, so that this module and the
config that asks it stay at the bottom of the import graph. Adding a kind: write its package, call
``register`` there and add the module to :data:`PLUGINS` (docs/ARCHITECTURE.md, "Adding a model kind").
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

#: the modules that register kinds and methods, in the order `dermstack kinds` and the default set list them
PLUGINS = (
    "dermstack.boosting.kind",
    "dermstack.linear.kind",
    "dermstack.cnn.kind",
    "dermstack.mlp.kind",
    "dermstack.ensembles.methods",
)

_KINDS: dict[str, ModelKind] = {}
_METHODS: dict[str, EnsembleMethod] = {}
_loaded = False


@dataclass
class FitInputs:
    """What a kind's cross-validation may read: the run's tables, its FoldPlan and the ``[[models]]`` entry."""

    task: Any
    plan: Any
    model: Any
    out_dir: Any
    features: Any = None
    table: Any = None
    store: Any = None
    executor: Any = None
    #: ``k -> FeatureSet`` that fold k trains, is validated and scores test rows on, when a feature group
    #: another kind gives differs by fold (:attr:`ModelKind.feature_group`); ``features`` is fold 0's
    fold_features: Callable[[int], Any] | None = None
    #: what the saved model needs from other saved models (``model.json`` ``needs``)
    needs: dict | None = None


@dataclass(frozen=True)
class FeatureGroup:
    """A feature group that a kind's scores become for the kinds that take one: the CNN's scores as
    the boosters' ``cnn`` group (``[ensemble] cnn_feature``), leak-free because each fold's model reads
    scores of models that never saw that fold. The pipeline fits it and hands it over, so that the
    taking kind never imports the giving one."""

    #: its name in the FeatureSet's groups
    name: str
    #: ``fit(inputs)``: the fits whose scores make the group, written under ``inputs.out_dir / <model>``
    fit: Callable[[FitInputs], Any]
    #: ``files(model_dir)``: what ``fit`` writes there (its stage's outputs)
    files: Callable[[Path], list[Path]]
    #: ``fold_features(inputs, model_dir)``: ``k ->`` ``inputs.features`` plus the group as fold k's model sees it
    fold_features: Callable[[FitInputs, Path], Callable[[int], Any]]


@dataclass(frozen=True)
class ModelKind:
    name: str
    description: str
    #: the ``[[models]] params`` schema: a pydantic dataclass with ``extra="forbid"``
    params: type
    cross_validate: Callable[[FitInputs], Any]
    #: the SavedModel subclass that loads its folder
    saved: type
    #: ``explain(run, model_dir) -> (fold models with .shap/.contributions, feature -> group)`` for
    #: :func:`dermstack.reports.shap_.explain_model`; None: the model is one term, its score
    explain: Callable | None
    #: the stages its cross-validation reads (its model stage depends on them)
    reads: tuple[str, ...] = ("ingest", "folds", "features")
    #: config keys beyond ``models.<name>`` and the task that its model stage reads
    config_keys: tuple[str, ...] = ()
    #: in the default model set (no ``[[models]]``) of a run with this many training rows
    default: Callable[[int], bool] = field(default=lambda n_train: False)
    #: checks ``params`` (a dict) and returns (key, value, why) problems; None: validate against ``params``
    check: Callable[[dict], list] | None = None
    #: ``[[models]]`` keys beyond the common ones that this kind reads (cnn: backbone, epochs, image_size)
    model_keys: tuple[str, ...] = ()
    #: a booster: also trained on a CNN's score when the ensemble asks for it ([ensemble] cnn_feature)
    takes_cnn_feature: bool = False
    #: the feature group its scores become for the kinds that take one ([ensemble] cnn_feature)
    feature_group: FeatureGroup | None = None


@dataclass(frozen=True)
class EnsembleMethod:
    name: str
    description: str
    #: ``fit(outs, task, plan, out_dir) -> ModelResult``; None for a step that is not an [ensemble] method
    fit: Callable | None
    saved: type
    #: ``explain(explainer, spec, member attributions) -> Attribution`` (dermstack.reports.final_shap)
    explain: Callable
    #: a candidate of ``method = "auto"`` (simplest first, in registration order)
    auto_candidate: bool = False
    #: trains boosters on a CNN's score as extra members ([ensemble] cnn_feature)
    uses_cnn_feature: bool = False
    #: the smallest number of members
    min_members: int = 1


def register(entry: ModelKind | EnsembleMethod) -> ModelKind | EnsembleMethod:
    table = _KINDS if isinstance(entry, ModelKind) else _METHODS
    if entry.name in _KINDS or entry.name in _METHODS:
        raise ValueError(f"{entry.name!r} is registered twice")
    table[entry.name] = entry
    return entry


def _discover() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PLUGINS:
            importlib.import_module(module)


def model_kinds() -> dict[str, ModelKind]:
    """Every kind, in :data:`PLUGINS` order (whichever module was imported first)."""
    _discover()
    rank = {m: i for i, m in enumerate(PLUGINS)}
    return dict(sorted(_KINDS.items(), key=lambda kv: rank.get(kv[1].cross_validate.__module__, len(rank))))


def ensemble_methods() -> dict[str, EnsembleMethod]:
    _discover()
    return dict(_METHODS)


def kind_names() -> list[str]:
    return list(model_kinds())


def method_names() -> list[str]:
    """The ``[ensemble] method`` values: auto, none, then every registered method with a ``fit``."""
    return ["auto", "none", *(m.name for m in ensemble_methods().values() if m.fit is not None)]


def auto_candidates() -> list[str]:
    """The ensembles ``method = "auto"`` compares with the best member, simplest first."""
    return [m.name for m in ensemble_methods().values() if m.auto_candidate]


def model_kind(name: str) -> ModelKind:
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


def param_rows(schema: type) -> list[tuple[str, str, str]]:
    """(name, type, default) of each field of a params schema, for `dermstack kinds` and the README."""
    out = []
    for f in fields(schema):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        out.append((f.name, _readable_type(str(f.type)), repr(default)))
    return out


def _readable_type(text: str) -> str:
    """A field's annotation as a user reads it: ``one_of('w', ('a', 'b'))`` -> ``'a' | 'b'``, and
    ``Annotated[T, validators...]`` -> ``T``."""
    text = re.sub(r"one_of\('\w+', \(([^)]*)\)\)", lambda m: " | ".join(v.strip() for v in m.group(1).split(",") if v.strip()), text)
    while (i := text.find("Annotated[")) >= 0:
        depth, j = 0, i + len("Annotated[")
        start, comma = j, None
        for j in range(start, len(text)):
            if text[j] in "[(":
                depth += 1
            elif text[j] in "])":
                if depth == 0:
                    break
                depth -= 1
            elif text[j] == "," and depth == 0 and comma is None:
                comma = j
        text = text[:i] + text[start:comma if comma is not None else j] + text[j + 1:]
    return text
