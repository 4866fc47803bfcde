"""Image-derived lesion features from the image and its mask (given, or segmented automatically).

The analogues of the TBP measurements for data without them (HAM10000, PH2, DDI, ISIC archive):
shape (area fraction, eccentricity, compactness, solidity, asymmetry about the principal axes)
and CIELAB colour inside the lesion, in the surrounding skin and their contrast (like
``tbp_lv_deltaL/A/B``), colour variegation and the number of ABCD colours present. Images are
processed in parallel worker processes; an empty mask or an unreadable image is recorded and gives
null features.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from PIL import Image
from scipy import ndimage
from skimage import color, filters, measure

from dermstack.config import SEGMENTATION_MODES
from dermstack.data.images import load_image, load_mask
from dermstack.errors import ConfigError, DataError
from dermstack.jobs import process_pool
from dermstack.progress import progress_bar

log = logging.getLogger(__name__)

#: Images are downscaled to at most this side before measuring (the features are scale-free).
MAX_SIDE = 512
#: The six ABCD-rule colours (sRGB, as in the dermoscopy colour-detection literature).
ABCD_COLOURS = {
    "white": (197, 188, 217), "red": (118, 21, 17), "light_brown": (163, 82, 16),
    "dark_brown": (135, 44, 5), "blue_gray": (113, 108, 139), "black": (41, 31, 30),
}
_ABCD_LAB = color.rgb2lab(np.array([list(ABCD_COLOURS.values())], dtype=np.float64) / 255.0)[0]
#: A colour counts as present when at least this fraction of lesion pixels is nearest to it ...
COLOUR_MIN_FRACTION = 0.05
#: ... and within this CIELAB distance of it.
COLOUR_MAX_DELTA_E = 30.0
#: sRGB 0..255 -> linear RGB, skimage's ``rgb2xyz`` companding as a table (8-bit input has 256 values)
_SRGB_LINEAR = np.where((v := np.arange(256) / 255.0) > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)

SHAPE = ["area_fraction", "eccentricity", "solidity", "compactness", "asym_major", "asym_minor", "asymmetry", "n_regions"]
COLOUR = ["L", "A", "B", "C", "H", "stdL", "stdA", "stdB", "Lext", "Aext", "Bext", "stdLext",
          "deltaL", "deltaA", "deltaB", "deltaE", "color_variegation", "n_colors"] + [f"frac_{c}" for c in ABCD_COLOURS]
FEATURES = [f"img_{n}" for n in SHAPE + COLOUR]


# -- segmentation --------------------------------------------------------------------------------
def auto_segment(rgb: np.ndarray) -> np.ndarray:
    """Lesion mask by Otsu on the blurred blue channel: dark components, border-touching ones
    penalised, the largest central one kept, holes filled."""
    h, w = rgb.shape[:2]
    blue = filters.gaussian(rgb[..., 2].astype(np.float64) / 255.0, sigma=max(1.0, max(h, w) / 100))
    try:
        dark = blue < filters.threshold_otsu(blue)
    except ValueError:  # constant image
        return np.zeros((h, w), bool)
    dark = ndimage.binary_opening(dark, iterations=max(1, max(h, w) // 100))
    labels, n = ndimage.label(dark)
    if n == 0:
        return np.zeros((h, w), bool)
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(dark, labels, idx)
    cy, cx = np.array(ndimage.center_of_mass(dark, labels, idx)).T
    off_centre = np.hypot((cy - (h - 1) / 2) / h, (cx - (w - 1) / 2) / w)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touches = np.isin(idx, border)
    score = area * np.exp(-((off_centre / 0.3) ** 2)) * np.where(touches, 0.25, 1.0)
    return ndimage.binary_fill_holes(labels == idx[np.argmax(score)])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1 when both are empty)."""
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


# -- measurements ---------------------------------------------------------------------------------
def principal_axis_asymmetry(mask: np.ndarray) -> tuple[float, float]:
    """Fraction of the lesion not covered by its mirror image about the major and the minor axis."""
    ys, xs = np.nonzero(mask)
    p = np.stack([ys, xs], 1).astype(np.float64)
    c = p.mean(0)
    q = p - c
    if len(p) < 3:
        return 0.0, 0.0
    _, vecs = np.linalg.eigh(q.T @ q)
    out = []
    for normal in (vecs[:, 0], vecs[:, 1]):  # reflect across the major axis (normal = minor dir), then the minor axis
        r = np.rint(p - 2.0 * (q @ normal)[:, None] * normal[None, :]).astype(int)
        inside = (r[:, 0] >= 0) & (r[:, 0] < mask.shape[0]) & (r[:, 1] >= 0) & (r[:, 1] < mask.shape[1])
        hit = np.zeros(len(r), bool)
        hit[inside] = mask[r[inside, 0], r[inside, 1]]
        out.append(1.0 - hit.mean())
    return out[0], out[1]


