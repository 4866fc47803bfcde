"""Render a run's report first screen (1280x800 CSS px, headless Chromium) to a PNG: the README picture.

    python scripts/report_screenshot.py RUN_DIR [--out docs/report-summary.png] [--report DIR]
    python scripts/report_screenshot.py CMP_DIR/compare.html --out docs/compare-summary.png

Builds ``RUN_DIR/report`` first when it has no ``index.html`` (or with ``--rebuild``); an HTML file
(``dermstack compare``'s page) is rendered as it is.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dermstack.reports import browser, build_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="run directory, or an HTML page to render as it is")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "report-summary.png")
    ap.add_argument("--report", type=Path, help="report directory [default: RUN_DIR/report]")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the report even if index.html exists")
    ap.add_argument("--size", default="1280x800", help="window in CSS pixels, WIDTHxHEIGHT")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.run_dir.suffix == ".html":
        page = args.run_dir
    else:
        report = args.report or args.run_dir / "report"
        page = report / "index.html"
        if args.rebuild or not page.exists():
            build_report(args.run_dir, report)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    rendered = browser.dump_dom(page, size)
    if rendered.console:
        raise SystemExit("the browser logged messages while loading the page:\n" + "\n".join(rendered.console))
    print(browser.screenshot(page, args.out, size))


if __name__ == "__main__":
    main()
