"""radloggerd beside python-can, same machine, same run (issue 18d).

python-can is the closest relative (threads, buses, listeners): its ``Notifier`` owns a reader
thread per bus and hands each message to its listeners; ``BufferedReader`` is the listener that
queues messages for a consumer thread.  Here both move ``n`` items one at a time:

* ``test_queue_vs_buffered_reader``: one producer thread, one consumer thread, no bus:
  ``LocklessQueue.put`` + batch drain against ``BufferedReader.on_message_received`` +
  ``get_message``.  Target: the queue >= 5 M items/s.
* ``test_end_to_end_vs_notifier``: a driver pushing **one measurement per call**
  (``Outlet.push``, never ``push_many``) -> queue -> broker -> counting endpoint, against a
  virtual bus sender -> ``Notifier`` reader thread -> ``BufferedReader`` -> consumer thread.
  Target: radloggerd >= 1.3 M/s.

Both assert that every item arrived and that nothing was dropped.  python-can is a bench-only
dependency (the ``[bench]`` extra).
Run: ``python -m pytest benchmarks/bench_can.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from benchmarks import benchutil
from benchmarks.benchutil import scaled
from radlogger.device import Device, DeviceDone, DeviceState
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement, now_ns
from radlogger.pipeline import Pipeline
from radlogger.queue import LocklessQueue

can = pytest.importorskip("can")

_DONE = object()


def _queue_run(n: int) -> int:
    q: LocklessQueue[object] = LocklessQueue(65536, "block", block_timeout=60)
    got = [0]

    def consume() -> None:
        while True:
            batch = q.get_batch(8192)
            if batch and batch[-1] is _DONE:
                got[0] += len(batch) - 1
                return
            got[0] += len(batch)

    t = threading.Thread(target=consume)
    t.start()
    put = q.put
    for i in range(n):
        put(i)
    put(_DONE)
    t.join()
    assert q.dropped == 0
    return got[0]


def _buffered_reader_run(n: int) -> int:
    reader = can.BufferedReader()
    got = [0]
    msg = can.Message(arbitration_id=1, data=b"12345678")

    def consume() -> None:
        get = reader.get_message
        while True:
            m = get(1.0)
            if m is None:
                return
            if m is _DONE:
                return
            got[0] += 1

    t = threading.Thread(target=consume)
    t.start()
    put = reader.on_message_received
    for _ in range(n):
        put(msg)
    put(_DONE)
    t.join()
    return got[0]


@pytest.mark.parametrize("name", ["radlogger LocklessQueue", "python-can BufferedReader"])
def test_queue_vs_buffered_reader(benchmark: Any, name: str) -> None:
    n = scaled(1_000_000)
    run = _queue_run if name.startswith("radlogger") else _buffered_reader_run
    timing: list[float] = []

    def timed() -> int:
        t0 = time.perf_counter()
        got = run(n)
        timing.append(time.perf_counter() - t0)
        return got

    got = benchmark.pedantic(timed, rounds=1 if benchutil.QUICK else 5, iterations=1)
    assert got == n
    benchmark.extra_info.update(items=n, items_per_s=n / min(timing), drops=0)


class _SinglePushDevice(Device):
    """A driver that pushes one measurement per call, as most instrument drivers do."""

    kind = "single_push"
    summary = "bench only"
    options = ()

    def __init__(self, name: str, count: int) -> None:
        super().__init__(name, None, on_full="wait")
        self.count = count
        self.emitted = 0
        self.topic = f"{name}.x"

    def poll(self) -> None:
        if self.emitted >= self.count:
            raise DeviceDone
        push = self.outlet.push
        name, topic = self.name, self.topic
        stop = min(self.count, self.emitted + 1024)
        for i in range(self.emitted, stop):
            push(Measurement(name, topic, i, now_ns()))
        self.emitted = stop


def _radlogger_e2e(n: int) -> tuple[int, float, int]:
    p = Pipeline(queue_size=65536)
    dev = p.add_device(_SinglePushDevice("dev", n))
    sink = p.add_endpoint(NullEndpoint("sink", check_order=False, inbox_size=65536),
                          subscribe=["dev"])
    t0 = time.perf_counter()
    p.start()
    deadline = time.monotonic() + 120
    while sink.count < n and dev.state is not DeviceState.FAILED:
        assert time.monotonic() < deadline, "workload did not finish"
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    assert p.stop(10) and p.balanced()
    snap = p.snapshot()
    drops = sum(s["dropped"] for g in ("endpoints", "producers") for s in snap[g].values())
    return sink.count, elapsed, drops


def _can_e2e(n: int) -> tuple[int, float, int]:
    channel = f"bench{time.monotonic_ns()}"
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    reader = can.BufferedReader()
    notifier = can.Notifier(rx, [reader], timeout=0.1)
    msg = can.Message(arbitration_id=1, data=b"12345678")
    got = 0
    try:
        t0 = time.perf_counter()
        sender = threading.Thread(target=lambda: [tx.send(msg) for _ in range(n)])
        sender.start()
        get = reader.get_message
        while got < n:
            if get(5.0) is None:
                break
            got += 1
        elapsed = time.perf_counter() - t0
        sender.join()
    finally:
        notifier.stop()
        tx.shutdown()
        rx.shutdown()
    return got, elapsed, n - got


@pytest.mark.parametrize("name", ["radlogger single push", "python-can Notifier+BufferedReader"])
def test_end_to_end_vs_notifier(benchmark: Any, name: str) -> None:
    n = scaled(1_000_000 if name.startswith("radlogger") else 300_000)
    run = _radlogger_e2e if name.startswith("radlogger") else _can_e2e
    results: list[tuple[int, float, int]] = []

    def timed() -> int:
        results.append(run(n))
        return results[-1][0]

    got = benchmark.pedantic(timed, rounds=1 if benchutil.QUICK else 3, iterations=1)
    assert got == n and all(r[2] == 0 for r in results)
    best = min(r[1] for r in results)
    benchmark.extra_info.update(measurements=n, per_s=n / best, drops=0)
