"""Embedding features: a PCA of each backbone's frozen embeddings, fitted on the training rows only.

A row with several images (MILK10k: dermoscopic and clinical close-up) has one embedding per view
(store key ``<backbone>@<view>``, :mod:`dermstack.extract.store`): each gets its own PCA group
(``emb_<backbone>_<view>_pcNN``), and ``emb_<backbone>_<view>_cos`` is the cosine similarity of
that view's embedding with the primary image's."""
from __future__ import annotations

import logging
import re
from typing import Protocol

import numpy as np
import polars as pl
from sklearn.decomposition import PCA

from dermstack.data.table import split_key, view_key
from dermstack.errors import DataError
from dermstack.features.transform import PCAParams

log = logging.getLogger(__name__)


class EmbeddingSource(Protocol):
    """What the features stage needs of ``dermstack.extract.store.EmbeddingStore``."""

    def backbones(self) -> list[str]: ...

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray: ...


def column_prefix(backbone: str) -> str:
    """``emb_<backbone>`` (``emb_<backbone>_<view>`` for a view's key ``<backbone>@<view>``) with
    every character that is not a letter, digit or ``_`` replaced by ``_``."""
    return "emb_" + re.sub(r"[^0-9A-Za-z_]+", "_", backbone).strip("_")


def _absent_note(key: str, n: int, examples: list[str]) -> str:
    backbone, view = split_key(key)
    if view:
        return f"{n} rows have no {view} image embedded by {backbone} (e.g. {examples}); their {view} features are null"
    return f"{backbone}: {n} images have no embedding (e.g. {examples}); their embedding features are null"


