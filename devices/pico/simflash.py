"""A simulated board that can be flashed: 1200-baud touch, BOOTSEL volume, UF2, new identity.

Wraps :class:`.simboard.SimulatedBoard` (pulse-count / variance firmware, unchanged) and adds
the rest of a board's life, in a directory ``root``:

* the board notices the **1200-baud touch** on its pty (the pty master reports the speed the
  host set on the slave), and disappears (pty and by-id link gone);
* it shows up as **BOOTSEL**: USB id 0x2E8A:0x000F and a "mounted" volume directory
  ``root/volumes/<serial>`` holding ``INDEX.HTM`` and ``INFO_UF2.TXT``;
* it **validates** a ``.uf2`` written there (magic, block count, family id RP2350-ARM-S) and
  rejects a bad one (it stays in BOOTSEL, :attr:`rejected` counts it);
* it **comes back** with that firmware's identity: pulse-count or variance (a new
  :class:`SimulatedBoard` on a new pty) or the default firmware (``0x2E8A:0x0009``, prints
  ``default firmware`` about every millisecond).

Where the board is and as what is the file ``root/usb/<serial>.json``, read by
:class:`SimUsbView` (the simulator's stand-in for pyusb + sysfs + mounts).

``fail`` makes a step fail: ``touch`` (1200 baud ignored), ``bootsel`` (gone, never shows up),
``listing`` (a volume without ``INFO_UF2.TXT``), ``uf2`` (every UF2 rejected), ``identity``
(comes back as another firmware), ``test`` (default firmware that prints nothing).
A firmware image is :func:`sim_firmware` (a header naming the firmware, padded).
"""

from __future__ import annotations

import json
import os
import struct
import termios
import threading
import time
from pathlib import Path

from .flash import BOOTSEL_LISTING, Presence
from .simboard import SimulatedBoard
from .uf2 import Uf2Error, read_uf2

__all__ = ["FlashableBoard", "SimUsbView", "sim_firmware", "FAILS"]

FAILS = ("", "touch", "bootsel", "listing", "uf2", "identity", "test")
_MAGIC = b"RADLOGGER-SIM-FIRMWARE:"


def sim_firmware(name: str, size: int = 4096) -> bytes:
    """A simulated firmware ``.bin``: the simulated boot ROM reads the name in its header."""
    return (_MAGIC + name.encode() + b"\n").ljust(size, b"\xff")


def _complete(blob: bytes) -> bool:
    """Whether all the blocks the first block announces are there (garbage counts as done)."""
    if len(blob) < 512:
        return False
    (count,) = struct.unpack_from("<I", blob, 24)
    return count > 100_000 or len(blob) >= count * 512


