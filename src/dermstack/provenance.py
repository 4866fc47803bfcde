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


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    """A run stage that is skipped when its config, inputs and versions are unchanged.

    ``done()`` is true when ``stages/<name>.json`` holds the same fingerprint and every output exists.
    ``finish()`` records the fingerprint after the outputs were written. ``config`` holds the config
    keys the stage reads (``section.key -> value``); ``depends_on`` names the stages whose outputs it
    reads, so that re-running one of them invalidates this one (:func:`dermstack.rundir.invalidate`).
    """

    run_dir: Path
    name: str
    config: object
    inputs: list[Path]
    outputs: list[Path]
    depends_on: list[str] = field(default_factory=list)

    @property
    def record(self) -> Path:
        return self.run_dir / "stages" / f"{self.name}.json"

    def fingerprint(self) -> str:
        ins = {str(p.relative_to(self.run_dir) if p.is_relative_to(self.run_dir) else p): file_digest(p)
               for p in self.inputs if p.exists()}
        return digest({"config": self.config, "inputs": ins, "versions": versions()})

    def done(self) -> bool:
        if not self.record.exists() or not all(p.exists() for p in self.outputs):
            return False
        try:
            return json.loads(self.record.read_text()).get("fingerprint") == self.fingerprint()
        except (json.JSONDecodeError, OSError):
            return False

    def finish(self, seconds: float, **extra) -> None:
        rec = {"stage": self.name, "fingerprint": self.fingerprint(), "config": self.config, "seconds": round(seconds, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
               "outputs": [str(p.relative_to(self.run_dir)) for p in self.outputs],
               "depends_on": list(self.depends_on), **extra}
        write_text(self.record, json.dumps(rec, indent=2, default=str))
