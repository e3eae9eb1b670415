"""Issue 14 on the farm: bounded client backlogs and sessions, refused board claims, bad bodies.

Real HTTP against an in-process farm (aiohttp on a free port, SQLite, simulated boards);
memory checked with psutil.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pico_farm_api import farm_env

from radlogger.devices.pico.farm.compat import ROUTES, parse_arguments
from radlogger.devices.pico.farm.errors import BadRequest
from radlogger.devices.pico.farm.icefarm import IcefarmSockets
from radlogger.devices.pico.farm.sessions import Sessions


def _post(url: str, body: Any, token: str = "") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_heartbeat_cannot_take_over_a_board_of_a_live_worker(tmp_path: Path) -> None:
    with farm_env(tmp_path, 2, token="t") as env:
        farm = env.farm.farm
        assert farm is not None
        mine = sorted(farm.local_boards())
        status, body = _post(f"{env.farm.url}/api/workers/intruder/heartbeat",
                             {"url": "http://evil.example:1", "boot": "x",
                              "boards": [{"serial": mine[0], "firmware": "pulsecount"},
                                         {"serial": "E6614C31FFFFFFFF",
                                          "firmware": "pulsecount"}]}, token="t")
        assert status == 409 and body["refused"] == [mine[0]]
        assert "\n" not in body["error"]
        assert farm.db.board(mine[0])["worker"] == "here"  # type: ignore[index]
        assert farm.db.board("E6614C31FFFFFFFF")["worker"] == "intruder"  # type: ignore[index]
        assert env.farm.counters()["claims_refused"] == 1
        # without the token a worker cannot register at all
        status, _ = _post(f"{env.farm.url}/api/workers/intruder/heartbeat", {"boards": []})
        assert status == 401


def test_made_up_clients_and_big_heartbeats_stay_bounded(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1) as env:
        farm = env.farm.farm
        assert farm is not None
        proc = psutil.Process(os.getpid())
        boards = [{"serial": f"E6614C32{i:08X}", "firmware": "pulsecount"} for i in range(500)]

        def hammer(rounds: int, offset: int) -> None:
            for i in range(rounds):
                url = f"{env.farm.url}/api/events?client=made-up-{offset + i}&timeout=0"
                with urllib.request.urlopen(url, timeout=10) as resp:
                    assert json.loads(resp.read())["events"] == []
            status, _ = _post(f"{env.farm.url}/api/workers/big/heartbeat",
                              {"url": "http://127.0.0.1:1", "boards": boards})
            assert status == 200

        hammer(500, 0)  # warm-up: allocator and caches settle
        before = proc.memory_info().rss
        hammer(2000, 10_000)
        hammer(2000, 20_000)
        grown = proc.memory_info().rss - before
        # polling never creates a backlog; 501 boards came up but nobody is a client
        assert farm.hub.clients() == []
        assert len(farm.db.available()) == 501
        assert grown < 64 << 20, f"RSS grew {grown >> 20} MiB"


def test_sessions_are_capped_bounded_and_expire() -> None:
    s = Sessions(max_sessions=2, max_events=3, ttl=0.0)
    assert s.connect("sid1", "a") and s.connect("sid2", "b")
    assert not s.connect("sid3", "c")  # the cap
    assert not s.push("c", "m")  # no session for c: counted, not created
    for i in range(5):
        s.push("a", f"m{i}")
    sid, msgs = s.take("a")
    assert sid == "sid1" and msgs == ["m2", "m3", "m4"]
    s.disconnect("sid2")
    assert s.expire(busy=set()) == ["b"]
    c = s.counters()
    assert c["sessions_refused"] == 1 and c["events_dropped.backlog_full"] == 2
    assert c["events_dropped.no_session"] == 1 and c["sessions"] == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=4)
                              | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=20).map(json.dumps)),
       st.sampled_from(sorted(ROUTES)))
def test_icefarm_arguments_never_escape(raw: bytes | str, route: str) -> None:
    """Any body on any iCEFARM route: the arguments, or a one-line BadRequest."""
    try:
        args = parse_arguments(raw, ROUTES[route])
    except BadRequest as exc:
        assert "\n" not in str(exc)
    else:
        assert set(args) == set(ROUTES[route])


def test_icefarm_arguments_deep_nesting() -> None:
    with pytest.raises(BadRequest):
        parse_arguments("[" * 200_000 + "]" * 200_000, ROUTES["/end"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                              | st.binary(max_size=8)
                              | st.text(max_size=8), lambda c: st.lists(c, max_size=4)
                              | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=20).map(msgpack.packb)))
def test_socket_requests_never_escape(frame: bytes) -> None:
    """Any ``request`` frame: queued, answered as failed, or counted as bad; never raised."""
    sockets = IcefarmSockets(SimpleNamespace(name="f", states={}), control=False,
                             worker=True, sessions=Sessions())
    sockets.handle_request("c", frame)
    assert sockets.evaluations == 0
    counted = sum(sockets.bad_requests.values())
    assert counted >= 1 or sockets.sessions.counters()["events_queued"] == 1
