"""dermstack: skin-lesion image collections to strong, explainable classifiers.

The Python API (:mod:`dermstack.api`) runs the same code as the ``dermstack`` command and reads and
writes the same run directories. Importing dermstack is light and sets nothing: the API's modules
(and torch, LightGBM ...) load on first use.

LightGBM and XGBoost use OpenMP, whose threads busy-wait by default: on a loaded machine (more
runnable threads than cores) they train up to 10x slower. The ``dermstack`` command sets
``OMP_WAIT_POLICY=PASSIVE`` for its own process; in a notebook set it yourself, before anything
loads an OpenMP runtime (first cell: ``import os; os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")``).

Examples
--------
>>> import dermstack as ds
>>> run = ds.load("runs/tiny")  # fitted by ds.fit's example
>>> run.metrics["task"]
'binary'
>>> sorted(ds.kinds()["models"])[:2]
['catboost', 'cnn']
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dermstack.errors import ConfigError, DataError, DermstackError, PluginError, RunLockedError
from dermstack.lazy import lazy_names

if TYPE_CHECKING:
    from dermstack.api import compare, fit, kinds, load
    from dermstack.config import RunConfig
    from dermstack.data.table import LesionTable
    from dermstack.fitted import FittedRun
    from dermstack.reports.explain import Explanation

__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first use (PEP 562)
_LAZY = {
    "fit": "dermstack.api", "load": "dermstack.api", "compare": "dermstack.api", "kinds": "dermstack.api",
    "FittedRun": "dermstack.fitted", "Explanation": "dermstack.reports.explain", "RunConfig": "dermstack.config",
    "LesionTable": "dermstack.data.table",
}

__all__ = ["fit", "load", "compare", "kinds", "FittedRun", "Explanation", "RunConfig", "LesionTable",
           "DermstackError", "DataError", "ConfigError", "PluginError", "RunLockedError", "__version__"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
