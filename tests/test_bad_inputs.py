"""Bad inputs give a DataError naming file/row/column, the report accounts for every row, --strict raises."""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest

from dermstack.data.readers import ingest
from dermstack.errors import DataError
from extract_fixtures import lesion_like

N = 6  # training rows in the small layouts


def real_jpeg(shared_data: Path) -> bytes:
    with h5py.File(shared_data / "isic2024-sample" / "test-image.hdf5", "r") as f:
        return bytes(f["ISIC_0015657"][()])


def isic2024_layout(shared_data: Path, out: Path, images: dict[str, bytes] | None = None) -> list[str]:
    """First N real training rows (as text) and, per id, the JPEG bytes to store (all real by default)."""
    lines = (shared_data / "isic2024-train-sample" / "train-metadata.csv").read_text().splitlines()[: N + 1]
    (out / "train-metadata.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",", 1)[0] for line in lines[1:]]
    jpeg = real_jpeg(shared_data)
    store = {i: jpeg for i in ids} if images is None else images
    with h5py.File(out / "train-image.hdf5", "w") as f:
        for key, data in store.items():
            f.create_dataset(key, data=np.bytes_(data))
    return ids


def edit_cell(csv: Path, line: int, column: str, value: str) -> None:
    """Set one cell (``line`` 1-based as in an editor, header = 1) of a CSV without quotes in that row."""
    rows = csv.read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[line - 1].split(",")
    assert len(cells) == len(header), "test helper needs a row without quoted commas"
    cells[header.index(column)] = value
    rows[line - 1] = ",".join(cells)
    csv.write_text("\n".join(rows) + "\n")


def accounted(report) -> bool:
    return report.rows_read == report.rows_kept + len(report.skipped)


def simple_line(csv: Path, first: int = 2) -> int:
    """A data line (from line ``first`` on) without quoted fields, so edit_cell can change it."""
    rows = csv.read_text().splitlines()
    return next(i + 1 for i, r in enumerate(rows) if i + 1 >= first and '"' not in r)


def test_clean_layout_reads_every_row_with_images(shared_data, tmp_path):
    ids = isic2024_layout(shared_data, tmp_path)
    table, report = ingest("isic2024", tmp_path, strict=True)
    assert table.df["image_id"].to_list() == ids and table.df["image_ref"].null_count() == 0


def test_missing_required_column(shared_data, tmp_path):
    isic2024_layout(shared_data, tmp_path)
    csv = tmp_path / "train-metadata.csv"
    df = pl.read_csv(csv, infer_schema=False).drop("patient_id")
    df.write_csv(csv)
    with pytest.raises(DataError) as e:
        ingest("isic2024", tmp_path)
    assert e.value.file == str(csv) and e.value.column == "patient_id" and "required column" in str(e.value)


def test_non_numeric_age_skips_the_row_and_strict_raises(shared_data, tmp_path):
    ids = isic2024_layout(shared_data, tmp_path)
    csv = tmp_path / "train-metadata.csv"
    line = simple_line(csv)
    edit_cell(csv, line, "age_approx", "forty")
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == N - 1 and accounted(report)
    (skip,) = report.skipped
    assert (skip.file, skip.row, skip.column, skip.id) == (str(csv), line, "age_approx", ids[line - 2])
    assert "not a number: 'forty'" in str(skip)
    with pytest.raises(DataError, match="age_approx") as e:
        ingest("isic2024", tmp_path, strict=True)
    assert e.value.row == line and e.value.file == str(csv)


def test_image_key_missing_from_hdf5(shared_data, tmp_path):
    jpeg = real_jpeg(shared_data)
    lines = (shared_data / "isic2024-train-sample" / "train-metadata.csv").read_text().splitlines()[1: N + 1]
    ids = [line.split(",", 1)[0] for line in lines]
    isic2024_layout(shared_data, tmp_path, images={i: jpeg for i in ids[1:]})
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == N and accounted(report) and report.missing_images == [ids[0]]
    assert table.df.filter(pl.col("image_id") == ids[0])["image_ref"].item() is None
    with pytest.raises(DataError, match=ids[0]) as e:
        ingest("isic2024", tmp_path, strict=True)
    assert e.value.row == 2


def test_truncated_jpeg_is_skipped_with_reason(shared_data, tmp_path):
    jpeg = real_jpeg(shared_data)
    lines = (shared_data / "isic2024-train-sample" / "train-metadata.csv").read_text().splitlines()[1: N + 1]
    ids = [line.split(",", 1)[0] for line in lines]
    images = {i: jpeg for i in ids} | {ids[2]: jpeg[: len(jpeg) // 2], ids[3]: b"GIF89a" + jpeg}
    isic2024_layout(shared_data, tmp_path, images=images)
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == N - 2 and accounted(report)
    reasons = {s.id: s for s in report.skipped}
    assert "truncated JPEG" in reasons[ids[2]].reason and reasons[ids[2]].row == 4
    assert "not a JPEG" in reasons[ids[3]].reason and reasons[ids[3]].column == "image_ref"
    with pytest.raises(DataError, match="truncated JPEG"):
        ingest("isic2024", tmp_path, strict=True)


def test_duplicate_isic_id_keeps_the_first(shared_data, tmp_path):
    ids = isic2024_layout(shared_data, tmp_path)
    csv = tmp_path / "train-metadata.csv"
    line = simple_line(csv, first=3)
    edit_cell(csv, line, "isic_id", ids[0])
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == N - 1 and accounted(report)
    (skip,) = report.skipped
    assert skip.row == line and skip.column == "isic_id" and "duplicate" in skip.reason and "first at row 2" in skip.reason
    assert ids[0] in table.df["image_id"].to_list()
    with pytest.raises(DataError, match="duplicate"):
        ingest("isic2024", tmp_path, strict=True)


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"isic_id,target,patient_id\n", "no data rows")])
def test_empty_csv(tmp_path, content, message):
    (tmp_path / "train-metadata.csv").write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        ingest("isic2024", tmp_path)
    assert e.value.file == str(tmp_path / "train-metadata.csv")


