"""The SQLite store (stdlib ``sqlite3``): WAL, one transaction per flush, indexed by series/time.

Schema (defined in radlogger.store.sqlite, beside the reader; also in README.md)::

    series(id, source, topic, unit)            -- one row per (device, topic, unit)
    measurements(id, series, t_ns, seq, kind, value, dtype, shape, device_time, meta)
    index measurements(series, t_ns)           -- "this device/topic between these times"
    view measurement_view                      -- the two joined, for ad-hoc SQL

``measurements.id`` is the write order.  ``value`` uses SQLite's dynamic typing (INTEGER, REAL,
TEXT, BLOB, NULL) and ``kind`` restores what SQLite cannot tell apart (bool, and NaN, which
SQLite stores as NULL).  Arrays are raw C-order bytes in a BLOB with ``dtype`` (numpy's string,
e.g. ``<f4``) and ``shape`` (``32,1024``) beside them: ``np.frombuffer(value, dtype)
.reshape(shape)`` gives them back, no per-sample rows.

Crash safety: WAL with ``synchronous=NORMAL`` keeps every committed transaction through a
process crash (``FULL`` with ``fsync = yes`` also through power loss); a flush is one
``executemany`` in one transaction, so a crash loses at most what was not yet flushed, and a
failed commit (disk full) rolls back whole, to be retried with the same rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError
from radlogger.products import PRODUCT_KEYS
from radlogger.store import codec
from radlogger.store.sqlite import FORMAT, KEY_RE, SCHEMA, VERSION, meta_index

from .base import StorageEndpoint

__all__ = ["SQLiteEndpoint"]

_INSERT = ("INSERT INTO measurements (series, t_ns, seq, kind, value, dtype, shape, "
           "device_time, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


class SQLiteEndpoint(StorageEndpoint):
    kind = "sqlite"
    summary = "SQLite database (WAL, batched transactions, indexed by series and time)"
    storage_exceptions = (OSError, sqlite3.OperationalError)
    options = (
        Option("max_bytes", int, 0, "cap the database size; at the cap writes fail as on a "
               "full disk (0 = no cap)", min=0),
        Option("index_keys", list, list(PRODUCT_KEYS), "meta keys with an expression index "
               "(json_extract): queries and --where by product stay fast"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        for key in self.settings.index_keys:
            if not KEY_RE.match(key):
                raise OptionError("index_keys", f"index_keys: {key!r} is not a plain meta key "
                                  "(letters, digits, _)")
        self._conn: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str, str], int] = {}
        self._new_series: set[tuple[str, str, str]] = set()
        self._rows: list[tuple[Any, ...]] = []
        self._series_path: Path | None = None

    # ---------------------------------------------------------------- file
    def _can_append(self, path: Path) -> bool:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    return True
                if "radlogger_info" not in tables:
                    return False
                row = conn.execute("SELECT value FROM radlogger_info WHERE key = 'format'"
                                   ).fetchone()
                return row is not None and row[0] == FORMAT
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return False

    def _open_file(self, path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.settings.fsync else 'NORMAL'}")
            if self.settings.max_bytes:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, self.settings.max_bytes // page)}")
            conn.execute("BEGIN")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for key in self.settings.index_keys:
                try:
                    conn.execute(meta_index(key))
                except sqlite3.OperationalError as exc:  # an SQLite without JSON functions
                    if "no such function" not in str(exc):
                        raise
            conn.execute("INSERT OR IGNORE INTO radlogger_info VALUES ('format', ?)", (FORMAT,))
            conn.execute("INSERT OR IGNORE INTO radlogger_info VALUES ('version', ?)",
                         (VERSION,))
            conn.execute("COMMIT")
            series = {(s, t, u): i for i, s, t, u in
                      conn.execute("SELECT id, source, topic, unit FROM series")}
        except BaseException:
            conn.close()
            raise
        if self._rows and path != self._series_path:
            # rows kept through a disk error, encoded with the ids of another file: use keys
            by_id = {i: k for k, i in self._series.items()}
            self._rows = [(by_id[r[0]],) + r[1:] if type(r[0]) is int else r
                          for r in self._rows]
        self._conn = conn
        self._series = series
        self._series_path = path
        self._new_series = {r[0] for r in self._rows if type(r[0]) is tuple}

    def _close_file(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---------------------------------------------------------------- data
    def _encode(self, m: Measurement) -> int:
        kind, v = codec.classify(m.value)
        dtype = shape = None
        if kind == "float" or kind == "int" or kind == "none":
            size = 8
        elif kind == "array":
            dtype, shape = v.dtype.str, codec.format_shape(v.shape)
            v = codec.array_to_bytes(v)
            size = len(v)
        elif kind == "bool":
            v, size = int(v), 1
        elif kind == "str":
            size = len(v.encode("utf-8"))  # refuse what SQLite could not store, now
        else:
            size = len(v)
        key = (m.source, m.topic, m.unit)
        sid: Any = self._series.get(key)
        if sid is None:
            "".join(key).encode("utf-8")  # a name SQLite cannot store fails this item only
            self._new_series.add(key)
            sid = key  # resolved to an id at the flush that creates the series row
        self._rows.append((sid, m.t_ns, m.seq, kind, v, dtype, shape,
                           codec.check_device_time(m.device_time), codec.meta_to_json(m.meta)))
        return size + 40

    def _write_pending(self) -> None:
        conn = self._conn
        assert conn is not None
        rows = self._rows
        try:
            if self._new_series:
                conn.execute("BEGIN")
                conn.executemany("INSERT OR IGNORE INTO series (source, topic, unit) "
                                 "VALUES (?, ?, ?)", sorted(self._new_series))
                conn.execute("COMMIT")
                self._series = {(s, t, u): i for i, s, t, u in
                                conn.execute("SELECT id, source, topic, unit FROM series")}
                self._new_series.clear()
            series = self._series
            if any(type(r[0]) is tuple for r in rows):
                rows = [(series[r[0]],) + r[1:] if type(r[0]) is tuple else r for r in rows]
            conn.execute("BEGIN")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._close_quietly()
            raise
        self._rows = []

    def _discard_pending(self) -> None:
        self._rows = []
        self._new_series.clear()
