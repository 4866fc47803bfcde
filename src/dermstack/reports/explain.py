"""One lesion explained: SHAP waterfall per booster model, its image and mask, and its patient's other lesions."""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from dermstack.crossfit import align_rows
from dermstack.data.images import load_image, load_mask
from dermstack.errors import DataError, DermstackError
from dermstack.reports import shap_plots
from dermstack.reports.html import Section, figure, figures, paragraph, table, write_page
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import explain_model
from dermstack.rundir import REPORT_FILES, claim_dir, is_report

log = logging.getLogger(__name__)


def _png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def lesion_images(row: dict, size: int = 256) -> list[str]:
    """Figures of the lesion's image, its mask and the mask outlined on the image (what is available)."""
    out = []
    if not row.get("image_ref"):
        return [paragraph("No image reference for this lesion.", "warn")]
    try:
        img = load_image(row["image_ref"])
    except DermstackError as e:
        return [paragraph(f"Image not readable: {e}", "warn")]
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.NEAREST if scale > 1 else Image.LANCZOS)
    out.append(figure(_png_uri(img), "image"))
    if row.get("mask_ref"):
        try:
            mask = Image.fromarray(load_mask(row["mask_ref"]).astype(np.uint8) * 255).resize(img.size)
        except DermstackError as e:
            return out + [paragraph(f"Mask not readable: {e}", "warn")]
        overlay = np.asarray(img).copy()
        edge = np.asarray(mask) > 127
        edge = edge ^ np.roll(edge, 1, 0) | edge ^ np.roll(edge, 1, 1)
        overlay[edge] = (0, 255, 0)
        out += [figure(_png_uri(mask), "mask"), figure(_png_uri(Image.fromarray(overlay)), "mask outline")]
    return out


def patient_context(run: RunData, row: dict) -> pl.DataFrame:
    """The patient's lesions with the final model's OOF score (test rows: test prediction when present) and rank."""
    pid = row.get("patient_id")
    if pid is None:
        return pl.DataFrame()
    final = run.final_model
    lesions = run.table.df.filter(pl.col("patient_id") == pid).select("image_id", "split", "label", "target")
    oof = run.oof.filter(pl.col("model") == final)
    test_path = run.root / "test_predictions.parquet"
    preds = [oof.select("image_id", "class", "score")]
    if test_path.exists():
        preds.append(pl.read_parquet(test_path).filter(pl.col("model") == final).select("image_id", "class", "score"))
    cls = run.task.classes[0] if run.task.kind.binary else run.explained_class
    scores = (pl.concat(preds).filter(pl.col("class") == cls).group_by("image_id").agg(pl.col("score").mean()))
    out = lesions.join(scores, on="image_id", how="left").sort("score", descending=True, nulls_last=True)
    return out.with_columns(pl.col("score").rank("ordinal", descending=True).alias("rank_in_patient"),
                            (pl.col("image_id") == row["image_id"]).alias("this_lesion"))


def final_waterfall(run: RunData, image_id: str, fold: np.ndarray, cls: str | None) -> str:
    """The final model's waterfall (:mod:`dermstack.reports.final_shap`): its contributions add up to the lesion's final score."""
    from dermstack.reports.final_shap import explain_final

    fin = explain_final(run, [image_id], fold, progress=False)
    return figure(shap_plots.waterfall_figure(fin.values, 0, cls), fin.caption + (f" Class {cls}." if cls else ""))


