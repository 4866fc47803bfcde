"""The overlap audit: which rows of two datasets (or of one) are the same image, lesion or patient.

Five kinds of evidence, strongest first (:data:`KINDS`):

- ``id``: the same image id, where the two datasets share an image id space (:data:`ID_SPACES`:
  ISIC 2024, ISIC archive exports, HAM10000 and MILK10k images all carry ISIC ids);
- ``hash``: byte-identical image files (the SHA-256 recorded at ingest, any view of a row);
- ``near``: the same picture re-encoded, resized or slightly cropped: cosine similarity of the
  backbone embeddings, centred on the reference rows' mean, at or above a threshold
  (:data:`NEAR_THRESHOLD`, measured by ``benchmarks/near_duplicates.py``), and standing out from the
  row's other neighbours (:data:`NEAR_STANDOUT`);
- ``lesion`` / ``patient``: the same lesion or patient id, where the datasets share that id space.

:func:`find_pairs` gives every pair found (one row per pair, its strongest kind in ``how``, the
others in ``also``); across two datasets every kind counts, within one dataset only ``hash`` and
``near`` do (rows of one lesion or patient are the grouping a FoldPlan already respects).
:func:`strongest` keeps one pair per row of the first dataset, as ``evaluate`` reports it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from dermstack.data.table import LesionTable, hash_column, image_views, split_key

log = logging.getLogger(__name__)

#: evidence of overlap, strongest first
KINDS = ("id", "hash", "near", "lesion", "patient")
#: cosine similarity (centred embeddings) at or above which two images are the same picture, measured
#: with efficientnet_lite0 on the HAM10000 dev images (benchmarks/near_duplicates.py): copies re-encoded
#: at JPEG 70, resized by 0.9 or cropped by 5 % are found 98.8 % of the time (crops 96.8 %), 1 of 698
#: images of other lesions is flagged (precision 0.999), and 30 of 612 other photographs of a
#: training lesion (HAM10000 repeats a lesion's picture), which only a lesion id could otherwise catch
NEAR_THRESHOLD = 0.86
#: neighbours kept per row of the first dataset (the most similar first)
NEAR_NEIGHBOURS = 5
#: A copy stands out: its cosine distance (1 - similarity) is at most this fraction of the distance to
#: the row's :data:`NEAR_STANDOUT_RANK`-th most similar reference image (Lowe's ratio test). In a
#: collection of look-alike pictures (synthetic crops, uniform tiles) many neighbours pass the
#: threshold and none stands out: on the demo's 6,000 synthetic crops 26 % of rows have a neighbour
#: at 0.86 and none has a ratio below 0.35, while re-encoded or cropped HAM10000 copies (0.97-0.997)
#: sit near 0.1, and 60 % of HAM10000's repeat photographs of one lesion stay flagged
NEAR_STANDOUT = 0.35
NEAR_STANDOUT_RANK = 5
#: rows scored against the reference at once (a block of the similarity matrix), and the most cells a block has
BLOCK = 1024
BLOCK_CELLS = 1 << 27

#: dataset -> id column kind -> id space. Two datasets share a kind of id only when both name the same
#: space; a dataset not listed has its own space, shared only with itself.
ID_SPACES: dict[str, dict[str, str]] = {
    "isic2024": {"image": "isic", "lesion": "isic", "patient": "isic"},
    "isic-archive": {"image": "isic", "lesion": "isic", "patient": "isic"},
    "milk10k": {"image": "isic", "lesion": "isic"},
    "ham10000": {"image": "isic", "lesion": "ham10000"},
    "synthetic-isic2024": {"image": "synthetic", "lesion": "synthetic", "patient": "synthetic"},
}
#: columns holding a row's image ids, per dataset (MILK10k rows are lesions with two ISIC images)
IMAGE_ID_COLUMNS: dict[str, tuple[str, ...]] = {"milk10k": ("isic_id_derm", "isic_id_clin")}
ID_COLUMNS = {"image": "image_id", "lesion": "lesion_id", "patient": "patient_id"}


def id_space(dataset: str, kind: str) -> str:
    return ID_SPACES.get(dataset, {}).get(kind, f"{dataset}:{kind}")


@dataclass
class AuditRows:
    """One dataset as the audit sees it: ``df`` (image_id, lesion_id, patient_id, the image id and
    digest columns), its id spaces (``dataset``), and optionally the rows' embeddings (NaN rows: not
    embedded)."""

    name: str
    dataset: str
    df: pl.DataFrame
    embeddings: np.ndarray | None = None

    @classmethod
    def from_table(cls, table: LesionTable | pl.DataFrame, dataset: str, name: str | None = None,
                   embeddings: np.ndarray | None = None) -> AuditRows:
        df = table.df if isinstance(table, LesionTable) else table
        return cls(name or dataset, dataset, df, embeddings)

    def __len__(self) -> int:
        return self.df.height

    def image_ids(self) -> pl.DataFrame:
        """(row, id) of every image id of every row."""
        cols = [c for c in IMAGE_ID_COLUMNS.get(self.dataset, ("image_id",)) if c in self.df.columns]
        return self._long(cols)

    def digests(self) -> pl.DataFrame:
        cols = [hash_column(v) for v in image_views(self.df) if hash_column(v) in self.df.columns]
        return self._long(cols)

    @property
    def hashed(self) -> bool:
        return not self.digests().is_empty()

    def _long(self, cols: list[str]) -> pl.DataFrame:
        frame = self.df.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), *[pl.col(c).cast(pl.String) for c in cols])
        if not cols:
            return pl.DataFrame(schema={"row": pl.Int64, "id": pl.String})
        return frame.unpivot(cols, index="row", value_name="id").drop("variable").drop_nulls().unique()

    def ids(self, kind: str) -> pl.DataFrame:
        if kind == "image":
            return self.image_ids()
        col = ID_COLUMNS[kind]
        return self._long([col] if col in self.df.columns else [])

    def unit_vectors(self, center: np.ndarray) -> np.ndarray | None:
        """Embeddings minus ``center``, of unit length (NaN rows stay NaN)."""
        if self.embeddings is None:
            return None
        x = np.asarray(self.embeddings, dtype=np.float32) - center
        with np.errstate(invalid="ignore", divide="ignore"):
            return x / np.linalg.norm(x, axis=1, keepdims=True)


def _equal(a: pl.DataFrame, b: pl.DataFrame, how: str, within: bool) -> pl.DataFrame:
    pairs = a.join(b, on="id").select(pl.col("row").alias("a"), pl.col("row_right").alias("b"), pl.lit(how).alias("how"))
    return pairs.filter(pl.col("a") < pl.col("b")) if within else pairs


def _near(a: np.ndarray, b: np.ndarray, threshold: float, within: bool, k: int = NEAR_NEIGHBOURS) -> pl.DataFrame:
    """Pairs (a, b, similarity) with similarity >= ``threshold`` that stand out from the row's other
    neighbours (:data:`NEAR_STANDOUT`), at most ``k`` per row of ``a`` (within one set: each pair
    once, a < b)."""
    ok_b = np.flatnonzero(np.isfinite(b).all(axis=1))
    bb = np.ascontiguousarray(b[ok_b])
    rows, cols, sims = [], [], []
    step = max(1, min(BLOCK, BLOCK_CELLS // max(len(bb), 1)))  # a block of similarities stays ~512 MB
    for start in range(0, len(a), step):
        block = a[start:start + step]
        ok = np.isfinite(block).all(axis=1)
        s = block @ bb.T if len(bb) else np.zeros((len(block), 0), np.float32)
        s[~ok] = -np.inf
        here = np.arange(start, start + len(block))[:, None]
        if within:
            s[ok_b[None, :] == here] = -np.inf  # a row is not its own neighbour
        rank = NEAR_STANDOUT_RANK
        # too few reference rows to tell a standout: the threshold alone decides
        far = -np.partition(-s, rank - 1, axis=1)[:, rank - 1] if s.shape[1] > rank else np.full(len(block), -1.0)
        if within:  # only pairs (i, j) with i < j
            s[ok_b[None, :] < here] = -np.inf
        kk = min(k, s.shape[1])
        if kk == 0:
            continue
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        val = np.take_along_axis(s, top, axis=1)
        standout = (1 - val) <= NEAR_STANDOUT * (1 - far[:, None])
        i, j = np.nonzero((val >= threshold) & standout)
        rows.append(i + start)
        cols.append(ok_b[top[i, j]])
        sims.append(val[i, j])
    if not rows:
        return pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "similarity": pl.Float64})
    return pl.DataFrame({"a": np.concatenate(rows).astype(np.int64), "b": np.concatenate(cols).astype(np.int64),
                         "similarity": np.concatenate(sims).astype(np.float64)})


def shared_kinds(a: AuditRows, b: AuditRows) -> list[str]:
    """The id kinds (image, lesion, patient) whose values mean the same thing in both datasets."""
    return [k for k in ID_COLUMNS if id_space(a.dataset, k) == id_space(b.dataset, k)]


def find_pairs(a: AuditRows, b: AuditRows | None = None, threshold: float = NEAR_THRESHOLD) -> tuple[pl.DataFrame, dict]:
    """Every pair of a row of ``a`` and a row of ``b`` (of ``a`` itself when ``b`` is None) found by
    any kind of evidence: (a, b, how, also, similarity, same_lesion, same_patient), and what was
    checked (``checked``: kind -> True, or why not)."""
    within = b is None
    b = a if within else b
    checked: dict[str, bool | str] = {}
    frames = []
    names = {"image": "id", "lesion": "lesion", "patient": "patient"}
    shared = shared_kinds(a, b)
    for kind, how in names.items():
        if within:
            checked[how] = "within one dataset: ids are unique and lesions or patients are its own grouping"
        elif kind not in shared:
            checked[how] = f"{a.name} and {b.name} do not share a {kind} id space"
        else:
            checked[how] = True
            frames.append(_equal(a.ids(kind), b.ids(kind), how, within))
    if a.hashed and b.hashed:
        checked["hash"] = True
        frames.append(_equal(a.digests(), b.digests(), "hash", within))
    else:
        checked["hash"] = "no image digests (no images, or a table written before digests were recorded)"
    ua = ub = None
    if a.embeddings is not None and b.embeddings is not None:
        center = np.nanmean(np.asarray(b.embeddings, dtype=np.float32), axis=0)
        ua = a.unit_vectors(center)
        ub = ua if within else b.unit_vectors(center)
        near = _near(ua, ub, threshold, within)
        checked["near"] = True
        frames.append(near.select("a", "b", pl.lit("near").alias("how")))
    else:
        checked["near"] = "no embeddings of both sides (no backbone, or no images)"
    empty = pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "how": pl.String})
    found = pl.concat([f.cast({"a": pl.Int64, "b": pl.Int64}) for f in frames] or [empty])
    rank = {k: i for i, k in enumerate(KINDS)}
    found = (found.with_columns(pl.col("how").replace_strict(rank, return_dtype=pl.Int8).alias("rank")).sort("rank")
             .group_by("a", "b", maintain_order=True).agg(pl.col("how").first(), pl.col("how").slice(1).alias("also"))
             .sort("a", "b"))
    found = found.with_columns(pl.Series("similarity", _pair_similarity(ua, ub, found), pl.Float64),
                               _same(a, b, found, "lesion_id"), _same(a, b, found, "patient_id"))
    return found, checked


def _pair_similarity(ua: np.ndarray | None, ub: np.ndarray | None, pairs: pl.DataFrame) -> np.ndarray:
    """Cosine similarity of each pair's unit vectors (NaN where either row has none)."""
    if ua is None or ub is None or pairs.is_empty():
        return np.full(pairs.height, np.nan)
    ia, ib = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    return np.einsum("ij,ij->i", ua[ia], ub[ib]).astype(np.float64)


