"""Shared fixtures of the external-validation tests: a tiny HAM10000-format dataset of synthetic
lesion JPEGs, a run trained on it (timm's test model, LightGBM and XGBoost, their mean), and an
ISIC-archive export holding planted copies of its training images (identical bytes, the same id)
among distinct images; the run is one of ``tiny``'s. :func:`plant` also makes the near-duplicates (JPEG quality 70, resized by
0.9, cropped by 5 %) that ``test_external_audit`` plants among real HAM10000 images: the test
model's random weights do not tell such copies from distinct images, a real backbone does."""
from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract_fixtures import save_test_weights
from tiny_runs import booster, embedded

HAM_CLASSES = ["nv", "bkl", "mel", "bcc"]
MALIGNANT = {"mel", "bcc"}
SIZE = (96, 72)
#: the planted copies of training images: external id -> how it copies a training image
PLANTED = {"ISIC_9000001": "hash"}
#: the near-duplicate copies (of real images; see the module docstring)
NEAR_COPIES = {"ISIC_9000002": "jpeg70", "ISIC_9000003": "resize0.9", "ISIC_9000004": "crop5%"}

#: the run's models: LightGBM and XGBoost, their mean
MODELS = [booster("lightgbm", 20, seeds=[0], params={"verbose": -1}), booster("xgboost", 20, seeds=[0])]


def ham_sections(data: Path, extract: dict) -> dict:
    """The ``tiny.run`` sections of a run on the HAM10000-format folder ``data`` (no image features, no report)."""
    return {"data": {"format": "ham10000", "path": str(data)}, "extract": extract, "features": {"image": False},
            "ensemble": {"method": "mean"}, "report": {"enabled": False}}


def lesion_image(rng: np.random.Generator, malignant: bool, w: int = SIZE[0], h: int = SIZE[1]) -> np.ndarray:
    """Smooth blobs of random colours on skin, darker when malignant (something for the models to
    learn); smooth, so that an image and its re-encoded copy embed alike and two images do not."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.ones((h, w, 3)) * (np.array([215, 165, 135]) + rng.normal(0, 15, 3))
    for _ in range(rng.integers(2, 6)):
        cy, cx, r = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w, rng.uniform(0.08, 0.3) * h
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
        out = out * (1 - 0.8 * blob) + rng.uniform(20, 200, 3) * 0.8 * blob
    return (out * (0.7 if malignant else 1.0)).clip(0, 255).astype(np.uint8)


#: lesions whose image is the byte-identical file of an earlier lesion's (HAM10000 has such repeats)
DUPLICATED = {50: 1, 51: 2, 52: 3, 53: 4, 54: 6, 55: 7}


def write_ham(root: Path, n_lesions: int = 60, seed: int = 0) -> Path:
    """HAM10000 layout: ``HAM10000_metadata.csv`` and ``images/ISIC_*.jpg``; every fifth lesion has two
    images; the lesions of :data:`DUPLICATED` repeat another lesion's image file under their own ids."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, k, first = [], 0, {}
    for lesion in range(n_lesions):
        dx = HAM_CLASSES[lesion % len(HAM_CLASSES)]
        age, sex, site = 30 + 5 * (lesion % 9), ("male", "female")[lesion % 2], ("back", "face", "lower extremity")[lesion % 3]
        for _ in range(2 if lesion % 5 == 0 else 1):
            image_id = f"ISIC_{k:07d}"
            path = root / "images" / f"{image_id}.jpg"
            if lesion in DUPLICATED:
                shutil.copyfile(first[DUPLICATED[lesion]], path)
            else:
                Image.fromarray(lesion_image(rng, dx in MALIGNANT)).save(path, quality=90)
            first.setdefault(lesion, path)
            rows.append([f"HAM_{lesion:07d}", image_id, dx, "histo", age, sex, site])
            k += 1
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        w.writerows(rows)
    return root


def plant(kind: str, src: Path, out: Path, rng: random.Random) -> None:
    """A copy of the image ``src`` at ``out`` (a JPEG): the same bytes, or re-encoded, resized or cropped."""
    if kind == "hash":
        shutil.copyfile(src, out)
        return
    img = Image.open(src).convert("RGB")
    w, h = img.size
    if kind == "resize0.9":
        img = img.resize((round(0.9 * w), round(0.9 * h)), Image.Resampling.BILINEAR)
    elif kind == "crop5%":
        dx, dy = round(0.05 * w), round(0.05 * h)
        left, top = rng.randint(0, dx), rng.randint(0, dy)
        img = img.crop((left, top, w - (dx - left), h - (dy - top)))
    img.save(out, quality=70 if kind == "jpeg70" else 95)


def write_archive(root: Path, ham: Path, n_distinct: int = 24, seed: int = 1, planted: dict[str, str] = PLANTED,
                  same_id: str | None = "ISIC_0000005", positives: bool = True) -> dict[str, str]:
    """An ISIC-archive export (``metadata.csv`` + ``ISIC_*.jpg``) of ``n_distinct`` new images plus the
    planted copies of training images (and, with ``same_id``, a new image under a training image's
    id). Returns external id -> the training image it copies."""
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, copies = [], {}
    train = sorted((ham / "images").glob("*.jpg"))
    for k, (image_id, kind) in enumerate(planted.items()):
        src = train[3 + 7 * k]
        plant(kind, src, root / f"{image_id}.jpg", prng)
        copies[image_id] = src.stem
        rows.append([image_id, "Benign", "Nevus"])
    if same_id:
        Image.fromarray(lesion_image(rng, False)).save(root / f"{same_id}.jpg", quality=90)
        copies[same_id] = same_id
        rows.append([same_id, "Benign", "Nevus"])
    for k in range(n_distinct):
        image_id = f"ISIC_{8000000 + k:07d}"
        malignant = positives and k % 3 == 0
        Image.fromarray(lesion_image(rng, malignant)).save(root / f"{image_id}.jpg", quality=90)
        rows.append([image_id, "Malignant" if malignant else "Benign", "Melanoma, NOS" if malignant else "Nevus"])
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["isic_id", "attribution", "age_approx", "sex", "anatom_site_general", "diagnosis_1", "diagnosis_3"])
        for i, (image_id, d1, d3) in enumerate(rows):
            w.writerow([image_id, ("Clinic A", "Clinic B")[i % 2], 40 + 5 * (i % 6), ("Male", "female")[i % 2],
                        ("posterior torso", "head/neck")[i % 2], d1, d3])
    return copies


@pytest.fixture(scope="session")
def ham_data(tmp_path_factory) -> Path:
    """The tiny HAM10000-format dataset (:func:`write_ham`)."""
    return write_ham(tmp_path_factory.mktemp("ham") / "ham")


@pytest.fixture(scope="session")
def ham_run(tiny, ham_data, test_weights_session) -> Path:
    """A finished run on :func:`ham_data` (the test model's embeddings at 48 px, LightGBM, XGBoost, mean)."""
    return tiny.run(MODELS, **ham_sections(ham_data, embedded(test_weights_session, image_size=48)))


@pytest.fixture(scope="session")
def archive(ham_data, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An ISIC-archive export with the planted copies of ``ham_run``'s training images."""
    root = tmp_path_factory.mktemp("archive")
    copies = write_archive(root / "export", ham_data)
    return root / "export", copies


@pytest.fixture(scope="session")
def test_weights_session(tmp_path_factory) -> Path:
    """The test model's seeded weights, once per session (the run fixture outlives a module)."""
    return save_test_weights(tmp_path_factory.mktemp("w"))
