"""The pico driver after stalled uploads and at stop: one outcome per bitstream, with its own id.

A held stall (``stall_after(n, hold=True)``) makes the simulated board stop reading the port, so
the driver's writes block (``upload_timeout``) or the board's watchdog fires first, and bytes
still queued start a new transfer once the board reads again.  Whatever the order, every
bitstream must end in exactly one result or one failure, and no line may be charged to the
next bitstream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_pico_support import FAST, bitstream, sim_boards

from conftest import Collector, wait_for
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.protocol import BITSTREAM_SIZE
from radlogger.devices.pico.simulator import expected_pulses
from radlogger.devices.pico.sources import Job, Result
from radlogger.pipeline import Pipeline

WATCHDOG = 0.3


def _device(pipeline: Pipeline, path: str, **kw: object) -> tuple[PicoDevice, Collector]:
    col = pipeline.add_endpoint(Collector(), ["pico0"])
    dev = pipeline.add_device(PicoDevice("pico0", port=path, farm=f"test-{id(pipeline)}",
                                         **{"watchdog": WATCHDOG, **FAST, **kw}))
    pipeline.start()
    wait_for(lambda: dev.ready_for_work, message="board ready")
    return dev, col


def _check_each_id_once(col: Collector, ids: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Every id exactly once across pulses and failure; counts are the id's own."""
    pulses = {m.meta["evaluation"]: m.value for m in col.by_topic("pico0.pulses")}
    failed = {m.meta["evaluation"]: m.value for m in col.by_topic("pico0.failure")}
    seen = [m.meta["evaluation"] for m in col.snapshot()]
    assert sorted(seen) == sorted(ids)  # each exactly once, nothing else
    for eval_id, value in pulses.items():
        assert value == expected_pulses(bitstream(int(eval_id[1:])))  # not another's count
    return pulses, failed


@pytest.mark.parametrize("write_timeout", [0.1, 2 * WATCHDOG],
                         ids=["write_timeout<watchdog", "write_timeout>watchdog"])
def test_stalled_uploads_many_times_in_a_row_each_bitstream_ends_once(
        tmp_path: Path, pipeline: Pipeline, write_timeout: float) -> None:
    stalls, clean = 6, 3
    with sim_boards(tmp_path, 1, watchdog=WATCHDOG) as (board,):
        dev, col = _device(pipeline, board.path, write_timeout=write_timeout)
        results: list[Result] = []
        board.stall_after(5000, hold=True, times=stalls)
        ids = [f"b{i}" for i in range(stalls + clean)]
        assert dev.queue is not None
        dev.queue.put([Job(i, bitstream(int(i[1:])), results.append) for i in ids])
        wait_for(lambda: len(results) == len(ids), timeout=60.0, message="all evaluated")
        assert sorted(r.eval_id for r in results) == sorted(ids)
        assert wait_for(lambda: len(col.snapshot()) == len(ids), message="all published")
        pulses, failed = _check_each_id_once(col, ids)
        assert set(failed.values()) <= {"upload_timeout", "watchdog"}
        if write_timeout < WATCHDOG:
            assert "upload_timeout" in failed.values()  # the host noticed first
        # a stalled transfer (or its leftover bytes) costs at most its own bitstream
        assert len(pulses) >= clean and len(failed) <= stalls
        assert dev.bad_lines["unexpected_result"] == 0 and dev.bad_lines["stray_watchdog"] == 0
        assert not set(dev.failures) - {"upload_timeout", "watchdog"}
        for r in results:
            if not r.ok:
                assert r.meta["watchdogs"] >= 1 and 0 <= r.meta["bytes_received"] < BITSTREAM_SIZE
        assert board.evaluations == len(pulses)
        assert board.opens == 1  # resynchronised on the open port, never re-opened
        pipeline.stop(5.0)
        assert pipeline.balanced()


def test_the_stall_only_bitstream_fails_and_the_next_gets_its_own_count(
        tmp_path: Path, pipeline: Pipeline) -> None:
    with sim_boards(tmp_path, 1, watchdog=WATCHDOG) as (board,):
        dev, col = _device(pipeline, board.path, write_timeout=0.1)
        results: list[Result] = []
        board.stall_after(5000, hold=True)
        assert dev.queue is not None
        dev.queue.put([Job("b1", bitstream(1), results.append),
                       Job("b2", bitstream(2), results.append)])
        wait_for(lambda: len(results) == 2, timeout=30.0)
        assert [(r.eval_id, r.ok, r.reason) for r in results] == [
            ("b1", False, "upload_timeout"), ("b2", True, "")]
        assert results[0].meta["bytes_received"] == 5000
        assert results[1].value == expected_pulses(bitstream(2))
        pipeline.stop(5.0)
        _check_each_id_once(col, ["b1", "b2"])


def _pico_problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING or "EBADF" in r.getMessage()
            or "Bad file descriptor" in r.getMessage()]


@pytest.mark.parametrize("where", ["counting", "uploading", "resync"])
def test_stop_during_an_evaluation_is_a_shutdown_not_an_error(
        tmp_path: Path, pipeline: Pipeline, caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    caplog.set_level(logging.DEBUG)
    with sim_boards(tmp_path, 1, count_window=30.0, watchdog=30.0) as (board,):
        dev, col = _device(pipeline, board.path, watchdog=30.0, write_timeout=0.2)
        if where != "counting":
            board.stall_after(5000, hold=True)  # the upload blocks (or times out and waits)
        assert dev.queue is not None
        dev.queue.put([Job("cut", bitstream(1))])
        if where == "counting":
            wait_for(lambda: board.bytes_received == BITSTREAM_SIZE, message="counting")
        elif where == "uploading":
            wait_for(lambda: board.bytes_received == 5000, message="upload stalled")
        else:
            wait_for(lambda: dev._phase == "resync", message="upload timed out")
        assert pipeline.stop(5.0)
        assert [(m.topic, m.value, m.meta["evaluation"], m.meta["reason"])
                for m in col.items] == [("pico0.failure", "shutdown", "cut", "shutdown")]
        assert dev.failures == {"shutdown": 1}
        assert pipeline.snapshot()["producers"]["pico0"]["errors"] == 0
        assert pipeline.balanced()
    assert _pico_problems(caplog) == []


def test_many_stops_never_cancel_on_a_closed_port(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """interrupt() and close() race at every stop; neither EBADF nor an 'interrupt failed'."""
    caplog.set_level(logging.DEBUG)
    with sim_boards(tmp_path, 1) as (board,):
        for i in range(5):
            p = Pipeline(queue_size=1024)
            col = p.add_endpoint(Collector(), ["pico0"])
            dev = p.add_device(PicoDevice("pico0", port=board.path, farm=f"stop-{i}", **FAST))
            p.start()
            try:
                wait_for(lambda d=dev: d.ready_for_work, message="board ready")  # type: ignore[misc]
                assert dev.queue is not None
                dev.queue.put([Job(f"j{i}.{k}", bitstream(k)) for k in range(3)])
                wait_for(lambda d=dev: d.evaluations >= 1, message="one evaluated")  # type: ignore[misc]
            finally:
                assert p.stop(5.0)
            seen = [m.meta["evaluation"] for m in col.items]
            assert len(seen) == len(set(seen))
            assert p.snapshot()["producers"]["pico0"]["errors"] == 0
    assert _pico_problems(caplog) == []
