"""Reading the SQLite store, and its schema (the writer: radlogger.endpoints.storage.sqlite).

``measurements.id`` is the write order; ``kind`` restores what SQLite cannot tell apart (bool,
and NaN, which SQLite stores as NULL); arrays are raw C-order bytes with ``dtype`` and ``shape``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement

from . import codec
from .selection import Selection

__all__ = ["read_file", "file_topics", "connect_readonly", "SCHEMA", "FORMAT", "VERSION",
           "meta_index", "KEY_RE"]

FORMAT = "radlogger-sqlite"
VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS radlogger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    unit TEXT NOT NULL,
    UNIQUE (source, topic, unit)
);
CREATE INDEX IF NOT EXISTS series_topic ON series (topic);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL REFERENCES series (id),
    t_ns INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value,
    dtype TEXT,
    shape TEXT,
    device_time,
    meta TEXT
);
CREATE INDEX IF NOT EXISTS measurements_series_time ON measurements (series, t_ns);
CREATE VIEW IF NOT EXISTS measurement_view AS
    SELECT m.id, m.t_ns, s.source, s.topic, m.seq, m.kind, m.value, s.unit, m.dtype, m.shape,
           m.device_time, m.meta
    FROM measurements AS m JOIN series AS s ON s.id = m.series;
"""


#: meta keys that can be indexed (they are written into SQL)
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _meta_expr(key: str) -> str:
    return f"json_extract(meta, '$.{key}')"


def meta_index(key: str) -> str:
    """An expression index on one meta key (``index_keys``): ``WHERE json_extract(meta,
    '$.baseline') = '1-2'`` — and so ``--where baseline=1-2`` — finds a product's rows
    without reading the others."""
    return f"CREATE INDEX IF NOT EXISTS meta_{key} ON measurements ({_meta_expr(key)})"


def _candidates(text: str) -> list[Any]:
    """SQL values a meta value written ``text`` by the user may have (the exact comparison is
    Selection.meta_ok's, after this pre-filter)."""
    out: list[Any] = [text]
    for conv in (int, float):
        try:
            out.append(conv(text))
        except ValueError:
            pass
    if text in ("true", "True", "false", "False"):
        out.append(int(text in ("true", "True")))
    return out


def connect_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _value(kind: str, v: Any, dtype: str | None, shape: str | None) -> Any:
    if kind == "float":
        return float("nan") if v is None else float(v)
    if kind == "int" or kind == "str" or kind == "none":
        return v
    if kind == "array":
        return codec.array_from_bytes(v, dtype or "", codec.parse_shape(shape))
    if kind == "bool":
        return bool(v)
    if kind == "bytes":
        return bytes(v)
    raise ValueError(f"unknown kind {kind!r}")


def read_file(path: Path, sel: Selection) -> Iterator[Measurement]:
    conn = connect_readonly(path)
    try:
        series = {i: (s, t, u) for i, s, t, u in
                  conn.execute("SELECT id, source, topic, unit FROM series")}
        wanted = [i for i, (_, t, _) in series.items() if sel.topic_ok(t)]
        if not wanted:
            return
        where: list[str] = []
        args: list[Any] = []
        if sel.topics:
            where.append(f"series IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if sel.since_ns is not None:
            where.append("t_ns >= ?")
            args.append(sel.since_ns)
        if sel.until_ns is not None:
            where.append("t_ns < ?")
            args.append(sel.until_ns)
        for key, text in sel.where:
            if KEY_RE.match(key) and text not in ("null", "None"):
                values = _candidates(text)
                where.append(f"{_meta_expr(key)} IN ({','.join('?' * len(values))})")
                args.extend(values)
        sql = ("SELECT series, t_ns, seq, kind, value, dtype, shape, device_time, meta "
               "FROM measurements" + (" WHERE " + " AND ".join(where) if where else "") +
               " ORDER BY id")
        cur = conn.execute(sql, args)
        meta_from_json = codec.meta_from_json
        while True:
            rows = cur.fetchmany(2048)
            if not rows:
                break
            for sid, t_ns, seq, kind, v, dtype, shape, dt, meta in rows:
                source, topic, unit = series[sid]
                yield Measurement(source, topic, _value(kind, v, dtype, shape), t_ns, unit, dt,
                                  meta_from_json(meta), seq)
    finally:
        conn.close()


def file_topics(path: Path, limit: int | None = None) -> set[str]:
    """Topics in the file (``limit`` is for text formats; this one lists them cheaply)."""
    conn = connect_readonly(path)
    try:
        return {r[0] for r in conn.execute("SELECT DISTINCT topic FROM series")}
    finally:
        conn.close()
