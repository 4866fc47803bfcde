"""A run directory: its layout, the lock a live run holds, and whether its outputs are current.

Three rules keep a run directory honest:

- **One live run.** ``RunLock`` takes an exclusive ``flock`` on ``RUN_DIR/.lock`` (and writes who
  holds it there). The kernel drops the lock when its process dies, so a killed run never leaves it
  stuck, and a second run into the same directory fails at once naming the holder.
- **Re-running a stage invalidates what depends on it, before it starts.** Stage records
  (``stages/<name>.json``, :class:`dermstack.provenance.Stage`) list what they depend on;
  :func:`invalidate` removes the records downstream of a stage that is about to run, and the run's
  final outputs (``run.json``, metrics, predictions, submission, report), so an interrupted rerun
  never leaves the old config's outputs looking current.
- **Readers check before they trust.** ``stages/run.json`` is written last, with the fingerprint
  of every stage the final outputs came from. :func:`check_current` (used by ``submit``,
  ``predict`` and ``report``) refuses a directory without it, one whose stage records changed
  since, or one whose ``config.toml`` no longer matches what a stage recorded, naming the stage.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from dermstack.atomic import write_json
from dermstack.errors import DermstackError

FINAL = "run"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __getattr__(self, name: str) -> Path:
        try:
            return self.root / LAYOUT[name]
        except KeyError:
            raise AttributeError(name) from None

    def stage_record(self, name: str) -> Path:
        return self.root / "stages" / f"{name}.json"

    @property
    def final_outputs(self) -> list[Path]:
        """What a finished run writes last, from the models' outputs."""
        return [self.metrics, self.oof, self.test_predictions, self.submission, self.report, self.stage_record(FINAL)]


LAYOUT = {
    "config": "config.toml", "versions": "versions.json", "lesions": "lesions.parquet",
    "ingest_report": "ingest_report.json", "folds": "folds.parquet", "embeddings": "embeddings.h5",
    "features": "features.parquet", "models": "models", "oof": "oof.parquet",
    "test_predictions": "test_predictions.parquet", "metrics": "metrics.json", "submission": "submission.csv",
    "synthetic": "data", "report": "report", "lock": ".lock",
}


class RunLockedError(DermstackError):
    """Another live process holds the run directory."""


class RunLock:
    """Exclusive lock on a run directory for the life of a run (``with RunLock(root): ...``)."""

    def __init__(self, root: str | Path):
        self.path = RunPaths(Path(root)).lock
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"run directory {self.path.parent} is in use by a live run ({holder}); "
                                 "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((root / "stages").glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            out[f.stem] = {}
    return out


def invalidate(root: str | Path, stage: str) -> list[str]:
    """Before ``stage`` re-runs: remove the records of every stage that depends on it (transitively)
    and the run's final outputs. Returns the removed stage names."""
    paths = RunPaths(Path(root))
    records = _records(paths.root)
    gone, frontier = set(), {stage}
    while frontier:
        frontier = {n for n, r in records.items() if n not in gone and set(r.get("depends_on", [])) & (frontier | gone)}
        gone |= frontier
    for name in sorted(gone):
        paths.stage_record(name).unlink(missing_ok=True)
    for p in paths.final_outputs:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return sorted(gone)


def flat_config(cfg_dict: dict) -> dict:
    """``section.key -> value`` for tables, ``models.<name> -> entry`` for ``[[models]]``."""
    out = {}
    for section, body in cfg_dict.items():
        if isinstance(body, list):
            for entry in body:
                out[f"{section}.{entry.get('name') or entry.get('kind')}"] = entry
        else:
            for k, v in body.items():
                out[f"{section}.{k}"] = v
    return out


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def finish(root: str | Path, stages: list[str], **extra) -> None:
    """Record that the final outputs were made from these stages' current records."""
    paths = RunPaths(Path(root))
    records = _records(paths.root)
    write_json(paths.stage_record(FINAL), {"stage": FINAL, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "stages": {s: records.get(s, {}).get("fingerprint") for s in stages}, **extra})


def check_current(root: str | Path) -> None:
    """Refuse a run directory whose final outputs do not match its stage records and config (see
    the module docstring); a DermstackError names the stage to re-run. A folder without
    ``config.toml`` or ``stages/`` is not a ``dermstack run`` directory (models written by the
    stage-by-stage CLI) and is not checked."""
    from dermstack.config import RunConfig

    paths = RunPaths(Path(root))
    if not (paths.config.exists() and (paths.root / "stages").is_dir()):
        return
    rerun = f"re-run `dermstack run CONFIG --out {paths.root}`"
    if not paths.stage_record(FINAL).exists():
        raise DermstackError(f"{paths.root}: the run did not finish (or a rerun was interrupted): {rerun}")
    final = json.loads(paths.stage_record(FINAL).read_text())
    records = _records(paths.root)
    for name, fp in final.get("stages", {}).items():
        if records.get(name, {}).get("fingerprint") != fp:
            raise DermstackError(f"{paths.root}: stage {name!r} changed after the run finished; {rerun}")
    current = flat_config(RunConfig.from_toml(paths.config).to_dict())
    for name in final.get("stages", {}):
        for key, value in (records[name].get("config") or {}).items():
            if not _same(current.get(key), value):
                raise DermstackError(f"{paths.root}: config.toml {key} = {current.get(key)!r} differs from what stage "
                                     f"{name!r} ran with ({value!r}); {rerun}")
