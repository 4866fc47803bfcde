"""dermstack.reports: SHAP and subgroup-fairness reports of a finished run, as self-contained HTML,
and ``dermstack compare``. The reports read the model kinds only through the registry (each kind's
explainer); no model package imports this one.

Public API::

    build_report(run_dir, out_dir, shap_sample=2000, settings=None) -> Path   # out_dir/index.html
    explain_lesion(run_dir, image_id, out_dir) -> Path                       # one lesion's waterfall page
    run_report(run_dir, config, shap_sample, force=False) -> Path            # a run's report/, kept when unchanged
"""
from __future__ import annotations

from pathlib import Path


def build_report(run_dir, out_dir, shap_sample: int | None = 2000, settings=None):
    """Write ``out_dir/index.html`` and the numbers behind it (see :mod:`dermstack.reports.build`)."""
    from dermstack.reports.build import build_report as _build

    return _build(run_dir, out_dir, shap_sample=shap_sample, settings=settings)


def run_report(run_dir, config: dict, shap_sample: int | None, force: bool = False):
    """The report of a finished ``dermstack run`` in ``run_dir/report``, built again only when what it reads
    (the final outputs, the ``[report]`` keys in ``config``, the versions) changed or ``force``: on an
    unchanged run it was most of a rerun's time. Returns the HTML path."""
    import logging
    import time

    from dermstack.provenance import Stage
    from dermstack.rundir import RunPaths

    paths = RunPaths(Path(run_dir))
    # not a pipeline stage: re-running it must not invalidate the final outputs it reads; a changed or
    # replaced index.html (`dermstack report` with other settings) is built again, not refused
    stage = Stage(paths.root, "report", config, [f for f in (paths.metrics, paths.oof, paths.test_predictions) if f.exists()],
                  [paths.report / "index.html"], resumable=True)
    if not force and stage.done():
        logging.getLogger(__name__).info("report: unchanged, kept (%s)", stage.outputs[0])
        return stage.outputs[0]
    t0 = time.perf_counter()
    path = build_report(paths.root, paths.report, shap_sample=shap_sample)
    stage.finish(time.perf_counter() - t0)
    return path


def explain_lesion(run_dir, image_id: str, out_dir):
    """Write the explanation page of one lesion (see :mod:`dermstack.reports.explain`)."""
    from dermstack.reports.explain import explain_lesion as _explain

    return _explain(run_dir, image_id, out_dir)


__all__ = ["build_report", "explain_lesion", "run_report"]
