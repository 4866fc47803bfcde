"""Every dataset in the shared development data ingests with the right counts, targets and columns."""
from __future__ import annotations

import polars as pl
import pytest
from click.testing import CliRunner

from dermstack.cli import cli
from dermstack.data.images import load_image, load_mask
from dermstack.data.readers import READERS, ingest
from dermstack.data.table import LesionTable, is_label_provenance
from dermstack.errors import DataError


def accounted(report) -> bool:
    """Every row read is either kept or skipped with a reason."""
    return report.rows_read == report.rows_kept + len(report.skipped)


def targets(table: LesionTable) -> dict:
    return {(split, target): n for split, target, n in table.df.group_by("split", "target").len().iter_rows()}


def test_all_formats_registered():
    assert set(READERS) == {"isic2024", "isic-archive", "ham10000", "milk10k", "ddi", "ph2"}


def test_isic2024_test_sample_with_images(shared_data):
    table, report = ingest("isic2024", shared_data / "isic2024-sample")
    assert len(table) == 3 and accounted(report) and not report.missing_images and not report.skipped
    assert table.df["split"].to_list() == ["test"] * 3 and table.df["target"].null_count() == 3
    ref = table.df["image_ref"][0]
    assert ref.endswith("test-image.hdf5::ISIC_0015657")
    assert load_image(ref).size[0] > 10


def test_isic2024_train_sample_metadata_only(shared_data):
    table, report = ingest("isic2024", shared_data / "isic2024-train-sample")
    df = table.df
    assert len(table) == 1049 and accounted(report)
    assert df.filter(pl.col("split") == "train")["target"].sum() == 99
    assert df["patient_id"].n_unique() == 525
    assert df["image_ref"].null_count() == 1049
    assert any("train-image.hdf5 not found" in n for n in report.notes)
    raw = pl.read_csv(shared_data / "isic2024-train-sample" / "train-metadata.csv", n_rows=1)
    assert set(raw.columns) <= set(df.columns)  # every column of the real file is kept
    feats = set(table.meta.feature_columns)
    assert not feats & {"lesion_id", "tbp_lv_dnn_lesion_confidence", "attribution", "copyright_license", "isic_id"}
    assert not [c for c in feats if c.startswith(("iddx_", "mel_"))]
    assert {"age_approx", "tbp_lv_areaMM2", "sex", "anatom_site_general"} <= feats
    # lesion_id: the CSV's where given, else the image id
    given = pl.read_csv(shared_data / "isic2024-train-sample" / "train-metadata.csv", infer_schema=False)["lesion_id"]
    assert df["lesion_id"].to_list() == [g or i for g, i in zip(given.to_list(), df["image_id"].to_list())]
    assert given.null_count() < 1049


def test_isic2024_train_and_test_features_exclude_train_only_columns(shared_data, tmp_path):
    for name in ("train-metadata.csv",):
        (tmp_path / name).write_bytes((shared_data / "isic2024-train-sample" / name).read_bytes())
    for name in ("test-metadata.csv", "test-image.hdf5"):
        (tmp_path / name).write_bytes((shared_data / "isic2024-sample" / name).read_bytes())
    table, report = ingest("isic2024", tmp_path)
    assert len(table) == 1052 and accounted(report)
    assert targets(table)[("train", 1)] == 99 and targets(table)[("test", None)] == 3
    test_cols = set(pl.read_csv(tmp_path / "test-metadata.csv", n_rows=1).columns)
    assert set(table.meta.feature_columns) <= test_cols
    assert table.test["image_ref"].null_count() == 0


def test_a_split_metadata_file_reads_that_split_from_its_folder(shared_data, tmp_path):
    """``dermstack predict RUN test-metadata.csv`` (or ingest) names the file, not its folder: that split
    is read, its images beside it; another file of the folder says to give the folder."""
    for name in ("test-metadata.csv", "test-image.hdf5", "sample_submission.csv"):
        (tmp_path / name).write_bytes((shared_data / "isic2024-sample" / name).read_bytes())
    (tmp_path / "train-metadata.csv").write_bytes((shared_data / "isic2024-train-sample" / "train-metadata.csv").read_bytes())
    table, _ = ingest("isic2024", tmp_path / "test-metadata.csv")
    assert table.df["split"].to_list() == ["test"] * 3 and table.df["image_ref"].null_count() == 0
    with pytest.raises(DataError, match="sample_submission.csv: not a Kaggle ISIC 2024 metadata file: give the folder that holds "
                                        "train-metadata.csv or test-metadata.csv"):
        ingest("isic2024", tmp_path / "sample_submission.csv")
    milk, _ = ingest("milk10k", shared_data / "milk10k-dev" / "MILK10k_Test_Metadata.csv")
    assert set(milk.df["split"]) == {"test"}


@pytest.mark.parametrize("export, n, malignant", [("current", 60, 30), ("2024-export", 100, 21), ("older", 24, 24)])
def test_isic_archive_generations(shared_data, export, n, malignant):
    table, report = ingest("isic-archive", shared_data / "isic-archive-dev" / export)
    df = table.df
    assert len(table) == n and accounted(report) and not report.missing_images
    assert df["target"].null_count() == 0
    assert df["target"].sum() == malignant
    assert df["label"].null_count() == 0
    assert not [c for c in table.meta.feature_columns if is_label_provenance(c)]
    assert not set(table.meta.feature_columns) & {"benign_malignant", "concomitant_biopsy", "melanocytic", "nevus_type"}
    assert load_image(df["image_ref"][0]).size[0] > 10


