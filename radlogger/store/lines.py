"""Reading line-oriented stores (CSV, JSON lines), plain or gzip: complete records only.

The writer (radlogger.endpoints.storage.textfile) writes each flush as whole lines, or with
gzip as one complete gzip member, so a crash can only leave a torn *last* line or member.
Reading keeps only complete lines: a torn last line and a torn last gzip member are skipped,
logged, and counted in ``torn``.

A CSV record may span lines (a str value with a newline is quoted and written as is), so for
CSV a *record* ends only at a newline outside quotes (an even number of ``"`` before it: CSV
writes a quote inside a field as two).
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["LineSource", "read_lines", "GZIP_MAGIC"]

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"


class LineSource:
    """Complete lines of a plain or gzip text file, counting torn tails in ``torn``."""

    def __init__(self, path: Path, quote: bytes = b"") -> None:
        self.path = path
        self.quote = quote  # records span lines inside quotes (CSV): yield whole records
        self.torn = 0

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            gz = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if gz:
                for member in self._members(f):
                    yield from self._complete(io.BytesIO(member))
            else:
                yield from self._complete(f)

    def _complete(self, f: BinaryIO) -> Iterator[str]:
        quote = self.quote
        parts: list[bytes] = []
        odd = False
        for line in f:
            if not line.endswith(b"\n"):
                parts.append(line)
                break
            if quote:
                odd ^= bool(line.count(quote) & 1)
                if odd:  # a newline inside quotes: the record goes on
                    parts.append(line)
                    continue
                if parts:
                    parts.append(line)
                    line = b"".join(parts)
                    parts = []
            yield line.decode("utf-8")
        if parts:
            self.torn += 1
            log.warning("%s: skipped a torn last line of %d bytes (a crash during a "
                        "write)", self.path, sum(map(len, parts)))

    def _members(self, f: BinaryIO) -> Iterator[bytes]:
        d = zlib.decompressobj(wbits=31)
        parts: list[bytes] = []
        started = False
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            while chunk:
                started = True
                try:
                    parts.append(d.decompress(chunk))
                except zlib.error as exc:
                    self.torn += 1
                    log.warning("%s: stopped at a corrupt gzip member: %s", self.path, exc)
                    return
                if not d.eof:
                    break
                yield b"".join(parts)
                parts = []
                started = False
                chunk = d.unused_data
                d = zlib.decompressobj(wbits=31)
        if started:
            self.torn += 1
            log.warning("%s: skipped a torn last gzip member (a crash during a write)",
                        self.path)


def read_lines(path: Path, quote: bytes = b"") -> Iterator[str]:
    """Complete lines (records, with ``quote``) of ``path`` (plain or gzip, torn tails
    skipped)."""
    return iter(LineSource(path, quote))
