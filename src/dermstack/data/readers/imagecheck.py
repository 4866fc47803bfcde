"""Cheap image checks without decoding: the file or HDF5 key exists and its bytes look complete;
and, in the same pass over an HDF5 file, the SHA-256 of each image's bytes (:mod:`.content`).

A JPEG must start with FFD8FF and end with the EOI marker FFD9 (a truncated download does not);
PNG and BMP must start with their signatures. HDF5 datasets stored contiguously are checked by
reading only those bytes through a memory map (401k keys in seconds); datasets stored otherwise,
and any that look wrong, are read whole to confirm and name the problem.
"""
from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import h5py
import numpy as np

from dermstack.errors import DataError

JPEG_HEAD, JPEG_TAIL = b"\xff\xd8\xff", b"\xff\xd9"
SIGNATURES = {JPEG_HEAD: "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
#: What h5py raises for a damaged file: its C library's errors surface as any of these.
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)
#: threads hashing image files (their reads overlap; hashlib leaves the GIL for all but small inputs)
HASH_THREADS = 4


def bytes_problem(head: bytes, tail: bytes, size: int) -> str | None:
    """Why these first/last bytes are not a complete image, or None when they look fine."""
    if size == 0:
        return "empty image"
    kind = next((k for sig, k in SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None:
        return f"not a JPEG/PNG/BMP (starts with {head[:4].hex()})"
    if kind == "JPEG" and not tail.endswith(JPEG_TAIL):
        return f"truncated JPEG (no end marker FFD9; {size} bytes)"
    return None


def file_problem(path: Path) -> str | None:
    """``bytes_problem`` of an image file, reading 8 bytes at each end."""
    if path.is_symlink() and not path.exists():
        return f"dangling symbolic link to {os.readlink(path)}"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 2, 0))
            return bytes_problem(head, f.read(2), size)
    except OSError as e:
        return f"unreadable image: {e}"


def index_files(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[dict[str, Path], list[Path]]:
    """(file name -> path of every file under ``root`` with one of ``suffixes``, other dangling links).

    One directory walk that follows symbolic links to folders (an ``images/`` linked in from elsewhere
    is the usual layout on shared storage), visiting each real folder once so a link loop ends.
    A dangling link with an image suffix is indexed (``file_problem`` names it); other dangling
    links are returned for the report.
    """
    found: dict[str, Path] = {}
    dangling: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(suffixes):
                found.setdefault(name, Path(dirpath) / name)
            elif os.path.islink(link := os.path.join(dirpath, name)) and not os.path.exists(link):
                dangling.append(Path(link))
    return found, dangling


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"cannot open HDF5 file: {e}", file=str(path)) from e


