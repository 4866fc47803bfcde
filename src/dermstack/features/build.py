"""The features stage: one entry point that builds every enabled feature group of a LesionTable."""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dermstack.config import FeaturesConfig, RunConfig
from dermstack.data.table import LesionTable, image_views
from dermstack.dataprofile import DataProfile
from dermstack.errors import ConfigError
from dermstack.features.embedding import (
    EmbeddingSource,
    cross_view_similarity,
    pca_features,
    read_embeddings,
    usable_views,
)
from dermstack.features.engineered import available, engineered_features
from dermstack.features.featureset import ID_COLUMNS, FeatureSet
from dermstack.features.image import image_features
from dermstack.features.metadata import leaky_missingness, metadata_features
from dermstack.features.patient import SITE_COLUMNS, PatientConfig, not_built_reason, patient_features
from dermstack.features.pooling import lesion_groups, pool_array, pool_frame, pooling_info
from dermstack.features.transform import FeatureTransform

if TYPE_CHECKING:
    from dermstack.extract.store import EmbeddingStore

log = logging.getLogger(__name__)


def image_enabled(setting: bool | str, df: pl.DataFrame) -> bool:
    """``[features] image``: True / False, or "auto": on when the dataset ships a mask for any row (the
    mask-derived shape and colour features are then cheap and strong; without masks automatic
    segmentation is slower and weaker, so it is opt-in)."""
    if setting == "auto":
        return "mask_ref" in df.columns and df["mask_ref"].null_count() < df.height
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"[features] image must be true, false or \"auto\", got {setting!r}")


def check_images(table: LesionTable, cfg: RunConfig, source: str = "config") -> None:
    """A ConfigError (``source``: the config file) when the config asks for what only images give and no
    row of ``table`` has one (DDI's metadata without its images, say): ``[extract] backbones`` would embed
    nothing, and ``[features] image = true`` promises features computed from the pixels."""
    if any(table.df[c].drop_nulls().len() for c in image_views(table.df).values()):
        return
    wanted = ([f"[extract] backbones = {json.dumps(list(cfg.extract.backbones))}"] if cfg.extract.backbones else []) + (
        ["[features] image = true"] if cfg.features.image is True else [])
    if wanted:
        raise ConfigError(f"{source}: {' and '.join(wanted)}: no row of this data has an image ({table.df.height} rows"
                          f"{f' read from {cfg.data.path}' if cfg.data.path else ''}, no image file found for any), so there is nothing to "
                          f"{'embed' if cfg.extract.backbones else 'compute image features from'}; remove "
                          f"{' and '.join(w.split(' = ')[0] for w in wanted)} for a metadata-only run, or put the "
                          "images where the metadata names them")


def table_feature_count(table: LesionTable, cfg: FeaturesConfig) -> int:
    """How many table columns :func:`build_features` gives the boosters from beside the images: the
    metadata columns with a value on some training row, when a group reads them (``metadata``;
    ``engineered`` where they feed one; ``patient`` where it is built), plus one for the mask features.
    0: image-only data (embeddings, and patient features of them, are the image's)."""
    train = table.train
    metadata = [c for c in table.meta.feature_columns if c in train.columns and train[c].null_count() < train.height]
    read = cfg.metadata or (cfg.engineered and bool(available(metadata))) or (cfg.patient and not not_built_reason(table.df))
    return (len(metadata) if read else 0) + int(image_enabled(cfg.image, table.df))


def data_profile(table: LesionTable, cfg: RunConfig, n_train: int) -> DataProfile:
    """The run's data as the default model set sees it (:class:`~dermstack.dataprofile.DataProfile`), for
    the run config ``cfg``: ``n_train`` training rows, whether each has an image, the table features
    beside the image (:func:`table_feature_count`), the device image models would train on, the test
    rows and folds, the task kind and whether the images are embedded (``[extract] backbones``)."""
    train = table.train
    images = train.height > 0 and train["image_ref"].null_count() == 0
    device = "cpu"
    if images:
        from dermstack.extract.settings import resolve_device

        device = resolve_device("auto").type
    return DataProfile(n_train, images=images, table_features=table_feature_count(table, cfg.features), device=device,
                       n_test=table.test.height, n_splits=cfg.cv.n_splits, task=cfg.data.task,
                       embeddings=images and bool(cfg.extract.backbones))


def _numeric(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c != "image_id" and t.is_numeric()]


