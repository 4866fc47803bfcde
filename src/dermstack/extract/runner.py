"""The extraction loop: batched, decoded in DataLoader workers, resumable, shardable."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from dermstack import __version__
from dermstack.atomic import write_json
from dermstack.config.limits import check_memory, image_batch_bytes
from dermstack.data.table import LesionTable
from dermstack.distributed import World, agree, all_or_none, barrier, process_group, torchrun_world
from dermstack.errors import ConfigError, DataError
from dermstack.extract.dataset import ImageDataset, ViewImages, make_geometry, make_loader, view_images
from dermstack.extract.fold import frozen_network
from dermstack.extract.registry import Backbone, create_backbone
from dermstack.extract.settings import (
    TTA,
    ExtractSettings,
    Parallelism,
    Precision,
    resolve_device,
    resolve_parallelism,
    resolve_precision,
)
from dermstack.extract.store import merge_stores, open_group, writable_store
from dermstack.extract.streams import InlineBatches, LoaderBatches, run_streams
from dermstack.progress import progress_bar

log = logging.getLogger(__name__)
#: images whose failure is logged one line each; the rest are counted in one line (the report lists every one)
FAILED_LOGGED = 5


@dataclass
class BackboneReport:
    """What one backbone's pass over one view (``backbone`` is the store key, :func:`view_key`) did."""

    backbone: str
    timm_name: str
    weights_source: str
    weights_sha256: str
    image_size: list[int]
    images: int  # in this shard of the table
    already_done: int  # embedded or recorded as failed by an earlier run
    embedded: int
    failed: list[dict] = field(default_factory=list)  # {"image_id", "image_ref", "reason"}
    seconds: float = 0.0
    changed: int = 0  # embedded or failed in an earlier run, from an image that has changed since: tried again

    @property
    def images_per_s(self) -> float:
        return (self.embedded + len(self.failed)) / self.seconds if self.seconds else 0.0


@dataclass
class ExtractReport:
    """What ``extract_embeddings`` did, per backbone; failed images are listed, never dropped silently."""

    out: str
    shard: str
    device: str
    precision: str
    parallelism: str = ""
    backbones: list[BackboneReport] = field(default_factory=list)
    merged_into: str | None = None  # torchrun: the store rank 0 joined every rank's store into

    def to_dict(self) -> dict:
        return asdict(self) | {"backbones": [asdict(b) | {"images_per_s": b.images_per_s} for b in self.backbones]}

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    def summary(self, max_failed: int = 10) -> str:
        lines = [f"embeddings -> {self.out} (shard {self.shard}, {self.device}, {self.precision}, {self.parallelism})"]
        for b in self.backbones:
            lines.append(f"  {b.backbone} [{b.timm_name}, {b.weights_source}, {b.image_size[0]}px]: {b.images} images, "
                         f"{b.already_done} already done, {b.embedded} embedded, {len(b.failed)} failed"
                         + (f", {b.images_per_s:.1f} img/s" if b.seconds else "")
                         + (f"; {b.changed} of these had changed since an earlier run and were tried again" if b.changed else ""))
            for x in b.failed[:max_failed]:
                lines.append(f"    failed {x['image_id']}: {x['reason']} ({x['image_ref']})")
            if len(b.failed) > max_failed:
                lines.append(f"    ... and {len(b.failed) - max_failed} more (see the JSON report)")
        if self.merged_into:
            lines.append(f"  all ranks merged into {self.merged_into}")
        return "\n".join(lines)


class Embedder:
    """A backbone on its device: uint8 NHWC batch -> normalised -> pooled features (TTA-averaged).
    ``model``: the network to run in place of ``backbone.model`` (:func:`dermstack.extract.fold.frozen_network`)."""

    def __init__(self, backbone: Backbone, device: torch.device, precision: Precision, tta: list[str],
                 model: torch.nn.Module | None = None):
        self.device, self.precision, self.flips = device, precision, [TTA[t] for t in tta]
        fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
        self.model = (backbone.model if model is None else model).to(device=device, memory_format=fmt)
        cfg = backbone.data_config
        self.scale = 1.0 / (torch.tensor(cfg["std"], device=device) * 255)
        self.bias = -torch.tensor(cfg["mean"], device=device) * 255 * self.scale

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(self.device, non_blocking=True)
        x = torch.addcmul(self.bias, x, self.scale).permute(0, 3, 1, 2)  # (x - mean) / std in one pass; NHWC = channels_last
        if not self.precision.channels_last:
            x = x.contiguous()
        p = self.precision
        with torch.autocast(self.device.type, dtype=p.dtype or torch.float32, enabled=p.dtype is not None):
            f = self.model(x).float()
            for dims in self.flips:
                f += self.model(x.flip(dims)).float()
        if self.flips:
            f /= 1 + len(self.flips)
        return f.cpu().numpy()