def _same(a: AuditRows, b: AuditRows, pairs: pl.DataFrame, column: str) -> pl.Series:
    """Whether each pair has the same (non-null) ``column`` value, in one shared id space; null otherwise."""
    name = f"same_{column.removesuffix('_id')}"
    kind = column.removesuffix("_id")
    if column not in a.df.columns or column not in b.df.columns or id_space(a.dataset, kind) != id_space(b.dataset, kind):
        return pl.Series(name, [None] * pairs.height, pl.Boolean)
    va, vb = a.df[column].gather(pairs["a"]), b.df[column].gather(pairs["b"])
    return pl.Series(name, (va == vb).to_list(), pl.Boolean)


def strongest(pairs: pl.DataFrame) -> pl.DataFrame:
    """One pair per row of the first dataset: its strongest kind, then its most similar partner."""
    rank = {k: i for i, k in enumerate(KINDS)}
    return (pairs.with_columns(pl.col("how").replace_strict(rank, return_dtype=pl.Int8).alias("rank"))
            .sort("rank", pl.col("similarity").fill_nan(None), descending=[False, True], nulls_last=True)
            .group_by("a", maintain_order=True).first().drop("rank").sort("a"))


def named(pairs: pl.DataFrame, a: AuditRows, b: AuditRows) -> pl.DataFrame:
    """The pairs with both rows' image ids (``image_id``, ``other_image_id``) and dataset names."""
    return pairs.select(
        pl.lit(a.name).alias("dataset"), a.df["image_id"].gather(pairs["a"]).alias("image_id"),
        pl.lit(b.name).alias("other_dataset"), b.df["image_id"].gather(pairs["b"]).alias("other_image_id"),
        "how", "also", "similarity", "same_lesion", "same_patient")


