"""The JSON lines store: one JSON object per line (``jq``, pandas.read_json(lines=True)).

``{"t_ns":..., "source":..., "topic":..., "seq":..., "value":..., "unit":..., "device_time":...,
"meta":{...}}``.  JSON keeps int, float, bool, str and null apart by itself; ``bytes`` and arrays
add ``"type"`` (``"bytes"``, or dtype and shape such as ``"<c8[2,512]"``) with the raw bytes
base64 encoded in ``value``.  Non-finite floats are written as ``NaN``/``Infinity`` (what
Python's json reads and writes; strict JSON parsers reject them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement

from . import codec
from .selection import Selection
from .textfile import LineSource, TextFileEndpoint

__all__ = ["JSONLEndpoint", "read_file", "file_topics"]

_dumps = json.JSONEncoder(separators=(",", ":"), default=codec.json_default).encode


class JSONLEndpoint(TextFileEndpoint):
    kind = "jsonl"
    summary = "JSON lines file, one object per measurement (arrays as base64); rotation, gzip"

    def _encode(self, m: Measurement) -> int:
        kind, v = codec.classify(m.value)
        record: dict[str, Any] = {"t_ns": m.t_ns, "source": m.source, "topic": m.topic,
                                  "seq": m.seq, "value": v, "unit": m.unit,
                                  "device_time": codec.check_device_time(m.device_time),
                                  "meta": m.meta}
        if kind == "bytes":
            record["type"] = "bytes"
            record["value"] = codec.b64encode(v)
        elif kind == "array":
            record["type"] = codec.array_type(v)
            record["value"] = codec.b64encode(codec.array_to_bytes(v))
        if m.meta is not None and not isinstance(m.meta, dict):
            raise TypeError(f"meta must be a dict, not {type(m.meta).__name__}")
        line = (_dumps(record) + "\n").encode("utf-8")
        self._lines.append(line)
        return len(line)


def _decode(rec: dict[str, Any]) -> Measurement:
    value = rec["value"]
    kind = rec.get("type")
    if kind == "bytes":
        value = codec.b64decode(value)
    elif kind is not None:
        dtype, shape = codec.parse_array_type(kind)
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
