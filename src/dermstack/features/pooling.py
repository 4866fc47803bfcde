"""Pooling the images of one lesion when a dataset has several per lesion and no patient ids (HAM10000).

Such images are views of one lesion, not lesions of a patient: comparing them with each other, or
counting them, measures how the dataset was curated. Instead every image gets the mean of its
lesion's embeddings and image features (NaN-aware: an image that failed to embed or measure does
not count) and is still scored on its own row. Folds group by lesion, so pooling never mixes
training and validation rows; the pool is also split-local (a lesion's test images pool only
with each other).
"""
from __future__ import annotations

import logging

import numpy as np
import polars as pl

from dermstack.features.patient import group_column

log = logging.getLogger(__name__)


def lesion_groups(df: pl.DataFrame) -> np.ndarray | None:
    """Integer pool of each row (its lesion within its split), or None when there is nothing to pool:
    a patient id exists (patient features look at lesions) or no lesion has two images."""
    if group_column(df) is not None or "lesion_id" not in df.columns:
        return None
    key = pl.concat_str([pl.col("split"), pl.coalesce(pl.col("lesion_id").cast(pl.String), pl.col("image_id"))],
                        separator="\x1f")
    groups = df.select(key.rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    return groups if np.bincount(groups).max() > 1 else None


def pool_array(groups: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` replaced by the NaN-aware mean of its group's rows (NaN where all are NaN)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    n = len(np.bincount(groups))
    sums = np.zeros((n, x.shape[1]))
    counts = np.zeros((n, x.shape[1]))
    np.add.at(sums, groups, np.where(ok, x, 0.0))
    np.add.at(counts, groups, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return mean[groups]


def pool_frame(groups: np.ndarray, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (image_id + numeric columns, rows aligned with ``groups``) with every column pooled."""
    cols = [c for c in frame.columns if c != "image_id"]
    pooled = pool_array(groups, frame.select(pl.col(cols).cast(pl.Float64)).to_numpy()) if cols else None
    out = pl.DataFrame({"image_id": frame["image_id"], **{c: pooled[:, j] for j, c in enumerate(cols)}})
    return out.fill_nan(None)


def pooling_info(groups: np.ndarray) -> dict:
    """What was pooled, for the FeatureSet's info."""
    sizes = np.bincount(groups)
    return {"by": "lesion_id", "images": int(len(groups)), "lesions": int(len(sizes)),
            "lesions_with_several_images": int((sizes > 1).sum()), "max_images_per_lesion": int(sizes.max())}
