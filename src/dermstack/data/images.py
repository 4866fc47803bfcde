"""Load the image (and mask) behind an ``image_ref``: a file path or an HDF5 file + key."""
from __future__ import annotations

import io
from functools import lru_cache

import h5py
import numpy as np
from PIL import Image

from dermstack.data.table import parse_image_ref
from dermstack.errors import DataError


@lru_cache(maxsize=8)
def _h5(path: str) -> h5py.File:
    # One handle per file per process (DataLoader workers each open their own).
    return h5py.File(path, "r")


def read_image_bytes(ref: str) -> bytes:
    """Raw encoded bytes of an image (JPEG/PNG/BMP), from a file or an HDF5 dataset."""
    path, key = parse_image_ref(ref)
    try:
        if key is None:
            with open(path, "rb") as f:
                return f.read()
        f = _h5(path)
        if key not in f:
            raise DataError(f"image key {key!r} not in HDF5 file", file=path)
        return bytes(np.asarray(f[key][()]).tobytes())
    except OSError as e:
        raise DataError(f"cannot read image: {e}", file=path) from e


def load_image(ref: str, mode: str = "RGB") -> Image.Image:
    """Decode an image fully (a truncated or corrupt file raises DataError)."""
    data = read_image_bytes(ref)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert(mode)
    except Exception as e:  # PIL raises several types for bad data
        raise DataError(f"cannot decode image: {e}", file=ref) from e


def load_mask(ref: str) -> np.ndarray:
    """A lesion mask as a boolean array (non-zero = lesion)."""
    return np.asarray(load_image(ref, mode="L")) > 127
