"""Submission files: validated before writing, every problem named by line, id and column."""
from __future__ import annotations

import polars as pl
import pytest

from dermstack.errors import DataError
from dermstack.outputs.submission import check_submission, get_format, validate_submission, write_submission

IDS = ["ISIC_1", "ISIC_2", "ISIC_3"]


def _csv(tmp_path, text: str, name: str = "sub.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _messages(problems) -> str:
    return "\n".join(map(str, problems))


def test_valid_isic2024_file_passes(tmp_path):
    p = _csv(tmp_path, "isic_id,target\nISIC_1,0.1\nISIC_2,1\nISIC_3,0\n")
    assert validate_submission(p, IDS, "isic2024") == []


@pytest.mark.parametrize("text, expected", [
    ("isic_id,target\nISIC_1,0.1\nISIC_2,0.2\n", "1 test id(s) missing from the submission: ['ISIC_3']"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,0.2\nISIC_3,0.3\nISIC_2,0.4\n",
     "line 5, id 'ISIC_2', column 'isic_id': duplicate id (first on line 3)"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,NaN\nISIC_3,0.3\n", "line 3, id 'ISIC_2', column 'target': score is NaN"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,0.2\nISIC_3,1.5\n", "line 4, id 'ISIC_3', column 'target': score 1.5 is outside [0, 1]"),
    ("isic_id,score\nISIC_1,0.1\nISIC_2,0.2\nISIC_3,0.3\n", "missing column(s) ['target']"),
    ("isic_id,score\nISIC_1,0.1\nISIC_2,0.2\nISIC_3,0.3\n", "unexpected column(s) ['score']"),
    ("target,isic_id\n0.1,ISIC_1\n0.2,ISIC_2\n0.3,ISIC_3\n", "columns in the wrong order"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,0.2\nISIC_3,0.3\nISIC_9,0.3\n", "line 5, id 'ISIC_9', column 'isic_id': id is not a test id"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,\nISIC_3,0.3\n", "line 3, id 'ISIC_2', column 'target': empty score"),
    ("isic_id,target\nISIC_1,0.1\nISIC_2,high\nISIC_3,0.3\n", "line 3, id 'ISIC_2', column 'target': score 'high' is not a number"),
])
def test_each_problem_is_caught_and_located(tmp_path, text, expected):
    problems = validate_submission(_csv(tmp_path, text), IDS, "isic2024")
    assert expected in _messages(problems)


def test_write_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "submission.csv"
    bad = pl.DataFrame({"image_id": IDS, "model": "m", "class": "target", "score": [0.1, 1.5, float("nan")]})
    with pytest.raises(DataError) as e:
        write_submission(bad, "isic2024", out, ids=IDS)
    msg = str(e.value)
    assert "id 'ISIC_2', column 'target': score 1.5 is outside [0, 1]" in msg and "id 'ISIC_3'" in msg and "NaN" in msg
    assert not out.exists()
    missing = pl.DataFrame({"image_id": IDS[:2], "class": "target", "score": [0.1, 0.2]})
    with pytest.raises(DataError, match=r"missing from the submission: \['ISIC_3'\]"):
        write_submission(missing, "isic2024", out, ids=IDS)
    dup = pl.DataFrame({"isic_id": IDS + ["ISIC_1"], "target": [0.1, 0.2, 0.3, 0.4]})
    with pytest.raises(DataError, match="duplicate id"):
        write_submission(dup, "isic2024", out, ids=IDS)
    assert not out.exists()


def test_write_picks_the_model_and_orders_rows(tmp_path):
    long = pl.DataFrame({"image_id": IDS[::-1] * 2, "model": ["a"] * 3 + ["b"] * 3, "class": "target",
                         "score": [0.3, 0.2, 0.1, 0.9, 0.8, 0.7]})
    with pytest.raises(DataError, match="several models"):
        write_submission(long, "isic2024", tmp_path / "s.csv", ids=IDS)
    out = write_submission(long, "isic2024", tmp_path / "s.csv", ids=IDS, model="a")
    assert out.read_text().splitlines() == ["isic_id,target", "ISIC_1,0.1", "ISIC_2,0.2", "ISIC_3,0.3"]


def test_against_the_real_sample_files(tmp_path, shared_data):
    isic = shared_data / "isic2024-sample" / "sample_submission.csv"
    ids = pl.read_csv(isic)["isic_id"].to_list()
    preds = pl.DataFrame({"image_id": ids, "class": "target", "score": [0.5] * len(ids)})
    out = write_submission(preds, "isic2024", tmp_path / "isic.csv", sample=isic)
    assert validate_submission(out, isic, "isic2024") == []
    assert validate_submission(isic, isic, "isic2024") == []

    milk = shared_data / "milk10k-dev" / "MILK10k_Sample_Submit.csv"
    sample = pl.read_csv(milk)
    lesions, classes = sample["lesion_id"].to_list(), sample.columns[1:]
    long = pl.concat([pl.DataFrame({"image_id": lesions, "class": c, "score": [0.25] * len(lesions)}) for c in reversed(classes)])
    out = write_submission(long, "milk10k", tmp_path / "milk.csv", sample=milk)
    assert pl.read_csv(out).columns == sample.columns
    assert validate_submission(out, milk, "milk10k") == []
    broken = pl.read_csv(out).drop("MEL").with_columns(pl.lit(0.1).alias("mel"))
    broken.write_csv(tmp_path / "broken.csv")
    msgs = _messages(validate_submission(tmp_path / "broken.csv", milk, "milk10k"))
    assert "missing column(s) ['MEL']" in msgs and "unexpected column(s) ['mel']" in msgs


def test_check_accepts_numeric_frames():
    fmt = get_format("isic2024")
    df = pl.DataFrame({"isic_id": IDS, "target": [0.0, 0.5, 1.0]})
    assert check_submission(df, fmt, IDS) == []
    assert check_submission(df.with_columns(pl.lit(-0.1).alias("target")), fmt, IDS)


def test_format_follows_the_data(tmp_path):
    from dermstack.outputs.submission import submission_format
    from dermstack.task import TaskSpec
    from lesion_tables import lesion_table

    def table(dataset):
        t = lesion_table({"image_id": ["a", "b", "c"], "target": [0, 1, 0], "label": ["NV", "MEL", "NV"]}, dataset=dataset)
        return t, TaskSpec.from_table(t, "binary")

    assert submission_format(*table("isic2024")) == "isic2024"
    assert submission_format(*table("ham10000")) is None


def test_validate_command_exit_codes(tmp_path):
    from click.testing import CliRunner

    from dermstack.ensembles.cli import ensembles

    sample = _csv(tmp_path, "isic_id,target\nISIC_1,0.3\nISIC_2,0.3\n", "sample.csv")
    good = _csv(tmp_path, "isic_id,target\nISIC_2,0.9\nISIC_1,0.1\n", "good.csv")
    bad = _csv(tmp_path, "isic_id,target\nISIC_1,0.1\nISIC_1,0.2\n", "bad.csv")
    ok = CliRunner().invoke(ensembles, ["validate", str(good), "--format", "isic2024", "--sample", str(sample)])
    assert ok.exit_code == 0 and "valid isic2024 submission" in ok.output
    res = CliRunner().invoke(ensembles, ["validate", str(bad), "--format", "isic2024", "--sample", str(sample)])
    assert res.exit_code == 1
    assert "duplicate id" in res.output and "['ISIC_2']" in res.output
