"""IngestReport: what a reader read, kept, skipped and why. Nothing is dropped silently."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from dermstack.atomic import write_json
from dermstack.errors import SHOWN, DataError, clip

log = logging.getLogger(__name__)


@dataclass
class Skip:
    """One row (or image) that was not kept, with where and why."""

    file: str
    row: int | None
    column: str | None
    reason: str
    id: str | None = None

    def __str__(self) -> str:
        return str(DataError(self.reason, self.file, self.row, self.column)) + (f" [{self.id}]" if self.id else "")


@dataclass
class IngestReport:
    """Collects every decision a reader makes. With ``strict=True`` every skip raises a DataError."""

    dataset: str
    source: str
    strict: bool = False
    #: Declared encoding of the CSV files (None: UTF-8, with or without BOM).
    encoding: str | None = None
    rows_read: int = 0
    rows_kept: int = 0
    skipped: list[Skip] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, file: str, row: int | None = None, column: str | None = None, id: str | None = None) -> None:
        """Record a skipped row; raise instead when strict. Values from the data are clipped (:func:`clip`)."""
        reason, id = clip(reason, 2 * SHOWN), clip(id)
        if self.strict:
            raise DataError(reason + (f" [{id}]" if id else "") + " (--strict)", file, row, column)
        self.skipped.append(Skip(str(file), row, column, reason, id))
        log.debug("skipped: %s", self.skipped[-1])

    def missing_image(self, id: str, file: str, row: int | None = None) -> None:
        """A labelled case whose image could not be found (kept as metadata-only unless strict)."""
        id = clip(id)
        if self.strict:
            raise DataError(f"image for {id} not found (--strict)", file, row)
        self.missing_images.append(id)

    def nulled(self, file: str, column: str, reason: str, rows: list[int], ids: list[str | None], values: list) -> None:
        """Values read as missing because they cannot be right (out of range, not finite); raise when strict."""
        values, ids = [clip(v) for v in values], [clip(i) for i in ids]
        if self.strict:
            raise DataError(f"{values[0]!r} is {reason}" + (f" [{ids[0]}]" if ids[0] else "") + " (--strict)", file, rows[0], column)
        shown = ", ".join(f"{i or '?'} (row {r}: {v!r})" for i, r, v in list(zip(ids, rows, values))[:5])
        self.note(f"{column}: {len(rows)} value(s) {reason} read as missing in {file}, e.g. {shown}")

    def note(self, message: str) -> None:
        message = clip(message, 5 * SHOWN)
        self.notes.append(message)
        log.info("%s", message)

    def to_dict(self) -> dict:
        return asdict(self)

    def write_json(self, path) -> None:
        write_json(path, self.to_dict())

    def summary(self, max_lines: int = 20) -> str:
        """Human-readable report for the CLI."""
        lines = [
            f"{self.dataset}: {self.source}",
            f"  rows read: {self.rows_read}, kept: {self.rows_kept}, skipped: {len(self.skipped)}",
        ]
        for s in self.skipped[:max_lines]:
            lines.append(f"    skipped {s}")
        if len(self.skipped) > max_lines:
            lines.append(f"    ... and {len(self.skipped) - max_lines} more (see the JSON report)")
        if self.missing_images:
            shown = ", ".join(self.missing_images[:10])
            more = f" ... (+{len(self.missing_images) - 10})" if len(self.missing_images) > 10 else ""
            lines.append(f"  labelled cases without an image: {len(self.missing_images)}: {shown}{more}")
        if self.unknown_columns:
            lines.append(f"  unknown columns kept: {', '.join(self.unknown_columns)}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)
