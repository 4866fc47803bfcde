"""Extraction throughput of efficientnet_lite0 at 224 px on this machine, measured in one run.

  pipeline: extract_embeddings on real JPEGs (decode in DataLoader workers, transform, model, HDF5 write)
  limit:    the model's forward pass alone on pre-made tensors, at the fastest precision/memory format
  naive:    one image at a time: PIL decode, timm transform, fp32 model, no batching

Run:  flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/extract_throughput.py [--images 1024]
Last line: pipeline/limit=... pipeline/naive=...   (targets: >= 0.85 and >= 2 on 2 cores)
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from timm.data import create_transform

from dermstack.data.images import load_image
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.extract import ExtractSettings, create_backbone, extract_embeddings
from dermstack.extract.settings import Precision, resolve_precision

BACKBONE = "efficientnet_lite0"
IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000-dev" / "images"


def table_of(paths: list[Path]) -> LesionTable:
    df = pl.DataFrame({"image_id": [p.stem for p in paths], "image_ref": [str(p) for p in paths],
                       "patient_id": [p.stem for p in paths], "split": ["train"] * len(paths)})
    return LesionTable(finalize_frame(df), TableMeta(dataset="bench"))


def model_only(model: torch.nn.Module, n: int, batch: int, p: Precision) -> float:
    """Images/s of the forward pass on a pre-made batch (after one warm-up batch)."""
    fmt = torch.channels_last if p.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cpu", dtype=p.dtype or torch.float32, enabled=p.dtype is not None):
        model(x)
        t = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model(x)
        return max(1, n // batch) * batch / (time.perf_counter() - t)


def naive(paths: list[Path], backbone) -> float:
    tf = create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in backbone.data_config.items()})
    model = backbone.model.to(memory_format=torch.contiguous_format)
    t = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            model(tf(load_image(str(p)))[None])
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=768)
    ap.add_argument("--naive-images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=ExtractSettings.batch_size)
    ap.add_argument("--workers", type=int, default=ExtractSettings.workers)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    paths = sorted(IMAGES.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no JPEGs in {IMAGES}")
    settings = ExtractSettings(batch_size=args.batch_size, workers=args.workers, threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{len(paths)} real JPEGs from {IMAGES} ({torch.get_num_threads()} torch threads, "
          f"batch {settings.batch_size}, {settings.workers} workers)")

    bb = create_backbone(BACKBONE)
    auto = resolve_precision("auto", torch.device("cpu"))
    half = len(paths) // 2
    limits = {"fp32+channels_last": model_only(bb.model, half, settings.batch_size, Precision("fp32", None, True)),
              "fp32": model_only(bb.model, half // 2, settings.batch_size, Precision("fp32", None, False))}
    best_auto, pipeline = 0.0, 0.0
    for _ in range(args.rounds):  # interleaved, best of each: other jobs on the machine hit both alike
        best_auto = max(best_auto, model_only(bb.model, len(paths), settings.batch_size, auto))
        with tempfile.TemporaryDirectory() as tmp:
            rep = extract_embeddings(table_of(paths), [BACKBONE], Path(tmp) / "emb.h5", settings).backbones[0]
        pipeline = max(pipeline, rep.images_per_s)
    limits[f"{auto.name}+channels_last (auto)"] = best_auto
    print(f"pipeline  {pipeline:7.1f} img/s  (decode + transform + model + write, {rep.embedded} images, best of {args.rounds})")
    for k, v in sorted(limits.items(), key=lambda kv: -kv[1]):
        print(f"model     {v:7.1f} img/s  ({k}, batch {settings.batch_size}, pre-made tensors)")
    limit = max(limits.values())
    slow = naive(paths[: args.naive_images], create_backbone(BACKBONE))
    print(f"naive     {slow:7.1f} img/s  (one image at a time, PIL + timm transform, fp32, {args.naive_images} images)")
    print(f"pipeline/limit={pipeline / limit:.2f} pipeline/naive={pipeline / slow:.1f}")


if __name__ == "__main__":
    main()
