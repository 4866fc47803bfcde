"""`dermstack evaluate RUN_DIR DATA --out DIR`: a finished run's saved models on another labelled dataset.

Steps, in order: read DATA (a dataset folder in any format, detected from its files or given by
``fmt``, or a LesionTable parquet); map its labels onto the run's task
(:mod:`dermstack.external.labels`); list the run's feature columns it lacks, with the models that
read them (an error unless ``allow_missing_features``), and write its categorical values as the run
wrote them (:mod:`dermstack.external.inputs`); embed its images with the run's backbones; audit it
against the run's training rows (:mod:`dermstack.data.audit`: image id, lesion, patient, identical
bytes, near-duplicate embeddings) and leave the rows found out of every figure unless
``keep_overlap``; score the rest with every saved model through ``predict``'s path (nothing is
retrained); then the figures (:mod:`dermstack.external.figures`). Writes ``predictions.parquet``,
``lesions.parquet`` (the rows evaluated, as read), ``evaluation.json`` and ``evaluation.html``.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import read_json, write_json, write_parquet
from dermstack.clinical_report import N_BOOT, SEED, bootstrap_units
from dermstack.config import RunConfig
from dermstack.data.audit import NEAR_THRESHOLD, AuditRows, find_pairs, read_embeddings, strongest
from dermstack.data.readers.content import with_digests
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable, split_key
from dermstack.errors import DataError, DermstackError
from dermstack.external.figures import (
    Sample,
    calibration_figures,
    model_figures,
    operating_figures,
    subgroup_figures,
    unguaranteed,
)
from dermstack.external.inputs import map_vocabulary, missing_features
from dermstack.external.labels import MappedLabels, label_frame, map_labels
from dermstack.outputs.predict import API_ALLOW_MISSING
from dermstack.rundir import claim_dir, enclosing_run_dir
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: what ``evaluate`` writes into its ``--out`` folder
EVALUATION_FILES = ("evaluation.json", "evaluation.html", "predictions.parquet", "lesions.parquet")
#: appended to an external image id that is also a training image id of the run, while it is scored
CLASH_SUFFIX = "@external"


@dataclass
class External:
    """The new data as read: its rows, the reader's report (None for a LesionTable), the id space."""

    table: LesionTable
    report: IngestReport | None
    format: str | None
    source: str


def read_external(data, fmt: str | None, cfg: RunConfig, strict: bool = False) -> External:
    """DATA as a LesionTable: given, from parquet, or read by ``fmt`` (default: the format whose files the folder holds)."""
    from dermstack.data.readers import READERS, detect_format, ingest

    if isinstance(data, LesionTable):
        return External(data, None, data.meta.dataset, "(LesionTable)")
    if not isinstance(data, (str, os.PathLike)):  # a polars or pandas DataFrame of lesions
        table = LesionTable.from_frame(data, fmt or cfg.data.format)
        return External(table, None, table.meta.dataset, table.meta.source)
    path = Path(data)
    if not path.exists():
        raise DataError("no such file or folder", file=str(path))
    if path.suffix == ".parquet" and fmt is None:
        table = LesionTable.read(path)
        return External(table, None, table.meta.dataset, str(path))
    fmt = fmt or detect_format(path)
    if fmt is None:
        raise DataError(f"cannot tell the dataset format from the files here; give --format ({', '.join(READERS)})",
                        file=str(path))
    table, report = ingest(fmt, path, strict=strict, encoding=cfg.data.encoding if fmt == cfg.data.format else None)
    log.info("read %s", report.summary())
    return External(table, report, fmt, str(path))


