"""What a peer can make the HTTP stack hold and log: idle connections are capped (the rest are
closed at once, counted, one log line), malformed requests cannot flood the log."""

from __future__ import annotations

import http.client
import logging
import os
import socket

import pytest

from conftest import wait_for
from radlogger.web import WebServer


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_connections_past_the_cap_are_closed(caplog: pytest.LogCaptureFixture) -> None:
    server = WebServer("127.0.0.1", 0, None, name="capped", max_connections=20)
    server.start()
    held: list[socket.socket] = []
    try:
        fds = _open_fds()
        with caplog.at_level(logging.WARNING, logger="radlogger.web"):
            for _ in range(20):
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            wait_for(lambda: server.cap is not None and server.cap.open == 20)
            extra = []
            for _ in range(50):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                extra.append(s)
            for s in extra:  # each is closed by the server without a byte
                assert s.recv(1) == b""
                s.close()
        assert server.cap is not None and server.cap.refused == 50
        assert len([r for r in caplog.records if "refusing new ones" in r.getMessage()]) == 1
        # both ends of the 20 held (client and server in this process) and a few in flight:
        # the 50 refused hold nothing
        assert _open_fds() <= fds + 2 * 20 + 5
        for s in held:
            s.close()
        wait_for(lambda: server.cap is not None and server.cap.open == 0)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for s in held:
            s.close()
        server.stop()


def test_malformed_requests_are_logged_at_most_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    server = WebServer("127.0.0.1", 0, None, name="garbage")
    server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            for i in range(100):
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                    s.sendall(b"\x16\x03\x01 not http at all %d\r\n\r\n" % i)
                    s.recv(4096)
        aiohttp_records = [r for r in caplog.records if r.name.startswith("aiohttp")]
        assert len(aiohttp_records) <= 1
        assert all(r.exc_info is None and r.levelno <= logging.WARNING for r in aiohttp_records)
    finally:
        server.stop()


def test_concurrent_bodies_share_one_budget() -> None:
    """Requests with bodies reserve their length from one budget while their handler runs;
    past it the server answers 503 at once instead of holding more memory."""
    import asyncio
    import threading

    from aiohttp import web

    release = threading.Event()
    server = WebServer("127.0.0.1", 0, None, name="bodies", max_body=1 << 20,
                       max_body_total=3 << 20)

    async def upload(request: web.Request) -> web.Response:
        data = await request.read()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return web.json_response({"n": len(data)})

    server.app.router.add_post("/up", upload)
    server.start()
    results: list[int] = []

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/up", body=b"x" * (1 << 20))
        results.append(conn.getresponse().status)
        conn.close()

    threads = [threading.Thread(target=post) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        budget = next(m for m in server.app.middlewares if hasattr(m, "state"))
        wait_for(lambda: budget.state["reserved"] == 3 << 20, message="three uploads held")
        post()  # the fourth megabyte does not fit while three are held
        assert results == [503]
        release.set()
        for t in threads:
            t.join(30)
        assert sorted(results) == [200, 200, 200, 503]
    finally:
        release.set()
        server.stop()