def read_embeddings(store, key: str, ids: list[str]) -> np.ndarray | None:
    """``ids``' embeddings under ``key`` from a store (``image_ids(key)``, ``read(key, ids)``: an
    EmbeddingStore), NaN rows for images it lacks (failed, or not embedded); None when it has none."""
    have = set(store.image_ids(key))
    present = [i for i in ids if i in have]
    if not present:
        return None
    part = store.read(key, present)
    out = np.full((len(ids), part.shape[1]), np.nan, np.float32)
    out[[k for k, i in enumerate(ids) if i in have]] = part
    return out


def within_findings(pairs: pl.DataFrame) -> pl.DataFrame:
    """The pairs of one dataset worth reporting: identical files anywhere, near-duplicates only where a
    grouped FoldPlan cannot see them (not the same lesion, nor the same patient)."""
    same = pl.col("same_lesion").fill_null(False) | pl.col("same_patient").fill_null(False)
    return pairs.filter((pl.col("how") == "hash") | ~same)


def audit_datasets(sides: list[AuditRows], threshold: float = NEAR_THRESHOLD) -> tuple[pl.DataFrame, dict]:
    """Every finding within each dataset (:func:`within_findings`) and across each pair of datasets
    (every kind), both image ids named (:func:`named`); and a summary: counts per dataset (pair) and kind,
    what was not checked and why."""
    frames, summary = [], {"near_threshold": threshold, "datasets": {s.name: len(s) for s in sides}, "within": {}, "across": {}}
    for s in sides:
        pairs, checked = find_pairs(s, None, threshold)
        kept = within_findings(pairs)
        frames.append(named(kept, s, s))
        repeat = pairs.height - kept.height
        summary["within"][s.name] = {"counts": _counts(kept), "near_same_lesion_or_patient": repeat,
                                     "checked": {k: v for k, v in checked.items() if k in ("hash", "near")}}
    for i, a in enumerate(sides):
        for b in sides[i + 1:]:
            pairs, checked = find_pairs(a, b, threshold)
            frames.append(named(pairs, a, b))
            summary["across"][f"{a.name} | {b.name}"] = {"counts": _counts(pairs), "rows_found": pairs["a"].n_unique(),
                                                        "checked": checked}
    empty = named(pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "how": pl.String, "also": pl.List(pl.String),
                                       "similarity": pl.Float64, "same_lesion": pl.Boolean, "same_patient": pl.Boolean}),
                  sides[0], sides[0])
    out = pl.concat([empty, *frames], how="vertical_relaxed")
    summary["pairs"] = out.height
    return out, summary


