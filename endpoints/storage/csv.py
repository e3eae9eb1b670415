"""The CSV store: one row per measurement, readable by any CSV reader or spreadsheet.

Columns: ``t_ns, source, topic, seq, type, value, unit, device_time, meta``.  ``type`` makes the
text exact to read back: ``int``, ``float`` (Python's shortest round-trip repr; ``nan``,
``inf``), ``bool`` (``true``/``false``), ``str``, ``none`` (empty value), ``bytes`` (base64),
or for an array its dtype and shape, e.g. ``<f4[1024]``, with the raw C-order bytes base64
encoded.  CSV is meant for scalars; arrays are kept rather than refused, but HDF5 or SQLite
store them four times smaller and faster.  ``device_time`` is empty, an integer, or a float;
``meta`` is empty (None) or JSON.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement

from . import codec
from .selection import Selection
from .textfile import LineSource, TextFileEndpoint

__all__ = ["CSVEndpoint", "read_file", "file_topics", "COLUMNS"]

COLUMNS = ("t_ns", "source", "topic", "seq", "type", "value", "unit", "device_time", "meta")
_INT_RE = re.compile(r"^-?\d+$")
_QUOTE = b'"'

# The csv module refuses fields over 128 KiB by default, but the writer stores any array (a
# 32k-sample complex64 block is 350 KB of base64): without this, files we wrote could not be
# read back.  The limit is process-wide; raising it only makes reading more permissive.
csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2 ** 31 - 1)))


class _LineSink(list[str]):
    """csv.writer writes each row with one ``write`` call: collect the lines."""

    write = list.append


class CSVEndpoint(TextFileEndpoint):
    kind = "csv"
    summary = "CSV file, one row per measurement (scalars; arrays as base64); rotation, gzip"
    header = (",".join(COLUMNS) + "\n").encode()
    quote = _QUOTE

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._sink = _LineSink()
        self._writer = csv.writer(self._sink, lineterminator="\n")

    def _encode(self, m: Measurement) -> int:
        kind, v = codec.classify(m.value)
        if kind == "float":
            text = repr(v)
        elif kind == "int":
            text = str(v)
        elif kind == "str":
            text = v
        elif kind == "none":
            text = ""
        elif kind == "bool":
            text = "true" if v else "false"
        elif kind == "bytes":
            text = codec.b64encode(v)
        else:
            text = codec.b64encode(codec.array_to_bytes(v))
            kind = codec.array_type(v)
        dt = codec.check_device_time(m.device_time)
        meta = codec.meta_to_json(m.meta)
        self._writer.writerow((m.t_ns, m.source, m.topic, m.seq, kind, text, m.unit,
                               "" if dt is None else repr(dt) if type(dt) is float else dt,
                               "" if meta is None else meta))
        line = self._sink.pop().encode("utf-8")
        self._lines.append(line)
        return len(line)


def _value(kind: str, text: str) -> Any:
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(text)
    if kind == "str":
        return text
    if kind == "none":
        return None
    if kind == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"bad bool {text!r}")
        return text == "true"
    if kind == "bytes":
        return codec.b64decode(text)
    dtype, shape = codec.parse_array_type(kind)
    return codec.array_from_bytes(codec.b64decode(text), dtype, shape)


def parse_device_time(text: str) -> int | float | None:
    if not text:
        return None
    return int(text) if _INT_RE.match(text) else float(text)


def _rows(path: Path) -> Iterator[list[str]]:
    reader = csv.reader(LineSource(path, _QUOTE))  # whole records: a str may hold newlines
    header = list(COLUMNS)
    for row in reader:
        if row == header:
            continue
        if len(row) != len(COLUMNS):
            raise ValueError(f"{path}, row {reader.line_num}: expected {len(COLUMNS)} "
                             f"columns ({', '.join(COLUMNS)}), got {len(row)}")
        yield row


def read_file(path: Path, sel: Selection) -> Iterator[Measurement]:
    topic_ok, time_ok, timed = sel.topic_ok, sel.time_ok, sel.timed
    for row in _rows(path):
        t_ns_s, source, topic, seq, kind, text, unit, dt, meta = row
        if not topic_ok(topic):
            continue
        t_ns = int(t_ns_s)
        if timed and not time_ok(t_ns):
            continue
        yield Measurement(source, topic, _value(kind, text), t_ns, unit,
                          parse_device_time(dt), codec.meta_from_json(meta), int(seq))


def file_topics(path: Path, limit: int | None = None) -> set[str]:
    """Topics in the file (in its first ``limit`` rows: a big text file is slow to scan)."""
    return {row[2] for row in islice(_rows(path), limit)}
