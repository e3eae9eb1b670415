"""The CSV store: one row per measurement, readable by any CSV reader or spreadsheet.

Columns: ``t_ns, time, source, topic, seq, type, value, unit, device_time, meta``; ``time`` is
``t_ns`` as ISO 8601 UTC with ns (``2024-05-01T12:00:00.000000001Z``) for spreadsheets, which
round the 19-digit ``t_ns``.  ``type`` makes the
text exact to read back: ``int``, ``float`` (Python's shortest round-trip repr; ``nan``,
``inf``), ``bool`` (``true``/``false``), ``str``, ``none`` (empty value), ``bytes`` (base64),
or for an array its dtype and shape, e.g. ``<f4[1024]``, with the raw C-order bytes base64
encoded.  CSV is meant for scalars; arrays are kept rather than refused, but HDF5 or SQLite
store them four times smaller and faster.  ``device_time`` is empty, an integer, or a float;
``meta`` is empty (None) or JSON.  Reading: radlogger.store.csv.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from radlogger.measurement import Measurement
from radlogger.store import codec
from radlogger.store.csv import COLUMNS, QUOTE

from .textfile import TextFileEndpoint

__all__ = ["CSVEndpoint"]

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class _LineSink(list[str]):
    """csv.writer writes each row with one ``write`` call: collect the lines."""

    write = list.append


class CSVEndpoint(TextFileEndpoint):
    kind = "csv"
    summary = "CSV file, one row per measurement (scalars; arrays as base64); rotation, gzip"
    header = (",".join(COLUMNS) + "\n").encode()
    quote = QUOTE

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._sink = _LineSink()
        self._writer = csv.writer(self._sink, lineterminator="\n")
        self._json_arrays = self.settings.arrays == "json"

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
        elif self._json_arrays:
            text = _dumps(codec.array_to_list(v))
            kind = codec.array_type(v)
        else:
            text = codec.b64encode(codec.array_to_bytes(v))
            kind = codec.array_type(v)
        dt = codec.check_device_time(m.device_time)
        meta = codec.meta_to_json(m.meta)
        self._writer.writerow((m.t_ns, codec.iso_utc(m.t_ns), m.source, m.topic, m.seq, kind,
                               text, m.unit,
                               "" if dt is None else repr(dt) if type(dt) is float else dt,
                               "" if meta is None else meta))
        line = self._sink.pop().encode("utf-8")
        self._lines.append(line)
        return len(line)
