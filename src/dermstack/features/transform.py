"""What the features stage learned from the training rows, to apply unchanged to new rows.

Two things depend on the training rows: the metadata columns dropped because their missingness
leaks the label (they also shape the ugly-duckling distances), and each backbone's embedding PCA.
Stored beside ``features.parquet`` as ``features.transform.npz`` (plain arrays, no pickle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermstack.atomic import atomic_path
from dermstack.errors import DataError, reading


@dataclass(frozen=True)
class PCAParams:
    """``z = (x - mean) @ components.T`` (sklearn's PCA.transform without whitening). ``requested``:
    the ``pca_components`` asked for, when more than the k the training rows and dimensions allow."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    requested: int | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.mean.shape[0]:
            raise DataError(f"embedding has {x.shape[1]} dimensions, the fitted PCA expects {self.mean.shape[0]}")
        x = np.asarray(x, dtype=np.float32)  # no float64 copy of a (400k x D) embedding matrix
        return (x - self.mean.astype(np.float32)) @ self.components.T.astype(np.float32)


@dataclass
class FeatureTransform:
    """Columns dropped for leaky missingness, and each embedding prefix's PCA."""

    dropped: list[str] = field(default_factory=list)
    pca: dict[str, PCAParams] = field(default_factory=dict)

    @staticmethod
    def path_for(features_path: str | Path) -> Path:
        p = Path(features_path)
        return p.with_name(p.name.removesuffix(".parquet") + ".transform.npz")

    def write(self, path: str | Path) -> Path:
        arrays = {"dropped": np.array(self.dropped, dtype=str)}
        for prefix, p in self.pca.items():
            arrays[f"pca/{prefix}/mean"] = p.mean
            arrays[f"pca/{prefix}/components"] = p.components
            if p.requested is not None:
                arrays[f"pca/{prefix}/requested"] = np.array(p.requested)
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return path

    @classmethod
    def read(cls, path: str | Path) -> FeatureTransform:
        if not Path(path).exists():
            raise DataError("no fitted feature transform (re-run the features stage to write it)", file=str(path))
        with reading(path, "fitted feature transform"), np.load(path, allow_pickle=False) as z:
            prefixes = sorted({k.split("/")[1] for k in z.files if k.startswith("pca/")})
            return cls([str(c) for c in z["dropped"]],
                       {p: PCAParams(z[f"pca/{p}/mean"], z[f"pca/{p}/components"],
                                     int(z[f"pca/{p}/requested"]) if f"pca/{p}/requested" in z.files else None)
                        for p in prefixes})
