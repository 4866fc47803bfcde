"""Every registered model kind (plugins included) under every task and every registered ensemble
method, through ``dermstack run``, with the smoke parameters each kind declares (tiny images, timm's
test backbone); empty, few and many test rows; degenerate labels get one clear error or warning
whatever the kind."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import dermstack as ds
from dermstack.calibration import calibrated_model
from dermstack.clinical.operating import top_k_sensitivity
from dermstack.config import RunConfig
from dermstack.data import readers
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.metrics import evaluate
from dermstack.outputs.predict import predict_run
from dermstack.predictions import ModelResult
from dermstack.registry import auto_candidates, method_names, model_kinds
from dermstack.reports.rundata import RunData
from dermstack.run import Run
from dermstack.testing import smoke_model
from ensembles_toy import image_table
from extract_fixtures import TEST_MODEL
from tiny_runs import TinyRuns, embedded

TASKS = ["binary", "multiclass", "multilabel"]
N_TRAIN, MAX_TEST = 30, 12
#: (task, test rows): each task once and each count once. The degenerate-label runs below add empty test
#: sets of the multi-output tasks; the binary task with test rows runs in many other modules.
CASES = [("binary", 0), ("multiclass", 3), ("multilabel", MAX_TEST)]


def every_kind() -> list[dict]:
    """A ``[[models]]`` entry of each registered kind, made cheap by its own smoke keys; an image kind
    (one with a ``backbone`` key) on timm's test backbone, not pretrained."""
    entries = []
    for kind in model_kinds().values():
        m = smoke_model(RunConfig.from_dict({"models": [{"kind": kind.name}]}).models[0])
        entry = {"kind": m.kind, "params": dict(m.params), **{k: getattr(m, k) for k in kind.model_keys if getattr(m, k) is not None}}
        if "backbone" in kind.model_keys:
            entry["backbone"] = TEST_MODEL
            entry["params"] |= {"pretrained": False} if "pretrained" in {f for f in kind.params.__dataclass_fields__} else {}
        entries.append(entry)
    return entries


def config(path: Path, task: str, method: str, weights: Path) -> dict:
    return {"data": {"format": "lesion-table", "path": str(path), "task": task},
            "extract": embedded(weights), "models": every_kind(), "ensemble": {"method": method}}


def expected_models(cfg: dict) -> list[str]:
    """The base models of a config: every kind, and the boosters again with the feature group a kind gives."""
    run_cfg = RunConfig.from_dict(TinyRuns.raw(**cfg))
    return [m.label for m in run_cfg.models] + run_cfg.feature_group_models()


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
    path = TinyRuns.write(root / "config.toml", **config(root / "lesions.parquet", task, method, weights))
    return Run(RunConfig.from_toml(path), root / "out").execute()


@pytest.mark.slow
@pytest.mark.parametrize("task,n_test", CASES)
def test_every_kind_and_ensemble_method_with_any_number_of_test_rows(tmp_path, images, test_weights, task, n_test):
    table = with_test_rows(images, n_test)
    n_classes = 1 if task == "binary" else 3
    out = tmp_path / "out"
    models = expected_models(config(tmp_path / "lesions.parquet", task, "auto", test_weights))
    # auto: the best member and every auto candidate, each saved
    m = run(tmp_path, table, task, "auto", test_weights)
    assert (m["n_train"], m["n_test"]) == (N_TRAIN, n_test) and list(m["models"]) == models
    assert set(m["ensemble"]["candidates"]) == {f"best member: {m['ensemble']['best_member']}", *auto_candidates()}
    if n_test:
        test = pl.read_parquet(out / "test_predictions.parquet")
        for name in [*models, m["oof_model"], "calibrated"]:
            scores = test.filter(pl.col("model") == name)["score"]
            assert scores.len() == n_test * n_classes and scores.is_between(0, 1).all(), name
    else:
        assert not (out / "test_predictions.parquet").exists()
    # calibration never costs ranking, whichever ensemble is calibrated
    assert_calibration_keeps_ranking(out, auto_candidates())
    # the saved models (prior factors, calibrator, pair CNNs) reproduce the run's test scores, on the rows of
    # two patients (whole patients: the patient-relative features of new rows are those of the rows given)
    few = with_test_rows(table, 3).test
    if n_test:
        patients = table.test["patient_id"].unique(maintain_order=True).head(2)
        few = table.test.filter(pl.col("patient_id").is_in(patients.implode()))
    got = predict_run(out, LesionTable(few, table.meta))
    if n_test:
        want = pl.read_parquet(out / "test_predictions.parquet").filter(pl.col("image_id").is_in(few["image_id"].implode()))
        both = want.join(got, on=["image_id", "model", "class"], how="left", suffix="_again")
        assert both.height == few.height * n_classes * want["model"].n_unique() and both["score_again"].null_count() == 0
        for (name,), scores in both.group_by("model"):
            np.testing.assert_allclose(scores["score_again"].to_numpy(), scores["score"].to_numpy(), atol=1e-5, err_msg=name)
        fitted = ds.load(out)  # scikit-learn's (n, C), in the row order of predict
        proba = fitted.predict_proba(LesionTable(few, table.meta))
        assert proba.shape == (few.height, 2 if task == "binary" else n_classes)
        submitted = fitted.metrics["submission_model"]  # the calibrated final model only where calibration is submitted
        assert (submitted == "calibrated") == (task == "binary")
        scores = got.filter(pl.col("model") == submitted).pivot(on="class", index="image_id", values="score")
        rows = fitted.predict(LesionTable(few, table.meta)).select("image_id").join(scores, on="image_id", how="left")
        want = rows.select(fitted.metrics["classes"]).to_numpy()
        np.testing.assert_allclose(proba[:, 1:] if task == "binary" else proba, want, atol=1e-6)
    else:
        assert got.height == 0
        assert ds.load(out).predict_proba(LesionTable(few, table.meta)).shape == (0, 2 if task == "binary" else n_classes)
    # every other method on the same models (their stages are current: only the ensemble is fitted)
    for method in [x for x in method_names() if x != "auto" and x not in auto_candidates()]:
        m = run(tmp_path, table, task, method, test_weights)
        final = models[0] if method == "none" else method
        assert m["oof_model"] == final and m["n_test"] == n_test
        if n_test:
            test = pl.read_parquet(out / "test_predictions.parquet")
            assert test.filter(pl.col("model") == final).height == n_test * n_classes
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


@pytest.mark.slow
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_class_with_one_member_is_a_warning_and_every_kind_still_runs(tmp_path, images, test_weights, caplog, task):
    with caplog.at_level(logging.WARNING):
        m = run(tmp_path, one_member(with_test_rows(images, 0)), task, "auto", test_weights)
    assert list(m["models"]) == expected_models(config(tmp_path / "lesions.parquet", task, "auto", test_weights))
    lacking = ("['B']", "['C']") if task == "multiclass" else ("['positive B']", "['positive C']")
    assert "rows per class" in caplog.text and "fewer than the 3 folds" in caplog.text
    fold_warnings = [r.getMessage() for r in caplog.records if "training part has no" in r.getMessage()]
    assert fold_warnings and all(w.count("[") == 1 and any(c in w for c in lacking) and "from the other classes only" in w
                                 for w in fold_warnings)
