"""One poison answer must not stop the remote device: an answer that cannot be decoded (deeply
nested JSON, garbage frames) is counted, its measurements are counted as lost, and the client
moves past it instead of asking for the same answer forever."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from radlogger import longpoll as lp
from radlogger.client import LongPollClient
from radlogger.measurement import Measurement
from radlogger.wire import split

POISON = b"[" * 100_000 + b"]" * 100_000  # nested past the recursion limit


class _Upstream(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, str, bytes, str]] = []  # (cursor, content type, body, meta)
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.asked.append(self.path)
        cursor, ctype, body, meta = self.answers.pop(0) if self.answers else (99, "", b"", "")
        self.send_response(200 if body else 204)
        self.send_header(lp.CURSOR, str(cursor))
        self.send_header(lp.EPOCH, "e1")
        self.send_header("Content-Type", ctype or "application/octet-stream")
        if meta:
            self.send_header(lp.META, meta)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Upstream)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    _Upstream.answers = []
    _Upstream.asked = []
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("ctype", "body", "meta"), [
    (lp.FRAMES_TYPE, POISON, ""),
    (lp.FRAMES_TYPE, b"\x00garbage\xff" * 50, ""),
    ("application/json", b"1", '{"topic": ' + "[" * 20_000 + "]" * 20_000 + "}"),
], ids=["nested_frames", "garbage_frames", "nested_meta"])
def test_a_poison_answer_is_counted_and_skipped(upstream: http.server.HTTPServer, ctype: str,
                                                body: bytes, meta: str) -> None:
    client = LongPollClient(f"http://127.0.0.1:{upstream.server_address[1]}")
    header, good = split(Measurement("a", "a.v", 1.5))
    _Upstream.answers = [(10, "application/octet-stream", bytes(good), header.decode()),
                         (15, ctype, body, meta)]
    first = client.poll(wait=0)
    assert len(first.items) == 1 and client.cursor == 10
    bad = client.poll(wait=0)  # does not raise
    assert bad.items == [] and bad.gap == 5 and client.cursor == 15
    assert client.bad_answers == 1 and client.lost == 5
    client.poll(wait=0)
    assert "cursor=15" in _Upstream.asked[-1]  # it moved on
    client.close()
