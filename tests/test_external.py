"""`dermstack evaluate`: a finished run on another labelled dataset, with the overlap audit first;
`dermstack compare` of two evaluations; `dermstack run`'s warning about duplicates across folds."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from dermstack.cli import cli
from dermstack.data.readers import ingest
from dermstack.data.table import LesionTable
from dermstack.errors import DataError, DermstackError
from dermstack.external import evaluate_run
from dermstack.reports import browser
from external_fixtures import DUPLICATED, write_archive

#: the test model's random weights make distinct synthetic images look alike; near-duplicates are
#: tested on real images with a real backbone (test_external_audit.py)
NEAR = 0.999


@pytest.fixture(scope="module")
def evaluation(ham_run, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "ev"
    e = evaluate_run(ham_run, archive[0], out, allow_missing_features=True, near_threshold=NEAR)
    return out, e


def test_evaluation_contract(evaluation, archive):
    out, e = evaluation
    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk["final"] == e["final"] == "mean"
    for name in ("lightgbm", "xgboost", "mean", "calibrated"):
        m = on_disk["models"][name]
        for metric in ("roc_auc", "pauc_tpr80"):
            assert set(m[metric]) >= {"value", "ci95"} and len(m[metric]["ci95"]) == 2
            lo, hi = m[metric]["ci95"]
            assert lo <= m[metric]["value"] <= hi
            assert m["gap"][metric]["value"] == pytest.approx(m[metric]["value"] - m["oof"][metric]["value"])
        assert m["gap"]["value"] == m["gap"]["pauc_tpr80"]["value"]
    # the planted copies: identical bytes under a new id, a new image under a training image's id
    _, copies = archive
    found = {o["image_id"]: o for o in on_disk["overlap"]}
    assert set(found) == set(copies)
    assert found["ISIC_9000001"]["how"] == "hash" and found["ISIC_9000001"]["train_image_id"] == copies["ISIC_9000001"]
    assert found["ISIC_0000005"]["how"] == "id"
    assert all(set(o) >= {"image_id", "train_image_id", "how", "similarity"} for o in on_disk["overlap"])
    rows = on_disk["rows"]
    assert rows["read"] == 26 and rows["excluded_overlap"] == 2 and rows["scored"] == 24 == on_disk["n"]
    ops = on_disk["operating_points"]
    assert {op["name"] for op in ops} >= {"specificity_at_sensitivity_80", "sensitivity_at_specificity_95"}
    assert all("value" in op["sensitivity"] and op["threshold"] is not None for op in ops)
    guaranteed = [op for op in ops if op["kind"] == "guaranteed"]  # metrics.json clinical: whether the promise held
    assert guaranteed and all(op["delta"] == 0.05 and isinstance(op["held"], bool) for op in guaranteed)
    assert set(on_disk["calibration"]["without"]) == {"ece", "brier"} and on_disk["calibration"]["with"]
    assert "sex" in on_disk["subgroups"]["attributes"] and "attribution" in on_disk["subgroups"]["attributes"]
    assert on_disk["missing_features"] == {"localization": ["calibrated", "lightgbm", "mean", "xgboost"]}
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.columns[:2] == ["image_id", "label"] and preds.height == 24
    assert set(on_disk["models"]) <= set(preds.columns)
    assert all(preds.schema[m] == pl.Float64 for m in on_disk["models"])
    assert not set(preds["image_id"]) & set(copies)  # left out of every figure
    assert sorted(preds["label"].unique().to_list()) == [0, 1]


def test_missing_feature_columns_are_named_with_their_models_and_exit_2(ham_run, archive, tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", str(ham_run), str(archive[0]), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 2
    assert "localization" in res.output and "lightgbm" in res.output and "--allow-missing-features" in res.output
    assert res.output.index("--allow-missing-features") < res.output.index("localization")  # never clipped off a long list
    assert not (tmp_path / "ev" / "evaluation.json").exists()


def test_a_column_named_not_a_feature_lets_another_format_be_scored_without_it(tiny, ham_data, archive, test_weights_session,
                                                                             tmp_path):
    """[data] not_features: HAM10000's own `localization` stays data, not a feature, so an ISIC export
    (which has only `anatom_site_general`) is evaluated with no column missing; a typo names the closest column."""
    from external_fixtures import MODELS, ham_sections
    from tiny_runs import embedded

    sections = ham_sections(ham_data, embedded(test_weights_session, image_size=48))
    run = tiny.run(MODELS, **(sections | {"data": sections["data"] | {"not_features": ["localization"]}}))
    table = LesionTable.read(run / "lesions.parquet")
    assert "localization" in table.df.columns and "localization" not in table.meta.feature_columns
    assert "localization" not in pl.read_parquet_schema(run / "features.parquet")
    e = evaluate_run(run, archive[0], tmp_path / "ev", near_threshold=NEAR)  # no --allow-missing-features needed
    assert e["rows"]["scored"] > 0 and not any("scored without" in n for n in e["notes"])
    typo = tiny.write(tmp_path / "typo.toml", MODELS, **(sections | {"data": sections["data"] | {"not_features": ["localisation"]}}))
    res = CliRunner().invoke(cli, ["run", str(typo), "--out", str(tmp_path / "typo")])
    assert res.exit_code == 2 and "'localisation' is not a feature column" in res.output and 'did you mean "localization"' in res.output


def test_keep_overlap_scores_and_flags_them(ham_run, archive, tmp_path):
    e = evaluate_run(ham_run, archive[0], tmp_path / "ev", allow_missing_features=True, keep_overlap=True, near_threshold=NEAR)
    preds = pl.read_parquet(tmp_path / "ev" / "predictions.parquet")
    assert preds.height == 26 and e["rows"]["flagged_overlap"] == 2 and e["rows"]["excluded_overlap"] == 0
    flagged = dict(preds.filter(pl.col("overlap").is_not_null()).select("image_id", "overlap").iter_rows())
    assert flagged == {"ISIC_9000001": "hash", "ISIC_0000005": "id"}
    assert preds.filter(pl.col("image_id") == "ISIC_0000005")["mean"].is_finite().all()  # scored under its own id


def test_data_without_positives_is_exit_2_and_says_so(ham_run, ham_data, tmp_path):
    export = tmp_path / "negatives"
    write_archive(export, ham_data, planted={}, same_id=None, positives=False)
    res = CliRunner().invoke(cli, ["evaluate", str(ham_run), str(export), "--out", str(tmp_path / "ev"), "--allow-missing-features"])
    assert res.exit_code == 2 and "no positives" in res.output


def test_one_patient_has_no_intervals_and_says_so(ham_run, archive, tmp_path):
    table, _ = ingest("isic-archive", archive[0])
    one = LesionTable(table.df.with_columns(pl.lit("P1").alias("patient_id")), table.meta)
    e = evaluate_run(ham_run, one, tmp_path / "ev", allow_missing_features=True, near_threshold=NEAR)
    assert e["n_units"] == 1 and any("one patient" in n for n in e["notes"])
    assert e["models"]["mean"]["roc_auc"]["ci95"] == [None, None]
    assert e["models"]["mean"]["roc_auc"]["value"] is not None


def test_labels_and_vocabulary_of_a_lesion_table(ham_run, archive, tmp_path):
    """A LesionTable in HAM10000's own vocabulary: diagnoses as labels, site values written another way."""
    table, _ = ingest("isic-archive", archive[0])
    df = table.df.with_columns(pl.lit("lower_extremity").alias("localization"),
                               pl.when(pl.col("target") == 1).then(pl.lit("Melanoma in situ")).otherwise(pl.lit("verruca")).alias("label"))
    path = tmp_path / "new.parquet"
    LesionTable(df, table.meta).write(path)
    e = evaluate_run(ham_run, path, tmp_path / "ev", near_threshold=NEAR)
    assert e["vocabulary"]["localization"]["mapped"] == {"lower_extremity": "lower extremity"}
    assert not e["missing_features"] and e["labels"]["skipped"] == {}  # binary malignant: the target column


