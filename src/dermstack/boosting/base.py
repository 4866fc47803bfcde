"""The common interface of the gradient-boosting adapters and the feature matrix they read.

An adapter wraps one booster of one library for one problem (``binary`` or ``multiclass``):
fit on a fold's training part with early stopping on its validation part, predict
probabilities, save and load in the library's native format, report gain importance.
Multi-label tasks use :class:`PerClassAdapter` (one binary booster per class).

An adapter class also describes its library to the rest of dermstack: its kind name, default
parameters, parameter names and synonyms, which parameters size a leaf or block a split, and its
Dask adapter. Everything that differs between LightGBM, XGBoost and CatBoost lives on these classes
(:mod:`~dermstack.boosting.lightgbm_`, :mod:`~dermstack.boosting.xgboost_`,
:mod:`~dermstack.boosting.catboost_`); a registry kind that declares an adapter
(:attr:`dermstack.registry.ModelKind.adapter`) is a booster.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import polars as pl

from dermstack.atomic import atomic_path, read_json, write_json
from dermstack.errors import ConfigError, DataError
from dermstack.jobs import available_cores, job_threads
from dermstack.registry import model_kinds
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: Early-stopping metrics every adapter understands (mapped to each library's own name).
STOPPING_METRICS = ("auc", "logloss")
MISSING_CODE = -1


def default_threads() -> int:
    """All cores this process may use; a fit running beside others in this process (jobs.LocalJobs),
    its share; on a Dask worker, the threads it was started with (``dask worker --nthreads``), as the
    other workers on its machine use the rest."""
    share = job_threads()
    if share:
        return share
    if "distributed" in sys.modules:  # only a process that loaded Dask can be a worker
        from distributed import get_worker

        try:
            return get_worker().state.nthreads
        except ValueError:  # not in a worker
            pass
    return available_cores()


def gpu_available() -> bool:
    """True when an NVIDIA GPU is visible (no heavy import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


@dataclass
class FeatureMatrix:
    """Which columns a model reads and the category list of each categorical column.

    Categories are fixed from the training rows and stored with the models, so that a value at
    predict time maps to the same code; a value never seen in training becomes missing (logged).
    """

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, df: pl.DataFrame, columns: list[str], categorical: list[str]) -> FeatureMatrix:
        cats, schema = {}, df.schema  # a frame's schema is built per access
        for c in columns:
            if c in categorical or schema[c] in (pl.String, pl.Categorical, pl.Enum, pl.Boolean):
                cats[c] = sorted(df[c].cast(pl.String).drop_nulls().unique().to_list())
        return cls(list(columns), cats)

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.columns if c in self.categories]

    def to_pandas(self, df: pl.DataFrame, source: str = "features") -> pd.DataFrame:
        """Numeric columns as float32, categorical ones as pandas ``category`` with the stored categories."""
        absent = [c for c in self.columns if c not in df.columns]
        if absent:
            raise DataError(f"feature columns the models were trained on are absent: {absent[:10]}", file=source)
        numeric, schema = [c for c in self.columns if c not in self.categories], df.schema  # df.schema is built per access
        bad = [c for c in numeric if not schema[c].is_numeric()]
        if bad:
            raise DataError(f"non-numeric feature columns not declared categorical: {bad[:10]}", file=source)
        out = df.select(pl.col(numeric).cast(pl.Float32)).to_pandas() if numeric else pd.DataFrame(index=range(df.height))
        for c, cats in self.categories.items():
            values = df[c].cast(pl.String)
            unseen = values.drop_nulls().filter(~values.drop_nulls().is_in(cats))
            if unseen.len():
                log.warning("%s: column %r has %d value(s) never seen in training (e.g. %s); treated as missing",
                            source, c, unseen.len(), unseen.unique().head(3).to_list())
            codes = values.replace_strict(cats, list(range(len(cats))), default=MISSING_CODE, return_dtype=pl.Int32)
            out[c] = pd.Categorical.from_codes(codes.to_numpy(), categories=cats)
        return out[self.columns]

    def to_json(self) -> dict:
        return {"columns": self.columns, "categories": self.categories}

    @classmethod
    def from_json(cls, d: dict) -> FeatureMatrix:
        return cls(list(d["columns"]), {k: list(v) for k, v in d["categories"].items()})


