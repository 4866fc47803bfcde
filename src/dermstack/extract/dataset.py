"""Image decoding for extraction: which images of a table to embed (every view of a row), and a
torch Dataset that turns ``image_ref``s into uint8 HWC arrays.

Geometry (resize + center crop) follows the backbone's timm data config; scaling to float and
normalising happen on the model's device, in the batch (cheaper than per image in the workers).
A JPEG much larger than the target is decoded at a reduced size (``Image.draft``), in one resize.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset

from dermstack.data.images import decode_image, read_image_bytes
from dermstack.data.table import LesionTable, hash_column, image_views, view_key

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


@dataclass(frozen=True)
class Geometry:
    """Resize and crop of timm's eval transform, from a data config (input_size, crop_pct, crop_mode, interpolation)."""

    height: int
    width: int
    crop_pct: float
    crop_mode: str
    interpolation: str

    @classmethod
    def from_data_config(cls, cfg: dict) -> Geometry:
        h, w = cfg["input_size"][-2:]
        return cls(int(h), int(w), float(cfg.get("crop_pct") or 1.0), cfg.get("crop_mode") or "center",
                   cfg.get("interpolation") or "bilinear")

    @property
    def fast(self) -> bool:
        return (self.height == self.width and self.crop_mode in ("center", "squash") and self.interpolation in _RESAMPLE
                and self.crop_pct <= 1.0)

    def scale_size(self) -> int:
        return math.floor(self.height / self.crop_pct)

    def box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """Source region that timm's Resize(scale_size) + CenterCrop(size) ends up showing (same pixel grid)."""
        if self.crop_mode == "squash":
            return (0.0, 0.0, float(w), float(h))
        s = self.scale_size()
        rw, rh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)  # torchvision Resize(int)
        left, top = int(round((rw - self.width) / 2.0)), int(round((rh - self.height) / 2.0))  # CenterCrop
        fx, fy = w / rw, h / rh
        return (left * fx, top * fy, (left + self.width) * fx, (top + self.height) * fy)

    def apply(self, img: Image.Image) -> np.ndarray:
        """An RGB PIL image (possibly draft-decoded) -> (H, W, 3) uint8."""
        img = img if img.mode == "RGB" else img.convert("RGB")
        out = img.resize((self.width, self.height), _RESAMPLE[self.interpolation], box=self.box(*img.size))
        return np.asarray(out)


class TimmGeometry:
    """Fallback for unusual data configs: timm's own eval transform, up to (not including) ToTensor."""

    def __init__(self, cfg: dict):
        t = create_transform(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}, is_training=False)
        steps = []
        for step in t.transforms:
            if "ToTensor" in type(step).__name__:
                break
            steps.append(step)
        self.steps = steps

    def apply(self, img: Image.Image) -> np.ndarray:
        img = img.convert("RGB")
        for s in self.steps:
            img = s(img)
        return np.asarray(img)


def make_geometry(cfg: dict) -> Geometry | TimmGeometry:
    g = Geometry.from_data_config(cfg)
    return g if g.fast else TimmGeometry(cfg)


def decode(data: bytes, geometry: Geometry | TimmGeometry, ref: str = "image") -> np.ndarray:
    """Decode encoded image bytes and fit them to the backbone's input (DataError on corrupt or too small images)."""
    need = None
    if isinstance(geometry, Geometry):  # DCT scaling: at least `need` px on the short side
        need = geometry.scale_size() if geometry.crop_mode == "center" else max(geometry.height, geometry.width)
    return geometry.apply(decode_image(data, ref, draft=need))


class ImageDataset(Dataset):
    """Item ``i`` -> (i, uint8 HWC array or None, failure reason or None); never raises for bad images."""

    def __init__(self, refs: list[str | None], geometry: Geometry | TimmGeometry):
        self.refs, self.geometry = refs, geometry

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        ref = self.refs[i]
        if not ref:
            return i, None, "no image_ref"
        try:
            data = read_image_bytes(ref)
        except Exception as e:  # DataError for missing files/keys, OSError variants
            return i, None, f"cannot read image: {getattr(e, 'reason', e)}"
        try:
            return i, decode(data, self.geometry, ref), None
        except Exception as e:  # DataError, or whatever else a decoder raises
            return i, None, getattr(e, "reason", None) or f"cannot decode image: {type(e).__name__}: {e}"


def collate(items) -> dict:
    """Good images stacked as one (N, H, W, 3) uint8 tensor, plus the failures."""
    ok = [(i, a) for i, a, _ in items if a is not None]
    return {
        "index": torch.tensor([i for i, _ in ok], dtype=torch.long),
        "images": torch.from_numpy(np.stack([a for _, a in ok])) if ok else None,
        "failed": [(i, why) for i, a, why in items if a is None],
    }


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None, persistent_workers=False)


@dataclass(frozen=True)
class ViewImages:
    """The images of one view of a table that a backbone embeds under ``view_key(backbone, view)``."""

    view: str
    ids: list[str]
    refs: list[str | None]
    #: the SHA-256 of each image's bytes recorded at ingest (None where the table has none)
    digests: list[str | None]

    def key(self, backbone: str) -> str:
        return view_key(backbone, self.view)


def view_images(table: LesionTable, shard: tuple[int, int] | None = None) -> list[ViewImages]:
    """Every image of every row (every n-th row from the i-th with ``shard=(i, n)``): the primary
    ``image_ref`` of each row (a row without one is recorded as failed), then each further view
    (``image_ref_<view>``) of the rows that have that image; a row without it simply has no
    embedding of that view, and its features of that view are missing."""
    df = table.df if shard is None else table.df.gather_every(shard[1], offset=shard[0])
    out = []
    for view, column in image_views(df).items():
        rows = df if not view else df.filter(pl.col(column).is_not_null())
        digest = hash_column(view)
        out.append(ViewImages(view, rows["image_id"].to_list(), rows[column].to_list(),
                              rows[digest].to_list() if digest in rows.columns else [None] * len(rows)))
    return out
