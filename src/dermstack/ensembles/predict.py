"""Inference on new data with a finished run's saved models only: nothing is retrained.

Steps: read the new data (a LesionTable parquet, or a dataset folder through the run's reader);
embed the new images with the run's backbones into a copy of the run's EmbeddingStore (the store
appends only images it lacks); build features over the run's training rows plus the new rows, so
the embedding PCA is fitted on exactly the run's training rows again and patient features of a new
lesion only look at its own patient's new rows; score with every saved model (boosters, CNNs,
stacked boosters with their nested CNNs' mean score); then the run's ensemble.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.errors import DataError

log = logging.getLogger(__name__)


def read_new_data(cfg: RunConfig, data: str | Path | LesionTable, strict: bool = False) -> LesionTable:
    """A LesionTable as given, from parquet, or read by the run's ``[data] format`` reader."""
    if isinstance(data, LesionTable):
        return data
    path = Path(data)
    if path.suffix == ".parquet":
        return LesionTable.read(path)
    from dermstack.data.readers import ingest

    fmt = "isic2024" if cfg.data.format == "synthetic-isic2024" else cfg.data.format
    table, report = ingest(fmt, path, strict=strict)
    log.info("read new data: %s", report.summary())
    return table


def combined_table(run_table: LesionTable, new: LesionTable) -> LesionTable:
    """The run's training rows plus every new row as a ``test`` row (an id both have is an error)."""
    train = run_table.train
    clash = new.df.join(train.select("image_id"), on="image_id", how="semi")["image_id"].to_list()
    if clash:
        raise DataError(f"{len(clash)} new image ids are training rows of this run, e.g. {clash[:5]}", column="image_id")
    rows = new.df.with_columns(pl.lit("test").alias("split"))
    common = [c for c in train.columns if c in rows.columns]
    df = pl.concat([train, rows.select(common)], how="diagonal_relaxed").select(train.columns)
    return LesionTable(df, run_table.meta)


def _features(cfg: RunConfig, run_dir: Path, table: LesionTable, work: Path):
    from dermstack.features.build import build_features

    store = None
    if cfg.extract.backbones:
        from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings

        h5 = work / "embeddings.h5"
        if (run_dir / "embeddings.h5").exists():
            shutil.copyfile(run_dir / "embeddings.h5", h5)
        extract_embeddings(table, list(cfg.extract.backbones), h5, ExtractSettings.from_config(cfg.extract))
        store = EmbeddingStore(h5)
    return build_features(table, cfg.features, store, pca_components=cfg.extract.pca_components)


def _long(name: str, classes: list[str], ids: list[str], scores: np.ndarray) -> pl.DataFrame:
    from dermstack.boosting.cv import test_frame

    return test_frame(name, classes, ids, np.reshape(scores, (len(ids), len(classes))))


def _nested_cnn_mean(model_dir: Path, table: LesionTable) -> tuple[str, np.ndarray]:
    """The mean score of a CNN's pair models (what stacked boosters saw for test rows)."""
    from dermstack.ensembles.cnn import NetTemplate, CNNConfig, CNNTrainer, image_refs, load_net, read_cnn_spec

    spec = read_cnn_spec(model_dir)
    cfg = CNNConfig(**spec["config"])
    n_out = 1 if spec["task"] == "binary" else len(spec["classes"])
    files = sorted((model_dir / "nested").glob("without*_seed*.safetensors"))
    if not files:
        raise DataError("no nested pair models: the stacked booster cannot be applied", file=str(model_dir / "nested"))
    nets = [load_net(spec["arch"], n_out, f) for f in files]
    trainer = CNNTrainer(cfg, spec["task"], n_out, image_refs(table.df), template=NetTemplate(
        nets[0], spec["arch"], tuple(spec["mean"]), tuple(spec["std"]), spec["weights"]))
    rows = np.arange(len(table))
    return spec["name"], np.mean([trainer.score(net, rows) for net in nets], axis=0)


def predict_run(run_dir: str | Path, data: str | Path | LesionTable, strict: bool = False) -> pl.DataFrame:
    """Long predictions (image_id, model, class, score) of every saved model and the run's final
    model (``metrics.json`` ``oof_model``) for every row of ``data``."""
    from dermstack.boosting.store import predict_saved, read_spec
    from dermstack.ensembles.cnn import predict_cnn_saved
    from dermstack.ensembles.stacking import CNNViews, load_level2, score_tensor
    from dermstack.features.featureset import FeatureSet

    run_dir = Path(run_dir)
    for need in ("config.toml", "lesions.parquet", "metrics.json", "models"):
        if not (run_dir / need).exists():
            raise DataError(f"not a finished dermstack run directory (no {need})", file=str(run_dir))
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    classes = list(run_metrics["classes"])
    new = read_new_data(cfg, data, strict)
    table = combined_table(LesionTable.read(run_dir / "lesions.parquet"), new)
    ids = new.df["image_id"].to_list()
    new_table = LesionTable(table.test, table.meta)
    with tempfile.TemporaryDirectory(prefix="dermstack-predict-") as tmp:
        fs = _features(cfg, run_dir, table, Path(tmp))
    fs = FeatureSet(fs.df.filter(pl.col("split") == "test"), fs.groups, fs.categorical, fs.info)
    base: dict[str, pl.DataFrame] = {}
    level2_dirs = []
    stacked = []
    for mdir in sorted(p for p in (run_dir / "models").iterdir() if p.is_dir()):
        if (mdir / "level2.json").exists():
            level2_dirs.append(mdir)
        elif (mdir / "model.json").exists():
            spec = json.loads((mdir / "model.json").read_text())
            if spec.get("kind") == "cnn":
                base[spec["name"]] = _long(spec["name"], classes, ids, predict_cnn_saved(mdir, new_table))
            elif "cnn" in set(spec["features"].get("groups", {}).values()):
                stacked.append((mdir, read_spec(mdir)))
            else:
                base[spec["name"]] = _long(spec["name"], classes, ids, predict_saved(mdir, fs))
    for mdir, spec in stacked:
        cnn_name = spec["name"].split("+", 1)[1]
        _, scores = _nested_cnn_mean(run_dir / "models" / cnn_name, new_table)
        views = CNNViews(cnn_name, classes, [], np.zeros((1, 0, len(classes))), ids, np.reshape(scores, (len(ids), -1)))
        from dermstack.ensembles.stacking import cnn_feature_frame, patient_key

        with_cnn = fs.add(cnn_feature_frame(views, 0, patient_key(new_table)), "cnn")
        base[spec["name"]] = _long(spec["name"], classes, ids, predict_saved(mdir, with_cnn))
    out = dict(base)
    for mdir in level2_dirs:
        learner = load_level2(mdir)
        missing = [m for m in learner.models if m not in base]
        if missing:
            raise DataError(f"level-2 model needs base models {missing} that have no saved models", file=str(mdir))
        X = score_tensor([base[m] for m in learner.models], learner.models, ids, classes, "new-data")
        out[learner.method] = _long(learner.method, classes, ids, learner.predict(X))
    final = run_metrics.get("oof_model")
    if final and final not in out and final == "mean":
        chosen = cfg.ensemble.models or list(base)
        out["mean"] = pl.concat([base[m] for m in chosen]).group_by("image_id", "class", maintain_order=True).agg(
            pl.col("score").mean()).with_columns(pl.lit("mean").alias("model")).select("image_id", "model", "class", "score")
    if final and final not in out:
        raise DataError(f"the run's final model {final!r} has no saved models to predict with", file=str(run_dir / "models"))
    return pl.concat(list(out.values()), how="vertical_relaxed")
