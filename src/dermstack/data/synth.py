"""Synthetic ISIC 2024 SLICE-3D data in the Kaggle layout, for demos, tests and scale benchmarks.

Writes ``train-metadata.csv`` (every column of the real file, same order and number formats),
``test-metadata.csv``, ``train-image.hdf5`` / ``test-image.hdf5`` (one scalar ``|S<n>`` dataset of
JPEG bytes per ``isic_id``, like Kaggle's) and ``sample_submission.csv``.

Distributions come from ``synth_marginals.json`` (fitted on the real 1,049-row sample by
``scripts/fit_synth_marginals.py``): per-lesion numeric columns through a Gaussian copula with a
between-patient share of variance (a patient has its own skin colour and lesion style), patient
age/sex/site drawn once per patient, heavy-tailed lesion counts per patient. Positives are chosen
with odds rising with age and by body site, then shifted along the real data's malignancy
direction plus a per-lesion "ugly duckling" deviation from the patient's other lesions; their
images carry an extra cue (variegation, irregular border) that is not in the metadata.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import ndtr
from skimage.color import lab2rgb

from dermstack.atomic import write_csv
from dermstack.data.synth_render import LesionLooks, render_all, write_jpeg_hdf5
from dermstack.rundir import claim_dir

log = logging.getLogger(__name__)

#: Multiplies the real sample's mean normal-score difference of positives (the malignancy direction).
SIGNAL = 0.5
#: Added to that direction (normal-score SDs): positives have more irregular borders.
DESIGN_SHIFT = {"tbp_lv_norm_border": 0.6, "tbp_lv_area_perim_ratio": 0.5}
#: SD of the random per-lesion deviation of positives from their patient's usual lesion.
UGLY_DUCKLING = 0.8
#: Multiplies the real sample's age log-odds slope (positives come from older patients).
AGE_BOOST = 3.0
#: SD of the patient random effect on the odds of malignancy (positives cluster in patients).
PATIENT_RISK_SD = 0.6
#: Mean shift of the image-only malignancy cue of positives (in SDs).
IMAGE_SIGNAL = 2.0
#: Columns positives do not shift: the skin around a lesion is the patient's, and two neutral ones.
_STABLE = {"tbp_lv_Lext", "tbp_lv_Aext", "tbp_lv_Bext", "tbp_lv_stdLExt", "tbp_lv_symm_2axis_angle",
           "tbp_lv_dnn_lesion_confidence"}
_SPLIT_CODE = {"train": 0, "test": 1}


@dataclass
class SynthSummary:
    """What ``synthesize_isic2024`` wrote."""

    out_dir: Path
    n_train: int
    n_test: int
    n_patients_train: int
    n_patients_test: int
    n_positive: int
    image_size: int
    image_bytes: int
    seconds_metadata: float
    seconds_images: float

    def __str__(self) -> str:
        rate = self.n_positive / max(self.n_train, 1)
        test = (f"{self.n_test:,} unlabelled test lesions from {self.n_patients_test:,} other patients"
                if self.n_test else "no test split")
        return (f"Synthetic ISIC 2024 data in {self.out_dir}: {self.n_train:,} training lesions from "
                f"{self.n_patients_train:,} patients ({self.n_positive:,} malignant, {rate:.3%}) and {test}, "
                f"in the Kaggle layout (*-metadata.csv, *-image.hdf5 with {self.image_size} px JPEGs "
                f"totalling {self.image_bytes / 2**20:.1f} MiB, sample_submission.csv); metadata took "
                f"{self.seconds_metadata:.1f} s, images {self.seconds_images:.1f} s.")


@lru_cache(maxsize=1)
def load_marginals() -> dict:
    """The fitted marginals shipped with the package."""
    return json.loads((resources.files("dermstack.data") / "synth_marginals.json").read_text(encoding="utf-8"))


def patients_for(n_lesions: int) -> int:
    """Patients for ``n_lesions``: ~1,040 for the real 401,059, more lesions per patient as n grows."""
    return int(min(n_lesions, max(1, round(0.45 * n_lesions**0.6))))


def _choose(rng: np.random.Generator, freq: dict[str, float], size: int) -> np.ndarray:
    keys = np.array(list(freq), dtype=object)
    p = np.array(list(freq.values()), float)
    return keys[rng.choice(len(keys), size, p=p / p.sum())]


def _weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices, drawn with probability proportional to ``weights`` (Efraimidis-Spirakis)."""
    keys = rng.exponential(size=len(weights)) / weights
    return np.sort(np.argpartition(keys, k - 1)[:k]) if k else np.empty(0, int)


