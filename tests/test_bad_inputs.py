"""Bad inputs give a DataError naming file/row/column, the report accounts for every row, --strict raises."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest

from dermstack.data.readers import ingest
from dermstack.errors import DataError

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
    assert [(s.row, s.column) for s in report.skipped] == [(3, "dx"), (4, "age_approx"), (5, "image_ref")]
    with pytest.raises(DataError, match="dx 'melanoma'"):
        ingest("ham10000", tmp_path, strict=True)


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
