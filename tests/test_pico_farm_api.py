"""The farm control plane end to end: HTTP API (aiohttp on a free port), SQLite, simulated boards
on ptys, the client library and its event listener."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_pico_support import FAST, bitstream, sim_boards

from conftest import Collector, free_port, wait_for
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.farm.client import (
    EventHandler,
    EventListener,
    FarmClient,
    FarmClientError,
)
from radlogger.devices.pico.farm.device import FarmDevice
from radlogger.devices.pico.simulator import SimulatedBoard, expected_fitness, expected_pulses
from radlogger.pipeline import Pipeline

_names = itertools.count()


@dataclass
class Env:
    farm: FarmDevice
    pipeline: Pipeline
    boards: list[SimulatedBoard]
    collector: Collector
    token: str

    def client(self, name: str = "alice", token: str | None = None) -> FarmClient:
        return FarmClient(self.farm.url, name, self.token if token is None else token,
                          timeout=10)


@contextmanager
def farm_env(tmp_path: Path, n: int = 2, token: str = "", modes: tuple[str, ...] = (),
             board_kw: dict[str, Any] | None = None, **farm_kw: Any) -> Iterator[Env]:
    name = f"farm{next(_names)}"
    modes = modes or ("pulsecount",) * n
    with sim_boards(tmp_path, n, modes, **(board_kw or {})) as boards:
        p = Pipeline()
        col = p.add_endpoint(Collector(), [name] + [f"{name}-p{i}" for i in range(n)])
        farm = p.add_device(FarmDevice(name, db=str(tmp_path / f"{name}.sqlite"),
                                       port=free_port(), token=token, worker="here",
                                       **{"tick": 0.01, **farm_kw}))
        for i, b in enumerate(boards):
            p.add_device(PicoDevice(f"{name}-p{i}", port=b.path, farm=name, firmware=modes[i],
                                    **FAST))
        p.start()
        try:
            wait_for(lambda: farm.url and farm.farm is not None, message="farm API up")
            env = Env(farm, p, boards, col, token)
            c = env.client("probe")
            wait_for(lambda: c.available()["available"] == n, message="boards available")
            yield env
        finally:
            p.stop(5.0)


class Recorder(EventHandler):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == kind]


def _raw(url: str, method: str = "POST", data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_token_is_required_when_configured(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1, token="s3cret") as env:
        status, body = _raw(env.farm.url + "/api/available", "GET")
        assert status == 401 and "Authorization: Bearer" in body["error"]
        status, _ = _raw(env.farm.url + "/api/reserve", data=b'{"client": "x"}',
                         headers={"Authorization": "Bearer wrong"})
        assert status == 401
        with pytest.raises(FarmClientError) as err:
            env.client(token="wrong").reserve(amount=1)
        assert err.value.status == 401
        assert env.client().available()["available"] == 1
        assert env.farm.farm is not None and env.farm.farm.db.active() == []


def test_reservation_lifecycle_over_http(tmp_path: Path) -> None:
    with farm_env(tmp_path, 3) as env:
        alice, bob = env.client("alice"), env.client("bob")
        rec = Recorder()
        with EventListener(alice, rec, poll_timeout=0.5):
            mine = alice.reserve(amount=2)
            assert len({r["serial"] for r in mine}) == 2
            assert all(r["url"] == env.farm.url and r["client"] == "alice" for r in mine)
            assert alice.available()["available"] == 1
            with pytest.raises(FarmClientError) as err:
                bob.reserve(amount=2)
            assert err.value.status == 409 and "only 1 pulsecount board" in err.value.message
            (theirs,) = bob.reserve(amount=1)
            assert theirs["serial"] not in {r["serial"] for r in mine}
            with pytest.raises(FarmClientError) as err:
                bob.reserve(serials=[mine[0]["serial"]])
            assert err.value.status == 409
            devices = {d["serial"]: d for d in alice.devices()}
            assert {d["status"] for d in devices.values()} == {"reserved"}
            assert devices[theirs["serial"]]["client"] == "bob"
            assert devices[mine[0]["serial"]]["driver"]["state"] == "running"
            (longer,) = alice.extend([mine[0]["serial"]], duration=7200)
            assert longer["expires"] > mine[0]["expires"] + 3000
            with pytest.raises(FarmClientError) as err:
                bob.extend([mine[0]["serial"]])
            assert err.value.status == 404 and "bob holds no reservation" in err.value.message
            assert [r["serial"] for r in alice.end([mine[0]["serial"]])] == [mine[0]["serial"]]
            assert [r["serial"] for r in alice.end_all()] == [mine[1]["serial"]]
            wait_for(lambda: len(rec.of("reservation_end")) == 2)
            assert {e["reason"] for e in rec.of("reservation_end")} == {"ended"}
            # ended boards are tested again and come back
            wait_for(lambda: alice.available()["available"] == 2)
            wait_for(lambda: rec.of("devices_available"))
        bob.end_all()
        topics = {m.topic for m in env.collector.items}
        assert f"{env.farm.name}.reservation_end" in topics


def test_expiry_warns_then_ends(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1, warn_before_s=60.0) as env:
        alice = env.client("alice")
        rec = Recorder()
        with EventListener(alice, rec, poll_timeout=0.5):
            (r,) = alice.reserve(amount=1, duration=0.3)
            wait_for(lambda: rec.of("reservation_end"), message="expiry")
        ending = rec.of("reservation_ending")
        assert len(ending) == 1 and ending[0]["serial"] == r["serial"]
        assert 0 <= ending[0]["remaining_s"] <= 0.3
        (end,) = rec.of("reservation_end")
        assert end["reason"] == "expired" and end["seq"] > ending[0]["seq"]
        wait_for(lambda: alice.available()["available"] == 1)


def test_bad_requests_get_4xx_and_a_message(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1) as env:
        url = env.farm.url
        alice = env.client("alice")
        (mine,) = alice.reserve(amount=1)
        serial = mine["serial"]
        cases: list[tuple[str, str, bytes | None, int, str]] = [
            ("POST", "/api/reserve", b"{not json", 400, "malformed JSON"),
            ("POST", "/api/reserve", b"[1, 2]", 400, "JSON object"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "pulsecount", "amount": "two"}',
             400, "field 'amount' must be an integer"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "pulsecount", "amount": true}',
             400, "field 'amount' must be an integer"),
            ("POST", "/api/reserve", b'{"kind": "pulsecount", "amount": 1}', 400,
             "missing field 'client'"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "blinky", "amount": 1}', 400,
             "unknown state kind 'blinky'"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "pulsecount"}', 400,
             "either 'amount'"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "pulsecount", "amount": 0}', 400,
             "at least 1"),
            ("POST", "/api/reserve",
             b'{"client": "a", "kind": "pulsecount", "serials": ["0000000000000000"]}', 404,
             "unknown board 0000000000000000"),
            ("POST", "/api/reserve", b'{"client": "a", "kind": "pulsecount", "serials": [1]}',
             400, "list of strings"),
            ("POST", "/api/extend", b'{"client": "alice", "duration": -5}', 400, "positive"),
            ("POST", "/api/end", b'{"client": "alice"}', 400, "end-all"),
            ("POST", "/api/boards/0000000000000000/evaluate", b'{"client": "alice"}', 404,
             "unknown board"),
            ("POST", f"/api/boards/{serial}/evaluate", b'{"client": "bob", "bitstreams": {}}',
             409, "bob holds no reservation"),
            ("POST", f"/api/boards/{serial}/explode", b'{"client": "alice"}', 404,
             "no method 'explode'; known: evaluate, status"),
            ("POST", f"/api/boards/{serial}/evaluate", b'{"client": "alice", "bitstreams": 5}',
             400, "field 'bitstreams' must be"),
            ("POST", f"/api/boards/{serial}/evaluate",
             b'{"client": "alice", "bitstreams": {"e1": "***"}}', 400, "not valid base64"),
            ("POST", f"/api/boards/{serial}/evaluate",
             b'{"client": "alice", "bitstreams": {"e1": "AAAA"}}', 400,
             "has 3 bytes; a pico2-ice bitstream has 104090"),
            ("GET", "/api/events", None, 400, "'client'"),
            ("GET", "/api/events?client=a&after=x", None, 400, "must be numbers"),
            ("GET", "/api/nothing-here", None, 404, "Not Found"),
            ("POST", "/api/workers/w9/heartbeat", b'{"boards": [{"serial": "X", "ok": "yes"}]}',
             400, "field 'ok' must be true or false"),
        ]
        for method, path, data, status, text in cases:
            got, body = _raw(url + path, method, data, {"Content-Type": "application/json"})
            assert (got, text in body.get("error", "")) == (status, True), (path, data, body)
        assert env.farm.farm is not None
        assert [len(b.queue) for b in env.pipeline.devices.values()
                if isinstance(b, PicoDevice) and b.queue is not None] == [0]
        assert alice.call(serial, "status")["remaining"] == 0


def test_evaluate_over_http_yields_results_events(tmp_path: Path) -> None:
    with farm_env(tmp_path, 3, modes=("pulsecount", "pulsecount", "variance"),
                  flush_remaining=2, flush_interval=600.0) as env:
        alice = env.client("alice")
        rec = Recorder()
        with EventListener(alice, rec, poll_timeout=0.5):
            pulse = alice.reserve(amount=2, kind="pulsecount")
            (var,) = alice.reserve(amount=1, kind="variance")
            sent: dict[str, dict[str, bytes]] = {}
            for k, r in enumerate(pulse + [var]):
                sent[r["serial"]] = {f"g{k}-{i}": bitstream(100 * k + i) for i in range(6)}
                answer = alice.evaluate(r["serial"], sent[r["serial"]])
                assert answer["queued"] == 6

            def results() -> dict[str, dict[str, Any]]:
                out: dict[str, dict[str, Any]] = {}
                for e in rec.of("results"):
                    out.setdefault(e["serial"], {}).update(dict(e["results"]))
                return out

            wait_for(lambda: sum(map(len, results().values())) == 18, message="18 results")
        got = results()
        for r in pulse:
            assert got[r["serial"]] == {k: expected_pulses(v) for k, v in sent[r["serial"]].items()}
        assert got[var["serial"]] == pytest.approx(
            {k: expected_fitness(v) for k, v in sent[var["serial"]].items()})
        assert all(not e["failed"] for e in rec.of("results"))
        # batched: nothing was flushed while more than 2 bitstreams waited on a board
        assert all(e["remaining"] <= 2 for e in rec.of("results"))
        assert len(rec.of("results")) < 18
        status = alice.call(pulse[0]["serial"], "status")
        assert (status["queued"], status["done"], status["remaining"]) == (6, 6, 0)
        env.pipeline.stop(5.0)
        farm_topic = f"{env.farm.name}.results"
        stored = env.collector.by_topic(farm_topic)
        assert sum(m.value for m in stored) == 18
        pulses = [m for m in env.collector.items if m.topic.endswith(".pulses")]
        assert len(pulses) == 12
        assert all(m.meta["client"] == "alice" and m.meta["state"] == "pulsecount"
                   for m in pulses)
        assert env.pipeline.balanced()


def test_a_full_batch_is_flushed_once_and_ending_drops_the_queue(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1, flush_remaining=0, flush_interval=60.0) as env:
        alice = env.client("alice")
        rec = Recorder()
        with EventListener(alice, rec, poll_timeout=0.5):
            (r,) = alice.reserve(amount=1)
            alice.evaluate(r["serial"], {f"e{i}": bitstream(i) for i in range(5)})
            wait_for(lambda: rec.of("results"))
            (batch,) = rec.of("results")
            assert len(batch["results"]) == 5 and batch["remaining"] == 0
            env.boards[0].count_window = 30.0
            alice.evaluate(r["serial"], {f"x{i}": bitstream(50 + i) for i in range(4)})
            wait_for(lambda: env.boards[0].transfers == 6, message="one bitstream counting")
            alice.end([r["serial"]])
            wait_for(lambda: rec.of("reservation_end"))
        (end,) = rec.of("reservation_end")
        assert end["dropped"] == 3 and end["done"] == 5


def test_silent_worker_fails_its_boards_with_a_failure_event(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1, worker_timeout=1.0) as env:
        url = env.farm.url
        status, _ = _raw(url + "/api/workers/remote1/heartbeat", data=json.dumps(
            {"url": "http://192.0.2.1:8470", "boards": [{"serial": "REMOTE0000000001"}]}
        ).encode(), headers={"Content-Type": "application/json"})
        assert status == 200
        alice = env.client("alice")
        rec = Recorder()
        with EventListener(alice, rec, poll_timeout=0.5):
            (r,) = alice.reserve(serials=["REMOTE0000000001"])
            assert r["worker"] == "remote1" and r["url"] == "http://192.0.2.1:8470"
            with pytest.raises(FarmClientError) as err:  # called at the control, not the worker
                FarmClient(url, "alice", timeout=5).call("REMOTE0000000001", "status")
            assert err.value.status == 409 and "worker remote1" in err.value.message
            # the remote worker stays silent beyond worker_timeout
            wait_for(lambda: rec.of("failure"), message="failure event")
            wait_for(lambda: rec.of("reservation_end"))
        (fail,) = rec.of("failure")
        assert fail["serial"] == "REMOTE0000000001" and fail["reason"] == "worker"
        assert rec.of("reservation_end")[0]["reason"] == "failure"
        boards = {d["serial"]: d for d in alice.devices()}
        assert boards["REMOTE0000000001"]["status"] == "broken"
        assert boards["REMOTE0000000001"]["worker_failed"] is True
        # the local worker heartbeats itself and is unaffected
        assert alice.available()["available"] == 1
        env.pipeline.stop(5.0)
        assert env.collector.by_topic(f"{env.farm.name}.failure")[0].value == "worker"


def test_reservations_survive_a_farm_restart(tmp_path: Path) -> None:
    with farm_env(tmp_path, 1) as env:
        alice = env.client("alice")
        (r,) = alice.reserve(amount=1)
        farm = env.farm
        port = farm.server.port if farm.server else 0
        assert farm.stop(5.0)
        farm.settings["port"] = port
        farm.start()
        wait_for(lambda: farm.farm is not None and farm.url)
        again = FarmClient(farm.url, "alice", timeout=5)
        wait_for(lambda: _up(again))
        answer = again.evaluate(r["serial"], {"after-restart": bitstream(3)})
        assert answer["queued"] == 1
        wait_for(lambda: again.call(r["serial"], "status")["done"] == 1)


def _up(client: FarmClient) -> bool:
    try:
        client.available()
    except FarmClientError:
        return False
    return True
