"""CPU CNN speed: one fold of the default CPU CNN config on ../shared/data/ham10000-dev (binary malignant).

Trains the fold-0 CNN (efficientnet_lite0 with the offline weights, 64 px, the CPU defaults) on the
other folds' ~2,000 images and scores fold 0. Prints the decode, training and scoring seconds,
training images per second, the fold's ROC-AUC, and as its last line the ratio of the fold's total
seconds to the 60 s budget (target: well under 1).

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/cnn_fold.py [--epochs 3] [--image-size 64] [--smoke]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_work, tiny_copy

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(shared_data_dir() or REPO.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()

    from dermstack.cnn.train import CNNConfig, CNNTrainer, image_refs, training_frame
    from dermstack.config import ModelConfig
    from dermstack.data.folds import FoldPlan
    from dermstack.data.readers import ingest
    from dermstack.metrics import roc_auc
    from dermstack.task import TaskSpec

    data = Path(args.data) / "ham10000-dev"
    if not data.is_dir():
        sys.exit(f"no {data}: set DERMSTACK_SHARED_DATA")
    params = {}
    if args.smoke:
        data = tiny_copy("ham10000", data, smoke_work("cnn_fold") / "ham10000-dev", per_class=15)
        args.epochs, args.image_size, params = 1, 32, {"samples_per_epoch": 32, "batch_size": 16}
    table, _ = ingest("ham10000", data)
    task = TaskSpec.from_table(table, "binary")
    plan = FoldPlan.make(table, 5, 42, "binary")
    cfg = CNNConfig.from_model(ModelConfig(kind="cnn", backbone=args.backbone, epochs=args.epochs, image_size=args.image_size,
                                                 params=params))
    t0 = time.perf_counter()
    trainer = CNNTrainer(cfg, task.kind, 1, image_refs(training_frame(table, task)), progress=False)
    t_decode = time.perf_counter() - t0
    _, tr, va = next(plan.splits(task.image_ids))
    t1 = time.perf_counter()
    fm = trainer.fit(tr, task.y[tr], va, task.y[va], seed=0)
    t_fit = time.perf_counter() - t1
    epochs = len(fm.history)
    scored = len(va) * epochs
    t2 = time.perf_counter()  # validation scoring runs inside fit after each epoch; time it once more
    trainer.score(fm.net, va)
    t_score = time.perf_counter() - t2
    drawn = (cfg.samples_per_epoch or len(tr)) * epochs
    train_s = t_fit - t_score * epochs
    print(f"backbone={cfg.backbone} image_size={cfg.image_size} epochs_run={epochs} train_rows={len(tr)} valid_rows={len(va)} "
          f"samples_per_epoch={cfg.samples_per_epoch} threads={__import__('torch').get_num_threads()}")
    print(f"decode_s={t_decode:.1f} fit_s={t_fit:.1f} (train ~{train_s:.1f} s, {drawn / max(train_s, 1e-9):.0f} img/s; "
          f"validation scoring {scored} images) score_s={t_score:.2f} ({len(va) / t_score:.0f} img/s with flip TTA)")
    print(f"fold0 roc_auc={roc_auc(task.y[va], fm.valid_scores):.4f} best_epoch={fm.best_epoch}")
    total = t_decode + t_fit
    print(f"fold_seconds={total:.1f} fold/budget60s={total / 60:.2f}")


if __name__ == "__main__":
    main()
