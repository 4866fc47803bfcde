"""Every model kind under every task and ensemble method, through ``dermstack run``, on data with no
test rows, a few and many (tiny images, timm's test backbone, one epoch); degenerate labels get one
clear error or warning whatever the kind."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from dermstack.calibration import calibrated_model
from dermstack.clinical.operating import top_k_sensitivity
from dermstack.config import RunConfig
from dermstack.data import readers
from dermstack.data.table import LesionTable
from dermstack.ensembles.predict import predict_run
from dermstack.errors import DataError
from dermstack.metrics import evaluate
from dermstack.predictions import ModelResult
from dermstack.reports.rundata import RunData
from dermstack.run import Run
from ensembles_toy import image_table
from extract_fixtures import TEST_MODEL

TASKS = ["binary", "multiclass", "multilabel"]
N_TRAIN, MAX_TEST = 30, 12
CONFIG = """
[data]
format = "lesion-table"
path = "{path}"
task = "{task}"

[cv]
n_splits = 3

[extract]
backbones = ["{model}"]
image_size = 32
pca_components = 4
weights = {{ {model} = "{weights}" }}

[[models]]
kind = "lightgbm"
params = {{ n_estimators = 20, threads = 1 }}

[[models]]
kind = "xgboost"
params = {{ n_estimators = 20, threads = 1 }}

[[models]]
kind = "catboost"
params = {{ n_estimators = 20, threads = 1 }}

[[models]]
kind = "logistic"

[[models]]
kind = "mlp"
params = {{ hidden = [8], epochs = 5, inner_splits = 2 }}

[[models]]
kind = "cnn"
backbone = "{model}"
image_size = 32
epochs = 1
params = {{ pretrained = false, samples_per_epoch = 32, batch_size = 16 }}

[ensemble]
method = "{method}"
"""
#: the base models of CONFIG: every kind, and the boosters again with the CNN feature
MODELS = ["lightgbm", "xgboost", "catboost", "logistic", "mlp", "cnn", "lightgbm+cnn", "xgboost+cnn", "catboost+cnn"]


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    """A reader of LesionTable parquet files (the test's own tables), and one torch thread (tiny tensors)."""
    monkeypatch.setitem(readers.READERS, "lesion-table", lambda path, report: LesionTable.read(path))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> LesionTable:
    """30 training and 12 test images; each test below keeps the first n of the test rows."""
    return image_table(tmp_path_factory.mktemp("img"), n=N_TRAIN, n_test=MAX_TEST)


def with_test_rows(table: LesionTable, n_test: int) -> LesionTable:
    test = pl.col("split") == "test"
    return LesionTable(table.df.filter(~test | (test.cum_sum() <= n_test)), table.meta)


def run(root: Path, table: LesionTable, task: str, method: str, weights: Path) -> dict:
    root.mkdir(exist_ok=True)
    table.write(root / "lesions.parquet")
    (root / "config.toml").write_text(CONFIG.format(path=root / "lesions.parquet", task=task, method=method,
                                                    model=TEST_MODEL, weights=weights))
    return Run(RunConfig.from_toml(root / "config.toml"), root / "out").execute()


@pytest.mark.parametrize("n_test", [0, 3, MAX_TEST])
@pytest.mark.parametrize("task", TASKS)
def test_every_kind_and_ensemble_method_with_any_number_of_test_rows(tmp_path, images, test_weights, task, n_test):
    table = with_test_rows(images, n_test)
    n_classes = 1 if task == "binary" else 3
    out = tmp_path / "out"
    # auto: the best member, mean, greedy and stack, each saved; then rank and none on the same models
    m = run(tmp_path, table, task, "auto", test_weights)
    assert (m["n_train"], m["n_test"]) == (N_TRAIN, n_test) and list(m["models"]) == MODELS
    assert set(m["ensemble"]["candidates"]) == {f"best member: {m['ensemble']['best_member']}", "mean", "greedy", "stack"}
    if n_test:
        test = pl.read_parquet(out / "test_predictions.parquet")
        for name in [*MODELS, m["oof_model"], "calibrated"]:
            scores = test.filter(pl.col("model") == name)["score"]
            assert scores.len() == n_test * n_classes and scores.is_between(0, 1).all(), name
    else:
        assert not (out / "test_predictions.parquet").exists()
    if n_test == 3:  # calibration never costs ranking, whichever ensemble is calibrated
        assert_calibration_keeps_ranking(out, ["mean", "greedy", "stack"])
    if n_test in (0, 3):  # the saved models (prior factors, calibrator, pair CNNs) reproduce the run's test scores
        got = predict_run(out, LesionTable(table.test, table.meta))
        if n_test:
            want = pl.read_parquet(out / "test_predictions.parquet")
            both = want.join(got, on=["image_id", "model", "class"], how="left", suffix="_again")
            np.testing.assert_allclose(both["score_again"].to_numpy(), both["score"].to_numpy(), atol=1e-5)
        else:
            assert got.height == 0
    for method, final in (("rank", "rank"), ("none", "lightgbm")):
        m = run(tmp_path, table, task, method, test_weights)
        assert m["oof_model"] == final and m["n_test"] == n_test
        if n_test:
            test = pl.read_parquet(out / "test_predictions.parquet")
            assert test.filter(pl.col("model") == final).height == n_test * n_classes
        if n_test == 3:
            assert_calibration_keeps_ranking(out, [final])


def ranking(run: RunData, scores: np.ndarray) -> dict:
    """What calibration must not move: binary ROC-AUC, pAUC and top-15 per patient; multi-label every
    class's macro ROC-AUC; multiclass each row's argmax (macro F1, balanced accuracy), which
    temperature scaling keeps (a class's one-vs-rest order it need not keep: dermstack.calibration)."""
    kind, y = run.task.kind, run.task.y
    got = evaluate(kind, y, scores)
    if kind == "binary":
        return {**got, "top_15": top_k_sensitivity(y, scores, run.train["patient_id"].to_numpy())}
    if kind == "multilabel":  # its macro F1 is of the 0.5 threshold, which calibration moves (it submits raw scores)
        return {"macro_roc_auc": got["macro_roc_auc"]}
    return {k: got[k] for k in ("macro_f1", "balanced_accuracy")} | {"argmax": scores.argmax(1).tolist()}


def assert_same_ranking(run: RunData, calibrated: np.ndarray, raw: np.ndarray, name: str) -> None:
    """Every column of ``calibrated`` in the order of ``raw`` (binary, multi-label; ties only where two
    scores within float resolution of 1 meet) and the ranking metrics equal up to float summation."""
    if run.task.kind != "multiclass":
        c, r = calibrated.reshape(len(raw), -1), raw.reshape(len(raw), -1)
        for j in range(r.shape[1]):
            assert np.all(np.diff(c[np.argsort(r[:, j], kind="stable"), j]) >= 0), (name, j)
    got, want = ranking(run, calibrated), ranking(run, raw)
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want), (name, got, want)


