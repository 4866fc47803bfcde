"""The linear probe's inputs: full-dimensional embeddings plus table features, as one standardised matrix.

A :class:`Design` is fitted on a fold's training rows only: each embedding dimension and numeric
feature is centred and scaled by the training mean and standard deviation; a missing value (an
image that failed to embed, a null or non-finite feature) becomes that mean (0 after scaling) and,
when any training row lacked it, a 0/1 missing indicator says so; a categorical feature is one-hot
over the categories seen in training (null or unseen: all zeros). A numeric column with fewer than
``MIN_VALUES`` values in the training rows is left out, indicator and all: on an ISIC archive
export a patient feature present on 3 of 80 rows
got a training std so small that a validation row sat 300 standard deviations out and decided its
score. Standardised values are clipped to +-``CLIP_Z`` for the same reason: a linear model should
not extrapolate a value far outside the training range. Its *terms* are what an
explanation names: one ``embedding:<key>`` per embedding (per backbone and view: the key is
``<backbone>@<view>`` for a further image of a row, e.g. MILK10k's clinical close-up) and one per
table feature, so that the contributions of all 1280 dimensions of an embedding add up to a single number.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import atomic_path, read_json, write_json
from dermstack.crossfit import align_rows
from dermstack.errors import DataError, reading
from dermstack.features.embedding import read_embeddings

log = logging.getLogger(__name__)

CATEGORICAL_DTYPES = (pl.String, pl.Categorical, pl.Enum)
#: fewest finite training values a numeric column needs to be used
MIN_VALUES = 10
#: standardised values are clipped to +-CLIP_Z
CLIP_Z = 10.0


def embedding_term(backbone: str) -> str:
    return f"embedding:{backbone}"


@dataclass
class Rows:
    """The raw inputs of some rows, in ``ids`` order: table feature columns and each backbone's
    embeddings ((n, D) float32; a row of NaN where an image has none)."""

    ids: list[str]
    frame: pl.DataFrame
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows([self.ids[i] for i in idx], self.frame[idx], {b: x[idx] for b, x in self.embeddings.items()})


class _Only:
    """``store`` seen through ``names`` only: :func:`read_embeddings` reads every backbone a store lists."""

    def __init__(self, store, names: list[str]):
        have = store.backbones()
        absent = [b for b in names if b not in have]
        if absent:
            raise DataError(f"the embedding store has no {absent} embeddings (has {have})", file=str(getattr(store, "path", "")) or None)
        self.store, self.names = store, names

    def backbones(self) -> list[str]:
        return list(self.names)

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        return self.store.read(backbone, image_ids)

    def image_ids(self, backbone: str) -> list[str]:
        return self.store.image_ids(backbone)


def read_rows(features: pl.DataFrame, columns: list[str], store, backbones: list[str], ids: list[str],
              source: str = "features") -> Rows:
    """The rows ``ids`` of ``features`` (its ``columns``) and of ``store`` (its ``backbones``)."""
    frame = align_rows(features.select(["image_id", *columns]), ids, source=source).drop("image_id")
    if not backbones:
        return Rows(list(ids), frame)
    if store is None:
        raise DataError(f"the linear model reads the {backbones} embeddings, but no embedding store was given")
    by_prefix = read_embeddings(_Only(store, backbones), list(ids))
    return Rows(list(ids), frame, dict(zip(backbones, by_prefix.values())))


def split_columns(frame: pl.DataFrame, columns: list[str], categorical: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns; booleans count as numeric 0/1; any other type is a DataError."""
    numeric, cats, schema = [], [], frame.schema  # a frame's schema is built per access
    for c in columns:
        dtype = schema[c]
        if c in categorical or dtype in CATEGORICAL_DTYPES:
            cats.append(c)
        elif dtype.is_numeric() or dtype == pl.Boolean:
            numeric.append(c)
        else:
            raise DataError(f"feature column of type {dtype} is neither numeric nor categorical", column=c)
    return numeric, cats


