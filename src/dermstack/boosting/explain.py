"""How the reports explain a booster (:class:`dermstack.registry.Explainer`): a saved booster of one fold
and seed (:class:`FoldBooster`) with what SHAP needs: the library's own model object, the input it
reads, its raw (margin) output and a TreeExplainer (GPU when present)."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dermstack.boosting.base import ConstantMember, FeatureMatrix, gpu_available
from dermstack.boosting.store import load_models, read_spec
from dermstack.errors import DataError

log = logging.getLogger(__name__)


def native_model(adapter) -> Any:
    """The library object inside an adapter (lgb.Booster, xgb.Booster, catboost.CatBoost)."""
    if adapter.native is None:
        raise DataError(f"{type(adapter).__name__} has no fitted or loaded model to explain")
    return adapter.native


def constant_margin(member: ConstantMember) -> float:
    """Raw score of a multi-label class that had no positive training row in a fold: the logit of its
    constant probability, clipped to stay finite (its SHAP values are zero)."""
    p = min(max(member.score, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def make_explainer(model):
    """``shap.TreeExplainer`` (``GPUTreeExplainer`` when a GPU and a CUDA build of shap are present)."""
    import shap

    if gpu_available() and hasattr(shap, "GPUTreeExplainer"):
        try:
            return shap.GPUTreeExplainer(model)
        except Exception as e:  # CPU-only shap build raises at construction or first use
            log.info("GPU TreeExplainer unavailable (%s); using the CPU TreeExplainer", e)
    return shap.TreeExplainer(model)


def _as_features_by_output(values, n_rows: int, n_features: int) -> np.ndarray:
    """shap's layouts (list of (n, F), (n, F), (n, F, C)) to (n, F) or (n, F, C)."""
    if isinstance(values, list):
        values = np.stack(values, axis=-1)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3 and values.shape[1] != n_features:  # (n, C, F)
        values = values.transpose(0, 2, 1)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    return values


@dataclass
class FoldBooster:
    """One saved fold/seed model: ``members`` holds one adapter, or one binary adapter per class (multi-label)."""

    model: str
    library: str
    fold: int
    seed: int
    members: list[Any]
    matrix: FeatureMatrix
    classes: list[str]
    #: what the training prior added to each output's margin (dermstack.calibration.prior_factor, as
    #: log); subtracted so that the link of the explained margin is the stored score
    log_prior: np.ndarray | None = None
    _explainers: list = field(default_factory=list, repr=False)

    def _unprior(self, margin: np.ndarray) -> np.ndarray:
        return margin if self.log_prior is None else margin - (self.log_prior if margin.ndim > 1 else self.log_prior[0])

    @property
    def columns(self) -> list[str]:
        return self.matrix.columns

    @property
    def n_outputs(self) -> int:
        return 1 if self.classes == ["target"] else len(self.classes)

    @property
    def natives(self) -> list[Any]:
        """The library model of each member (None for a ConstantMember, which has none)."""
        return [None if isinstance(m, ConstantMember) else native_model(m) for m in self.members]

    def inputs(self, df: pl.DataFrame) -> list:
        X = self.matrix.to_pandas(df, source=f"model {self.model}")
        return [None if isinstance(m, ConstantMember) else m.explain_input(X) for m in self.members]

    def raw_output(self, df: pl.DataFrame) -> np.ndarray:
        """(n,) or (n, C) raw scores."""
        outs = [np.full(df.height, constant_margin(a)) if isinstance(a, ConstantMember) else a.raw_margin(d)
                for a, d in zip(self.members, self.inputs(df))]
        return self._unprior(outs[0] if len(outs) == 1 else np.column_stack(outs))

    def shap_values(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(values (n, F) or (n, F, C), base (n,) or (n, C)) in raw-score units."""
        if not self._explainers:
            self._explainers = [None if m is None else make_explainer(m) for m in self.natives]
        vals, bases = [], []
        for member, explainer, data in zip(self.members, self._explainers, self.inputs(df)):
            if explainer is None:  # ConstantMember: no feature moves its score
                vals.append(np.zeros((df.height, len(self.columns))))
                bases.append(np.full((df.height, 1), constant_margin(member)))
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*shap values output has changed.*")
                v = _as_features_by_output(explainer.shap_values(data), df.height, len(self.columns))
            e = np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)
            vals.append(v)
            bases.append(np.broadcast_to(e if v.ndim == 3 else e[:1], (df.height, len(e) if v.ndim == 3 else 1)))
        if len(vals) > 1:  # multi-label: one binary booster per class
            return np.stack(vals, axis=-1), self._unprior(np.column_stack([b[:, 0] for b in bases]))
        v, b = vals[0], bases[0]
        return v, self._unprior((b if v.ndim == 3 else b[:, 0]).copy())

    def plot_matrix(self, df: pl.DataFrame) -> tuple[np.ndarray, dict[str, list[str]]]:
        """Feature values as float (categoricals as codes, NaN = missing) and the category names."""
        X = self.matrix.to_pandas(df, source=f"model {self.model}")
        cols = [X[c].cat.codes.astype(float).where(X[c].notna(), np.nan) if c in self.matrix.categories else X[c].astype(float)
                for c in self.columns]
        return np.column_stack(cols) if cols else np.zeros((df.height, 0)), dict(self.matrix.categories)


def load_fold_boosters(model_dir: str | Path) -> list[FoldBooster]:
    """Every fold/seed booster of a model directory written by the boosting stage (``model.json``)."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    matrix = FeatureMatrix.from_json(spec["features"])
    adapters = load_models(model_dir)
    out = []
    for entry, adapter in zip(spec["models"], adapters):
        members = getattr(adapter, "members", None) or [adapter]
        factor = entry.get("prior_factor")
        out.append(FoldBooster(spec.get("name", model_dir.name), spec["kind"], int(entry["fold"]), int(entry["seed"]),
                               list(members), matrix, list(spec["classes"]),
                               None if factor is None else np.log(np.asarray(factor, dtype=float))))
    return out


def feature_groups(model_dir: str | Path) -> dict[str, str]:
    """Feature column -> group, as stored with the model."""
    return {c: g or "other" for c, g in read_spec(model_dir)["features"].get("groups", {}).items()}


def explain_boosters(run, model_dir: Path) -> tuple[list[FoldBooster], dict[str, str]]:
    """The boosters' explainer: the fold x seed boosters (TreeSHAP) and each feature's group."""
    return load_fold_boosters(model_dir), feature_groups(model_dir) or dict(run.features.groups)
