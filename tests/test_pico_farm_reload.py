"""Constructors only validate; registration happens when the pipeline starts a component
(issue 12, part 5).  The loader builds every plugin to check it and a reload builds new
instances of unchanged sections that never run: none of them may take a running board's place
in its farm."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon_helpers import write_ini
from test_pico_support import bitstream

from conftest import wait_for
from radlogger.config import load_config
from radlogger.daemon import Daemon
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.farm.client import FarmClient
from radlogger.devices.pico.farm.device import FarmDevice
from radlogger.devices.pico.farm.registry import boards
from radlogger.devices.pico.simulator import expected_pulses
from radlogger.pipeline import Pipeline


def _farm_ini(tmp_path: Path) -> Path:
    return write_ini(tmp_path / "farm.ini", f"""
        [radlogger]
        stats_interval = 0
        include =
        [device:farm]
        driver = pico_farm
        db = {tmp_path / "farm.sqlite"}
        port = 0
        worker = here
        tick = 0.01
        [device:board]
        driver = pico
        simulate = yes
        farm = farm
        backoff_initial = 0.02
        backoff_max = 0.2
        [endpoint:sink]
        type = null
        subscribe = board
        """)


def test_no_op_sighup_keeps_the_farm_evaluating_on_its_running_board(tmp_path: Path) -> None:
    path = _farm_ini(tmp_path)
    daemon = Daemon(load_config(path, env={}), path, env={}, embedded=True)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), name="test-daemon")
    thread.start()
    try:
        assert daemon.wait_ready(20)
        pipeline = daemon.pipeline
        assert pipeline is not None
        farm = pipeline.devices["farm"]
        board = pipeline.devices["board"]
        assert isinstance(farm, FarmDevice) and isinstance(board, PicoDevice)
        wait_for(lambda: farm.farm is not None and farm.url, message="farm API up")
        client = FarmClient(farm.url, "alice", timeout=10)
        wait_for(lambda: client.available()["available"] == 1, message="board available")

        daemon.request_reload()  # what SIGHUP does; the file did not change
        wait_for(lambda: daemon.reloads == 1, message="reload applied")

        assert pipeline.devices["board"] is board and board.alive
        assert daemon.config.devices["board"].instance is board  # the running one is kept
        assert farm.farm is not None
        assert farm.farm.local_boards() == {board.board_id: board}
        (r,) = client.reserve(amount=1)
        assert r["serial"] == board.board_id
        data = bitstream(7)
        assert client.evaluate(r["serial"], {"after-reload": data})["queued"] == 1
        wait_for(lambda: client.call(r["serial"], "status")["done"] == 1,
                 message="evaluated on the running board")
        assert board.evaluations == 1
        wait_for(lambda: any(e.get("results") for e in client.events()["events"]),
                 message="result event")
        (event,) = [e for e in client.events()["events"] if e.get("results")]
        assert dict(event["results"]) == {"after-reload": expected_pulses(data)}
    finally:
        daemon.request_stop()
        thread.join(30)
    assert result == [0]


def test_constructing_registers_nothing_starting_registers_stopping_unregisters(
        tmp_path: Path) -> None:
    pipeline = Pipeline()
    pipeline.add_device(FarmDevice("farm", db=str(tmp_path / "f.sqlite"), port=0, tick=0.01))
    board = pipeline.add_device(PicoDevice("board", simulate=True, farm="farm"))
    PicoDevice("board", simulate=True, farm="farm")  # validated only, like a reload's copy
    assert boards(pipeline.registries, "farm") == []
    pipeline.start()
    try:
        assert boards(pipeline.registries, "farm") == [board]
        other = Pipeline()  # another pipeline's registries never see this one's boards
        assert boards(other.registries, "farm") == []
    finally:
        assert pipeline.stop(10.0)
    assert boards(pipeline.registries, "farm") == []
