"""The reservation database on real SQLite files (WAL), with a controllable clock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from radlogger.devices.pico.farm.db import ReservationDB
from radlogger.devices.pico.farm.errors import Conflict, NotFound


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _db(path: Path, clock: Clock, boards: int = 3, worker: str = "w1") -> ReservationDB:
    db = ReservationDB(str(path), clock)
    db.heartbeat(worker, "http://127.0.0.1:1")
    for i in range(boards):
        serial = f"B{i:015d}"
        assert db.register_board(serial, worker, "pulsecount") == "testing"
        db.set_status(serial, "available")
    return db


def test_wal_and_reserve_amount_all_or_nothing(tmp_path: Path) -> None:
    clock = Clock()
    db = _db(tmp_path / "f.sqlite", clock)
    mode = db._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    rows = db.reserve("alice", "pulsecount", 3600, amount=2, args={"seed": 1})
    assert [r["serial"] for r in rows] == ["B000000000000000", "B000000000000001"]
    assert rows[0]["expires"] == clock.now + 3600 and rows[0]["args"] == {"seed": 1}
    assert rows[0]["url"] == "http://127.0.0.1:1" and rows[0]["worker"] == "w1"
    assert db.available() == ["B000000000000002"]
    with pytest.raises(Conflict, match="only 1 pulsecount board.*2 requested"):
        db.reserve("bob", "pulsecount", 3600, amount=2)
    assert db.available() == ["B000000000000002"]  # nothing half-reserved
    with pytest.raises(Conflict, match="only 0 variance"):
        db.reserve("bob", "variance", 3600, amount=1)
    with pytest.raises(NotFound, match="unknown board NOPE"):
        db.reserve("bob", "pulsecount", 3600, serials=["NOPE"])
    with pytest.raises(Conflict, match="B000000000000000 is not available"):
        db.reserve("bob", "pulsecount", 3600, serials=["B000000000000000"])
    with pytest.raises(Conflict, match="runs the pulsecount firmware, not variance"):
        db.reserve("bob", "variance", 3600, serials=["B000000000000002"])
    assert [r["serial"] for r in db.reserve("bob", "pulsecount", 60,
                                             serials=["B000000000000002"])] == [
        "B000000000000002"]


def test_one_active_reservation_per_board_is_enforced_by_the_schema(tmp_path: Path) -> None:
    db = _db(tmp_path / "f.sqlite", Clock(), boards=1)
    db.reserve("alice", "pulsecount", 60, amount=1)
    with pytest.raises(sqlite3.IntegrityError):
        db._conn.execute("INSERT INTO reservations(serial, client, kind, started, expires) "
                         "VALUES ('B000000000000000', 'mallory', 'pulsecount', 0, 1)")


def test_concurrent_clients_never_get_the_same_board(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    _db(path, Clock(), boards=5).close()
    got: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def client(i: int) -> None:
        db = ReservationDB(str(path))  # its own connection, as another process would have
        start.wait()
        try:
            rows = db.reserve(f"client{i}", "pulsecount", 60, amount=1)
            with lock:
                got.extend(r["serial"] for r in rows)
        except Conflict as exc:
            with lock:
                refused.append(str(exc))
        finally:
            db.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 5 and len(set(got)) == 5 and len(refused) == 5


def test_extend_expire_warn_and_end(tmp_path: Path) -> None:
    clock = Clock()
    db = _db(tmp_path / "f.sqlite", clock)
    db.reserve("alice", "pulsecount", 100, amount=2)
    db.reserve("bob", "pulsecount", 100, amount=1)
    assert db.due_warnings(50) == []
    clock.now += 60
    warned = db.due_warnings(50)
    assert sorted(r["client"] for r in warned) == ["alice", "alice", "bob"]
    assert db.due_warnings(50) == []  # once
    rows = db.extend("alice", 100, ["B000000000000001"])
    assert rows[0]["expires"] == clock.now + 100 and rows[0]["warned"] == 0
    with pytest.raises(NotFound, match="alice holds no reservation of board.*B000000000000002"):
        db.extend("alice", 100, ["B000000000000002"])
    clock.now += 41
    expired = db.expire()
    assert sorted((r["client"], r["serial"]) for r in expired) == [
        ("alice", "B000000000000000"), ("bob", "B000000000000002")]
    assert all(r["end_reason"] == "expired" for r in expired)
    assert {b["serial"]: b["status"] for b in db.boards()} == {
        "B000000000000000": "testing", "B000000000000001": "reserved",
        "B000000000000002": "testing"}
    assert [r["serial"] for r in db.end("alice")] == ["B000000000000001"]
    assert db.active() == [] and db.end("alice") == []


def test_silent_workers_fail_with_their_boards(tmp_path: Path) -> None:
    clock = Clock()
    db = _db(tmp_path / "f.sqlite", clock, boards=2, worker="remote")
    db.heartbeat("local")
    db.reserve("alice", "pulsecount", 3600, amount=1)
    clock.now += 100
    db.heartbeat("local")
    assert db.fail_silent_workers(180) == ([], [])
    clock.now += 100
    workers, ended = db.fail_silent_workers(180, exclude="local")
    assert workers == ["remote"]
    assert [(r["client"], r["end_reason"]) for r in ended] == [("alice", "failure")]
    assert {b["status"] for b in db.boards()} == {"broken"}
    assert db.available() == []
    db.heartbeat("remote")  # it comes back: the worker is no longer failed
    assert not db.workers()[1]["failed"]


def test_reservations_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    db = _db(path, Clock())
    db.reserve("alice", "pulsecount", 3600, amount=2)
    db.close()
    again = ReservationDB(str(path))
    assert sorted(r["serial"] for r in again.active(client="alice")) == [
        "B000000000000000", "B000000000000001"]
    with pytest.raises(Conflict, match="is reserved"):
        again.delete_board("B000000000000000")
    again.delete_board("B000000000000002")
    assert len(again.boards()) == 2
    again.close()
