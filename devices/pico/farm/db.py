"""The reservation database: boards, workers and reservations in SQLite (WAL).

SQLite because the farm's state must survive a restart (a client's reservation does not vanish
with the daemon) and because its transactions settle races for us: ``reserve`` runs under
``BEGIN IMMEDIATE`` and a partial unique index allows one active reservation per board, so two
clients can never hold the same board, even from two processes sharing the file.

Times are wall-clock seconds (``time.time``): expiries are persisted and shown to clients.
One connection guarded by a lock serves the HTTP thread and the farm's tick thread; every
operation is a few indexed statements.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import Conflict, NotFound

__all__ = ["ReservationDB", "STATUSES"]

#: board statuses (as the farm defines them); radloggerd does not flash firmware itself, so
#: await_flash_default / flashing_default are only set through the API by external tooling
STATUSES = ("available", "reserved", "await_flash_default", "flashing_default", "testing",
            "broken")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY, url TEXT NOT NULL DEFAULT '', last_heartbeat REAL NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS boards (
    serial TEXT PRIMARY KEY, worker TEXT NOT NULL, firmware TEXT NOT NULL,
    status TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, serial TEXT NOT NULL, client TEXT NOT NULL,
    kind TEXT NOT NULL, args TEXT NOT NULL DEFAULT '{}', started REAL NOT NULL,
    expires REAL NOT NULL, ended REAL, end_reason TEXT, warned INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_reservation_per_board
    ON reservations(serial) WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS active_by_client ON reservations(client) WHERE ended IS NULL;
"""

_ACTIVE = """SELECT r.*, b.worker, w.url FROM reservations r JOIN boards b ON b.serial = r.serial
             LEFT JOIN workers w ON w.name = b.worker WHERE r.ended IS NULL"""


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    if "args" in d and isinstance(d["args"], str):
        d["args"] = json.loads(d["args"])
    return d


