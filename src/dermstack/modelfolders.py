"""The model folders of a run directory: which a config keeps, which go, and which dermstack must not touch.

A run decides all three before it changes anything (:func:`check_model_folders`), so a refusal
leaves a finished run's outputs as they were."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from dermstack.errors import DermstackError
from dermstack.provenance import artifact
from dermstack.rundir import MODEL_FILES, RunPaths, foreign_files, invalidate, recorded_models, records_of

log = logging.getLogger(__name__)


def check_model_folders(paths: RunPaths, keep: Callable[[str], bool]) -> list[Path]:
    """The model folders ``keep`` rejects (the ones to remove); before that, a DermstackError for a model
    folder dermstack must neither write into nor remove: one holding files it did not write or a link
    (kept: its stage would write there; not kept: it would be removed), and one to remove that no stage
    of this run wrote. A run calls it before it invalidates or removes anything."""
    ours = recorded_models(records_of(paths.root))
    gone = []
    for d in sorted(p for p in paths.models.iterdir() if p.is_dir()) if paths.models.is_dir() else []:
        kept, foreign = keep(d.name), foreign_files(d, MODEL_FILES)
        if foreign or d.is_symlink() or not (kept or d.name in ours):
            why = (f"holds files dermstack did not write ({', '.join(foreign[:5])})" if foreign else
                   f"is a symbolic link to {d.resolve()}" if d.is_symlink() else "was not written by this run")
            made = f"makes (stage model-{d.name})" if kept else "does not make"
            raise DermstackError(f"{d}: a model folder this config {made} {why}; move it out of {paths.models} "
                                 "(nothing of the run was changed)")
        if not kept:
            gone.append(d)
    return gone


def prune_model_folders(paths: RunPaths, keep: set[str], stale: dict[str, Path]) -> None:
    """Remove the model folders (and their stage records) not in ``keep``, so that no reader mistakes
    another config's models for this run's; one :func:`check_model_folders` refuses is never removed.
    ``stale``: stages this config no longer runs (``ensemble-auto`` under a named method), each with the
    file it wrote: their records go, and the file when it is the one recorded."""
    records = records_of(paths.root)  # before a removal below invalidates what depended on it
    for d in check_model_folders(paths, keep.__contains__):
        log.info("removing model folder %s: not made by this config", d)
        shutil.rmtree(d)
        invalidate(paths.root, f"model-{d.name}")
        paths.stage_record(f"model-{d.name}").unlink(missing_ok=True)
    for stage, file in stale.items():
        if stage not in records:
            continue
        rel = str(file.relative_to(paths.root))
        if file.is_file() and not file.is_symlink() and records[stage].get("artifacts", {}).get(rel) == artifact(file):
            log.info("removing %s: this config does not run stage %s", file, stage)
            file.unlink()
        invalidate(paths.root, stage)
        paths.stage_record(stage).unlink(missing_ok=True)


def could_be_default(name: str) -> bool:
    """Whether a config without ``[[models]]`` could make the model folder ``name`` on some data: a kind
    (each part of ``<booster>+<giver>``), an ensemble method or the calibrated final model. Checked
    before ingest, when the default set is not yet known; the exact set prunes after it."""
    from dermstack.registry import ensemble_methods, model_kinds

    return name in {*ensemble_methods(), "calibrated"} or all(part in model_kinds() for part in name.split("+"))
