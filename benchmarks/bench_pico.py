"""pico2-ice boards: 32 simulated boards on ptys evaluating concurrently, count window shortened.

* ``test_pico_boards_evaluate``: bitstreams queued straight to each driver; measures
  evaluations/s and upload MB/s through a Pipeline (drivers -> queue -> broker -> endpoint);
* ``test_pico_farm_http``: the same through the farm: reserve over HTTP, ``evaluate`` batches
  as base64 JSON, results back as long-polled ``results`` events.

Real boards count for 1 s (about 0.8 evaluations/s per board, 26/s for 32 boards, 2.7 MB/s
of uploads); the simulators here count for ``COUNT_WINDOW`` so the host side is what is
measured.  Each round asserts that every evaluation came back with the expected count and that
the pipeline lost nothing.

Run: ``python -m pytest benchmarks/bench_pico.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import benchutil
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.farm.client import EventHandler, EventListener, FarmClient
from radlogger.devices.pico.farm.device import FarmDevice
from radlogger.devices.pico.protocol import BITSTREAM_SIZE
from radlogger.devices.pico.simulator import expected_pulses, start_boards
from radlogger.devices.pico.sources import Job, Result
from radlogger.endpoints.null import NullEndpoint
from radlogger.pipeline import Pipeline

COUNT_WINDOW = 0.05


def _sizes() -> tuple[int, int, int]:
    """(boards, evaluations per board per round, rounds)."""
    return (4, 2, 1) if benchutil.QUICK else (32, 25, 3)


def _wait(predicate: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("benchmark workload did not finish")
        time.sleep(0.005)


def _bitstreams(n: int) -> list[bytes]:
    rng = np.random.default_rng(2024)
    return [rng.bytes(BITSTREAM_SIZE) for _ in range(n)]


def _record(benchmark: Any, evaluations: int, seconds: float) -> None:
    benchmark.extra_info["evaluations"] = evaluations
    benchmark.extra_info["evaluations_per_s"] = evaluations / seconds
    benchmark.extra_info["upload_MB_per_s"] = evaluations * BITSTREAM_SIZE / seconds / 1e6


def test_pico_boards_evaluate(benchmark: Any) -> None:
    n_boards, per_board, rounds = _sizes()
    bits = _bitstreams(per_board)
    expected = [expected_pulses(b) for b in bits]
    with tempfile.TemporaryDirectory() as tmp:
        boards = start_boards(n_boards, Path(tmp), count_window=COUNT_WINDOW)
        p = Pipeline(queue_size=65536)
        sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["*.pulses", "*.failure"])
        devs = [p.add_device(PicoDevice(f"pico{i}", port=b.path, farm="bench"))
                for i, b in enumerate(boards)]
        try:
            p.start()
            _wait(lambda: all(d.ready_for_work for d in devs))
            results: list[Result] = []
            lock = threading.Lock()

            def done(r: Result) -> None:
                with lock:
                    results.append(r)

            def run() -> None:
                results.clear()
                for d in devs:
                    assert d.queue is not None
                    d.queue.put([Job(f"e{i}", b, done) for i, b in enumerate(bits)])
                _wait(lambda: len(results) == n_boards * per_board)

            t0 = time.perf_counter()
            benchmark.pedantic(run, rounds=rounds, iterations=1)
            elapsed = time.perf_counter() - t0
            assert all(r.ok for r in results)
            assert sorted(r.value for r in results) == sorted(expected * n_boards)
        finally:
            assert p.stop(10.0)
            for b in boards:
                b.stop()
        total = n_boards * per_board * rounds
        assert sink.count == total and p.balanced()
        assert sum(d.evaluations for d in devs) == total
        _record(benchmark, total, elapsed)


class _Results(EventHandler):
    def __init__(self) -> None:
        self.values: list[int] = []
        self.failed = 0

    def on_results(self, event: dict[str, Any]) -> None:
        self.values.extend(v for _, v in event["results"])
        self.failed += len(event["failed"])


def test_pico_farm_http(benchmark: Any) -> None:
    n_boards, per_board, rounds = _sizes()
    bits = _bitstreams(per_board)
    expected = [expected_pulses(b) for b in bits]
    with tempfile.TemporaryDirectory() as tmp:
        boards = start_boards(n_boards, Path(tmp), count_window=COUNT_WINDOW)
        p = Pipeline(queue_size=65536)
        sink = p.add_endpoint(NullEndpoint("sink"), subscribe=["farm"])
        farm = p.add_device(FarmDevice("farm", db=f"{tmp}/farm.sqlite", port=0, tick=0.01,
                                       flush_remaining=per_board))
        for i, b in enumerate(boards):
            p.add_device(PicoDevice(f"pico{i}", port=b.path, farm="farm"))
        try:
            p.start()
            _wait(lambda: bool(farm.url))
            client = FarmClient(farm.url, "bench", timeout=60)
            _wait(lambda: client.available()["available"] == n_boards)
            reserved = client.reserve(amount=n_boards)
            handler = _Results()
            listener = EventListener(client, handler, poll_timeout=1.0).start()
            batch = {f"e{i}": b for i, b in enumerate(bits)}

            def run() -> None:
                handler.values.clear()
                for r in reserved:
                    client.evaluate(r["serial"], batch)
                _wait(lambda: len(handler.values) + handler.failed == n_boards * per_board)

            t0 = time.perf_counter()
            benchmark.pedantic(run, rounds=rounds, iterations=1)
            elapsed = time.perf_counter() - t0
            listener.stop()
            assert handler.failed == 0
            assert sorted(handler.values) == sorted(expected * n_boards)
            client.end_all()
        finally:
            assert p.stop(10.0)
            for b in boards:
                b.stop()
        assert p.balanced() and sink.count > 0
        _record(benchmark, n_boards * per_board * rounds, elapsed)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "--benchmark-enable", "-q"])
