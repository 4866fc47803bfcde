"""Fit the marginals the synthetic ISIC 2024 generator samples from, and write them as package data.

Reads the 1,049-row real ``train-metadata.csv`` sample (positives over-represented: 99 of 1,049) and
the 3-row ``test-metadata.csv`` (for the test column order) and writes
``src/dermstack/data/synth_marginals.json``:

- ``copula``: per-lesion numeric columns as quantile tables of the NEGATIVE rows, the correlation of
  their normal scores, the share of variance that lies between patients (``icc``), and the mean
  normal score of the positives (``positive_shift``, the data's own malignancy direction);
- frequencies of the categorical columns (per patient: age, sex, attribution; per lesion: location),
  the locations of positives, the fixed maps location -> simple location / anatomical site,
  attribution -> licence and P(tile type | attribution);
- body coordinates per location, shape ratios, missingness, diagnosis strings and their
  melanoma-specific fields, the ``lesion_id`` rate of negatives, the precision of the numbers.

Usage: python scripts/fit_synth_marginals.py [--data /work/shared/data] [--out src/dermstack/data/synth_marginals.json]
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

REPO = Path(__file__).resolve().parents[1]
#: Per-lesion numeric columns drawn jointly through a Gaussian copula. The others are derived from
#: them (C/H from A/B, lesion colour = skin + delta, axes/perimeter/diameter from area + shape).
COPULA_COLUMNS = [
    "tbp_lv_Lext", "tbp_lv_Aext", "tbp_lv_Bext", "tbp_lv_deltaL", "tbp_lv_deltaA", "tbp_lv_deltaB",
    "tbp_lv_areaMM2", "tbp_lv_eccentricity", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean",
    "tbp_lv_deltaLBnorm", "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color",
    "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt", "tbp_lv_symm_2axis",
    "tbp_lv_symm_2axis_angle", "tbp_lv_dnn_lesion_confidence",
]
N_QUANTILES = 201


def normal_scores(x: np.ndarray) -> np.ndarray:
    """Rank-based normal scores (ties averaged)."""
    return norm.ppf((rankdata(x) - 0.5) / len(x))


def icc(z: np.ndarray, groups: np.ndarray) -> float:
    """One-way random-effects intra-class correlation of ``z`` within ``groups`` (patients with >=2 rows)."""
    df = pd.DataFrame({"z": z, "g": groups})
    df = df[df.groupby("g")["z"].transform("size") >= 2]
    k = df.groupby("g")["z"].size()
    means = df.groupby("g")["z"].mean()
    grand = df["z"].mean()
    msb = (k * (means - grand) ** 2).sum() / (len(k) - 1)
    msw = ((df["z"] - df["g"].map(means)) ** 2).sum() / (len(df) - len(k))
    k0 = (len(df) - (k**2).sum() / len(df)) / (len(k) - 1)
    return float(np.clip((msb - msw) / (msb + (k0 - 1) * msw), 0.05, 0.9))


def frequencies(s: pd.Series) -> dict[str, float]:
    counts = s.dropna().value_counts()
    return {str(k): round(float(v / counts.sum()), 6) for k, v in counts.sort_index().items()}


def significant_digits(text: str) -> int:
    mantissa = re.match(r"^-?([0-9.]+)", text).group(1)
    return len(mantissa.replace(".", "").lstrip("0"))


def fit(train_csv: Path, test_csv: Path) -> dict:
    raw = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    df = pd.read_csv(train_csv)
    test_columns = list(pd.read_csv(test_csv, nrows=0).columns)
    pos = df["target"] == 1
    neg = df[~pos]
    probs = np.linspace(0, 1, N_QUANTILES)

    z_all = np.column_stack([normal_scores(df[c].to_numpy()) for c in COPULA_COLUMNS])
    z_neg = np.column_stack([normal_scores(neg[c].to_numpy()) for c in COPULA_COLUMNS])
    corr = np.corrcoef(z_neg, rowvar=False)
    copula = {
        "columns": COPULA_COLUMNS,
        "probs": [round(float(p), 6) for p in probs],
        "quantiles": {c: [float(f"{v:.7g}") for v in np.quantile(neg[c].to_numpy(), probs)] for c in COPULA_COLUMNS},
        "corr": [[round(float(v), 5) for v in row] for row in corr],
        "icc": {c: round(icc(z_neg[:, i], neg["patient_id"].to_numpy()), 4) for i, c in enumerate(COPULA_COLUMNS)},
        "positive_shift": {c: round(float(z_all[pos.to_numpy(), i].mean() - z_all[~pos.to_numpy(), i].mean()), 4)
                           for i, c in enumerate(COPULA_COLUMNS)},
    }

    patients = neg.drop_duplicates("patient_id")
    age_pos, age_neg = df.loc[pos, "age_approx"].mean(), neg["age_approx"].mean()
    locations = df[["tbp_lv_location", "tbp_lv_location_simple", "anatom_site_general"]].drop_duplicates("tbp_lv_location")
    xyz = {}
    for loc, g in df.groupby("tbp_lv_location"):
        xyz[loc] = {"mean": [round(float(g[c].mean()), 3) for c in ("tbp_lv_x", "tbp_lv_y", "tbp_lv_z")],
                    "sd": [round(float(g[c].std(ddof=1)) if len(g) > 2 else 40.0, 3) for c in ("tbp_lv_x", "tbp_lv_y", "tbp_lv_z")]}
    major = df["tbp_lv_minorAxisMM"] / np.sqrt(1 - df["tbp_lv_eccentricity"] ** 2)
    fill = df["tbp_lv_areaMM2"] / (np.pi / 4 * major * df["tbp_lv_minorAxisMM"])
    clin = df["clin_size_long_diam_mm"] / major
    dlb = df["tbp_lv_deltaLB"] / np.hypot(df["tbp_lv_deltaL"], df["tbp_lv_deltaB"])

    numeric_cols = [c for c in raw.columns if c.startswith("tbp_lv_") and pd.api.types.is_numeric_dtype(df[c])]
    digits = raw[numeric_cols].map(significant_digits).max(axis=1)
    mel = df[df["mel_mitotic_index"].notna() | df["mel_thick_mm"].notna()]
    mel_rate = {k: round(float((g["mel_mitotic_index"].notna() | g["mel_thick_mm"].notna()).mean()), 4)
                for k, g in df[pos].groupby("iddx_full") if "Melanoma" in k}

    return {
        "source": "ISIC 2024 SLICE-3D train-metadata.csv sample, 1,049 rows (99 positive), 525 patients",
        "train_columns": list(raw.columns),
        "test_columns": test_columns,
        "copula": copula,
        "patient": {
            "age_approx": frequencies(patients["age_approx"]),
            "sex": frequencies(patients["sex"]),
            "attribution": frequencies(patients["attribution"]),
            "missing": {c: round(float(patients[c].isna().mean()), 4) for c in ("age_approx", "sex")},
        },
        "attribution_license": dict(df[["attribution", "copyright_license"]].drop_duplicates().to_numpy().tolist()),
        "tile_type_given_attribution": {a: frequencies(g["tbp_tile_type"]) for a, g in df.groupby("attribution")},
        "image_type": frequencies(df["image_type"]),
        "location": frequencies(neg["tbp_lv_location"]),
        "location_positive": frequencies(df.loc[pos, "tbp_lv_location"]),
        "location_simple": dict(zip(locations["tbp_lv_location"], locations["tbp_lv_location_simple"])),
        "location_site": {loc: (s if isinstance(s, str) else None)
                          for loc, s in zip(locations["tbp_lv_location"], locations["anatom_site_general"])},
        "xyz_by_location": xyz,
        "shape": {
            "fill": [round(float(fill.mean()), 4), round(float(fill.std()), 4)],
            "clin_over_major": [round(float(clin.mean()), 4), round(float(clin.std()), 4)],
            "deltaLB_over_hypot": [round(float(dlb.median()), 4), round(float(dlb.std()), 4)],
        },
        "age_logit_slope": round(float((age_pos - age_neg) / neg["age_approx"].var()), 5),
        "lesion_id_rate_negative": round(float(neg["lesion_id"].notna().mean()), 4),
        "full_precision_rate": round(float((digits > 8).mean()), 4),
        "iddx_positive": frequencies(df.loc[pos, "iddx_full"]),
        "iddx_negative": frequencies(neg["iddx_full"]),
        "mel_rate_given_iddx": mel_rate,
        "mel_values": raw.loc[mel.index, ["mel_mitotic_index", "mel_thick_mm"]].to_numpy().tolist(),
        "lesions_per_patient_real": [401059, 1042],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=REPO / "src/dermstack/data/synth_marginals.json")
    args = ap.parse_args()
    marginals = fit(args.data / "isic2024-train-sample/train-metadata.csv", args.data / "isic2024-sample/test-metadata.csv")
    args.out.write_text(json.dumps(marginals, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
