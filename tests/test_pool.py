"""Endpoint pools: work spread over workers, order kept, crashes isolated, counted, restarted.

The worker endpoints below are loaded by the worker processes through their dotted path
(``test_pool:Doubler``): the child imports this module, nothing is pickled.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from conftest import wait_for
from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError
from radlogger.pipeline import Pipeline
from radlogger.plugins import load_class
from radlogger.processing import PublishingEndpoint
from radlogger.workers import broadcast_control
from radlogger.workers.pool import EndpointPool


class Doubler(PublishingEndpoint):
    """Publishes ``2 * value`` on ``<topic>_x2``; a poison value crashes it (raise or exit)."""

    kind = "test_doubler"
    produces = ("{topic}_x2",)
    options = (
        Option("crash_on", int, -1, "value that crashes the worker"),
        Option("crash_how", str, "raise", "raise (escapes handle_batch) or exit (the process "
               "dies)", choices=("raise", "exit")),
        Option("fail_on", int, -1, "value reported as one failed item"),
    )

    def handle_batch(self, batch: list[Measurement]) -> None:
        s = self.settings
        for m in batch:
            v = int(m.value)
            if v == s.crash_on:
                if s.crash_how == "exit":
                    os._exit(3)
                raise RuntimeError(f"poison value {v}")
            if v == s.fail_on:
                self.item_failed(m, ValueError(f"bad value {v}"))
                continue
            self.publish(m.derive(self.name, f"{m.topic}_x2", v * 2))


class BrokenOpen(Endpoint):
    kind = "test_broken_open"

    def open(self) -> None:
        raise ConnectionRefusedError("storage server unreachable")

    def handle(self, m: Measurement) -> None:
        pass


class Recorder(Endpoint):
    kind = "test_recorder"

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.items: list[tuple[str, int, Any]] = []

    def handle_batch(self, batch: list[Measurement]) -> None:
        self.items.extend((m.source, m.seq, m.value) for m in batch)


def _feed(p: Pipeline, start: int, stop: int) -> None:
    out = p.outlet("src")
    for i in range(start, stop):
        assert out.push(Measurement("src", "src.v", i))


def _accounted(pool: EndpointPool, sink: Recorder, n: int) -> bool:
    return len(sink.items) + pool.stats.dropped == n and pool.idle


def _check_order(sink: Recorder) -> list[int]:
    values = [v for _, _, v in sink.items]
    assert values == sorted(values), "results out of order"
    seqs = [s for _, s, _ in sink.items]
    assert seqs == list(range(len(seqs))), "derived sequence numbers not consecutive"
    return values


@pytest.mark.parametrize("mode,how", [("process", "exit"), ("thread", "raise")])
def test_worker_crash_is_isolated_counted_restarted_and_order_kept(
        pipeline: Pipeline, mode: str, how: str) -> None:
    pool = pipeline.add_endpoint(EndpointPool(
        "dbl", endpoint="test_pool:Doubler", workers=2, worker_mode=mode, crash_on=40,
        crash_how=how), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["src.v_x2"])
    pipeline.start()
    _feed(pipeline, 0, 100)
    wait_for(lambda: _accounted(pool, sink, 100), 20, message="first wave accounted")
    assert pool.crashes == 1
    # a dead process drops what it held as child_crashed; a raising stage, its item
    reason = "child_crashed" if mode == "process" else "worker_crashed"
    lost = pool.stats.reasons().get(reason, 0)
    assert 1 <= lost <= 2 * pool.settings.depth  # the poison and what that worker held
    assert len(sink.items) == 100 - lost
    # The second wave finds the worker restarted (processes are restarted with backoff).
    _feed(pipeline, 100, 200)
    wait_for(lambda: _accounted(pool, sink, 200), 20, message="second wave accounted")
    assert pool.restarts >= 1
    assert all(w.alive for w in pool.workers)
    assert pool.crashes == 1 and pool.stats.reasons().get(reason, 0) == lost
    values = _check_order(sink)
    assert 80 not in values  # 2 * 40: the poison
    assert values[-1] == 398 and len(values) == 200 - lost
    assert all(sum(1 for v in values if v == 2 * i) == 1 for i in range(100, 200))
    assert pipeline.stop(10)
    assert pipeline.balanced() and pool.crashes == 1  # stopping the workers is no crash
    snap = pipeline.snapshot()["endpoints"]["dbl"]
    assert snap["received"] == 200 and snap["handled"] + snap["dropped"] == 200


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_item_failure_is_counted_without_a_crash(pipeline: Pipeline, mode: str) -> None:
    """The same endpoint policy in a worker thread and a worker process (one runner)."""
    pool = pipeline.add_endpoint(EndpointPool(
        "dbl", endpoint="test_pool:Doubler", workers=2, worker_mode=mode, fail_on=7,
        chunk=4), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["src.v_x2"])
    pipeline.start()
    _feed(pipeline, 0, 50)
    wait_for(lambda: _accounted(pool, sink, 50), 10)
    assert pool.crashes == 0
    assert pool.stats.reasons() == {"endpoint_failed": 1}
    assert _check_order(sink) == [2 * i for i in range(50) if i != 7]


@pytest.mark.parametrize("dispatch", ["round_robin", "least_loaded"])
def test_dispatch_spreads_work_and_keeps_order(pipeline: Pipeline, dispatch: str) -> None:
    pool = pipeline.add_endpoint(EndpointPool(
        "dbl", endpoint="test_pool:Doubler", workers=3, worker_mode="thread",
        dispatch=dispatch, batch_max=10_000), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["src.v_x2"])
    pipeline.start()
    _feed(pipeline, 0, 600)
    wait_for(lambda: _accounted(pool, sink, 600), 10)
    assert _check_order(sink) == [2 * i for i in range(600)]
    per_worker = [w.chunks for w in pool.workers]
    assert sum(per_worker) == 600 and all(c > 0 for c in per_worker)
    if dispatch == "round_robin":
        assert max(per_worker) - min(per_worker) <= 1


def test_unordered_pool_delivers_everything(pipeline: Pipeline) -> None:
    pool = pipeline.add_endpoint(EndpointPool(
        "dbl", endpoint="test_pool:Doubler", workers=2, worker_mode="process", ordered=False,
        chunk=8), subscribe=["src.v"])
    sink = pipeline.add_endpoint(Recorder("sink"), subscribe=["src.v_x2"])
    pipeline.start()
    _feed(pipeline, 0, 300)
    wait_for(lambda: _accounted(pool, sink, 300), 20)
    assert sorted(v for _, _, v in sink.items) == [2 * i for i in range(300)]
    assert {w.pid for w in pool.workers} != {os.getpid()}


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="cannot import no_such_module"):
        EndpointPool("p", endpoint="no_such_module:X")
    with pytest.raises(OptionError, match="did you mean 'crash_on'"):
        EndpointPool("p", endpoint="test_pool:Doubler", crash_onn=3)
    pool = EndpointPool("p", endpoint="test_pool:BrokenOpen", workers=1)
    with pytest.raises(RuntimeError, match="storage server unreachable"):
        pool.open()
    assert pool.workers == []


def test_process_workers_belong_to_the_pool_and_take_control_events(
        pipeline: Pipeline) -> None:
    """No global registry: the pool owns its processes; a broadcast over the pipeline's
    endpoints reaches each of them and is acknowledged."""
    pool = pipeline.add_endpoint(EndpointPool(
        "dbl", endpoint="test_pool:Doubler", workers=2, worker_mode="process"),
        subscribe=["src.v"])
    pipeline.add_endpoint(Recorder("sink"), subscribe=["src.v_x2"])
    pipeline.start()
    assert isinstance(pool, EndpointPool)
    procs = pool.worker_processes()
    assert len(procs) == 2 and all(p.state == "running" for p in procs)
    assert broadcast_control(pipeline.endpoints.values(), "mark", 7) == 2
    wait_for(lambda: all(p.control_acks == 1 for p in procs), message="marks acknowledged")
    assert pipeline.stop(10) and pipeline.balanced()
    assert pool.worker_processes() == []


def test_one_loader_for_classes_named_in_text() -> None:
    assert load_class("test_pool:Doubler") is Doubler
    assert load_class("test_pool:Doubler", base=Endpoint) is Doubler
    assert load_class("null").kind == "null"
    with pytest.raises(TypeError, match="is not a Endpoint class"):
        load_class("test_pool:_feed", base=Endpoint)
    with pytest.raises(LookupError, match="has no Nothing"):
        load_class("test_pool:Nothing")
    with pytest.raises(LookupError, match="unknown endpoint type 'no_such_kind'"):
        load_class("no_such_kind")
