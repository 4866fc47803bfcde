"""Saved models: one folder each, written and read the same way for every kind.

Every model a run trains (a booster, a CNN, a booster stacked on a CNN's scores, a level-2 learner,
a weighted mean) lives in ``models/<name>/``, written by :func:`write_model` alone: its OOF and test
predictions, metrics, importance and, last, ``model.json``, whose presence marks a complete folder.
``model.json`` states the ``kind`` (whose SavedModel class, in :mod:`dermstack.registry`, reads the folder) and what the
model ``needs`` from other saved models (``members``: the models whose scores it combines;
``cnn_views``: the model whose feature group it also reads, the CNN's ``cnn`` or the linear probe's
``probe`` scores from its nested pair models). ``predict``, ``report``
and ``submit`` load any folder through :func:`load`, and :func:`dependency_order` scores members
before the models that use them; nothing parses a model's name to find what it depends on.
"""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from dermstack.atomic import read_json, write_json
from dermstack.config.types import is_model_name
from dermstack.errors import DataError, clip
from dermstack.predictions import ModelResult, Predictions
from dermstack.provenance import versions
from dermstack.registry import saved_class, saved_kinds
from dermstack.rundir import MODEL_FILES, claim_dir

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
FORMAT_VERSION = 2
#: the ``needs`` key naming the saved model whose feature group (:attr:`SavedModel.feature_group`) a model also reads
GROUP_SOURCE = "cnn_views"


def model_spec(name: str, kind: str, task, needs: dict | None = None, **fields) -> dict:
    """The common part of every ``model.json``; ``fields`` add the kind's own."""
    return {"format_version": FORMAT_VERSION, "name": name, "kind": kind, "task": task.kind,
            "classes": list(task.classes), "target_name": task.target_name, "needs": needs or {},
            "versions": versions(), **fields}


def model_folder(directory: str | Path) -> Path:
    """``directory`` made ready for a model's files: never a folder that holds files a model does not
    write (:func:`dermstack.rundir.claim_dir`), so ``--out`` of a stage command cannot clobber the user's.
    That ``--out`` names the models folder above ``directory``: the advice proposes another one."""
    directory = Path(directory)
    d = claim_dir(directory, "model folder", owned=MODEL_FILES, suggest=directory.parent / "dermstack-models")
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_model(directory: str | Path, spec: dict, result: ModelResult,
                extra: dict[str, Predictions] | None = None) -> ModelResult:
    """Write ``result``, ``extra`` (more predictions, by path under ``nested/``) and ``spec`` into
    ``directory``. ``model.json`` goes first out and last in, so an interrupted write never leaves a
    folder that looks complete."""
    d = model_folder(directory)
    (d / MODEL_JSON).unlink(missing_ok=True)
    result.write(d)
    for rel, preds in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        preds.write(d / rel)
    write_json(d / MODEL_JSON, spec)
    return result


def read_spec(directory: str | Path) -> dict:
    path = Path(directory) / MODEL_JSON
    if not path.is_file():
        raise DataError("no model.json: not a complete dermstack model directory", file=str(path))
    spec = read_json(path, "model.json")
    if not isinstance(spec, dict):
        raise DataError("model.json is not a JSON object: damaged or not written by dermstack", file=str(path))
    if spec.get("format_version") != FORMAT_VERSION:
        raise DataError(f"model format version {spec.get('format_version')} is not {FORMAT_VERSION}: "
                        "re-run the run that made it (`dermstack run ... --force`)", file=str(path))
    if saved_class(spec.get("kind")) is None:
        raise DataError(f"unknown model kind {spec.get('kind')!r}; known: {sorted(saved_kinds())}", file=str(path))
    names = [spec.get("name"), *needed(spec)] if isinstance(spec.get("needs", {}), dict) else [None]
    if bad := [n for n in names if not is_model_name(n)]:  # names become folders of models/: data, never a path
        raise DataError(f"model name {clip(str(bad[0]))!r} in model.json is not a model folder's name: damaged or not "
                        "written by dermstack", file=str(path))
    return spec


def needed(spec: dict) -> list[str]:
    """Names of the saved models ``spec``'s model reads scores or views of."""
    n = spec.get("needs", {})
    members = n.get("members", [])
    return (list(members) if isinstance(members, list) else [members]) + ([n[GROUP_SOURCE]] if n.get(GROUP_SOURCE) else [])


