"""Inference on new data with a finished run's saved models only: nothing is retrained.

Steps: read the new data (a LesionTable parquet, or a dataset folder through the run's reader);
embed the new images with the run's backbones; build their features with the run's fitted feature
transform (``features.transform.npz``: the embedding PCA and the columns dropped for leaky
missingness), next to the run's own lesions of the same patients, so a new lesion's patient
features look at every lesion of its patient as in the run; score with every saved model (boosters, CNNs,
stacked boosters with their nested CNNs' mean score); then the run's ensemble.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import read_json
from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.errors import DataError, clip
from dermstack.predictions import Predictions

log = logging.getLogger(__name__)


def read_new_data(cfg: RunConfig, data, strict: bool = False) -> LesionTable:
    """A LesionTable as given, of a polars or pandas DataFrame (:meth:`LesionTable.from_frame`), from
    parquet, or read by the run's ``[data] format`` reader."""
    if isinstance(data, LesionTable):
        return data
    if not isinstance(data, (str, os.PathLike)):
        return LesionTable.from_frame(data, cfg.data.format)
    path = Path(data)
    if path.suffix == ".parquet":
        return LesionTable.read(path)
    from dermstack.data.readers import ingest

    fmt = "isic2024" if cfg.data.format == "synthetic-isic2024" else cfg.data.format
    table, report = ingest(fmt, path, strict=strict, encoding=cfg.data.encoding)
    log.info("read new data: %s", report.summary())
    return table


#: how the option that scores data lacking feature columns is spelled: on the command line, in Python
CLI_ALLOW_MISSING, API_ALLOW_MISSING = "--allow-missing-features", "allow_missing_features=True"


def missing_features_error(n: int, listed: str, option: str, file: str | None, note: str = "") -> DataError:
    """The error of data lacking ``n`` feature columns of the run (``listed``), with the remedy as the
    caller spells it (``option``: :data:`CLI_ALLOW_MISSING` or :data:`API_ALLOW_MISSING`) and ``note``
    after it. The remedy comes before the list, which may be long enough to be clipped."""
    return DataError(f"the data lacks {n} feature column(s) the run's models were trained on (pass {option} to score "
                     f"with them missing{note}): {listed}", file=file)


def check_feature_columns(run_table: LesionTable, new: LesionTable, allow_missing: bool = False,
                          source: str | None = None, option: str = API_ALLOW_MISSING) -> list[str]:
    """The run's feature columns (``meta.feature_columns``) that the new data lacks. They would be
    filled with nulls and shift every score, so they are an error naming them and the option
    (:func:`missing_features_error`), unless ``allow_missing``, which logs a warning listing what was filled."""
    missing = [c for c in run_table.meta.feature_columns if c not in new.df.columns]
    if missing and not allow_missing:
        raise missing_features_error(len(missing), ", ".join(missing), option, source or new.meta.source or None)
    if missing:
        log.warning("new data lacks feature column(s) %s: filled with nulls (missing values) for every new row",
                    ", ".join(missing))
    return missing


def drop_training_rows(run_table: LesionTable, new: LesionTable, strict: bool = False, source: str | None = None) -> LesionTable:
    """``new`` without the run's own training rows (a dataset folder that grew since the run holds
    both). The saved models were fitted on those rows, so their scores there would be in-sample and
    look better than they are; their honest scores are the run's out-of-fold ones. Left out with a
    warning; ``strict`` makes it an error, as does data with nothing else in it."""
    clash = new.df.join(run_table.train.select("image_id"), on="image_id", how="semi")["image_id"].to_list()
    if not clash:
        return new
    msg = (f"{len(clash)} of {new.df.height} rows are training rows of this run, e.g. {clash[:5]}: their "
           "out-of-fold scores are in the run's oof.parquet")
    if strict or len(clash) == new.df.height:
        raise DataError(msg + ("" if len(clash) < new.df.height else "; nothing else to score"), file=source, column="image_id")
    log.warning("%s; left out, scoring the other %d rows", msg, new.df.height - len(clash))
    return LesionTable(new.df.filter(~pl.col("image_id").is_in(pl.Series(clash).implode())), new.meta)


