"""The boosters' ``[[models]] params``: dermstack's own keys (:class:`BoosterParams`) plus every
parameter the library itself accepts, its names read from the library by the adapter
(:meth:`~dermstack.boosting.base.BoosterAdapter.library_params`; never a hand-kept list)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Strict

from dermstack.config.problems import schema, unknown
from dermstack.config.types import NonNegInt, PosInt

#: Booster parameters dermstack handles itself; every other key goes to the library unchanged.
GENERIC_PARAMS = ("n_estimators", "early_stopping_rounds", "early_stopping_metric", "class_weight", "device", "threads")
#: the counts among them (rounds, threads): whole numbers >= 1
GENERIC_COUNTS = ("n_estimators", "early_stopping_rounds", "threads")


@schema("[[models]] params")
class BoosterParams:
    """The keys dermstack handles itself (dermstack.boosting.defaults); a kind's defaults fill the
    unset ones. Every other key must be a parameter of the booster's library."""

    n_estimators: PosInt | None = None
    early_stopping_rounds: NonNegInt | None = None
    #: auc | logloss
    early_stopping_metric: Annotated[str, Strict()] | None = None
    #: none | balanced | sqrt | a number
    class_weight: Any = None
    #: auto | cpu | gpu
    device: Annotated[str, Strict()] | None = None
    #: threads per fit; unset: the fits of a model run side by side on a CPU, the cores shared out
    threads: PosInt | None = None


def param_problems(adapter, params: dict) -> list[tuple[str, Any, str]]:
    """``params`` keys that neither dermstack nor the library of ``adapter`` (a BoosterAdapter class) knows."""
    if not params:
        return []
    kind = adapter.kind
    known = {*adapter.library_params(), *GENERIC_PARAMS}
    return ([(p, v, unknown(f"{kind} parameter", p, sorted(known))) for p, v in params.items() if p not in known]
            + [(k, params[k], "must be a whole number of at least 1") for k in GENERIC_COUNTS
               if k in params and not (isinstance(params[k], int) and not isinstance(params[k], bool) and params[k] >= 1)])