def read_embeddings(store: EmbeddingSource, image_ids: list[str]) -> dict[str, np.ndarray]:
    """Column prefix -> (len(image_ids), D) float32 array, rows in ``image_ids`` order.

    When the store lists its ids (``image_ids(backbone)``, as EmbeddingStore does), an image it
    has no embedding for (failed to embed) gets a NaN row, logged; otherwise the store must have all."""
    out: dict[str, np.ndarray] = {}
    for backbone in store.backbones():
        want = image_ids
        listed = getattr(store, "image_ids", None)
        if listed is not None:
            have = set(listed(backbone))
            want = [i for i in image_ids if i in have]
            if len(want) < len(image_ids):
                absent = [i for i in image_ids if i not in have]
                log.warning(_absent_note(backbone, len(absent), absent[:5]))
        arr = np.asarray(store.read(backbone, want), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(want):
            raise DataError(f"embedding store returned shape {arr.shape} for {len(want)} ids of backbone {backbone!r}")
        if len(want) < len(image_ids):
            full = np.full((len(image_ids), arr.shape[1]), np.nan, np.float32)
            full[np.isin(np.asarray(image_ids, dtype=object), np.asarray(want, dtype=object))] = arr
            arr = full
        prefix = column_prefix(backbone)
        if prefix in out:
            raise DataError(f"two backbones map to the same feature prefix {prefix!r}")
        out[prefix] = arr
    return out


def pca_features(embeddings: dict[str, np.ndarray], image_ids: list[str], is_train: np.ndarray,
                 n_components: int = 32, seed: int = 0,
                 fitted: dict[str, PCAParams] | None = None) -> tuple[pl.DataFrame, dict, dict[str, PCAParams]]:
    """``image_id`` + ``<prefix>_pcNN`` columns per backbone; a row with a non-finite embedding gets nulls.

    The PCA is fitted on the training rows, or taken from ``fitted`` (a finished run's, for new rows).
    Returns (frame, info, params): info maps prefix -> components kept and variance explained."""
    columns: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    params: dict[str, PCAParams] = {}
    for prefix, x in embeddings.items():
        ok = np.isfinite(x).all(1)
        if fitted is not None:
            if prefix not in fitted:
                raise DataError(f"{prefix}: the run's fitted transform has no PCA for this backbone (has {sorted(fitted)})")
            pca = params[prefix] = fitted[prefix]
            info[prefix] = {"dim": int(x.shape[1]), "components": int(pca.components.shape[0]), "fitted_by_run": True}
        else:
            fit_rows = ok & is_train
            if fit_rows.sum() < 2:
                raise DataError(f"{prefix}: fewer than two training rows with a finite embedding to fit the PCA on")
            k = int(min(n_components, x.shape[1], fit_rows.sum()))
            fit = PCA(n_components=k, random_state=seed, svd_solver="auto").fit(x[fit_rows])
            pca = params[prefix] = PCAParams(fit.mean_.astype(np.float64), fit.components_.astype(np.float64),
                                             n_components if k < n_components else None)
            info[prefix] = {"dim": int(x.shape[1]), "components": k,
                            "explained_variance": round(float(fit.explained_variance_ratio_.sum()), 4)}
            if k < n_components:
                info[prefix] |= {"requested": n_components, "capped_by": cap_reason(x.shape[1], int(fit_rows.sum()))}
                log.warning("%s: pca_components = %d capped at %d, %s", prefix, n_components, k, info[prefix]["capped_by"])
        k = pca.components.shape[0]
        z = np.full((len(x), k), np.nan, dtype=np.float32)
        z[ok] = pca.apply(x[ok])
        for i in range(k):
            columns[f"{prefix}_pc{i:02d}"] = z[:, i]
        info[prefix]["non_finite_rows"] = int((~ok).sum())
        if (~ok).any():
            log.warning("%s: %d rows have non-finite embeddings; their PCA features are null", prefix, int((~ok).sum()))
    frame = pl.DataFrame({"image_id": image_ids, **columns}).fill_nan(None)
    return frame, info, params


def cap_reason(dims: int, rows: int) -> str:
    """Why a PCA keeps fewer components than asked: the embedding's dimensions or the training rows."""
    return f"the embedding's {dims} dimensions" if dims <= rows else f"the {rows} training rows with an embedding"


def usable_views(embeddings: dict[str, np.ndarray], keys: list[str], is_train: np.ndarray,
                 fitted: dict[str, PCAParams] | None = None) -> dict[str, np.ndarray]:
    """``embeddings`` without the further views that cannot have features: when fitting, a view
    with fewer than two embedded training rows (a column of close-ups that are nearly all absent);
    with a run's ``fitted`` PCA, a view the run fitted none for (a run without embedding features
    fitted none at all: every view is kept for the patient features). A backbone's primary view is
    always kept (too few of its rows is the PCA's error)."""
    out = dict(embeddings)
    for key in keys:
        prefix = column_prefix(key)
        if not split_key(key)[1] or prefix not in out:
            continue
        if fitted is not None:
            if fitted and prefix not in fitted:
                log.warning("%s: the run had no features of this view; not used", prefix)
                del out[prefix]
        elif (np.isfinite(out[prefix]).all(1) & is_train).sum() < 2:
            log.warning("%s: fewer than two training rows have this image; no features of this view", prefix)
            del out[prefix]
    return out


def cross_view_similarity(embeddings: dict[str, np.ndarray], keys: list[str], image_ids: list[str]) -> pl.DataFrame:
    """``image_id`` + ``<view prefix>_cos`` per further view: the cosine similarity of a row's view
    embedding with its primary image's embedding of the same backbone (null where either is missing).
    ``embeddings`` maps column prefix -> array (:func:`read_embeddings`), ``keys`` the store keys read."""
    columns = {}
    for key in keys:
        backbone, view = split_key(key)
        base, other = column_prefix(view_key(backbone)), column_prefix(key)
        if not view or base not in embeddings or other not in embeddings:
            continue
        a, b = embeddings[base].astype(np.float64), embeddings[other].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        columns[f"{other}_cos"] = cos.astype(np.float32)
    return pl.DataFrame({"image_id": image_ids, **columns}).fill_nan(None)
