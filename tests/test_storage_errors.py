"""Disk full and permission errors: a clear, counted error; retry or fail per on_disk_error;
the rest of the pipeline (a second endpoint here) never notices."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from test_storage_helpers import (
    STORES,
    counter_measurements,
    make_store,
    unwritable_dir,
)

from conftest import Collector, wait_for
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoint import EndpointState
from radlogger.endpoints.storage.base import StorageError
from radlogger.pipeline import Pipeline
from radlogger.store import reader

KINDS = [s for s in STORES if s[0] in ("csv", "jsonl.gz", "sqlite", "hdf5")]
kinds = pytest.mark.parametrize("store", KINDS, ids=[s[0] for s in KINDS])
N = 300
FAST_RETRY = {"retry_initial": 0.02, "retry_max": 0.05}


def _run(pipeline: Pipeline, store: Any, n: int = N) -> Collector:
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=n, pattern="counter", chunk=50))
    pipeline.add_endpoint(store, subscribe=["syn"])
    other = pipeline.add_endpoint(Collector("other"), subscribe=["syn"])
    pipeline.start()
    wait_for(lambda: len(other.snapshot()) == n and store.stats.received == n and store.idle,
             message="both endpoints received everything and the store took it all")
    return other


def _no_traceback_lines(caplog: Any, name: str) -> list[str]:
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR and name in r.getMessage()]
    assert lines, "the error was logged"
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    return [r.getMessage() for r in lines]


def _flusher_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("storage-flush")]


@kinds
def test_permission_error_retry_keeps_data_then_counts_the_loss(store, tmp_path: Path,
                                                                pipeline: Pipeline,
                                                                caplog) -> None:
    where = unwritable_dir(tmp_path)
    endpoint = make_store(store, where, name="st", **FAST_RETRY)
    with caplog.at_level(logging.ERROR):
        other = _run(pipeline, endpoint)
        wait_for(lambda: sum(endpoint.disk_errors.values()) >= 2, message="retried")
        assert endpoint.state is EndpointState.RUNNING and endpoint.lost == 0
        assert set(endpoint.disk_errors) <= {"EACCES", "EPERM"}
        assert str(where) in endpoint.last_error and "permission" in endpoint.last_error
        assert pipeline.stop(5.0)
    messages = _no_traceback_lines(caplog, "endpoint st")
    assert any("kept in memory" in m and "retrying in" in m for m in messages)
    assert any(f"{N} measurements could not be written" in m for m in messages)
    assert endpoint.stats.reasons() == {"disk_error": N} and endpoint.lost == N
    assert endpoint.stats.errors >= 2 and endpoint.stats.handled == 0
    assert pipeline.balanced()
    assert [m.value for m in other.snapshot()] == list(range(N))
    assert not _flusher_threads()


@kinds
def test_permission_error_fail_policy_marks_failed(store, tmp_path: Path, pipeline: Pipeline,
                                                   caplog) -> None:
    endpoint = make_store(store, unwritable_dir(tmp_path), name="st", on_disk_error="fail")
    with caplog.at_level(logging.ERROR):
        other = _run(pipeline, endpoint)
        wait_for(lambda: endpoint.state is EndpointState.FAILED)
        assert pipeline.stop(5.0)
    _no_traceback_lines(caplog, "endpoint st")
    reasons = endpoint.stats.reasons()
    assert sum(reasons.values()) == N and set(reasons) <= {"disk_error", "endpoint_failed"}
    assert pipeline.balanced() and endpoint.stats.errors >= 1
    assert len(other.snapshot()) == N
    assert not _flusher_threads()


@pytest.mark.parametrize("store", [s for s in STORES if s[0] in ("csv", "jsonl")],
                         ids=["csv", "jsonl"])
def test_disk_full_on_dev_full(store, pipeline: Pipeline, caplog) -> None:
    """/dev/full opens and then fails every write with ENOSPC: a real full disk."""
    endpoint = store[1]("st", {**store[3], "path": "/dev/full", "flush_every": 40,
                               **FAST_RETRY})
    with caplog.at_level(logging.ERROR):
        other = _run(pipeline, endpoint)
        wait_for(lambda: endpoint.disk_errors["ENOSPC"] >= 2)
        assert "No space left on device" in endpoint.last_error
        assert "free disk space" in endpoint.last_error
        pipeline.stop(5.0)
    assert endpoint.stats.reasons() == {"disk_error": N}
    assert pipeline.balanced() and len(other.snapshot()) == N


def test_disk_full_fail_policy(pipeline: Pipeline) -> None:
    endpoint = STORES[0][1]("st", path="/dev/full", flush_every=40, on_disk_error="fail")
    other = _run(pipeline, endpoint)
    wait_for(lambda: endpoint.state is EndpointState.FAILED)
    pipeline.stop(5.0)
    assert endpoint.disk_errors["ENOSPC"] == 1
    assert endpoint.stats.dropped == N and pipeline.balanced() and len(other.snapshot()) == N


def test_sqlite_full(tmp_path: Path, pipeline: Pipeline) -> None:
    """SQLite's own limit (max_bytes -> max_page_count) fails commits with SQLITE_FULL, the
    error a full disk gives; the failed transaction rolls back whole."""
    endpoint = make_store(STORES[4], tmp_path, name="st", max_bytes=200_000, flush_every=100,
                          **FAST_RETRY)
    pipeline.add_device(SyntheticDevice("syn", rate=0, count=2000, pattern="counter",
                                        array_size=64))
    pipeline.add_endpoint(endpoint, subscribe=["syn"])
    pipeline.start()
    wait_for(lambda: endpoint.disk_errors["SQLITE_FULL"] >= 1)
    assert "database or disk is full" in endpoint.last_error
    pipeline.stop(5.0)
    stored = [m.value[0] for m in reader.read(endpoint.path)]
    assert stored == list(range(len(stored))) and 0 < len(stored) < 2000
    assert len(stored) % 100 == 0  # whole flushes only
    assert endpoint.stats.handled == len(stored) and pipeline.balanced()


def test_hdf5_refuses_a_flush_that_may_not_fit(tmp_path: Path, pipeline: Pipeline) -> None:
    """HDF5 cannot recover from ENOSPC in a write, so it checks free space first."""
    endpoint = make_store(STORES[5], tmp_path, name="st", min_free_bytes=1 << 60, **FAST_RETRY)
    other = _run(pipeline, endpoint)
    wait_for(lambda: endpoint.disk_errors["ENOSPC"] >= 2)
    assert "bytes free, a flush needs" in endpoint.last_error
    pipeline.stop(5.0)
    assert endpoint.stats.reasons() == {"disk_error": N} and len(other.snapshot()) == N


def test_hdf5_on_dev_full_fails_to_open_cleanly(pipeline: Pipeline) -> None:
    endpoint = STORES[5][1]("st", path="/dev/full", **FAST_RETRY)
    _run(pipeline, endpoint)
    wait_for(lambda: endpoint.disk_errors["ENOSPC"] >= 2)
    pipeline.stop(5.0)
    assert endpoint.stats.reasons() == {"disk_error": N} and pipeline.balanced()


@kinds
def test_recovers_when_the_disk_comes_back(store, tmp_path: Path, pipeline: Pipeline) -> None:
    """Everything kept in memory is written once the path works again: no loss, no repeat."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the store's directory should be\n")
    endpoint = make_store(store, blocker, name="st", flush_every=64, **FAST_RETRY)
    _run(pipeline, endpoint)
    wait_for(lambda: endpoint.disk_errors["ENOTDIR"] + endpoint.disk_errors["EEXIST"] >= 1)
    blocker.unlink()
    wait_for(lambda: endpoint.flushes >= 1 and endpoint._pending == 0, timeout=15,
             message="the retry wrote what was kept")
    assert pipeline.stop(5.0)
    assert [m.value for m in reader.read(endpoint.path)] == list(range(N))
    assert endpoint.lost == 0 and endpoint.stats.dropped == 0 and pipeline.balanced()


