"""Thresholds that promise a sensitivity: the order-statistic (one-sided tolerance) bound on the
positives' out-of-fold scores, beside the empirical operating threshold.

The empirical threshold reaches the target sensitivity on the rows it was chosen on; on new data its
sensitivity falls short about half the time. The guaranteed threshold is lower, by just enough that
its sensitivity on new data reaches the target with probability at least ``1 - delta``.

The bound (exact, from the binomial distribution: ``scipy.stats.binom``)
------------------------------------------------------------------------
Let ``S_1..S_n`` be the scores of ``n`` positives, drawn i.i.d. from the distribution of positive
scores that new data also draws from, and ``S_(1) <= ... <= S_(n)`` in order. A lesion is flagged
when its score is ``>= t``, so the sensitivity of threshold ``t`` on new data is
``sens(t) = P(S >= t) = 1 - G(t)`` with ``G(t) = P(S < t)`` (non-decreasing, left-continuous).

**Claim.** For ``1 <= k <= n`` and ``0 < q < 1``:
``P( sens(S_(k)) >= q ) >= P( Binomial(n, 1 - q) >= k )``, with equality when ``G`` is continuous.

*Proof.* Let ``a = sup{t : G(t) <= 1 - q}``. The set ``{t : G(t) <= 1 - q}`` is not empty
(``G(t) -> 0`` as ``t -> -inf`` and ``1 - q > 0``), is an interval unbounded below (``G`` is
non-decreasing), and contains ``a`` (``G`` is left-continuous); if ``a = +inf`` every threshold
reaches ``q`` and there is nothing to prove. So ``sens(t) >= q  <=>  t <= a``, hence

    sens(S_(k)) >= q  <=>  S_(k) <= a  <=>  #{i : S_i <= a} >= k.

``#{i : S_i <= a}`` is ``Binomial(n, p)`` with ``p = P(S <= a) = lim_{t -> a+} G(t) >= 1 - q``
(every ``t > a`` has ``G(t) > 1 - q``). A binomial count is stochastically increasing in ``p``, so
``P(#{S_i <= a} >= k) >= P(Binomial(n, 1 - q) >= k)``. When ``G`` is continuous, ``p = 1 - q``
exactly and the bound is attained. QED

So the threshold ``S_(k)`` with ``k`` the **largest** rank such that
``P(Binomial(n, 1 - q) >= k) >= 1 - delta`` (``binom.sf(k - 1, n, 1 - q) >= 1 - delta``) has
sensitivity ``>= q`` on new data with probability ``>= 1 - delta`` over the draw of the ``n``
positives, and no higher order statistic has that guarantee for every distribution (the bound is
exact for continuous scores). Ties only make it conservative. ``k`` exists iff ``P(Bin >= 1) =
1 - q^n >= 1 - delta``, i.e. ``n >= log(delta) / log(q)`` positives (target 0.8 at delta 0.05: 14;
0.95: 59); with fewer, no threshold other than "flag everything" keeps the promise, and the
threshold is undefined (None), never made up.

What the promise rests on: positives exchangeable (i.i.d.) with the new data's positives, and
independent of each other. Out-of-fold scores come from K fold models rather than the one
deployed; several lesions of one patient are correlated; and another clinic's data is not
exchangeable with this one's. ``dermstack evaluate`` measures the realised sensitivity on new data.
It is a PAC (training-conditional) guarantee, not the weaker marginal one of split conformal
prediction, which holds only on average over the draw of the positives.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import binom

from dermstack.clinical.checks import TOL, binary_inputs
from dermstack.clinical.operating import rates

#: what metrics.json says of the method
METHOD = ("order statistic: the k-th lowest positive OOF score, k the largest with "
          "P(Binomial(n_pos, 1 - target) >= k) >= 1 - delta")


def guaranteed_rank(n_pos: int, target: float, delta: float) -> int | None:
    """The largest ``k`` in ``1..n_pos`` with ``P(Binomial(n_pos, 1 - target) >= k) >= 1 - delta``
    (see the module docstring), or None when even ``k = 1`` fails (too few positives).

    >>> guaranteed_rank(100, 0.8, 0.05)
    14
    >>> guaranteed_rank(13, 0.8, 0.05) is None, guaranteed_rank(14, 0.8, 0.05)
    (True, 1)
    """
    _check(target, delta)
    if n_pos < 1:
        return None
    k = np.arange(1, n_pos + 1)
    ok = np.flatnonzero(binom.sf(k - 1, n_pos, 1.0 - target) >= 1.0 - delta - TOL)
    return int(k[ok[-1]]) if len(ok) else None


def min_positives(target: float, delta: float) -> int:
    """The fewest positives for which :func:`guaranteed_rank` exists: ``ceil(log(delta) / log(target))``.

    >>> min_positives(0.8, 0.05), min_positives(0.95, 0.05)
    (14, 59)
    """
    _check(target, delta)
    n = int(np.ceil(np.log(delta) / np.log(target) - TOL))
    return n if guaranteed_rank(n, target, delta) else n + 1


def _check(target: float, delta: float) -> None:
    if not 0 < target < 1:
        raise ValueError(f"target sensitivity must lie strictly between 0 and 1, got {target}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")


def sensitivity_threshold(y, s, target: float, delta: float) -> dict:
    """The empirical and the guaranteed threshold for ``target`` sensitivity on scores ``s``.

    Returns ``{"target_sensitivity", "threshold", "sensitivity", "specificity", "guaranteed": {...}}``:
    ``threshold`` is the empirical one (the highest score whose ``score >= t`` reaches ``target``
    on these rows: the ROC vertex of ``specificity_at_sensitivity``), with the sensitivity and
    specificity it has here. ``guaranteed``: ``threshold`` (None with too few positives),
    ``delta``, ``n_pos``, ``k`` (its rank among the positives, lowest first), ``confidence``
    (``P(Binomial(n_pos, 1 - target) >= k)``, at least ``1 - delta``), ``min_positives``, the
    ``sensitivity`` and ``specificity`` it has on these rows, ``method`` and a ``note`` saying why
    it is undefined. Binary labels; for one class of several, pass its one-vs-rest labels and column.

    >>> y = np.r_[np.ones(100), np.zeros(100)]; s = np.r_[np.linspace(0.5, 1, 100), np.linspace(0, 0.6, 100)]
    >>> r = sensitivity_threshold(y, s, 0.8, 0.05)
    >>> g = r["guaranteed"]
    >>> r["sensitivity"], g["k"], g["sensitivity"]
    (0.8, 14, 0.87)
    """
    y, s = binary_inputs(y, s)
    _check(target, delta)
    pos = np.sort(s[y])
    n = len(pos)
    out: dict = {"target_sensitivity": target, "threshold": None, "sensitivity": float("nan"), "specificity": float("nan")}
    need = min_positives(target, delta)
    g: dict = {"threshold": None, "delta": delta, "n_pos": n, "k": None, "confidence": None,
               "min_positives": need, "sensitivity": float("nan"), "specificity": float("nan"), "method": METHOD,
               "note": None}
    out["guaranteed"] = g
    if n == 0:
        g["note"] = "no positives: no threshold"
        return out
    m = int(np.ceil(n * (target - TOL)))  # fewest positives that reach the target: the m-th highest positive score
    out["threshold"] = float(pos[n - m])
    out["sensitivity"], out["specificity"] = rates(y, s, out["threshold"])
    k = guaranteed_rank(n, target, delta)
    if k is None:
        g["note"] = (f"too few positives for the guarantee: {n} < {need} needed for sensitivity >= {target:g} "
                     f"with probability >= {1 - delta:g}; threshold undefined")
        return out
    g.update(threshold=float(pos[k - 1]), k=k, confidence=float(binom.sf(k - 1, n, 1.0 - target)))
    g["sensitivity"], g["specificity"] = rates(y, s, g["threshold"])
    return out
