"""Headless Chromium for the report: its console messages, its DOM after scripts ran, a screenshot.

Used by the report's browser test and by ``scripts/report_screenshot.py`` (the README picture), so
both render the page the same way. No network: the report is one self-contained file.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dermstack.atomic import atomic_path
from dermstack.errors import ConfigError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
#: a laptop screen in CSS pixels: what the report's first screen must fit
SCREEN = (1280, 800)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class Rendered:
    dom: str
    #: Chromium's console lines (errors, failed loads, script messages); a clean page has none
    console: list[str]


def _base(exe: str | None, profile: Path, size: tuple[int, int]) -> list[str]:
    exe = exe or find_chromium()
    if exe is None:
        raise ConfigError("Chromium is not installed (Debian: apt-get install chromium); cannot render the report")
    return [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]


def dump_dom(html: Path, size: tuple[int, int] = SCREEN, exe: str | None = None, timeout: float = 120) -> Rendered:
    """The page's DOM after its scripts ran, and what the browser logged while loading it."""
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([*_base(exe, Path(profile), size), "--enable-logging=stderr", "--v=0", "--dump-dom",
                              Path(html).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"chromium failed on {html}: {res.stderr[-2000:]}")
    return Rendered(res.stdout, [line for line in res.stderr.splitlines() if ":CONSOLE" in line])


def screenshot(html: Path, png: Path, size: tuple[int, int] = SCREEN, exe: str | None = None, timeout: float = 120) -> Path:
    """A PNG of the page's top ``size`` CSS pixels (its first screen)."""
    with tempfile.TemporaryDirectory() as profile:
        with atomic_path(png, suffix=".png") as tmp:  # Chromium writes the file; moved into place when complete
            subprocess.run([*_base(exe, Path(profile), size), f"--screenshot={tmp}", Path(html).resolve().as_uri()],
                           capture_output=True, timeout=timeout, check=True)
    return png
