"""Line-oriented files (CSV, JSON lines), plain or gzip: the writing and reading they share.

Writing: each measurement is encoded to one line of bytes when it arrives (so its exact size
is known for rotation, and a string that cannot be encoded is refused on its own, not in the
middle of a flush).  A flush writes all pending lines with unbuffered ``write`` calls; if the
write fails part way (disk full) the file is truncated back to where it was, so a retry never
duplicates or tears a line.

gzip: every flush appends one *complete* gzip member (``zlib`` with a gzip wrapper).  A file of
concatenated members is standard (gzip -d, zcat, Python's gzip module read all of them), and
because nothing is written between flushes, a ``kill -9`` leaves only complete members.  The
price is a little compression ratio per member; flushes of 1000 lines lose almost nothing.
A gzip file from an earlier run is never appended to (its tail cannot be checked cheaply);
the store continues in a new numbered file next to it.

Reading (radlogger.store.lines, in the core: the replay device reads these files too): only
complete lines count.  A torn last line (a crash during a write) and a torn last gzip member are
skipped, logged, and counted in ``torn``.

A CSV record may span lines (a str value with a newline is quoted and written as is), so for
CSV a *record* ends only at a newline outside quotes (an even number of ``"`` before it: CSV
writes a quote inside a field as two).  Both the reader and the restart's trimming of a torn
tail use that rule, else a record torn after its inner newline would be kept half, and glue
itself to the next run's first row.
"""

from __future__ import annotations

import io
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from radlogger.options import Option

from .base import StorageEndpoint

__all__ = ["TextFileEndpoint"]

log = logging.getLogger(__name__)

class TextFileEndpoint(StorageEndpoint):
    """A store of one line per measurement; subclasses define ``_format`` and ``header``."""

    options = (
        Option("gzip", bool, False, "compress; every flush appends one complete gzip member "
               "(.gz is added to path)"),
        Option("gzip_level", int, 6, "gzip compression level", min=1, max=9),
        Option("arrays", str, "base64", "how arrays are written: base64 of the raw bytes "
               "(compact) or json lists (readable by any JSON or spreadsheet tool; complex "
               "numbers as [re, im])", choices=("base64", "json")),
    )
    #: first line of every new file (CSV column names), or empty
    header = b""
    #: the quote character of a format whose records may contain newlines inside quotes
    quote = b""

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._lines: list[bytes] = []
        self._file: io.FileIO | None = None
        self._size = 0
        self._needs_header = False

    def target_path(self, path: Path) -> Path:
        if self.settings.gzip and path.suffix != ".gz":
            return path.with_name(path.name + ".gz")
        return path

    def _can_append(self, path: Path) -> bool:
        if self.settings.gzip:
            return False
        if not self.header:
            return True
        with open(path, "rb") as f:
            return f.readline() == self.header

    def _open_file(self, path: Path) -> None:
        f = open(path, "a+b", buffering=0)  # noqa: SIM115 - kept open across flushes
        try:
            size = f.seek(0, os.SEEK_END)
            if size and not self.settings.gzip:
                size = _trim_torn_tail(f, size, path, self.quote)
        except BaseException:
            f.close()
            raise
        self._file = f
        self._size = size
        self._needs_header = size == 0 and bool(self.header)

    def _write_pending(self) -> None:
        f = self._file
        assert f is not None
        data = b"".join(self._lines)
        if self._needs_header:
            data = self.header + data
        if self.settings.gzip:
            data = zlib.compress(data, self.settings.gzip_level, wbits=31)
        try:
            view = memoryview(data)
            while view:
                n = f.write(view)
                view = view[n:]
        except BaseException:
            self._undo_partial_write()
            raise
        self._size += len(data)
        self._needs_header = False
        self._lines.clear()

    def _undo_partial_write(self) -> None:
        f = self._file
        try:
            assert f is not None
            f.truncate(self._size)
        except Exception:  # noqa: BLE001 - cannot restore the tail: reopen (and trim) later
            self._close_quietly()

    def _discard_pending(self) -> None:
        self._lines.clear()

    def _sync(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


def _trim_torn_tail(f: io.FileIO, size: int, path: Path, quote: bytes = b"") -> int:
    """Cut a partial last record left by a crash, so appended lines start on a record of their
    own; returns the new size."""
    keep = _last_record_end(f, size, quote) if quote else _last_line_end(f, size)
    if keep < size:
        f.truncate(keep)
        log.warning("%s: removed a torn last line of %d bytes (left by a crash)", path,
                    size - keep)
    f.seek(0, os.SEEK_END)
    return keep


def _last_line_end(f: io.FileIO, size: int) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        chunk = f.read(pos - start)
        assert chunk is not None
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def _last_record_end(f: io.FileIO, size: int, quote: bytes) -> int:
    """The end of the last complete record: after a newline preceded by an even number of
    quotes.  Needs the file's quote count, one sequential read at open (C-speed counting)."""
    total = 0
    f.seek(0)
    while chunk := f.read(1 << 20):
        total += chunk.count(quote)
    pos, after = size, 0  # quotes in [pos, size)
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        chunk = f.read(pos - start)
        assert chunk is not None
        i = len(chunk)
        while (nl := chunk.rfind(b"\n", 0, i)) >= 0:
            if (total - after - chunk.count(quote, nl + 1)) % 2 == 0:
                return start + nl + 1
            i = nl
        after += chunk.count(quote)
        pos = start
    return 0
