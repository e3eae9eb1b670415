"""The real iCEFARM client (``icefarm`` 0.1.16, unmodified) against radloggerd farms.

Daemons run as separate processes on free ports of 127.0.0.1 with simulated boards: one daemon
that is both control and worker, and a control with two workers (one killed and restarted).
Every pulse count is checked against the simulator's documented function
(``1998 + crc32 % 30000``), every variance fitness against iCEFARM's formula.
"""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from farm_support import TOKEN, Farmd, driver, get_json, hold, icefarm_python

from conftest import wait_for
from radlogger.devices.pico.protocol import BITSTREAM_SIZE
from radlogger.devices.pico.simulator import expected_fitness, expected_pulses


@pytest.fixture(scope="module")
def icefarm() -> str:
    try:
        return icefarm_python()
    except Exception as exc:  # noqa: BLE001 - no registry: say why
        pytest.fail(f"cannot install icefarm==0.1.16 into its virtualenv: {exc}")


def bitstreams(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(BITSTREAM_SIZE) for _ in range(n)]


def check(results: list[list], serials: list[str], n: int, seed: int, variance: bool = False
          ) -> None:
    data = bitstreams(n, seed)
    assert sorted((s, i) for s, i, _ in results) == sorted((s, i) for s in serials
                                                          for i in range(n))
    for serial, i, value in results:
        if variance:
            assert value == pytest.approx(expected_fitness(data[i])), (serial, i)
        else:
            assert value == str(expected_pulses(data[i])), (serial, i)


@pytest.fixture
def both(tmp_path: Path) -> Iterator[Farmd]:
    d = Farmd(tmp_path, "solo", "both", boards=3, variance=1)
    try:
        d.wait_up()
        wait_for(lambda: d.available() == 3, 20, message="3 boards available")
        yield d
    finally:
        d.stop()


def test_one_daemon_pulse_count_and_variance(icefarm: str, both: Farmd) -> None:
    out = driver(icefarm, "evaluate", both.url, "alice", "pulsecount", "2", "7", "1")
    serials = out[0]["reserved"]
    assert len(serials) == 2
    check(out[-1]["results"], serials, 7, 1)
    out = driver(icefarm, "evaluate", both.url, "bob", "variance", "1", "3", "2")
    check(out[-1]["results"], out[0]["reserved"], 3, 2, variance=True)
    # the client ended its reservations; the boards come back
    wait_for(lambda: both.available() == 3, 20, message="boards back after the end")


def _get(url: str, body: bytes | None = None, ctype: str = "application/json"
         ) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="GET")
    req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("path, body", [
    ("/reserve", b'{"amount": "2", "name": "a", "kind": "pulsecount", "args": {}}'),
    ("/reserve", b'{"name": "a", "kind": "pulsecount", "args": {}}'),
    ("/end", b'{"name": "a", "serials": "E6614C31"}'),
    ("/end", b"[" * 100_000 + b"]" * 100_000),
    ("/extend", b'{"name": "\xff\xfe", "serials": []}'),
    ("/reserve", b"not json"),
], ids=["amount_text", "amount_missing", "serials_not_list", "nested", "not_utf8", "not_json"])
def test_bad_client_input_is_400_with_one_line_json(both: Farmd, path: str, body: bytes) -> None:
    status, raw = _get(both.url + path, body)
    assert status == 400
    assert raw.count(b"\n") == 0 and "error" in json.loads(raw)


