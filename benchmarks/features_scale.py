"""Benchmark: `build_features` (every group but image) on 401,059 synthetic ISIC 2024 lesions.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/features_scale.py [--layout DIR] [--rows N] [--smoke]

The lesions come from `dermstack.data.synth.synthesize_isic2024` (8 px images, not used: only the
metadata CSVs are ingested), cached in --layout (default /tmp/dermstack-bench/isic2024-<rows>).
Embeddings are random 128-d vectors (one fake backbone) so the embedding PCA and the cosine ugly
duckling run too. Each measurement runs in its own process so that its peak RSS is its own:
  1. polars: LesionTable.read + build_features; then the patient z-score / rank / count stage alone;
  2. pandas: that same patient group-by stage written with pandas groupby().transform / rank.
Prints seconds, peak RSS, the ratio to the budget (20 s, 6 GiB) and pandas / polars for the group-by
stage, after checking that the two give the same numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dermstack.testing import SMOKE_HELP, smoke_work

BUDGET_S, BUDGET_GIB = 20.0, 6.0
EMB_DIM = 128
CHECK_COLUMNS = 12


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


SRC = Path(__file__).resolve().parents[1] / "src" / "dermstack"
#: the generator's code: a synthetic layout is rebuilt when it changes
SYNTH_CODE = ("data/synth.py", "data/synth_render.py", "data/synth_marginals.json")


def code_key(*parts: str) -> str:
    """A hash of dermstack's source files ``parts`` (every file without), for the cached inputs below."""
    files = [SRC / p for p in parts] if parts else sorted(SRC.rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(SRC).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


#: where the benchmarks cache what they build; a folder in it without a stamp is an old cache
CACHE_ROOT = Path("/tmp/dermstack-bench")


def cached(folder: Path, key: str) -> bool:
    """True when ``folder`` holds inputs built by code with this ``key`` (:func:`stamp`); otherwise it is
    emptied for a rebuild. Inputs cached by row count alone once outlived the code that built them:
    a figure then measured old features with new models. A folder of the user's (``--layout``) that
    this benchmark did not stamp is read as it is, never removed."""
    stamp_file = folder / "built_by.txt"
    if stamp_file.exists() and stamp_file.read_text() == key:
        return True
    if folder.is_dir() and any(folder.iterdir()):
        if not stamp_file.exists() and CACHE_ROOT.resolve() not in folder.resolve().parents:
            print(f"{folder}: not made by this benchmark (no built_by.txt): read as it is", file=sys.stderr)
            return True
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return False


def stamp(folder: Path, key: str) -> None:
    (folder / "built_by.txt").write_text(key)


def prepare(layout: Path, rows: int, work: Path, **synth) -> Path:
    """The LesionTable parquet of a synthetic layout (made once, then reused); ``synth``: more
    arguments of ``synthesize_isic2024``."""
    lesions = work / "lesions.parquet"
    if lesions.exists():
        return lesions
    from dermstack.data.readers import ingest
    from dermstack.data.synth import synthesize_isic2024

    key = code_key(*SYNTH_CODE) + json.dumps(synth, sort_keys=True)
    if not cached(layout, key):
        t = time.perf_counter()
        synthesize_isic2024(layout, lesions=rows, test_lesions=0, image_size=8, workers=2, **synth)
        stamp(layout, key)
        print(f"synthesised {rows} lesions in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    meta_only = work / "metadata-only"
    meta_only.mkdir(parents=True, exist_ok=True)
    link = meta_only / "train-metadata.csv"
    if not link.exists():
        link.symlink_to((layout / "train-metadata.csv").resolve())
    table, _ = ingest("isic2024", meta_only)
    table.write(lesions)
    return lesions


class RandomStore:
    """A fake EmbeddingStore: one backbone of random vectors (deterministic per row)."""

    def __init__(self, n: int):
        self.emb = np.random.default_rng(0).standard_normal((n, EMB_DIM), dtype=np.float32)

    def backbones(self) -> list[str]:
        return ["random128"]

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        return self.emb[: len(image_ids)]


def child_polars(lesions: Path, work: Path) -> dict:
    import polars as pl

    from dermstack.config import FeaturesConfig
    from dermstack.data.table import LesionTable
    from dermstack.features.build import build_features
    from dermstack.features.patient import group_frame, relative_features

    t = time.perf_counter()
    table = LesionTable.read(lesions)
    store = RandomStore(len(table))
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    fs = build_features(table, FeaturesConfig(image=False), store)
    seconds = time.perf_counter() - t
    peak = peak_gib()
    groups = fs.info["groups"]

    # the patient group-by stage alone, on the same inputs the pandas child gets
    numeric = [c for c in fs.columns(["metadata", "engineered"]) if fs.df.schema[c].is_numeric()]
    keys = table.df.select("image_id", "patient_id", "anatom_site_general")
    inputs = pl.concat([group_frame(keys), fs.df.select(numeric)], how="horizontal")
    t = time.perf_counter()
    rel = relative_features(inputs, numeric)
    t_rel = time.perf_counter() - t
    inputs.write_parquet(work / "groupby_inputs.parquet")
    check = [c for c in rel.columns if c != "image_id"][:: max(1, (rel.width - 1) // CHECK_COLUMNS)]
    rel.select("image_id", *check).write_parquet(work / "groupby_polars.parquet")
    return {"rows": fs.df.height, "features": len(fs.groups), "groups": groups, "read_s": t_read, "build_s": seconds,
            "stage_s": fs.info["seconds"], "peak_gib": peak, "groupby_polars_s": t_rel, "numeric_inputs": len(numeric)}


def child_pandas(work: Path) -> dict:
    import pandas as pd

    from dermstack.features.patient import GROUP, GROUP_SITE, HAS_PATIENT

    df = pd.read_parquet(work / "groupby_inputs.parquet")
    numeric = [c for c in df.columns if c not in ("image_id", GROUP, GROUP_SITE, HAS_PATIENT)]
    t = time.perf_counter()
    x = df[numeric]
    has = df[HAS_PATIENT]
    out = {"patient_lesion_count": df.groupby(GROUP)["image_id"].transform("size").where(has),
           "patient_site_lesion_count": df.groupby(GROUP_SITE)["image_id"].transform("size").where(has)}
    parts = [pd.DataFrame(out)]
    for key, suffix in ((GROUP, "_patient_z"), (GROUP_SITE, "_patient_site_z")):
        g = x.groupby(df[key])
        std = g.transform("std")
        z = (x - g.transform("mean")) / std
        z = z.mask(std == 0, 0.0).mask(x.isna())
        parts.append(z.add_suffix(suffix))
    g = x.groupby(df[GROUP])
    parts.append((g.rank(method="average") / g.transform("count")).add_suffix("_patient_rank"))
    res = pd.concat(parts, axis=1)
    seconds = time.perf_counter() - t
    ref = pd.read_parquet(work / "groupby_polars.parquet")
    cols = [c for c in ref.columns if c != "image_id"]
    diff = float(np.nanmax(np.abs(res[cols].to_numpy(float) - ref[cols].to_numpy(float))))
    same_nulls = bool((res[cols].isna().to_numpy() == ref[cols].isna().to_numpy()).all())
    return {"groupby_pandas_s": seconds, "peak_gib": peak_gib(), "max_abs_diff": diff, "same_nulls": same_nulls,
            "checked_columns": len(cols)}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--layout", type=Path, help="Kaggle layout to read (made with synthesize_isic2024 when absent)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--child", choices=["polars", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "polars":
        print(json.dumps(child_polars(args.work / "lesions.parquet", args.work)))
        return
    if args.child == "pandas":
        print(json.dumps(child_pandas(args.work)))
        return
    if args.smoke:
        args.rows = 500
    work = smoke_work("features") if args.smoke else CACHE_ROOT / f"features-{args.rows}"
    layout = args.layout or (work / "layout" if args.smoke else CACHE_ROOT / f"isic2024-{args.rows}")
    key = code_key()
    if not cached(work, key):
        prepare(layout, args.rows, work)
        stamp(work, key)
    pol = run_child("--child", "polars", "--work", str(work))
    pan = run_child("--child", "pandas", "--work", str(work))
    assert pan["same_nulls"] and pan["max_abs_diff"] < 1e-6, pan
    print(f"features build (metadata, engineered, patient, embedding; not image) of {pol['rows']:,} lesions: "
          f"{pol['features']} features {pol['groups']}")
    print(f"  build_features: {pol['build_s']:.1f} s (stages {pol['stage_s']}), peak RSS {pol['peak_gib']:.2f} GiB "
          f"(LesionTable.read {pol['read_s']:.1f} s not included)")
    print(f"  ratio to budget: time {pol['build_s'] / BUDGET_S:.2f} of {BUDGET_S:.0f} s, "
          f"memory {pol['peak_gib'] / BUDGET_GIB:.2f} of {BUDGET_GIB:.0f} GiB")
    print(f"  patient z-score/rank/count stage over {pol['numeric_inputs']} numeric columns: polars {pol['groupby_polars_s']:.2f} s, "
          f"pandas groupby {pan['groupby_pandas_s']:.2f} s (peak {pan['peak_gib']:.2f} GiB): pandas / polars = "
          f"{pan['groupby_pandas_s'] / pol['groupby_polars_s']:.1f}x; "
          f"max |difference| {pan['max_abs_diff']:.1e} over {pan['checked_columns']} columns")


if __name__ == "__main__":
    main()