def evaluation_folder(out: str | Path) -> Path:
    """``out`` claimed for the evaluation's files: never a folder holding files dermstack did not
    write, never inside a run directory (whose files its stage records list)."""
    run = enclosing_run_dir(out)
    if run is not None:
        raise DermstackError(f"{out}: inside the run directory {run}; give --out a folder outside it "
                             f"(e.g. {run.parent / (run.name + '-evaluation')})")
    folder = claim_dir(out, "evaluation folder", owned=EVALUATION_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _checked_labels(labels: MappedLabels, kind: TaskKind, source: str) -> None:
    """DATA whose labels cannot measure the task: none mapped, or (binary) one class only."""
    what = "rows evaluated" if labels.keep.all() else f"rows with a label in the run's task ({labels.keep.sum()})"
    if not labels.keep.any():
        raise DataError(f"no row has a label in the run's task: {labels.skipped}", file=source)
    if kind.binary and (labels.y.min() == labels.y.max()):
        which, undefined = ("positives", "sensitivity") if labels.y.max() == 0 else ("negatives", "specificity")
        raise DataError(f"the {what} have no {which}: {undefined}, ROC-AUC and pAUC are undefined without both classes",
                        file=source, column="target")


def _run_embeddings(cfg: RunConfig, run_dir: Path, ids: list[str]) -> tuple[np.ndarray | None, str | None]:
    """The run's embeddings of ``ids`` (first backbone, primary image; NaN rows where it has none)."""
    if not cfg.extract.backbones or not (run_dir / "embeddings.h5").exists():
        return None, None
    from dermstack.extract import EmbeddingStore

    return read_embeddings(EmbeddingStore(run_dir / "embeddings.h5"), cfg.extract.backbones[0], ids), cfg.extract.backbones[0]


def audit_overlap(cfg: RunConfig, run_dir: Path, run_table: LesionTable, new: LesionTable, new_emb: np.ndarray | None,
                  dataset: str, threshold: float) -> tuple[pl.DataFrame, dict]:
    """One row per new row found in the run's training rows: (row, image_id, train_image_id, how, also, similarity)."""
    train = with_digests(run_table.train)  # a run ingested before digests were recorded: its images hashed now
    run_emb, backbone = _run_embeddings(cfg, run_dir, train["image_id"].to_list())
    run_space = "synthetic-isic2024" if cfg.data.format == "synthetic-isic2024" else run_table.meta.dataset
    a = AuditRows.from_table(new.df, dataset, "new data", new_emb)
    b = AuditRows.from_table(train, run_space, "training rows", run_emb)
    pairs, checked = find_pairs(a, b, threshold)
    top = strongest(pairs)
    found = top.select(pl.col("a").alias("row"), a.df["image_id"].gather(top["a"]).alias("image_id"),
                       b.df["image_id"].gather(top["b"]).alias("train_image_id"), "how", "also", "similarity")
    return found, {"checked": checked, "near_threshold": threshold, "backbone": backbone, "pairs": pairs.height}


def evaluate_run(run_dir: str | Path, data, out: str | Path, *, fmt: str | None = None, keep_overlap: bool = False,
                 allow_missing_features: bool = False, near_threshold: float = NEAR_THRESHOLD, strict: bool = False,
                 n_boot: int = N_BOOT, seed: int = SEED, allow_missing_option: str = API_ALLOW_MISSING) -> dict:
    """Score ``data`` (labelled) with the run's saved models and measure them there (the module
    docstring); returns ``evaluation.json`` as a dict. ``out`` receives the files; ``allow_missing_option``
    is how the error of missing feature columns spells that option (the command passes its flag)."""
    from dermstack.external.page import write_page
    from dermstack.outputs.predict import as_run_rows, auto_segmented, embed_rows, missing_features_error, score_rows
    from dermstack.reports.rundata import RunData

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run = RunData.load(run_dir)  # checked current first: a damaged or changed run is refused
    for need in ("config.toml", "metrics.json"):
        if not (run_dir / need).exists():
            raise DataError(f"not a finished dermstack run directory (no {need})", file=str(run_dir))
    folder = evaluation_folder(out)
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    run_metrics = read_json(run_dir / "metrics.json", "run metrics")
    run_table = LesionTable.read(run_dir / "lesions.parquet")
    task, final = run.task, run_metrics["oof_model"]
    ext = read_external(data, fmt, cfg, strict)
    n_read = ext.report.rows_read if ext.report else len(ext.table)

    labels = map_labels(ext.table, task.kind, task.classes, task.target_name)
    _checked_labels(labels, task.kind, ext.source)
    missing = missing_features(run_table, ext.table, run_dir / "models")
    if missing and not allow_missing_features:
        shown = "; ".join(f"{c} (read by {', '.join(m) or 'no saved model'})" for c, m in missing.items())
        raise missing_features_error(len(missing), shown, allow_missing_option, ext.source, "; the figures then say so")
    new, vocabulary = map_vocabulary(run_table, LesionTable(ext.table.df.filter(pl.Series(labels.keep)), ext.table.meta))
    originals = new.df["image_id"].to_list()
    clash = set(run_table.df["image_id"].to_list())
    internal = [i + CLASH_SUFFIX if i in clash else i for i in originals]
    scoring = LesionTable(new.df.with_columns(pl.Series("image_id", internal, pl.String)), new.meta)

    with tempfile.TemporaryDirectory(prefix="dermstack-evaluate-") as tmp:
        table = as_run_rows(run_table, scoring, ext.source)
        store = embed_rows(cfg, run_dir, table, internal, Path(tmp))
        key = next((b for b in (store.backbones() if store else []) if not split_key(b)[1]), None)
        new_emb = read_embeddings(store, key, internal) if key else None
        overlap, audit = audit_overlap(cfg, run_dir, run_table, new, new_emb, ext.format or new.meta.dataset, near_threshold)
        flagged = np.zeros(len(originals), bool)
        flagged[overlap["row"].to_numpy()] = True
        scored = np.ones(len(originals), bool) if keep_overlap else ~flagged
        ids = [i for i, k in zip(internal, scored) if k]
        y = labels.y[scored]
        if not ids:
            raise DataError(f"every row of the data is the run's training data ({audit_counts(overlap)}); nothing to "
                            "evaluate (--keep-overlap scores them anyway, flagged)", file=ext.source)
        if task.kind.binary and y.min() == y.max():
            raise DataError(f"after leaving out {flagged.sum()} rows found in the run's training data, the rest have no "
                            f"{'positives' if y.max() == 0 else 'negatives'}: nothing to measure", file=ext.source)
        kept = LesionTable(scoring.df.filter(pl.Series(scored)), scoring.meta)
        scores = score_rows(cfg, run_dir, as_run_rows(run_table, kept, ext.source), ids, task.classes, Path(tmp), store)

    matrices = {name: task.squeeze(p.matrix(ids, task.classes, source=f"model {name}")) for name, p in scores.items()}
    rows_df = new.df.filter(pl.Series(scored))
    units, unit = bootstrap_units(LesionTable(rows_df, new.meta), rows_df["image_id"].to_list())
    new_sample = Sample(task.kind, y, matrices, units, n_boot, seed)
    oof_units, _ = bootstrap_units(run.table, task.image_ids)
    oof_sample = Sample(task.kind, task.y, {n: run.scores(n) for n in matrices if n in run.model_names}, oof_units, n_boot, seed)
    calibrated = "calibrated" if "calibrated" in matrices and final != "calibrated" else None
    notes = _notes(new_sample, missing, vocabulary, auto_segmented(cfg, run_table.df, rows_df)) + unguaranteed(run_metrics)
    evaluation = {
        "run": str(run_dir), "data": ext.source, "format": ext.format, "dataset": new.meta.dataset,
        "task": str(task.kind), "target": task.target_name if task.kind.binary else None, "classes": task.classes,
        "primary_metric": task.primary_metric, "final": final, "calibrated_model": calibrated,
        "n": len(ids), "n_positive": int(y.sum()) if task.kind.binary else None, "unit": unit,
        "n_units": new_sample.n_units, "bootstrap": {"n_boot": n_boot, "seed": seed},
        "models": model_figures(task.kind, new_sample, oof_sample),
        "calibration": calibration_figures(task.kind, y, matrices[final], matrices.get(calibrated) if calibrated else None,
                                           run_metrics.get("calibration")) | {"model": final, "calibrated_model": calibrated},
        "operating_points": operating_figures(run_metrics, task.y, run.scores(final), new_sample, final, task.classes),
        "subgroups": subgroup_figures(task.kind, rows_df, y, matrices[final], n_boot, seed, final),
        "overlap": [{"image_id": r["image_id"], "train_image_id": r["train_image_id"], "how": r["how"],
                     "similarity": _finite(r["similarity"]), "also": r["also"]} for r in overlap.iter_rows(named=True)],
        "overlap_policy": "kept and flagged (--keep-overlap)" if keep_overlap else "excluded from every figure",
        "audit": audit | {"counts": audit_counts(overlap)},
        "rows": _rows(n_read, ext, labels, flagged, keep_overlap, len(ids)),
        "labels": labels.to_dict(), "missing_features": missing, "vocabulary": vocabulary, "notes": notes,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _write(folder, evaluation, rows_df, new.meta, ids, originals, scored, y, matrices, overlap, task)
    write_page(folder / "evaluation.html", evaluation)
    log.info("evaluation of %s on %s: %d rows in %.1f s", run_dir, ext.source, len(ids), time.perf_counter() - t0)
    return evaluation


def audit_counts(overlap: pl.DataFrame) -> dict[str, int]:
    return dict(sorted(overlap.group_by("how").len().rows())) if overlap.height else {}


def _finite(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _notes(new: Sample, missing: dict, vocabulary: dict, segmented: int) -> list[str]:
    notes = []
    if segmented:
        notes.append(f"{segmented} images have no lesion mask: their mask image features (the run's came from given masks) "
                     "were measured on an automatic segmentation")
    if new.n_units < 2:
        notes.append("the rows evaluated come from one patient (or one lesion): no bootstrap interval can be estimated")
    if missing:
        notes.append(f"scored without {len(missing)} feature column(s) the run used ({', '.join(missing)}): "
                     "those models saw them as missing for every row")
    for column, v in vocabulary.items():
        if v["unseen"]:
            notes.append(f"{column}: values the run never saw in training (scored as unseen): "
                         + ", ".join(f"{k!r} ({n})" for k, n in v["unseen"].items()))
    return notes


def _rows(n_read: int, ext: External, labels: MappedLabels, flagged: np.ndarray, keep: bool, n_scored: int) -> dict:
    """``rows``: read, scored, left out as overlap, skipped, each with its reasons."""
    reasons: dict[str, int] = {}
    if ext.report:
        for s in ext.report.skipped:
            reasons[f"reader: {s.reason}"] = reasons.get(f"reader: {s.reason}", 0) + 1
    reasons |= labels.skipped
    skipped = sum(reasons.values())
    return {"read": n_read, "in_table": len(ext.table), "with_label": int(labels.keep.sum()),
            "excluded_overlap": 0 if keep else int(flagged.sum()), "flagged_overlap": int(flagged.sum()) if keep else 0,
            "scored": n_scored, "skipped": skipped, "reasons": reasons,
            "missing_images": len(ext.report.missing_images) if ext.report else None}


def _write(folder: Path, evaluation: dict, rows_df: pl.DataFrame, meta, ids, originals, scored, y, matrices, overlap,
           task) -> None:
    kept_ids = [o for o, k in zip(originals, scored) if k]
    how = dict(zip(overlap["image_id"].to_list(), overlap["how"].to_list()))
    cols = [pl.Series("image_id", kept_ids, pl.String), label_frame(y, task.kind, task.classes)]
    for name, s in matrices.items():
        if task.kind.binary:
            cols.append(pl.Series(name, s.astype(np.float64)))
        else:
            cols += [pl.Series(f"{name}:{c}", s[:, k].astype(np.float64)) for k, c in enumerate(task.classes)]
    cols.append(pl.Series("overlap", [how.get(i) for i in kept_ids], pl.String))
    extra = rows_df.select([c for c in ("lesion_id", "patient_id") if c in rows_df.columns])
    write_parquet(folder / "predictions.parquet", pl.DataFrame(cols).hstack(extra))
    LesionTable(rows_df, meta).write(folder / "lesions.parquet")
    write_json(folder / "evaluation.json", evaluation)