def assert_calibration_keeps_ranking(out: Path, methods: list[str]) -> None:
    """The run's calibrated model ranks as its final model, and so does every ``methods`` ensemble's
    model of ``out`` through its own calibrator."""
    run = RunData.load(out)
    assert_same_ranking(run, run.scores("calibrated"), run.scores(run.final_model), "calibrated")
    for name in methods:
        cal = calibrated_model(ModelResult.read(out / "models" / name, name), run.task, run.folds)
        assert_same_ranking(run, cal.oof.matrix(run.task.image_ids, run.task.classes), run.scores(name), name)


# -- degenerate labels: the same error or warning, raised before any model kind is fitted ------------
def relabel(table: LesionTable, rows: pl.Expr, label: str) -> LesionTable:
    """``table`` with the training rows ``rows`` moved to class ``label`` (label, one-hot and binary target)."""
    rows = rows & (pl.col("split") == "train")
    df = table.df.with_columns(pl.when(rows).then(pl.lit(label)).otherwise(pl.col("label")).alias("label"))
    df = df.with_columns([pl.when(pl.col("split") == "train").then((pl.col("label") == c).cast(pl.Int64))
                          .otherwise(pl.col(f"y_{c}")).alias(f"y_{c}") for c in ("A", "B", "C")]
                         + [pl.when(pl.col("split") == "train").then((pl.col("label") == "B").cast(pl.Int8))
                            .otherwise(pl.col("target")).alias("target")])
    return LesionTable(df, table.meta)


def one_class(table: LesionTable) -> LesionTable:
    return relabel(table, pl.lit(True), "A")


def one_member(table: LesionTable) -> LesionTable:
    """Classes B (the binary positive) and C keep one training row each."""
    train = table.df.filter(pl.col("split") == "train")
    keep = [train.filter(pl.col("label") == c)["image_id"][0] for c in ("B", "C")]
    return relabel(table, pl.col("label").is_in(["B", "C"]) & ~pl.col("image_id").is_in(keep), "A")


@pytest.mark.parametrize("task", TASKS)
def test_a_single_class_is_one_data_error_for_every_task(tmp_path, images, test_weights, task):
    with pytest.raises(DataError, match=f"{'binary target' if task == 'binary' else task + ' task'}.* has a single class"):
        run(tmp_path, one_class(with_test_rows(images, 0)), task, "auto", test_weights)


def test_a_binary_class_with_one_member_is_a_fold_without_positives(tmp_path, images, test_weights, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match=r"fold \d: the training part has no \[1\] rows"):
        run(tmp_path, one_member(with_test_rows(images, 0)), "binary", "auto", test_weights)
    assert "fewer than the 3 folds" in caplog.text


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_class_with_one_member_is_a_warning_and_every_kind_still_runs(tmp_path, images, test_weights, caplog, task):
    with caplog.at_level(logging.WARNING):
        m = run(tmp_path, one_member(with_test_rows(images, 0)), task, "auto", test_weights)
    assert list(m["models"]) == MODELS
    lacking = ("['B']", "['C']") if task == "multiclass" else ("['positive B']", "['positive C']")
    assert "rows per class" in caplog.text and "fewer than the 3 folds" in caplog.text
    fold_warnings = [r.getMessage() for r in caplog.records if "training part has no" in r.getMessage()]
    assert fold_warnings and all(w.count("[") == 1 and any(c in w for c in lacking) and "from the other classes only" in w
                                 for w in fold_warnings)
