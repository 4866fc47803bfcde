"""A wheelhouse for an offline install, e.g. a Kaggle notebook without internet: dermstack's wheel and a
wheel of every dependency at its locked version (constraints.txt), except torch, torchvision and the
CUDA packages only they need, which the notebook image already has.

    python scripts/wheelhouse.py --out wheelhouse [--with-torch] [--platform manylinux2014_x86_64 --python-version 3.11]

Run it online, in a clone; then, offline, with the folder attached:

    pip install --no-index --find-links wheelhouse dermstack

``--platform`` / ``--python-version`` fetch wheels for another machine than this one (binary wheels only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
#: what a notebook image with its own torch already has; the packages only these need are left out too
TORCH_STACK = ("torch", "torchvision")

def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build_wheel(out: Path) -> Path:
    """dermstack's wheel in ``out`` (``python -m build``)."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True)
    return max(out.glob("dermstack-*.whl"), key=lambda p: p.stat().st_mtime)


def resolve(wheel: Path, target: list[str]) -> dict[str, dict]:
    """Name -> pip's install report item of every distribution installing ``wheel`` under the lock brings."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        where = ["--target", str(Path(tmp) / "t")] if target else []
        pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "-c", str(ROOT / "constraints.txt"), *target, *where, str(wheel))
        items = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i for i in items}


def needed(items: dict[str, dict], skip: tuple[str, ...]) -> set[str]:
    """The distributions dermstack needs, following requirements (and the extras asked for) from
    dermstack down, but not into ``skip``: what only the skipped packages need is left out."""
    seen: set[tuple[str, frozenset]] = set()
    todo = [("dermstack", frozenset())]
    while todo:
        name, extras = todo.pop()
        for text in items[name]["metadata"].get("requires_dist", []):
            req = Requirement(text)
            dep = canonicalize_name(req.name)
            if dep in skip or dep not in items:
                continue
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            if (dep, frozenset(req.extras)) not in seen:
                seen.add((dep, frozenset(req.extras)))
                todo.append((dep, frozenset(req.extras)))
    out = {name for name, _ in seen}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    ap.add_argument("--with-torch", action="store_true", help="also torch and torchvision (an image without a torch in range)")
    ap.add_argument("--platform", help="e.g. manylinux2014_x86_64 (binary wheels only)")
    ap.add_argument("--python-version", help="e.g. 3.11, with --platform")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = ["--only-binary=:all:"] * bool(args.platform or args.python_version)
    target += ["--platform", args.platform] * bool(args.platform) + ["--python-version", args.python_version] * bool(args.python_version)
    wheel = build_wheel(args.out)
    items = resolve(wheel, target)
    wanted = needed(items, () if args.with_torch else TORCH_STACK)
    pins = [f"{n}=={items[n]['metadata']['version']}" for n in sorted(wanted)]
    if target:
        pip("download", "--no-deps", "--dest", str(args.out), *target, *pins)
    else:  # a package published only as an sdist gets built into a wheel here, so the notebook builds nothing
        pip("wheel", "--no-deps", "--wheel-dir", str(args.out), *pins)
    print(f"{args.out}: {wheel.name} and {len(pins)} dependencies; offline: "
          f"pip install --no-index --find-links {args.out} dermstack", file=sys.stderr)


if __name__ == "__main__":
    main()
