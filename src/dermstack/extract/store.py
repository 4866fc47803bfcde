"""EmbeddingStore: pooled backbone features per image in one HDF5 file, one group per backbone and view.

An embedding is named by its key: the backbone for a row's primary image (``image_ref``), and
``<backbone>@<view>`` for a further image of the row (``image_ref_<view>``: MILK10k's ``clinical``
close-up), so every reader that goes by keys (features, linear probe, predict) sees each view as
an embedding of its own.

Layout of group ``/<key>`` (``/`` in a hub name as ``__``):
  features   (N x D float16, chunked, resizable)    image_id (N, utf-8)
  image_sha256 (N, utf-8)                            each row's image digest from ingest ("" unknown; absent:
                                                     made before digests were kept); a resumed extraction
                                                     embeds again, in place, a row whose image changed
  failed/image_id, failed/reason, failed/image_sha256  images that could not be embedded, why, and their digest
  attrs: backbone, view ("" for the primary image), timm_name, pretrained_cfg (JSON), data_config (JSON), weights_source,
         weights_sha256, image_size, tta (JSON), precision, batchnorm_folded (BatchNorm layers folded
         into their convolutions, :mod:`dermstack.extract.fold`; absent: made before folding existed),
         dermstack_version, created, updated, recipe (JSON: everything that changes the numbers beyond
         rounding), n_written, complete, shard
Precision and folding change embeddings by rounding only (their own ``precision`` and
``batchnorm_folded`` attributes, set when a group is created, record them); they are not part of the
recipe, so a group resumed under other ones is not refused.
Rows past ``n_written`` belong to an interrupted batch and are ignored; ``complete`` is set last,
after every image of the run is written or recorded as failed, and cleared when a run starts.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from dermstack.atomic import writable_target
from dermstack.data.table import split_key, view_key
from dermstack.errors import DataError

log = logging.getLogger(__name__)

KIND = "dermstack.embeddings"
STR = h5py.string_dtype("utf-8")
CHUNK_ROWS = 256
#: the dataset of each row's image digest, and the failure records' datasets
DIGESTS = "image_sha256"
FAILED_DIGESTS = "failed/image_sha256"
FAILED = ("failed/image_id", "failed/reason", FAILED_DIGESTS)


def group_name(key: str) -> str:
    """HDF5 group for an embedding key (hub names contain '/')."""
    return key.replace("/", "__")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _strings(ds: h5py.Dataset, n: int | None = None) -> np.ndarray:
    return np.asarray(ds.asstr()[: ds.shape[0] if n is None else n], dtype=object).astype(str)


class EmbeddingStore:
    """Read access to an embeddings file (short-lived HDF5 handles, so writers are never blocked long)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("no such EmbeddingStore file", file=str(self.path))
        self._index: dict[str, tuple[tuple, np.ndarray, np.ndarray]] = {}

    def open_file(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as e:
            raise DataError(f"cannot open EmbeddingStore: {e}", file=str(self.path)) from e

    def group(self, f: h5py.File, backbone: str) -> h5py.Group:
        g = f.get(group_name(backbone))
        if g is None or g.attrs.get("kind") != KIND:
            raise DataError(f"no embeddings for backbone {backbone!r} (has: {self._names(f)})", file=str(self.path))
        return g

    @staticmethod
    def _names(f: h5py.File) -> list[str]:
        return [view_key(str(g.attrs["backbone"]), str(g.attrs.get("view", ""))) for g in f.values()
                if isinstance(g, h5py.Group) and g.attrs.get("kind") == KIND]

    def backbones(self) -> list[str]:
        """The embedding keys in the store: each backbone, and ``<backbone>@<view>`` for further views."""
        with self.open_file() as f:
            return self._names(f)

    def info(self, backbone: str) -> dict:
        """Group attributes (JSON ones decoded) plus ``n_failed``."""
        with self.open_file() as f:
            g = self.group(f, backbone)
            out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()}
            for k in ("pretrained_cfg", "data_config", "tta", "recipe"):
                if k in out:
                    out[k] = json.loads(out[k])
            out["n_failed"] = int(g["failed/image_id"].shape[0])
            return out

    def is_complete(self, backbone: str) -> bool:
        with self.open_file() as f:
            return bool(self.group(f, backbone).attrs.get("complete", False))

    def image_ids(self, backbone: str) -> list[str]:
        with self.open_file() as f:
            g = self.group(f, backbone)
            return _strings(g["image_id"], int(g.attrs["n_written"])).tolist()

    def failed(self, backbone: str) -> dict[str, str]:
        """image_id -> reason, for images that could not be embedded."""
        with self.open_file() as f:
            g = self.group(f, backbone)
            return dict(zip(_strings(g["failed/image_id"]).tolist(), _strings(g["failed/reason"]).tolist()))

    def read(self, backbone: str, image_ids: list[str]) -> np.ndarray:
        """Features (len(image_ids) x D, float32) in the order of ``image_ids``; every id must be present."""
        want = np.asarray(list(image_ids), dtype=str)
        with self.open_file() as f:
            g = self.group(f, backbone)
            n = int(g.attrs["n_written"])
            key = (n, os.stat(self.path).st_mtime_ns)
            cached = self._index.get(backbone)
            if cached is None or cached[0] != key:
                ids = _strings(g["image_id"], n)
                order = np.argsort(ids, kind="stable")
                cached = self._index[backbone] = (key, ids[order], order)
            _, sorted_ids, order = cached
            pos = np.searchsorted(sorted_ids, want).clip(0, max(len(sorted_ids) - 1, 0))
            found = sorted_ids[pos] == want if len(sorted_ids) else np.zeros(len(want), bool)
            if not found.all():
                self._raise_missing(g, backbone, want[~found])
            rows = order[pos]
            feats = g["features"]
            if len(rows) > n // 8:
                out = feats[:n][rows]
            else:
                uniq, inv = np.unique(rows, return_inverse=True)
                out = feats[uniq][inv] if len(uniq) else np.empty((0, feats.shape[1]), feats.dtype)
        return out.astype(np.float32)

    def _raise_missing(self, g: h5py.Group, backbone: str, missing: np.ndarray) -> None:
        failed = set(_strings(g["failed/image_id"]).tolist())
        nf = sum(m in failed for m in missing)
        hint = []
        if nf:
            hint.append(f"{nf} failed to embed (see EmbeddingStore.failed)")
        if not g.attrs.get("complete", False):
            hint.append("the extraction was interrupted: rerun `dermstack extract run` to resume")
        raise DataError(f"{len(missing)} image ids have no {backbone!r} embedding, e.g. {missing[:5].tolist()}"
                        + (f" ({'; '.join(hint)})" if hint else ""), file=str(self.path))


