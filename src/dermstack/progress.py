"""Progress bars for long jobs: tqdm on stderr, off when a caller says so or ``$TQDM_DISABLE`` is set."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr; hidden when ``enabled`` is false or the environment sets TQDM_DISABLE
    (read at call time, unlike tqdm's own, which reads it once at import)."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=off or not enabled, **kwargs)
