"""Extraction throughput of a backbone (efficientnet_lite0 at 224 px unless --backbone) on this machine, in one run.

  pipeline: extract_embeddings on real JPEGs with its defaults (decode, transform, model, HDF5 write)
  limit:    the pipeline's network (dermstack.extract.fold.frozen_network: BatchNorm folded, border
            padding, as extract_embeddings runs it) alone on pre-made tensors, at the fastest setting
            found on the machine (precision x memory format x batch size x streams x torch threads);
            also the network as built at that setting
  naive:    one image at a time: PIL decode, timm transform, fp32 model as built, no batching
  limit and naive are measured again right after each pipeline round (the machine's load drifts):
  each ratio is the median of the rounds' ratios
  also:     the pipeline with one stream fed by a DataLoader worker process (the textbook way)

--precision fp32 runs the pipeline and scans the limit in fp32 only: what ``auto`` does on a CPU
without native bf16 (the line "precision auto = ..." says which this machine has).

Run:  flock /tmp/dermstack-cpu.lock .venv/bin/python benchmarks/extract_throughput.py [--images N] [--backbone NAME]
      [--precision fp32] [--smoke]
Last line: pipeline/limit=... pipeline/naive=...   (targets: >= 0.85 and >= 2 on 2 cores, in either precision)
--compare efficientnet_lite0,efficientnet_lite2: only the pipelines of several backbones, interleaved.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import torch
from timm.data import create_transform

from dermstack.data.images import load_image
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.extract import ExtractSettings, create_backbone, extract_embeddings
from dermstack.extract.fold import frozen_network
from dermstack.extract.settings import (
    PRECISIONS,
    Precision,
    available_cores,
    cpu_has_bf16,
    resolve_parallelism,
    resolve_precision,
)
from dermstack.extract.streams import torch_threads
from dermstack.testing import SMOKE_HELP, shared_data_dir

BACKBONE = "efficientnet_lite0"
IMAGES = (shared_data_dir() or Path("../shared/data")) / "ham10000-dev" / "images"


def table_of(paths: list[Path]) -> LesionTable:
    df = pl.DataFrame({"image_id": [p.stem for p in paths], "image_ref": [str(p) for p in paths],
                       "patient_id": [p.stem for p in paths], "split": ["train"] * len(paths)})
    return LesionTable(finalize_frame(df), TableMeta(dataset="bench"))


def model_only(model: torch.nn.Module, p: Precision, batch: int, streams: int, threads: int, seconds: float,
               size: int = 224) -> float:
    """Images/s of the forward pass alone on a pre-made batch, ``streams`` threads each running the model."""
    fmt = torch.channels_last if p.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    counts = [0] * streams
    start = threading.Barrier(streams + 1)

    def work(k: int) -> None:
        torch.set_num_threads(threads)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
        with torch.inference_mode(), torch.autocast("cpu", dtype=p.dtype or torch.float32, enabled=p.dtype is not None):
            model(x)  # warm-up
            start.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                model(x)
                counts[k] += batch

    with torch_threads(threads):
        pool = [threading.Thread(target=work, args=(k,)) for k in range(streams)]
        for t in pool:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
    return sum(counts) / (time.perf_counter() - t0)


def naive(paths: list[Path], backbone) -> float:
    tf = create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in backbone.data_config.items()})
    model = backbone.model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        model(tf(load_image(str(paths[0])))[None])  # warm-up: a long loop pays it once
        t = time.perf_counter()
        for p in paths:
            model(tf(load_image(str(p)))[None])
    return len(paths) / (time.perf_counter() - t)


def pipeline(paths: list[Path], settings: ExtractSettings, backbone: str = BACKBONE) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return extract_embeddings(table_of(paths), [backbone], Path(tmp) / "emb.h5", settings).backbones[0].images_per_s


def compare(paths: list[Path], backbones: list[str], rounds: int, settings: ExtractSettings) -> None:
    """Pipeline img/s of each backbone with the defaults, round-robin so that load drift hits all alike;
    each round's ratio to the first backbone, median over rounds."""
    seen: dict[str, list[float]] = {b: [] for b in backbones}
    for r in range(rounds):
        for b in backbones:
            seen[b].append(pipeline(paths, settings, b))
        print(f"round {r}: " + ", ".join(f"{b} {seen[b][-1]:.1f} img/s" for b in backbones))
    for b in backbones:
        ratio = sorted(x / y for x, y in zip(seen[b], seen[backbones[0]]))[rounds // 2]
        print(f"pipeline  {sorted(seen[b])[rounds // 2]:7.1f} img/s  {b} (median of {rounds}); "
              f"{b}/{backbones[0]}={ratio:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=None, help="first N JPEGs (default: all 2,479)")
    ap.add_argument("--naive-images", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="paired pipeline / limit measurements")
    ap.add_argument("--seconds", type=float, default=3.0, help="per model-only measurement")
    ap.add_argument("--backbone", default=BACKBONE, help="e.g. efficientnet_lite1 (240 px), efficientnet_lite2 (260 px)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the pipeline's precision; the limit is scanned in it only (auto: auto and fp32)")
    ap.add_argument("--compare", default=None, help="comma-separated backbones: only their pipelines, interleaved")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.images, args.naive_images, args.rounds, args.seconds = 8, 2, 1, 0.1
    logging.basicConfig(level=logging.WARNING)
    paths = sorted(IMAGES.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no JPEGs in {IMAGES}")
    if args.compare:
        return compare(paths, args.compare.split(","), args.rounds, ExtractSettings(precision=args.precision))
    cpu = torch.device("cpu")
    cores = available_cores()
    ours = ExtractSettings(precision=args.precision)
    prec = resolve_precision(args.precision, cpu)
    par = resolve_parallelism(ours, cpu, prec)
    textbook = ExtractSettings(precision=args.precision, batch_size=16, streams=1, workers=1)
    print(f"{len(paths)} real JPEGs from {IMAGES}, {cores} cores; precision auto = "
          f"{resolve_precision('auto', cpu).name} (native bf16: {cpu_has_bf16()}), this run {prec.name}; "
          f"defaults: {par.describe()}")

    bb = create_backbone(args.backbone)
    size = bb.image_size[0]
    net, folded = frozen_network(bb.model, bb.example_input())
    print(f"backbone {args.backbone} at {size} px, {folded} BatchNorm layers folded into their convolutions")
    fp32 = Precision("fp32", None, True)
    precisions = [prec, fp32] if args.precision == "auto" and prec != fp32 else [prec]
    settings = [(p, b, s, max(1, cores // s)) for p in precisions for b in (4, 8, 16) for s in sorted({1, par.streams, cores})]
    settings.append((Precision("fp32", None, False), par.batch_size, 1, cores))
    if args.smoke:  # the first and the last setting only
        settings = [settings[0], settings[-1]]
    # 1. the fastest model-only setting on this machine
    scan = {s: model_only(net, *s, args.seconds, size) for s in settings}
    for (p, b, s, t), v in sorted(scan.items(), key=lambda kv: -kv[1]):
        print(f"model     {v:7.1f} img/s  ({p.name}{'+channels_last' if p.channels_last else ''}, batch {b}, "
              f"{s} streams x {t} threads, pre-made tensors)")
    best = max(scan, key=scan.get)
    # 2. pipeline, that limit and naive measured back to back, several times: the machine's load
    #    drifts, so each round's ratios compare like with like; the median round of each is reported
    plain = create_backbone(args.backbone)
    rounds = []
    for _ in range(args.rounds):
        pipe = pipeline(paths, ours, args.backbone)
        rounds.append((pipe, model_only(net, *best, args.seconds, size), naive(paths[: args.naive_images], plain)))
        print(f"round     pipeline {pipe:6.1f} img/s, limit {rounds[-1][1]:6.1f} img/s, naive {rounds[-1][2]:5.1f} img/s: "
              f"{pipe / rounds[-1][1]:.2f}, {pipe / rounds[-1][2]:.1f}")
    pipe, limit, _ = sorted(rounds, key=lambda r: r[0] / r[1])[len(rounds) // 2]
    pipe_n, _, slow = sorted(rounds, key=lambda r: r[0] / r[2])[len(rounds) // 2]
    as_built = model_only(bb.model, *best, args.seconds, size)
    old = pipeline(paths, textbook, args.backbone)
    print(f"pipeline  {old:7.1f} img/s  (1 stream fed by 1 DataLoader worker, batch 16)")
    print(f"pipeline  {pipe:7.1f} img/s  (defaults: {par.describe()}; median round of {args.rounds})")
    print(f"model     {as_built:7.1f} img/s  (the limit's setting, the network as built)")
    print(f"naive     {slow:7.1f} img/s  (one image at a time, PIL + timm transform, fp32, {args.naive_images} images; "
          f"median round)")
    print(f"pipeline/limit={pipe / limit:.2f} pipeline/naive={pipe_n / slow:.1f}")


if __name__ == "__main__":
    main()
