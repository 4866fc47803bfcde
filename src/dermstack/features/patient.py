"""Patient-relative features: how a lesion compares with the same patient's other lesions.

Per patient (and per patient and anatomical site): z-score and rank of every numeric feature, the
lesion count, and "ugly duckling" scores: mean and nearest distance to the patient's other lesions
in patient-standardised feature space, a local outlier factor within the patient, and the mean
cosine distance to the patient's other lesions in each embedding space. Everything is computed
from the patient's own rows and never from the target, so the features are fold-safe and a
lesion's values do not change when another patient's rows do.

Only a real patient identifier (``patient_id``) groups rows. Grouping by ``lesion_id`` instead (as
HAM10000 would allow: no patient ids, several images per lesion) measures how the dataset was
curated: the "lesion count" becomes the number of images the curators kept of one lesion, and the
ugly-duckling scores compare images of one lesion with each other. Such a dataset's images of a
lesion are pooled instead (:mod:`dermstack.features.pooling`) and these features are not built.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

#: Anatomical-site columns, in order of preference, for the per patient+site statistics.
SITE_COLUMNS = ("anatom_site_general", "tbp_lv_location_simple", "localization", "anatom_site", "site")
GROUP, GROUP_SITE, HAS_PATIENT = "__patient", "__patient_site", "__has_patient"


@dataclass
class PatientConfig:
    """Ugly-duckling settings: LOF neighbours, and the most lesions one patient is compared against."""

    lof_neighbors: int = 20
    #: a patient with more lesions is compared against this many of them, evenly spaced by image_id
    max_reference: int = 256
    block: int = 1024


def group_column(df: pl.DataFrame) -> str | None:
    """``patient_id`` when any row has one, else None: no patient context (lesions are not patients)."""
    return "patient_id" if "patient_id" in df.columns and df["patient_id"].null_count() < df.height else None


#: Features that count a group's rows: with groups that are not patients they only measure curation.
COUNT_FEATURES = ("patient_lesion_count", "patient_site_lesion_count")


def not_built_reason(df: pl.DataFrame) -> str | None:
    """Why no patient-relative feature can be built from ``df`` (None when a patient id exists)."""
    if group_column(df) is not None:
        return None
    if "lesion_id" in df.columns and df["lesion_id"].drop_nulls().is_duplicated().any():
        return ("no patient_id: grouping by lesion_id would compare images of one lesion with each other, and "
                f"{', '.join(COUNT_FEATURES)} would count the images the curators kept of a lesion (how the "
                "dataset was assembled, not the lesion)")
    return "no patient_id: no row has another lesion of its patient to compare with"


def site_column(df: pl.DataFrame) -> str | None:
    return next((c for c in SITE_COLUMNS if c in df.columns and df[c].null_count() < df.height), None)


#: the age bands lesions are grouped in (the report's subgroups, the score features' cohorts)
AGE_EDGES = (30, 45, 60, 75)


def age_bin(age: pl.Expr) -> pl.Expr:
    """Age in years to bins "<30", "30-44", ..., "75+" (null stays null)."""
    expr = pl.when(age < AGE_EDGES[0]).then(pl.lit(f"<{AGE_EDGES[0]}"))
    for lo, hi in zip(AGE_EDGES, AGE_EDGES[1:]):
        expr = expr.when(age < hi).then(pl.lit(f"{lo}-{hi - 1}"))
    return expr.when(age.is_not_null()).then(pl.lit(f"{AGE_EDGES[-1]}+")).otherwise(None)


def group_frame(df: pl.DataFrame) -> pl.DataFrame:
    """``image_id``, integer patient / patient+site keys and ``__has_patient``; a row without a patient
    is its own group (never its lesion's: images of one lesion are not lesions of a patient)."""
    g = group_column(df)
    key = pl.coalesce(g, "image_id") if g else pl.col("image_id")
    has_patient = pl.col(g).is_not_null() if g else pl.lit(False)
    site = site_column(df)
    key = key.cast(pl.String)
    site_key = pl.concat_str([key, pl.col(site).cast(pl.String).fill_null("<na>")], separator="\x1f") if site else key
    return df.select("image_id", key.rank("dense").alias(GROUP), site_key.rank("dense").alias(GROUP_SITE),
                     has_patient.alias(HAS_PATIENT))


def _zscores(df: pl.DataFrame, numeric: list[str], key: str, suffix: str) -> pl.DataFrame:
    """(x - group mean) / group std of each column: 0 when the std is 0, null for a lone or missing value."""
    stats = df.group_by(key).agg([pl.col(c).mean().alias(f"{c}\0mean") for c in numeric]
                                 + [pl.col(c).std().alias(f"{c}\0std") for c in numeric])
    joined = df.select(key, *numeric).join(stats, on=key, how="left", maintain_order="left")
    exprs = []
    for c in numeric:
        x, mean, std = pl.col(c), pl.col(f"{c}\0mean"), pl.col(f"{c}\0std")
        z = pl.when(std > 0).then((x - mean) / std).when(std == 0).then(0.0)
        exprs.append(pl.when(x.is_not_null()).then(z).alias(f"{c}{suffix}"))
    return joined.select(exprs)


def relative_features(df: pl.DataFrame, numeric: list[str]) -> pl.DataFrame:
    """z-scores, ranks and counts; ``df`` holds image_id, the numeric columns, the group keys and
    ``__has_patient`` (as :func:`group_frame` makes them; a row without a patient has no count: 1
    would only say its id is blank)."""
    has = pl.col(HAS_PATIENT)
    counts = df.select(pl.col("image_id"),
                       pl.when(has).then(pl.len().over(GROUP)).cast(pl.Int32).alias("patient_lesion_count"),
                       pl.when(has).then(pl.len().over(GROUP_SITE)).cast(pl.Int32).alias("patient_site_lesion_count"))
    z = _zscores(df, numeric, GROUP, "_patient_z")
    zs = _zscores(df, numeric, GROUP_SITE, "_patient_site_z")
    rank = df.select([(pl.col(c).rank("average").over(GROUP) / pl.col(c).count().over(GROUP)).alias(f"{c}_patient_rank") for c in numeric])
    out = pl.concat([counts, z, zs, rank], how="horizontal")
    return out.select("image_id", "patient_lesion_count", "patient_site_lesion_count",
                      *[f"{c}{s}" for c in numeric for s in ("_patient_z", "_patient_site_z", "_patient_rank")])


# -- ugly duckling ------------------------------------------------------------------------------
def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return np.sqrt(np.maximum(d, 0, out=d), out=d)


def _neighbours(x: np.ndarray, rows: np.ndarray, ref: np.ndarray, self_pos: np.ndarray, k: int):
    """k nearest reference rows of x[rows] (a row is not its own neighbour), their distances, and
    the mean distance to all the other reference rows."""
    d = _dist(x[rows], ref)
    has = self_pos >= 0
    total = d.sum(1) - np.where(has, d[np.arange(len(rows)), np.maximum(self_pos, 0)], 0)
    d[np.flatnonzero(has), self_pos[has]] = np.inf
    nn = np.argpartition(d, k - 1, axis=1)[:, :k]
    return nn, np.take_along_axis(d, nn, 1), total / (len(ref) - has)


def lof_and_distances(x: np.ndarray, k: int, max_reference: int = 2048, block: int = 1024) -> np.ndarray:
    """Columns (mean distance to the others, nearest distance, local outlier factor) of each row of ``x``.

    The LOF is that of scikit-learn's ``LocalOutlierFactor`` (``-negative_outlier_factor_``) with
    ``n_neighbors=min(k, n - 1)``. Above ``max_reference`` rows, every row is compared against
    ``max_reference`` evenly spaced rows only (the reference set)."""
    n = len(x)
    out = np.full((n, 3), np.nan)
    if n < 2:
        return out
    ref_idx = np.arange(n) if n <= max_reference else np.unique(np.linspace(0, n - 1, max_reference).round().astype(int))
    ref, m = x[ref_idx], len(ref_idx)
    pos_in_ref = np.full(n, -1)
    pos_in_ref[ref_idx] = np.arange(m)
    k = min(k, m - 1)

    def scan(rows: np.ndarray):
        parts = [_neighbours(x, rows[s:s + block], ref, pos_in_ref[rows[s:s + block]], k) for s in range(0, len(rows), block)]
        return [np.concatenate(p) for p in zip(*parts)]

    ref_nn, ref_nd, ref_mean = scan(ref_idx)
    kdist = ref_nd.max(1)
    lrd_ref = 1.0 / (np.maximum(kdist[ref_nn], ref_nd).mean(1) + 1e-10)
    nn, nd, mean = (ref_nn, ref_nd, ref_mean) if m == n else scan(np.arange(n))
    lrd = 1.0 / (np.maximum(kdist[nn], nd).mean(1) + 1e-10)
    out[:, 0], out[:, 1], out[:, 2] = mean, nd.min(1), lrd_ref[nn].mean(1) / lrd
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
    # many small matrix products: a multi-threaded BLAS spends far longer waking threads than computing
    with threadpool_limits(1, user_api="blas"):
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a >= 2:
                out[a:b] = lof_and_distances(z[a:b], cfg.lof_neighbors, cfg.max_reference, cfg.block)
    out[:, :2] /= scale
    return out


def cosine_ugly_duckling(keys: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Mean cosine distance of each row to the other rows with the same key (rows sorted by key).

    Rows with a non-finite embedding are left out (and get NaN)."""
    e = np.asarray(emb, dtype=np.float32)
    valid = np.isfinite(e).all(1)
    e = np.where(valid[:, None], e, 0)
    norm = np.sqrt(np.einsum("ij,ij->i", e, e))[:, None]
    e = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
    bounds = _group_bounds(keys)
    sums = np.add.reduceat(e, bounds[:-1], axis=0)
    sizes = np.add.reduceat(valid.astype(np.int64), bounds[:-1])
    row_group = np.repeat(np.arange(len(sizes)), np.diff(bounds))
    n = np.where(valid, sizes[row_group], 0)
    self_sim = np.einsum("ij,ij->i", e, e)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sim = (np.einsum("ij,ij->i", e, sums[row_group]) - self_sim) / (n - 1)
    return np.where(n >= 2, 1.0 - mean_sim, np.nan)


def patient_features(df: pl.DataFrame, numeric: list[str], embeddings: dict[str, np.ndarray] | None = None,
                     cfg: PatientConfig | None = None, distance_columns: list[str] | None = None) -> pl.DataFrame:
    """All patient-relative features. ``df``: image_id, patient_id/lesion_id, site and ``numeric`` columns;
    ``embeddings``: name -> (len(df), D) array aligned with ``df``'s rows; ``distance_columns``: the
    columns (of ``numeric``, default all) whose patient z-scores span the ugly-duckling feature space."""
    cfg = cfg or PatientConfig()
    distance_columns = numeric if distance_columns is None else distance_columns
    keyed = pl.concat([df.select(numeric), group_frame(df)], how="horizontal").with_row_index("__row")
    rel = relative_features(keyed, numeric)
    order = keyed.select("__row", GROUP, "image_id").sort(GROUP, "image_id")
    rows = order["__row"].to_numpy()
    zcols = [f"{c}_patient_z" for c in distance_columns]
    z = rel.select(zcols).to_numpy().astype(np.float32)[rows] if zcols else np.zeros((len(rows), 0), np.float32)
    z = np.nan_to_num(z, nan=0.0)
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