def test_ragged_row_names_its_line(tmp_path):
    (tmp_path / "train-metadata.csv").write_text("isic_id,target,patient_id\nISIC_1,0,IP_1\nISIC_2,1,IP_2,extra\n")
    with pytest.raises(DataError) as e:
        ingest("isic2024", tmp_path)
    assert e.value.row == 3


def test_bad_target_value(tmp_path):
    (tmp_path / "train-metadata.csv").write_text("isic_id,target,patient_id\nISIC_1,0,IP_1\nISIC_2,yes,IP_2\nISIC_3,,IP_3\n")
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == 1 and accounted(report)
    assert [(s.row, s.column) for s in report.skipped] == [(3, "target"), (4, "target")]


def test_ham10000_bad_rows_and_corrupt_image(shared_data, tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_1,mel,histo,55.0,male,back\n"
        "HAM_2,ISIC_2,melanoma,histo,40.0,female,trunk\n"
        "HAM_3,ISIC_3,nv,follow_up,old,female,face\n"
        "HAM_4,ISIC_4,nv,follow_up,30.0,unknown,unknown\n"
        "HAM_5,ISIC_5,bkl,histo,30.0,male,chest\n")
    images = tmp_path / "images"
    images.mkdir()
    jpeg = real_jpeg(shared_data)
    for i in (1, 2, 3):
        (images / f"ISIC_{i}.jpg").write_bytes(jpeg)
    (images / "ISIC_4.jpg").write_bytes(jpeg[:100])
    table, report = ingest("ham10000", tmp_path)
    assert accounted(report) and table.df["image_id"].to_list() == ["ISIC_1", "ISIC_5"]
    assert report.missing_images == ["ISIC_5"]
    # problems name the file's column (age), not the one dermstack reads it into (age_approx)
    assert [(s.row, s.column) for s in report.skipped] == [(3, "dx"), (4, "age"), (5, "image_ref")]
    with pytest.raises(DataError, match="dx 'melanoma'"):
        ingest("ham10000", tmp_path, strict=True)


def test_ham10000_age_outside_its_range_is_named_by_the_files_column(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_1,mel,histo,55.0,male,back\n"
        "HAM_2,ISIC_2,nv,histo,300,female,trunk\n")
    table, _ = ingest("ham10000", tmp_path)
    assert table.df["age_approx"].to_list() == [55.0, None]  # age_approx's valid range applies to the file's age
    with pytest.raises(DataError, match="outside the valid range") as e:
        ingest("ham10000", tmp_path, strict=True)
    assert (e.value.row, e.value.column) == (3, "age")


def test_milk10k_bad_ground_truth_row(shared_data, tmp_path):
    src = shared_data / "milk10k-dev"
    meta = pl.read_csv(src / "MILK10k_Training_Metadata.csv", infer_schema=False).head(6)  # 3 lesions
    meta.write_csv(tmp_path / "MILK10k_Training_Metadata.csv")
    gt = pl.read_csv(src / "MILK10k_Training_GroundTruth.csv", infer_schema=False).head(4)  # 3 + one without metadata
    gt = gt.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("1.0")).otherwise(pl.col("NV")).alias("NV"))
    gt.write_csv(tmp_path / "MILK10k_Training_GroundTruth.csv")
    table, report = ingest("milk10k", tmp_path)
    assert accounted(report) and len(table) == 2
    reasons = sorted(s.reason for s in report.skipped)
    assert any("exactly one class" in r for r in reasons) and any("no rows in" in r for r in reasons)


# -- every bad input named, nothing silent ---------------------------------------------------------
HEADER = "isic_id,target,patient_id,age_approx,attribution\n"


def small_isic(tmp_path: Path, body: str | bytes, header: str = HEADER) -> Path:
    """A metadata-only ISIC 2024 layout: ``header`` + ``body`` as train-metadata.csv."""
    csv = tmp_path / "train-metadata.csv"
    csv.write_bytes(header.encode() + (body if isinstance(body, bytes) else body.encode()))
    return csv


def test_latin1_csv_is_an_error_naming_the_line_unless_declared(tmp_path):
    csv = small_isic(tmp_path, "ISIC_1,0,IP_1,50,Hospital\nISIC_2,1,IP_2,60,Cl\xe9nic\n".encode("cp1252"))
    with pytest.raises(DataError, match="--encoding cp1252") as e:
        ingest("isic2024", tmp_path)
    assert (e.value.file, e.value.row) == (str(csv), 3)
    table, _ = ingest("isic2024", tmp_path, encoding="cp1252")
    assert table.df["attribution"].to_list() == ["Hospital", "Cl\xe9nic"]


def test_utf8_with_bom_is_read_as_is(tmp_path):
    small_isic(tmp_path, "ISIC_1,0,IP_1,50,Cl\xe9nic\n", header="\ufeff" + HEADER)
    table, _ = ingest("isic2024", tmp_path)
    assert table.df["attribution"].to_list() == ["Cl\xe9nic"] and table.df["image_id"].to_list() == ["ISIC_1"]


def test_quoted_newline_keeps_later_rows_on_their_lines(tmp_path):
    small_isic(tmp_path, 'ISIC_1,0,IP_1,50,"two\nlines"\nISIC_2,1,IP_2,60,x\nISIC_3,maybe,IP_3,70,x\n')
    table, report = ingest("isic2024", tmp_path)
    assert table.df["attribution"][0] == "two\nlines"
    (skip,) = report.skipped
    assert (skip.row, skip.column, skip.id) == (5, "target", "ISIC_3")