@dataclass
class Inputs:
    """What saved models score: rows ``ids`` with their features, LesionTable rows (for images) and
    embeddings (a store with ``.read(backbone, ids)``, for linear probes), and the scores of models
    already applied (``scores``: name -> Predictions)."""

    ids: list[str]
    classes: list[str]
    features: object = None
    table: object = None
    embeddings: object = None
    scores: dict[str, Predictions] = field(default_factory=dict)
    #: values several models share (e.g. a CNN's nested mean score), computed once
    cache: dict = field(default_factory=dict)

    def matrix(self, name: str) -> np.ndarray:
        if name not in self.scores:
            raise DataError(f"model {name!r} has not been applied yet (dependency order)")
        return self.scores[name].matrix(self.ids, self.classes, source=f"model {name}")


class SavedModel(ABC):
    """A model folder, loaded: its spec and how it scores new rows.

    A model whose scores are also a feature group of other models (the CNN's ``cnn``) names the
    group in :attr:`feature_group` and gives its columns: :meth:`feature_frame` for new rows,
    :meth:`oof_feature_frame` for the run's own rows as each fold's model saw them."""

    #: the FeatureSet group this model's scores become for the models that read it (None: none)
    feature_group: ClassVar[str | None] = None

    def __init__(self, directory: Path, spec: dict):
        self.dir, self.spec = Path(directory), spec

    @property
    def name(self) -> str:
        return self.spec["name"]

    @abstractmethod
    def predict(self, inputs: Inputs) -> np.ndarray:
        """(n,) binary or (n, C) scores of ``inputs.ids``."""

    def result(self) -> ModelResult:
        return ModelResult.read(self.dir, self.name)

    def feature_frame(self, inputs: Inputs) -> pl.DataFrame:
        """image_id + the :attr:`feature_group` columns of ``inputs.ids``."""
        raise DataError(f"model {self.name!r} gives no feature group", file=str(self.dir))

    def oof_feature_frame(self, table, plan) -> pl.DataFrame:
        """image_id + the :attr:`feature_group` columns of the run's rows (``table``, a LesionTable; ``plan``,
        its FoldPlan), each training row as the model of its own fold saw it."""
        raise DataError(f"model {self.name!r} gives no feature group", file=str(self.dir))


def group_source(model: SavedModel) -> SavedModel | None:
    """The saved model whose feature group ``model`` also reads (``needs`` :data:`GROUP_SOURCE`), or None."""
    source = model.spec["needs"].get(GROUP_SOURCE)
    return load(model.dir.parent / source) if source else None


def inputs_for(model: SavedModel, inputs: Inputs) -> Inputs:
    """``inputs`` as ``model`` reads them: its features with the group of its :func:`group_source` added."""
    source = group_source(model)
    if source is None:
        return inputs
    return dataclasses.replace(inputs, features=inputs.features.add(source.feature_frame(inputs), source.feature_group))


def load(directory: str | Path) -> SavedModel:
    spec = read_spec(directory)
    return saved_class(spec["kind"])(Path(directory), spec)


def model_dirs(models_root: str | Path) -> dict[str, Path]:
    """name -> folder of every complete model under ``models_root``."""
    root = Path(models_root)
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if (d / MODEL_JSON).exists():
            out[read_spec(d)["name"]] = d
    return out


def dependency_order(models_root: str | Path, wanted: list[str] | None = None) -> list[Path]:
    """The folders of ``wanted`` (default: all) and everything they need, members before users."""
    dirs = model_dirs(models_root)
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in dirs:
            raise DataError(f"saved model {name!r} (needed by {path[-1] if path else 'the run'}) is missing",
                            file=str(Path(models_root) / name))
        if name in path:
            raise DataError(f"saved models depend on each other in a cycle: {' -> '.join(path + (name,))}")
        for dep in needed(read_spec(dirs[name])):
            visit(dep, path + (name,))
        order.append(name)

    for name in wanted or list(dirs):
        visit(name, ())
    return [dirs[n] for n in order]


def predict_all(models_root: str | Path, inputs: Inputs, wanted: list[str] | None = None) -> dict[str, Predictions]:
    """Apply ``wanted`` (default every saved model) and what they need, in dependency order."""
    for d in dependency_order(models_root, wanted):
        model = load(d)
        if model.name not in inputs.scores:
            scores = model.predict(inputs_for(model, inputs))
            inputs.scores[model.name] = Predictions.from_scores(model.name, inputs.ids, inputs.classes, scores)
    return inputs.scores
