"""HTTP long-poll boundary: resume without gaps or duplicates, tokens, gaps, remote device."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import free_port, wait_for
from radlogger.client import AuthError, LongPollClient, RemoteError
from radlogger.devices.remote import RemoteDevice
from radlogger.endpoints.longpoll import LongPollEndpoint, Ring
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.web import WebError, WebServer

TOKEN = "s3cret-token"


@pytest.fixture
def upstream() -> Iterator[Pipeline]:
    p = Pipeline()
    yield p
    if p.running:
        p.stop(5)


def _serve(p: Pipeline, **kw: object) -> LongPollEndpoint:
    kw.setdefault("port", 0)
    lp = p.add_endpoint(LongPollEndpoint("lp", **kw), subscribe=["src"])  # type: ignore[arg-type]
    p.start()
    return lp


def _feed(p: Pipeline, start: int, stop: int, topic: str = "src.v") -> None:
    out = p.outlet("src")
    for i in range(start, stop):
        out.push(Measurement("src", topic, i, unit="V", meta={"i": i}))


def _buffered(lp: LongPollEndpoint, n: int) -> bool:
    return lp.ring.newest >= n and lp.idle


def test_resume_after_disconnect_has_no_gap_and_no_duplicate(upstream: Pipeline) -> None:
    lp = _serve(upstream)
    _feed(upstream, 0, 300)
    wait_for(lambda: _buffered(lp, 300))
    client = LongPollClient(lp.url, batch=70, wait=2)
    got: list[int] = []
    for _ in range(2):
        got += [m.value for m in client.poll().items]
    client.close()  # the link drops; the cursor stays with the client
    _feed(upstream, 300, 500)
    wait_for(lambda: _buffered(lp, 500))
    resumed = LongPollClient(lp.url, batch=70, wait=2)
    resumed.cursor, resumed.epoch = client.cursor, client.epoch
    while len(got) < 500:
        result = resumed.poll()
        assert result.gap == 0 and not result.reset
        got += [m.value for m in result.items]
    assert got == list(range(500))
    assert resumed.poll(wait=0).items == []  # nothing more, nothing repeated


def test_metadata_and_values_survive_the_boundary(upstream: Pipeline) -> None:
    lp = _serve(upstream)
    arr = (np.arange(256) * (1 + 1j)).astype(np.complex64)
    upstream.outlet("src").push(Measurement("src", "src.iq", arr, t_ns=123, unit="V",
                                            device_time=456, meta={"f0": 1e9}))
    wait_for(lambda: _buffered(lp, 1))
    for batch in (1, 10):  # single (headers + raw body) and frames
        m = LongPollClient(lp.url, batch=batch).poll().items[0]
        assert np.array_equal(m.value, arr) and m.value.dtype == np.complex64
        assert (m.topic, m.t_ns, m.unit, m.device_time, m.meta, m.seq) == \
            ("src.iq", 123, "V", 456, {"f0": 1e9}, 0)


def test_single_answers_put_type_and_metadata_in_headers(upstream: Pipeline) -> None:
    lp = _serve(upstream)
    out = upstream.outlet("src")
    out.push(Measurement("src", "src.iq", np.arange(4, dtype=np.float32)))
    out.push(Measurement("src", "src.v", 2.5, unit="V"))
    wait_for(lambda: _buffered(lp, 2))
    conn = http.client.HTTPConnection("127.0.0.1", lp.server.port, timeout=5)
    conn.request("GET", "/poll?max=1")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and r.getheader("X-Radlogger-Topic") == "src.iq"
    assert r.getheader("X-Radlogger-Type") == "float32[4]"
    assert r.getheader("Content-Type").startswith("application/octet-stream")
    assert body == np.arange(4, dtype=np.float32).tobytes()
    assert json.loads(r.getheader("X-Radlogger-Meta"))["dtype"] == "<f4"
    cursor = r.getheader("X-Radlogger-Cursor")
    conn.request("GET", f"/poll?max=1&cursor={cursor}")
    r = conn.getresponse()
    assert r.read() == b"2.5" and r.getheader("X-Radlogger-Type") == "json"
    conn.request("GET", "/poll?cursor=abc")
    r = conn.getresponse()
    assert r.status == 400 and b"cursor must be" in r.read()
    # hostile numbers: NaN/inf timeouts, a 5,000-digit max: one-line JSON errors, no 500
    for query in ("timeout=nan", "timeout=inf", "timeout=-nan", "max=" + "9" * 5000,
                  "topics=%00bad"):
        conn.request("GET", f"/poll?{query}")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 400, (query, body)
        assert r.getheader("Content-Type").startswith("application/json")
        assert set(json.loads(body)) == {"error"} and body.count(b"\n") == 1
    conn.close()


def test_token_is_required_when_set(upstream: Pipeline) -> None:
    lp = _serve(upstream, token=TOKEN)
    _feed(upstream, 0, 3)
    wait_for(lambda: _buffered(lp, 3))
    for token in (None, "wrong"):
        with pytest.raises(AuthError, match="token rejected"):
            LongPollClient(lp.url, token=token).poll(wait=0)
    conn = http.client.HTTPConnection("127.0.0.1", lp.server.port, timeout=5)
    conn.request("GET", "/poll?cursor=0")
    r = conn.getresponse()
    r.read()
    assert r.status == 401 and r.getheader("WWW-Authenticate", "").startswith("Bearer")
    conn.request("GET", "/health")  # liveness stays public
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["ok"] is True
    conn.close()
    assert [m.value for m in LongPollClient(lp.url, token=TOKEN, batch=10).poll().items] == \
        [0, 1, 2]


def test_client_that_fell_behind_gets_a_gap_count(upstream: Pipeline) -> None:
    lp = _serve(upstream, buffer=10)
    client = LongPollClient(lp.url, batch=100)
    client.cursor = 0  # has seen nothing yet
    _feed(upstream, 0, 25)
    wait_for(lambda: _buffered(lp, 25))
    result = client.poll()
    assert result.gap == 15 and client.lost == 15 and client.gaps == 1
    assert [m.value for m in result.items] == list(range(15, 25))
    assert client.poll(wait=0).gap == 0  # reported once
    assert lp.ring.evicted == 15 and lp.lost == 15


def test_topic_filter_and_latest_start(upstream: Pipeline) -> None:
    lp = _serve(upstream)
    _feed(upstream, 0, 10, topic="src.a")
    _feed(upstream, 10, 20, topic="src.b")
    wait_for(lambda: _buffered(lp, 20))
    only_b = LongPollClient(lp.url, topics=["src.b"], batch=100)
    assert [m.value for m in only_b.poll().items] == list(range(10, 20))
    latest = LongPollClient(lp.url, start="latest", batch=100)
    assert latest.poll(wait=0).items == []
    _feed(upstream, 20, 22, topic="src.a")
    wait_for(lambda: _buffered(lp, 22))
    assert [m.value for m in latest.poll().items] == [20, 21]
    assert only_b.poll(wait=0).items == []  # skipped src.a without returning it
    assert only_b.cursor == 22


def test_a_waiting_poll_wakes_up_when_data_arrives(upstream: Pipeline) -> None:
    lp = _serve(upstream)
    client = LongPollClient(lp.url, batch=10, wait=30)
    box: list[list[int]] = []
    t = threading.Thread(target=lambda: box.append([m.value for m in client.poll().items]))
    t.start()
    wait_for(lambda: lp.waiting == 1, message="request waiting on the server")
    _feed(upstream, 0, 1)
    t.join(10)
    assert not t.is_alive() and box == [[0]]


def test_new_server_run_tells_old_cursors_to_reset(upstream: Pipeline) -> None:
    port = free_port()
    lp = _serve(upstream, port=port)
    _feed(upstream, 0, 5)
    wait_for(lambda: _buffered(lp, 5))
    client = LongPollClient(lp.url, batch=100)
    assert len(client.poll().items) == 5
    upstream.stop(5)
    fresh = Pipeline()  # a restarted daemon: new ring, new epoch, cursors start again at 1
    try:
        lp2 = fresh.add_endpoint(LongPollEndpoint("lp", port=port), subscribe=["src"])
        fresh.start()
        _feed(fresh, 100, 102)
        wait_for(lambda: _buffered(lp2, 2))
        result = client.poll()
        assert result.reset and client.resets == 1
        assert [m.value for m in result.items] == [100, 101]
    finally:
        fresh.stop(5)


def test_port_in_use_is_a_clear_error() -> None:
    s = WebServer(port=0, name="one")
    s.start()
    try:
        with pytest.raises(WebError, match=f"cannot listen on 127.0.0.1:{s.port}"):
            WebServer(port=s.port, name="two").start()
    finally:
        s.stop()


def test_ring_bounds_items_and_bytes() -> None:
    ring = Ring(capacity=4, max_bytes=100)
    ring.extend([("a.b", b"h" * 10, b"x" * 10, "json")] * 6)
    assert (ring.oldest, ring.newest, len(ring), ring.bytes) == (3, 6, 4, 80)
    ring.extend([("a.b", b"h" * 10, b"x" * 50, "bytes")])
    assert (ring.oldest, ring.newest, ring.bytes) == (5, 7, 100)  # 20 + 20 + 60 bytes
    entries, cursor, gap = ring.read(0, 10, [])
    assert [e[0] for e in entries] == [5, 6, 7] and cursor == 7 and gap == 4
    ring.extend([("a.b", b"h" * 10, b"x" * 500, "bytes")])  # too big alone: kept, alone
    assert (ring.oldest, ring.newest, ring.bytes) == (8, 8, 510)


def test_remote_device_relays_and_resumes_across_an_outage(upstream: Pipeline,
                                                           pipeline: Pipeline) -> None:
    lp = _serve(upstream, port=free_port(), token=TOKEN)
    _feed(upstream, 0, 100)
    remote = pipeline.add_device(RemoteDevice("hostA", url=lp.url, token=TOKEN, batch=30,
                                              wait=1, backoff_initial=0.02, backoff_max=0.1))
    got: list[Measurement] = []
    from radlogger.endpoints.null import NullEndpoint

    class Keep(NullEndpoint):
        def handle_batch(self, batch: list[Measurement]) -> None:
            got.extend(batch)
            super().handle_batch(batch)

    sink = pipeline.add_endpoint(Keep("sink"), subscribe=["hostA"])
    pipeline.start()
    wait_for(lambda: sink.count == 100)
    lp.close()  # the upstream's HTTP side goes away; its pipeline keeps buffering
    _feed(upstream, 100, 150)
    wait_for(lambda: pipeline.snapshot()["producers"]["hostA"]["errors"] >= 1,
             message="remote device noticed the outage")
    lp.open()
    wait_for(lambda: sink.count == 150, message="resumed after the outage")
    assert [m.meta["origin_seq"] for m in got] == list(range(150))
    assert [m.value for m in got] == list(range(150)) and sink.out_of_order == 0
    first = got[0]
    assert first.topic == "hostA.src.v" and first.source == "hostA" and first.unit == "V"
    assert first.meta == {"i": 0, "origin_source": "src", "origin_seq": 0}
    assert remote.remote_lost == 0 and remote.client.resets == 0
    assert pipeline.stop(5) and pipeline.balanced()


def test_remote_device_with_a_wrong_token_counts_the_error(upstream: Pipeline,
                                                           pipeline: Pipeline) -> None:
    lp = _serve(upstream, token=TOKEN)
    remote = pipeline.add_device(RemoteDevice("hostA", url=lp.url, token="nope",
                                              backoff_initial=0.02, backoff_max=0.05))
    pipeline.start()
    wait_for(lambda: "token rejected" in remote.last_error)
    assert pipeline.snapshot()["producers"]["hostA"]["errors"] >= 1


def test_client_rejects_answers_from_something_else() -> None:
    server = WebServer(port=0, name="not-radlogger")
    server.start()
    try:
        with pytest.raises(RemoteError, match="HTTP 404"):
            LongPollClient(server.url).poll(wait=0)
    finally:
        server.stop()