def build_features(table: LesionTable, cfg: FeaturesConfig, embeddings: EmbeddingStore | EmbeddingSource | None = None,
                   pca_components: int = 32, fitted: FeatureTransform | None = None) -> FeatureSet:
    """Build the enabled groups (``cfg``) into one FeatureSet with a row per table row.

    Metadata columns whose missingness leaks the label are dropped from every group (listed in
    ``info["metadata"]["dropped_missingness_leak"]``); engineered features are built from the kept
    TBP columns; patient features are relative to the patient's own rows (metadata, engineered and
    image features; embedding distances by cosine) and need a real patient id; the embedding PCA is
    fitted on training rows. Without patient ids, the images of a lesion are pooled (their
    embeddings and image features averaged, :mod:`dermstack.features.pooling`) and features that
    would only measure curation are not built; ``info["curation"]`` says what and why.
    What was fitted is the result's ``transform``; pass a run's as ``fitted`` to build features of
    new rows exactly as the run built its own."""
    df = table.df
    fs = FeatureSet(df.select(ID_COLUMNS), {}, [], {})
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pools = lesion_groups(df)
    curation: dict = {"pooled": pooling_info(pools) if pools is not None else None, "not_built": {}}
    if pools is not None:
        log.info("no patient ids and several images per lesion: pooling each lesion's images (%s)", curation["pooled"])

    meta = metadata_features(table, cfg.missingness_leak_auc, fitted.dropped if fitted else None)
    fs.info["metadata"] = {"dropped_missingness_leak": meta.dropped}
    if cfg.metadata:
        fs = fs.add(meta.frame, "metadata", meta.categorical)
    timings["metadata"] = time.perf_counter() - t0

    numeric_inputs = [meta.frame.select(["image_id", *meta.numeric])]
    #: the ugly-duckling feature space: measured values, not the engineered combinations of them
    distance_columns = list(meta.numeric)
    if cfg.engineered:
        t = time.perf_counter()
        # only the table's feature columns: a column that is not a feature (absent from the training
        # or the test file, unknown, leaky) must not come back inside an engineered feature
        kept = df.select("image_id", *[c for c in table.meta.feature_columns if c not in meta.dropped])
        eng, eng_cats = engineered_features(kept)
        fs.info["engineered"] = {"built": eng.width - 1}
        if eng.width > 1:
            fs = fs.add(eng, "engineered", eng_cats)
            numeric_inputs.append(eng.select(["image_id", *_numeric(eng)]))
        else:
            log.info("no TBP measurement columns: no engineered features")
        timings["engineered"] = time.perf_counter() - t

    if image_enabled(cfg.image, df):
        t = time.perf_counter()
        img, info = image_features(df, cfg.segmentation, cfg.workers)
        if pools is not None:
            img = pool_frame(pools, df.select("image_id").join(img, on="image_id", how="left", maintain_order="left"))
        fs.info["image"] = info
        fs = fs.add(img, "image")
        numeric_inputs.append(img)
        distance_columns += [c for c in img.columns if c != "image_id"]
        timings["image"] = time.perf_counter() - t

    emb: dict[str, np.ndarray] = {}
    pca: dict = {}
    if embeddings is not None and (cfg.embedding or cfg.patient):
        emb = usable_views(read_embeddings(embeddings, df["image_id"].to_list()), embeddings.backbones(),
                           (df["split"] == "train").to_numpy(), fitted.pca if fitted else None)
        if pools is not None:
            emb = {k: pool_array(pools, v).astype(np.float32) for k, v in emb.items()}
    if cfg.embedding and emb:
        t = time.perf_counter()
        frame, info, pca = pca_features(emb, df["image_id"].to_list(), (df["split"] == "train").to_numpy(), pca_components,
                                        fitted=fitted.pca if fitted else None)
        fs.info["embedding"] = info
        fs = fs.add(frame, "embedding")
        views = cross_view_similarity(emb, embeddings.backbones(), df["image_id"].to_list())
        if views.width > 1:
            fs = fs.add(views, "embedding")
        timings["embedding"] = time.perf_counter() - t

    reason = not_built_reason(df) if cfg.patient else None
    if reason:
        curation["not_built"]["patient"] = reason
        log.warning("patient features not built: %s", reason)
    elif cfg.patient:
        t = time.perf_counter()
        numeric = _join_numeric(numeric_inputs)
        keys = df.select(["image_id", *[c for c in ("patient_id", "lesion_id", *SITE_COLUMNS) if c in df.columns]])
        base = keys.join(numeric, on="image_id", how="left", maintain_order="left")
        pat = patient_features(base, [c for c in numeric.columns if c != "image_id"], emb, PatientConfig(), distance_columns)
        # a patient feature is blank where the patient id is; where that blankness tells the classes
        # apart (exports merged from sources with and without patient ids) it measures the source
        leaky = ({c: None for c in fitted.dropped if c in pat.columns} if fitted else
                 leaky_missingness(table, pat.drop("image_id"), cfg.missingness_leak_auc))
        meta.dropped.update(leaky)
        fs = fs.add(pat.drop(list(leaky)), "patient")
        timings["patient"] = time.perf_counter() - t

    fs.info["curation"] = curation
    fs.transform = FeatureTransform(sorted(meta.dropped), pca)
    fs.info["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    fs.info["groups"] = {g: sum(1 for v in fs.groups.values() if v == g) for g in sorted(set(fs.groups.values()))}
    log.info("built %d features for %d rows: %s", len(fs.groups), fs.df.height, fs.info["groups"])
    return fs


def _join_numeric(frames: list[pl.DataFrame]) -> pl.DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on="image_id", how="left", maintain_order="left")
    return out