class GroupWriter:
    """Appends one backbone's features; rows are flushed before ``n_written`` moves on to count them."""

    COMMIT_ROWS = 512
    COMMIT_SECONDS = 5.0

    def __init__(self, f: h5py.File, g: h5py.Group):
        self.f, self.g = f, g
        self.pending: list[tuple[list[str], np.ndarray, list[str]]] = []  # (ids, features, digests)
        self.committed_at = time.monotonic()
        self.n = int(g.attrs["n_written"])
        for name, n in ((DIGESTS, self.n), (FAILED_DIGESTS, g["failed/image_id"].shape[0])):
            if name not in g:  # a group made before digests were kept: its rows' images are unknown
                g.create_dataset(name, data=np.full(n, "", dtype=object), dtype=STR, maxshape=(None,), chunks=(4096,))
        #: image_id -> row of the rows being embedded again (their image changed), written in place
        self.rewrite: dict[str, int] = {}
        for name in ("features", "image_id", DIGESTS):
            if g[name].shape[0] != self.n:  # rows of a batch that was cut off by a kill
                g[name].resize(self.n, axis=0)
        self.nf = min(g[name].shape[0] for name in FAILED)
        for name in FAILED:
            g[name].resize(self.nf, axis=0)

    @property
    def n_pending(self) -> int:
        """Rows queued for the next commit."""
        return sum(len(ids) for ids, _, _ in self.pending)

    def done_ids(self, with_failed: bool = True) -> set[str]:
        done = set(_strings(self.g["image_id"], self.n).tolist()).union(*(ids for ids, _, _ in self.pending))
        return done | set(_strings(self.g["failed/image_id"], self.nf).tolist()) if with_failed else done

    def changed(self, ids: list[str], digests: list[str | None]) -> list[str]:
        """The ``ids`` whose row, or failure record, is of another image than ``digests`` says (both digests
        known and different). Their rows are embedded again in place (:meth:`commit`); their failures
        are forgotten, so that a repaired image is tried again."""
        new = {i: d for i, d in zip(ids, digests) if d}
        if not new:  # a table without digests: nothing to compare, nothing to read
            return []
        stored = zip(_strings(self.g["image_id"], self.n).tolist(), _strings(self.g[DIGESTS], self.n).tolist(), range(self.n))
        self.rewrite = {i: row for i, d, row in stored if d and new.get(i, d) != d}
        failed = {i for i, d in zip(_strings(self.g["failed/image_id"], self.nf).tolist(),
                                    _strings(self.g[FAILED_DIGESTS], self.nf).tolist()) if d and new.get(i, d) != d}
        if failed:
            self.forget_failed(failed)
        return list(self.rewrite) + sorted(failed)

    def forget_failed(self, ids: set[str]) -> None:
        """Drop failure records of ``ids`` (they are about to be retried)."""
        columns = {name: _strings(self.g[name], self.nf) for name in FAILED}
        keep = ~np.isin(columns["failed/image_id"], list(ids))
        self.nf = int(keep.sum())
        for name, vals in columns.items():
            self.g[name].resize(self.nf, axis=0)
            if self.nf:
                self.g[name][:] = vals[keep].astype(object)

    def begin(self, shard: str) -> None:
        self.g.attrs["complete"] = False
        self.g.attrs["shard"] = shard
        self.f.flush()

    def append(self, image_ids: list[str], features: np.ndarray, digests: list[str | None] | None = None) -> None:
        """Queue a batch (``digests``: of its images, when known); it is written (and counted in ``n_written``)
        at the next commit, which happens every ``COMMIT_ROWS`` rows or ``COMMIT_SECONDS`` (a kill loses
        at most that much work)."""
        if len(image_ids):
            self.pending.append((list(image_ids), features.astype(np.float16),
                                 [d or "" for d in digests] if digests is not None else [""] * len(image_ids)))
        if self.n_pending >= self.COMMIT_ROWS or time.monotonic() - self.committed_at >= self.COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        """Write the queued batches, flush, then move ``n_written`` on (flushed again)."""
        self.committed_at = time.monotonic()
        if not self.pending:
            return
        ids = [i for batch, _, _ in self.pending for i in batch]
        feats = np.concatenate([f for _, f, _ in self.pending])
        digests = [d for _, _, batch in self.pending for d in batch]
        old = np.array([i in self.rewrite for i in ids], dtype=bool)
        # a changed image's row: the features first, then its digest (a kill between leaves the old
        # digest, so the next run embeds it again)
        for k in np.flatnonzero(old):
            self.g["features"][self.rewrite[ids[k]]] = feats[k]
        for k in np.flatnonzero(old):
            self.g[DIGESTS][self.rewrite.pop(ids[k])] = digests[k]
        new = np.flatnonzero(~old)
        end = self.n + len(new)
        for name in ("features", "image_id", DIGESTS):
            self.g[name].resize(end, axis=0)
        if len(new):
            self.g["features"][self.n:end] = feats[new]
            self.g["image_id"][self.n:end] = np.asarray(ids, dtype=object)[new]
            self.g[DIGESTS][self.n:end] = np.asarray(digests, dtype=object)[new]
        self.f.flush()
        self.n, self.pending = end, []
        self.g.attrs["n_written"] = end
        self.f.flush()

    def add_failed(self, image_id: str, reason: str, digest: str | None = None) -> None:
        if image_id in self.rewrite:  # its old row is of the image it replaced: no reader may get it
            self._drop_row(self.rewrite.pop(image_id))
        end = self.nf + 1
        for name, val in zip(FAILED, (image_id, reason, digest or "")):
            self.g[name].resize(end, axis=0)
            self.g[name][self.nf] = val
        self.nf = end
        self.f.flush()

    def _drop_row(self, row: int) -> None:
        """Remove committed row ``row``: the last row moves into it (readers go by id, not by position)."""
        last = self.n - 1
        if row != last:
            for name in ("features", "image_id", DIGESTS):
                self.g[name][row] = self.g[name][last]
            moved = next((i for i, r in self.rewrite.items() if r == last), None)
            if moved is not None:
                self.rewrite[moved] = row
            self.f.flush()
        self.n = last
        self.g.attrs["n_written"] = last
        for name in ("features", "image_id", DIGESTS):
            self.g[name].resize(last, axis=0)
        self.f.flush()

    def finish(self) -> None:
        self.commit()
        self.g.attrs["updated"] = now()
        self.g.attrs["complete"] = True
        self.f.flush()


