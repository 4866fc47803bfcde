"""A run directory: its layout, the lock a live run holds, and whether its outputs are current.

Four rules keep a run directory honest:

- **Only dermstack's own folders.** :func:`claim_dir` refuses an ``--out`` folder that is not empty
  and not one dermstack wrote (a run directory has ``stages/``; other outputs name the files they
  write), so no file of the user's is ever removed or overwritten; a rerun removes only the files
  that ``stages/run.json`` recorded and the report's own files.

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
  Every stage record (and ``run.json``) lists the size and SHA-256 of each file it wrote; a file
  that differs, or a recorded path (a model folder, say) that resolves outside the run, is named
  with the stage to re-run; a model folder no stage recorded is used with a warning.
"""
from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dermstack.atomic import read_json, write_json
from dermstack.errors import DataError, DermstackError, RunLockedError
from dermstack.provenance import artifacts, check_artifacts

log = logging.getLogger(__name__)
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


#: a run directory is a folder with this subfolder (made when a run first claims the folder)
MARKER = "stages"
#: what ``report`` writes into its folder (``report/`` of a run, or ``--out``)
REPORT_FILES = ("index.html", "summary.json", "curves.json", "metrics.parquet", "operating_points.parquet",
                "shap_groups.parquet", "shap_importance.parquet", "subgroups.parquet", "shap", "shap/*.npz", "explain_*.html")
#: what the stage commands write into one folder (``boosting train --out DIR``; see the README's command table)
STAGE_DIR_FILES = (*LAYOUT.values(), "models/*", "boosting_metrics.json", "*.report.json", "features.transform.npz",
                   "report/*", "submission*.csv")
#: what a saved model folder holds (dermstack.saved, the model kinds' native files)
MODEL_FILES = ("model.json", "oof.parquet", "test.parquet", "metrics.json", "importance.parquet", "fold*_seed*.*",
               "reference.npz", "nested", "nested/*")


def _temporary(name: str) -> bool:
    """A temporary file an interrupted atomic write left (``.<name>.<pid>.tmp...``: dermstack.atomic)."""
    return name.startswith(".") and ".tmp" in name


def is_report(folder: Path) -> bool:
    """``folder`` is a run directory's ``report/`` or holds a report dermstack wrote (its ``summary.json``);
    the report writes only its own file names, so files of the user's beside them stay."""
    if folder.name == LAYOUT["report"] and (folder.parent / MARKER).is_dir():
        return True
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"run_dir", "sections", "first_screen"} <= summary.keys()


def enclosing_run_dir(folder: str | Path) -> Path | None:
    """The run directory ``folder`` is (or lies inside), following links; None when there is none."""
    folder = Path(folder).resolve()
    return next((d for d in (folder, *folder.parents) if (d / MARKER).is_dir()), None)


def foreign_files(folder: Path, owned: tuple[str, ...] = (), marker: str | Callable[[Path], bool] | None = None) -> list[str]:
    """Entries of ``folder`` (relative names, nested ones too) that dermstack did not write there:
    none when ``marker`` (a name, or a test of the folder) says the folder is dermstack's, else every
    entry no pattern of ``owned`` matches."""
    if not folder.is_dir() or (callable(marker) and marker(folder)) or (isinstance(marker, str) and (folder / marker).exists()):
        return []
    out, todo = [], sorted(folder.iterdir())
    while todo:  # breadth first, into owned folders only: a home folder given as --out is not walked
        p = todo.pop(0)
        rel = str(p.relative_to(folder))
        if _temporary(p.name):
            continue
        if not any(fnmatch.fnmatch(rel, pat) for pat in owned):
            out.append(rel + ("/" if p.is_dir() else ""))
        elif p.is_dir() and not p.is_symlink():
            todo += sorted(p.iterdir())
    return out