def _counts(pairs: pl.DataFrame) -> dict[str, int]:
    return dict(sorted(pairs.group_by("how").len().rows())) if pairs.height else {}


#: the most training rows whose near-duplicates `dermstack run` looks for (every pair: n^2 / 2 dot products)
RUN_NEAR_MAX_ROWS = 20_000


def cross_fold_duplicates(table: LesionTable, fold_of: dict[str, int], embeddings: np.ndarray | None,
                          dataset: str, threshold: float = NEAR_THRESHOLD) -> tuple[pl.DataFrame, dict]:
    """Pairs of training rows in different folds that are the same image (identical bytes, or near-
    duplicate embeddings under another lesion or patient): what a grouped FoldPlan cannot see, and
    what leaks across its folds. ``embeddings`` aligned with ``table``'s training rows, or None."""
    train = table.train.filter(pl.col("image_id").is_in(list(fold_of)))
    side = AuditRows.from_table(train, dataset, dataset, embeddings if embeddings is not None and len(embeddings) == train.height
                                else None)
    pairs, checked = find_pairs(side, None, threshold)
    pairs = within_findings(pairs)
    folds = np.array([fold_of[i] for i in train["image_id"].to_list()])
    pairs = pairs.filter(pl.Series(folds[pairs["a"].to_numpy()] != folds[pairs["b"].to_numpy()]))
    rank = {k: i for i, k in enumerate(KINDS)}
    pairs = pairs.sort(pl.col("how").replace_strict(rank, return_dtype=pl.Int8), pl.col("similarity").fill_nan(None),
                       descending=[False, True], nulls_last=True)
    found = named(pairs, side, side)
    return found, {"cross_fold_pairs": found.height, "counts": _counts(pairs),
                   "checked": {k: v for k, v in checked.items() if k in ("hash", "near")}, "near_threshold": threshold,
                   "examples": found.head(10).select("image_id", "other_image_id", "how", "similarity").to_dicts()}


