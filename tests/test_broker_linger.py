"""The broker's linger (``[daemon] linger``): fewer wake-ups at low rates, nothing lost."""

from __future__ import annotations

import time

import pytest

from conftest import wait_for
from radlogger.broker import DEFAULT_LINGER, LINGER_ITEMS
from radlogger.config import DAEMON_OPTIONS
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


def _pipeline(linger: float) -> tuple[Pipeline, NullEndpoint]:
    p = Pipeline(queue_size=1024)
    p.broker.linger = linger
    sink = p.add_endpoint(NullEndpoint("sink", check_order=True), subscribe=["d"])
    return p, sink


def test_linger_gathers_a_trickle_into_one_batch() -> None:
    p, sink = _pipeline(0.5)  # far longer than the puts below take
    out = p.outlet("d")
    p.start()
    try:
        for i in range(10):
            assert out.push(Measurement("d", "d.x", i, time.time_ns()))
        wait_for(lambda: sink.count == 10)
        assert p.broker.batches < 10  # without linger the broker could wake for each one
    finally:
        assert p.stop(10)
    assert p.balanced()


@pytest.mark.parametrize("linger", [0.0, 0.002])
def test_linger_loses_nothing_across_idle_ticks_and_stop(linger: float) -> None:
    p, sink = _pipeline(linger)
    out = p.outlet("d")
    p.start()
    sent = 0
    try:
        for burst in (1, LINGER_ITEMS * 3, 2, 0, 5):
            for _ in range(burst):
                assert out.push(Measurement("d", "d.x", sent, time.time_ns()))
                sent += 1
            wait_for(lambda n=sent: sink.count == n)  # then the broker goes back to sleep
        for _ in range(7):  # pushed right before stop: stop publishes them
            assert out.push(Measurement("d", "d.x", sent, time.time_ns()))
            sent += 1
    finally:
        assert p.stop(10)
    assert sink.count == sent and p.balanced()


def test_linger_is_a_daemon_option() -> None:
    [opt] = [o for o in DAEMON_OPTIONS if o.name == "linger"]
    assert opt.default == DEFAULT_LINGER and DEFAULT_LINGER <= 0.002
