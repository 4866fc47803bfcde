"""Patient-relative features: how a lesion compares with the same patient's other lesions.

Per patient (and per patient and anatomical site): z-score and rank of every numeric feature, the
lesion count, and "ugly duckling" scores: mean and nearest distance to the patient's other lesions
in patient-standardised feature space, a local outlier factor within the patient, and the mean
cosine distance to the patient's other lesions in each embedding space. Everything is computed
from the patient's own rows and never from the target, so the features are fold-safe and a
lesion's values do not change when another patient's rows do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

#: Anatomical-site columns, in order of preference, for the per patient+site statistics.
SITE_COLUMNS = ("anatom_site_general", "tbp_lv_location_simple", "localization", "anatom_site", "site")
GROUP, GROUP_SITE = "__patient", "__patient_site"


@dataclass
class PatientConfig:
    """Ugly-duckling settings: LOF neighbours, and the most lesions one patient is compared against."""

    lof_neighbors: int = 20
    #: a patient with more lesions is compared against this many of them, evenly spaced by image_id
    max_reference: int = 2048
    block: int = 1024


def group_column(df: pl.DataFrame) -> str | None:
    """``patient_id`` when any row has one, else ``lesion_id``, else None (each row on its own)."""
    return next((c for c in ("patient_id", "lesion_id") if c in df.columns and df[c].null_count() < df.height), None)


def site_column(df: pl.DataFrame) -> str | None:
    return next((c for c in SITE_COLUMNS if c in df.columns and df[c].null_count() < df.height), None)


def _zscore(col: str, group: str) -> pl.Expr:
    x = pl.col(col)
    std = x.std().over(group)
    z = pl.when(std > 0).then((x - x.mean().over(group)) / std).when(std == 0).then(0.0)
    return pl.when(x.is_not_null()).then(z)


def _rank(col: str, group: str) -> pl.Expr:
    x = pl.col(col)
    return x.rank("average").over(group) / x.count().over(group)


def group_frame(df: pl.DataFrame) -> pl.DataFrame:
    """``image_id`` and the patient / patient+site keys; a row without a patient is its own group."""
    g = group_column(df)
    key = pl.coalesce(pl.col(g), pl.col("image_id")) if g else pl.col("image_id")
    site = site_column(df)
    key = key.cast(pl.String)
    site_key = pl.concat_str([key, pl.col(site).cast(pl.String).fill_null("<na>")], separator="\x1f") if site else key
    return df.select("image_id", key.alias(GROUP), site_key.alias(GROUP_SITE))


def relative_features(df: pl.DataFrame, numeric: list[str]) -> pl.DataFrame:
    """z-scores, ranks and counts; ``df`` holds image_id, the numeric columns and the group keys."""
    exprs = [pl.len().over(GROUP).cast(pl.Int32).alias("patient_lesion_count"),
             pl.len().over(GROUP_SITE).cast(pl.Int32).alias("patient_site_lesion_count")]
    for col in numeric:
        exprs += [_zscore(col, GROUP).alias(f"{col}_patient_z"), _zscore(col, GROUP_SITE).alias(f"{col}_patient_site_z"),
                  _rank(col, GROUP).alias(f"{col}_patient_rank")]
    return df.select(pl.col("image_id"), *exprs)


# -- ugly duckling ------------------------------------------------------------------------------
def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def lof_and_distances(x: np.ndarray, k: int, max_reference: int = 2048, block: int = 1024) -> np.ndarray:
    """Columns (mean distance to the others, nearest distance, local outlier factor) of each row of ``x``.

    The LOF is that of scikit-learn's ``LocalOutlierFactor`` (``-negative_outlier_factor_``) with
    ``n_neighbors=min(k, n - 1)``. Above ``max_reference`` rows, every row is compared against
    ``max_reference`` evenly spaced rows only."""
    n = len(x)
    out = np.full((n, 3), np.nan)
    if n < 2:
        return out
    ref_idx = np.arange(n) if n <= max_reference else np.unique(np.linspace(0, n - 1, max_reference).round().astype(int))
    ref = x[ref_idx]
    m = len(ref)
    pos_in_ref = np.full(n, -1)
    pos_in_ref[ref_idx] = np.arange(m)
    k = min(k, m - 1)

    def neighbours(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = _sq_dist(x[rows], ref)
        own = pos_in_ref[rows]
        has = own >= 0
        d[np.flatnonzero(has), own[has]] = np.inf
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        finite = np.where(np.isinf(d), 0.0, d)
        mean = finite.sum(1) / (m - has)
        return nn, np.take_along_axis(d, nn, 1), mean

    # k-distance and local reachability density of the reference rows
    ref_nn, ref_nd = np.empty((m, k), int), np.empty((m, k))
    for s in range(0, m, block):
        rows = ref_idx[s:s + block]
        ref_nn[s:s + block], ref_nd[s:s + block], _ = neighbours(rows)
    kdist = ref_nd.max(1)
    lrd_ref = 1.0 / (np.maximum(kdist[ref_nn], ref_nd).mean(1) + 1e-10)
    for s in range(0, n, block):
        rows = np.arange(s, min(s + block, n))
        nn, nd, mean = neighbours(rows)
        lrd = 1.0 / (np.maximum(kdist[nn], nd).mean(1) + 1e-10)
        out[rows, 0] = mean
        out[rows, 1] = nd.min(1)
        out[rows, 2] = lrd_ref[nn].mean(1) / lrd
    return out


def _group_bounds(keys: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal keys in sorted ``keys``, plus len(keys)."""
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate([[0], change, [len(keys)]])


