"""Load the image (and mask) behind an ``image_ref``: a file path or an HDF5 file + key."""
from __future__ import annotations

import io
from functools import lru_cache

import h5py
import numpy as np
import simplejpeg
from PIL import Image

from dermstack.data.table import parse_image_ref
from dermstack.errors import DataError

#: Shortest image side worth embedding or measuring: below it a backbone sees only interpolation and
#: a segmentation covers the whole frame.
MIN_IMAGE_SIDE = 16


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
    except (OSError, RuntimeError, KeyError, ValueError) as e:  # h5py's errors for a damaged file
        raise DataError(f"cannot read image{f' {key!r}' if key else ''}: {e}", file=path) from e


def decode_image(data: bytes, ref: str, draft: int | None = None) -> Image.Image:
    """Decode encoded image bytes fully, 8 bits per channel; DataError for anything a model must not see.

    A JPEG is first checked by libjpeg-turbo in strict mode (``simplejpeg``): on corrupt or missing
    entropy data ("premature end of data segment") libjpeg only warns and fills the rest of the
    image with grey, and PIL passes that on silently. 16-bit images (PNG ``I;16``) are scaled to
    8 bits (PIL's own conversion clips them to white). An image whose short side is below
    ``MIN_IMAGE_SIDE`` is refused. ``draft``: decode a JPEG at a reduced DCT scale with at least
    this many pixels on each side.
    """
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if min(width, height) < MIN_IMAGE_SIDE:
            raise DataError(f"image is {width}x{height} pixels, below the {MIN_IMAGE_SIDE}-pixel minimum side", file=ref)
        if img.format == "JPEG":
            simplejpeg.decode_jpeg(data, colorspace="GRAY" if img.mode == "L" else "RGB", min_factor=8, strict=True)
            if draft:
                img.draft("RGB", (draft, draft))
        img.load()
    except DataError:
        raise
    except Exception as e:  # PIL and simplejpeg raise several types for bad data
        raise DataError(f"cannot decode image: {e}", file=ref) from e
    return _eight_bit(img)


def _eight_bit(img: Image.Image) -> Image.Image:
    """Integer/float single-channel images (16-bit PNG, TIFF) as 8-bit greyscale over their full depth."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img).astype(np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def load_image(ref: str, mode: str = "RGB") -> Image.Image:
    """Decode an image fully (a truncated, corrupt or too small image raises DataError)."""
    return decode_image(read_image_bytes(ref), ref).convert(mode)


def load_mask(ref: str) -> np.ndarray:
    """A lesion mask as a boolean array (non-zero = lesion)."""
    return np.asarray(load_image(ref, mode="L")) > 127
