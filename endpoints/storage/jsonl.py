"""The JSON lines store: one JSON object per line (``jq``, pandas.read_json(lines=True)).

``{"t_ns":..., "time":"2024-05-01T12:00:00.000000001Z", "source":...,
 "topic":..., "seq":..., "value":..., "unit":..., "device_time":...,
"meta":{...}}``.  JSON keeps int, float, bool, str and null apart by itself; ``bytes`` and arrays
add ``"type"`` (``"bytes"``, or dtype and shape such as ``"<c8[2,512]"``) with the raw bytes
base64 encoded in ``value``.  Non-finite floats are written as ``NaN``/``Infinity`` (what
Python's json reads and writes; strict JSON parsers reject them).  Reading: radlogger.store.jsonl.
"""

from __future__ import annotations

import json
from typing import Any

from radlogger.measurement import Measurement
from radlogger.store import codec

from .textfile import TextFileEndpoint

__all__ = ["JSONLEndpoint"]

_dumps = json.JSONEncoder(separators=(",", ":"), default=codec.json_default).encode


class JSONLEndpoint(TextFileEndpoint):
    kind = "jsonl"
    summary = "JSON lines file, one object per measurement (arrays as base64); rotation, gzip"

    def _encode(self, m: Measurement) -> int:
        kind, v = codec.classify(m.value)
        record: dict[str, Any] = {"t_ns": m.t_ns, "time": codec.iso_utc(m.t_ns),
                                  "source": m.source, "topic": m.topic,
                                  "seq": m.seq, "value": v, "unit": m.unit,
                                  "device_time": codec.check_device_time(m.device_time),
                                  "meta": m.meta}
        if kind == "bytes":
            record["type"] = "bytes"
            record["value"] = codec.b64encode(v)
        elif kind == "array":
            record["type"] = codec.array_type(v)
            record["value"] = codec.array_to_list(v) if self.settings.arrays == "json" else \
                codec.b64encode(codec.array_to_bytes(v))
        if m.meta is not None and not isinstance(m.meta, dict):
            raise TypeError(f"meta must be a dict, not {type(m.meta).__name__}")
        line = (_dumps(record) + "\n").encode("utf-8")
        self._lines.append(line)
        return len(line)
