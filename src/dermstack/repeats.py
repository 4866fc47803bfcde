"""``[cv] repeats = N``: the grouped CV again with new fold seeds, to show how much a model's score
owes to one fold split.

Repeat ``r`` (1..N-1) is a child run in ``RUN_DIR/repeats/<r>/`` with ``cv.seed + r``: its own
FoldPlan and every model, ensemble choice and calibration refitted, from the parent's LesionTable,
embeddings and features, hard-linked (copied where links fail) by stages of the same names, so
nothing is ingested or extracted twice and the child's stage records stay valid on their own. The
parent records a ``repeats`` stage over the keys the children read, so a re-run with an unchanged
config does not open them, and a changed ``repeats`` only adds or removes children.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from pathlib import Path

from dermstack.atomic import atomic_path, read_json
from dermstack.errors import DermstackError
from dermstack.features.transform import FeatureTransform
from dermstack.outputs.final import REPEATS_FOLDER as FOLDER
from dermstack.pipeline import Pipeline
from dermstack.rundir import MARKER, RunPaths

log = logging.getLogger(__name__)
STAGE = "repeats"


def link(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src`` (a copy across file systems), atomically."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


class RepeatRun(Pipeline):
    """A run whose ingest, extract and features stages link the parent run's files."""

    def __init__(self, cfg, run_dir: Path, parent: RunPaths, table, store, features, unlabelled: list[str]):
        super().__init__(cfg, run_dir)
        self.parent, self.table, self.store, self.feature_set = parent, table, store, features
        self.unlabelled = unlabelled
        self.clinical = False  # the parent reports intervals and comparisons; a repeat only its scores

    def _linked(self, name: str, keys: dict, names: list[str], depends_on: list[str]) -> None:
        srcs, dsts = [self.parent.root / n for n in names], [self.paths.root / n for n in names]
        self.stage(name, keys, srcs, dsts, depends_on, lambda: [link(s, d) for s, d in zip(srcs, dsts)])

    def ingest(self):
        self._linked("ingest", self.keys("data"), [n.name for n in (self.parent.lesions, self.parent.ingest_report)], [])
        return self.table

    def extract(self, table):
        if self.store is None:
            return None
        self._linked("extract", self.keys("extract"), [self.parent.embeddings.name], ["ingest"])
        return self.store

    def features(self, table, store):
        names = [self.parent.features.name, FeatureTransform.path_for(self.parent.features).name]
        self._linked("features", self.keys("features", "extract"), names, ["ingest", "extract"])
        return self.feature_set


def repeat_cv(parent: Pipeline, table, store, features) -> list[dict]:
    """Run repeats 1..N-1 (N = ``[cv] repeats``) as child runs and return their metrics; remove
    children a smaller N no longer makes."""
    n, root = parent.cfg.cv.repeats, parent.paths.root / FOLDER
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not (d.name.isdigit() and 1 <= int(d.name) < n):
            if d.is_symlink() or not (d / MARKER).is_dir():  # only the child runs this stage made
                raise DermstackError(f"{d}: not a repeat run dermstack wrote; move it out of {root}")
            log.info("removing %s: [cv] repeats = %d does not make it", d, n)
            shutil.rmtree(d)
    if n == 1:
        if root.is_dir() and not root.is_symlink():
            root.rmdir()
        parent.paths.stage_record(STAGE).unlink(missing_ok=True)
        return []
    dirs = [root / str(r) for r in range(1, n)]
    p = parent.paths
    keys = {k: v for k, v in parent.keys("data", "cv", "extract", "features", "models", "ensemble").items()
            if k != "cv.dask_address"}
    inputs = [p.lesions, p.features] + ([p.embeddings] if store is not None else [])
    outputs = [d / "metrics.json" for d in dirs]
    results: list[dict] = []

    def work():
        for r, d in enumerate(dirs, start=1):
            cfg = copy.deepcopy(parent.cfg)
            cfg = dataclasses.replace(cfg, cv=dataclasses.replace(cfg.cv, seed=parent.cfg.cv.seed + r, repeats=1),
                                      report=dataclasses.replace(cfg.report, enabled=False))
            log.info("CV repeat %d of %d: fold seed %d, in %s", r + 1, n, cfg.cv.seed, d)
            child = RepeatRun(cfg, d, p, table, store, features, parent.unlabelled)
            results.append(child.execute())

    if not parent.stage(STAGE, keys, inputs, outputs, ["ingest", "extract", "features"], work):
        results = [read_json(o, "repeat metrics") for o in outputs]
    return results