def test_unterminated_quote_names_its_line(tmp_path):
    small_isic(tmp_path, 'ISIC_1,0,IP_1,50,x\nISIC_2,1,IP_2,60,"open\nISIC_3,0,IP_3,70,x\n')
    with pytest.raises(DataError, match="unterminated quote") as e:
        ingest("isic2024", tmp_path)
    assert e.value.row == 3


def test_semicolon_csv_names_the_delimiter(tmp_path):
    small_isic(tmp_path, "ISIC_1;0;IP_1;50;x\n", header=HEADER.replace(",", ";"))
    with pytest.raises(DataError, match="semicolon-separated") as e:
        ingest("isic2024", tmp_path)
    assert e.value.row == 1


@pytest.mark.parametrize("body", ["\n\n\n", ",,,,\n\n"])
def test_header_and_blank_lines_is_no_data(tmp_path, body):
    small_isic(tmp_path, body)
    with pytest.raises(DataError, match="no data rows"):
        ingest("isic2024", tmp_path)


def test_blank_lines_between_rows_are_noted_not_rows(tmp_path):
    small_isic(tmp_path, "ISIC_1,0,IP_1,50,x\n\nISIC_2,1,IP_2,60,x\n\n")
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == 2 and accounted(report) and any("2 blank line(s) ignored (line 3, 5)" in n for n in report.notes)


@pytest.mark.parametrize("age, reason", [("-1", "outside the valid range [0, 120]"), ("121", "outside the valid range"),
                                         ("nan", "not a finite number"), ("inf", "not a finite number")])
def test_impossible_numbers_become_null_with_a_note_and_strict_raises(tmp_path, age, reason):
    csv = small_isic(tmp_path, f"ISIC_1,0,IP_1,50,x\nISIC_2,1,IP_2,{age},x\n")
    table, report = ingest("isic2024", tmp_path)
    assert table.df["age_approx"].to_list() == [50.0, None] and len(table) == 2
    assert any(n.startswith("age_approx: 1 value(s) " + reason) and "ISIC_2 (row 3" in n for n in report.notes)
    with pytest.raises(DataError, match=reason.split(" [")[0]) as e:
        ingest("isic2024", tmp_path, strict=True)
    assert (e.value.file, e.value.row, e.value.column) == (str(csv), 3, "age_approx")


def ham_layout(shared_data: Path, root: Path, n: int = 3) -> list[str]:
    """The first ``n`` HAM10000 rows with their real images in ``root/store`` (for links to point at)."""
    src = shared_data / "ham10000-dev"
    lines = (src / "HAM10000_metadata.csv").read_text().splitlines()[: n + 1]
    (root / "data").mkdir()
    (root / "data" / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    ids = [line.split(",")[1] for line in lines[1:]]
    (root / "store").mkdir()
    for i in ids:
        (root / "store" / f"{i}.jpg").write_bytes(next((src / "images").rglob(f"{i}.jpg")).read_bytes())
    return ids


@pytest.mark.parametrize("linked", ["images folder", "dataset folder"])
def test_symlinked_folders_are_followed(shared_data, tmp_path, linked):
    ids = ham_layout(shared_data, tmp_path)
    (tmp_path / "data" / "images").symlink_to(tmp_path / "store", target_is_directory=True)
    path = tmp_path / "data"
    if linked == "dataset folder":
        (tmp_path / "link").symlink_to(path, target_is_directory=True)
        path = tmp_path / "link"
    table, report = ingest("ham10000", path, strict=True)
    assert table.df["image_id"].to_list() == ids and table.df["image_ref"].null_count() == 0


def test_symlinked_image_files_and_a_link_loop(shared_data, tmp_path):
    ids = ham_layout(shared_data, tmp_path)
    (tmp_path / "data" / "images").mkdir()
    for i in ids:
        (tmp_path / "data" / "images" / f"{i}.jpg").symlink_to(tmp_path / "store" / f"{i}.jpg")
    (tmp_path / "data" / "images" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    table, report = ingest("ham10000", tmp_path / "data", strict=True)
    assert table.df["image_ref"].null_count() == 0


def test_dangling_links_are_counted(shared_data, tmp_path):
    ids = ham_layout(shared_data, tmp_path)
    images = tmp_path / "data" / "images"
    images.symlink_to(tmp_path / "store", target_is_directory=True)
    (tmp_path / "store" / f"{ids[1]}.jpg").unlink()
    (tmp_path / "store" / f"{ids[1]}.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "data" / "masks").symlink_to(tmp_path / "no-such-folder")
    table, report = ingest("ham10000", tmp_path / "data")
    assert accounted(report) and len(table) == 2
    (skip,) = report.skipped
    assert skip.id == ids[1] and "dangling symbolic link" in skip.reason and skip.column == "image_ref"
    assert any("1 dangling symbolic links" in n and "masks" in n for n in report.notes)


def test_column_only_in_the_test_file_is_not_a_feature(tmp_path):
    (tmp_path / "train-metadata.csv").write_text(
        "isic_id,target,patient_id,tbp_lv_Hext,clin_size_long_diam_mm,tbp_lv_minorAxisMM\n"
        + "".join(f"ISIC_{i},{i % 2},IP_{i},50,{3 + i},2\n" for i in range(6)))
    (tmp_path / "test-metadata.csv").write_text(
        "isic_id,patient_id,tbp_lv_H,tbp_lv_Hext,age_approx,clin_size_long_diam_mm,tbp_lv_minorAxisMM\nISIC_9,IP_9,40,50,60,4,2\n")
    table, report = ingest("isic2024", tmp_path)
    assert "tbp_lv_H" not in table.meta.feature_columns and "age_approx" not in table.meta.feature_columns
    assert any("no value in any training row" in n and "tbp_lv_H" in n and "age_approx" in n for n in report.notes)
    from dermstack.config import FeaturesConfig
    from dermstack.features.build import build_features

    fs = build_features(table, FeaturesConfig(patient=False, embedding=False))
    train = fs.df.filter(pl.col("split") == "train")
    assert fs.columns(["engineered"]) and all(train[c].null_count() < train.height for c in fs.columns(["engineered", "metadata"]))


def _decode_one(path: Path):
    """(array or None, failure reason) of one image file as extraction decodes it for a 32-pixel backbone."""
    from dermstack.extract.dataset import Geometry, ImageDataset

    _, array, reason = ImageDataset([str(path)], Geometry(32, 32, 1.0, "center", "bilinear"))[0]
    return array, reason


def test_16bit_png_is_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image

    from dermstack.data.images import load_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "ISIC_1.png")
    assert Image.open(tmp_path / "ISIC_1.png").mode == "I;16"
    array, reason = _decode_one(tmp_path / "ISIC_1.png")
    assert reason is None and 100 < array.mean() < 155
    assert 100 < np.asarray(load_image(str(tmp_path / "ISIC_1.png"))).mean() < 155


def test_jpeg_with_premature_end_of_data_is_a_failure_not_grey(shared_data, tmp_path):
    jpeg = real_jpeg(shared_data)
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2] + b"\xff\xd9")  # end marker present: ingest passes it
    array, reason = _decode_one(tmp_path / "cut.jpg")
    assert array is None and "premature end of data" in reason
    (tmp_path / "good.jpg").write_bytes(jpeg)
    assert _decode_one(tmp_path / "good.jpg")[1] is None