class SimUsbView:
    """Where simulated boards are (what pyusb + sysfs + mounts say about real ones)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def find(self, serial: str) -> Presence | None:
        try:
            d = json.loads((self.root / "usb" / f"{serial}.json").read_text())
        except (OSError, ValueError):
            return None
        return Presence(d["firmware"], d.get("port"), d.get("volume"))


class FlashableBoard:
    def __init__(self, serial: str, root: str | Path, firmware: str = "pulsecount",
                 fail: str = "", count_window: float = 0.02, poll: float = 0.005) -> None:
        if fail not in FAILS:
            raise ValueError(f"fail={fail!r}: one of {', '.join(FAILS[1:])}")
        self.serial = serial
        self.root = Path(root)
        self.fail = fail
        self.count_window = count_window
        self.poll = poll
        self.firmware = ""
        self.board: SimulatedBoard | None = None
        self.volume = self.root / "volumes" / serial
        self.link = self.root / "by-id" / f"usb-tinyVision.ai_pico-ice_{serial}-if00"
        self.flashed: list[str] = []
        self.rejected = 0
        self.touches = 0
        self._default: tuple[int, str] | None = None
        self._stop = threading.Event()
        for sub in ("usb", "volumes", "by-id"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._boot(firmware)
        self._thread = threading.Thread(target=self._run, name=f"pico-flashsim:{serial}",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> str | None:
        if self.board is not None:
            return str(self.link)
        return self._default[1] if self._default is not None else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._shutdown()

    # ---------------------------------------------------------------- identities
    def _publish(self, firmware: str, port: str | None, volume: str | None) -> None:
        self.firmware = firmware
        path = self.root / "usb" / f"{self.serial}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"firmware": firmware, "port": port, "volume": volume}))
        os.replace(tmp, path)

    def _boot(self, firmware: str) -> None:
        if firmware in ("pulsecount", "variance"):
            self.board = SimulatedBoard(self.serial, firmware, count_window=self.count_window,
                                        link=self.link).start()
            self._publish(firmware, str(self.link), None)
        elif firmware == "default":
            master, slave = os.openpty()
            name = os.ttyname(slave)
            os.close(slave)
            os.set_blocking(master, False)
            self._default = (master, name)
            self._publish("default", name, None)
        else:  # bootloader
            self.volume.mkdir(parents=True, exist_ok=True)
            listing = BOOTSEL_LISTING[:1] if self.fail == "listing" else BOOTSEL_LISTING
            for f in listing:
                (self.volume / f).write_text("UF2 Bootloader v1.0\nModel: Raspberry Pi RP2350\n"
                                             "Board-ID: RP2350\n" if f.endswith("TXT") else
                                             "<html>RP2350</html>\n")
            self._publish("bootloader", None, str(self.volume))

    def _shutdown(self) -> None:
        if self.board is not None:
            self.board.stop()
            self.board = None
        if self._default is not None:
            os.close(self._default[0])
            self._default = None
        if self.volume.exists():
            for f in self.volume.iterdir():
                f.unlink()
            self.volume.rmdir()
        (self.root / "usb" / f"{self.serial}.json").unlink(missing_ok=True)
        self.firmware = ""

    # ---------------------------------------------------------------- the board's life
    def _speed(self) -> int | None:
        if self.board is not None:
            fd = self.board._master  # noqa: SLF001 - the pty the simulated board owns
        elif self._default is not None:
            fd = self._default[0]
        else:
            return None
        if fd is None:
            return None
        try:
            return int(termios.tcgetattr(fd)[5])
        except (OSError, termios.error):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            if self.firmware in ("pulsecount", "variance", "default"):
                if self._speed() == termios.B1200 and self.fail != "touch":
                    self.touches += 1
                    self._shutdown()
                    if self.fail != "bootsel":
                        time.sleep(0.05)  # USB re-enumeration
                        self._boot("bootloader")
                if self.firmware == "default" and self._default is not None \
                        and self.fail != "test":
                    try:
                        os.write(self._default[0], b"default firmware\r\n")
                    except OSError:
                        pass  # nobody reading: a CDC port drops output too
            elif self.firmware == "bootloader":
                self._take_uf2()

    def _take_uf2(self) -> None:
        for f in sorted(self.volume.glob("*")):
            if f.name in BOOTSEL_LISTING or f.suffix.lower() != ".uf2":
                continue
            blob = f.read_bytes()
            if not _complete(blob):
                continue  # still being written (the bootloader takes blocks as they come)
            f.unlink()
            try:
                image = read_uf2(blob)
                name = image.data.split(b"\n", 1)[0].removeprefix(_MAGIC).decode()
                if not image.data.startswith(_MAGIC) or name not in (
                        "pulsecount", "variance", "default") or self.fail == "uf2":
                    raise Uf2Error("not a firmware this board runs")
            except (Uf2Error, UnicodeDecodeError):
                self.rejected += 1
                continue
            if self.fail == "identity":
                name = "pulsecount" if name == "default" else "default"
            self.flashed.append(name)
            self._shutdown()
            time.sleep(0.05)  # reboot into the new firmware
            self._boot(name)
            return
