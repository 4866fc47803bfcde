"""The finished run that :func:`dermstack.fit` returns and :func:`dermstack.load` opens: :class:`FittedRun`."""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pandas as pd

    from dermstack.config import RunConfig
    from dermstack.data.table import LesionTable
    from dermstack.reports.explain import Explanation
    from dermstack.reports.rundata import RunData

__all__ = ["FittedRun"]


class FittedRun:
    """A finished run directory: its metrics, out-of-fold scores and saved models, ready to score new data.

    Made by :func:`fit` (which runs the pipeline) or :func:`load` (which reopens a finished run and
    checks it as the CLI does). The run directory on disk is the state: nothing is held in memory
    that the files do not say, and ``dermstack predict RUN_DIR ...`` gives the same scores.

    Named for what it is, a run that has been fitted, apart from :class:`dermstack.run.Run`, the
    pipeline that fits one.

    Parameters
    ----------
    root : str or os.PathLike
        The run directory. Use :func:`load` to open one: it checks the directory first.

    Examples
    --------
    >>> import dermstack as ds
    >>> run = ds.load("runs/tiny")
    >>> run
    FittedRun('runs/tiny': binary, final model lightgbm)
    >>> run.root.name
    'tiny'
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        m = self.metrics
        return f"FittedRun({str(self.root)!r}: {m['task']}, final model {m['oof_model']})"

    @cached_property
    def _data(self) -> RunData:
        from dermstack.reports.rundata import RunData

        return RunData.load(self.root)

    @property
    def metrics(self) -> dict:
        """The run's ``metrics.json``: task, classes, the primary metric, every model's out-of-fold
        metrics (``models``), the final model's (``oof``), its calibration and clinical operating points.

        Examples
        --------
        >>> import dermstack as ds
        >>> run = ds.load("runs/tiny")
        >>> run.metrics["task"], run.metrics["oof_model"]
        ('binary', 'lightgbm')
        >>> 0.0 <= run.metrics["oof"]["roc_auc"] <= 1.0
        True
        """
        from dermstack.atomic import read_json

        return read_json(self.root / "metrics.json", "run metrics")

    @property
    def config(self) -> RunConfig:
        """The config the run ran with (its ``config.toml``, models resolved), a :class:`~dermstack.config.RunConfig`.

        Examples
        --------
        >>> import dermstack as ds
        >>> [m.kind for m in ds.load("runs/tiny").config.models]
        ['lightgbm']
        """
        from dermstack.config import RunConfig

        return RunConfig.from_toml(self.root / "config.toml")

    @property
    def oof(self) -> pl.DataFrame:
        """Out-of-fold scores of the training rows (``oof.parquet``, averaged over seeds), one row per lesion.

        Columns: ``image_id``; ``label`` (binary: the 0/1 target; multiclass: the class; multi-label:
        the classes joined by ``;``, as ``evaluate``'s predictions); then one column per model, the
        final model's and ``calibrated`` included: a float for a binary task, else a struct with one
        field per class.

        Examples
        --------
        >>> import dermstack as ds
        >>> oof = ds.load("runs/tiny").oof
        >>> oof.columns
        ['image_id', 'label', 'lightgbm', 'calibrated']
        >>> oof.height == ds.load("runs/tiny").metrics["n_train"]
        True
        """
        from dermstack.external.labels import label_frame
        from dermstack.predictions import Predictions

        task = self._data.task
        wide = Predictions.read(self.root / "oof.parquet").wide(task.image_ids, task.classes)
        return wide.insert_column(1, label_frame(task.y, task.kind, task.classes))

    def predict(self, data: str | os.PathLike | LesionTable | pl.DataFrame | pd.DataFrame, *, strict: bool = False,
                allow_missing_features: bool = False) -> pl.DataFrame:
        """Score new lesions with the run's saved models, nothing retrained (as ``dermstack predict``).

        Parameters
        ----------
        data : path, LesionTable, polars or pandas DataFrame
            A dataset folder in the run's format, a LesionTable parquet file or
            :class:`~dermstack.data.table.LesionTable`, or a DataFrame of lesions: the metadata columns
            of the run's data (the Kaggle ``test-metadata.csv`` of ISIC 2024, say) with ``image_id``
            (or ``isic_id``), and ``image_ref`` where the run embeds images.
        strict : bool
            Stop on any unreadable row or image instead of skipping it.
        allow_missing_features : bool
            Score data that lacks feature columns the models were trained on (as missing, with a warning).

        Returns
        -------
        polars.DataFrame
            ``image_id`` and one column per model, as :attr:`oof` (without ``label``).

        Examples
        --------
        >>> import dermstack as ds
        >>> import polars as pl
        >>> run = ds.load("runs/tiny")
        >>> new = pl.read_parquet("runs/tiny/lesions.parquet").filter(pl.col("split") == "test")
        >>> scores = run.predict(new.to_pandas())
        >>> scores.columns
        ['image_id', 'lightgbm', 'calibrated']
        >>> scores.height
        10
        """
        from dermstack.outputs.predict import predict_run
        from dermstack.predictions import Predictions

        preds = Predictions(predict_run(self.root, data, strict=strict, allow_missing_features=allow_missing_features))
        return preds.wide(preds.image_ids(), self.metrics["classes"])

    def predict_proba(self, data: str | os.PathLike | LesionTable | pl.DataFrame | pd.DataFrame, *, model: str | None = None,
                      strict: bool = False, allow_missing_features: bool = False) -> np.ndarray:
        """``model``'s probabilities for ``data``'s lesions as scikit-learn gives them: (n, C), rows in the
        order of :meth:`predict`'s ``image_id``. Binary: columns P(not target), P(target); multiclass and
        multi-label: one per class of ``metrics["classes"]`` (multi-label rows need not sum to 1).

        Parameters
        ----------
        data : path, LesionTable, polars or pandas DataFrame
            As :meth:`predict` takes it.
        model : str, optional
            A model of the run; default the one it submits (``metrics["submission_model"]``: binary, the final
            model calibrated; multiclass and multi-label, the final model's own scores).
        strict, allow_missing_features : bool
            As :meth:`predict`.

        Examples
        --------
        >>> import dermstack as ds
        >>> import polars as pl
        >>> new = pl.read_parquet("runs/tiny/lesions.parquet").filter(pl.col("split") == "test")
        >>> ds.load("runs/tiny").predict_proba(new).shape
        (10, 2)
        """
        from dermstack.errors import ConfigError
        from dermstack.outputs.predict import predict_run
        from dermstack.outputs.submission import default_model
        from dermstack.predictions import Predictions

        metrics = self.metrics
        classes, model = metrics["classes"], model or default_model(metrics)
        preds = Predictions(predict_run(self.root, data, strict=strict, allow_missing_features=allow_missing_features))
        if not preds.height:  # no lesion scored
            return np.empty((0, 2 if classes == ["target"] else len(classes)))
        if model not in preds.models:
            raise ConfigError(f"no model {model!r} in {self.root}; its models: {', '.join(preds.models)}")
        scores = preds.for_model(model).matrix(preds.image_ids(), classes)
        return np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores

    def evaluate(self, data: str | os.PathLike | LesionTable | pl.DataFrame | pd.DataFrame, out: str | os.PathLike, *,
                 format: str | None = None, keep_overlap: bool = False, allow_missing_features: bool = False,
                 near_threshold: float | None = None, strict: bool = False) -> dict:
        """Measure the run on another clinic's labelled data (as ``dermstack evaluate``), nothing retrained.

        An overlap audit first leaves out the run's own training images (the same id, the same
        content, or a near-duplicate embedding): they must never count as external. Each model is
        then measured beside its out-of-fold figure, with calibration, the run's operating points
        and subgroups.

        Parameters
        ----------
        data : path, LesionTable, polars or pandas DataFrame
            Labelled lesions: a dataset folder (its format told from its files), a LesionTable
            parquet or table, or a DataFrame as :meth:`predict` takes, with its labels.
        out : str or os.PathLike
            Folder for ``evaluation.json``, ``evaluation.html``, ``predictions.parquet``, ``lesions.parquet``.
        format : str, optional
            ``data``'s format when it cannot be told from its files.
        keep_overlap : bool
            Score rows found in the run's training data too, flagged, instead of leaving them out.
        allow_missing_features : bool
            Score even when ``data`` lacks feature columns the run used (listed in the result).
        near_threshold : float, optional
            Cosine similarity at or above which two images are near-duplicates (default as the command).
        strict : bool
            Turn every row the reader skips into an error.

        Returns
        -------
        dict
            What ``evaluation.json`` holds: ``rows`` (read, scored, left out as overlap), ``models``
            (each model's metrics here and out of fold), ``operating_points``, ``subgroups``, ``notes``.

        Examples
        --------
        >>> import dermstack as ds
        >>> from dermstack.data.synth import synthesize_isic2024
        >>> _ = synthesize_isic2024("runs/other-clinic", lesions=60, test_lesions=0, image_size=16, seed=7, positive_rate=0.2)
        >>> e = ds.load("runs/tiny").evaluate("runs/other-clinic", out="runs/tiny-other-clinic")
        >>> e["rows"]["scored"], e["rows"]["excluded_overlap"]
        (60, 0)
        """
        from dermstack.data.audit import NEAR_THRESHOLD
        from dermstack.external import evaluate_run

        return evaluate_run(self.root, data, out, fmt=format, keep_overlap=keep_overlap, allow_missing_features=allow_missing_features,
                            near_threshold=NEAR_THRESHOLD if near_threshold is None else near_threshold, strict=strict)

    def submit(self, path: str | os.PathLike, format: str, *, sample: str | os.PathLike | None = None,
               predictions: str | os.PathLike | pl.DataFrame | None = None, model: str | None = None) -> Path:
        """Write a validated competition submission CSV (as ``dermstack submit``); nothing is written on any problem.

        Parameters
        ----------
        path : str or os.PathLike
            The CSV to write.
        format : str
            The competition's format: ``"isic2024"`` (pAUC above 80% TPR) or ``"milk10k"``.
        sample : path, optional
            The competition's sample submission: its ids and columns are matched.
        predictions : path or DataFrame, optional
            Scores from :meth:`predict` (or a ``dermstack predict`` parquet); default: the run's own test rows.
        model : str, optional
            The model submitted; default the run's ``submission_model`` (binary: its calibrated final model).

        Returns
        -------
        pathlib.Path
            ``path``.

        Examples
        --------
        >>> import dermstack as ds
        >>> run = ds.load("runs/tiny")
        >>> run.submit("runs/submission.csv", format="isic2024").name
        'submission.csv'
        >>> open("runs/submission.csv").readline().strip()
        'isic_id,target'
        """
        from dermstack.outputs.submission import submit_run

        return submit_run(self.root, format, path, sample=sample, predictions=predictions, model=model)

    def report(self, out_dir: str | os.PathLike | None = None, *, shap_sample: int | None = None, n_boot: int = 200,
               threshold: float = 0.5, specificity: float = 0.95) -> Path:
        """Write the self-contained HTML report and the numbers behind it (as ``dermstack report``).

        Parameters
        ----------
        out_dir : path, optional
            The report folder; default ``RUN_DIR/report``.
        shap_sample : int, optional
            Rows explained per model: all positives plus a fold-stratified sample of negatives (0: every row);
            default: the run's ``[report] shap_sample``.
        n_boot : int
            Bootstrap resamples of the confidence intervals.
        threshold : float
            Threshold of the first confusion matrix.
        specificity : float
            Fixed specificity of the recall and subgroup operating point.

        Returns
        -------
        pathlib.Path
            The report's ``index.html``.

        Examples
        --------
        >>> import dermstack as ds
        >>> ds.load("runs/tiny").report("runs/tiny-report", shap_sample=50, n_boot=20).name
        'index.html'
        """
        from dermstack.reports.build import ReportSettings, build_report

        settings = ReportSettings.for_run(self.root, shap_sample, n_boot=n_boot, threshold=threshold, specificity=specificity)
        return build_report(self.root, Path(out_dir) if out_dir is not None else self.root / "report", settings=settings)

    def explain(self, image_id: str) -> Explanation:
        """Why the run scores one lesion as it does: SHAP contributions to its final score, as data.

        The numbers of the first waterfall of ``dermstack report explain``: a training lesion is
        explained by the models of the fold that scored it out of fold, a test lesion by every fold's.

        Parameters
        ----------
        image_id : str
            The lesion, a row of the run's ``lesions.parquet``.

        Returns
        -------
        Explanation
            ``contributions`` (feature, group, value, contribution; largest first) that add up,
            with ``base``, to ``score`` in ``space``.

        Examples
        --------
        >>> import dermstack as ds
        >>> run = ds.load("runs/tiny")
        >>> why = run.explain(run.oof["image_id"][0])
        >>> why.contributions.columns
        ['feature', 'group', 'value', 'category', 'contribution']
        >>> abs(why.base + why.contributions["contribution"].sum() - why.score) < 1e-6
        True
        """
        from dermstack.reports.explain import explain_data

        return explain_data(self._data, image_id)
