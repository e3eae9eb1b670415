"""Finding pico2-ice boards on USB (pyusb) and mapping them to their tty (sysfs).

pyusb lists the boards by VID:PID and reads their serial-number strings; the kernel's sysfs
tree then says which ``ttyACM*`` the CDC data interface (interface 0) became:
``<sysfs>/bus/usb/devices/<bus>-<port.port...>:1.0/tty/ttyACMn``.  Both the pyusb backend and
the sysfs root are parameters, so tests run this code unmodified against
:mod:`radlogger.devices.pico.usb_backend` and a fake tree in a temporary directory.

Reading a string descriptor needs permission to open the device; when that fails (no udev
rule) the serial is read from sysfs instead, which is world-readable.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import usb.core

from radlogger.errors import ConfigurationError

from .protocol import USB_IDS

__all__ = ["Board", "UsbUnavailable", "find_boards", "describe", "tty_of", "serial_of_tty",
           "resolve_serial", "serial_of_port"]

#: /dev/serial/by-id/usb-tinyVision.ai_pico-ice_<serial>-if00
_BY_ID = re.compile(r"^usb-.+_([0-9A-Fa-f]{16})-if[0-9]+$")


class UsbUnavailable(ConfigurationError, RuntimeError):
    """No libusb backend: USB discovery cannot run (one-line message says what to install)."""


@dataclass(frozen=True)
class Board:
    serial: str
    firmware: str  # pulsecount | default | bootloader
    vid: int
    pid: int
    bus: int | None
    ports: tuple[int, ...]
    tty: str | None  # e.g. "ttyACM0"; None for the bootloader (mass storage, no CDC)
    port: str | None  # device path, e.g. "/dev/ttyACM0"
    product: str = ""
    manufacturer: str = ""

    @property
    def sysfs_name(self) -> str:
        return usb_path(self.bus, self.ports)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["usb_id"] = f"{self.vid:04x}:{self.pid:04x}"
        return d


def usb_path(bus: int | None, ports: tuple[int, ...]) -> str:
    """The kernel's name of a USB device: ``<bus>-<port>[.<port>...]``."""
    return f"{bus}-{'.'.join(str(p) for p in ports)}"


def tty_of(bus: int | None, ports: tuple[int, ...], sysfs_root: str | Path = "/sys") -> str | None:
    """The tty of a device's CDC data interface (interface 0), or None."""
    if bus is None or not ports:
        return None
    tty_dir = Path(sysfs_root) / "bus/usb/devices" / f"{usb_path(bus, ports)}:1.0" / "tty"
    try:
        names = sorted(os.listdir(tty_dir))
    except OSError:
        return None
    return names[0] if names else None


def _sysfs_serial(bus: int | None, ports: tuple[int, ...], sysfs_root: str | Path) -> str:
    try:
        path = Path(sysfs_root) / "bus/usb/devices" / usb_path(bus, ports) / "serial"
        return path.read_text().strip()
    except OSError:
        return ""


def serial_of_tty(tty: str, sysfs_root: str | Path = "/sys") -> str | None:
    """Reverse map: the USB serial number of the board behind ``ttyACMn`` (None if unknown)."""
    iface = Path(sysfs_root) / "class/tty" / tty / "device"
    try:
        serial = (iface.resolve().parent / "serial").read_text().strip()
    except OSError:
        return None
    return serial or None


def serial_of_port(port: str, sysfs_root: str | Path = "/sys") -> str:
    """A board's serial from its port: a udev by-id link name, else sysfs (else "")."""
    if "://" in port:
        return ""
    m = _BY_ID.match(os.path.basename(port))
    if m:
        return m.group(1)
    tty = os.path.basename(os.path.realpath(port))
    if not tty.startswith("ttyACM"):
        return ""
    return serial_of_tty(tty, sysfs_root) or ""


def _string(dev: Any, attr: str) -> str:
    try:
        return str(getattr(dev, attr) or "")
    except (usb.core.USBError, ValueError, NotImplementedError):
        return ""  # no permission to open the device, or no string descriptors


def find_boards(backend: Any = None, sysfs_root: str | Path = "/sys",
                dev_root: str | Path = "/dev") -> list[Board]:
    """Every pico2-ice board on the bus, in any of its firmwares, sorted by serial."""
    try:
        found = list(usb.core.find(find_all=True, backend=backend,
                                   custom_match=lambda d: (d.idVendor, d.idProduct) in USB_IDS))
    except usb.core.NoBackendError:
        raise UsbUnavailable("no libusb backend for pyusb: install libusb "
                             "(Debian: apt-get install libusb-1.0-0)") from None
    boards = []
    for dev in found:
        bus = dev.bus
        ports = tuple(getattr(dev, "port_numbers", None) or ())
        serial = _string(dev, "serial_number") or _sysfs_serial(bus, ports, sysfs_root)
        tty = tty_of(bus, ports, sysfs_root)
        boards.append(Board(
            serial=serial, firmware=USB_IDS[(dev.idVendor, dev.idProduct)], vid=dev.idVendor,
            pid=dev.idProduct, bus=bus, ports=ports, tty=tty,
            port=str(Path(dev_root) / tty) if tty else None,
            product=_string(dev, "product"), manufacturer=_string(dev, "manufacturer")))
        usb.util.dispose_resources(dev)
    return sorted(boards, key=lambda b: (b.serial, b.sysfs_name))


def resolve_serial(serial: str, backend: Any = None, sysfs_root: str | Path = "/sys",
                   dev_root: str | Path = "/dev") -> str:
    """The tty path of the pulse-count board with this serial; raises with the fix otherwise."""
    boards = find_boards(backend, sysfs_root, dev_root)
    match = [b for b in boards if b.serial.lower() == serial.lower()]
    if not match:
        known = ", ".join(b.serial for b in boards) or "none"
        raise FileNotFoundError(f"no pico board with serial {serial} on USB (found: {known}; "
                                f"'radloggerd ports' lists them)")
    board = match[0]
    if board.firmware != "pulsecount":
        raise RuntimeError(f"board {serial} runs the {board.firmware} firmware "
                           f"({board.vid:04x}:{board.pid:04x}); flash the pulse-count firmware")
    if board.port is None:
        raise FileNotFoundError(f"board {serial} has no tty in {sysfs_root} (is cdc_acm loaded?)")
    return board.port


def describe(backend: Any = None, sysfs_root: str | Path = "/sys",
             dev_root: str | Path = "/dev") -> list[dict[str, Any]]:
    """Boards as dicts for listings: the fields of :class:`Board` plus a description."""
    out = []
    for b in find_boards(backend, sysfs_root, dev_root):
        d = b.as_dict()
        d["description"] = (f"pico2-ice {b.firmware} firmware, serial {b.serial}"
                            + ("" if b.firmware == "pulsecount"
                               else " (flash the pulse-count firmware to use it)"))
        out.append(d)
    return out