def test_own_api_nested_and_non_utf8_bodies_are_400(both: Farmd) -> None:
    for body in (b"[" * 100_000, b'{"client": "\xff"}'):
        req = urllib.request.Request(both.url + "/api/reserve", data=body, method="POST")
        req.add_header("Authorization", f"Bearer {TOKEN}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400
        raw = err.value.read()
        assert raw.count(b"\n") == 0 and "error" in json.loads(raw)


def test_query_json_and_status_rules(both: Farmd) -> None:
    q = urllib.parse.quote(json.dumps({"name": "nobody"}))
    assert _get(f"{both.url}/endall?json={q}", ctype="text/plain") == (200, b"[]")
    assert json.loads(_get(both.url + "/available")[1]) == {"amount": 3}
    assert len(json.loads(_get(both.url + "/devices")[1])) == 3
    # not enough boards: iCEFARM's 500
    status, _ = _get(both.url + "/reserve", json.dumps(
        {"amount": 9, "name": "a", "kind": "pulsecount", "args": {}}).encode())
    assert status == 500
    assert _get(both.url + "/clear-workers")[1] == b'{"status": "ok"}'


def test_control_and_two_workers_then_a_worker_dies_and_returns(icefarm: str,
                                                                tmp_path: Path) -> None:
    control = Farmd(tmp_path, "control", "control")
    workers: list[Farmd] = []
    try:
        control.wait_up()
        workers = [Farmd(tmp_path, f"w{i}", "worker", boards=2, control_url=control.url)
                   for i in range(2)]
        wait_for(lambda: control.available() == 4, 30, message="4 boards registered")
        out = driver(icefarm, "evaluate", control.url, "carol", "pulsecount", "4", "5", "3")
        serials = out[0]["reserved"]
        assert len(serials) == 4
        check(out[-1]["results"], serials, 5, 3)
        wait_for(lambda: control.available() == 4, 20, message="boards back after the end")

        # a client holds every board; worker w0 dies: its two boards fail at the client
        client = hold(icefarm, control.url, "dave", 4)
        assert client.stdout is not None
        held = json.loads(client.stdout.readline())["reserved"]
        w0 = [b["serial"] for b in get_json(control.url + "/api/devices", token=TOKEN)["devices"]
              if b["worker"] == "w0"]
        assert sorted(w0) == sorted(set(held) & set(w0)) and len(w0) == 2
        workers[0].kill()
        failed = set()
        while failed != set(w0):
            ev = json.loads(client.stdout.readline())
            if ev["event"] == "failure":
                failed.add(ev["serial"])
        # restarted, it registers again; its boards are available once more
        workers[0] = Farmd(tmp_path, "w0", "worker", boards=2, control_url=control.url)
        wait_for(lambda: control.available() == 2, 30, message="w0's boards back")
        client.stdin.close()  # type: ignore[union-attr]
        client.wait(30)
        wait_for(lambda: control.available() == 4, 30, message="all boards back")
    finally:
        for w in workers:
            w.stop()
        control.stop()


def test_the_example_configuration_serves_the_client(icefarm: str, tmp_path: Path) -> None:
    """etc/pico-farm.ini as shipped, on a free port and a temporary database."""
    from daemon_helpers import DaemonProcess

    from conftest import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    text = (root / "etc" / "pico-farm.ini").read_text()
    text = text.replace("port = 8080", f"port = {port}").replace(
        "db = pico-farm.sqlite", f"db = {tmp_path / 'farm.sqlite'}").replace(
        "path = pico-farm.jsonl", f"path = {tmp_path / 'farm.jsonl'}")
    ini = tmp_path / "pico-farm.ini"
    ini.write_text(text)
    d = DaemonProcess("run", "-c", str(ini))
    url = f"http://127.0.0.1:{port}"

    def available() -> int:
        try:
            return int(get_json(url + "/available")["amount"])
        except OSError:
            assert d.proc.poll() is None, d.log()
            return 0

    try:
        wait_for(lambda: available() == 4, 30, message="4 example boards")
        # the example's boards count for 1 s (the real window): two bitstreams are enough
        out = driver(icefarm, "evaluate", url, "erin", "pulsecount", "3", "2", "4")
        check(out[-1]["results"], out[0]["reserved"], 2, 4)
        out = driver(icefarm, "evaluate", url, "erin", "variance", "1", "1", "5")
        check(out[-1]["results"], out[0]["reserved"], 1, 5, variance=True)
    finally:
        d.send(signal.SIGTERM)
        assert d.finish(30) == 0, d.log()
    records = [json.loads(ln) for ln in (tmp_path / "farm.jsonl").read_text().splitlines()]
    topics = {r.get("topic", "") for r in records}
    assert {"farm.results", "farm.state", "farm.reservation_end"} <= topics, topics


def test_reservation_ending_soon_is_extended_by_the_client(icefarm: str,
                                                           tmp_path: Path) -> None:
    """iCEFARM's ReservationExtender answers ``reservation ending soon`` with /extend."""
    d = Farmd(tmp_path, "short", "both", boards=1,
              extra="reservation_s = 4\nwarn_before_s = 3\n")
    try:
        d.wait_up()
        wait_for(lambda: d.available() == 1, 20, message="board available")
        client = hold(icefarm, d.url, "frank", 1)
        assert client.stdout is not None
        lines = [json.loads(client.stdout.readline()) for _ in range(2)]
        (serial,) = next(ln["reserved"] for ln in lines if "reserved" in ln)
        assert {"event": "reservation ending soon", "serial": serial} in lines

        def expires() -> float:
            rows = get_json(d.url + "/api/devices", token=TOKEN)["devices"]
            return float(rows[0]["expires"] or 0)

        # extended to a fresh reservation_s by the client's own handler
        wait_for(lambda: expires() - time.time() > 3.0, 20, message="extended")
        client.stdin.close()  # type: ignore[union-attr]
        client.wait(30)
    finally:
        d.stop()


def test_a_worker_reflashes_after_the_reservation(icefarm: str, tmp_path: Path) -> None:
    """Control + worker processes; the worker's board (a flashable simulated board living in
    this process) is reflashed and tested after the client's reservation, and the control
    shows it in flashing_default before it is available again."""
    from radlogger.devices.pico.simflash import FlashableBoard

    board = FlashableBoard("E6614C31AABB0002", tmp_path / "usb")
    control = Farmd(tmp_path, "control", "control")
    worker = None
    try:
        control.wait_up()
        worker = Farmd(tmp_path, "wf", "worker", control_url=control.url,
                       extra=f"flash = yes\nflash_sim_root = {tmp_path / 'usb'}\n\n"
                             f"[device:fb]\ndriver = pico\nport = {board.link}\nfarm = farm\n"
                             "count_window = 0.02\n")
        wait_for(lambda: control.available() == 1, 30, message="board registered")
        seen: set[str] = set()

        def status() -> str:
            rows = get_json(control.url + "/api/devices", token=TOKEN)["devices"]
            seen.add(rows[0]["status"])
            return str(rows[0]["status"])

        out = driver(icefarm, "evaluate", control.url, "gina", "pulsecount", "1", "2", "6")
        check(out[-1]["results"], out[0]["reserved"], 2, 6)
        wait_for(lambda: board.flashed == ["default", "pulsecount"], 60, message="reflashed")
        wait_for(lambda: status() == "available", 60, message="available after the flash")
        assert "broken" not in seen
    finally:
        if worker is not None:
            worker.stop()
        control.stop()
        board.stop()


def test_a_request_that_cannot_be_queued_is_answered(both: Farmd) -> None:
    """Evaluations for a board the client does not hold come back as failed, not lost; a
    malformed frame is dropped and counted, and the socket stays usable."""
    import asyncio

    import msgpack
    import socketio

    serial = get_json(both.url + "/devices")[0]

    async def run() -> list[dict]:
        got: asyncio.Queue[str] = asyncio.Queue()
        sio = socketio.AsyncClient()
        sio.on("event", got.put)
        await sio.connect(both.url, auth={"client_id": "mallory"}, wait_timeout=10)
        try:
            await sio.emit("request", b"\xc1 not msgpack")
            await sio.emit("request", msgpack.packb({
                "serial": [serial], "event": "evaluate",
                "contents": {"files": {"e1": b"x" * BITSTREAM_SIZE}, "batch_id": "b1"}}))
            return [json.loads(await asyncio.wait_for(got.get(), 20))]
        finally:
            await sio.disconnect()

    (msg,) = asyncio.run(run())
    assert msg["serial"] == serial
    (content,) = msg["contents"]
    assert content["event"] == "results" and content["batch_id"] == "b1"
    assert content["results"] == [["e1", None]]
    assert content["failed"][0][0] == "e1" and "holds no reservation" in content["failed"][0][1]


def test_the_three_host_example_is_valid(tmp_path: Path) -> None:
    from daemon_helpers import run_cli

    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    root = Path(__file__).resolve().parents[1] / "etc" / "pico-farm"
    for name in ("control.ini", "worker1.ini", "worker2.ini"):
        text = (root / name).read_text().replace("/etc/radlogger/pico-farm.token", str(token))
        ini = tmp_path / name
        ini.write_text(text)
        result = run_cli("check", "-c", str(ini))
        assert result.returncode == 0, result.stderr