def claim_dir(folder: str | Path, what: str, owned: tuple[str, ...] = (), marker: str | Callable[[Path], bool] | None = None,
              suggest: Path | None = None) -> Path:
    """Refuse to write into ``folder`` when it holds files dermstack did not write (the user's home
    folder given as ``--out``, say): a DermstackError naming the folder, a few of those files and
    what to do (``suggest``: the ``--out`` to propose, when ``--out`` is not ``folder`` itself). A
    missing or empty folder, or one of dermstack's own, is fine."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DermstackError(f"{folder}: is a file, not a folder; give a folder for the {what}")
    run = enclosing_run_dir(folder) if what != "run directory" else None
    inner = folder.resolve().relative_to(run).parts[:1] if run is not None else ()
    if inner in ((MARKER,), (LAYOUT["models"],)) and not (what == "model folder" and inner == (LAYOUT["models"],)):
        raise DermstackError(f"{folder}: inside {run / inner[0]}, which holds only what the run's stages write (a rerun "
                             f"would refuse or remove a {what} there); give a folder outside it")
    foreign = foreign_files(folder, owned, marker)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        where = folder if folder.is_absolute() else f"{folder} ({folder.resolve()})"
        raise DermstackError(f"{where}: not empty and not a {what} dermstack wrote (it holds {shown}); dermstack never "
                             f"deletes or overwrites files it did not write: give a new or empty folder "
                             f"(e.g. --out {suggest or folder / ('dermstack-' + what.split()[0])}) or move those files away")
    return folder


def claim_run_dir(root: str | Path) -> RunPaths:
    """A run directory ready to be written: ``root`` claimed (:func:`claim_dir`) and marked as a run."""
    root = claim_dir(root, "run directory", marker=MARKER)
    (root / MARKER).mkdir(parents=True, exist_ok=True)
    return RunPaths(root)


@contextmanager
def claimed_run_dir(root: str | Path) -> Iterator[RunPaths]:
    """:func:`claim_run_dir` for the life of a run: one that fails before it wrote anything (a ``[data]
    target`` the data lacks, say) into a folder that was new or empty leaves no half-made run directory."""
    root = Path(root)
    new = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    paths = claim_run_dir(root)
    try:
        yield paths
    except BaseException:
        bare = {p.name for p in root.iterdir()} <= {MARKER, LAYOUT["lock"]} and not any((root / MARKER).iterdir())
        if new and bare:
            (root / MARKER).rmdir()
            paths.lock.unlink(missing_ok=True)
            root.rmdir()
        raise


class RunLock:
    """Exclusive lock on a run directory for the life of a run (``with RunLock(root): ...``)."""

    def __init__(self, root: str | Path):
        self.path = RunPaths(Path(root)).lock
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
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


def records_of(root: Path) -> dict[str, dict]:
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
    records = records_of(paths.root)
    gone, frontier = set(), {stage}
    while frontier:
        frontier = {n for n, r in records.items() if n not in gone and set(r.get("depends_on", [])) & (frontier | gone)}
        gone |= frontier
    for name in sorted(gone):
        paths.stage_record(name).unlink(missing_ok=True)
    remove_final_outputs(paths)
    return sorted(gone)


def forget_overwritten(root: str | Path, stage: str) -> list[str]:
    """After ``stage`` wrote its files: remove the records of other stages that listed any of them
    (``ensemble-auto``'s candidates and a ``model-mean`` stage share ``models/mean/``, say); those
    records no longer describe the files, so their stages run again when next needed."""
    paths = RunPaths(Path(root))
    records = records_of(paths.root)
    mine = set(records.get(stage, {}).get("artifacts", {}))
    stale = sorted(n for n, r in records.items() if n not in (stage, FINAL) and mine & set(r.get("artifacts", {})))
    for name in stale:
        paths.stage_record(name).unlink(missing_ok=True)
    return stale


def remove_final_outputs(paths: RunPaths) -> None:
    """Remove the final outputs ``run.json`` recorded, ``run.json`` itself and the report's own
    files; nothing else (a file the user put into ``report/`` stays)."""
    final = records_of(paths.root).get(FINAL, {})
    for rel in [*final.get("artifacts", {}), *final.get("unverified", [])]:
        path = paths.root / rel
        # a record is a file anyone can edit: only a file of this run's own is ever removed
        if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(paths.root.resolve()):
            path.unlink()
    paths.stage_record(FINAL).unlink(missing_ok=True)
    report = paths.report
    if report.is_dir() and not report.is_symlink():
        for p in sorted(report.rglob("*"), reverse=True):  # files before their folders
            if p.is_dir():
                if not any(p.iterdir()):
                    p.rmdir()
            elif any(fnmatch.fnmatch(str(p.relative_to(report)), pat) for pat in REPORT_FILES) or _temporary(p.name):
                p.unlink()
        if not any(report.iterdir()):
            report.rmdir()


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
    records = records_of(paths.root)
    read_back = [paths.metrics, paths.oof, paths.test_predictions]
    # submission.csv is written for the user and read by no command: `submit --out RUN_DIR/submission.csv`
    # may replace it without making the run look damaged
    unverified = [str(p.relative_to(paths.root)) for p in [paths.submission] if p.is_file()]
    write_json(paths.stage_record(FINAL), {"stage": FINAL, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "stages": {s: records.get(s, {}).get("fingerprint") for s in stages},
                                           "artifacts": artifacts(paths.root, read_back), "unverified": unverified,
                                           **extra})


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
    final = read_json(paths.stage_record(FINAL), "stage record")
    listed = {f.stem for f in (paths.root / MARKER).glob("*.json")}  # names from run.json are data, not paths
    records = {name: read_json(paths.stage_record(name), "stage record") for name in final.get("stages", {}) if name in listed}
    for name, fp in final.get("stages", {}).items():
        if records.get(name, {}).get("fingerprint") != fp:
            raise DermstackError(f"{paths.root}: stage {name!r} changed after the run finished; {rerun}")
    check_model_dirs(paths, records, rerun)
    check_files(paths, final, records, rerun)
    current = flat_config(RunConfig.from_toml(paths.config).to_dict())
    for name in final.get("stages", {}):
        for key, value in (records[name].get("config") or {}).items():
            if not _same(current.get(key), value):
                raise DermstackError(f"{paths.root}: config.toml {key} = {current.get(key)!r} differs from what stage "
                                     f"{name!r} ran with ({value!r}); {rerun}")


#: what a finished ``dermstack run`` directory holds besides its stage records
FINISHED = ("config.toml", "lesions.parquet", "metrics.json", "models")


def check_finished(root: str | Path) -> Path:
    """``root`` as a finished run directory that :func:`check_current` accepts and that holds every
    one of :data:`FINISHED`; otherwise the DermstackError ``predict``, ``submit`` and
    :func:`dermstack.load` all give, naming the file or stage."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such run directory" if not root.exists() else "not a directory", file=str(root))
    check_current(root)  # first: names a damaged or missing file and the stage that writes it
    for need in FINISHED:
        if not (root / need).exists():
            raise DataError(f"not a finished dermstack run directory (no {need})", file=str(root))
    return root