def round_significant(x: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (per element), so it prints like ``%.{digits}g``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log10(np.abs(x)))
    k = digits - 1 - np.where(np.isfinite(exponent), exponent, 0)
    scale = 10.0 ** np.abs(k)
    out = np.where(k >= 0, np.round(x * scale) / scale, np.round(x / scale) * scale)
    inexact = np.flatnonzero(np.abs(k) > 22)  # 10**k is no longer exact: let Python round the few tiny values
    out[inexact] = [float(f"{v:.{int(d)}g}") for v, d in zip(x[inexact], np.broadcast_to(digits, x.shape)[inexact])]
    return out


def float_text(x: np.ndarray) -> pl.Series:
    """Floats as pandas writes them: shortest round-trip digits, ``6.8e-05`` below 1e-4, NaN as null."""
    text = pl.Series(x, nan_to_null=True).cast(pl.String).to_numpy().astype(object)
    small = np.flatnonzero((np.abs(x) < 1e-4) & (x != 0))
    text[small] = [repr(float(v)) for v in x[small]]
    return pl.Series(text.tolist(), dtype=pl.String)


@dataclass
class SynthSplit:
    """One drawn split: the CSV frame (all text, real column order, rows by isic_id), drawing parameters, counts."""

    frame: pl.DataFrame
    looks: LesionLooks
    n_patients: int
    n_positive: int