def ugly_duckling(order: pl.DataFrame, z: np.ndarray, cfg: PatientConfig) -> np.ndarray:
    """Mean / nearest distance and LOF per row of ``z`` (rows sorted by patient, see ``order``)."""
    bounds = _group_bounds(order[GROUP].to_numpy())
    out = np.full((len(z), 3), np.nan)
    scale = np.sqrt(max(z.shape[1], 1))
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a >= 2:
            out[a:b] = lof_and_distances(z[a:b], cfg.lof_neighbors, cfg.max_reference, cfg.block)
    out[:, :2] /= scale
    return out


def cosine_ugly_duckling(keys: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Mean cosine distance of each row to the other rows with the same key (rows sorted by key)."""
    e = emb.astype(np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
    bounds = _group_bounds(keys)
    sums = np.add.reduceat(e, bounds[:-1], axis=0)
    sizes = np.diff(bounds)
    row_group = np.repeat(np.arange(len(sizes)), sizes)
    n = sizes[row_group]
    self_sim = (e * e).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sim = ((e * sums[row_group]).sum(1) - self_sim) / (n - 1)
    return np.where(n >= 2, 1.0 - mean_sim, np.nan)


def patient_features(df: pl.DataFrame, numeric: list[str], embeddings: dict[str, np.ndarray] | None = None,
                     cfg: PatientConfig | None = None) -> pl.DataFrame:
    """All patient-relative features. ``df``: image_id, patient_id/lesion_id, site and ``numeric`` columns;
    ``embeddings``: name -> (len(df), D) array aligned with ``df``'s rows."""
    cfg = cfg or PatientConfig()
    keyed = pl.concat([df.select(numeric), group_frame(df)], how="horizontal").with_row_index("__row")
    rel = relative_features(keyed, numeric)
    order = keyed.select("__row", GROUP, "image_id").sort(GROUP, "image_id")
    rows = order["__row"].to_numpy()
    zcols = [f"{c}_patient_z" for c in numeric]
    z = rel.select(zcols).to_numpy()[rows] if zcols else np.zeros((len(rows), 0))
    z = np.nan_to_num(z.astype(np.float64), nan=0.0)
    ud = np.full((len(rows), 3), np.nan)
    ud[rows] = ugly_duckling(order, z, cfg)
    extra = {"ugly_duckling_mean_dist": ud[:, 0], "ugly_duckling_nn_dist": ud[:, 1], "ugly_duckling_lof": ud[:, 2]}
    keys = order[GROUP].to_numpy()
    for name, emb in (embeddings or {}).items():
        col = np.full(len(rows), np.nan)
        col[rows] = cosine_ugly_duckling(keys, np.asarray(emb)[rows])
        extra[f"{name}_patient_cos_dist"] = col
    extra_df = pl.DataFrame(extra).fill_nan(None)
    return pl.concat([rel, extra_df], how="horizontal")