def audit_run_folds(table: LesionTable, folds: pl.DataFrame, store, dataset: str) -> dict:
    """The overlap audit of a run's training rows where it is cheap (:func:`cross_fold_duplicates`; ``folds``:
    its FoldPlan's table); a warning names the pairs that sit in different folds (metrics.json ``audit``)."""
    fold_of = dict(zip(folds["image_id"].to_list(), folds["fold"].to_list()))
    ids = table.train.filter(pl.col("image_id").is_in(list(fold_of)))["image_id"].to_list()
    key = next((b for b in store.backbones() if not split_key(b)[1]), None) if store is not None else None
    emb = read_embeddings(store, key, ids) if key and len(ids) <= RUN_NEAR_MAX_ROWS else None
    found, summary = cross_fold_duplicates(table, fold_of, emb, dataset)
    if key and len(ids) > RUN_NEAR_MAX_ROWS:
        summary["checked"]["near"] = f"{len(ids)} training rows, more than {RUN_NEAR_MAX_ROWS}: `dermstack data audit` checks them"
    if found.height:
        log.warning("overlap audit: %d pairs of training rows in different folds are the same image (%s), e.g. %s: "
                    "they leak across folds (metrics.json audit; `dermstack data audit` lists every pair)", found.height,
                    ", ".join(f"{n} by {k}" for k, n in summary["counts"].items()),
                    "; ".join(f"{r['image_id']} ~ {r['other_image_id']}" for r in summary["examples"][:3]))
    return summary
