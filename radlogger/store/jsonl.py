"""Reading the JSON lines store (format and writer: radlogger.endpoints.storage.jsonl).

One JSON object per line; ``bytes`` and arrays carry ``"type"`` (``"bytes"``, or dtype and shape
such as ``"<c8[2,512]"``) with the raw bytes base64 encoded in ``value`` (or, with ``arrays =
json``, as nested lists, complex numbers as ``[re, im]``).  ``time`` (ISO 8601 UTC, beside
``t_ns``) is for people and is not read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement

from . import codec
from .lines import LineSource
from .selection import Selection

__all__ = ["read_file", "file_topics"]


def _decode(rec: dict[str, Any]) -> Measurement:
    value = rec["value"]
    kind = rec.get("type")
    if kind == "bytes":
        value = codec.b64decode(value)
    elif kind is not None:
        dtype, shape = codec.parse_array_type(kind)
        if isinstance(value, list):  # arrays = json
            value = codec.array_from_list(value, dtype, shape)
        else:
            value = codec.array_from_bytes(codec.b64decode(value), dtype, shape)
    return Measurement(rec["source"], rec["topic"], value, rec["t_ns"], rec["unit"],
                       rec["device_time"], rec["meta"], rec["seq"])


def read_file(path: Path, sel: Selection) -> Iterator[Measurement]:
    topic_ok, time_ok, timed = sel.topic_ok, sel.time_ok, sel.timed
    loads = json.loads
    for line in LineSource(path):
        rec = loads(line)
        if not topic_ok(rec["topic"]) or (timed and not time_ok(rec["t_ns"])):
            continue
        yield _decode(rec)


def file_topics(path: Path, limit: int | None = None) -> set[str]:
    """Topics in the file (in its first ``limit`` lines: a big text file is slow to scan)."""
    return {json.loads(line)["topic"] for line in islice(LineSource(path), limit)}