def test_buffer_max_refuses_new_data_while_the_disk_fails(tmp_path: Path,
                                                          pipeline: Pipeline) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("x\n")
    endpoint = make_store(STORES[0], blocker, name="st", buffer_max=100, flush_every=10,
                          retry_initial=0.05, retry_max=0.05)
    other = _run(pipeline, endpoint)
    assert endpoint.stats.reasons() == {"disk_backlog_full": N - 100}
    blocker.unlink()
    wait_for(lambda: endpoint._pending == 0, timeout=15)
    pipeline.stop(5.0)
    assert [m.value for m in reader.read(endpoint.path)] == list(range(100))
    assert pipeline.balanced() and len(other.snapshot()) == N


def test_write_all_raises_a_clear_error(tmp_path: Path) -> None:
    endpoint = make_store(STORES[0], unwritable_dir(tmp_path), on_disk_error="fail")
    with pytest.raises(StorageError, match="10 of 10 measurements were not stored"):
        endpoint.write_all(counter_measurements(10))


def test_restart_policy_keeps_pending_data(tmp_path: Path) -> None:
    """The endpoint base may close()+open() a store (on_error = restart): nothing pending is
    lost by that; only the final close counts a loss."""
    blocker = tmp_path / "data"
    blocker.write_text("x\n")
    endpoint = make_store(STORES[0], blocker, **FAST_RETRY)
    endpoint.open()
    endpoint.handle_batch(counter_measurements(20))
    endpoint._restart()  # what the base does after max_errors with on_error = restart
    assert endpoint.state is EndpointState.RUNNING
    assert endpoint._pending == 20 and endpoint.lost == 0
    blocker.unlink()
    endpoint.flush()
    endpoint.close()
    assert [m.value for m in reader.read(endpoint.path)] == list(range(20))


def test_fsync_failing_after_the_write_does_not_count_written_rows_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync = yes and fsync fails (EIO) once the rows are written: the error is counted,
    but the rows are in the file, so they are neither kept pending nor counted as lost."""
    import errno

    from radlogger.endpoints.storage import textfile

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(textfile.os, "fsync", failing_fsync)
    endpoint = make_store(STORES[0], tmp_path, fsync=True, flush_every=5, flush_interval=0)
    data = counter_measurements(5)
    endpoint.open()
    endpoint.stats.received += 5
    endpoint.process_batch(data)
    assert endpoint.disk_errors["EIO"] == 1 and endpoint._pending == 0
    endpoint.flush()
    endpoint.close()
    assert [m.value for m in reader.read(endpoint.path)] == list(range(5))
    assert endpoint.lost == 0 and endpoint.stats.dropped == 0
    assert endpoint.stats.handled == endpoint.stats.received == 5
