"""What the tests and the benchmarks' ``--smoke`` sizes share: where the development data lives, a
tiny copy of a dataset in its own published layout, and a shipped config made cheap to run on it."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import polars as pl
from PIL import Image

from dermstack.config import ModelConfig, RunConfig
from dermstack.inputpaths import resolve_data_path
from dermstack.registry import model_kind

REPO = Path(__file__).resolve().parents[2]
#: files a dataset's readers read as text; every other file is an image (made small) or copied as is
TEXT_SUFFIXES = (".csv", ".txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def shared_data_dir() -> Path | None:
    """``$DERMSTACK_SHARED_DATA`` or ``<repo>/../shared/data`` (CI puts shared/ beside the clone)."""
    for cand in (os.environ.get("DERMSTACK_SHARED_DATA"), REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def _pattern(ids) -> re.Pattern:
    """Any of ``ids`` as a whole token (not followed or preceded by a letter or digit: ``ISIC_1`` is
    not in ``ISIC_12``, but is in ``ISIC_1_segmentation``)."""
    alternatives = "|".join(sorted((re.escape(i) for i in ids if i), key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def kept_groups(fmt: str, src: Path, task: str, per_class: int, test_groups: int) -> tuple[set[str], set[str]]:
    """(the ids to keep, every id of the dataset): ``per_class`` lesions of each class the task
    stratifies on (its rarest classes whole) and ``test_groups`` test lesions."""
    from dermstack.data.folds import stratum
    from dermstack.data.readers import ingest
    from dermstack.data.table import LesionTable

    table, _ = ingest(fmt, src)
    df = table.df.with_columns(pl.coalesce("lesion_id", "image_id").alias("__group"))
    train = df.filter(pl.col("split") == "train").with_columns(
        pl.Series("__stratum", stratum(LesionTable(df, table.meta), task)).cast(pl.String))
    first = train.group_by("__group", maintain_order=True).agg(pl.col("__stratum").first())
    groups = set(first.group_by("__stratum", maintain_order=True).head(per_class)["__group"])
    groups |= set(df.filter(pl.col("split") == "test")["__group"].unique(maintain_order=True).head(test_groups))
    kept = df.filter(pl.col("__group").is_in(groups))
    every = set(df["image_id"]) | set(df["lesion_id"].drop_nulls())
    return set(kept["image_id"]) | set(kept["lesion_id"].drop_nulls()), every


def tiny_copy(fmt: str, src: str | Path, dst: str | Path, task: str = "binary", per_class: int = 6,
              test_groups: int = 2, max_px: int = 48) -> Path:
    """A small copy of the dataset ``src`` (format ``fmt``) in ``dst``, in the same layout: the text
    files' lines that name a kept id (and the lines naming no id at all: headers, label rows whose
    images are missing), only the kept ids' images, shrunk to at most ``max_px``. See
    :func:`kept_groups` for which rows stay."""
    src, dst = Path(src), Path(dst)
    keep, every = kept_groups(fmt, src, task, per_class, test_groups)
    kept, named = _pattern(keep), _pattern(every)
    shutil.rmtree(dst, ignore_errors=True)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        out = dst / rel
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and not kept.search(str(rel)):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix in TEXT_SUFFIXES:
            raw = path.read_bytes()
            lines = raw.splitlines(keepends=True)
            text = [ln.decode("utf-8", "surrogateescape") for ln in lines]
            out.write_bytes(b"".join(raw_ln for raw_ln, ln in zip(lines, text) if kept.search(ln) or not named.search(ln)))
        elif suffix in IMAGE_SUFFIXES:
            with Image.open(path) as im:
                im.thumbnail((max_px, max_px), Image.Resampling.NEAREST)  # nearest: masks stay 0/255
                im.save(out)
        else:
            shutil.copyfile(path, out)
    return dst


#: what a smoke run changes in a shipped config besides its data and each model's own ``smoke`` keys
#: (:attr:`dermstack.registry.ModelKind.smoke`: one CNN epoch at 32 px, 40 boosting rounds, ...): small
#: extraction inputs, no repeats (the model kinds, feature groups and ensemble stay as shipped)
SMOKE_EXTRACT_PX = 64


def smoke_model(model: ModelConfig) -> ModelConfig:
    """``model`` made cheap by the ``smoke`` keys its kind declares (their ``params`` laid over the entry's)."""
    smoke = dict(model_kind(model.kind).smoke)
    params = {**model.params, **smoke.pop("params", {})}
    return dataclasses.replace(model, **smoke, params=params)


def smoke_config(cfg: RunConfig, data_path: str | Path | None = None) -> RunConfig:
    """``cfg`` made cheap: its data at ``data_path`` (a :func:`tiny_copy`), every model by :func:`smoke_model`,
    extraction at 64 px, one repeat, a small synthetic dataset where it synthesises one."""
    data = dataclasses.replace(cfg.data, path=str(data_path) if data_path else cfg.data.path)
    if cfg.data.format == "synthetic-isic2024":
        data = dataclasses.replace(data, lesions=150, test_lesions=10, positive_rate=0.1, image_size=32)
    models = [smoke_model(m) for m in cfg.models]
    extract = dataclasses.replace(cfg.extract, image_size=SMOKE_EXTRACT_PX) if cfg.extract.backbones else cfg.extract
    report = dataclasses.replace(cfg.report, shap_sample=min(cfg.report.shap_sample, 200))
    return dataclasses.replace(cfg, data=data, models=models, extract=extract, report=report,
                               cv=dataclasses.replace(cfg.cv, repeats=1))


def smoke_dataset(cfg: RunConfig, work: str | Path, config_dir: Path | None = None) -> RunConfig:
    """:func:`smoke_config` of ``cfg`` on a :func:`tiny_copy` of its data in ``work`` (the config's own
    ``[data] path``, resolved as ``dermstack run`` resolves it)."""
    if not cfg.data.path:
        return smoke_config(cfg)
    src = resolve_data_path(cfg.data.path, config_dir)
    if not src.exists() and "shared/data/" in cfg.data.path and shared_data_dir():  # a clone elsewhere
        src = shared_data_dir() / cfg.data.path.split("shared/data/", 1)[1]
    per_class = 3 * cfg.cv.n_splits  # every fold sees each class, and a booster has rows to split
    return smoke_config(cfg, tiny_copy(cfg.data.format, src, Path(work) / src.name, cfg.data.task, per_class))


#: the ``--smoke`` option every benchmark has
SMOKE_HELP = "tiny sizes, to check that the script runs (tests/test_shipped.py); its figures mean nothing"


def smoke_work(name: str) -> Path:
    """A fresh temporary folder for a ``--smoke`` benchmark (never a cached full-size one), removed
    when this process exits: a smoke run prints its figures and keeps no files."""
    import atexit
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=f"dermstack-smoke-{name}-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work
