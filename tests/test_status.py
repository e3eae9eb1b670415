"""Pipeline status: states with time in state, stuck/stalled/failed detection, the status
topic, the HTTP status routes, and the graph as text, DOT and image."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from radlogger import graph as graph_module
from radlogger.device import Device, DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.endpoint import Endpoint
from radlogger.endpoints.longpoll import LongPollEndpoint
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.endpoints.null import NullEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.status import (
    StatusPublisher,
    StatusTracker,
    add_routes,
    build_graph,
    format_status,
    graph_dot,
    graph_text,
    render_graph,
)
from radlogger.web import WebServer
from radlogger.workers.pool import EndpointPool


class SlowConnect(Device):
    """An instrument whose connect hangs until released (or the device is stopped)."""

    kind = "test_slow_connect"
    quantities = ("v",)

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.release = threading.Event()

    def open(self) -> None:
        self.release.wait()

    def interrupt(self) -> None:
        self.release.set()

    def poll(self) -> None:
        self.emit("v", 1.0)
        self.wait(0.05)


class Hanging(Endpoint):
    """An endpoint whose handler hangs until released."""

    kind = "test_hanging"

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.release = threading.Event()
        self.entered = threading.Event()

    def handle_batch(self, batch: list[Measurement]) -> None:
        self.entered.set()
        self.release.wait(30)

    def close(self) -> None:
        self.release.set()


def test_stuck_connecting_is_detected_and_clears(pipeline: Pipeline) -> None:
    dev = pipeline.add_device(SlowConnect("scope"))
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.CONNECTING)
    tracker = StatusTracker(timeouts={"connecting": 30})
    first = tracker.update(pipeline, now=1000.0).get("scope")
    assert (first.state, first.in_state_s, first.problem) == ("connecting", 0.0, "")
    later = tracker.update(pipeline, now=1031.0)
    c = later.get("scope")
    assert c.in_state_s == 31.0 and c.problem == "stuck in connecting for 31 s (limit 30 s)"
    assert not later.ok and later.problems == [c]
    assert "!! stuck in connecting" in format_status(later)
    dev.release.set()
    wait_for(lambda: dev.state is DeviceState.RUNNING)
    c = tracker.update(pipeline, now=1040.0).get("scope")
    assert (c.state, c.in_state_s, c.problem) == ("running", 0.0, "")
    wait_for(lambda: pipeline.snapshot()["producers"]["scope"]["produced"] > 0)
    assert tracker.update(pipeline, now=1041.0).get("scope").counters["produced"] > 0


def test_stalled_endpoint_is_detected(pipeline: Pipeline) -> None:
    hang = pipeline.add_endpoint(Hanging("hang"), subscribe=["src"])
    pipeline.start()
    out = pipeline.outlet("src")
    for i in range(5):
        out.push(Measurement("src", "src.v", i))
    assert hang.entered.wait(5)
    tracker = StatusTracker(stall_s=20)
    assert tracker.update(pipeline, now=0.0).ok
    c = tracker.update(pipeline, now=21.0).get("hang")
    assert c.state == "running" and c.problem.startswith("stalled: ")
    assert "no progress for 21 s" in c.problem
    hang.release.set()
    wait_for(lambda: hang.idle)
    assert tracker.update(pipeline, now=22.0).ok  # progress resets the stall clock


def test_failed_device_is_a_problem(pipeline: Pipeline) -> None:
    pipeline.add_device(SyntheticDevice("gone", fail_connects=-1, max_retries=1,
                                        backoff_initial=0.01))
    pipeline.start()
    wait_for(lambda: pipeline.devices["gone"].state is DeviceState.FAILED)
    c = StatusTracker().update(pipeline).get("gone")
    assert c.problem.startswith("failed: connect failed: ConnectionRefusedError")
    assert c.counters["errors"] >= 1


def test_status_is_published_on_the_status_topic(pipeline: Pipeline) -> None:
    pipeline.add_device(SyntheticDevice("sine", rate=100))
    lp = pipeline.add_endpoint(LongPollEndpoint("lp", port=0), subscribe=["sine"])

    class Keep(NullEndpoint):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.items: list[Measurement] = []

        def handle_batch(self, batch: list[Measurement]) -> None:
            self.items.extend(batch)

    watch = pipeline.add_endpoint(Keep("watch"), subscribe=["radlogger.status"])
    pipeline.start()
    publisher = StatusPublisher(pipeline, interval=0.02)
    publisher.start()
    try:
        wait_for(lambda: len({m.t_ns for m in watch.items}) >= 2, message="two rounds")
    finally:
        publisher.stop()
    by_topic = {m.topic: m for m in watch.items}
    assert {"radlogger.status.sine", "radlogger.status.lp", "radlogger.status.watch",
            "radlogger.status.pipeline"} <= set(by_topic)
    sine = by_topic["radlogger.status.sine"]
    assert sine.value == "running" and sine.source == "radlogger"
    assert sine.meta["role"] == "device" and sine.meta["counters"]["produced"] >= 0
    assert by_topic["radlogger.status.lp"].meta["counters"]["buffered"] >= 0  # its own counters
    assert by_topic["radlogger.status.pipeline"].value == 0
    assert lp.counters()["requests"] == 0


def _chain(p: Pipeline) -> None:
    p.add_device(SyntheticDevice("wsa1", quantity="iq"))
    p.add_endpoint(EndpointPool("fft", endpoint="test_pool:Doubler", workers=2,
                                worker_mode="thread"), subscribe=["wsa1.iq"])
    p.add_endpoint(NullEndpoint("store"), subscribe=["wsa1.iq_x2"])
    p.add_endpoint(MQTTEndpoint("mq", port=1883), subscribe=["wsa1"])
    p.add_endpoint(NullEndpoint("typo"), subscribe=["wsa2.iq"])


def test_graph_text_and_dot_follow_the_data(pipeline: Pipeline) -> None:
    _chain(pipeline)
    g = build_graph(pipeline)
    text = graph_text(g)
    assert text.splitlines()[:2] == ["wsa1 (synthetic)", "`-- wsa1.iq"]
    assert "-> fft (pool: 2 x test_pool:Doubler threads)" in text
    assert "wsa1.iq_x2" in text and "-> store (null)" in text
    assert "-> mqtt://127.0.0.1:1883/radlogger/#" in text
    assert "subscription 'wsa2.iq' matches no topic" in text
    dot = graph_dot(g)
    assert dot.startswith("digraph radloggerd {")
    assert '"endpoint:fft" -> "topic:wsa1.iq_x2";' in dot
    assert '"topic:wsa1.iq_x2" -> "endpoint:store";' in dot


def test_graph_of_a_relay_device_that_declares_no_topics(pipeline: Pipeline) -> None:
    from radlogger.devices.mqtt import MQTTDevice

    pipeline.add_device(MQTTDevice("hostA", port=1883, topic_prefix="lab/a"))
    pipeline.add_endpoint(NullEndpoint("store"), subscribe=["hostA.station"])
    g = build_graph(pipeline)
    assert graph_text(g).splitlines() == [
        "mqtt://127.0.0.1:1883/lab/a/# ->", "hostA (mqtt)",
        "`-- hostA.* (topics not declared by the driver)", "    `-- -> store (null)"]
    assert not g.warnings


def test_graph_shows_states_and_problems(pipeline: Pipeline) -> None:
    dev = pipeline.add_device(SlowConnect("scope"))
    pipeline.add_endpoint(NullEndpoint("sink"), subscribe=["scope"])
    pipeline.start()
    wait_for(lambda: dev.state is DeviceState.CONNECTING)
    tracker = StatusTracker(timeouts={"connecting": 1})
    tracker.update(pipeline, now=0.0)
    g = build_graph(pipeline, tracker.update(pipeline, now=5.0))
    assert "scope (test_slow_connect) [connecting] !! stuck in connecting" in graph_text(g)
    assert "color=red" in graph_dot(g)


def test_render_graph_image_or_text(pipeline: Pipeline, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _chain(pipeline)
    g = build_graph(pipeline)
    if shutil.which("dot"):
        path, image = render_graph(g, tmp_path / "graph.svg")
        assert image and path.suffix == ".svg" and "<svg" in path.read_text()
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    path, image = render_graph(g, tmp_path / "nodot.png")
    assert not image and path == tmp_path / "nodot.txt"
    assert path.read_text() == graph_text(g)
    path, _ = render_graph(g, tmp_path / "g.dot")
    assert path.read_text() == graph_dot(g)


def test_status_over_http(pipeline: Pipeline) -> None:
    pipeline.add_device(SyntheticDevice("sine", rate=50))
    pipeline.add_endpoint(NullEndpoint("sink"), subscribe=["sine"])
    pipeline.start()
    server = WebServer(port=0, token="t0k", name="control")
    add_routes(server.app, pipeline, StatusTracker())
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/status", headers={"Authorization": "Bearer t0k"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and body["ok"] is True
        assert {c["name"]: c["state"] for c in body["components"]} == {"sine": "running",
                                                                       "sink": "running"}
        conn.request("GET", "/graph", headers={"Authorization": "Bearer t0k"})
        r = conn.getresponse()
        assert r.status == 200 and "-> sink (null) [running]" in r.read().decode()
        conn.request("GET", "/status")
        r = conn.getresponse()
        r.read()
        assert r.status == 401
        conn.close()
    finally:
        server.stop()