def test_tiny_image_is_not_embedded_nor_measured(tmp_path):
    from PIL import Image

    from dermstack.features.image import image_features

    Image.new("RGB", (1, 1), (120, 80, 60)).save(tmp_path / "ISIC_1.png")
    array, reason = _decode_one(tmp_path / "ISIC_1.png")
    assert array is None and "1x1 pixels, below the 16-pixel minimum" in reason
    frame, info = image_features(pl.DataFrame({"image_id": ["ISIC_1"], "image_ref": [str(tmp_path / "ISIC_1.png")],
                                               "mask_ref": [None]}, schema_overrides={"mask_ref": pl.String}), workers=1)
    assert info["unreadable"] == ["ISIC_1"] and frame["img_area_fraction"].to_list() == [None]


def test_damaged_hdf5_names_the_file_or_skips_the_rows(shared_data, tmp_path):
    """4 KiB overwritten anywhere in the image file: a DataError naming it, or the damaged rows skipped."""
    isic2024_layout(shared_data, tmp_path)
    h5 = tmp_path / "train-image.hdf5"
    pristine = h5.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    outcomes = set()
    for offset in range(0, len(pristine) - 4096, 1024):
        h5.write_bytes(pristine[:offset] + noise + pristine[offset + 4096:])
        try:
            table, report = ingest("isic2024", tmp_path)
        except DataError as e:
            assert e.file == str(h5), (offset, e)
            outcomes.add("error")
        else:
            assert accounted(report) and all(s.column == "image_ref" for s in report.skipped), offset
            outcomes.add("skipped" if report.skipped else "intact")
    assert {"error", "skipped"} <= outcomes


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of ``dermstack ARGS`` through the real entry point and its error handler."""
    import sys

    from dermstack.cli import main

    monkeypatch.setattr(sys, "argv", ["dermstack", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_out_that_is_a_directory_is_named_without_traceback(tmp_path, monkeypatch, capsys):
    small_isic(tmp_path, "ISIC_1,0,IP_1,50,x\n")
    (tmp_path / "out.parquet").mkdir()
    code, err = run_cli(monkeypatch, capsys, "data", "ingest", "isic2024", str(tmp_path), "--out", str(tmp_path / "out.parquet"))
    assert code == 2 and f"{tmp_path / 'out.parquet'}: is a directory" in err and "Traceback" not in err
    assert not leftovers(tmp_path)


def test_disk_full_names_the_target_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    import errno

    import pyarrow.parquet as pq

    def full(table, where, **kw):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    small_isic(tmp_path, "ISIC_1,0,IP_1,50,x\n")
    monkeypatch.setattr(pq, "write_table", full)
    out = tmp_path / "out" / "lesions.parquet"
    code, err = run_cli(monkeypatch, capsys, "data", "ingest", "isic2024", str(tmp_path), "--out", str(out))
    assert code == 2 and f"{out}: No space left on device" in err and "Traceback" not in err
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0, reason="root ignores permissions")
def test_read_only_out_folder(tmp_path, monkeypatch, capsys):
    small_isic(tmp_path, "ISIC_1,0,IP_1,50,x\n")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        code, err = run_cli(monkeypatch, capsys, "data", "ingest", "isic2024", str(tmp_path), "--out", str(tmp_path / "ro" / "t.parquet"))
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert code == 2 and "Permission denied" in err and str(tmp_path / "ro") in err and not leftovers(tmp_path)


@pytest.mark.parametrize("ending", ["\n", "\n\n", "\r\n\r\n", "\n \n"])
def test_validate_accepts_trailing_blank_lines_and_says_ids_unchecked_without_sample(tmp_path, ending):
    from click.testing import CliRunner

    from dermstack.ensembles.cli import ensembles

    (tmp_path / "sample.csv").write_text("isic_id,target\nISIC_1,0.3\nISIC_2,0.3\n")
    (tmp_path / "s.csv").write_text("isic_id,target\nISIC_1,0.1\nISIC_2,0.9" + ending)
    alone = CliRunner().invoke(ensembles, ["validate", str(tmp_path / "s.csv"), "--format", "isic2024"])
    assert alone.exit_code == 0 and "ids NOT checked" in alone.output and "--sample" in alone.output
    checked = CliRunner().invoke(ensembles, ["validate", str(tmp_path / "s.csv"), "--format", "isic2024",
                                             "--sample", str(tmp_path / "sample.csv")])
    assert checked.exit_code == 0 and "every id of sample.csv exactly once" in checked.output
    (tmp_path / "s.csv").write_text("isic_id,target\nISIC_1,0.1\n,\nISIC_2,0.9" + ending)  # an empty row inside is a problem
    assert CliRunner().invoke(ensembles, ["validate", str(tmp_path / "s.csv"), "--format", "isic2024"]).exit_code == 1


# -- images, masks, views: what cannot be used is named and left out, never allocated or resized ---------
def png_header(width: int, height: int) -> bytes:
    """A PNG of a header only: what Pillow reads to learn the size an image claims."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_an_image_claiming_900_million_pixels_is_refused_by_pillows_guard(tmp_path):
    from PIL import Image

    from dermstack.data.images import decode_image

    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's guard, never switched off
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30_000, 30_000))
    with pytest.raises(DataError, match="900000000 pixels.*decompression bomb") as e:
        decode_image(bomb.read_bytes(), str(bomb))
    assert e.value.file == str(bomb)
    array, reason = _decode_one(bomb)  # extraction lists it as a failure, with the reason
    assert array is None and "decompression bomb" in reason


