"""Fine-tune a timm CNN on every fold of the run's FoldPlan; OOF and test scores like the boosters'.

Class-balanced sampling (WeightedRandomSampler), flips/rotation/colour jitter/random resized crop,
AdamW with warm-up + cosine schedule, autocast on GPU (and bf16 inference on CPU), early stopping on
the fold metric, one safetensors checkpoint per fold and seed in ``models/<name>/``. Under torchrun
every fit is data-parallel (DistributedDataParallel: gloo on CPU, NCCL on GPU): the ranks share each
epoch's draws and each scoring pass, and rank 0 alone writes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dermstack.calibration import training_prior, undo_prior
from dermstack.cnn.augment import Augment, cache_size
from dermstack.cnn.imagebank import BankDataset, ImageBank, image_refs
from dermstack.cnn.net import NetTemplate, freeze_early, net_template, save_net
from dermstack.cnn.params import CNNConfig, autocast_dtype, resolve_device
from dermstack.config import ModelConfig
from dermstack.config.limits import check_memory, image_batch_bytes
from dermstack.crossfit import align_rows, cross_fit
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.distributed import World, agree, gather, process_group, sync_buffers, torchrun_world
from dermstack.errors import ConfigError
from dermstack.jobs import FoldJob, Lazy
from dermstack.metrics import PRIMARY_METRIC, TASK_METRICS
from dermstack.predictions import ModelResult
from dermstack.progress import progress_bar
from dermstack.saved import model_folder, model_spec, write_model
from dermstack.task import TaskSpec
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)


def sampling_weights(task_kind: str, y: np.ndarray, balance: float) -> np.ndarray:
    """Per-row draw weight (count of the row's class)^-balance; multi-label rows by their first positive class."""
    stratum = np.where(y.max(axis=1) > 0, y.argmax(axis=1), -1) if y.ndim == 2 else y
    _, inverse, counts = np.unique(stratum, return_inverse=True, return_counts=True)
    return counts[inverse].astype(float) ** -balance


def cosine_with_warmup(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    n_warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class RankDraws(torch.utils.data.Sampler):
    """This rank's share of a sampler's draws: every rank draws the same sequence (same generator
    seed) and keeps every world-size-th draw, the same count on every rank (DDP steps in lockstep)."""

    def __init__(self, sampler: torch.utils.data.Sampler, world: World):
        self.sampler, self.world = sampler, world

    def __len__(self) -> int:
        return len(self.sampler) // self.world.size

    def __iter__(self):
        return iter(list(self.sampler)[self.world.rank::self.world.size][: len(self)])


@dataclass
class FoldModel:
    """A trained net, the epoch it was taken from, per-epoch history and its validation scores."""

    net: nn.Module
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    valid_scores: np.ndarray | None = None


class CNNTrainer:
    """Trains and scores CNNs on the images ``refs`` (decoded once, shared by every fold and seed)."""

    def __init__(self, cfg: CNNConfig, task_kind: str, n_outputs: int, refs: list[str], progress: bool = True,
                 template: NetTemplate | None = None, world: World | None = None):
        self.cfg, self.task_kind, self.n_outputs, self.progress = cfg, TaskKind(task_kind), n_outputs, progress
        self.world = world  # torchrun: fits and scoring are shared by the ranks
        self.device = resolve_device(cfg.device)
        self.stop_metric = cfg.stop_metric or PRIMARY_METRIC[self.task_kind]
        if self.stop_metric not in TASK_METRICS[self.task_kind]:
            raise ConfigError(f"cnn stop_metric {self.stop_metric!r} is not a {task_kind} metric: {list(TASK_METRICS[self.task_kind])}")
        self.template = template or net_template(cfg)
        self.mean, self.std = self.template.mean, self.template.std
        self.augment = Augment(cfg.image_size, self.mean, self.std)
        check_memory(image_batch_bytes(cfg.batch_size, cfg.image_size, training=True),
                     f"cnn params.batch_size = {cfg.batch_size}, image_size = {cfg.image_size}", "a training batch", self.device)
        self.bank = ImageBank(refs, cache_size(cfg.image_size), progress=progress)

    # -- pieces ---------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.task_kind.exclusive:
            return nn.functional.cross_entropy(logits, target.long())
        if self.task_kind.binary:
            logits = logits[:, 0]
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

    def _prob(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.task_kind.exclusive:
            return logits.softmax(dim=1)
        p = logits.sigmoid()
        return p[:, 0] if self.task_kind.binary else p

    def _loader(self, rows: np.ndarray, targets=None, sampler=None) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        batch = cfg.batch_size if sampler else 2 * cfg.batch_size
        if sampler is not None and self.world:  # the ranks' batches together make one batch of batch_size
            batch = max(1, batch // self.world.size)
        return torch.utils.data.DataLoader(
            BankDataset(self.bank, rows, targets), batch_size=batch,
            sampler=sampler, num_workers=cfg.workers, pin_memory=self.device == "cuda",
            drop_last=sampler is not None and len(sampler) > batch,
        )

    # -- the API ----------------------------------------------------------------------
    def score(self, net: nn.Module, rows: np.ndarray) -> np.ndarray:
        """Probabilities of ``rows``: (n,) binary, (n, C) otherwise; horizontal-flip TTA when configured.
        Under torchrun each rank scores every world-size-th row and every rank gets them all."""
        if self.world is None:
            return self._score_rows(net, rows)
        w = self.world
        sync_buffers(net)
        parts = gather(self._score_rows(net, rows[w.rank::w.size]), w, "CNN scoring")
        out = np.empty((len(rows), *parts[0].shape[1:]))
        for r, part in enumerate(parts):
            out[r::w.size] = part
        return out

    @torch.inference_mode()  # no autograd bookkeeping at all: 7% faster scoring on CPU than no_grad
    def _score_rows(self, net: nn.Module, rows: np.ndarray) -> np.ndarray:
        net.eval()
        dtype = autocast_dtype(self.device, self.cfg.precision, training=False)
        out = []
        for x, _ in self._loader(rows):
            x = self.augment(x.to(self.device), train=False)
            with torch.autocast(self.device, dtype=dtype or torch.float32, enabled=dtype is not None):
                p = self._prob(net(x))
                if self.cfg.tta:
                    p = (p + self._prob(net(x.flip(-1)))) / 2
            out.append(p.cpu())
        if not out:
            return np.zeros((0,) if self.task_kind.binary else (0, self.n_outputs))
        return torch.cat(out).numpy().astype(np.float64)

    def fit(self, rows: np.ndarray, y: np.ndarray, valid_rows: np.ndarray | None, y_valid: np.ndarray | None,
            seed: int, desc: str = "cnn") -> FoldModel:
        """Train on bank ``rows`` (labels ``y``). With validation rows: early stopping on the fold metric,
        the best epoch's weights are kept; without: the full schedule is trained (no label is looked at)."""
        cfg = self.cfg
        net = self.template.new(self.n_outputs, seed).to(self.device, memory_format=torch.channels_last)
        freeze_early(net, cfg.freeze_fraction)
        model = net if self.world is None else DistributedDataParallel(
            net, device_ids=[self.world.local_rank] if self.device == "cuda" else None)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
        sampler = torch.utils.data.WeightedRandomSampler(
            sampling_weights(self.task_kind, y, cfg.balance), cfg.samples_per_epoch or len(rows), replacement=True,
            generator=torch.Generator().manual_seed(seed))
        loader = self._loader(rows, y, sampler if self.world is None else RankDraws(sampler, self.world))
        gen = torch.Generator().manual_seed(seed + 1 + 100_003 * (self.world.rank if self.world else 0))  # each rank its own augmentations
        sched = cosine_with_warmup(opt, cfg.epochs * len(loader), cfg.warmup)
        dtype = autocast_dtype(self.device, cfg.precision, training=True)
        scaler = torch.amp.GradScaler(self.device, enabled=dtype == torch.float16)
        metric_fn = TASK_METRICS[self.task_kind][self.stop_metric]
        best = FoldModel(net, cfg.epochs - 1)
        best_value, stale, history = -math.inf, 0, []
        bar = progress_bar(total=cfg.epochs * len(loader), enabled=self.progress, desc=desc, unit="batch", leave=False)
        for epoch in range(cfg.epochs):
            t0, net_loss = time.perf_counter(), 0.0
            net.train()
            for x, t in loader:
                x, t = self.augment(x.to(self.device), train=True, generator=gen), t.to(self.device)
                with torch.autocast(self.device, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = self._loss(model(x), t)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                net_loss += float(loss.detach())
                bar.update()
            entry = {"epoch": epoch, "loss": net_loss / max(1, len(loader)), "seconds": round(time.perf_counter() - t0, 2)}
            if valid_rows is not None:
                scores = self.score(net, valid_rows)
                value = _safe_metric(metric_fn, y_valid, scores)
                entry[self.stop_metric] = value
                if best.valid_scores is None or value > best_value:
                    best_value, stale = value, 0
                    best = FoldModel(copy.deepcopy(net), epoch, valid_scores=scores)
                else:
                    stale += 1
            history.append(entry)
            bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k not in ("epoch", "seconds")})
            if valid_rows is not None and stale >= cfg.patience:
                break
        bar.close()
        if valid_rows is None:
            best.net = net
        best.history = history
        return best


def _safe_metric(fn, y, scores) -> float:
    try:
        value = fn(y, scores)
    except ValueError:
        return -math.inf
    return -math.inf if math.isnan(value) else value


def cnn_spec(name: str, cfg: CNNConfig, task: TaskSpec, template: NetTemplate, models: list[dict], world_size: int = 1) -> dict:
    return model_spec(name, "cnn", task, config=asdict(cfg), arch=template.arch, weights=template.weights,
                      mean=list(template.mean), std=list(template.std), models=models, world_size=world_size)


# -- cross-validation -----------------------------------------------------------------------
def training_frame(table: LesionTable, task: TaskSpec) -> pl.DataFrame:
    return align_rows(table.train, task.image_ids, source="LesionTable")


def cross_validate_cnn(table: LesionTable, task: TaskSpec, plan: FoldPlan, model: ModelConfig,
                       out_dir: Path | None = None, progress: bool = True, executor=None) -> ModelResult:
    """Fine-tune ``model`` (kind "cnn") on each fold of ``plan`` for each seed.

    OOF scores come from the fold's own CNN (early-stopped on that fold); test scores are averaged
    over folds and seeds. Checkpoints and the registry's files go to ``out_dir/<name>/``. Under
    torchrun (more than one rank) every fit is shared by the ranks and rank 0 writes; ``executor``:
    where the fold x seed jobs run otherwise (:mod:`dermstack.crossfit`; a Dask worker reads the images)."""
    world = torchrun_world()
    if world is None:
        return _cross_validate(table, task, plan, model, out_dir, progress, None, executor)
    with process_group(world, resolve_device(CNNConfig.from_model(model).device)):
        rows = hashlib.sha256(json.dumps([task.image_ids, plan.folds.select("image_id", "fold").rows()]).encode())
        agree(world, "the CNN job (rows, folds, model, output)",
              {"rows": rows.hexdigest()[:16], "model": asdict(model), "out": str(out_dir)})
        return _cross_validate(table, task, plan, model, out_dir, progress and world.main, world)


def _cross_validate(table: LesionTable, task: TaskSpec, plan: FoldPlan, model: ModelConfig, out_dir: Path | None,
                    progress: bool, world: World | None, executor=None) -> ModelResult:
    cfg, name = CNNConfig.from_model(model), model.label
    train_df, test_df = training_frame(table, task), table.test
    template = net_template(cfg)
    # on a Dask worker the images are decoded there, read by path
    trainer = Lazy(partial(CNNTrainer, cfg, task.kind, task.n_outputs, image_refs(train_df) + image_refs(test_df), progress,
                           template=template, world=world))
    n, y = len(task.image_ids), task.y
    test_rows = np.arange(n, n + test_df.height)
    mdir = Path(out_dir) / name if out_dir and (world is None or world.main) else None
    if mdir:
        model_folder(mdir)
        for old in mdir.glob("fold*_seed*.safetensors"):
            old.unlink()

    def fit(job: FoldJob):
        tr, va = job.train, job.valid
        fm = trainer.get().fit(tr, y[tr], va, y[va], job.seed * 1000 + job.fold, desc=f"{name} fold {job.fold} seed {job.seed}")
        # class-balanced draws shift the odds the net learns; taken out again (dermstack.calibration)
        factor = training_prior(task.kind, y[tr], np.arange(len(tr)), sampling_weights(task.kind, y[tr], cfg.balance))
        record = {"best_epoch": fm.best_epoch, "history": fm.history}
        if mdir:
            save_net(fm.net, mdir / f"fold{job.fold}_seed{job.seed}.safetensors")
            record["file"] = {"fold": job.fold, "seed": job.seed, "file": f"fold{job.fold}_seed{job.seed}.safetensors",
                              "prior_factor": None if factor is None else factor.tolist()}
        return (undo_prior(task.kind, fm.valid_scores, factor), undo_prior(task.kind, trainer.get().score(fm.net, test_rows), factor),
                record)

    cf = cross_fit(task, plan, list(model.seeds), fit, test_df.height, desc=name, executor=executor)
    importance = pl.DataFrame(schema={"feature": pl.String, "group": pl.String, "gain": pl.Float64})
    extra = {k: [r[k] for r in cf.records] for k in ("best_epoch", "history")}
    result = cf.result(name, test_df["image_id"].to_list(), extra, importance)
    if mdir:
        files = [r["file"] for r in cf.records]
        write_model(mdir, cnn_spec(name, cfg, task, template, files, world.size if world else 1), result)
    return result