def explain_file_name(image_id: str) -> str:
    """``explain_<id>.html``: an id is data, so only letters, digits, ``_ . -`` of it make the name (a
    ``/`` or NUL in one never puts the page outside the report folder) and a long one is cut, with a
    digest of the whole id so that two long ids keep two pages."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", image_id)
    if len(safe) > 100:
        safe = f"{safe[:80]}_{hashlib.sha256(image_id.encode()).hexdigest()[:12]}"
    return f"explain_{safe}.html"


def explained_lesion(run: RunData, image_id: str) -> tuple[dict, np.ndarray]:
    """(the lesion's row of the run's table, its fold as a 1-array: a training row's fold, -1 for a test
    row), or a DataError: no such lesion, or nothing in the run to explain it with."""
    hit = run.table.df.filter(pl.col("image_id") == image_id)
    if hit.is_empty():
        raise DataError(f"no lesion with image_id {image_id!r}", file=str(run.root / "lesions.parquet"), column="image_id")
    row = hit.row(0, named=True)
    if run.features is None or not run.explained_dirs:
        raise DataError("the run has no features.parquet or no booster / linear models to explain", file=str(run.root))
    fold = run.folds.fold_of([image_id]) if row["split"] == "train" and run.folds is not None else np.array([-1])
    return row, fold


@dataclass
class Explanation:
    """One lesion's SHAP explanation of the run's final score, as data (the first waterfall of
    ``dermstack report explain``, :mod:`dermstack.reports.final_shap`).

    ``contributions`` has one row per feature (and class, for a task of several classes: column
    ``class``), largest |contribution| first: ``feature``, ``group`` (its feature group),
    ``value`` (the lesion's value; a categorical's name is in ``category``) and ``contribution``.
    Per class, ``base`` plus the contributions is ``score``, in ``space``.

    Examples
    --------
    >>> import dermstack as ds
    >>> why = ds.load("runs/tiny").explain("ISIC_0027384")
    >>> why.model, why.lesion["split"]
    ('calibrated', 'train')
    >>> why.top(3).height
    3
    """

    image_id: str
    #: the model whose score is explained: ``calibrated`` for a binary run (what it submits), else the final model
    model: str
    #: where base + contributions add up, e.g. "log-odds of the score of calibrated lgbm"
    space: str
    #: the expected value: a float, or class -> float
    base: float | dict[str, float]
    #: the lesion's score in ``space``: a float, or class -> float
    score: float | dict[str, float]
    contributions: pl.DataFrame
    #: the lesion's row of the run's table (split, label, patient ...)
    lesion: dict

    def top(self, n: int = 10) -> pl.DataFrame:
        """The ``n`` largest contributions (per class).

        Examples
        --------
        >>> import dermstack as ds
        >>> ds.load("runs/tiny").explain("ISIC_0027384").top(2).columns
        ['feature', 'group', 'value', 'category', 'contribution']
        """
        by = ["class"] if "class" in self.contributions.columns else []
        return self.contributions.group_by(by, maintain_order=True).head(n) if by else self.contributions.head(n)


def explain_data(run: RunData, image_id: str) -> Explanation:
    """The :class:`Explanation` of one lesion of ``run`` (its final model's contributions)."""
    from dermstack.reports.final_shap import explain_final

    row, fold = explained_lesion(run, image_id)
    fin = explain_final(run, [image_id], fold, progress=False)
    sv = fin.values
    values = sv.values.reshape(len(sv.features), -1) if sv.values.ndim == 2 else sv.values[0]
    base = np.atleast_1d(sv.base[0])
    codes = sv.data[0]
    category = [sv.categories[f][int(c)] if f in sv.categories and np.isfinite(c) and 0 <= c < len(sv.categories[f]) else None
                for f, c in zip(sv.features, codes)]
    parts = []
    for k, cls in enumerate(sv.classes):
        part = pl.DataFrame({"feature": sv.features, "group": [fin.groups[f] for f in sv.features],
                             "value": pl.Series(codes, dtype=pl.Float64).fill_nan(None), "category": pl.Series(category, dtype=pl.String),
                             "contribution": values[:, k]})
        parts.append(part.with_columns(pl.lit(cls).alias("class")) if len(sv.classes) > 1 else part)
    frame = pl.concat(parts).with_columns(pl.col("contribution").abs().alias("_size"))
    frame = frame.sort([*(["class"] if len(sv.classes) > 1 else []), "_size"], descending=[*([False] if len(sv.classes) > 1 else []), True],
                       maintain_order=True).drop("_size")
    scores = base + values.sum(axis=0)
    per_class = len(sv.classes) > 1
    return Explanation(image_id, fin.explained, fin.space,
                       dict(zip(sv.classes, base.tolist())) if per_class else float(base[0]),
                       dict(zip(sv.classes, scores.tolist())) if per_class else float(scores[0]),
                       frame.select(*(["class"] if per_class else []), "feature", "group", "value", "category", "contribution"), row)


def explain_lesion(run_dir: str | Path, image_id: str, out_dir: str | Path) -> Path:
    """Write ``out_dir/explain_<image_id>.html``: the final model's waterfall, then (raw score) every booster / linear model's."""
    claim_dir(out_dir, "report folder", owned=REPORT_FILES, marker=is_report)
    run = RunData.load(run_dir)
    row, fold = explained_lesion(run, image_id)
    cls = run.explained_class
    shap_sec = Section("waterfall", "Why this score")
    shap_sec.add(paragraph((f"Out-of-fold: explained by the boosters of fold {fold[0]}, averaged over seeds.") if fold[0] >= 0
                           else "Test lesion: explained by every fold's boosters, averaged."))
    figs = [final_waterfall(run, image_id, fold, cls)]
    for model_dir in run.explained_dirs:
        features = align_rows(run.features_for(model_dir), [image_id], source=str(Path(run_dir) / "features.parquet"))
        sv = explain_model(model_dir.name, run.fold_models(model_dir)[0], features, fold, run.task.classes, progress=False)
        figs.append(figure(shap_plots.waterfall_figure(sv, 0, cls), f"{model_dir.name}: raw score (log-odds) = base + contributions"
                           + (f", class {cls}" if cls else "")))
    shap_sec.add(figures(*figs))
    facts = {k: row.get(k) for k in ("image_id", "lesion_id", "patient_id", "split", "label", "target", "image_type")}
    lesion_sec = Section("lesion", "Lesion").add(table(pl.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]})),
                                                 figures(*lesion_images(row)))
    context = patient_context(run, row)
    patient_sec = Section("patient", "Patient context")
    patient_sec.add(paragraph(f"The patient's lesions scored by {run.final_model}: a lesion that stands out among the "
                              "patient's own lesions (the 'ugly duckling') is the context a dermatologist uses."),
                    table(context, row_class=None) if context.height else paragraph("No patient id.", "warn"))
    out = Path(out_dir) / explain_file_name(image_id)
    return write_page(out, f"dermstack: {image_id}", str(Path(run_dir).resolve()), [lesion_sec, shap_sec, patient_sec])
