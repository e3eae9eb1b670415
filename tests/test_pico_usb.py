"""USB discovery through the simulated pyusb backend and a fake sysfs tree."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import usb.core
from test_pico_support import FAST, bitstream, sim_boards

from conftest import wait_for
from radlogger.devices.pico.driver import PicoDevice
from radlogger.devices.pico.simulator import expected_pulses
from radlogger.devices.pico.sources import Job, Result
from radlogger.devices.pico.usb import find_boards, resolve_serial, serial_of_tty
from radlogger.devices.pico.usb_backend import SimulatedUSBBackend, SimUsbBoard, make_sysfs
from radlogger.pipeline import Pipeline

BOARDS = [
    SimUsbBoard("E6614C311B8E2F2A", "pulsecount", bus=1, ports=(1, 2), address=5),
    SimUsbBoard("E6614C311B8E2F2B", "pulsecount", bus=1, ports=(1, 3, 1), address=7),
    SimUsbBoard("E6614C311B8E2F2C", "default", bus=2, ports=(4,), address=3),
    SimUsbBoard("E6614C311B8E2F2D", "bootloader", bus=3, ports=(1,), address=9),
]


def test_discovery_finds_boards_with_serials_and_ttys(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path / "sys", BOARDS, {"E6614C311B8E2F2B": "ttyACM7"})
    backend = SimulatedUSBBackend(list(BOARDS))
    found = find_boards(backend, sysfs, "/dev")
    assert [(b.serial, b.firmware, b.tty, b.port) for b in found] == [
        ("E6614C311B8E2F2A", "pulsecount", "ttyACM0", "/dev/ttyACM0"),
        ("E6614C311B8E2F2B", "pulsecount", "ttyACM7", "/dev/ttyACM7"),
        ("E6614C311B8E2F2C", "default", "ttyACM1", "/dev/ttyACM1"),
        ("E6614C311B8E2F2D", "bootloader", None, None)]
    assert found[0].product == "pico-ice" and found[0].manufacturer == "tinyVision.ai Inc."
    assert found[1].sysfs_name == "1-1.3.1" and found[1].as_dict()["usb_id"] == "1209:b1c0"
    assert found[3].product == "RP2350 Boot"
    # the same backend answers plain pyusb calls, unmodified
    dev = usb.core.find(backend=backend, idVendor=0x2E8A, idProduct=0x000F)
    assert dev is not None and dev.serial_number == "E6614C311B8E2F2D" and dev.bus == 3
    assert serial_of_tty("ttyACM7", sysfs) == "E6614C311B8E2F2B"
    assert serial_of_tty("ttyACM9", sysfs) is None


def test_unplugged_boards_are_not_listed(tmp_path: Path) -> None:
    boards = [SimUsbBoard("AAAAAAAAAAAAAAAA"), SimUsbBoard("BBBBBBBBBBBBBBBB", ports=(2,))]
    backend = SimulatedUSBBackend(boards)
    sysfs = make_sysfs(tmp_path / "sys", boards)
    boards[0].present = False
    assert [b.serial for b in find_boards(backend, sysfs)] == ["BBBBBBBBBBBBBBBB"]


def test_serial_falls_back_to_sysfs_without_permission(tmp_path: Path) -> None:
    class NoPermission(SimulatedUSBBackend):
        def open_device(self, dev: SimUsbBoard) -> SimUsbBoard:
            raise usb.core.USBError("Access denied (insufficient permissions)", errno.EACCES, -3)

    sysfs = make_sysfs(tmp_path / "sys", BOARDS[:1])
    (b,) = find_boards(NoPermission(BOARDS[:1]), sysfs)
    assert b.serial == "E6614C311B8E2F2A" and b.product == "" and b.tty == "ttyACM0"


def test_resolve_serial_errors_say_what_to_do(tmp_path: Path) -> None:
    sysfs = make_sysfs(tmp_path / "sys", BOARDS)
    backend = SimulatedUSBBackend(list(BOARDS))
    assert resolve_serial("e6614c311b8e2f2a", backend, sysfs, "/dev") == "/dev/ttyACM0"
    with pytest.raises(FileNotFoundError, match="no pico board with serial 0000"):
        resolve_serial("0000000000000000", backend, sysfs)
    with pytest.raises(RuntimeError, match="default firmware.*flash the pulse-count"):
        resolve_serial("E6614C311B8E2F2C", backend, sysfs)


def test_discover_lists_boards_for_radloggerd_ports(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    backend = SimulatedUSBBackend(list(BOARDS))
    monkeypatch.setattr(PicoDevice, "usb_backend", backend)
    found = PicoDevice.discover()
    assert [d["serial"] for d in found] == [b.serial for b in BOARDS]
    assert all(d["kind"] == "pico" and d["serial"] in d["description"] for d in found)
    assert "flash the pulse-count firmware" in found[2]["description"]


def test_driver_names_a_board_by_serial(tmp_path: Path, pipeline: Pipeline) -> None:
    """serial = ... is resolved through USB discovery to a tty at every connect."""
    with sim_boards(tmp_path, 1) as (sim,):
        usb_boards = [SimUsbBoard(sim.serial, ports=(1, 4))]
        sysfs = make_sysfs(tmp_path / "sys", usb_boards, {sim.serial: "ttyACM3"})
        dev_root = tmp_path / "dev"
        dev_root.mkdir()
        os.symlink(sim.pts, dev_root / "ttyACM3")
        dev = PicoDevice("pico0", serial=sim.serial, farm="usb-test", sysfs_root=str(sysfs),
                         dev_root=str(dev_root), **FAST)
        dev.usb_backend = SimulatedUSBBackend(usb_boards)
        pipeline.add_device(dev)
        pipeline.start()
        wait_for(lambda: dev.ready_for_work)
        results: list[Result] = []
        assert dev.queue is not None
        dev.queue.put([Job("e1", bitstream(7), results.append)])
        wait_for(lambda: results)
        assert results[0].ok and results[0].value == expected_pulses(bitstream(7))
        assert results[0].meta["serial"] == sim.serial
        assert results[0].meta["port"] == str(dev_root / "ttyACM3")
        assert dev.board_id == sim.serial
        pipeline.stop(5.0)


def test_driver_retries_while_its_board_is_not_on_usb(tmp_path: Path,
                                                      pipeline: Pipeline) -> None:
    sysfs = make_sysfs(tmp_path / "sys", [])
    dev = PicoDevice("pico0", serial="0123456789ABCDEF", sysfs_root=str(sysfs), **FAST)
    dev.usb_backend = SimulatedUSBBackend([])
    pipeline.add_device(dev)
    pipeline.start()
    wait_for(lambda: pipeline.producers["pico0"].errors >= 2)
    assert "no pico board with serial 0123456789ABCDEF" in dev.last_error
    pipeline.stop(5.0)