def test_a_transposed_mask_is_named_and_not_used(tmp_path, caplog):
    from PIL import Image

    from dermstack.features.image import image_features

    rng = np.random.default_rng(0)
    Image.fromarray(lesion_like(rng, 60, 40)).save(tmp_path / "a.png")
    Image.fromarray(np.full((60, 40), 255, np.uint8)).save(tmp_path / "a_mask.png")  # 40 wide, 60 high: transposed
    Image.fromarray(np.full((80, 120), 255, np.uint8)).save(tmp_path / "b_mask.png")  # twice the size: fine
    df = pl.DataFrame({"image_id": ["a", "b"], "image_ref": [str(tmp_path / "a.png")] * 2,
                       "mask_ref": [str(tmp_path / "a_mask.png"), str(tmp_path / "b_mask.png")]})
    with caplog.at_level(logging.WARNING):
        frame, info = image_features(df, workers=1)
    assert info["mask_mismatch"] == ["a"] and frame["img_area_fraction"].to_list()[0] is None
    assert frame["img_area_fraction"].to_list()[1] == pytest.approx(1.0)
    assert "mask mismatch" in caplog.text and "mask is 40x60 pixels, its image 60x40 (transposed)" in caplog.text


def test_a_pca_capped_by_the_data_is_said_and_recorded(tmp_path, caplog):
    from dermstack.features.embedding import pca_features
    from dermstack.features.transform import FeatureTransform

    x = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        frame, info, params = pca_features({"emb_b": x}, [f"i{k}" for k in range(12)], np.arange(12) < 10, 100)
    assert info["emb_b"] | {"explained_variance": None} == {"dim": 16, "components": 10, "requested": 100, "non_finite_rows": 0,
                                                             "capped_by": "the 10 training rows with an embedding",
                                                             "explained_variance": None}
    assert "pca_components = 100 capped at 10, the 10 training rows with an embedding" in caplog.text
    FeatureTransform([], params).write(tmp_path / "t.npz")
    assert FeatureTransform.read(tmp_path / "t.npz").pca["emb_b"].requested == 100


def milk_layout(shared_data: Path, root: Path, n: int = 3) -> list[str]:
    """The first ``n`` MILK10k training lesions with a small JPEG for each of their two images; the lesion ids."""
    from PIL import Image

    src = shared_data / "milk10k-dev"
    meta = pl.read_csv(src / "MILK10k_Training_Metadata.csv", infer_schema_length=None)
    lesions = meta["lesion_id"].unique(maintain_order=True).head(n)
    meta = meta.filter(pl.col("lesion_id").is_in(lesions.implode()))
    meta.write_csv(root / "MILK10k_Training_Metadata.csv")
    pl.read_csv(src / "MILK10k_Training_GroundTruth.csv").filter(pl.col("lesion_id").is_in(lesions.implode())).write_csv(
        root / "MILK10k_Training_GroundTruth.csv")
    rng = np.random.default_rng(0)
    for isic in meta["isic_id"]:
        Image.fromarray(lesion_like(rng, 48, 40)).save(root / f"{isic}.jpg", quality=85)
    return lesions.to_list()


def test_a_corrupt_clinical_image_keeps_the_lesion_without_that_view(shared_data, tmp_path):
    lesions = milk_layout(shared_data, tmp_path)
    meta = pl.read_csv(tmp_path / "MILK10k_Training_Metadata.csv", infer_schema_length=None)
    clinical = meta.filter((pl.col("lesion_id") == lesions[1]) & pl.col("image_type").str.starts_with("clinical"))["isic_id"][0]
    jpeg = tmp_path / f"{clinical}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated: no end marker
    table, report = ingest("milk10k", tmp_path)
    assert table.df["image_id"].to_list() == lesions and not report.skipped and accounted(report)
    assert table.df["image_ref_clinical"].is_null().to_list() == [False, True, False]
    assert table.df["image_ref"].null_count() == 0
    (note,) = [n for n in report.notes if n.startswith("image_ref_clinical: 1 unusable")]
    assert lesions[1] in note and "truncated JPEG" in note
    with pytest.raises(DataError, match="truncated JPEG") as e:
        ingest("milk10k", tmp_path, strict=True)
    assert e.value.column == "image_ref_clinical" and e.value.row is not None


