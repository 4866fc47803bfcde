"""Shared fixtures of the extract tests: tiny JPEG/PNG images, a LesionTable, test-model weights."""
from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import timm
from PIL import Image
from safetensors.torch import save_file

from dermstack.data.table import LesionTable, TableMeta, finalize_frame, h5_ref

TEST_MODEL = "test_efficientnet"


def lesion_like(rng: np.random.Generator, w: int = 96, h: int = 72) -> np.ndarray:
    """A skin-coloured image with a dark blob at a random place: different images, different pixels."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.35) * h
    blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
    skin = np.array([220, 170, 140]) + rng.normal(0, 8, (h, w, 3))
    return (skin * (1 - 0.7 * blob) + rng.normal(0, 4, (h, w, 3))).clip(0, 255).astype(np.uint8)


def make_table(ids: list[str], refs: list[str | None]) -> LesionTable:
    df = pl.DataFrame({"image_id": ids, "image_ref": refs, "patient_id": ids, "split": ["train"] * len(ids)})
    return LesionTable(finalize_frame(df), TableMeta(dataset="test"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], list[str]]:
    """10 JPEG files + 4 JPEGs as bytes in an HDF5 file (the ISIC 2024 layout)."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    ids, refs = [], []
    for i in range(10):
        p = d / f"IMG_{i:03d}.jpg"
        Image.fromarray(lesion_like(rng, 96 + 8 * i, 72)).save(p, quality=90)
        ids.append(p.stem)
        refs.append(str(p))
    h5 = d / "crops.hdf5"
    with h5py.File(h5, "w") as f:
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(lesion_like(rng, 80, 80)).save(buf, format="JPEG")
            f[f"ISIC_{i:03d}"] = np.void(buf.getvalue())
            ids.append(f"ISIC_{i:03d}")
            refs.append(h5_ref(h5, f"ISIC_{i:03d}"))
    return ids, refs


@pytest.fixture(scope="module")
def table(images) -> LesionTable:
    return make_table(*images)


def save_test_weights(folder: Path) -> Path:
    """Seeded random weights of timm's tiny test model, saved as a local .safetensors file."""
    import torch

    torch.manual_seed(0)
    m = timm.create_model(TEST_MODEL)
    p = folder / f"{TEST_MODEL}.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p))
    return p


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory) -> Path:
    return save_test_weights(tmp_path_factory.mktemp("w"))
