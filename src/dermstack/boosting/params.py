"""The boosters' ``[[models]] params``: dermstack's own keys (:class:`BoosterParams`) plus every
parameter the library itself accepts, its names read from the library by the adapter
(:meth:`~dermstack.boosting.base.BoosterAdapter.library_params`; never a hand-kept list)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Strict

from dermstack.config.limits import Rounds, Threads
from dermstack.config.problems import schema, unknown, validate

#: Booster parameters dermstack handles itself; every other key goes to the library unchanged.
GENERIC_PARAMS = ("n_estimators", "early_stopping_rounds", "early_stopping_metric", "class_weight", "device", "threads")


@schema("[[models]] params")
class BoosterParams:
    """The keys dermstack handles itself (dermstack.boosting.defaults); a kind's defaults fill the
    unset ones. Every other key must be a parameter of the booster's library."""

    n_estimators: Rounds | None = None
    early_stopping_rounds: Rounds | None = None
    #: auc | logloss
    early_stopping_metric: Annotated[str, Strict()] | None = None
    #: none | balanced | sqrt | a number
    class_weight: Any = None
    #: auto | cpu | gpu
    device: Annotated[str, Strict()] | None = None
    #: threads per fit; unset: the fits of a model run side by side on a CPU, the cores shared out
    threads: Threads | None = None


def param_problems(adapter, params: dict) -> list[tuple[str, Any, str]]:
    """``params`` keys that neither dermstack nor the library of ``adapter`` (a BoosterAdapter class)
    knows, dermstack's own keys checked against :class:`BoosterParams`, and the library's names for
    the rounds (:meth:`~dermstack.boosting.base.BoosterAdapter.round_params`) against their limit."""
    if not params:
        return []
    kind = adapter.kind
    known = {*adapter.library_params(), *GENERIC_PARAMS}
    rounds = adapter.round_params() - set(GENERIC_PARAMS)
    return ([(p, v, unknown(f"{kind} parameter", p, sorted(known))) for p, v in params.items() if p not in known]
            + validate(BoosterParams, {k: v for k, v in params.items() if k in GENERIC_PARAMS})[1]
            + [(k, v, why) for k, v in params.items() if k in rounds
               for _, _, why in validate(BoosterParams, {"n_estimators": v})[1]])
