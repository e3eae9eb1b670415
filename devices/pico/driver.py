"""The pico2-ice driver: upload a bitstream, follow the board's lines, publish the count.

One evaluation: wait for ``Waiting for bitstream transfer``, write the 104,090 bytes in 512-byte
chunks, follow ``Received ... / Flashing FPGA / FPGA Flash times ... / pulses: N`` (or
``samples: ...`` from the variance firmware), publish one measurement on ``<name>.pulses`` or
``<name>.variance``.  Every evaluation that does not end in a count is published on
``<name>.failure`` (value: the reason; meta ``ok = False``) and counted in ``failures``, so a
store of the three topics accounts for every bitstream taken from the source.  The reasons
(``wrong_size``, ``watchdog``, ``flash_failed``, ``no_result``, ``timeout``, ``upload_timeout``,
``disconnected``, ``shutdown``) and what follows each are tabled in README.md.

After a watchdog or a stalled upload (``write_timeout``) the driver resynchronises: the
evaluation stays attached while the board's lines about it arrive (watchdogs, transfers of
bytes still queued), and is published once the board is ready and quiet for ``_SETTLE_S``:
each bitstream ends in one result or failure, and no line is charged to another.

``simulate = yes`` runs one simulated board (``simboard.py``, a pty pair) until the device
stops.  Unmatched lines count in ``bad_lines`` (a watchdog before our first upload is the tail
of a transfer cut before we connected: not an error).  ``poll`` blocks at most
``read_timeout`` (0.1 s) or one ``write_timeout``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import zlib
from typing import Any

import serial

from radlogger.device import Device, DeviceDone
from radlogger.devices.simhost import SimulatorHost, SimulatorOwner
from radlogger.errors import ConnectionFailure, OperationError
from radlogger.options import by_reason
from radlogger.registries import Registries

from . import usb as pico_usb
from .farm.registry import BOARDS
from .options import PICO_OPTIONS, check_settings
from .outcome import SHUTDOWN, Outcomes
from .protocol import BITSTREAM_SIZE, CHUNK_SIZE, Event, Kind, fitness, parse_line
from .sources import BitstreamQueue, Job, Source, source_for

__all__ = ["PicoDevice"]

log = logging.getLogger(__name__)

_IDLE, _UPLOADING, _RUNNING, _RESYNC = "idle", "uploading", "running", "resync"
#: after a watchdog or an aborted upload the board is trusted to be ready only once its
#: ``Waiting for bitstream transfer`` was followed by this much silence: bytes still queued
#: from the aborted upload would start a transfer (``Bitstream transfer started``) at once
_SETTLE_S = 0.25
#: most time one poll spends writing before it reads the board's lines again
_UPLOAD_SLICE_S = 0.1
_MAX_LINE = 65536


class _BoardGone(ConnectionFailure, ConnectionError):
    """The board announced ``USB Disconnected :(``."""


class _ResultTimeout(OperationError, TimeoutError):
    """No result line within the evaluation's time limit."""


class PicoDevice(SimulatorOwner, Outcomes, Device):
    kind = "pico"
    summary = "pico2-ice board: uploads FPGA bitstreams, publishes pulse counts or variance fitness"
    quantities = ("pulses", "variance", "failure")
    options = PICO_OPTIONS

    #: pyusb backend for ``serial`` lookups (None: libusb); tests put a simulated one here
    usb_backend: Any = None

    finite_when = "with bitstream files and repeat > 0"

    @property
    def finite(self) -> bool:
        """Bitstreams (files or generated) with ``repeat`` passes end; the farm's queue does
        not."""
        return self.queue is None and self.source is not None and self.settings.repeat > 0

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = check_settings(name, self.settings)
        self.queue = BitstreamQueue(on_put=self._wake_reader) if s.farm else None
        self.source: Source | None = source_for(s) if self.queue is None else self.queue
        self.sim: SimulatorHost[Any] | None = None
        if s.simulate:
            from .answers import sim_serial

            self.board_serial: str = sim_serial(zlib.crc32(name.encode()))
            self.sim = SimulatorHost(self, self._start_board, lambda board: board.stop())
        else:
            self.board_serial = s.serial or pico_usb.serial_of_port(s.port, s.sysfs_root)
        #: the key the farm knows this board by: its serial when known now, else the name
        self.board_id: str = self.board_serial or name
        self.result_timeout = s.result_timeout or (s.watchdog + s.count_window + 5.0)
        # counters (driver thread only)
        self.evaluations = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.bad_lines: collections.Counter[str] = collections.Counter()
        self.uploaded_bytes = 0
        self.cycles = 0
        self.port_path = ""
        self._ser: Any = None
        self._ser_lock = threading.Lock()  # _ser vs interrupt/_wake_reader: no EBADF
        self._reset_connection()

    def _start_board(self) -> Any:
        from .simboard import SimulatedBoard

        s = self.settings
        board = SimulatedBoard(self.board_serial, s.firmware, s.watchdog, s.count_window)
        log.info("pico %s: simulated %s board %s on %s", self.name, s.firmware, board.serial,
                 board.pts)
        return board.start()

    # ---------------------------------------------------------------- pipeline lifecycle
    def attach(self, registries: Registries) -> None:
        """Join the farm's boards when running (never in ``__init__``: drafts never run)."""
        if self.settings.farm:
            registries.register(BOARDS, self.settings.farm, self.name, self)

    def detach(self, registries: Registries) -> None:
        if self.settings.farm:
            registries.unregister(BOARDS, self.settings.farm, self.name, self)

    @classmethod
    def discover(cls) -> list[dict[str, Any]]:
        """Boards on USB, every firmware (``radloggerd ports``); needs libusb."""
        return [dict(d, kind=cls.kind) for d in pico_usb.describe(cls.usb_backend)]

    @property
    def ready_for_work(self) -> bool:
        """Connected and idle at the board's ready line (the farm's board test)."""
        return self._ser is not None and self._job is None and self._board_ready()

    def _board_ready(self) -> bool:
        return self._ready and time.monotonic() >= self._ready_after

    # ---------------------------------------------------------------- lifecycle
    def _reset_connection(self) -> None:
        self._buf = bytearray()
        self._ready = False
        self._ready_after = 0.0  # the board is ready for an upload from then on
        self._settle = False  # wait for silence after the next ready line
        self._resync_reason = ""
        self._uploaded = False  # since this connection was opened
        self._job: Job | None = None
        self._phase = _IDLE
        self._pos = 0
        self._t_up0 = self._t_up1 = 0.0
        self._deadline = 0.0
        self._info: dict[str, Any] = {}
        self._last_activity = time.monotonic()

    def open(self) -> None:
        s = self.settings
        if self.sim is not None:
            port = self.sim.get().path
        elif s.serial:
            port = pico_usb.resolve_serial(s.serial, self.usb_backend, s.sysfs_root, s.dev_root)
        else:
            port = s.port
        self.port_path = port
        ser = serial.serial_for_url(port, baudrate=s.baudrate, timeout=s.read_timeout,
                                    write_timeout=s.write_timeout, exclusive=True)
        with self._ser_lock:
            self._ser = ser
        self._reset_connection()
        if not self.board_serial:
            self.board_serial = pico_usb.serial_of_port(port, s.sysfs_root)

    def close(self) -> None:
        if self._job is not None:
            if self.stopping:
                self._fail(SHUTDOWN, "the daemon stopped during the evaluation")
            else:
                self._fail(self._resync_reason or "disconnected",
                           "port closed during the evaluation")
        with self._ser_lock:
            ser, self._ser = self._ser, None
            if ser is not None:
                ser.close()
        if self.sim is not None and self.stopping:
            self.sim.release()  # the device thread ends, and with it its board

    def _wake_reader(self) -> None:
        """Jobs arrived: end a blocking read early (pyserial's cancel_read)."""
        self._cancel("cancel_read")

    def interrupt(self) -> None:
        self._cancel("cancel_read", "cancel_write")

    def _cancel(self, *names: str) -> None:
        """Cancel a blocking read/write from another thread; under the lock that ``close``
        takes, so never on a port being closed (EBADF, or a reused descriptor)."""
        with self._ser_lock:
            ser = self._ser
            if ser is None or not getattr(ser, "is_open", True):
                return
            for name in names:
                fn = getattr(ser, name, None)
                if fn is not None:
                    fn()

    # ---------------------------------------------------------------- the poll loop
    def poll(self) -> None:
        try:
            self._poll()
        except DeviceDone:
            raise
        except Exception as exc:
            if self._job is not None and not self.stopping:
                if self._resync_reason:
                    reason = self._resync_reason
                elif isinstance(exc, _ResultTimeout):
                    reason = "timeout"
                else:
                    reason = "disconnected"
                self._fail(reason, f"{type(exc).__name__}: {exc}")
            raise

    def _poll(self) -> None:
        if self._phase == _UPLOADING:
            self._upload()
            self._read(block=False)
        elif self._job is None and self.source is not None and self._board_ready():
            try:
                job = self.source.get(0)
            except OSError as exc:  # a source that cannot read: count, keep the board
                self.failures["source_error"] += 1
                self._count_error_quietly(f"bitstream source: {exc}")
                job = None
            if job is not None:
                self._start(job)
                self._read(block=False)
            elif self.source.exhausted:
                raise DeviceDone
            else:
                # wait on the board, not the queue: a read notices an unplugged idle board,
                # and the queue's put cancels the read so a new job starts at once
                self._read(block=True)
        else:
            self._read(block=True)
        self._check_timeouts()

    def _start(self, job: Job) -> None:
        if len(job.data) != BITSTREAM_SIZE:
            self._job = job
            self._fail("wrong_size", f"{len(job.data)} bytes; a pico2-ice bitstream has "
                       f"{BITSTREAM_SIZE}", size=len(job.data))
            return
        self._job, self._uploaded = job, True
        self._phase = _UPLOADING
        self._ready = False
        self._settle = False
        self._resync_reason = ""
        self._pos = 0
        self._info = {}
        self._t_up0 = time.monotonic()
        self._upload()

    def _upload(self) -> None:
        job = self._job
        assert job is not None
        data = memoryview(job.data)
        write = self._ser.write
        pos = start = self._pos
        until = time.monotonic() + _UPLOAD_SLICE_S
        try:
            while pos < BITSTREAM_SIZE and not self.stopping:  # cancel_write ends one write
                write(data[pos:pos + CHUNK_SIZE])
                pos += CHUNK_SIZE
                if time.monotonic() >= until:
                    break
        except serial.SerialTimeoutException:
            self.uploaded_bytes += pos - start
            self._resync("upload_timeout", f"the board took no byte for "
                         f"{self.settings.write_timeout}s after about {pos} bytes")
            with self._ser_lock, contextlib.suppress(OSError):
                self._ser.reset_output_buffer()  # drop what a tty driver still holds
            return
        pos = min(pos, BITSTREAM_SIZE)
        self._pos = pos
        self.uploaded_bytes += pos - start
        if pos >= BITSTREAM_SIZE:
            self._t_up1 = time.monotonic()
            self._phase = _RUNNING
            self._deadline = self._t_up1 + self.result_timeout

    def _read(self, block: bool) -> None:
        ser = self._ser
        waiting = ser.in_waiting
        if not waiting and not block:
            return
        data = ser.read(waiting or 1)
        if not data:
            return
        self._last_activity = time.monotonic()
        buf = self._buf
        buf += data
        if b"\n" not in data:
            if len(buf) > _MAX_LINE:
                self._bad_line("overlong", bytes(buf[:80]))
                buf.clear()
            return
        *lines, rest = buf.split(b"\n")
        self._buf = bytearray(rest)
        for raw in lines:
            self._on_event(parse_line(raw.decode("ascii", "replace")))

    def _resync(self, reason: str, detail: str) -> None:
        """The transfer went wrong: keep the job until the board is ready and quiet."""
        self._phase = _RESYNC
        self._resync_reason = reason
        self._info["detail"] = detail
        self._ready = False
        self._settle = True
        self._deadline = time.monotonic() + self.result_timeout

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        if self._phase == _RESYNC and self._board_ready():
            self._fail(self._resync_reason, self._info.get("detail", ""))
            self._resync_reason = ""
            self._settle = False
        elif self._phase == _RESYNC and now > self._deadline:
            raise _ResultTimeout(f"the board did not come back ready within "
                                 f"{self.result_timeout:.1f}s after {self._resync_reason}")
        if self._phase == _RUNNING and now > self._deadline:
            raise _ResultTimeout(f"no result {self.result_timeout:.1f}s after the upload")
        if (self._phase == _IDLE and not self._ready
                and now - self._last_activity > self.settings.ready_timeout):
            raise TimeoutError(f"no 'Waiting for bitstream transfer' within "
                               f"{self.settings.ready_timeout}s (is the pulse-count firmware "
                               f"running?)")

    # ---------------------------------------------------------------- protocol events
    def _on_event(self, ev: Event) -> None:
        kind = ev.kind
        if kind is Kind.READY:
            if self._job is not None and self._phase == _RUNNING:
                self._fail("no_result", "the board was ready again without a result line")
            self._ready = True
            self._ready_after = time.monotonic() + (_SETTLE_S if self._settle else 0.0)
        elif kind is Kind.STARTED:
            if self._job is None or "watchdogs" in self._info:
                # bytes nobody is uploading now (queued from an aborted upload): the board is
                # busy until their watchdog
                self._ready = False
                self._settle = True
                self._info["leftover_transfers"] = self._info.get("leftover_transfers", 0) + 1
        elif kind is Kind.RECEIVED:
            self._info["upload_us"] = ev.value
        elif kind is Kind.FLASH_TIMES:
            self._info["flash"] = ev.value
            if ev.value.pulses is not None:
                self._complete("pulses", ev.value.pulses, "pulses")
        elif kind is Kind.PULSES:
            self._complete("pulses", ev.value, "pulses")
        elif kind is Kind.SAMPLES:
            self._complete("variance", fitness(ev.value), "", n_samples=int(ev.value.size))
        elif kind is Kind.WATCHDOG:
            self._on_watchdog(ev.value)
        elif kind is Kind.IDLE:
            if self._job is not None and self._phase == _RUNNING:
                self._fail("no_result", "the board went IDLE without a result line")
        elif kind is Kind.RECONNECTED:
            self.cycles += 1
        elif kind is Kind.DISCONNECTED:
            raise _BoardGone("the board reported 'USB Disconnected :('")
        elif kind is Kind.GARBAGE:
            self._bad_line("garbage", ev.value)
        # CONNECTED, RECEIVING, FLASHING, SAMPLING, EMPTY: progress only

    def _on_watchdog(self, received: int) -> None:
        self._ready, self._settle = False, True
        if self._job is None:
            self._bad_line("stray_watchdog" if self._uploaded else "leftover_watchdog",
                           f"Watchdog timeout, {received} bytes")
            return
        self._info["watchdogs"] = self._info.get("watchdogs", 0) + 1
        self._info.setdefault("bytes_received", received)
        if self._phase != _RESYNC:
            self._resync("watchdog", f"the board received {received} of {BITSTREAM_SIZE} bytes")
        self._deadline = time.monotonic() + self.result_timeout  # alive: wait for it again

    def counters(self) -> dict[str, int | float]:
        """Driver counters for status and the farm's device list."""
        return {**super().counters(), "evaluations": self.evaluations,
                **by_reason("failures", self.failures), **by_reason("bad_lines", self.bad_lines),
                "uploaded_bytes": self.uploaded_bytes, "cycles": self.cycles,
                "queued": len(self.queue) if self.queue is not None else 0}