def category_codes(X: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns replaced by their integer codes (missing = -1), for libraries that want ints."""
    X = X.copy()
    for c in X.columns:
        if isinstance(X[c].dtype, pd.CategoricalDtype):
            X[c] = X[c].cat.codes.astype(np.int32)
    return X


class BoosterAdapter(ABC):
    """One booster of one library for a ``binary`` (scores (n,)) or ``multiclass`` (scores (n, C)) problem.

    The class attributes describe the library; :func:`dermstack.boosting.kind.booster_kind` makes a
    registry kind of a subclass. Example (a plugin's own library)::

        class MyAdapter(BoosterAdapter):
            kind, ext = "mytrees", ".json"
            description = "my gradient-boosted trees"
            binary_defaults = {"learning_rate": 0.05}
            small_table_defaults = {"learning_rate": 0.03}
            ...  # fit, predict_proba, load, importance, raw_margin, library_params

        register(booster_kind(MyAdapter))
    """

    #: the ``[[models]] kind`` (and ``model.json`` kind) of this library
    kind: ClassVar[str]
    #: what ``dermstack kinds`` says of it
    description: ClassVar[str]
    #: the native model file's extension
    ext: ClassVar[str]
    #: binary defaults (the tuned ISIC 2024 values; :mod:`dermstack.boosting.defaults`)
    binary_defaults: ClassVar[dict[str, Any]]
    #: multi-class and multi-label defaults (small metadata tables)
    small_table_defaults: ClassVar[dict[str, Any]]
    #: the parameter that is its minimum leaf size in rows (None: it has none; its leaves are sized in hessian units)
    leaf_key: ClassVar[str | None] = None
    #: groups of names the library accepts for one parameter (:meth:`synonyms`)
    aliases: ClassVar[tuple[frozenset[str], ...]] = ()
    #: the parameters that stop a tree from splitting: name -> what it bounds in a child ("rows": a count of
    #: training rows, "hessian": a sum of hessians, "gain": a loss reduction)
    split_limits: ClassVar[dict[str, str]] = {}
    #: ``"module:Class"`` of its Dask adapter (:mod:`dermstack.boosting.dask_`); None: no Dask training path
    dask_adapter: ClassVar[str | None] = None
    #: the library's own model object (lgb.Booster, xgb.Booster, CatBoostClassifier); None until fit or load
    native: Any = None

    # -- the library, described ------------------------------------------------
    @classmethod
    @abstractmethod
    def library_params(cls) -> frozenset[str]:
        """Every parameter name (aliases included) the library accepts, read from the library itself."""

    @classmethod
    def round_params(cls) -> frozenset[str]:
        """The library's own names for the number of rounds and the early-stopping patience, bounded
        like ``n_estimators`` (a library given 10^12 rounds overflows or runs for ever)."""
        return frozenset()

    @classmethod
    def synonyms(cls, name: str) -> set[str]:
        """``name`` and the other names the library accepts for the same parameter."""
        return set(next((group for group in cls.aliases if name in group), {name}))

    @classmethod
    def leaf_params(cls, leaf: int, rows: int, minority: int, defaults: dict[str, Any]) -> dict[str, Any]:
        """The parameters that make a leaf hold at least ``leaf`` of a fit's ``rows`` training rows
        (``minority`` of them in the rarest class), given the library's ``defaults``."""
        return {cls.leaf_key: leaf} if cls.leaf_key else {}

    @classmethod
    def row_params(cls, rows: int) -> dict[str, Any]:
        """Parameters that depend on a fit's row count alone (none by default)."""
        return {}

    def __init__(self, problem: str, n_classes: int, params: dict[str, Any], seed: int = 0,
                 categorical: list[str] | None = None, threads: int | None = None):
        if problem not in (TaskKind.BINARY, TaskKind.MULTICLASS):
            raise ConfigError(f"{self.kind}: an adapter fits 'binary' or 'multiclass', got {problem!r}")
        params, problem = dict(params), TaskKind(problem)
        self.problem, self.n_classes, self.seed = problem, n_classes, seed
        self.categorical = list(categorical or [])
        self.n_estimators = int(params.pop("n_estimators", 1000))
        self.early_stopping_rounds = int(params.pop("early_stopping_rounds", 100))
        self.stopping_metric = params.pop("early_stopping_metric", "auc" if problem.binary else "logloss")
        if self.stopping_metric not in STOPPING_METRICS or (problem.exclusive and self.stopping_metric == "auc"):
            raise ConfigError(f"{self.kind}: early_stopping_metric must be one of {STOPPING_METRICS} "
                              f"(logloss for multiclass), got {self.stopping_metric!r}")
        self.threads = int(params.pop("threads", None) or threads or default_threads())
        self.device = resolve_device(params.pop("device", "auto"))
        params.pop("class_weight", None)
        self.params = params
        self.best_iteration: int | None = None
        self.feature_names: list[str] = []

    # -- the interface ---------------------------------------------------------
    @abstractmethod
    def fit(self, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray,
            weight: np.ndarray | None = None, valid_weight: np.ndarray | None = None) -> BoosterAdapter:
        """Train on (X, y), stop early on (X_valid, y_valid) by ``early_stopping_metric``."""

    @abstractmethod
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n,) for binary, (n, C) for multiclass."""

    def save(self, stem: Path) -> list[Path]:
        """Write the native model file ``stem + ext`` (each library's own ``save_model``); returns the paths written."""
        path = stem.with_name(stem.name + self.ext)
        with atomic_path(path, suffix=self.ext) as tmp:  # the libraries pick the format from the extension
            self.native.save_model(str(tmp))
        return [path]

    @classmethod
    @abstractmethod
    def load(cls, stem: Path, problem: str, n_classes: int, categorical: list[str] | None = None) -> BoosterAdapter:
        """Read a model written by :meth:`save`."""

    @abstractmethod
    def importance(self) -> dict[str, float]:
        """Total gain per feature."""

    def explain_input(self, X: pd.DataFrame):
        """What the library predicts (and a TreeExplainer explains) from: the pandas frame by default."""
        return X[self.feature_names] if self.feature_names else X

    @abstractmethod
    def raw_margin(self, data) -> np.ndarray:
        """Raw score (log-odds / per-class margin, before the link) of ``explain_input(X)``."""

    # -- shared helpers --------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.feature_names:
            raise RuntimeError(f"{self.kind} adapter used before fit/load")


def adapter_class(kind: str | type[BoosterAdapter]) -> type[BoosterAdapter]:
    """The adapter class of booster kind ``kind`` (a registry kind that declares one); a class is returned as is."""
    if isinstance(kind, type) and issubclass(kind, BoosterAdapter):
        return kind
    entry = model_kinds().get(kind)
    if entry is None or entry.adapter is None:
        raise ConfigError(f"unknown boosting library {kind!r}; known: {booster_kinds()}")
    return entry.adapter


def booster_kinds() -> list[str]:
    """The registered kinds that train a booster (declare a BoosterAdapter), in registry order."""
    return [k.name for k in model_kinds().values() if k.adapter is not None]


def resolve_device(device: str) -> str:
    """The device a booster trains on: "auto" is the GPU when one is visible."""
    if device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"model param device must be auto, cpu or gpu, got {device!r}")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    return device


class PerClassAdapter:
    """Multi-label: one binary booster per class, each with its own positive weight.

    Saved as ``stem.<class>.<ext>``, one native file per class."""

    def __init__(self, factory, classes: list[str]):
        self.classes = list(classes)
        self.members: list[BoosterAdapter] = [factory() for _ in classes]

    @property
    def kind(self) -> str:
        return self.members[0].kind

    @property
    def best_iteration(self) -> list[int | None]:
        return [m.best_iteration for m in self.members]

    @property
    def constant_outputs(self) -> list[int]:
        """Classes scored by a :class:`ConstantMember` (no positive training row): constant by design."""
        return [j for j, m in enumerate(self.members) if isinstance(m, ConstantMember)]

    def fit(self, X, Y, X_valid, Y_valid, weight: np.ndarray | None = None,
            valid_weight: np.ndarray | None = None) -> PerClassAdapter:
        """``weight``, ``valid_weight``: (n, C), one weight vector per class."""
        for j, m in enumerate(self.members):
            if not Y[:, j].any():
                # crossfit.check_plan has warned about the fold, for every model kind
                log.info("class %s has no positive training row in this fold: its score is the constant 0", self.classes[j])
                self.members[j] = ConstantMember(0.0)
                continue
            m.fit(X, Y[:, j], X_valid, Y_valid[:, j], _column(weight, j), _column(valid_weight, j))
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.column_stack([m.predict_proba(X) for m in self.members])

    def save(self, stem: Path) -> list[Path]:
        return [p for c, m in zip(self.classes, self.members) for p in m.save(_class_stem(stem, c))]

    @classmethod
    def load(cls, adapter_cls: type[BoosterAdapter], stem: Path, classes: list[str],
             categorical: list[str] | None = None) -> PerClassAdapter:
        obj = cls.__new__(cls)
        obj.classes = list(classes)
        obj.members = [ConstantMember.load(_class_stem(stem, c)) if ConstantMember.path(_class_stem(stem, c)).exists()
                       else adapter_cls.load(_class_stem(stem, c), TaskKind.BINARY, 1, categorical) for c in classes]
        return obj

    def importance(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for m in self.members:
            for f, g in m.importance().items():
                total[f] = total.get(f, 0.0) + g
        return total


class ConstantMember:
    """The score of a multi-label class with no positive row in a fold's training part (no booster can
    be trained); saved as ``stem.constant.json`` so that the absence of a model file is explicit."""

    kind = "constant"
    best_iteration = 0

    def __init__(self, score: float):
        self.score = float(score)

    @staticmethod
    def path(stem: Path) -> Path:
        return stem.with_name(stem.name + ".constant.json")

    def predict_proba(self, X) -> np.ndarray:
        return np.full(len(X), self.score)

    def importance(self) -> dict[str, float]:
        return {}

    def save(self, stem: Path) -> list[Path]:
        return [write_json(self.path(stem), {"score": self.score, "reason": "no positive training row in this fold"})]

    @classmethod
    def load(cls, stem: Path) -> ConstantMember:
        return cls(read_json(cls.path(stem), "constant model")["score"])


def _class_stem(stem: Path, cls_name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cls_name)
    return stem.with_name(f"{stem.name}.{safe}")


def _column(w: np.ndarray | None, j: int) -> np.ndarray | None:
    return None if w is None else w[:, j]
