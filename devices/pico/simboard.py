"""One simulated pico2-ice board behind a real pty pair, speaking the exact line protocol.

The driver opens the pty's slave path like a real ``/dev/ttyACM*``.  The board notices the host
opening and closing the port the way a CDC device notices DTR: on Linux the master side polls
``POLLHUP`` while no process holds the slave open.  Each board runs one thread that owns every
file descriptor; tests steer it through thread-safe requests (``disconnect``, ``inject`` ...).

The answers (pulse count, samples) are documented functions of the bitstream
(:mod:`.answers`), so tests know them; they do not depend on the count window.

Faults: ``stall_after(n, hold, times)`` (the next ``times`` transfers lose every byte after
the n-th, so the watchdog fires; ``hold``: the board stops reading the port instead, the host's
writes block, and after the watchdog what is still queued starts a new transfer, as on a real
board), ``inject(line)``, ``corrupt_next_result(text)``, ``fail_flash(step)``, ``disconnect()``
(the master closes, the stable link disappears) and ``reconnect()`` (a new pty, the link
points at it again, as udev's by-id links do).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
import time
import tty
import zlib
from pathlib import Path
from typing import Any

from .answers import expected_pulses, pulses_for, samples_for, sim_serial
from .protocol import (
    BITSTREAM_SIZE,
    COUNT_WINDOW_S,
    FLASH_STEPS,
    LINE_CONNECTED,
    LINE_DISCONNECTED,
    LINE_FLASHING,
    LINE_IDLE,
    LINE_READY,
    LINE_RECEIVING,
    LINE_RECONNECTED,
    LINE_SAMPLING,
    LINE_STARTED,
    WATCHDOG_S,
    fitness,
    format_flash_times,
)

#: the answers live in :mod:`.answers` (:mod:`.simulator` re-exports them all)
__all__ = ["SimulatedBoard", "expected_pulses", "sim_serial"]

log = logging.getLogger(__name__)

#: how often a board without a host checks whether one opened the port
_HOST_CHECK_S = 0.02
_FLASH_TIMES = (12, 35, 160, 8200, 45)


class SimulatedBoard:
    """One board.  ``path`` is what the driver opens (the stable link if one was given)."""

    def __init__(self, serial: str = "", mode: str = "pulsecount", watchdog: float = WATCHDOG_S,
                 count_window: float = COUNT_WINDOW_S, link: str | Path | None = None,
                 greet_delay: float = 0.002, size: int = BITSTREAM_SIZE) -> None:
        if mode not in ("pulsecount", "variance"):
            raise ValueError(f"mode {mode!r}: expected pulsecount or variance")
        self.serial = serial or sim_serial(0)
        self.mode = mode
        self.watchdog = watchdog
        self.count_window = count_window
        self.greet_delay = greet_delay
        self.size = size
        self.link = Path(link) if link is not None else None
        # counters (written by the board thread only)
        self.opens = 0
        self.transfers = 0
        self.evaluations = 0
        self.watchdogs = 0
        self.bytes_received = 0
        self.bytes_lost = 0
        self.output_dropped = 0
        self.disconnects = 0
        self.results: list[int | float] = []
        # faults, set from other threads, taken by the board thread
        self._stall_after: int | None = None
        self._stall_hold = False
        self._stall_times = 0
        self._holding = False  # not reading the port (a held stall until the watchdog)
        self._transfer_holds = False
        self._corrupt: str | None = None
        self._fail_step: str | None = None
        self._requests: collections.deque[tuple[str, Any, threading.Event]] = collections.deque()
        # board-thread state
        self._master: int | None = None
        self.pts: str = ""
        self._host_open = False
        self._state = "boot"
        self._pending = bytearray()
        self._received = 0
        self._keep = size
        self._crc = 0
        self._t_first = 0.0
        self._greet_at: float | None = None
        self._watchdog_at: float | None = None
        self._result_at: float | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._open_pty()

    # ---------------------------------------------------------------- public control
    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.pts

    @property
    def connected(self) -> bool:
        return self._master is not None

    @property
    def host_open(self) -> bool:
        return self._host_open

    def start(self) -> SimulatedBoard:
        self._thread = threading.Thread(target=self._run, name=f"pico-sim:{self.serial}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._close_master()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SimulatedBoard:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stall_after(self, nbytes: int, hold: bool = False, times: int = 1) -> None:
        """The next ``times`` transfers keep only their first ``nbytes`` bytes: the rest are
        lost, or with ``hold`` left unread in the port until the watchdog fires."""
        self._stall_hold, self._stall_times, self._stall_after = hold, times, nbytes

    def corrupt_next_result(self, text: str = "pulses: ###") -> None:
        """Print ``text`` instead of the next result line (pulses or samples)."""
        self._corrupt = text

    def fail_flash(self, step: str = "write") -> None:
        """The next flash reports -1 for ``step``."""
        if step not in FLASH_STEPS:
            raise ValueError(f"step {step!r}: one of {', '.join(FLASH_STEPS)}")
        self._fail_step = step

    def inject(self, line: str) -> None:
        """Print an arbitrary line now (garbage, a stray protocol line)."""
        self._request("inject", line)

    def disconnect(self, announce: bool = False) -> None:
        """Pull the cable: the host's reads fail, the link disappears."""
        self._request("disconnect", announce)

    def reconnect(self) -> None:
        """Plug it back in: a new pty, the link points at it."""
        self._request("reconnect", None)

    # ---------------------------------------------------------------- internals
    def _request(self, what: str, arg: Any, timeout: float = 5.0) -> None:
        done = threading.Event()
        self._requests.append((what, arg, done))
        self._wake()
        if self._thread is None:
            self._do_requests()
        if not done.wait(timeout):
            raise TimeoutError(f"simulated board {self.serial}: {what} not done in {timeout}s")

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed at stop

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self.pts = os.ttyname(slave)
        os.close(slave)  # the host opens it by path, like a real tty
        os.set_blocking(master, False)
        self._master = master
        self._host_open = False
        self._state = "boot"
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(self.pts, tmp)
            os.replace(tmp, self.link)

    def _close_master(self) -> None:
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def _do_requests(self) -> None:
        while self._requests:
            what, arg, done = self._requests.popleft()
            if what == "inject":
                self._say(arg)
            elif what == "disconnect":
                if arg:
                    self._say(LINE_DISCONNECTED)
                self._close_master()
                self._reset()
                self.disconnects += 1
            elif what == "reconnect":
                if self._master is None:
                    self._open_pty()
            done.set()

    def _reset(self) -> None:
        self._host_open = False
        self._state = "boot"
        self._pending.clear()
        self._holding = False
        self._greet_at = self._watchdog_at = self._result_at = None

    def _say(self, *lines: str) -> None:
        if self._master is None:
            return
        data = "".join(line + "\r\n" for line in lines).encode()
        try:
            os.write(self._master, data)
        except BlockingIOError:
            self.output_dropped += 1  # the host is not reading; a real CDC port drops too
        except OSError:
            pass  # no host: output goes nowhere, as on the real board

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - a simulator bug must be visible, not silent
            log.exception("simulated board %s crashed", self.serial)

    def _loop(self) -> None:
        while not self._stopping:
            self._do_requests()
            now = time.monotonic()
            self._timers(now)
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            master = self._master
            if master is not None and self._host_open and not self._holding:
                # while no host holds the slave, POLLHUP would make poll() spin: the open is
                # detected by _timers instead
                poller.register(master, select.POLLIN)
            timeout = self._timeout(now)
            for fd, ev in poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)):
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                elif fd == master and master == self._master:
                    self._on_master(master, ev)

    def _timeout(self, now: float) -> float | None:
        deadlines = [t for t in (self._greet_at, self._watchdog_at, self._result_at)
                     if t is not None]
        if self._master is not None and not self._host_open:
            deadlines.append(now + _HOST_CHECK_S)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _on_master(self, master: int, ev: int) -> None:
        now = time.monotonic()
        data = b""
        if ev & select.POLLIN:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""  # EIO: the host closed the slave
        if data:
            self._pending += data
            self._process(now)
        elif ev & (select.POLLHUP | select.POLLERR | select.POLLIN):
            self._reset()  # the host closed the port; wait for the next open

    def _host_opened(self, now: float) -> None:
        self._host_open = True
        self.opens += 1
        self._state = "boot"
        self._greet_at = now + self.greet_delay

    def _timers(self, now: float) -> None:
        if self._master is not None and not self._host_open:
            # POLLHUP is level-triggered: test for "no longer hung up" with a zero-wait poll
            p = select.poll()
            p.register(self._master, select.POLLIN)
            events = p.poll(0)
            if not events or not events[0][1] & select.POLLHUP:
                self._host_opened(now)
        if self._greet_at is not None and now >= self._greet_at:
            self._greet_at = None
            self._say(LINE_CONNECTED, LINE_READY)
            self._state = "ready"
            self._process(now)
        if self._watchdog_at is not None and now >= self._watchdog_at:
            self._watchdog_at = None
            self._holding = False
            self.watchdogs += 1
            self._say(f"Watchdog timeout, {self._received} bytes received of {self.size}",
                      LINE_READY)
            self._state = "ready"
            self._process(now)
        if self._result_at is not None and now >= self._result_at:
            self._result_at = None
            self._finish()
            self._state = "ready"
            self._process(now)

    def _process(self, now: float) -> None:
        """Consume pending host bytes as far as the board's state allows."""
        while self._pending and self._state in ("ready", "receiving") and not self._holding:
            if self._state == "ready":
                self._state = "receiving"
                self.transfers += 1
                self._received = 0
                self._crc = 0
                self._t_first = now
                self._keep = self.size if self._stall_after is None else self._stall_after
                self._transfer_holds = self._stall_hold and self._stall_after is not None
                if self._stall_after is not None:
                    self._stall_times -= 1
                    if self._stall_times <= 0:
                        self._stall_after = None
                self._watchdog_at = now + self.watchdog
                self._say(LINE_STARTED, LINE_RECEIVING)
            if self._transfer_holds:
                # held: take bytes up to the stall point, then stop reading the port
                chunk = bytes(self._pending[:max(0, self._keep - self._received)])
                del self._pending[:len(chunk)]
                self._holding = self._received + len(chunk) >= self._keep
            elif self._keep < self.size:
                # bytes are being lost: everything sent during this transfer is swallowed
                kept = max(0, min(len(self._pending), self._keep - self._received))
                chunk = bytes(self._pending[:kept])
                self.bytes_lost += len(self._pending) - kept
                self._pending.clear()
            else:
                chunk = bytes(self._pending[:self.size - self._received])
                del self._pending[:len(chunk)]
            self._crc = zlib.crc32(chunk, self._crc)
            self._received += len(chunk)
            self.bytes_received += len(chunk)
            if self._received == self.size:
                self._watchdog_at = None
                self._state = "busy"
                us = int((now - self._t_first) * 1e6)
                self._say(f"Received bitstream in {us} us :)", LINE_FLASHING)
                if self.mode == "variance":
                    self._say(self._flash_line(), LINE_SAMPLING)
                self._result_at = now + self.count_window

    def _flash_line(self) -> str:
        times = list(_FLASH_TIMES)
        if self._fail_step is not None:
            times[FLASH_STEPS.index(self._fail_step)] = -1
            self._fail_step = None
        return format_flash_times(times)

    def _finish(self) -> None:
        if self.mode == "variance":
            samples = samples_for(self._crc)
            self.results.append(fitness(samples))
            result = "samples: " + ",".join(map(str, samples.tolist()))
            lines = [self._corrupt or result]
        else:
            pulses = pulses_for(self._crc)
            self.results.append(pulses)
            lines = [self._flash_line(), self._corrupt or f", pulses: {pulses}"]
        self._corrupt = None
        self.evaluations += 1
        self._say(*lines, LINE_IDLE, LINE_RECONNECTED, LINE_READY)