def test_isic_archive_indeterminate_falls_back_to_benign_malignant(shared_data):
    table, report = ingest("isic-archive", shared_data / "isic-archive-dev" / "2024-export")
    indet = table.df.filter(pl.col("diagnosis_1") == "Indeterminate")
    assert indet.height == 3 and indet["target"].to_list() == [0, 0, 0]
    assert any("benign_malignant" in n for n in report.notes)


def test_a_null_value_is_noted_only_when_a_row_has_it():
    from dermstack.data.readers.vocab import SEX, check_vocabulary
    from dermstack.data.report import IngestReport

    for values, notes in ((["male", "female"], []), (["male", "unknown"], ["sex: unknown read as missing (1 rows without sex)"])):
        report = IngestReport("ham10000", "x")
        check_vocabulary(pl.DataFrame({"sex": values}), "sex", SEX, report, null_values=("unknown",))
        assert report.notes == notes


def test_ham10000(shared_data):
    table, report = ingest("ham10000", shared_data / "ham10000-dev")
    df = table.df
    assert len(table) == 2479 and accounted(report) and not report.missing_images
    raw = pl.read_csv(shared_data / "ham10000-dev" / "HAM10000_metadata.csv")
    assert df["target"].sum() == raw["dx"].is_in(["mel", "bcc", "akiec"]).sum() == 468
    assert table.meta.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert df["label"].to_list() == raw["dx"].to_list()
    assert "dx_type" not in table.meta.feature_columns and "dx_type" in df.columns
    assert {"age_approx", "sex", "anatom_site_general"} <= set(table.meta.feature_columns)
    assert df.filter(pl.col("localization") == "back")["anatom_site_general"].unique().to_list() == ["posterior torso"]
    assert df["sex"].drop_nulls().unique().sort().to_list() == ["female", "male"]
    assert df["patient_id"].null_count() == len(table) and df["lesion_id"].str.starts_with("HAM_").all()
    assert load_mask(df["mask_ref"][0]).any()


def test_milk10k_one_row_per_lesion(shared_data):
    table, report = ingest("milk10k", shared_data / "milk10k-dev")
    df = table.df
    assert len(table) == 1500 + 479 and accounted(report)
    assert df["image_id"].n_unique() == len(table) and (df["image_id"] == df["lesion_id"]).all()
    assert table.meta.classes == ["AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC"]
    gt = pl.read_csv(shared_data / "milk10k-dev" / "MILK10k_Training_GroundTruth.csv")
    train = table.train.join(gt, left_on="image_id", right_on="lesion_id")
    assert train.height == 1500
    for c in table.meta.classes:
        assert (train[f"y_{c}"] == train[c].cast(pl.Int8)).all()
    malignant = gt.select(pl.sum_horizontal("AKIEC", "BCC", "MAL_OTH", "MEL", "SCCKA")).to_series().sum()
    assert table.train["target"].sum() == malignant
    assert table.test["target"].null_count() == 479
    assert {"MONET_hair_derm", "MONET_hair_clin", "age_approx", "sex", "skin_tone_class", "site"} <= set(table.meta.feature_columns)
    assert not [c for c in table.meta.feature_columns if c.startswith(("isic_id", "attribution", "copyright"))]
    assert any("metadata only" in n for n in report.notes)
    # the dev copy has no image: its 479 test rows are unlabelled, not "labelled cases without an image"
    assert len(report.missing_images) == 1500 and "479 unlabelled test row(s) without an image" in report.notes


def test_ddi(shared_data):
    table, report = ingest("ddi", shared_data / "ddi")
    df = table.df
    assert len(table) == 653 and accounted(report)
    assert df["target"].sum() == 170
    assert df["image_id"][0] == "000001.png" and "" not in df.columns
    assert table.meta.feature_columns == ["skin_tone"]
    assert sorted(df["skin_tone"].unique().to_list()) == [12, 34, 56]


@pytest.mark.parametrize("label_file", [None, "PH2_dataset.txt", "PH2_dataset.xlsx"])
def test_ph2_lists_labelled_cases_without_images(shared_data, label_file):
    root = shared_data / "ph2-dev"
    table, report = ingest("ph2", root / label_file if label_file else root)
    assert report.rows_read == 200 and len(table) == 30 and accounted(report)
    assert len(report.skipped) == 170 and all("no image file" in s.reason for s in report.skipped)
    assert {s.id for s in report.skipped}.isdisjoint(table.df["image_id"].to_list())
    assert table.meta.classes == ["common nevus", "atypical nevus", "melanoma"]
    assert table.df["target"].sum() == (table.df["label"] == "melanoma").sum() > 0
    assert table.meta.feature_columns == []
    assert load_mask(table.df["mask_ref"][0]).any()
    if label_file != "PH2_dataset.xlsx":
        assert any("legend" in n for n in report.notes)


def test_ph2_label_files_agree(shared_data):
    root = shared_data / "ph2-dev"
    tables = [ingest("ph2", root / f)[0].df.select("image_id", "label").sort("image_id")
              for f in ("PH2_dataset.csv", "PH2_dataset.txt", "PH2_dataset.xlsx")]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])


def test_cli_ingest_writes_table_and_report(shared_data, tmp_path):
    out = tmp_path / "lesions.parquet"
    result = CliRunner().invoke(cli, ["data", "ingest", "ham10000", str(shared_data / "ham10000-dev"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows read: 2479" in result.output
    table = LesionTable.read(out)
    assert len(table) == 2479 and table.meta.classes[0] == "akiec"
    assert out.with_suffix(".report.json").exists()


def test_cli_strict_fails_on_missing_images(shared_data, tmp_path):
    out = tmp_path / "ph2.parquet"
    result = CliRunner().invoke(cli, ["data", "ingest", "ph2", str(shared_data / "ph2-dev"), "--out", str(out), "--strict"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no image file" in result.output and "PH2_dataset.csv" in result.output
    assert not out.exists()
