"""The near-duplicate threshold of the overlap audit (``dermstack.data.audit.NEAR_THRESHOLD``), measured.

    flock /tmp/dermstack-cpu.lock .venv/bin/python benchmarks/near_duplicates.py [--copies N] [--backbone NAME] [--smoke]

The HAM10000 dev images (2,479, 200x150 JPEGs) are split by lesion into a *reference* set (the
training data of a run) and *queries* (the external data):

- **copies** of ``--copies`` reference images, each three ways: re-encoded as JPEG quality 70,
  resized to 0.9 of each side, cropped by 5 % of each side (at a random offset); resized and
  cropped copies are saved as PNG, so only the geometry changes. Each should be found, and paired
  with its original;
- **other images of the same lesion** (HAM10000 lesions photographed several times): for every
  lesion with several images, one is a reference image and the others are queries; they are
  *distinct* pictures and must not be called near-duplicates (the audit names them ``lesion``
  where the id space is shared, which HAM's lesion ids are across HAM data);
- **distinct images**: the remaining lesions, whose images are all queries.

Every image is embedded by the backbone (default ``efficientnet_lite0``, the default config's) as
``dermstack run`` embeds it; a query is flagged at threshold t when its most similar reference
image, by the audit's own cosine similarity (centred on the reference mean,
:meth:`~dermstack.data.audit.AuditRows.unit_vectors`), reaches t. Precision: flagged copies paired
with their own original over everything flagged; recall: per kind of copy. Printed for a grid of
thresholds, raw (uncentred) cosine beside it. ``precision`` counts a flagged other image of the
same lesion as a false positive; ``precision (other lesions)`` leaves those out (HAM10000 holds
repeat photographs of one lesion that are near-copies of each other, which the audit is right to
flag where lesion ids cannot be matched). ``--work DIR`` keeps the copies and embeddings there and
reuses them on the next run (the extraction is resumable).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from dermstack.data.audit import NEAR_STANDOUT, NEAR_STANDOUT_RANK, NEAR_THRESHOLD, AuditRows, find_pairs
from dermstack.data.readers import ingest
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings
from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_work, tiny_copy

KINDS = ("jpeg70", "resize0.9", "crop5%")
GRID = (0.70, 0.75, 0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)


def make_copy(src: Path, kind: str, out: Path, rng: random.Random) -> Path:
    img = Image.open(src).convert("RGB")
    w, h = img.size
    if kind == "jpeg70":
        out = out.with_suffix(".jpg")
        img.save(out, quality=70)
        return out
    if kind == "resize0.9":
        img = img.resize((round(0.9 * w), round(0.9 * h)), Image.Resampling.BILINEAR)
    else:  # 5 % of each side cut away, split at random between its two edges
        dx, dy = round(0.05 * w), round(0.05 * h)
        left, top = rng.randint(0, dx), rng.randint(0, dy)
        img = img.crop((left, top, w - (dx - left), h - (dy - top)))
    out = out.with_suffix(".png")
    img.save(out)
    return out


def split(table: LesionTable, copies: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reference rows, query rows with ``role`` = same lesion / distinct) by lesion."""
    df = table.df.select("image_id", "lesion_id", "image_ref").sort("image_id")
    sizes = df.group_by("lesion_id").len()
    multi = sizes.filter(pl.col("len") > 1)["lesion_id"]
    single = sizes.filter(pl.col("len") == 1)["lesion_id"].sort().to_list()
    random.Random(seed).shuffle(single)
    ref_single = set(single[: len(single) // 2])
    first = pl.col("image_id") == pl.col("image_id").first().over("lesion_id")
    is_multi = pl.col("lesion_id").is_in(multi.implode())
    ref = df.filter((is_multi & first) | pl.col("lesion_id").is_in(list(ref_single)))
    queries = df.filter(~pl.col("image_id").is_in(ref["image_id"].implode())).with_columns(
        pl.when(is_multi).then(pl.lit("same lesion")).otherwise(pl.lit("distinct")).alias("role"))
    return ref, queries


def embed(rows: pl.DataFrame, backbone: str, out: Path, image_size: int | None) -> np.ndarray:
    table = LesionTable(finalize_frame(rows.select("image_id", "image_ref").with_columns(
        pl.lit("train").alias("split"))), TableMeta(dataset="bench"))
    extract_embeddings(table, [backbone], out, ExtractSettings(image_size=image_size))
    return EmbeddingStore(out).read(backbone, rows["image_id"].to_list())


def scores(q: np.ndarray, r: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """Query x reference cosine similarity, centred as the audit centres (or raw)."""
    c = center if center is not None else np.zeros(r.shape[1], np.float32)
    return AuditRows("q", "bench", pl.DataFrame(), q).unit_vectors(c) @ AuditRows("r", "bench", pl.DataFrame(), r).unit_vectors(c).T


def table_of(best: np.ndarray, sim: np.ndarray, truth: np.ndarray, role: np.ndarray) -> pl.DataFrame:
    rows = []
    positive = truth >= 0
    for t in GRID:
        flagged = sim >= t
        tp = flagged & positive & (best == truth)
        other_lesions = flagged & (role != "same lesion")
        row = {"threshold": t, "precision": tp.sum() / max(flagged.sum(), 1),
               "precision (other lesions)": tp.sum() / max(other_lesions.sum(), 1), "recall": tp.sum() / max(positive.sum(), 1)}
        for kind in KINDS:
            k = role == kind
            row[f"recall {kind}"] = (tp & k).sum() / max(k.sum(), 1)
        for neg in ("same lesion", "distinct"):
            k = role == neg
            row[f"flagged {neg}"] = f"{(flagged & k).sum()}/{k.sum()}"
        rows.append(row)
    return pl.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=400, help="reference images copied (each three ways)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=None, help="extraction input size (default: the backbone's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the copies and embeddings (reused when present)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    src = shared_data_dir() / "ham10000-dev"
    work = smoke_work("near_duplicates") if args.smoke else args.work or Path(tempfile.mkdtemp(prefix="dermstack-near-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        src = tiny_copy("ham10000", src, work / "ham", per_class=4, max_px=64)
        args.copies, args.image_size = 6, 64
    table, _ = ingest("ham10000", src)
    ref, queries = split(table, args.copies, args.seed)
    rng = random.Random(args.seed)
    originals = ref.sample(min(args.copies, ref.height), seed=args.seed)
    copies = []
    (work / "copies").mkdir(exist_ok=True)
    for image_id, path in originals.select("image_id", "image_ref").iter_rows():
        for kind in KINDS:
            out = make_copy(Path(path), kind, work / "copies" / f"{image_id}_{kind}", rng)
            copies.append({"image_id": f"{image_id}_{kind}", "image_ref": str(out), "role": kind, "original": image_id})
    queries = pl.concat([queries.select("image_id", "image_ref", "role", pl.lit(None, pl.String).alias("original")),
                         pl.DataFrame(copies)])
    t0 = time.perf_counter()
    r = embed(ref, args.backbone, work / "reference.h5", args.image_size)
    q = embed(queries, args.backbone, work / "queries.h5", args.image_size)
    seconds = time.perf_counter() - t0
    index = {i: k for k, i in enumerate(ref["image_id"].to_list())}
    truth = np.array([index.get(o, -1) if o else -1 for o in queries["original"].to_list()])
    role = queries["role"].to_numpy()
    print(f"{args.backbone}: {ref.height} reference images, {queries.height} queries ({len(copies)} copies of "
          f"{originals.height} reference images, {(role == 'same lesion').sum()} other images of a reference lesion, "
          f"{(role == 'distinct').sum()} distinct); embedded in {seconds:.0f} s", file=sys.stderr)
    pl.Config.set_tbl_rows(40)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    for label, center in (("centred (the audit's)", r.mean(axis=0)), ("raw cosine", None)):
        s = scores(q, r, center)
        best, sim = s.argmax(axis=1), s.max(axis=1)
        print(f"\n{label}: most similar reference image per query")
        print(table_of(best, sim, truth, role))
        far = -np.partition(-s, NEAR_STANDOUT_RANK - 1, axis=1)[:, NEAR_STANDOUT_RANK - 1]
        standout = (1 - sim) <= NEAR_STANDOUT * (1 - far)
        print(f"{label}, flagged only where the pair stands out (NEAR_STANDOUT = {NEAR_STANDOUT}: distance at most "
              f"that fraction of the distance to the {NEAR_STANDOUT_RANK}th most similar reference image)")
        print(table_of(best, np.where(standout, sim, -1.0), truth, role))
        for neg in ("same lesion", "distinct"):
            k = role == neg
            if k.any():
                print(f"most similar {neg} image: {sim[k].max():.4f}; 99th percentile {np.percentile(sim[k], 99):.4f}")
        print(f"least similar copy: {sim[truth >= 0].min():.4f}")
    pairs, _ = find_pairs(AuditRows("queries", "bench", queries, q), AuditRows("reference", "bench", ref, r), NEAR_THRESHOLD)
    near = pairs.filter(pl.col("how") == "near")
    found = {(a, b) for a, b in near.select("a", "b").iter_rows()}
    hit = sum((k, t) in found for k, t in enumerate(truth) if t >= 0)
    print(f"\naudit (find_pairs) at NEAR_THRESHOLD = {NEAR_THRESHOLD}: {near['a'].n_unique()} queries with a near pair, "
          f"{hit} of {(truth >= 0).sum()} copies paired with their original")


if __name__ == "__main__":
    main()
