"""Reading the CSV store (format and writer: radlogger.endpoints.storage.csv).

Columns: ``t_ns, time, source, topic, seq, type, value, unit, device_time, meta``; ``time`` is
``t_ns`` in ISO 8601 UTC (files written before it existed lack the column, and read the same);
``type`` says how to read ``value`` back exactly (``int``, ``float``, ``bool``, ``str``,
``none``, ``bytes`` as base64, or an array's dtype and shape such as ``<f4[1024]`` with its raw
bytes base64 encoded, or as a JSON list with ``arrays = json``).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement

from . import codec
from .lines import LineSource
from .selection import Selection

__all__ = ["read_file", "file_topics", "COLUMNS", "QUOTE", "parse_device_time"]

COLUMNS = ("t_ns", "time", "source", "topic", "seq", "type", "value", "unit", "device_time",
           "meta")
_OLD_COLUMNS = COLUMNS[:1] + COLUMNS[2:]  # before the time column
QUOTE = b'"'
_INT_RE = re.compile(r"^-?\d+$")

# The csv module refuses fields over 128 KiB by default, but the writer stores any array (a
# 32k-sample complex64 block is 350 KB of base64): without this, files we wrote could not be
# read back.  The limit is process-wide; raising it only makes reading more permissive.
csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2 ** 31 - 1)))


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
    if text.startswith("["):  # arrays = json (base64 never starts with "[")
        return codec.array_from_list(json.loads(text), dtype, shape)
    return codec.array_from_bytes(codec.b64decode(text), dtype, shape)


def parse_device_time(text: str) -> int | float | None:
    if not text:
        return None
    return int(text) if _INT_RE.match(text) else float(text)


def _rows(path: Path) -> Iterator[list[str]]:
    reader = csv.reader(LineSource(path, QUOTE))  # whole records: a str may hold newlines
    headers = (list(COLUMNS), list(_OLD_COLUMNS))
    for row in reader:
        if row in headers:
            continue
        if len(row) == len(COLUMNS):
            del row[1]  # the time column is t_ns for people; t_ns is the exact one
        elif len(row) != len(_OLD_COLUMNS):
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