class _Generator:
    """Draws one split (train or test) from the marginals with one numpy Generator."""

    def __init__(self, marginals: dict, rng: np.random.Generator):
        self.m, self.rng = marginals, rng
        cop = marginals["copula"]
        self.columns = cop["columns"]
        self.probs = np.array(cop["probs"])
        self.quantiles = {c: np.array(cop["quantiles"][c]) for c in self.columns}
        self.icc = np.array([cop["icc"][c] for c in self.columns])
        corr = np.array(cop["corr"])
        self.chol = np.linalg.cholesky(corr + 1e-6 * np.eye(len(self.columns)))
        design = np.array([DESIGN_SHIFT.get(c, 0.0) for c in self.columns])
        # moving a column moves its correlates too (corr @ design), so the shifted lesions stay plausible
        moving = np.array([c not in _STABLE for c in self.columns])
        self.shift = (SIGNAL * np.array([cop["positive_shift"][c] for c in self.columns]) + corr @ design) * moving
        self.ugly = UGLY_DUCKLING * moving

    def _normal(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, len(self.columns))) @ self.chol.T

    def split(self, n: int, n_pos: int, isic_ids: np.ndarray, patient_ids: np.ndarray,
              lesion_ids: np.ndarray, split: str) -> SynthSplit:
        m, rng = self.m, self.rng
        n_pat = len(patient_ids)
        if n == 0:
            columns = m["train_columns"] if split == "train" else m["test_columns"]
            looks = LesionLooks(**{f.name: np.zeros((0, 3) if "rgb" in f.name else 0) for f in fields(LesionLooks)})
            return SynthSplit(pl.DataFrame(schema={c: pl.String for c in columns}), looks, 0, 0)
        pat = m["patient"]
        age = _choose(rng, pat["age_approx"], n_pat).astype(float)
        age[rng.random(n_pat) < pat["missing"]["age_approx"]] = np.nan
        sex = _choose(rng, pat["sex"], n_pat)
        sex[rng.random(n_pat) < pat["missing"]["sex"]] = None
        attribution = _choose(rng, pat["attribution"], n_pat)
        tile = np.empty(n_pat, dtype=object)
        for a, freq in m["tile_type_given_attribution"].items():
            hit = attribution == a
            tile[hit] = _choose(rng, freq, int(hit.sum()))
        risk = rng.normal(0, PATIENT_RISK_SD, n_pat)
        z_patient = self._normal(n_pat)
        weights = rng.lognormal(0, 1.2, n_pat)
        counts = 1 + rng.multinomial(n - n_pat, weights / weights.sum())
        owner = np.repeat(np.arange(n_pat), counts)

        z = np.sqrt(self.icc) * z_patient[owner] + np.sqrt(1 - self.icc) * self._normal(n)
        location = _choose(rng, m["location"], n)
        pos_freq, neg_freq = m["location_positive"], m["location"]
        site_odds = {k: np.log((pos_freq.get(k, 0) + 0.01) / (v + 0.01)) for k, v in neg_freq.items()}
        age_filled = np.where(np.isnan(age), np.nanmean(age) if np.isfinite(age).any() else 60.0, age)
        logit = (AGE_BOOST * m["age_logit_slope"] * (age_filled[owner] - 60.0) + risk[owner]
                 + pl.Series(location).replace_strict(site_odds, return_dtype=pl.Float64).to_numpy())
        positive = np.zeros(n, bool)
        positive[_weighted_sample(rng, np.exp(logit - logit.max()), n_pos)] = True
        k = int(positive.sum())
        z[positive] += self.shift + self.ugly * self._normal(k)
        image_cue = rng.standard_normal(n) + IMAGE_SIGNAL * positive

        v = {c: np.interp(ndtr(z[:, i]), self.probs, self.quantiles[c]) for i, c in enumerate(self.columns)}
        cols = self._lesion_columns(v, location, rng)
        cols.update(self._patient_columns(age, sex, attribution, tile, owner, patient_ids))
        cols["target"] = positive.astype(np.int8)
        cols.update(self._label_columns(positive, lesion_ids, rng))
        cols["isic_id"] = isic_ids
        looks = self._looks(v, cols, z, image_cue)

        order = np.argsort(isic_ids, kind="stable")
        frame = self._frame(cols, order, split, rng)
        return SynthSplit(frame, looks.take(order), n_pat, k)

    def _lesion_columns(self, v: dict, location: np.ndarray, rng: np.random.Generator) -> dict:
        m = self.m
        L, A, B = (v[f"tbp_lv_{c}ext"] + v[f"tbp_lv_delta{c}"] for c in "LAB")
        ecc = np.clip(v["tbp_lv_eccentricity"], 0.0, 0.995)
        axis_ratio = np.sqrt(1 - ecc**2)
        fill_mean, fill_sd = m["shape"]["fill"]
        fill = np.clip(rng.normal(fill_mean, fill_sd, len(ecc)), 0.5, 1.4)
        area = v["tbp_lv_areaMM2"]
        minor = np.sqrt(4 * area / (np.pi * fill) * axis_ratio)
        major = minor / axis_ratio
        clin_mean, clin_sd = m["shape"]["clin_over_major"]
        dlb_mean, dlb_sd = m["shape"]["deltaLB_over_hypot"]
        xyz = m["xyz_by_location"]
        mean = np.array([xyz[loc]["mean"] for loc in location])
        sd = np.array([xyz[loc]["sd"] for loc in location])
        coords = mean + sd * rng.standard_normal(mean.shape)
        cols = {c: v[c] for c in self.columns}
        cols.update({
            "tbp_lv_L": L, "tbp_lv_A": A, "tbp_lv_B": B,
            "tbp_lv_C": np.hypot(A, B), "tbp_lv_Cext": np.hypot(v["tbp_lv_Aext"], v["tbp_lv_Bext"]),
            "tbp_lv_H": np.degrees(np.arctan2(B, A)),
            "tbp_lv_Hext": np.degrees(np.arctan2(v["tbp_lv_Bext"], v["tbp_lv_Aext"])),
            "tbp_lv_deltaLB": np.hypot(v["tbp_lv_deltaL"], v["tbp_lv_deltaB"]) * rng.normal(dlb_mean, dlb_sd, len(L)),
            "tbp_lv_eccentricity": ecc,
            "tbp_lv_minorAxisMM": minor,
            "tbp_lv_perimeterMM": np.sqrt(v["tbp_lv_area_perim_ratio"] * area),
            "clin_size_long_diam_mm": np.round(major * np.clip(rng.normal(clin_mean, clin_sd, len(L)), 0.75, 1.2), 2),
            "tbp_lv_symm_2axis_angle": np.clip(np.round(v["tbp_lv_symm_2axis_angle"] / 5) * 5, 0, 175),
            "tbp_lv_x": coords[:, 0], "tbp_lv_y": coords[:, 1], "tbp_lv_z": coords[:, 2],
            "tbp_lv_location": location,
            "tbp_lv_location_simple": np.array([m["location_simple"][loc] for loc in location], dtype=object),
            "anatom_site_general": np.array([m["location_site"][loc] for loc in location], dtype=object),
            "image_type": _choose(rng, m["image_type"], len(L)),
            "_major": major,
        })
        return cols

    def _patient_columns(self, age, sex, attribution, tile, owner, patient_ids) -> dict:
        licence = self.m["attribution_license"]
        return {
            "patient_id": patient_ids[owner], "age_approx": age[owner], "sex": sex[owner],
            "attribution": attribution[owner],
            "copyright_license": np.array([licence[a] for a in attribution], dtype=object)[owner],
            "tbp_tile_type": tile[owner],
        }

    def _label_columns(self, positive: np.ndarray, lesion_ids: np.ndarray, rng: np.random.Generator) -> dict:
        """Diagnosis strings, melanoma fields and lesion_id (set for every positive, few negatives)."""
        m, n = self.m, len(positive)
        iddx = np.where(positive, _choose(rng, m["iddx_positive"], n), _choose(rng, m["iddx_negative"], n))
        levels = [s.split("::") for s in iddx]
        cols = {f"iddx_{k}": np.array([lv[k - 1] if len(lv) >= k else None for lv in levels], dtype=object)
                for k in range(1, 6)}
        cols["iddx_full"] = iddx
        mel_rate = np.array([m["mel_rate_given_iddx"].get(s, 0.0) for s in iddx])
        has_mel = rng.random(n) < mel_rate
        pairs = np.array(m["mel_values"], dtype=object)[rng.integers(0, len(m["mel_values"]), n)]
        for j, c in enumerate(("mel_mitotic_index", "mel_thick_mm")):
            cols[c] = np.where(has_mel & (pairs[:, j] != ""), pairs[:, j], None)
        has_id = positive | (rng.random(n) < m["lesion_id_rate_negative"])
        cols["lesion_id"] = np.where(has_id, lesion_ids, None)
        return cols

    def _looks(self, v: dict, cols: dict, z: np.ndarray, image_cue: np.ndarray) -> LesionLooks:
        """Drawing parameters that follow the metadata, plus the image-only cue."""
        score = {c: z[:, i] for i, c in enumerate(self.columns)}
        return LesionLooks(
            major_mm=cols["_major"], minor_mm=cols["tbp_lv_minorAxisMM"], angle_deg=cols["tbp_lv_symm_2axis_angle"],
            skin_rgb=_lab_to_rgb(v["tbp_lv_Lext"], v["tbp_lv_Aext"], v["tbp_lv_Bext"]),
            lesion_rgb=_lab_to_rgb(cols["tbp_lv_L"], cols["tbp_lv_A"], cols["tbp_lv_B"]),
            skin_texture=1.5 + 0.8 * v["tbp_lv_stdLExt"],
            colour_variation=np.clip(3 + 4 * v["tbp_lv_color_std_mean"] + 2 * image_cue, 1, 20),
            centre_darkening=np.clip(0.12 + 0.05 * v["tbp_lv_stdL"], 0, 0.6),
            irregularity=np.clip(0.06 + 0.04 * score["tbp_lv_norm_border"] + 0.04 * image_cue, 0.01, 0.35),
            variegation=np.clip(0.25 * (image_cue - 0.5) + 0.05 * score["tbp_lv_norm_color"], 0, 0.8),
        )

    def _frame(self, cols: dict, order: np.ndarray, split: str, rng: np.random.Generator) -> pl.DataFrame:
        """The CSV frame (all strings) in the real column order, rows sorted by isic_id."""
        m = self.m
        columns = m["train_columns"] if split == "train" else m["test_columns"]
        n = len(order)
        digits = np.where(rng.random(n) < m["full_precision_rate"], 15, 7)
        data = {}
        for c in columns:
            x = cols[c][order]
            if x.dtype.kind == "f" and c.startswith("tbp_lv_") and c != "tbp_lv_symm_2axis_angle":
                x = round_significant(x, digits)
            if x.dtype == object:
                data[c] = pl.Series(c, x.tolist(), dtype=pl.String)
            else:
                data[c] = float_text(x.astype(float)) if x.dtype.kind == "f" else pl.Series(c, x).cast(pl.String)
        return pl.DataFrame(data)


