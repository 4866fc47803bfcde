"""How the reports explain a linear probe or MLP (:class:`dermstack.registry.Explainer`): a saved model of
one fold and seed (:class:`FoldProbe`, a :class:`~dermstack.registry.FoldExplainer` like the boosters'),
so that :func:`~dermstack.reports.shap_.explain_model` explains it the same way: out of fold, seeds
averaged. Its "SHAP values" are the exact linear contributions (coefficient x standardised value,
one ``embedding:<key>`` term per backbone and view), in log-odds / softmax-logit units like the boosters'."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.extract.store import EmbeddingStore
from dermstack.linear.design import embedding_term, read_rows
from dermstack.linear.probe import Probe, SavedLinear
from dermstack.saved import load


@dataclass
class FoldProbe:
    model: str
    fold: int
    seed: int
    probe: Probe
    inputs: dict
    store: object
    classes: list[str]

    @property
    def columns(self) -> list[str]:
        return self.probe.design.terms

    @property
    def n_outputs(self) -> int:
        return 1 if self.classes == ["target"] else len(self.classes)

    def _matrix(self, df: pl.DataFrame) -> np.ndarray:
        rows = read_rows(df, self.inputs["columns"], self.store, self.inputs["backbones"], df["image_id"].to_list(),
                         source=f"model {self.model}")
        return self.probe.design.matrix(rows)

    def shap_values(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.probe.contributions(self._matrix(df))

    def plot_matrix(self, df: pl.DataFrame) -> tuple[np.ndarray, dict[str, list[str]]]:
        """Feature values as float per term (categoricals as codes, NaN = missing; an embedding has no one value: NaN)."""
        cats = self.probe.design.categories
        cols = []
        for t in self.columns:
            if t not in df.columns:
                cols.append(np.full(df.height, np.nan))
            elif t in cats:
                codes = df[t].cast(pl.String).replace_strict(cats[t], list(range(len(cats[t]))), default=None,
                                                             return_dtype=pl.Float64)
                cols.append(codes.fill_null(np.nan).to_numpy())
            else:
                cols.append(df[t].cast(pl.Float64).fill_null(np.nan).to_numpy())
        return np.column_stack(cols) if cols else np.zeros((df.height, 0)), dict(cats)


def load_fold_probes(model_dir: str | Path, store) -> list[FoldProbe]:
    """Every fold/seed model of a folder of a kind on a Design (logistic, mlp); ``store``: the run's embeddings."""
    model: SavedLinear = load(model_dir)
    return [FoldProbe(model.name, int(e["fold"]), int(e["seed"]), p, model.spec["inputs"], store, list(model.spec["classes"]))
            for e, p in zip(model.spec["models"], model.probes())]


def term_groups(model_dir: str | Path) -> dict[str, str]:
    """Term -> feature group: ``embedding`` for each backbone's term, the feature's own group otherwise."""
    inputs = load(model_dir).spec["inputs"]
    return {embedding_term(b): "embedding" for b in inputs["backbones"]} | {c: g or "other" for c, g in inputs["groups"].items()}


def explain_design_model(run, model_dir: Path) -> tuple[list[FoldProbe], dict[str, str]]:
    """A kind's ``explain`` hook for models on a Design (linear probe, MLP): the fold x seed models
    with their exact or sampled contributions, and each term's group."""
    h5 = run.root / "embeddings.h5"
    return load_fold_probes(model_dir, EmbeddingStore(h5) if h5.exists() else None), term_groups(model_dir)
