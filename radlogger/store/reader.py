"""One reader for every store: measurements back out of CSV, JSONL, SQLite and HDF5 files.

``read(path, topics, since_ns, until_ns)`` yields :class:`Measurement` objects in write order.
``path`` may be a file, the configured path of a rotating store (its numbered siblings are
read too, in order), or a glob.  The format is recognised by content (SQLite and HDF5
signatures, gzip, a CSV header or a JSON object), not by the file name.

The replay device (devices/replay.py) and the export and plot
commands use this module.  It lives in the core, as python-can keeps ``can/io`` in ``can``:
devices and endpoints both import it, never each other.  Each format's ``read_file`` /
``file_topics`` and its layout names (schema, columns, HDF5 segment keys) are in this package
(``csv``, ``jsonl``, ``sqlite``, ``hdf5``), imported by the writers in
``radlogger.endpoints.storage``, so a format is defined once.  The format modules are imported
on first use: h5py is optional and slow to import.
"""

from __future__ import annotations

import glob
import heapq
import importlib
from collections.abc import Iterable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any

from radlogger.errors import ProtocolError
from radlogger.measurement import Measurement

from .lines import GZIP_MAGIC, read_lines
from .rotation import rotated_files, split_name
from .selection import Selection, parse_time

__all__ = ["read", "open_store", "Store", "StoreError", "detect", "resolve_files", "topics",
           "parse_time", "Selection", "KIND_BY_EXTENSION", "kind_for_path"]

SQLITE_MAGIC = b"SQLite format 3\x00"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KIND_BY_EXTENSION = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".sqlite": "sqlite",
                     ".sqlite3": "sqlite", ".db": "sqlite", ".h5": "hdf5", ".hdf5": "hdf5",
                     ".he5": "hdf5"}
#: files radlogger writes but cannot append to as a store: the spectrum sink's record files
READ_ONLY_EXTENSIONS = {".npy": "npy", ".npz": "npz"}
_MODULES = {"csv": "radlogger.store.csv", "jsonl": "radlogger.store.jsonl",
            "sqlite": "radlogger.store.sqlite", "hdf5": "radlogger.store.hdf5",
            "npy": "radlogger.store.npy", "npz": "radlogger.store.npy"}
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


class StoreError(ProtocolError, ValueError):
    """A path that is not a readable store; the message names it and says why."""


def kind_for_path(path: Path) -> str | None:
    """The store kind a file name asks for (``run.csv.gz`` -> csv), or None."""
    _, ext = split_name(path)
    return KIND_BY_EXTENSION.get(ext.removesuffix(".gz").lower() if ext else "")


def detect(path: Path) -> str:
    """The store kind of an existing file, from its content."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC) and path.suffix == ".npz":
        return "npz"
    if not head:
        guess = kind_for_path(path)
        if guess:
            return guess
        raise StoreError(f"{path} is empty")
    if head.startswith(GZIP_MAGIC) or head[:1] in (b"{", b"t"):
        try:
            first = next(iter(read_lines(path)), "")
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise StoreError(f"{path}: not a readable store ({exc})") from None
        if first.startswith("{"):
            return "jsonl"
        if first.startswith("t_ns,"):
            return "csv"
        if not first:
            return kind_for_path(path) or "csv"
    raise StoreError(f"{path} is not a radlogger store (CSV, JSON lines, SQLite, HDF5 or "
                     "a spectrum sink's .npy/.npz)")


def resolve_files(path: str | Path) -> list[Path]:
    """The files a user's path means: a glob, or a store path plus its rotated siblings."""
    text = str(path)
    if any(c in text for c in "*?["):
        found = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        if not found:
            raise StoreError(f"no files match {text}")
        return found
    p = Path(text).expanduser()
    files: list[Path] = []
    # the configured path of a gzip store (run.csv) names the run.csv.gz it writes
    for c in [p] if p.suffix == ".gz" else [p, p.with_name(p.name + ".gz")]:
        files = ([c] if c.is_file() else []) + rotated_files(c)
        if files:
            break
    if not files and p.is_dir():  # e.g. a spectrum sink's directory: its store files
        files = sorted(f for f in p.iterdir() if f.is_file() and _store_like(f))
        if not files:
            raise StoreError(f"{p} is a directory without store files: give a store file "
                             f"(or a glob such as '{p}/*.csv')")
    if not files:
        raise StoreError(f"no store at {p} (nor rotated files next to it)")
    return files


def _store_like(path: Path) -> bool:
    return kind_for_path(path) is not None or path.suffix in READ_ONLY_EXTENSIONS


def _module(kind: str) -> Any:
    return importlib.import_module(_MODULES[kind])


class Store:
    """The files of one logical store, each with its detected kind."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.files = [(f, detect(f)) for f in resolve_files(path)]

    @property
    def kinds(self) -> list[str]:
        return sorted({k for _, k in self.files})

    def read(self, topics: Iterable[str] | None = None, since_ns: int | None = None,
             until_ns: int | None = None, where: Iterable[tuple[str, str]] | None = None
             ) -> Iterator[Measurement]:
        """Measurements in write order; ``where`` keeps those whose meta has these values
        (HDF5 skips whole segments by their index attributes)."""
        sel = Selection.of(topics, since_ns, until_ns, where)
        if len(self.files) > 1 and {k for _, k in self.files} <= {"npy", "npz"}:
            # a sink directory: one file per topic (and flush), merged back into time order
            yield from heapq.merge(*(self._read_one(f, k, sel) for f, k in self.files),
                                   key=attrgetter("t_ns"))
            return
        for f, kind in self.files:
            yield from self._read_one(f, kind, sel)

    @staticmethod
    def _read_one(f: Path, kind: str, sel: Selection) -> Iterator[Measurement]:
        try:
            it = _module(kind).read_file(f, sel)
            if sel.where:
                it = (m for m in it if sel.meta_ok(m.meta))
            yield from it
        except (ValueError, KeyError, OSError) as exc:
            raise StoreError(f"{f}: cannot read it as {kind}: {exc}") from exc

    def size(self) -> int:
        """Bytes of the store's files (for progress bars)."""
        return sum(f.stat().st_size for f, _ in self.files if f.exists())

    def topics(self, limit: int | None = None) -> list[str]:
        """Topics of the store; ``limit`` bounds the rows scanned per CSV/JSONL file."""
        found: set[str] = set()
        for f, kind in self.files:
            found |= _module(kind).file_topics(f, limit)
        return sorted(found)


def open_store(path: str | Path) -> Store:
    return Store(path)


def read(path: str | Path, topics: Iterable[str] | None = None, since_ns: int | None = None,
         until_ns: int | None = None, where: Iterable[tuple[str, str]] | None = None
         ) -> Iterator[Measurement]:
    """Measurements of the store at ``path`` in write order, filtered by topic, time and
    meta values."""
    return Store(path).read(topics, since_ns, until_ns, where)


def topics(path: str | Path) -> list[str]:
    return Store(path).topics()