def recipe(backbone: Backbone, tta: list[str]) -> dict:
    """Everything that changes the numbers of an embedding beyond rounding (a store group never mixes recipes)."""
    return {"timm_name": backbone.timm_name, "weights_sha256": backbone.weights.sha256,
            "data_config": backbone.data_config, "tta": sorted(tta), "num_features": backbone.num_features}


def group_attrs(backbone: Backbone, settings: ExtractSettings, precision: Precision, folded: int) -> dict:
    """A new store group's attributes; ``folded``: BatchNorm layers folded into convolutions (0: run as built)."""
    return {
        "timm_name": backbone.timm_name,
        "pretrained_cfg": backbone.pretrained_cfg_json(),
        "data_config": json.dumps(backbone.data_config),
        "weights_source": backbone.weights.source,
        "weights_location": backbone.weights.location,
        "weights_sha256": backbone.weights.sha256,
        "image_size": backbone.image_size[0],
        "tta": json.dumps(sorted(settings.tta)),
        "precision": precision.name,
        "batchnorm_folded": folded,
        "dermstack_version": __version__,
        "torch_version": str(torch.__version__),
        "recipe": json.dumps(recipe(backbone, settings.tta), sort_keys=True),
    }


def rank_path(out: Path, shard: tuple[int, int]) -> Path:
    """Per-rank store of a torchrun job."""
    return out.with_name(f"{out.stem}.shard{shard[0]}of{shard[1]}{out.suffix}")


def extract_embeddings(table: LesionTable, backbones: list[str], out: str | Path, settings: ExtractSettings | None = None,
                       shard: tuple[int, int] | None = None, strict: bool = False, damaged_hint: str | None = None,
                       replace_changed: bool = False) -> ExtractReport:
    """Embed every image of ``table`` (every n-th from the i-th with ``shard=(i, n)``) with each backbone
    into the EmbeddingStore ``out``. Resumes where an earlier run stopped; bad images are recorded
    (``strict=True`` raises instead). Under torchrun each rank takes its shard and rank 0 merges.
    ``damaged_hint``: what to do about an ``out`` that is not a store dermstack can append to, or that
    holds a backbone's embeddings made with other settings (the caller's words: a run names its stage).
    ``replace_changed``: those embeddings are made again instead (a run's own store after its [extract]
    changed; ``extract run --replace-changed``)."""
    settings = settings or ExtractSettings()
    out = Path(out)
    if len(table) == 0:
        raise DataError("the LesionTable is empty: there are no images to embed")
    if not backbones:
        raise ConfigError("no backbones given")
    world = torchrun_world() if shard is None else None
    if world is not None:
        shard = (world.rank, world.size)
    path = writable_store(rank_path(out, shard) if world else out, damaged_hint)
    views = view_images(table, shard)
    every = view_images(table)
    job = {"images": hashlib.sha256(json.dumps([[v.view, v.ids, v.refs] for v in every]).encode()).hexdigest()[:16],
           "backbones": backbones, "out": str(out), "settings": asdict(settings), "strict": strict}
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    par = resolve_parallelism(settings, device, precision)
    shard_text = f"{shard[0]}/{shard[1]}" if shard else "all"
    report = ExtractReport(str(path), shard_text, str(device), precision.name, par.describe())
    path.parent.mkdir(parents=True, exist_ok=True)

    def embed_all() -> None:
        for name in backbones:
            bb = create_backbone(name, settings.weights.get(name), settings.image_size)
            side = max(bb.image_size)
            check_memory(image_batch_bytes(par.batch_size, side, par.streams),
                         f"[extract] batch_size = {par.batch_size}, image_size = {side}, streams = {par.streams}",
                         f"embedding with {name}", device)
            net, folded = frozen_network(bb.model, bb.example_input())
            log.info("%s: %d BatchNorm layers folded into their convolutions", name, folded)
            for v in views:
                report.backbones.append(_extract_one(bb, (net, folded), v.key(name), v, path, settings, device,
                                                     precision, par, shard_text, strict, replace_changed, damaged_hint))

    if world is None:
        embed_all()
        return report
    with process_group(world):
        agree(world, "the extraction (lesions, backbones, --out, settings)", job)
        with all_or_none(world, f"extraction into {out}",
                         hint="the stores of the ranks are kept: run the same command again to resume"):
            embed_all()
        if world.main:
            _merge_ranks(out, world)
            report.merged_into = str(out)
        barrier(world)
    return report


