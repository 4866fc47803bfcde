"""Image features on synthetic lesions with known shape and colour, and on real HAM10000 / PH2 images."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from PIL import Image
from skimage import color

from dermstack.data.table import finalize_frame
from dermstack.features.image import auto_segment, dice, image_features, lesion_features

H, W = 120, 160
SKIN, LESION = (220, 180, 160), (120, 70, 40)


def ellipse(a: float = 40, b: float = 20, cy: float = 60, cx: float = 80) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1


def paint(mask: np.ndarray, inside=LESION, outside=SKIN) -> np.ndarray:
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = outside
    rgb[mask] = inside
    return rgb


def lab(rgb) -> np.ndarray:
    return color.rgb2lab(np.array([[rgb]], np.uint8))[0, 0]


def test_ellipse_shape_and_colour():
    mask = ellipse()
    f = lesion_features(paint(mask), mask)
    assert f["img_area_fraction"] == pytest.approx(math.pi * 40 * 20 / (H * W), rel=0.02)
    assert f["img_eccentricity"] == pytest.approx(math.sqrt(1 - 0.25), abs=0.01)
    assert f["img_asymmetry"] < 0.03 and f["img_n_regions"] == 1
    # 4 pi area / perimeter**2 of a 2:1 ellipse (Ramanujan's perimeter) is 0.841
    assert f["img_compactness"] == pytest.approx(0.841, abs=0.03) and f["img_solidity"] > 0.97
    L, A, B = lab(LESION)
    assert (f["img_L"], f["img_A"], f["img_B"]) == pytest.approx((L, A, B), abs=1e-6)
    assert f["img_stdL"] == pytest.approx(0, abs=1e-6) and f["img_color_variegation"] == pytest.approx(0, abs=1e-6)
    assert f["img_deltaL"] == pytest.approx(L - lab(SKIN)[0], abs=1e-6)
    assert f["img_deltaE"] == pytest.approx(np.linalg.norm(lab(LESION) - lab(SKIN)), abs=1e-6)


def test_disc_is_round_and_half_disc_asymmetric():
    disc = ellipse(30, 30)
    f = lesion_features(paint(disc), disc)
    assert f["img_eccentricity"] < 0.05 and f["img_asymmetry"] < 0.03 and f["img_compactness"] > 0.95
    yy, xx = np.mgrid[:H, :W]
    half = disc & (xx + 0.3 * yy > 80 + 0.3 * 60)  # a half disc cut along a slanted chord
    g = lesion_features(paint(half), half)
    assert max(g["img_asym_major"], g["img_asym_minor"]) > 0.15 > 0.03 > f["img_asymmetry"]


def test_abcd_colours_counted():
    mask = ellipse()
    rgb = paint(mask, inside=(41, 31, 30))
    rgb[mask & (np.mgrid[:H, :W][1] < 80)] = (135, 44, 5)  # left half dark brown, right half black
    f = lesion_features(rgb, mask)
    assert f["img_n_colors"] == 2
    assert f["img_frac_black"] == pytest.approx(0.5, abs=0.03) and f["img_frac_dark_brown"] == pytest.approx(0.5, abs=0.03)


def test_auto_segmentation_finds_the_dark_ellipse():
    mask = ellipse()
    rgb = paint(mask).astype(np.int16) + np.random.default_rng(0).integers(-15, 15, (H, W, 3))
    assert dice(auto_segment(np.clip(rgb, 0, 255).astype(np.uint8)), mask) > 0.95


def test_table_given_auto_and_empty_masks(tmp_path):
    mask = ellipse()
    Image.fromarray(paint(mask)).save(tmp_path / "a.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "empty_mask.png")
    df = finalize_frame(pl.DataFrame({
        "image_id": ["given", "auto", "empty", "none"],
        "image_ref": [str(tmp_path / "a.png")] * 3 + [None],
        "mask_ref": [str(tmp_path / "a_mask.png"), None, str(tmp_path / "empty_mask.png"), None],
    }))
    frame, info = image_features(df, "auto", workers=1)
    assert frame["image_id"].to_list() == ["given", "auto", "empty", "none"]
    assert info["empty_mask"] == ["empty"] and info["no_image"] == ["none"] and info["auto_segmented"] == 1
    area = frame["img_area_fraction"].to_list()
    assert area[0] == pytest.approx(area[1], rel=0.05) and area[2] is None and area[3] is None


def _ham_rows(shared_data, n: int) -> pl.DataFrame:
    root = shared_data / "ham10000-dev"
    ids = sorted(p.stem for p in (root / "images").glob("*.jpg"))[:n]
    return finalize_frame(pl.DataFrame({
        "image_id": ids, "image_ref": [str(root / "images" / f"{i}.jpg") for i in ids],
        "mask_ref": [str(root / "masks" / f"{i}_segmentation.png") for i in ids],
    }))


@pytest.mark.slow
def test_ham10000_masks_vs_automatic_in_parallel(shared_data):
    df = _ham_rows(shared_data, 64)
    given, info = image_features(df, "mask", workers=2)
    auto, info_auto = image_features(df, "automatic", workers=2)
    assert info["auto_segmented"] == 0 and info_auto["auto_segmented"] == 64 and "empty_mask" not in info
    r = np.corrcoef(given["img_area_fraction"].to_numpy(), auto["img_area_fraction"].to_numpy())[0, 1]
    assert r > 0.6
    serial, _ = image_features(df.head(8), "mask", workers=1)
    assert serial.equals(given.head(8))


def test_workers_do_not_run_the_callers_script_again(shared_data, tmp_path):
    """A notebook user's script without an `if __name__ == "__main__":` guard: the image-feature workers
    must not execute it again (the standard library's spawn does, and each copy starts the same run)."""
    import subprocess
    import sys

    script = tmp_path / "features.py"
    script.write_text(
        "import sys, polars as pl\n"
        "print('script body', file=sys.stderr)\n"
        "from dermstack.features.image import image_features\n"
        f"df = pl.read_parquet({str(tmp_path / 'rows.parquet')!r})\n"
        "frame, info = image_features(df, 'mask', workers=2)\n"
        "print(frame.height, info['images'])\n")
    _ham_rows(shared_data, 64).write_parquet(tmp_path / "rows.parquet")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["64", "64"] and done.stderr.count("script body") == 1, done.stderr[-2000:]


def test_ph2_automatic_segmentation_agrees_with_its_masks(shared_data):
    from dermstack.data.images import load_mask
    from dermstack.features.image import load_pair

    cases = sorted((shared_data / "ph2-dev" / "PH2 Dataset images").glob("IMD*"))[:10]
    scores = []
    for case in cases:
        img = case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.bmp"
        rgb, auto = load_pair(str(img), None, auto=True)
        scores.append(dice(auto, load_mask(str(case / f"{case.name}_lesion" / f"{case.name}_lesion.bmp"))))
    assert np.mean(scores) > 0.8


def test_a_mask_edited_in_place_reruns_the_features_made_from_it(shared_data, tmp_path):
    """A mask is not named in the metadata: editing it must still rerun the image features of its row
    (the data folder is the ingest stage's input, and everything after ingest depends on it)."""

    from dermstack.config import RunConfig
    from dermstack.run import Run

    src = shared_data / "ham10000-dev"
    head, *rows = (src / "HAM10000_metadata.csv").read_text().splitlines()
    malignant = [r for r in rows if r.split(",")[2] in ("mel", "bcc", "akiec")][:6]
    lines = [head] + malignant + [r for r in rows if r not in malignant][:6]
    data = tmp_path / "ham"
    for d in ("images", "masks"):
        (data / d).mkdir(parents=True)
    (data / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",")[1] for line in lines[1:]]
    for i in ids:
        (data / "images" / f"{i}.jpg").write_bytes((src / "images" / f"{i}.jpg").read_bytes())
        (data / "masks" / f"{i}_segmentation.png").write_bytes((src / "masks" / f"{i}_segmentation.png").read_bytes())
    cfg = RunConfig.from_dict({"data": {"format": "ham10000", "path": str(data)}, "cv": {"n_splits": 2},
                               "models": [{"kind": "lightgbm", "params": {"n_estimators": 5, "threads": 1}}],
                               "report": {"enabled": False}})
    out = tmp_path / "run"
    Run(cfg, out).execute()
    area = lambda: pl.read_parquet(out / "features.parquet").filter(pl.col("image_id") == ids[0])["img_area_fraction"][0]  # noqa: E731
    before = area()
    mask = data / "masks" / f"{ids[0]}_segmentation.png"
    m = np.asarray(Image.open(mask).convert("L")) > 127
    grown = np.zeros_like(m)
    grown[m.shape[0] // 8: -m.shape[0] // 8, m.shape[1] // 8: -m.shape[1] // 8] = True  # another, larger lesion outline
    Image.fromarray(((m | grown) * 255).astype(np.uint8)).save(mask)
    Run(cfg, out).execute()
    assert area() > before