@pytest.mark.parametrize("column", ["image_ref_", "image_ref_../x", "image_ref_a/b", "image_ref_/etc", "image_ref_\x00x",
                                    "image_ref_" + "v" * 300])
def test_an_image_column_with_no_plain_view_name_is_refused(tmp_path, column):
    small_isic(tmp_path, "ISIC_1,0,IP_1,50,x,y\nISIC_2,1,IP_2,60,x,z\n", header=HEADER.rstrip("\n") + f",{column}\n")
    with pytest.raises(DataError, match="is not a view name") as e:
        ingest("isic2024", tmp_path)
    assert e.value.file == str(tmp_path.resolve()) and e.value.column.startswith(column[:30])


def test_a_10_mb_metadata_cell_is_cut_in_messages_and_the_report(tmp_path):
    csv = small_isic(tmp_path, "ISIC_1,0,IP_1,50,x\nISIC_2,1,IP_2," + "9x" * 5_000_000 + ",x\n")
    table, report = ingest("isic2024", tmp_path)
    (skip,) = report.skipped
    assert (skip.row, skip.column) == (3, "age_approx") and len(skip.reason) < 600
    assert re.search(r"\.\.\. \(10,000,0\d\d characters\)", skip.reason)
    report.write_json(tmp_path / "report.json")
    assert (tmp_path / "report.json").stat().st_size < 10_000 and len(report.summary()) < 2_000
    with pytest.raises(DataError) as e:
        ingest("isic2024", tmp_path, strict=True)
    assert len(str(e.value)) < 2_000 and e.value.file == str(csv)


def test_a_long_message_is_cut_in_the_middle_and_keeps_its_remedy():
    e = DataError("the data lacks " + ", ".join(f"tbp_lv_{i}" for i in range(1_000)) + "; pass --allow-missing-features")
    assert str(e).startswith("the data lacks tbp_lv_0") and str(e).endswith("; pass --allow-missing-features")
    assert "characters) ..." in str(e) and len(str(e)) < 2_100


# -- fold files: every problem names the file and the row -----------------------------------------------
def one_patient_per_image(n: int = 120):
    from lesion_tables import lesion_table

    return lesion_table({"image_id": [f"img{i:03d}" for i in range(n)], "patient_id": [f"P{i:03d}" for i in range(n)],
                         "target": [i % 3 == 0 for i in range(n)]})


#: (case, fold file text, what is said, row named)
FOLD_FILES = [
    ("header only", "image_id,fold\n", "the fold file has a header but no rows", None),
    ("a blank fold cell", "image_id,fold\n" + "".join(f"img{i:03d},{'' if i == 7 else i % 5}\n" for i in range(120)),
     "image_id 'img007': no fold (a blank cell)", 9),
    ("a word for a fold", "image_id,fold\nimg000,one\n", "fold 'one' is not a whole number", 2),
    ("a fold per image (120 folds)", "image_id,fold\n" + "".join(f"img{i:03d},{i}\n" for i in range(120)),
     "the fold file has 120 folds for 120 training rows; at most 100", None),
]


@pytest.mark.parametrize("case,text,said,row", FOLD_FILES, ids=[c[0] for c in FOLD_FILES])
def test_a_bad_fold_file_names_the_file_and_row(tmp_path, monkeypatch, capsys, case, text, said, row):
    from dermstack.data.folds import FoldPlan

    table = one_patient_per_image()
    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(DataError, match=re.escape(said)) as e:
        FoldPlan.from_file(table, tmp_path / "folds.csv")
    assert e.value.file == str(tmp_path / "folds.csv") and e.value.row == row
    table.write(tmp_path / "lesions.parquet")
    code, err = run_cli(monkeypatch, capsys, "data", "folds", str(tmp_path / "lesions.parquet"), "--from",
                        str(tmp_path / "folds.csv"), "--out", str(tmp_path / "plan.parquet"))
    assert code == 2 and said in err and "Traceback" not in err


def test_a_run_with_a_fold_per_lesion_is_exit_2_naming_the_file(tmp_path):
    from click.testing import CliRunner

    from dermstack.cli import cli
    from dermstack.data.synth import synthesize_isic2024

    synthesize_isic2024(tmp_path / "data", lesions=150, test_lesions=0, image_size=16)
    ids = pl.read_csv(tmp_path / "data" / "train-metadata.csv", columns=["isic_id"])["isic_id"]
    (tmp_path / "folds.csv").write_text("image_id,fold\n" + "".join(f"{i},{k}\n" for k, i in enumerate(ids)))
    (tmp_path / "run.toml").write_text(f'[data]\nformat = "isic2024"\npath = "{tmp_path / "data"}"\n'
                                       f'[cv]\nfolds = "{tmp_path / "folds.csv"}"\n[[models]]\nkind = "lightgbm"\n')
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and f"{tmp_path / 'folds.csv'}, column 'fold': the fold file has" in r.output, r.output
    assert "at most 100" in r.output and "Traceback" not in r.output


# -- inputs that are not what they say ---------------------------------------------------------------
def test_a_data_path_that_is_a_link_loop_is_named(tmp_path):
    from dermstack.config import RunConfig
    from dermstack.errors import ConfigError
    from dermstack.run import Run

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ConfigError, match=r"\[data\] path = .*loop'?: a symbolic link loop"):
        Run(RunConfig.from_dict({"data": {"format": "ham10000", "path": str(tmp_path / "loop")}}), tmp_path / "run")
    with pytest.raises(DataError, match="a symbolic link loop") as e:
        ingest("ham10000", tmp_path / "loop")
    assert e.value.file == str(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=f"a dangling symbolic link to {tmp_path / 'gone'}"):
        ingest("ham10000", tmp_path / "dangling")