def writable_store(path: str | Path, hint: str | None = None) -> Path:
    """The file an extraction appends to: a new one, or an EmbeddingStore dermstack wrote (a link is
    followed; a FIFO or device refused, :func:`dermstack.atomic.writable_target`). Any other file,
    HDF5 or not, is a DataError ending in ``hint`` (default: the advice to ``extract run``):
    appending would change a file dermstack did not write."""
    path = writable_target(path)
    if not path.exists():
        return path
    try:
        with h5py.File(path, "r") as f:
            foreign = [k for k in f if f[k].attrs.get("kind") != KIND]
    except OSError as e:
        raise DataError(f"exists and cannot be read as an HDF5 EmbeddingStore ({e}); extraction appends only to its own "
                        f"store: {hint or 'give another --out (a store a kill damaged: remove it to start over)'}",
                        file=str(path)) from None
    if foreign:
        raise DataError(f"an HDF5 file with entries dermstack did not write ({', '.join(foreign[:5])}); extraction "
                        f"appends only to its own store: {hint or 'give another --out'}", file=str(path))
    return path


def open_group(f: h5py.File, backbone: str, attrs: dict, dim: int, replace: bool = False,
               remedy: str = "write to another --out file") -> GroupWriter:
    """Create the group of an embedding key (:func:`view_key`), or reopen it after checking it was
    made with the same recipe (else a DataError ending in ``remedy``). ``replace``: a group of another
    recipe is deleted and made again instead (a run whose [extract] settings changed, ``--replace-changed``)."""
    name = group_name(backbone)
    g = f.get(name)
    if g is not None and replace and g.attrs.get("kind") == KIND and (diff := recipe_changes(g, attrs["recipe"])):
        log.info("%s: the %r embeddings were made with other settings (%s): embedding again", f.filename, backbone, diff)
        del f[name]
        g = None
    if g is None:
        g = f.create_group(name)
        g.create_dataset("features", (0, dim), np.float16, maxshape=(None, dim), chunks=(CHUNK_ROWS, dim))
        g.create_dataset("image_id", (0,), STR, maxshape=(None,), chunks=(4096,))
        g.create_dataset(DIGESTS, (0,), STR, maxshape=(None,), chunks=(4096,))
        for d in FAILED:
            g.create_dataset(d, (0,), STR, maxshape=(None,), chunks=(256,))
        for k, v in attrs.items():
            g.attrs[k] = v
        name_, view = split_key(backbone)
        g.attrs.update(kind=KIND, backbone=name_, view=view, created=now(), n_written=0, complete=False)
        f.flush()
        return GroupWriter(f, g)
    check_recipe(g, attrs["recipe"], backbone, f.filename, remedy)
    return GroupWriter(f, g)


