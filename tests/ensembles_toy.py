"""Tiny image LesionTables with a planted visual signal, for the CNN and predict tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dermstack.config import ModelConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.task import TaskSpec
from lesion_tables import lesion_table

CLASSES = ["A", "B", "C"]
#: A tiny random-init timm net, small images and few samples: seconds per fold on CPU.
TINY_CNN = {"pretrained": False, "samples_per_epoch": 96, "batch_size": 32, "lr": 3e-3, "freeze_fraction": 0.0}


def tiny_cnn(name: str = "cnn", epochs: int = 2, seeds: tuple[int, ...] = (0,), **params) -> ModelConfig:
    return ModelConfig(kind="cnn", name=name, backbone="test_efficientnet", epochs=epochs, image_size=32,
                       seeds=list(seeds), params={**TINY_CNN, **params})


def image_table(root: Path, n: int = 48, n_test: int = 6, seed: int = 0, per_patient: int = 2) -> LesionTable:
    """``n`` training + ``n_test`` test PNGs: class 0..2 = blob colour (red / dark / pale); binary
    target = class 1 ... so the label is visible in the pixels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    m = n + n_test
    cls = np.arange(m) % 3
    rng.shuffle(cls)
    colours = np.array([[200, 40, 40], [40, 30, 20], [230, 200, 180]])
    refs = []
    yy, xx = np.mgrid[:40, :40]
    for i in range(m):
        img = np.full((40, 40, 3), (215, 170, 150), np.float64) + rng.normal(0, 8, (40, 40, 3))
        r = rng.uniform(7, 12)
        blob = (yy - 20 - rng.integers(-4, 5)) ** 2 + (xx - 20 - rng.integers(-4, 5)) ** 2 < r * r
        img[blob] = colours[cls[i]] + rng.normal(0, 8, (blob.sum(), 3))
        path = root / f"img{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        refs.append(str(path))
    onehot = np.eye(3, dtype=int)[cls]
    cols = {
        "image_id": [f"img{i:03d}" for i in range(m)],
        "patient_id": [f"P{i // per_patient:03d}" for i in range(m)],
        "split": ["train"] * n + ["test"] * n_test,
        "target": [int(c == 1) for c in cls[:n]] + [None] * n_test,
        "label": [CLASSES[c] for c in cls],
        "image_ref": refs,
        "age_approx": rng.choice([30.0, 50.0, 70.0], m).tolist(),
        **{f"y_{c}": onehot[:, j].tolist() for j, c in enumerate(CLASSES)},
    }
    table = lesion_table(cols)
    table.meta.classes = list(CLASSES)
    return table


def setup(root: Path, kind: str = "binary", n_splits: int = 3, **kw) -> tuple[LesionTable, TaskSpec, FoldPlan]:
    table = image_table(root, **kw)
    return table, TaskSpec.from_table(table, kind), FoldPlan.make(table, n_splits, 0, kind)
