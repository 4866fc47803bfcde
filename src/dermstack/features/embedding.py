"""Embedding features: a PCA of each backbone's frozen embeddings, fitted on the training rows only."""
from __future__ import annotations

import logging
import re
from typing import Protocol

import numpy as np
import polars as pl
from sklearn.decomposition import PCA

from dermstack.errors import DataError

log = logging.getLogger(__name__)


class EmbeddingSource(Protocol):
    """What the features stage needs of ``dermstack.extract.store.EmbeddingStore``."""

    def backbones(self) -> list[str]: ...

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray: ...


def column_prefix(backbone: str) -> str:
    """``emb_<backbone>`` with every character that is not a letter, digit or ``_`` replaced by ``_``."""
    return "emb_" + re.sub(r"[^0-9A-Za-z_]+", "_", backbone).strip("_")


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
                log.warning("%s: %d images have no embedding (e.g. %s); their embedding features are null", backbone, len(absent), absent[:5])
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
                 n_components: int = 32, seed: int = 0) -> tuple[pl.DataFrame, dict]:
    """``image_id`` + ``<prefix>_pcNN`` columns per backbone; a row with a non-finite embedding gets nulls.

    Returns (frame, info) where info maps prefix -> components kept and variance explained."""
    columns: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for prefix, x in embeddings.items():
        ok = np.isfinite(x).all(1)
        fit_rows = ok & is_train
        if fit_rows.sum() < 2:
            raise DataError(f"{prefix}: fewer than two training rows with a finite embedding to fit the PCA on")
        k = int(min(n_components, x.shape[1], fit_rows.sum()))
        pca = PCA(n_components=k, random_state=seed, svd_solver="auto").fit(x[fit_rows])
        z = np.full((len(x), k), np.nan, dtype=np.float32)
        z[ok] = pca.transform(x[ok])
        for i in range(k):
            columns[f"{prefix}_pc{i:02d}"] = z[:, i]
        info[prefix] = {"dim": int(x.shape[1]), "components": k, "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
                        "non_finite_rows": int((~ok).sum())}
        if (~ok).any():
            log.warning("%s: %d rows have non-finite embeddings; their PCA features are null", prefix, int((~ok).sum()))
    frame = pl.DataFrame({"image_id": image_ids, **columns}).fill_nan(None)
    return frame, info
