"""``[cv] group``: held-out groups of a FoldPlan (a site, a clinic, a camera: any column), kept whole
together with every patient, and the rules of leave-one-group-out folds.

A row's *held-out group* is its value of the column (``<missing>`` for a null). A patient (else a
lesion, else an image: the FoldPlan's unit) whose rows carry two values would be split if each value
were held out on its own, so the values it links are merged into one group, named ``"A + B"``:
the groups are the connected components of the graph of values and patients
(``scipy.sparse.csgraph.connected_components``), and every merge is recorded with the patients that
caused it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from dermstack.config.problems import did_you_mean
from dermstack.data.table import CLASS_PREFIX
from dermstack.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: the held-out group of a row whose value of the column is null
MISSING = "<missing>"
#: joins the values a patient merged into one held-out group
JOIN = " + "
#: "few" groups for leave-one-group-out: each group is one fold, and every model fits once per fold
#: and seed, so 20 groups cost 4x the default 5 folds; more groups: grouped K-fold keeps each whole
MAX_HELD_OUT_GROUPS = 20
#: a held-out group under this many rows (or, binary, positives) is flagged small: its own figures
#: rest on too few rows (the report's subgroup rule, dermstack.reports.subgroups)
SMALL_ROWS, SMALL_POSITIVES = 30, 5
#: columns that cannot group: the label itself (a group would be a class) and the row bookkeeping
NOT_GROUPS = ("target", "label", "split", "image_ref", "mask_ref")


@dataclass
class HeldOutGroups:
    """``names``: each training row's held-out group; ``merged``: the groups a patient joined
    (``{"group", "values", "by", "patients", "examples"}``); ``missing``: rows whose value is null."""

    column: str
    names: np.ndarray
    merged: list[dict] = field(default_factory=list)
    missing: int = 0

    @classmethod
    def of(cls, df: pl.DataFrame, column: str, unit_column: str, units: np.ndarray) -> HeldOutGroups:
        """The held-out groups of ``df``'s rows by ``column``, merged through ``units`` (each row's
        patient, else lesion, else image; ``unit_column`` names which)."""
        check_column(df, column)
        values = df[column].cast(pl.String).fill_null(MISSING).to_numpy().astype(str)
        v_names, v_idx = np.unique(values, return_inverse=True)
        u_names, u_idx = np.unique(units.astype(str), return_inverse=True)
        nv = len(v_names)
        graph = sparse.coo_matrix((np.ones(len(values)), (v_idx, nv + u_idx)), shape=(nv + len(u_names),) * 2)
        _, comp = connected_components(graph, directed=False)
        comp_of_value = comp[:nv]
        names_of_comp: dict[int, str] = {}
        merged = []
        for c in np.unique(comp_of_value):
            members = sorted(v_names[comp_of_value == c].tolist())
            names_of_comp[c] = JOIN.join(members)
            if len(members) > 1:
                in_comp = comp_of_value[v_idx] == c
                pairs = pl.DataFrame({"u": u_names[u_idx[in_comp]], "v": values[in_comp]}).unique()
                spanning = pairs.group_by("u").len().filter(pl.col("len") > 1).sort("u")["u"].to_list()
                merged.append({"group": names_of_comp[c], "values": members, "by": unit_column,
                               "patients": len(spanning), "examples": spanning[:5]})
                log.warning("[cv] group = %r: %d %s(s) have rows in several of %s (e.g. %s), so these are held out "
                            "together as one group %r", column, len(spanning), unit_column, members, spanning[:3],
                            names_of_comp[c])
        names = np.array([names_of_comp[c] for c in comp_of_value])[v_idx]
        missing = int((values == MISSING).sum())
        if missing:
            log.warning("[cv] group = %r: %d training rows have no value; they form the held-out group %r",
                        column, missing, MISSING)
        return cls(column, names, merged, missing)

    def describe(self, leave_one_group_out: bool) -> dict:
        """What the FoldPlan records of its grouping (folds.parquet metadata, ``source``-like)."""
        return {"column": self.column, "leave_one_group_out": leave_one_group_out,
                "groups": int(len(np.unique(self.names))), "merged": self.merged, "missing": self.missing}

    def leave_one_out(self, y: np.ndarray, binary: bool) -> np.ndarray:
        """Fold of each row when each held-out group is one fold (groups in sorted order), after
        checking that the groups are few and each can be held out: a binary group needs positives and
        negatives (its own ROC-AUC, and early stopping on it, are undefined otherwise). Small groups
        are warned about, not refused."""
        names, fold = np.unique(self.names, return_inverse=True)
        names = names.tolist()  # plain str in the messages
        where = f"[cv] group = {self.column!r} with leave_one_group_out"
        if len(names) < 2:
            raise DataError(f"{where}: every training row is in one group ({names[0]!r}); holding it out leaves nothing "
                            "to train on", column=self.column)
        if len(names) > MAX_HELD_OUT_GROUPS:
            raise DataError(f"{where}: {len(names)} groups, more than the {MAX_HELD_OUT_GROUPS} that leave-one-group-out "
                            "takes (one fold each, every model fitted once per fold); set leave_one_group_out = false: "
                            f"grouped K-fold keeps each group whole in [cv] n_splits folds", column=self.column)
        n = np.bincount(fold)
        pos = np.bincount(fold, weights=np.asarray(y, dtype=float)).astype(int) if binary else None
        if binary:
            lacking = [f"{names[g]!r} ({n[g]} rows, {pos[g]} positive)" for g in range(len(names)) if pos[g] in (0, n[g])]
            if lacking:
                raise DataError(
                    f"{where}: {len(lacking)} group(s) have only one class: {', '.join(lacking)}. A held-out group needs "
                    "positives and negatives (its ROC-AUC and the models' early stopping on it are undefined otherwise). "
                    "Map such groups onto another value of the column, or set leave_one_group_out = false (grouped "
                    "K-fold keeps each group whole and stratifies the folds)", column=self.column)
        small = [f"{names[g]!r} ({n[g]} rows" + (f", {pos[g]} positive)" if binary else ")") for g in range(len(names))
                 if n[g] < SMALL_ROWS or (binary and pos[g] < SMALL_POSITIVES)]
        if small:
            log.warning("%s: small held-out group(s) %s: their own figures rest on few rows (flagged small in "
                        "metrics.json)", where, ", ".join(small))
        return fold.astype(np.int8)


def check_column(df: pl.DataFrame, column: str) -> None:
    """A column the FoldPlan can group by: present, not the label and not row bookkeeping."""
    if column not in df.columns:
        known = [c for c in df.columns if c not in NOT_GROUPS and not c.startswith(CLASS_PREFIX)]
        raise ConfigError(f"[cv] group = {column!r}: the lesion table has no such column{did_you_mean(column, known)}; "
                          f"it has {', '.join(known)}")
    if column in NOT_GROUPS or column.startswith(CLASS_PREFIX):
        raise ConfigError(f"[cv] group = {column!r}: the label and row bookkeeping cannot group the folds (a group would be "
                          "a class, or every row its own); name a site, clinic or camera column such as `attribution`")