def _lab_to_rgb(L: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB in 0..255, shape (n, 3)."""
    return lab2rgb(np.stack([L, A, B], -1)[:, None, :])[:, 0, :] * 255


def _ids(prefix: str, nums: np.ndarray) -> np.ndarray:
    """``prefix`` + 7-digit zero-padded numbers, as an object array."""
    return (prefix + pl.Series(nums).cast(pl.String).str.zfill(7)).to_numpy().astype(object)


def _unique_numbers(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct 7-digit numbers in random order."""
    return rng.choice(10_000_000, size=count, replace=False)


def draw_isic2024(lesions: int, test_lesions: int = 0, seed: int = 0,
                  positive_rate: float = 0.001) -> dict[str, SynthSplit]:
    """The metadata (CSV frames, all strings) and drawing parameters of both splits, without images.

    ``positive_rate`` of the training lesions (rounded, at least one) are malignant; test lesions come
    from other patients, with the same rate of (unlabelled) positives.
    """
    if lesions < 1 or test_lesions < 0:
        raise ValueError(f"need lesions >= 1 and test_lesions >= 0, got {lesions} and {test_lesions}")
    if not 0 <= positive_rate <= 1:
        raise ValueError(f"positive_rate must be within [0, 1], got {positive_rate}")
    rng = np.random.default_rng(seed)
    gen = _Generator(load_marginals(), rng)
    sizes = {"train": lesions, "test": test_lesions}
    n_pos = {"train": max(int(positive_rate > 0), round(lesions * positive_rate)),
             "test": round(test_lesions * positive_rate)}
    n_pat = {s: patients_for(n) if n else 0 for s, n in sizes.items()}
    isic = _ids("ISIC_", _unique_numbers(rng, lesions + test_lesions))
    patients = _ids("IP_", _unique_numbers(rng, n_pat["train"] + n_pat["test"]))
    lesion_ids = _ids("IL_", _unique_numbers(rng, lesions + test_lesions))
    first = {"train": (0, 0), "test": (lesions, n_pat["train"])}
    splits = {}
    for name, n in sizes.items():
        log.info("drawing %s metadata: %d lesions, %d patients", name, n, n_pat[name])
        i, p = first[name]
        splits[name] = gen.split(n, n_pos[name], isic[i:i + n], patients[p:p + n_pat[name]], lesion_ids[i:i + n], name)
    return splits


#: what :func:`synthesize_isic2024` writes (the Kaggle layout)
SYNTH_FILES = ("train-metadata.csv", "test-metadata.csv", "sample_submission.csv", "train-image.hdf5", "test-image.hdf5")


def synthesize_isic2024(out_dir, lesions: int = 20_000, test_lesions: int = 100, image_size: int = 64,
                        seed: int = 0, positive_rate: float = 0.001, workers: int | None = None) -> SynthSummary:
    """Write a synthetic ISIC 2024 dataset in the Kaggle layout into ``out_dir``; same seed, same bytes.

    See ``draw_isic2024`` for the lesions; images are rendered by ``workers`` processes (default: all cores).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 px, got {image_size}")
    out = claim_dir(out_dir, "synthetic dataset", owned=SYNTH_FILES)
    t0 = time.perf_counter()
    splits = draw_isic2024(lesions, test_lesions, seed, positive_rate)
    out.mkdir(parents=True, exist_ok=True)
    written = {name: split for name, split in splits.items() if split.frame.height}  # no test files without test lesions
    for stale in ("test-metadata.csv", "test-image.hdf5", "sample_submission.csv") if "test" not in written else ():
        (out / stale).unlink(missing_ok=True)
    for name, split in written.items():
        write_csv(out / f"{name}-metadata.csv", split.frame)
    if "test" in written:
        test_ids = written["test"].frame["isic_id"]
        write_csv(out / "sample_submission.csv",
                  pl.DataFrame({"isic_id": test_ids, "target": pl.Series([0.3] * len(test_ids), dtype=pl.Float64)}))
    t1 = time.perf_counter()
    log.info("metadata written in %.1f s", t1 - t0)

    image_bytes = 0
    for name, split in written.items():
        chunks = render_all(split.looks, image_size, seed, _SPLIT_CODE[name], workers, desc=f"{name} images")
        image_bytes += write_jpeg_hdf5(out / f"{name}-image.hdf5", split.frame["isic_id"].to_list(), chunks)
    t2 = time.perf_counter()
    log.info("images written in %.1f s", t2 - t1)
    train, test = splits["train"], splits["test"]
    return SynthSummary(out, lesions, test_lesions, train.n_patients, test.n_patients, train.n_positive,
                        image_size, image_bytes, t1 - t0, t2 - t1)