def _cast_like(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    """``series`` as ``dtype``, a value that does not convert null. Text to Boolean as the readers read it
    (``csvio.truth``): polars has no such cast."""
    if series.dtype == pl.String and dtype == pl.Boolean:
        from dermstack.data.readers.csvio import truth

        return series.to_frame().select(truth(pl.col(series.name)).alias(series.name)).to_series()
    try:
        return series.cast(dtype, strict=False)
    except pl.exceptions.PolarsError:  # no conversion at all between the two types: nothing converts
        return pl.Series(series.name, [None] * len(series), dtype)


def as_run_dtypes(run_schema: pl.Schema, df: pl.DataFrame, source: str | None = None) -> pl.DataFrame:
    """``df``'s columns of the run's table in the run's types. A reader types a column from its
    values, so one that is empty in the new data (read as text) or typed otherwise would not stack
    onto the run's rows; an empty column converts as it is, a value that does not is an error naming it."""
    fixed = []
    for c, dtype in run_schema.items():
        if c not in df.columns or df.schema[c] == dtype:
            continue
        s = df[c]
        cast = _cast_like(s, dtype)
        lost = s.is_not_null() & cast.is_null()
        if lost.any():
            i = int(lost.arg_true()[0])
            # named by image_id: rows left out on reading make a row number of the table not the file's
            raise DataError(f"{clip(str(s[i]))!r} in the row of image_id {df['image_id'][i]!r} is not a {dtype} value, as the "
                            f"run's column is ({int(lost.sum())} row(s) like it)", file=source, column=c)
        fixed.append(cast)
    return df.with_columns(fixed) if fixed else df


def as_run_rows(run_table: LesionTable, new: LesionTable, source: str | None = None) -> LesionTable:
    """The new rows as ``test`` rows of the run's table (its columns, types and metadata:
    :func:`as_run_dtypes`), followed by the run's own rows of the same patients: patient features
    look at every lesion of a patient, as they did in the run. An id that is a training row of the
    run is an error."""
    from dermstack.features.patient import group_column

    train = run_table.train
    clash = new.df.join(train.select("image_id"), on="image_id", how="semi")["image_id"].to_list()
    if clash:
        raise DataError(f"{len(clash)} new image ids are training rows of this run, e.g. {clash[:5]}", column="image_id")
    rows = as_run_dtypes(run_table.df.schema, new.df.with_columns(pl.lit("test").alias("split")), source)
    common = [c for c in run_table.df.columns if c in rows.columns]
    try:  # the run's empty frame first gives the columns the new data lacks, as nulls
        rows = pl.concat([run_table.df.clear(), rows.select(common)], how="diagonal").select(run_table.df.columns)
    except pl.exceptions.SchemaError as e:  # a type as_run_dtypes left as it was (a nested one): said, not a traceback
        raise DataError(f"the new data's columns do not match the run's: {str(e).splitlines()[0]}", file=source) from e
    key = group_column(rows)
    context = run_table.df.clear()
    if key is not None:
        patients = rows[key].drop_nulls().unique()
        context = run_table.df.filter(pl.col(key).is_in(patients.implode()) & ~pl.col("image_id").is_in(rows["image_id"].implode()))
    return LesionTable(pl.concat([rows, context]), run_table.meta)


def auto_segmented(cfg: RunConfig, run_df: pl.DataFrame, rows: pl.DataFrame) -> int:
    """How many of ``rows`` get the run's mask image features from an automatic segmentation: they have
    an image and no mask, where the run measured its own from given masks (``run_df``'s ``mask_ref``)."""
    from dermstack.features.build import image_enabled

    had_masks = "mask_ref" in run_df.columns and run_df["mask_ref"].null_count() < run_df.height
    if not had_masks or not image_enabled(cfg.features.image, run_df) or cfg.features.segmentation == "automatic":
        return 0
    return rows.filter(pl.col("image_ref").is_not_null() & pl.col("mask_ref").is_null()).height


class _Stores:
    """Embeddings of the new images from the new store, of the run's own images from the run's."""

    def __init__(self, *stores):
        self.stores = stores
        self._ids: dict[str, list[np.ndarray]] = {}

    def backbones(self) -> list[str]:
        return self.stores[0].backbones()

    def _listed(self, backbone: str) -> list[np.ndarray]:
        """Each store's ids, read once per backbone."""
        if backbone not in self._ids:
            self._ids[backbone] = [np.asarray(s.image_ids(backbone), dtype=object) for s in self.stores]
        return self._ids[backbone]

    def image_ids(self, backbone: str) -> list[str]:
        return [i for ids in self._listed(backbone) for i in ids]

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        out, todo = None, np.asarray(image_ids, dtype=object)
        for s, ids in zip(self.stores, self._listed(backbone)):
            have = np.isin(todo, ids)
            if have.any():
                part = s.read(backbone, todo[have].tolist())
                out = np.empty((len(todo), part.shape[1]), np.float32) if out is None else out
                out[have] = part
            todo = np.where(have, None, todo)
        return out


def embed_rows(cfg: RunConfig, run_dir: Path, table: LesionTable, new_ids: list[str], work: Path):
    """The rows of ``table`` (:func:`as_run_rows`) embedded by the run's backbones: the new images
    ``new_ids`` into ``work``, the run's own from its store; None without backbones."""
    if not cfg.extract.backbones:
        return None
    from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings

    h5 = work / "embeddings.h5"
    new = LesionTable(table.df.filter(pl.col("image_id").is_in(new_ids)), table.meta)
    extract_embeddings(new, list(cfg.extract.backbones), h5, ExtractSettings.from_config(cfg.extract))
    store = EmbeddingStore(h5)
    if (run_dir / "embeddings.h5").exists() and len(new) < len(table):
        store = _Stores(store, EmbeddingStore(run_dir / "embeddings.h5"))
    return store


def _features(cfg: RunConfig, run_dir: Path, table: LesionTable, new_ids: list[str], work: Path, store=None):
    """Features of the rows ``new_ids`` of ``table`` (see ``as_run_rows``), built as the run built its
    own: its fitted transform (leaky columns, embedding PCA), the new images embedded by its backbones
    (``store``; made by :func:`embed_rows` when not given), the mask image features when the run
    built them (``image = "auto"`` decided on the run's lesions; a new image without a mask is
    segmented automatically, with a warning: :func:`auto_segmented`)."""
    from dermstack.features.build import build_features, image_enabled
    from dermstack.features.featureset import FeatureSet
    from dermstack.features.transform import FeatureTransform

    fitted = FeatureTransform.read(FeatureTransform.path_for(run_dir / "features.parquet"))
    store = store or embed_rows(cfg, run_dir, table, new_ids, work)
    masks = pl.read_parquet(run_dir / "lesions.parquet", columns=["mask_ref"])
    features = dataclasses.replace(cfg.features, image=image_enabled(cfg.features.image, masks))
    if n := auto_segmented(cfg, masks, table.df.head(len(new_ids))):  # as_run_rows puts the new rows first
        # a warning, not the reader's note: the features move, and with them every score of these rows
        log.warning("%d of %d new rows have an image but no mask: the run's image features were computed from its "
                    "masks, these rows' from an automatic segmentation instead, so their scores may differ from what "
                    "a mask would give (give their mask_ref files to score them as the run did)", n, len(new_ids))
    fs = build_features(table, features, store, pca_components=cfg.extract.pca_components, fitted=fitted)
    order = pl.DataFrame({"image_id": new_ids})
    return FeatureSet(order.join(fs.df, on="image_id", how="left", maintain_order="left"), fs.groups, fs.categorical,
                      fs.info, fs.transform)


def predict_run(run_dir: str | Path, data, strict: bool = False, allow_missing_features: bool = False,
                allow_missing_option: str = API_ALLOW_MISSING) -> pl.DataFrame:
    """Long predictions (image_id, model, class, score) of every saved model of the run, the final
    one (``metrics.json`` ``oof_model``) included, for every row of ``data``; the models are loaded
    through the registry (:mod:`dermstack.saved`) and applied in dependency order. ``data`` lacking
    a feature column of the run is an error unless ``allow_missing_features`` (``check_feature_columns``;
    ``allow_missing_option``: how the error spells that option, the command passes its flag)."""
    from dermstack.rundir import check_finished

    run_dir = check_finished(run_dir)
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    run_metrics = read_json(run_dir / "metrics.json", "run metrics")
    new = read_new_data(cfg, data, strict)
    run_table = LesionTable.read(run_dir / "lesions.parquet")
    source = str(data) if isinstance(data, (str, os.PathLike)) else None
    check_feature_columns(run_table, new, allow_missing_features, source, allow_missing_option)
    new = drop_training_rows(run_table, new, strict, source)
    table = as_run_rows(run_table, new, source)
    ids = new.df["image_id"].to_list()
    if not ids:  # no rows (a dataset without a test split): no prediction, and no image to embed for one
        return Predictions.empty().frame.select("image_id", "model", "class", "score")
    with tempfile.TemporaryDirectory(prefix="dermstack-predict-") as tmp:  # the new embeddings live here
        store = embed_rows(cfg, run_dir, table, ids, Path(tmp))
        scores = score_rows(cfg, run_dir, table, ids, list(run_metrics["classes"]), Path(tmp), store)
    if run_metrics["oof_model"] not in scores:
        raise DataError(f"the run's final model {run_metrics['oof_model']!r} has no saved model", file=str(run_dir / "models"))
    return pl.concat([p.frame.select("image_id", "model", "class", "score") for p in scores.values()])


def score_rows(cfg: RunConfig, run_dir: Path, table: LesionTable, ids: list[str], classes: list[str], work: Path,
               store=None) -> dict[str, Predictions]:
    """Every saved model's scores of the rows ``ids`` of ``table`` (:func:`as_run_rows`, which puts
    them first): their features built as the run built its own, then the models in dependency order."""
    from dermstack.saved import Inputs, predict_all

    fs = _features(cfg, run_dir, table, ids, work, store)
    inputs = Inputs(ids, classes, features=fs, table=LesionTable(table.df.head(len(ids)), table.meta), embeddings=store)
    return predict_all(run_dir / "models", inputs)
