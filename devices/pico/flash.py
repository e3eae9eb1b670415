"""Flashing a pico2-ice's RP2350 the way iCEFARM does, step by step, each step checkable.

1. **touch**: open the data tty at 1200 baud and close it: the board reboots into BOOTSEL;
2. **bootsel**: the board shows up by its serial with the bootloader's USB id
   (0x2E8A:0x000F) and a mounted mass-storage volume;
3. **listing**: the volume holds exactly ``INDEX.HTM`` and ``INFO_UF2.TXT``;
4. **copy**: the ``.uf2`` is written onto it (and synced): the board reboots into it;
5. **identity**: within ``back_timeout`` the board is back with the USB id of the expected
   firmware and a tty;
6. **test** (default firmware): its tty prints ``default firmware`` within ``test_timeout``.

A failed step raises :class:`FlashError` naming the step; the farm marks such a board
``broken``.  Where boards are is a :class:`UsbView`: :class:`SysfsUsbView` for real hardware
(pyusb + sysfs + ``/proc/mounts``; the volume must be mounted, e.g. by udisks) and
:class:`radlogger.devices.pico.simflash.SimUsbView` for simulated boards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import serial

from radlogger.errors import OperationError

__all__ = ["FlashError", "Presence", "UsbView", "SysfsUsbView", "Flasher", "touch_1200",
           "BOOTSEL_LISTING", "STEPS"]

BOOTSEL_LISTING = ("INDEX.HTM", "INFO_UF2.TXT")
STEPS = ("touch", "bootsel", "listing", "copy", "identity", "test")
DEFAULT_LINE = "default firmware"


class FlashError(OperationError):
    """A flash step failed; ``step`` is one of :data:`STEPS`."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"flash step {step}: {detail}")
        self.step = step
        self.detail = detail


@dataclass(frozen=True)
class Presence:
    firmware: str  # pulsecount | variance | default | bootloader (by USB id)
    port: str | None  # the data tty
    volume: str | None  # the mounted BOOTSEL volume


class UsbView(Protocol):
    def find(self, serial: str) -> Presence | None: ...


class SysfsUsbView:
    """Real boards: USB id and tty from :func:`.usb.find_boards`; the volume from sysfs
    (the bootloader's mass-storage interface's block device) and ``/proc/mounts``."""

    def __init__(self, sysfs_root: str = "/sys", dev_root: str = "/dev",
                 mounts: str = "/proc/mounts") -> None:
        self.sysfs_root, self.dev_root, self.mounts = sysfs_root, dev_root, mounts

    def find(self, serial: str) -> Presence | None:
        from .usb import find_boards

        for b in find_boards(None, self.sysfs_root, self.dev_root):
            if b.serial.lower() == serial.lower():
                volume = self._volume(b.sysfs_name) if b.firmware == "bootloader" else None
                return Presence(b.firmware, b.port, volume)
        return None

    def _volume(self, name: str) -> str | None:
        base = Path(self.sysfs_root) / "bus/usb/devices"
        disks = {p.name for p in base.glob(f"{name}:*/host*/target*/*/block/*")}
        try:
            lines = Path(self.mounts).read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            dev, mount = line.split()[:2]
            if os.path.basename(dev).rstrip("0123456789") in disks or \
                    os.path.basename(dev) in disks:
                return mount.replace("\\040", " ")
        return None


def touch_1200(port: str) -> None:
    """Open ``port`` at 1200 baud and close it (the RP2350 reboots into BOOTSEL).

    The board may reboot while the port is still being set up, so an I/O error once the
    speed is set is the touch working; the ``bootsel`` step checks what happened.  Only a
    port that does not exist is this step's failure."""
    if not os.path.exists(port):
        raise FlashError("touch", f"port {port} does not exist")
    try:
        serial.Serial(port, 1200, timeout=0.1).close()
    except (OSError, serial.SerialException):
        pass  # the board went away during the open: that is what the touch is for


class Flasher:
    def __init__(self, view: UsbView, bootsel_timeout: float = 10.0,
                 back_timeout: float = 30.0, test_timeout: float = 2.0,
                 touch: Callable[[str], None] = touch_1200, poll: float = 0.02) -> None:
        self.view = view
        self.bootsel_timeout = bootsel_timeout
        self.back_timeout = back_timeout
        self.test_timeout = test_timeout
        self.touch = touch
        self.poll = poll

    def _wait(self, step: str, timeout: float, what: str,
              ok: Callable[[Presence | None], bool], serial_no: str) -> Presence:
        deadline = time.monotonic() + timeout
        while True:
            p = self.view.find(serial_no)
            if ok(p):
                assert p is not None
                return p
            if time.monotonic() >= deadline:
                seen = f"{p.firmware} firmware" if p is not None else "nothing"
                raise FlashError(step, f"board {serial_no}: no {what} within {timeout:g} s "
                                 f"(found {seen})")
            time.sleep(self.poll)

    def flash(self, serial_no: str, uf2: bytes, expect: str) -> Presence:
        """Steps 1-5: the board's presence in the ``expect`` firmware afterwards."""
        now = self.view.find(serial_no)
        if now is None or (now.firmware != "bootloader" and not now.port):
            raise FlashError("touch", f"board {serial_no} is not on USB")
        if now.firmware != "bootloader":
            assert now.port is not None
            self.touch(now.port)
        p = self._wait("bootsel", self.bootsel_timeout, "BOOTSEL volume (2e8a:000f)",
                       lambda p: p is not None and p.firmware == "bootloader"
                       and p.volume is not None, serial_no)
        assert p.volume is not None
        try:
            listing = tuple(sorted(os.listdir(p.volume)))
        except OSError as exc:
            raise FlashError("listing", f"cannot list {p.volume}: {exc.strerror}") from None
        if listing != BOOTSEL_LISTING:
            raise FlashError("listing", f"{p.volume} holds {', '.join(listing) or 'nothing'}, "
                             f"not {' and '.join(BOOTSEL_LISTING)}: not an RP2350 bootloader")
        target = os.path.join(p.volume, "firmware.uf2")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, uf2)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise FlashError("copy", f"cannot write {target}: {exc.strerror}") from None
        return self._wait("identity", self.back_timeout, f"{expect} firmware with a tty",
                          lambda p: p is not None and p.firmware == expect and bool(p.port),
                          serial_no)

    def test_default(self, serial_no: str, port: str) -> None:
        """Step 6: the default firmware's tty prints its line within ``test_timeout``."""
        deadline = time.monotonic() + self.test_timeout
        try:
            with serial.Serial(port, 115200, timeout=0.1) as s:
                buf = b""
                while time.monotonic() < deadline:
                    buf = (buf + s.read(4096))[-4096:]
                    if DEFAULT_LINE.encode() in buf:
                        return
        except (OSError, serial.SerialException) as exc:
            raise FlashError("test", f"cannot read {port}: {exc}") from None
        raise FlashError("test", f"board {serial_no}: no '{DEFAULT_LINE}' on {port} within "
                         f"{self.test_timeout:g} s")

    def flash_default(self, serial_no: str, uf2: bytes) -> Presence:
        """Flash the default firmware and test it (what a board gets after a reservation)."""
        p = self.flash(serial_no, uf2, "default")
        assert p.port is not None
        self.test_default(serial_no, p.port)
        return p
