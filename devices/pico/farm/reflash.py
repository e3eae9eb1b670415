"""After a reservation, a board is reflashed and tested before the next client gets it.

iCEFARM's cycle: ``await_flash_default`` -> ``flashing_default`` (the default firmware, then
its test: ``default firmware`` on the tty within 2 s) -> the board's own firmware again ->
``testing`` (the farm's usual check: the driver reconnects and sees the ready line) ->
``available``; a failed step makes the board ``broken`` (reported: a log line, a ``state``
and a ``flash`` broker measurement with the step) until an operator deals with it.

Flashing takes seconds per board: it runs on its own thread, one board at a time, never on
the HTTP loop or the farm's tick.  The board's driver loses its tty while the board is in
BOOTSEL and reconnects by itself (backoff) when the board is back.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from ..flash import Flasher, FlashError, SysfsUsbView, UsbView
from ..uf2 import bin_to_uf2

__all__ = ["Reflasher", "load_image"]

log = logging.getLogger(__name__)


def load_image(path: str) -> bytes:
    """A firmware file as UF2 (a ``.bin`` is converted for the RP2350)."""
    data = Path(path).read_bytes()
    return data if path.lower().endswith(".uf2") else bin_to_uf2(data)


class Reflasher:
    def __init__(self, farm: Any, images: dict[str, bytes], view: UsbView | None = None,
                 back_timeout: float = 30.0) -> None:
        self.farm = farm
        self.images = images  # firmware name -> UF2 bytes ("default", "pulsecount", ...)
        self.flasher = Flasher(view or SysfsUsbView(), back_timeout=back_timeout)
        self.broken: set[str] = set()
        self.flashed = 0
        self.failed = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"farm-flash:{farm.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(60.0)

    def submit(self, serial: str) -> None:
        """A local board's reservation ended (called under the farm's lock)."""
        self.farm.db.set_status(serial, "await_flash_default")
        self.farm._state_event(serial, "await_flash_default")  # noqa: SLF001 - same package
        self._queue.put(serial)

    def _status(self, serial: str, status: str) -> None:
        with self.farm._lock:  # noqa: SLF001 - the farm's own lock, same package
            self.farm.db.set_status(serial, status)
            self.farm._state_event(serial, status)  # noqa: SLF001

    def _run(self) -> None:
        while (serial := self._queue.get()) is not None:
            board = self.farm.local_boards().get(serial)
            firmware = board.settings.firmware if board is not None else "pulsecount"
            self._status(serial, "flashing_default")
            try:
                self.flasher.flash_default(serial, self.images["default"])
                self.flasher.flash(serial, self.images[firmware], firmware)
            except FlashError as exc:
                self.failed += 1
                self.broken.add(serial)
                log.error("farm %s: board %s is broken: %s", self.farm.name, serial, exc)
                self._flash_event(serial, exc.step, str(exc))
                self._status(serial, "broken")
                continue
            self.flashed += 1
            self._flash_event(serial, "ok", "")
            self._status(serial, "testing")

    def _flash_event(self, serial: str, step: str, detail: str) -> None:
        sink = self.farm.hub.sink
        if sink is not None:
            sink({"event": "flash", "serial": serial, "step": step, "detail": detail,
                  "client": "", "seq": 0})

    def counters(self) -> dict[str, int | float]:
        return {"flashed": self.flashed, "flash_failed": self.failed,
                "broken_by_flash": len(self.broken), "flash_pending": self._queue.qsize()}