def test_a_data_path_not_found_names_the_config_and_every_path_tried(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dermstack.cli import cli

    cfg, work = tmp_path / "configs" / "run.toml", tmp_path / "work"
    cfg.parent.mkdir()
    work.mkdir()
    cfg.write_text('[data]\nformat = "isic2024"\npath = "../data/isic2024"\n[[models]]\nkind = "lightgbm"\n')
    monkeypatch.chdir(work)
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f"{cfg}: [data] path = '../data/isic2024': no such file or folder" in r.output, r.output
    # from the working directory and from the config's folder: here the same absolute path, said once
    assert f"tried {tmp_path / 'data' / 'isic2024'}" in r.output, r.output
    (tmp_path / "configs" / "sub").mkdir()  # now two: the config's folder is one deeper
    cfg.rename(tmp_path / "configs" / "sub" / "run.toml")
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "configs" / "sub" / "run.toml"), "--out", str(tmp_path / "run")])
    assert f"tried {tmp_path / 'data' / 'isic2024'}, {tmp_path / 'configs' / 'data' / 'isic2024'}" in r.output, r.output
    assert not (tmp_path / "run").exists()
    (tmp_path / "data" / "isic2024-train").mkdir(parents=True)  # a near name beside it is suggested
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "configs" / "sub" / "run.toml"), "--out", str(tmp_path / "run")])
    assert 'no such file or folder (did you mean "isic2024-train"?); tried' in r.output, r.output


def test_a_target_typo_names_the_config_and_the_closest_target_and_leaves_no_run_folder(archive, tmp_path):
    from click.testing import CliRunner

    from dermstack.cli import cli

    export, _ = archive
    cfg = tmp_path / "typo.toml"
    cfg.write_text(f'[data]\nformat = "isic-archive"\npath = "{export}"\ntask = "binary"\ntarget = "malignent"\n'
                   '[[models]]\nkind = "lightgbm"\n')
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert f'{cfg}: [data] target = "malignent": neither "malignant" nor a class' in r.output, r.output
    assert 'did you mean "malignant"' in r.output and '"Melanoma, NOS"' in r.output, r.output
    assert not (tmp_path / "run").exists()  # the classes are known once the data is read: nothing was written


@pytest.mark.parametrize("sections,said", [
    ('[extract]\nbackbones = ["efficientnet_lite0"]\n', '[extract] backbones = ["efficientnet_lite0"]: no row of this data has an image'),
    ("[features]\nimage = true\n", "[features] image = true: no row of this data has an image"),
])
def test_image_settings_on_metadata_only_data_are_one_early_error(tmp_path, sections, said):
    from click.testing import CliRunner

    from dermstack.cli import cli

    data = tmp_path / "ddi"
    data.mkdir()
    (data / "ddi_metadata.csv").write_text("DDI_ID,DDI_file,skin_tone,malignant,disease\n" + "".join(
        f"{i},{i:06d}.png,{(12, 34, 56)[i % 3]},{'TRUE' if i % 3 == 0 else 'FALSE'},nevus\n" for i in range(1, 31)))
    cfg = tmp_path / "ddi.toml"
    cfg.write_text(f'[data]\nformat = "ddi"\npath = "{data}"\n{sections}[[models]]\nkind = "lightgbm"\n')
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and f"{cfg}: {said} (30 rows" in r.output and "Traceback" not in r.output, r.output
    assert "for a metadata-only run" in r.output and "not embedded" not in r.output, r.output
    assert not (tmp_path / "run").exists()  # refused as the data was read, before anything was written


@pytest.mark.parametrize("args,said", [
    (["data", "ingest", "isic2024", "{empty}", "--out", "{fifo}"], "is a FIFO"),
    (["data", "ingest", "isic2024", "{empty}", "--out", "x.parquet", "--report", "{fifo}"], "is a FIFO"),
    (["predict", "{empty}", "{empty}", "--out", "-"], "does not write to standard output"),
    (["extract", "run", "{lesions}", "--out", "{fifo}"], "is a FIFO"),
])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch, capsys, args, said):
    import os

    (tmp_path / "empty").mkdir()  # as DATA it would fail later, with another message
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "lesions.parquet").write_text("not parquet")
    names = {"empty": tmp_path / "empty", "fifo": tmp_path / "fifo", "lesions": tmp_path / "lesions.parquet"}
    code, err = run_cli(monkeypatch, capsys, *[a.format(**names) for a in args])
    assert code == 2 and said in err and "Traceback" not in err, err
    assert (tmp_path / "fifo").is_fifo() and not Path("-").exists()


