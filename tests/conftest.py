"""Shared test helpers: wait on conditions (never fixed sleeps), free ports, pipelines that stop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005,
             message: str = "") -> object:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or predicate}")
        time.sleep(interval)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector(Endpoint):
    """The test sink: keeps every measurement it receives, in arrival order.

    ``items`` is appended to on the endpoint's worker thread; a test reads it after a
    ``wait_for`` on it (a list only grows, so ``len(c.items)`` is a safe predicate).  The
    helpers copy under the lock, for reading while measurements still arrive.
    """

    kind = "collect"

    def __init__(self, name: str = "collect", settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.items: list[Measurement] = []
        self._lock = threading.Lock()

    def handle_batch(self, batch: list[Measurement]) -> None:
        with self._lock:
            self.items.extend(batch)

    def snapshot(self) -> list[Measurement]:
        """A copy of everything received so far."""
        with self._lock:
            return list(self.items)

    def by_topic(self, topic: str) -> list[Measurement]:
        """What arrived on ``topic`` (exactly), in order."""
        with self._lock:
            return [m for m in self.items if m.topic == topic]

    def values(self, topic: str | None = None) -> list[Any]:
        """The values received (on ``topic`` only, when given), in order."""
        with self._lock:
            return [m.value for m in self.items if topic is None or m.topic == topic]


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    """A pipeline that is always stopped after the test (checks nothing leaks)."""
    p = Pipeline(queue_size=65536)
    yield p
    if p.running:
        p.stop(5.0)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves device/endpoint/broker threads running (python-can's habit)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    ours = ("device:", "endpoint:", "broker")

    def leaked() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.ident not in before and t.is_alive() and t.name.startswith(ours)]

    try:
        wait_for(lambda: not leaked(), 5.0, interval=0.01)
    except AssertionError:
        raise AssertionError(f"threads leaked by the test: {leaked()}") from None


@pytest.fixture
def broker(tmp_path: Any) -> Iterator[Any]:
    """A real mosquitto on a free port (tests/mosquitto.py), stopped after the test."""
    from mosquitto import broker_fixture

    yield from broker_fixture(tmp_path)


@pytest.fixture
def host_a() -> Iterator[Pipeline]:
    """A second pipeline: the publishing radloggerd (``pipeline`` is the subscribing one)."""
    p = Pipeline()
    yield p
    if p.running:
        p.stop(5)
