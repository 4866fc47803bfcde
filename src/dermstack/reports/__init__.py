"""dermstack.reports: SHAP and subgroup-fairness reports of a finished run, as self-contained HTML,
and ``dermstack compare``. The reports read the model kinds only through the registry (each kind's
explainer); no model package imports this one.

Public API::

    build_report(run_dir, out_dir, shap_sample=2000, settings=None) -> Path   # out_dir/index.html
    explain_lesion(run_dir, image_id, out_dir) -> Path                       # one lesion's waterfall page
"""
from __future__ import annotations


def build_report(run_dir, out_dir, shap_sample: int | None = 2000, settings=None):
    """Write ``out_dir/index.html`` and the numbers behind it (see :mod:`dermstack.reports.build`)."""
    from dermstack.reports.build import build_report as _build

    return _build(run_dir, out_dir, shap_sample=shap_sample, settings=settings)


def explain_lesion(run_dir, image_id: str, out_dir):
    """Write the explanation page of one lesion (see :mod:`dermstack.reports.explain`)."""
    from dermstack.reports.explain import explain_lesion as _explain

    return _explain(run_dir, image_id, out_dir)


__all__ = ["build_report", "explain_lesion"]