# -- a Dask address that is not a usable cluster: exit 2 within seconds, naming it ----------------------
@contextmanager
def http_server():
    """A tiny HTTP server on 127.0.0.1, stopped on exit: it accepts a connection and waits for a request."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"tcp://127.0.0.1:{port}"


@contextmanager
def scheduler_without_workers():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


#: (case, the server, what is said, the most seconds it may take) for `run --dask ADDRESS` with [cv] dask_wait = 1
SCHEDULERS = [
    ("an HTTP server", http_server, "connected, but no Dask handshake came within 2 s: not a Dask scheduler", 8),
    ("a closed port", closed_port, "cannot connect (Connection refused)", 3),
    ("a scheduler without workers", scheduler_without_workers, "has no workers; none joined within 1 s ([cv] dask_wait)", 8),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,serve,said,seconds", SCHEDULERS, ids=[c[0] for c in SCHEDULERS])
def test_a_dask_address_that_is_no_usable_cluster_is_exit_2_within_seconds(tmp_path, monkeypatch, capsys, caplog, case, serve,
                                                                           said, seconds):
    monkeypatch.setattr("dermstack.cluster.CONNECT_TIMEOUT", 2.0)  # 5 s by default
    (tmp_path / "run.toml").write_text('[data]\nformat = "synthetic-isic2024"\nlesions = 50\n[cv]\ndask_wait = 1\n')
    with serve() as address, caplog.at_level(logging.WARNING):
        t0 = time.perf_counter()
        code, err = run_cli(monkeypatch, capsys, "run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run"), "--dask", address)
        took = time.perf_counter() - t0
    assert code == 2 and address in err and said in err and "Traceback" not in err, err
    assert took < seconds and not (tmp_path / "run" / "lesions.parquet").exists()
    if case == "a scheduler without workers":  # said at once, before the wait
        assert f"the Dask scheduler at {address} has no workers: waiting up to 1 s" in caplog.text


def _half(job):
    return np.full(len(job.valid), 0.5), None, {}


@pytest.mark.slow
def test_a_cluster_without_workers_while_jobs_wait_is_said_then_exit_2(caplog):
    distributed = pytest.importorskip("distributed")
    from dermstack.jobs import DaskJobs, FoldJob

    with scheduler_without_workers() as address, distributed.Client(address, set_as_default=False) as client:
        jobs = DaskJobs(client, worker_wait=1)
        with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=re.escape(
                f"the Dask scheduler at {address} has had no workers for 1 s ([cv] dask_wait)") + ".*finished so far are kept"):
            list(jobs.run(_half, [FoldJob(0, 0, 0, np.arange(3), np.arange(3, 6))]))
    assert f"the Dask scheduler at {address} has no workers now" in caplog.text


# -- ids from the data never become a path outside the data folder or the run directory ------------------
#: ids a careless or hostile export may hold: a parent, a subfolder, an absolute path, NUL, a very long name
HOSTILE_IDS = ["../outside", "a/b", "/etc/hostname", "nul\x00byte", "x" * 300]


@pytest.mark.parametrize("fmt", ["ham10000", "ddi"])
def test_image_and_mask_ids_never_reach_outside_the_data_folder(shared_data, tmp_path, fmt):
    """An image (and mask) is found by its file name in the data folder, so no id reads a file elsewhere."""
    from PIL import Image

    jpeg = real_jpeg(shared_data)
    data = tmp_path / "data"
    (data / "images" / "a").mkdir(parents=True)
    (tmp_path / "outside.jpg").write_bytes(jpeg)  # what "../outside" would reach
    (tmp_path / "outside_segmentation.png").write_bytes(b"")
    Image.new("L", (32, 32), 255).save(tmp_path / "outside_segmentation.png")
    if fmt == "ham10000":
        ids = HOSTILE_IDS + ["ISIC_1"]
        (data / "images" / "ISIC_1.jpg").write_bytes(jpeg)
        rows = "".join(f'HAM_{k},"{i}",nv,histo,50.0,male,back\n' for k, i in enumerate(ids))
        (data / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n" + rows)
    else:
        ids = [i + ".png" for i in HOSTILE_IDS] + ["000001.png"]
        Image.fromarray(lesion_like(np.random.default_rng(0), 40, 40)).save(data / "images" / "000001.png")
        rows = "".join(f'{k},"{i}",{k % 2 == 0},melanoma,12\n' for k, i in enumerate(ids))
        (data / "ddi_metadata.csv").write_text("DDI_ID,DDI_file,malignant,disease,skin_tone\n" + rows)
    table, report = ingest(fmt, data)
    refs = [r for c in ("image_ref", "mask_ref") for r in table.df[c].drop_nulls().to_list()]
    assert refs and all(Path(r).is_relative_to(data.resolve()) for r in refs), refs
    assert table.df.filter(pl.col("image_ref").is_not_null()).height == 1


def test_hdf5_image_keys_are_the_files_own_names_never_paths(shared_data, tmp_path):
    ids = isic2024_layout(shared_data, tmp_path)
    with h5py.File(tmp_path / "train-image.hdf5", "a") as f:
        f.create_dataset("a/b", data=np.bytes_(real_jpeg(shared_data)))  # a nested key: "a/b" is not an image of the file
    csv = tmp_path / "train-metadata.csv"
    edit_cell(csv, simple_line(csv), "isic_id", "a/b")
    table, report = ingest("isic2024", tmp_path)
    assert "a/b" in report.missing_images and table.df.filter(pl.col("image_id") == "a/b")["image_ref"].item() is None
    assert table.df["image_ref"].drop_nulls().str.starts_with(str((tmp_path / "train-image.hdf5").resolve())).all()
    assert len(ids) == N


def test_report_explain_file_names_stay_one_plain_name():
    from dermstack.reports.explain import explain_file_name

    names = [explain_file_name(i) for i in HOSTILE_IDS + ["y" * 300, "ISIC_0000001"]]
    assert all(re.fullmatch(r"explain_[A-Za-z0-9_.-]{1,100}\.html", n) for n in names), names
    assert len(set(names)) == len(names) and names[-1] == "explain_ISIC_0000001.html"


def test_fold_file_ids_are_only_matched_never_opened(tmp_path):
    from dermstack.data.folds import FoldPlan

    table = one_patient_per_image(6)
    ids = table.df["image_id"].to_list() + HOSTILE_IDS
    pl.DataFrame({"image_id": ids, "fold": [k % 2 for k in range(len(ids))]}).write_csv(tmp_path / "folds.csv")
    plan = FoldPlan.from_file(table, tmp_path / "folds.csv")
    assert plan.n_splits == 2 and plan.folds["image_id"].to_list() == table.df["image_id"].to_list()
