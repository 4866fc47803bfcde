"""Self-contained HTML: one file, inline CSS, images as data URIs, no network.

One inline script (:data:`SORT_JS`, no ``src``) sorts a table by the header clicked; tables longer
than :data:`COLLAPSE_ROWS` rows are folded in ``<details>`` so the page reads summary first."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dermstack.atomic import write_text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#243447;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.8}
nav{background:#e8edf2;padding:8px 28px;position:sticky;top:0}nav a{margin-right:16px;color:#243447;text-decoration:none;font-weight:600}
main{padding:8px 28px 40px}section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{margin-top:4px;font-size:19px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0}figcaption{font-size:12px;color:#555;max-width:520px}
img{max-width:100%;height:auto}table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f0f3f6}td:first-child,th:first-child{text-align:left}
tr.small td{color:#999;font-style:italic}.note{font-size:13px;color:#444}.warn{color:#a15c00}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}details>summary{cursor:pointer;font-size:13px;color:#243447;margin:6px 0}
.summary{display:grid;grid-template-columns:1fr 1fr;gap:4px 24px}.summary h3{margin:8px 0 3px;font-size:14px}
.summary table{font-size:11.5px;margin:2px 0}.summary p{margin:2px 0;font-size:12.5px}\
.summary ul{margin:2px 0;padding-left:18px;font-size:12.5px}
.bar{display:inline-block;height:9px;background:#4a7aa8;vertical-align:middle;margin-right:6px}.bad{color:#b00020;font-weight:600}
"""

#: rows above which a table is collapsed (``<details>``)
COLLAPSE_ROWS = 15

#: Click a header of a ``table.sortable`` to sort its rows by that column (numbers as numbers, blanks
#: last); click again to reverse. Plain DOM, no library and no network, so the file stays self-contained.
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      t.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(r) { var v = r.cells[col] ? r.cells[col].textContent.trim() : ""; var x = Number(v);
                        return v === "" ? null : (isNaN(x) ? v : x); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(x) -> str:
    return html.escape(str(x))


def figure(uri: str, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt or caption)}">{cap}</figure>'


def figures(*items: str) -> str:
    return '<div class="figs">' + "".join(items) + "</div>"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return esc("" if v is None else v)


def table(df: pl.DataFrame, max_rows: int = 200, row_class: str | None = None, collapse: int | None = COLLAPSE_ROWS) -> str:
    """A sortable HTML table of a frame (floats to 4 significant digits); ``row_class``: a bool column
    marking rows; more than ``collapse`` rows: folded in ``<details>`` (None: never)."""
    cols = [c for c in df.columns if c != row_class]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for row in df.head(max_rows).iter_rows(named=True):
        cls = ' class="small"' if row_class and row.get(row_class) else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_cell(row[c])}</td>" for c in cols) + "</tr>")
    more = f'<p class="note">{df.height - max_rows} more rows in the data files.</p>' if df.height > max_rows else ""
    html_ = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}'
    if collapse is not None and df.height > collapse:
        return f"<details><summary>Table of {df.height} rows (click to show; click a header to sort)</summary>{html_}</details>"
    return html_


def paragraph(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


@dataclass
class Section:
    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> Section:
        self.parts.extend(parts)
        return self

    def render(self) -> str:
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>{"".join(self.parts)}</section>'


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{''.join(s.render() for s in sections)}</main><script>{SORT_JS}</script></body></html>")


def write_page(path: str | Path, title: str, subtitle: str, sections: list[Section]) -> Path:
    return write_text(path, page(title, subtitle, sections))