def _numeric(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """(n, len(columns)) float64, NaN where a value is null or not finite."""
    if not columns:
        return np.zeros((frame.height, 0))
    x = frame.select(pl.col(columns).cast(pl.Float64)).to_numpy().astype(np.float64)
    x[~np.isfinite(x)] = np.nan
    return x


@dataclass
class Design:
    """What one fit standardises and one-hot encodes (see the module docstring); ``mean``/``scale``
    span every matrix column (0/1 for indicators and one-hot columns)."""

    backbones: dict[str, int]
    numeric: list[str]
    categories: dict[str, list[str]]
    indicators: list[str]
    mean: np.ndarray
    scale: np.ndarray
    #: every input the model was given, in order: the terms of an explanation (dropped ones add 0)
    terms: list[str]

    @classmethod
    def fit(cls, rows: Rows, numeric: list[str], categorical: list[str]) -> Design:
        """Statistics of ``rows`` (a fold's training rows). A numeric column with fewer than ``MIN_VALUES``
        values in them, or a categorical one with none, is left out (:attr:`left_out`, its term then
        contributes 0); a backbone with no embedding in them is a DataError."""
        terms = [embedding_term(b) for b in rows.embeddings] + list(numeric) + list(categorical)
        x = _numeric(rows.frame, numeric)
        empty = [c for j, c in enumerate(numeric) if np.isfinite(x[:, j]).sum() < min(MIN_VALUES, len(x))]
        categories = {c: sorted(rows.frame[c].cast(pl.String).drop_nulls().unique().to_list()) for c in categorical}
        empty += [c for c, cats in categories.items() if not cats]
        design = cls({b: int(e.shape[1]) for b, e in rows.embeddings.items()}, [c for c in numeric if c not in empty],
                     {c: v for c, v in categories.items() if v}, [], np.zeros(0), np.zeros(0), terms)
        for b, e in rows.embeddings.items():
            if not np.isfinite(e).all(1).any():
                raise DataError(f"no training row has a {b!r} embedding")
        blocks = design._blocks(rows)
        design.indicators = [name for name, block in blocks if block.ndim == 2 and np.isnan(block).any()]
        raw = design._raw(rows, blocks)
        with np.errstate(invalid="ignore"):
            mean, scale = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
        fixed = ~design._standardised()
        mean[fixed], scale[fixed] = 0.0, 1.0
        scale[~(scale > 1e-12)] = 1.0  # a constant column: centred only
        design.mean, design.scale = mean, scale
        return design

    @property
    def left_out(self) -> list[str]:
        """The table columns :meth:`fit` left out for want of values (the caller logs them once per
        model: each fold and nested fit makes its own Design)."""
        kept = {embedding_term(b) for b in self.backbones} | set(self.numeric) | set(self.categories)
        return [t for t in self.terms if t not in kept]

    # -- the matrix -----------------------------------------------------------------------
    def _blocks(self, rows: Rows) -> list[tuple[str, np.ndarray]]:
        """(input, raw values) per standardised input: (n, D) per backbone, (n,) per numeric column."""
        out = []
        for b, dim in self.backbones.items():
            if b not in rows.embeddings:
                raise DataError(f"the linear model needs {b!r} embeddings for these rows")
            e = np.asarray(rows.embeddings[b], dtype=np.float64)
            if e.ndim != 2 or e.shape[1] != dim:
                raise DataError(f"{b!r} embeddings have shape {e.shape}; the model was trained on {dim} dimensions")
            e = e.copy()
            e[~np.isfinite(e).all(1)] = np.nan  # a partly non-finite embedding counts as none
            out.append((b, e))
        x = _numeric(rows.frame, self.numeric) if self.numeric else np.zeros((rows.frame.height, 0))
        out += [(c, x[:, j]) for j, c in enumerate(self.numeric)]
        return out

    def _raw(self, rows: Rows, blocks: list[tuple[str, np.ndarray]] | None = None, warn_unseen: bool = False) -> np.ndarray:
        blocks = self._blocks(rows) if blocks is None else blocks
        n = rows.frame.height
        parts = [block.reshape(n, -1) for _, block in blocks]
        parts += [np.isnan(block.reshape(n, -1)[:, :1]).astype(np.float64) for name, block in blocks if name in self.indicators]
        for c, cats in self.categories.items():
            values = rows.frame[c].cast(pl.String)
            codes = values.replace_strict(cats, list(range(len(cats))), default=-1, return_dtype=pl.Int64).to_numpy()
            unseen = int(((codes < 0) & values.is_not_null().to_numpy()).sum())
            if unseen and warn_unseen:
                log.warning("linear model: column %r has %d value(s) never seen in training; encoded as missing", c, unseen)
            onehot = np.zeros((n, len(cats)))
            onehot[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def matrix(self, rows: Rows, warn_unseen: bool = False) -> np.ndarray:
        """(n, P) float64: standardised and clipped to +-``CLIP_Z``, missing values at the training mean (0)."""
        x = (self._raw(rows, warn_unseen=warn_unseen) - self.mean) / self.scale
        x[np.isnan(x)] = 0.0
        return np.clip(x, -CLIP_Z, CLIP_Z, out=x)

    # -- names ----------------------------------------------------------------------------
    def _layout(self) -> list[tuple[str, str, bool]]:
        """(column name, term, standardised) of every matrix column, in matrix order."""
        cols = [(f"{b}[{i}]", embedding_term(b), True) for b, d in self.backbones.items() for i in range(d)]
        cols += [(c, c, True) for c in self.numeric]
        cols += [(f"{c}:missing", embedding_term(c) if c in self.backbones else c, False) for c in self.indicators]
        cols += [(f"{c}={v}", c, False) for c, cats in self.categories.items() for v in cats]
        return cols

    def _standardised(self) -> np.ndarray:
        return np.array([s for _, _, s in self._layout()], dtype=bool)

    @property
    def columns(self) -> list[str]:
        return [c for c, _, _ in self._layout()]

    @property
    def term_index(self) -> np.ndarray:
        """(P,) index into ``terms`` of each matrix column."""
        index = {t: i for i, t in enumerate(self.terms)}
        return np.array([index[t] for _, t, _ in self._layout()], dtype=np.int64)

    # -- files ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"backbones": self.backbones, "numeric": self.numeric, "categories": self.categories,
                "indicators": self.indicators, "terms": self.terms}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale}

    @classmethod
    def from_files(cls, d: dict, arrays) -> Design:
        design = cls({b: int(n) for b, n in d["backbones"].items()}, list(d["numeric"]),
                     {c: list(v) for c, v in d["categories"].items()}, list(d["indicators"]),
                     np.asarray(arrays["mean"], dtype=np.float64), np.asarray(arrays["scale"], dtype=np.float64),
                     list(d["terms"]))
        if len(design.mean) != len(design.columns) or len(design.scale) != len(design.columns):
            raise DataError(f"linear model: {len(design.mean)} standardisation values for {len(design.columns)} columns")
        return design


# -- files of a model fitted on a Design ---------------------------------------------------------
def save_design_model(stem: Path, design: Design, arrays: dict[str, np.ndarray], meta: dict) -> list[Path]:
    """A model on a Design as two files: its arrays and the design's in ``stem.npz`` (no pickle), the
    design's description and ``meta`` in ``stem.json``."""
    npz, js = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, **design.arrays())
    write_json(js, {"design": design.to_json(), **meta})
    return [npz, js]


def load_design_model(stem: Path, what: str) -> tuple[dict, Design, dict[str, np.ndarray]]:
    """(meta, Design, arrays) from :func:`save_design_model`'s files; a missing, damaged or foreign
    file is a DataError naming it."""
    npz, js = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
    for p in (npz, js):
        if not p.exists():
            raise DataError(f"{what} file listed in model.json is missing", file=str(p))
    meta = read_json(js, f"{what} description")
    with reading(npz, what), np.load(npz, allow_pickle=False) as f:
        design = Design.from_files(meta["design"], f)
        arrays = {k: np.array(f[k]) for k in f.files}
    return meta, design, arrays