class ReservationDB:
    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_row(r) for r in self._conn.execute(sql, args).fetchall()]

    # ---------------------------------------------------------------- workers and boards
    def heartbeat(self, worker: str, url: str = "") -> None:
        with self._tx() as c:
            c.execute("INSERT INTO workers(name, url, last_heartbeat, failed) VALUES (?, ?, ?, 0) "
                      "ON CONFLICT(name) DO UPDATE SET url = excluded.url, "
                      "last_heartbeat = excluded.last_heartbeat, failed = 0",
                      (worker, url, self.clock()))

    def workers(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM workers ORDER BY name")

    def register_board(self, serial: str, worker: str, firmware: str) -> str:
        """Add a board (status ``testing`` until its worker says it is ready); its status."""
        with self._tx() as c:
            c.execute("INSERT INTO boards(serial, worker, firmware, status, updated) "
                      "VALUES (?, ?, ?, 'testing', ?) ON CONFLICT(serial) DO UPDATE SET "
                      "worker = excluded.worker, firmware = excluded.firmware",
                      (serial, worker, firmware, self.clock()))
            return str(c.execute("SELECT status FROM boards WHERE serial = ?",
                                 (serial,)).fetchone()[0])

    def set_status(self, serial: str, status: str, only_from: Sequence[str] = ()) -> bool:
        if status not in STATUSES:
            raise ValueError(f"unknown board status {status!r}")
        sql = "UPDATE boards SET status = ?, updated = ? WHERE serial = ?"
        args: list[Any] = [status, self.clock(), serial]
        if only_from:
            sql += f" AND status IN ({','.join('?' * len(only_from))})"
            args += list(only_from)
        with self._tx() as c:
            return c.execute(sql, args).rowcount > 0

    def statuses(self) -> dict[str, str]:
        return {r["serial"]: r["status"] for r in self._query("SELECT serial, status FROM boards")}

    def board(self, serial: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM boards WHERE serial = ?", (serial,))
        return rows[0] if rows else None

    def delete_board(self, serial: str) -> None:
        with self._tx() as c:
            if c.execute("SELECT 1 FROM boards WHERE serial = ?", (serial,)).fetchone() is None:
                raise NotFound(f"unknown board {serial}")
            if c.execute("SELECT 1 FROM reservations WHERE serial = ? AND ended IS NULL",
                         (serial,)).fetchone():
                raise Conflict(f"board {serial} is reserved; end the reservation first")
            c.execute("DELETE FROM boards WHERE serial = ?", (serial,))

    def boards(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT b.*, w.url, w.failed AS worker_failed, r.id AS reservation, r.client, "
            "r.kind, r.expires FROM boards b LEFT JOIN workers w ON w.name = b.worker "
            "LEFT JOIN reservations r ON r.serial = b.serial AND r.ended IS NULL "
            "ORDER BY b.serial")
        for r in rows:
            r["worker_failed"] = bool(r["worker_failed"])
        return rows

    def available(self, kind: str | None = None) -> list[str]:
        sql = ("SELECT b.serial FROM boards b JOIN workers w ON w.name = b.worker "
               "WHERE b.status = 'available' AND w.failed = 0")
        args: list[Any] = []
        if kind is not None:
            sql += " AND b.firmware = ?"
            args.append(kind)
        return [r["serial"] for r in self._query(sql + " ORDER BY b.serial", args)]

    # ---------------------------------------------------------------- reservations
    def reserve(self, client: str, kind: str, duration: float, amount: int | None = None,
                serials: Sequence[str] | None = None,
                args: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """All or nothing: ``amount`` boards of ``kind``, or exactly ``serials``."""
        now = self.clock()
        with self._tx() as c:
            if serials:
                chosen = []
                for s in dict.fromkeys(serials):
                    b = c.execute("SELECT b.*, w.failed FROM boards b LEFT JOIN workers w "
                                  "ON w.name = b.worker WHERE serial = ?", (s,)).fetchone()
                    if b is None:
                        raise NotFound(f"unknown board {s}")
                    if b["status"] != "available" or b["failed"]:
                        raise Conflict(f"board {s} is not available (status {b['status']})")
                    if b["firmware"] != kind:
                        raise Conflict(f"board {s} runs the {b['firmware']} firmware, not {kind}")
                    chosen.append(s)
            else:
                n = int(amount or 0)
                rows = c.execute(
                    "SELECT b.serial FROM boards b JOIN workers w ON w.name = b.worker "
                    "WHERE b.status = 'available' AND w.failed = 0 AND b.firmware = ? "
                    "ORDER BY b.serial LIMIT ?", (kind, n)).fetchall()
                if len(rows) < n:
                    raise Conflict(f"only {len(rows)} {kind} board(s) available, {n} requested")
                chosen = [r["serial"] for r in rows]
            ids = []
            for s in chosen:
                c.execute("UPDATE boards SET status = 'reserved', updated = ? WHERE serial = ?",
                          (now, s))
                cur = c.execute("INSERT INTO reservations(serial, client, kind, args, started, "
                                "expires) VALUES (?, ?, ?, ?, ?, ?)",
                                (s, client, kind, json.dumps(args or {}), now, now + duration))
                ids.append(int(cur.lastrowid or 0))
        return self._by_ids(ids)

    def _by_ids(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self._query(
            f"SELECT r.*, b.worker, w.url FROM reservations r JOIN boards b ON "
            f"b.serial = r.serial LEFT JOIN workers w ON w.name = b.worker WHERE r.id IN "
            f"({marks}) ORDER BY r.serial", ids)

    def active(self, client: str | None = None, serial: str | None = None) -> list[dict[str, Any]]:
        sql, args = _ACTIVE, []
        if client is not None:
            sql += " AND r.client = ?"
            args.append(client)
        if serial is not None:
            sql += " AND r.serial = ?"
            args.append(serial)
        return self._query(sql + " ORDER BY r.serial", args)

    def _held(self, c: sqlite3.Connection, client: str,
              serials: Sequence[str] | None) -> list[int]:
        rows = c.execute("SELECT id, serial FROM reservations WHERE ended IS NULL AND client = ?",
                         (client,)).fetchall()
        held = {r["serial"]: r["id"] for r in rows}
        if serials is None:
            return list(held.values())
        missing = [s for s in serials if s not in held]
        if missing:
            raise NotFound(f"client {client} holds no reservation of board(s) "
                           f"{', '.join(missing)}")
        return [held[s] for s in dict.fromkeys(serials)]

    def extend(self, client: str, duration: float,
               serials: Sequence[str] | None = None) -> list[dict[str, Any]]:
        expires = self.clock() + duration
        with self._tx() as c:
            ids = self._held(c, client, serials)
            c.executemany("UPDATE reservations SET expires = ?, warned = 0 WHERE id = ?",
                          [(expires, i) for i in ids])
        return self._by_ids(ids)

    def end(self, client: str, serials: Sequence[str] | None = None,
            reason: str = "ended") -> list[dict[str, Any]]:
        """End a client's reservations (all of them when ``serials`` is None)."""
        with self._tx() as c:
            ids = self._held(c, client, serials)
        return self._end_ids(ids, reason, "testing")

    def _end_ids(self, ids: Sequence[int], reason: str, status: str) -> list[dict[str, Any]]:
        if not ids:
            return []
        now = self.clock()
        with self._tx() as c:
            for i in ids:
                c.execute("UPDATE reservations SET ended = ?, end_reason = ? WHERE id = ? "
                          "AND ended IS NULL", (now, reason, i))
                c.execute("UPDATE boards SET status = ?, updated = ? WHERE serial = "
                          "(SELECT serial FROM reservations WHERE id = ?)", (status, now, i))
        return self._by_ids(ids)

    def end_board(self, serial: str, reason: str, status: str) -> list[dict[str, Any]]:
        """A board failed: end its reservation (if any) and set its status."""
        rows = self.active(serial=serial)
        ended = self._end_ids([r["id"] for r in rows], reason, status)
        self.set_status(serial, status)
        return ended

    def expire(self) -> list[dict[str, Any]]:
        now = self.clock()
        ids = [r["id"] for r in self._query(
            "SELECT id FROM reservations WHERE ended IS NULL AND expires <= ?", (now,))]
        return self._end_ids(ids, "expired", "testing")

    def due_warnings(self, before: float) -> list[dict[str, Any]]:
        """Active reservations ending within ``before`` seconds not warned yet (marks them)."""
        limit = self.clock() + before
        sql = "SELECT id FROM reservations WHERE ended IS NULL AND warned = 0 AND expires <= ?"
        if not self._query(sql, (limit,)):
            return []  # the common case: no write transaction on every tick
        with self._tx() as c:
            ids = [r["id"] for r in c.execute(sql, (limit,)).fetchall()]
            c.executemany("UPDATE reservations SET warned = 1 WHERE id = ?", [(i,) for i in ids])
        return self._by_ids(ids)

    def fail_silent_workers(self, timeout: float,
                            exclude: str = "") -> tuple[list[str], list[dict[str, Any]]]:
        """Workers silent for ``timeout`` s fail: their boards break, reservations end."""
        cutoff = self.clock() - timeout
        sql = "SELECT name FROM workers WHERE failed = 0 AND last_heartbeat < ? AND name != ?"
        if not self._query(sql, (cutoff, exclude)):
            return [], []
        with self._tx() as c:
            names = [r["name"] for r in c.execute(sql, (cutoff, exclude)).fetchall()]
            c.executemany("UPDATE workers SET failed = 1 WHERE name = ?", [(n,) for n in names])
        ended: list[dict[str, Any]] = []
        for name in names:
            ids = [r["id"] for r in self._query(
                "SELECT r.id FROM reservations r JOIN boards b ON b.serial = r.serial "
                "WHERE r.ended IS NULL AND b.worker = ?", (name,))]
            ended += self._end_ids(ids, "failure", "broken")
            with self._tx() as c:
                c.execute("UPDATE boards SET status = 'broken', updated = ? WHERE worker = ?",
                          (self.clock(), name))
        return names, ended
