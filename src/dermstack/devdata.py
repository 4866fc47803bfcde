"""Where the shared development data is (tests and benchmarks both look here)."""
from __future__ import annotations

import os
from pathlib import Path

#: the repository root of a source checkout (src/dermstack/devdata.py -> the repo)
REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """``$DERMSTACK_SHARED_DATA`` or ``<repo>/../shared/data`` (CI puts shared/ beside the clone)."""
    for cand in (os.environ.get("DERMSTACK_SHARED_DATA"), REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None