def test_out_is_never_a_run_directory_or_a_folder_of_the_users(ham_run, archive, tmp_path):
    with pytest.raises(DermstackError, match="inside the run directory"):
        evaluate_run(ham_run, archive[0], ham_run / "evaluation", allow_missing_features=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DermstackError, match="not empty"):
        evaluate_run(ham_run, archive[0], mine, allow_missing_features=True)
    assert (mine / "notes.txt").read_text() == "mine"


def test_unknown_layout_asks_for_the_format(ham_run, tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "labels.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="--format"):
        evaluate_run(ham_run, tmp_path / "odd", tmp_path / "ev")


#: run after the page's own script: where the summary ends
PROBE = """<script>
var s = document.getElementById("summary").getBoundingClientRect();
document.body.dataset.summaryBottom = s.bottom;
</script></body>"""


def test_page_summary_first_and_self_contained_in_chromium(evaluation, tmp_path):
    out, e = evaluation
    page = (out / "evaluation.html").read_text()
    assert page.index('id="summary"') < page.index('id="models"') < page.index('id="overlap"')
    assert re.findall(r"<script[^>]*>", page) == ["<script>"] and "http://" not in page and "https://" not in page
    summary = page[page.index('id="summary"'):page.index('id="models"')]
    for words in ("2 rows are the run", "Gap", "out of fold", "realised sens.", "guaranteed", "Worst subgroup"):
        assert words in summary
    exe = browser.find_chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    probe = tmp_path / "evaluation.html"
    probe.write_text(page.replace("</body>", PROBE))
    dom = browser.dump_dom(probe, exe=exe)
    assert dom.console == [], dom.console
    bottom = float(re.search(r'data-summary-bottom="([^"]*)"', dom.dom).group(1))
    assert 0 < bottom <= browser.SCREEN[1]  # the first screen holds the summary


def test_compare_pairs_two_evaluations_on_the_same_rows(ham_run, archive, evaluation, tmp_path):
    out, e = evaluation
    other = tmp_path / "ev-lightgbm"
    shutil.copytree(out, other)
    res = CliRunner().invoke(cli, ["compare", str(out), str(other), "--model", "mean", "--model", "lightgbm",
                                   "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["n_rows"] == 24 and "external" in result
    c = result["comparisons"][0]["metrics"]["pauc_tpr80"]
    assert c["difference"] == pytest.approx(e["models"]["lightgbm"]["pauc_tpr80"]["value"] - e["models"]["mean"]["pauc_tpr80"]["value"])
    res = CliRunner().invoke(cli, ["compare", str(out), str(ham_run), "--out", str(tmp_path / "cmp2")])
    assert res.exit_code == 2 and "not both" in res.output


def test_run_records_and_warns_about_duplicates_across_folds(ham_run):
    audit = json.loads((ham_run / "metrics.json").read_text())["audit"]
    folds = pl.read_parquet(ham_run / "folds.parquet").select("image_id", "fold")
    rows = pl.read_parquet(ham_run / "lesions.parquet").join(folds, on="image_id").select("image_id", "lesion_id", "image_sha256", "fold")
    pairs = rows.join(rows, on="image_sha256").filter((pl.col("image_id") < pl.col("image_id_right"))
                                                      & (pl.col("fold") != pl.col("fold_right")))
    assert set(pairs["lesion_id"].to_list()) | set(pairs["lesion_id_right"].to_list()) <= {
        f"HAM_{k:07d}" for k in [*DUPLICATED, *DUPLICATED.values()]}  # the planted repeats, nothing else
    assert audit["checked"]["hash"] is True and audit["checked"]["near"] is True
    assert 0 < pairs.height == audit["counts"]["hash"] == sum(x["how"] == "hash" for x in audit["examples"])
    shown = {frozenset((x["image_id"], x["other_image_id"])) for x in audit["examples"]}
    assert {frozenset(p) for p in pairs.select("image_id", "image_id_right").iter_rows()} <= shown
    assert np.isfinite([x["similarity"] for x in audit["examples"]]).all()


def test_operating_points_read_the_runs_thresholds_and_say_whether_the_guarantee_held():
    """metrics.json ``clinical`` entries with their empirical and guaranteed thresholds (and, for
    several classes, ``thresholds.one_vs_rest``), each applied unchanged to the new data."""
    from dermstack.external.figures import Sample, operating_figures

    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(np.int8)
    s = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    entry = {"value": 0.5, "target_sensitivity": 0.8, "threshold": 0.45, "sensitivity": 0.81, "specificity": 0.5,
             "guaranteed": {"threshold": 0.35, "delta": 0.05, "sensitivity": 0.9, "specificity": 0.4, "confidence": 0.97}}
    metrics = {"task": "binary", "clinical": {"specificity_at_sensitivity_80": entry,
                                              "flagged_per_cancer_at_sensitivity_80": entry,  # the same thresholds
                                              "sensitivity_at_specificity_90": {"target_specificity": 0.9, "threshold": 0.9,
                                                                                "sensitivity": 0.3, "specificity": 0.9}}}
    new = Sample("binary", y, {"final": s}, np.arange(300), 50, 0)
    ops = operating_figures(metrics, y, s, new, "final", ["target"])
    assert [(op["kind"], op["threshold"]) for op in ops] == [("empirical", 0.45), ("guaranteed", 0.35), ("empirical", 0.9)]
    for op in ops:
        realised = float(((s >= op["threshold"]) & (y == 1)).sum() / y.sum())
        assert op["sensitivity"]["value"] == pytest.approx(realised)
        which, q = next(iter(op["target"].items()))
        assert op["held"] == (op[which]["value"] >= q)
    assert ops[1]["delta"] == 0.05 and "probability >= 0.95" in ops[1]["rule"]
    # several classes: one vs the rest per class, and the macro-F1 rule
    labels = rng.integers(0, 3, 300)
    scores = rng.dirichlet(np.ones(3), 300)
    multi = {"task": "multiclass", "thresholds": {"rule": "argmax(score * weight)", "thresholds": [1.0, 1.0, 1.0], "f1_after": 0.3,
                                                  "one_vs_rest": {"b": {"specificity_at_sensitivity_80": entry}}}}
    ops = operating_figures(multi, labels, scores, Sample("multiclass", labels, {"final": scores}, np.arange(300), 50, 0), "final",
                            ["a", "b", "c"])
    assert [op.get("class") for op in ops] == ["b", "b", None] and "macro_f1" in ops[-1]
    assert ops[0]["sensitivity"]["value"] == pytest.approx(((scores[:, 1] >= 0.45) & (labels == 1)).sum() / (labels == 1).sum())


def test_missing_feature_columns_name_the_keyword_in_python(ham_run, archive, tmp_path):
    """The API's error names its keyword argument, not the command's flag (one message, two spellings)."""
    import dermstack as ds

    with pytest.raises(ds.DataError, match="localization") as e:
        ds.load(ham_run).evaluate(archive[0], out=tmp_path / "ev")
    assert "pass allow_missing_features=True to score" in str(e.value) and "--allow" not in str(e.value)
