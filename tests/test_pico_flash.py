"""Flashing firmware, as iCEFARM does it, against flashable simulated boards: UF2 writer and
reader, the 1200-baud touch, BOOTSEL volume and listing, identity after the copy, the
default-firmware test, and a failure at each step."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import wait_for
from radlogger.devices.pico.flash import Flasher, FlashError
from radlogger.devices.pico.simflash import FlashableBoard, SimUsbView, sim_firmware
from radlogger.devices.pico.uf2 import (
    FAMILIES,
    FLASH_START,
    RP2350_ARM_S,
    Uf2Error,
    bin_to_uf2,
    read_uf2,
)

SERIAL = "E6614C31AABBCCDD"


def test_uf2_round_trip_and_checks() -> None:
    data = bytes(range(256)) * 5 + b"tail"
    blob = bin_to_uf2(data)
    assert len(blob) == 512 * 6
    image = read_uf2(blob)
    assert image.data[:len(data)] == data and image.address == FLASH_START
    assert image.family == RP2350_ARM_S and image.blocks == 6
    assert blob[:4] == b"UF2\n" and blob[508:512] == bytes.fromhex("306fb10a")
    with pytest.raises(Uf2Error, match="family id"):
        read_uf2(bin_to_uf2(data, family=FAMILIES["rp2040"]))
    with pytest.raises(Uf2Error, match="bad magic"):
        read_uf2(b"\0" * 512)
    with pytest.raises(Uf2Error, match="block 0: says block 0 of 6, the file has 5"):
        read_uf2(blob[:-512])
    with pytest.raises(Uf2Error, match="whole number"):
        read_uf2(blob[:-1])


@pytest.fixture
def flasher(tmp_path: Path) -> Flasher:
    return Flasher(SimUsbView(tmp_path), bootsel_timeout=5, back_timeout=5, test_timeout=2)


def test_flash_default_then_pulse_count(tmp_path: Path, flasher: Flasher) -> None:
    board = FlashableBoard(SERIAL, tmp_path)
    try:
        assert flasher.view.find(SERIAL).firmware == "pulsecount"  # type: ignore[union-attr]
        p = flasher.flash_default(SERIAL, bin_to_uf2(sim_firmware("default")))
        assert p.firmware == "default" and board.touches == 1
        p = flasher.flash(SERIAL, bin_to_uf2(sim_firmware("pulsecount")), "pulsecount")
        assert p.port and Path(p.port).is_symlink()
        assert board.flashed == ["default", "pulsecount"] and board.touches == 2
        wait_for(lambda: board.board is not None and board.board.connected)
    finally:
        board.stop()


@pytest.mark.parametrize("fail, step", [("touch", "bootsel"), ("bootsel", "bootsel"),
                                        ("listing", "listing"), ("uf2", "identity"),
                                        ("identity", "identity"), ("test", "test")])
def test_each_step_can_fail(tmp_path: Path, flasher: Flasher, fail: str, step: str) -> None:
    flasher.bootsel_timeout = flasher.back_timeout = 2.0  # the failing step waits this long
    board = FlashableBoard(SERIAL, tmp_path, fail=fail)
    try:
        with pytest.raises(FlashError) as err:
            flasher.flash_default(SERIAL, bin_to_uf2(sim_firmware("default")))
        assert err.value.step == step, str(err.value)
        assert "\n" not in str(err.value)
        if fail == "uf2":
            assert board.rejected == 1 and board.firmware == "bootloader"
    finally:
        board.stop()


def test_a_bad_uf2_is_rejected_and_the_board_stays_in_bootsel(tmp_path: Path,
                                                              flasher: Flasher) -> None:
    flasher.back_timeout = 2.0
    board = FlashableBoard(SERIAL, tmp_path)
    try:
        with pytest.raises(FlashError) as err:
            flasher.flash(SERIAL, bin_to_uf2(sim_firmware("default"),
                                             family=FAMILIES["rp2040"]), "default")
        assert err.value.step == "identity" and board.rejected == 1
        assert flasher.view.find(SERIAL).firmware == "bootloader"  # type: ignore[union-attr]
    finally:
        board.stop()