def _extract_one(bb: Backbone, net: tuple[torch.nn.Module, int], key: str, images: ViewImages, path: Path,
                 settings: ExtractSettings, device: torch.device, precision: Precision, par: Parallelism, shard_text: str,
                 strict: bool, replace: bool = False, remedy: str | None = None) -> BackboneReport:
    ids, refs, digests = images.ids, images.refs, images.digests
    rep = BackboneReport(key, bb.timm_name, bb.weights.source, bb.weights.sha256, list(bb.image_size), len(ids), 0, 0)
    with h5py.File(path, "a") as f:
        writer = open_group(f, key, group_attrs(bb, settings, precision, net[1]), bb.num_features, replace,
                            remedy or "write to another --out file, or embed them again with --replace-changed")
        if settings.retry_failed:
            writer.forget_failed(set(ids))
        changed = set(writer.changed(ids, digests))
        if changed:
            log.info("%s: %d images changed since they were embedded or failed (their digest at ingest differs), "
                     "e.g. %s: embedding them again", key, len(changed), sorted(changed)[:3])
        done = writer.done_ids() - changed
        todo = [k for k, i in enumerate(ids) if i not in done]
        rep.changed = len(changed)
        rep.already_done = len(ids) - len(todo)
        if not todo and writer.g.attrs.get("complete", False):
            log.info("%s: all %d images already in %s", key, len(ids), path)
            return rep
        writer.begin(shard_text)
        embed = Embedder(bb, device, precision, settings.tta, model=net[0])
        dataset = ImageDataset([refs[k] for k in todo], make_geometry(bb.data_config))
        source = (LoaderBatches(make_loader(dataset, par.batch_size, par.workers, pin_memory=device.type == "cuda"))
                  if par.workers else InlineBatches(dataset, par.batch_size))
        t0 = time.perf_counter()
        results = run_streams(source, embed, par.streams, par.threads)
        with closing(results), progress_bar(total=len(todo), unit="img", desc=key, mininterval=1.0, smoothing=0.05) as bar:
            for batch, feats in results:  # closing(): an error here stops the streams and restores torch's threads at once
                for j, reason in batch["failed"]:
                    k = todo[j]
                    if strict:
                        raise DataError(f"{reason} [{ids[k]}] (--strict)", file=refs[k], column="image_ref")
                    writer.add_failed(ids[k], reason, digests[k])
                    rep.failed.append({"image_id": ids[k], "image_ref": refs[k], "reason": reason})
                    if len(rep.failed) <= FAILED_LOGGED:
                        log.warning("image %s not embedded: %s (%s)", ids[k], reason, refs[k])
                if feats is not None:
                    rows = [todo[j] for j in batch["index"].tolist()]
                    writer.append([ids[k] for k in rows], feats, [digests[k] for k in rows])
                    rep.embedded += len(feats)
                bar.update(len(batch["index"]) + len(batch["failed"]))
        rep.seconds = time.perf_counter() - t0
        if len(rep.failed) > FAILED_LOGGED:  # one line per image would bury the log; the report lists each
            log.warning("%s: %d images not embedded in all (%d more than the above), their reasons in the extract "
                        "report", key, len(rep.failed), len(rep.failed) - FAILED_LOGGED)
        writer.finish()
    return rep


def _merge_ranks(out: Path, world: World) -> None:
    """Rank 0 joins every rank's store into ``out``; it must see them all (a filesystem every node shares)."""
    parts = [rank_path(out, (r, world.size)) for r in range(world.size)]
    for r, p in enumerate(parts):
        if not p.exists():
            raise DataError(f"rank 0 cannot see the store of torchrun rank {r}: with several nodes, --out must be on "
                            "a filesystem every node shares (same path)", file=str(p))
    tmp = out.with_name(out.name + ".merged")
    tmp.unlink(missing_ok=True)
    merge_stores(parts, tmp)
    tmp.replace(out)