def _storage(f: h5py.File, keys: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(file offset of each key's bytes, -1 unless stored contiguously; their size; {key: problem} of
    the keys h5py cannot open)."""
    offsets = np.full(len(keys), -1, dtype=np.int64)
    sizes = np.zeros(len(keys), dtype=np.int64)
    problems: dict[str, str] = {}
    for n, key in enumerate(keys):
        try:
            ds = h5py.h5d.open(f.id, key.encode())
            offset = ds.get_offset()  # None unless stored contiguously
            offsets[n], sizes[n] = (-1 if offset is None else offset), ds.get_storage_size()
        except H5_ERRORS as e:
            problems[key] = f"unreadable HDF5 dataset (damaged file?): {e}"
    return offsets, sizes, problems


def hdf5_problems(path: Path, ids: list[str]) -> tuple[np.ndarray, dict[str, str], dict[str, str]]:
    """(present mask aligned with ``ids``, {id: problem}, {id: SHA-256 of its bytes}) for the JPEG
    bytes keyed by id in an HDF5 file: the checks and the digests share one pass over the keys."""
    with _open(path) as f:
        try:
            keys = {k.decode() for k in f.id}  # the low-level iterator is ~5x faster than f.keys()
        except H5_ERRORS as e:  # damaged file structure: h5py raises RuntimeError/KeyError
            raise DataError(f"damaged HDF5 file, its list of images cannot be read ({e}); re-download or "
                            "re-create it", file=str(path)) from e
        present = np.fromiter((i in keys for i in ids), dtype=bool, count=len(ids))
        wanted = [i for i, p in zip(ids, present) if p]
        offsets, sizes, problems = _storage(f, wanted)
        unreadable = dict(problems)
        problems |= _mapped_problems(path, wanted, offsets, sizes)
        digests = _mapped_digests(path, wanted, offsets, sizes, skip=set(problems))
        for key in [k for n, k in enumerate(wanted) if (offsets[n] < 0 or sizes[n] < 4) and k not in unreadable] + [
                k for k in problems if k not in unreadable]:
            try:  # slow path: read whole, name the problem
                data = bytes(np.asarray(f[key][()]).tobytes())
                problem = bytes_problem(data[:8], data[-2:], len(data))
            except H5_ERRORS as e:
                problem = f"unreadable HDF5 dataset (damaged file?): {e}"
            if problem:
                problems[key] = problem
            else:
                problems.pop(key, None)
                digests[key] = hashlib.sha256(data).hexdigest()
    return present, problems, digests


def hdf5_digests(path: Path, keys: list[str]) -> dict[str, str]:
    """{key: SHA-256 of its bytes} of the readable ``keys`` of an HDF5 file."""
    with _open(path) as f:
        offsets, sizes, unreadable = _storage(f, keys)
        digests = _mapped_digests(path, keys, offsets, sizes, skip=set(unreadable))
        for key in (k for k in keys if k not in digests and k not in unreadable):
            try:
                digests[key] = hashlib.sha256(np.asarray(f[key][()]).tobytes()).hexdigest()
            except H5_ERRORS:
                continue
    return digests


def _mapped_digests(path: Path, keys: list[str], offsets: np.ndarray, sizes: np.ndarray, skip: set[str]) -> dict[str, str]:
    """SHA-256 of contiguous datasets straight from the file bytes: slices of one memoryview of a
    memory map (a numpy memmap slice costs twice as much; threads do not help small images, whose
    hashing keeps the GIL)."""
    ends = offsets + sizes
    rows = np.flatnonzero((offsets >= 0) & (ends <= os.path.getsize(path)))
    if skip:
        rows = np.array([i for i in rows if keys[i] not in skip], dtype=np.int64)
    if not len(rows):
        return {}
    sha256 = hashlib.sha256
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            digests = [sha256(view[a:b]).hexdigest() for a, b in zip(offsets[rows].tolist(), ends[rows].tolist())]
        finally:
            view.release()
    return dict(zip([keys[i] for i in rows.tolist()], digests))


def _mapped_problems(path: Path, keys: list[str], offsets: np.ndarray, sizes: np.ndarray) -> dict[str, str]:
    """Signature/EOI check of contiguous datasets straight from the file bytes."""
    ok = (offsets >= 0) & (sizes >= 4)
    if not ok.any():
        return {}
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    inside = ok & (offsets + sizes <= mm.size)
    problems = {keys[i]: "stored bytes lie past the end of the file (truncated HDF5?)" for i in np.flatnonzero(ok & ~inside)}
    o, s = offsets[inside], sizes[inside]
    jpeg = (mm[o] == 0xFF) & (mm[o + 1] == 0xD8) & (mm[o + 2] == 0xFF)
    png = (mm[o] == 0x89) & (mm[o + 1] == 0x50)
    complete = (jpeg & (mm[o + s - 2] == 0xFF) & (mm[o + s - 1] == 0xD9)) | png
    for i in np.flatnonzero(inside)[~complete]:
        problems[keys[i]] = "suspect"  # confirmed (with the exact reason) by a full read
    return problems
