"""Render synthetic lesion crops as JPEG bytes and store them the way the ISIC 2024 HDF5 files do.

A crop is a skin-coloured, gently textured background with one blob: an ellipse whose border is
perturbed by a few radial harmonics, filled with the lesion colour, darker towards the centre,
with mottling and (for variegated lesions) blotches of a second, darker colour. Textures come
from a small bank of smooth noise fields, reused with a random offset and orientation per lesion.

Work is cut into fixed chunks of ``CHUNK`` lesions, each drawn with its own generator
``default_rng([seed, split, chunk])``, so the bytes do not depend on the number of workers.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from dermstack.atomic import atomic_path
from dermstack.jobs import process_pool
from dermstack.progress import progress_bar

CHUNK = 2048
JPEG_QUALITY = 88
#: Field of view of a crop in mm (the ISIC 2024 tiles are 15 x 15 mm around the lesion).
FIELD_MM = 15.0
_BANK_SIZE = 24
_HARMONICS = np.arange(2, 7)  # border harmonics k = 2..6


@dataclass
class LesionLooks:
    """Per-lesion drawing parameters, one array entry per lesion (float32 unless noted)."""

    major_mm: np.ndarray
    minor_mm: np.ndarray
    angle_deg: np.ndarray
    skin_rgb: np.ndarray  # (n, 3) 0..255
    lesion_rgb: np.ndarray  # (n, 3) 0..255
    skin_texture: np.ndarray  # amplitude of the skin mottling (0..255 units)
    colour_variation: np.ndarray  # amplitude of the lesion mottling
    centre_darkening: np.ndarray  # 0..1 fraction darker at the centre
    irregularity: np.ndarray  # relative amplitude of the border harmonics
    variegation: np.ndarray  # 0..1 share of the lesion covered by dark blotches

    def __post_init__(self) -> None:
        for k, v in vars(self).items():
            setattr(self, k, np.asarray(v, np.float32))

    def __len__(self) -> int:
        return len(self.major_mm)

    def slice(self, start: int, stop: int) -> LesionLooks:
        return LesionLooks(**{k: v[start:stop] for k, v in vars(self).items()})

    def take(self, index: np.ndarray) -> LesionLooks:
        return LesionLooks(**{k: v[index] for k, v in vars(self).items()})


def texture_bank(size: int, seed: int) -> np.ndarray:
    """``_BANK_SIZE`` smooth unit-variance noise fields of side ``2 * size`` (float32)."""
    rng = np.random.default_rng([seed, 991])
    side = 2 * size
    f = np.fft.fftfreq(side)
    radius2 = f[:, None] ** 2 + f[None, :] ** 2
    bank = np.empty((_BANK_SIZE, side, side), np.float32)
    for i in range(_BANK_SIZE):
        scale = (0.03, 0.06, 0.12)[i % 3]
        spectrum = np.fft.fft2(rng.standard_normal((side, side))) * np.exp(-radius2 / (2 * scale**2))
        field = np.fft.ifft2(spectrum).real
        bank[i] = (field - field.mean()) / field.std()
    return bank


def _texture(bank: np.ndarray, size: int, pick: np.ndarray) -> np.ndarray:
    """A ``size`` crop of bank field ``pick[0]`` at offset ``pick[1:3]``, rotated ``pick[3]`` quarter turns."""
    t = bank[pick[0], pick[1]:pick[1] + size, pick[2]:pick[2] + size]
    return np.rot90(t, pick[3]) if pick[3] else t


def render_chunk(looks: LesionLooks, size: int, seed: int, split: int, chunk: int, bank: np.ndarray) -> list[bytes]:
    """JPEG bytes of each lesion in ``looks`` (one chunk), deterministic in (seed, split, chunk)."""
    rng = np.random.default_rng([seed, split, chunk])
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    px_per_mm = size / FIELD_MM
    shade = (xx + yy) * np.float32(6 / size)  # a soft light gradient across the crop
    f32 = np.float32
    n, nh = len(looks), len(_HARMONICS)
    centres = rng.normal(0, size * 0.03, (n, 2)).astype(f32)
    harmonics = (rng.normal(0, 1, (n, nh)) / _HARMONICS) * np.exp(1j * rng.uniform(0, 2 * np.pi, (n, nh)))
    picks = np.stack([rng.integers(0, len(bank), (n, 3)), rng.integers(0, bank.shape[1] - size, (n, 3)),
                      rng.integers(0, bank.shape[2] - size, (n, 3)), rng.integers(0, 4, (n, 3))], axis=-1)
    darks = (np.array([70, 55, 75]) + rng.normal(0, 10, (n, 3))).astype(f32)  # blue-grey / dark brown
    out = []
    for i in range(n):
        cx, cy = centres[i]
        theta = np.deg2rad(looks.angle_deg[i])
        c, s = f32(np.cos(theta)), f32(np.sin(theta))
        a = f32(max(looks.major_mm[i] * px_per_mm / 2, 1.0))
        b = f32(max(looks.minor_mm[i] * px_per_mm / 2, 1.0))
        u = ((xx - cx) * c + (yy - cy) * s) / a
        v = ((yy - cy) * c - (xx - cx) * s) / b
        r = np.sqrt(u * u + v * v)
        # border radius 1 + irregularity * sum_k c_k cos(k phi + p_k), via powers of e^{i phi}
        w = (u + 1j * v).astype(np.complex64) / np.maximum(r, f32(1e-3))
        coef = harmonics[i]
        poly = np.complex64(coef[-1])
        for ck in coef[-2::-1]:
            poly = poly * w + np.complex64(ck)
        edge = 1 + looks.irregularity[i] * (poly * w * w).real
        inside = np.clip((edge - r) * (min(a, b) / f32(1.2)) + f32(0.5), 0, 1)[..., None]  # ~1 px soft border

        skin = looks.skin_rgb[i] + (looks.skin_texture[i] * _texture(bank, size, picks[i, 0]) - shade)[..., None]
        depth = np.clip(1 - r / np.maximum(edge, f32(0.2)), 0, 1)
        lesion = looks.lesion_rgb[i] * (1 - looks.centre_darkening[i] * depth)[..., None]
        lesion += (looks.colour_variation[i] * _texture(bank, size, picks[i, 1]))[..., None]
        if looks.variegation[i] > 0:
            blotch = (_texture(bank, size, picks[i, 2]) > 1.6 - 2.4 * looks.variegation[i])[..., None]
            lesion = np.where(blotch, f32(0.5) * (lesion + darks[i]), lesion)
        rgb = skin + (lesion - skin) * inside
        img = np.clip(rgb, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
        out.append(buf.getvalue())
    return out


# -- process pool ---------------------------------------------------------------------------
_BANK: np.ndarray | None = None


def _init_worker(size: int, seed: int) -> None:
    global _BANK
    _BANK = texture_bank(size, seed)


def _render_task(args: tuple) -> list[bytes]:
    looks, size, seed, split, chunk = args
    return render_chunk(looks, size, seed, split, chunk, _BANK)


def render_all(looks: LesionLooks, size: int, seed: int, split: int, workers: int | None = None,
               desc: str = "images") -> Iterator[list[bytes]]:
    """Yield the JPEG bytes chunk by chunk, in lesion order, with a progress bar on stderr."""
    n_chunks = -(-len(looks) // CHUNK)
    tasks = ((looks.slice(k * CHUNK, (k + 1) * CHUNK), size, seed, split, k) for k in range(n_chunks))
    workers = min(workers or os.cpu_count() or 1, n_chunks)
    bar = progress_bar(total=len(looks), desc=desc, unit="img", leave=False)
    try:
        if workers <= 1:
            bank = texture_bank(size, seed)
            for task in tasks:
                images = render_chunk(*task, bank)
                bar.update(len(images))
                yield images
            return
        with process_pool(workers, initializer=_init_worker, initargs=(size, seed)) as pool:
            for images in pool.map(_render_task, tasks, chunksize=1):
                bar.update(len(images))
                yield images
    finally:
        bar.close()


def write_jpeg_hdf5(path: Path, ids: list[str], chunks: Iterator[list[bytes]]) -> int:
    """Write one scalar ``|S<n>`` dataset of JPEG bytes per id (the Kaggle layout); returns total bytes."""
    total = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        it = iter(ids)
        for images in chunks:
            for data in images:
                f.create_dataset(next(it), data=np.bytes_(data), track_times=False)
                total += len(data)
    return total
