"""Provenance of artifacts: package versions, file digests, and stage fingerprints for skipping."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dermstack.atomic import write_text
from dermstack.errors import DataError

log = logging.getLogger(__name__)

PACKAGES = ("dermstack", "torch", "torchvision", "timm", "lightgbm", "xgboost", "catboost", "polars", "pyarrow",
            "numpy", "scikit-learn", "scikit-image", "shap", "h5py")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of dermstack's own source files, so that a code change re-runs the stages it may affect."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".json", ".toml"):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    """Python and package versions that shape the results, and the digest of dermstack's source."""
    out = {"python": platform.python_version(), "dermstack_source": source_digest()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file (or of every file below a directory, by relative name)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while b := fh.read(chunk):
                h.update(b)
    return h.hexdigest()


def artifact(path: str | Path) -> dict:
    """What a stage record keeps of a file it wrote: its size and SHA-256 (with SHA instructions
    faster than BLAKE2b: 0.37 s for a 401k-row, 235 MiB features parquet; benchmarks/artifact_hash.py)."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_digest(path)}


def artifacts(root: Path, outputs: list[Path]) -> dict[str, dict]:
    """Relative name -> :func:`artifact` of every file of ``outputs`` (a folder: the files directly in it;
    a subfolder, like a CNN's ``nested/``, is another stage's output)."""
    files = []
    for p in outputs:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
    return {str(f.relative_to(root)): artifact(f) for f in files}


def check_artifacts(root: Path, stage: str, recorded: dict[str, dict], remedy: str) -> list[str]:
    """Compare the files a stage recorded with what is on disk now: the recorded files that are
    missing, if any (the stage has to run again anyway); else a file that changed (size or content)
    or that resolves outside ``root`` (a symbolic link to another run's model, say) is a DataError
    naming it, the stage and ``remedy``."""
    base = root.resolve()
    missing = [rel for rel in recorded if not (root / rel).is_file()]
    if missing:
        return missing
    for rel, want in recorded.items():
        path = root / rel
        if not path.resolve().is_relative_to(base):
            raise DataError(f"resolves outside the run directory (to {path.resolve()}): not what stage {stage!r} "
                            f"wrote here; replace it by the run's own: {remedy}", file=str(path))
        have = artifact(path) if path.stat().st_size == want.get("bytes") else {"bytes": path.stat().st_size}
        if have != want:
            raise DataError(f"changed since stage {stage!r} wrote it ({want.get('bytes')} bytes then, {have['bytes']} now"
                            f"{'' if have['bytes'] != want.get('bytes') else ', different content'}): damaged or "
                            f"edited; {remedy}", file=str(path))
    return missing


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    """A run stage that is skipped when its config, inputs and versions are unchanged.

    ``done()`` is true when ``stages/<name>.json`` holds the same fingerprint and every output exists.
    ``finish()`` records the fingerprint (config, inputs, versions and the stages it reads) after the
    outputs were written. ``config`` holds the config keys the stage reads (``section.key -> value``);
    ``depends_on`` names the stages whose outputs it reads, so that re-running one of them invalidates
    this one (:func:`dermstack.rundir.invalidate`).
    """

    run_dir: Path
    name: str
    config: object
    inputs: list[Path]
    outputs: list[Path]
    depends_on: list[str] = field(default_factory=list)
    #: a stage whose output resumes what an earlier run left (the EmbeddingStore): a changed file
    #: makes it run again (and check the file itself) instead of being refused
    resumable: bool = False

    @property
    def record(self) -> Path:
        return self.run_dir / "stages" / f"{self.name}.json"

    def fingerprint(self) -> str:
        ins = {str(p.relative_to(self.run_dir) if p.is_relative_to(self.run_dir) else p): file_digest(p)
               for p in self.inputs if p.exists()}
        # the stages it reads are part of it: one that joins the list (a model added to [[models]], read by
        # the ensemble) never ran before, so it invalidated nothing, yet this stage's output no longer fits
        return digest({"config": self.config, "inputs": ins, "versions": versions(), "depends_on": sorted(self.depends_on)})

    def check_inside(self) -> None:
        """A stage never writes through a link out of the run (into another run's model folder, say)."""
        for p in self.outputs:
            if not p.resolve().is_relative_to(self.run_dir.resolve()):
                link = next((q for q in (p, *p.parents) if q.is_symlink()), p)
                raise DataError(f"a link to {link.resolve()}, outside the run directory: stage {self.name!r} will not "
                                "write there; remove the link (the stage then re-runs)", file=str(link))

    def done(self, remedy: str = "remove it to have the stage re-run") -> bool:
        """True when the record holds this fingerprint and every file it recorded is there unchanged;
        a recorded file that is there but changed is a DataError (unless ``resumable``): it is not
        what this stage wrote, so it is neither trusted nor overwritten."""
        if not self.record.exists() or not all(p.exists() for p in self.outputs):
            return False
        try:
            rec = json.loads(self.record.read_text())
        except (json.JSONDecodeError, OSError):
            return False
        if rec.get("fingerprint") != self.fingerprint():
            return False
        try:
            return not check_artifacts(self.run_dir, self.name, rec.get("artifacts", {}), remedy)
        except DataError as e:
            if not self.resumable:
                raise
            log.info("stage %s runs again: %s", self.name, e)
            return False

    def finish(self, seconds: float, **extra) -> None:
        rec = {"stage": self.name, "fingerprint": self.fingerprint(), "config": self.config, "seconds": round(seconds, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
               "outputs": [str(p.relative_to(self.run_dir)) for p in self.outputs],
               "artifacts": artifacts(self.run_dir, self.outputs),
               "depends_on": list(self.depends_on), **extra}
        write_text(self.record, json.dumps(rec, indent=2, default=str))