def shape_features(mask: np.ndarray) -> dict[str, float]:
    props = measure.regionprops(mask.astype(np.uint8))[0]
    area = float(props.area)
    perim = float(props.perimeter_crofton) or 1.0
    asym_major, asym_minor = principal_axis_asymmetry(mask)
    return {
        "area_fraction": area / mask.size, "eccentricity": float(props.eccentricity), "solidity": float(props.solidity),
        "compactness": min(1.0, 4 * math.pi * area / perim**2), "asym_major": asym_major, "asym_minor": asym_minor,
        "asymmetry": (asym_major + asym_minor) / 2, "n_regions": float(ndimage.label(mask)[1]),
    }


def surrounding_skin(mask: np.ndarray) -> np.ndarray:
    """The ring of skin around the lesion, a quarter of its equivalent radius wide (at least 2 px)."""
    width = max(2.0, 0.25 * math.sqrt(mask.sum() / math.pi))
    ring = (ndimage.distance_transform_edt(~mask) <= width) & ~mask
    return ring if ring.any() else ~mask


def rgb2lab_pixels(pixels: np.ndarray) -> np.ndarray:
    """(n, 3) uint8 sRGB -> (n, 3) CIELAB (D65), as ``skimage.color.rgb2lab`` computes it."""
    xyz = _SRGB_LINEAR[pixels] @ color.colorconv.xyz_from_rgb.T
    return color.xyz2lab(xyz[None])[0]


def colour_features(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    # CIELAB of the lesion and ring pixels only: the conversion is per pixel and the rest of the image is unused
    ring = surrounding_skin(mask)
    used = mask | ring
    lab = np.zeros(rgb.shape, np.float64)
    lab[used] = rgb2lab_pixels(rgb[used])
    inside = lab[mask]
    outside = lab[ring] if ring.any() else np.full((1, 3), np.nan)
    mi, si, mo = inside.mean(0), inside.std(0), outside.mean(0)
    d = mi - mo
    # squared CIELAB distances to the ABCD colours by |x|^2 - 2 x.c + |c|^2 (no (n, 6, 3) temporary)
    dist2 = (inside**2).sum(1)[:, None] - 2.0 * inside @ _ABCD_LAB.T + (_ABCD_LAB**2).sum(1)[None, :]
    nearest = dist2.argmin(1)
    close = dist2[np.arange(len(dist2)), nearest] <= COLOUR_MAX_DELTA_E**2
    frac = np.bincount(nearest[close], minlength=len(ABCD_COLOURS)) / len(inside)
    out = {
        "L": mi[0], "A": mi[1], "B": mi[2], "C": math.hypot(mi[1], mi[2]), "H": math.degrees(math.atan2(mi[2], mi[1])),
        "stdL": si[0], "stdA": si[1], "stdB": si[2], "Lext": mo[0], "Aext": mo[1], "Bext": mo[2],
        "stdLext": float(outside[:, 0].std()), "deltaL": d[0], "deltaA": d[1], "deltaB": d[2],
        "deltaE": float(np.linalg.norm(d)), "color_variegation": float(np.linalg.norm(si)),
        "n_colors": float((frac >= COLOUR_MIN_FRACTION).sum()),
    }
    out.update({f"frac_{name}": float(f) for name, f in zip(ABCD_COLOURS, frac)})
    return {k: float(v) for k, v in out.items()}


def lesion_features(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """All image features of one lesion, ``img_``-prefixed; None when the mask is empty."""
    if not mask.any():
        return None
    return {f"img_{k}": v for k, v in {**shape_features(mask), **colour_features(rgb, mask)}.items()}


# -- one image ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageJob:
    image_id: str
    image_ref: str | None
    mask_ref: str | None
    segmentation: str


@dataclass
class ImageResult:
    image_id: str
    features: dict[str, float] | None
    status: str  # ok | empty_mask | no_image | unreadable | mask_mismatch
    auto_mask: bool = False
    message: str = ""


#: a given mask may be saved at another resolution than its image, not with another shape
MASK_ASPECT_TOLERANCE = 0.02


def load_pair(image_ref: str, mask_ref: str | None, auto: bool) -> tuple[np.ndarray, np.ndarray]:
    """The RGB image (at most MAX_SIDE) and its mask: the given one resized to it, or an automatic one.
    A given mask whose shape is not its image's (a transposed one, say) is a DataError on ``mask_ref``."""
    img = load_image(image_ref)
    width, height = img.size
    scale = MAX_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    rgb = np.asarray(img)
    if auto:
        return rgb, auto_segment(rgb)
    mask = load_mask(mask_ref)
    if abs(mask.shape[1] / mask.shape[0] - width / height) > MASK_ASPECT_TOLERANCE * width / height:
        raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]} pixels, its image {width}x{height}"
                        + (" (transposed)" if mask.shape == (width, height) else "") + ": not used",
                        file=mask_ref, column="mask_ref")
    if mask.shape != rgb.shape[:2]:
        mask = np.asarray(Image.fromarray(mask).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST))
    return rgb, mask


