"""The images a CNN trains on, decoded once into one uint8 tensor (or lazily when that is too big)."""
from __future__ import annotations

import logging

import numpy as np
import polars as pl
import torch
from PIL import Image

from dermstack.data.images import load_image
from dermstack.errors import DataError
from dermstack.progress import progress_bar

log = logging.getLogger(__name__)

#: Decode everything up front when the cache fits in this many bytes; otherwise decode per sample.
CACHE_LIMIT = 4 << 30


def image_refs(df: pl.DataFrame, source: str = "LesionTable") -> list[str]:
    """``image_ref`` of every row; a row without one is a DataError naming its image_id."""
    missing = df.filter(pl.col("image_ref").is_null())["image_id"].to_list()
    if missing:
        raise DataError(f"{len(missing)} rows have no image, so a CNN cannot score them, e.g. {missing[:5]}",
                        file=source, column="image_ref")
    return df["image_ref"].to_list()


def decode(ref: str, side: int) -> torch.Tensor:
    """One image as a (3, side, side) uint8 tensor (squashed to a square, as the ISIC crops are)."""
    img = load_image(ref).resize((side, side), Image.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


class ImageBank:
    """``refs[i]`` decoded at ``side`` x ``side``; cached in memory when it fits in ``cache_limit``."""

    def __init__(self, refs: list[str], side: int, cache_limit: int = CACHE_LIMIT, progress: bool = True):
        self.refs, self.side = list(refs), side
        self.cache: torch.Tensor | None = None
        if len(refs) * 3 * side * side <= cache_limit:
            self.cache = torch.empty((len(refs), 3, side, side), dtype=torch.uint8)
            for i, ref in enumerate(progress_bar(self.refs, enabled=progress, desc="decode images", unit="img", leave=False)):
                self.cache[i] = decode(ref, side)
        else:
            log.info("%d images at %d px exceed the %d MiB cache; decoding per batch", len(refs), side, cache_limit >> 20)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else decode(self.refs[i], self.side)


class BankDataset(torch.utils.data.Dataset):
    """Rows ``index`` of a bank (uint8, augmented later per batch) with their targets (0 when scoring)."""

    def __init__(self, bank: ImageBank, index: np.ndarray, targets: np.ndarray | None = None):
        self.bank, self.index = bank, np.asarray(index)
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.bank[int(self.index[i])], (self.targets[i] if self.targets is not None else torch.zeros(()))