def check_recipe(g: h5py.Group, recipe_json: str, backbone: str, file: str, remedy: str) -> None:
    """A group only ever holds embeddings made the same way (weights, size, preprocessing, TTA)."""
    if g.attrs.get("kind") != KIND:
        raise DataError(f"group {g.name!r} is not a dermstack embeddings group", file=file)
    diff = recipe_changes(g, recipe_json)
    if diff:
        raise DataError(f"the {backbone!r} embeddings in this store were made with other settings ({diff}); {remedy}",
                        file=file)


def recipe_changes(g: h5py.Group, recipe_json: str) -> str:
    """Each recipe key whose value in group ``g`` differs from ``recipe_json``'s, as ``key: store a vs now b``
    ("" when the recipes agree)."""
    old, new = json.loads(g.attrs["recipe"]), json.loads(recipe_json)
    return "; ".join(f"{k}: store {old.get(k)!r} vs now {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))


def merge_stores(shards: list[str | Path], out: str | Path) -> dict[str, int]:
    """Join complete shard stores into a new store ``out``; returns rows per backbone."""
    out = Path(out)
    if out.exists():
        raise DataError("merge output exists already; choose a new --out", file=str(out))
    if not shards:
        raise DataError("no shard stores to merge")
    readers = [EmbeddingStore(s) for s in shards]
    names = list(dict.fromkeys(b for r in readers for b in r.backbones()))
    tmp = out.with_name(out.name + ".partial")
    counts = {}
    with h5py.File(tmp, "w") as f:
        for name in names:
            writer = None
            for r in readers:
                if name not in r.backbones():
                    continue
                if not r.is_complete(name):
                    raise DataError(f"shard is not complete for {name!r}: rerun it before merging", file=str(r.path))
                with r.open_file() as src:
                    g = r.group(src, name)
                    if writer is None:
                        attrs = {k: v for k, v in g.attrs.items()
                                 if k not in ("n_written", "complete", "shard", "created", "kind", "backbone", "view")}
                        writer = open_group(f, name, attrs, g["features"].shape[1])
                        writer.begin(shard="merged")
                    check_recipe(writer.g, g.attrs["recipe"], name, str(r.path), "merge only shards made with the same settings")
                    n = int(g.attrs["n_written"])
                    ids = _strings(g["image_id"], n).tolist()
                    dup = writer.done_ids(with_failed=False) & set(ids)
                    if dup:
                        raise DataError(f"image ids in more than one shard for {name!r}, e.g. {sorted(dup)[:5]}", file=str(r.path))
                    writer.append(ids, g["features"][:n], _strings(g[DIGESTS], n).tolist() if DIGESTS in g else None)
                    failed_digests = _strings(g[FAILED_DIGESTS]).tolist() if FAILED_DIGESTS in g else None
                    for k, (i, why) in enumerate(zip(_strings(g["failed/image_id"]).tolist(), _strings(g["failed/reason"]).tolist())):
                        writer.add_failed(i, why, failed_digests[k] if failed_digests else None)
            writer.finish()
            counts[name] = writer.n
    tmp.replace(out)
    return counts