def measure_image(job: ImageJob) -> ImageResult:
    if not job.image_ref:
        return ImageResult(job.image_id, None, "no_image")
    auto = job.segmentation == "automatic" or not job.mask_ref
    try:
        rgb, mask = load_pair(job.image_ref, job.mask_ref, auto)
    except DataError as e:
        return ImageResult(job.image_id, None, "mask_mismatch" if e.column == "mask_ref" else "unreadable", auto, str(e))
    feats = lesion_features(rgb, mask)
    return ImageResult(job.image_id, feats, "ok" if feats else "empty_mask", auto)


# -- a table ------------------------------------------------------------------------------------
def jobs_for(df: pl.DataFrame, segmentation: str) -> list[ImageJob]:
    if segmentation not in SEGMENTATION_MODES:
        raise ConfigError(f"[features] segmentation must be one of {SEGMENTATION_MODES}, got {segmentation!r}")
    if segmentation == "mask":
        no_mask = df.filter(pl.col("mask_ref").is_null() & pl.col("image_ref").is_not_null())["image_id"]
        if len(no_mask):
            raise DataError(f"segmentation = 'mask' but {len(no_mask)} images have no mask, e.g. {no_mask.head(5).to_list()}",
                            column="mask_ref")
    rows = df.select("image_id", "image_ref", "mask_ref").iter_rows()
    return [ImageJob(i, r, m, segmentation) for i, r, m in rows]


def run_jobs(jobs: list[ImageJob], workers: int) -> Iterable[ImageResult]:
    bar = dict(total=len(jobs), desc="image features", unit="img", mininterval=1.0, leave=False)
    if workers <= 1 or len(jobs) < 64:
        return progress_bar(map(measure_image, jobs), **bar)
    chunk = max(8, min(256, len(jobs) // (workers * 8)))
    pool = process_pool(workers)

    def results() -> Iterable[ImageResult]:
        with pool:
            yield from progress_bar(pool.map(measure_image, jobs, chunksize=chunk), **bar)

    return results()


def image_features(df: pl.DataFrame, segmentation: str = "auto", workers: int = 2) -> tuple[pl.DataFrame, dict]:
    """``image_id`` + ``img_*`` features for each row of ``df`` (image_id, image_ref, mask_ref).

    Returns (frame, info); info counts automatic masks and lists empty masks, rows without an image,
    unreadable images and masks whose shape is not their image's (their features are null)."""
    jobs = jobs_for(df, segmentation)
    results = list(run_jobs(jobs, workers))
    table = {f: [r.features[f] if r.features else None for r in results] for f in FEATURES}
    frame = pl.DataFrame({"image_id": [r.image_id for r in results], **table},
                         schema={"image_id": pl.String, **{f: pl.Float64 for f in FEATURES}})
    info: dict = {"images": len(results), "auto_segmented": sum(r.auto_mask for r in results if r.status != "no_image")}
    for status in ("empty_mask", "no_image", "unreadable", "mask_mismatch"):
        bad = [r for r in results if r.status == status]
        if bad:
            info[status] = [r.image_id for r in bad]
            log.warning("%d images: %s, image features null, e.g. %s %s", len(bad), status.replace("_", " "),
                        bad[0].image_id, bad[0].message)
    return frame, info
