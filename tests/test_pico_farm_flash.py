"""The farm reflashes and tests a board after its reservation (iCEFARM's cycle), with
flashable simulated boards; a board failing a step becomes ``broken`` and is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pico_support import FAST

from conftest import Collector, free_port, wait_for
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.farm.client import FarmClient
from radlogger.devices.pico.farm.device import FarmDevice
from radlogger.devices.pico.simflash import FlashableBoard
from radlogger.pipeline import Pipeline

SERIAL = "E6614C31AABB0001"


@pytest.mark.parametrize("fail", ["", "test", "listing"])
def test_reservation_end_reflashes_and_tests(tmp_path: Path, fail: str) -> None:
    board = FlashableBoard(SERIAL, tmp_path / "usb", fail=fail)
    p = Pipeline()
    col = p.add_endpoint(Collector(), ["farm", "pico"])
    farm = p.add_device(FarmDevice("farm", db=str(tmp_path / "farm.sqlite"), port=free_port(),
                                   worker="here", tick=0.01, flash=True, flash_timeout=30,
                                   flash_sim_root=str(tmp_path / "usb")))
    p.add_device(PicoDevice("pico", port=str(board.link), farm="farm", **FAST))
    p.start()
    try:
        wait_for(lambda: farm.url and farm.farm is not None, message="farm up")
        client = FarmClient(farm.url, "alice", timeout=10)
        wait_for(lambda: client.available()["available"] == 1, 20, message="board available")
        client.reserve(amount=1)
        client.end_all()

        def status() -> str:
            return str({d["serial"]: d["status"] for d in client.devices()}[SERIAL])

        if not fail:
            try:
                wait_for(lambda: board.flashed == ["default", "pulsecount"], 60,
                         message="default, then pulse-count firmware flashed")
            except AssertionError:
                raise AssertionError(f"status {status()}, board {board.firmware} touches "
                                     f"{board.touches} flashed {board.flashed}; "
                                     f"{farm.counters()}") from None
            wait_for(lambda: status() == "available", 60, message="available again")
            assert farm.counters()["flashed"] == 1
        else:
            try:
                wait_for(lambda: status() == "broken", 30, message="broken after a failed step")
            except AssertionError:
                raise AssertionError(f"status {status()}, board {board.firmware} touches "
                                     f"{board.touches} flashed {board.flashed}; "
                                     f"{farm.counters()}") from None
            assert farm.counters()["flash_failed"] == 1
            step = "test" if fail == "test" else "listing"
            wait_for(lambda: any(m.topic == "farm.flash" for m in col.snapshot()),
                     message="flash failure published")
            steps = [(m.value, m.meta) for m in col.snapshot() if m.topic == "farm.flash"]
            assert [v for v, _ in steps] == [step], steps
        states = [m.value for m in col.snapshot() if m.topic == "farm.state"]
        assert "reserved" in states and "flashing_default" in states
    finally:
        p.stop(10.0)
        board.stop()