def recorded_models(records: dict[str, dict]) -> set[str]:
    """Names of the model folders the stage records say they wrote (``model-<name>`` stages, and the
    candidates ``ensemble-auto`` lists among its files)."""
    return ({Path(rel).parts[1] for rec in records.values() for rel in rec.get("artifacts", {})
             if Path(rel).parts[0] == LAYOUT["models"] and len(Path(rel).parts) > 2}
            | {name.removeprefix("model-") for name in records if name.startswith("model-")})


def check_files(paths: RunPaths, final: dict, records: dict[str, dict], rerun: str) -> None:
    """Every file the run's stages recorded is there, unchanged and inside the run
    (:func:`dermstack.provenance.check_artifacts`)."""
    for name, rec in [*records.items(), (FINAL, final)]:
        stage = "the final outputs" if name == FINAL else f"stage {name!r}"
        missing = check_artifacts(paths.root, name, rec.get("artifacts", {}), f"re-run {stage}: remove the file, then {rerun}")
        if missing:
            raise DataError(f"missing: {stage} wrote it; {rerun}", file=str(paths.root / missing[0]))


def check_model_dirs(paths: RunPaths, records: dict[str, dict], rerun: str) -> None:
    """No model folder links out of the run; one that no stage recorded (a stage command's
    ``--out RUN_DIR/models``, say) is used but said: its files are not verified."""
    for d in sorted(paths.models.iterdir()) if paths.models.is_dir() else []:
        if d.is_symlink() or not d.resolve().is_relative_to(paths.root.resolve()):
            raise DataError(f"a link to {d.resolve()}: a model from elsewhere, not this run's; remove the link, then "
                            f"{rerun} (stage model-{d.name} re-runs)", file=str(d))
    if not all("artifacts" in rec for rec in records.values()):
        return  # recorded before stage records listed their files
    recorded = recorded_models(records)
    for d in sorted(paths.models.iterdir()) if paths.models.is_dir() else []:
        if d.is_dir() and (d / "model.json").exists() and d.name not in recorded:
            log.warning("%s: a model folder no stage of this run wrote (a stage command's --out?): used as it is, its "
                        "files unverified", d)
