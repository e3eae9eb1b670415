"""The WIDAR input stage: lag frames over UDP -> validated, sorted, assembled lag sets.

Receiving is the hot path (42,000 frames/s typical, 117,000 for one board at gigabit rate).
Python has no ``recvmmsg``, so the driver calls ``recv_into`` per datagram straight into a row
of one preallocated ``(batch, frame_bytes)`` array (no bytes object per frame) with
``MSG_TRUNC`` so an oversize datagram still reports its true length; validation, decoding and
assembly then run on the whole batch at numpy speed (``frames.py``, ``assembler.py``).

A large ``SO_RCVBUF`` absorbs bursts while the thread is busy; the kernel caps what a process
may ask for at ``net.core.rmem_max`` (unless we hold CAP_NET_ADMIN, when ``SO_RCVBUFFORCE``
works), so the granted size is reported in ``rcvbuf_granted`` and logged when smaller.
Frames the kernel dropped for lack of buffer are read from ``/proc/net/udp`` (``kernel_drops``).

Bad frames never stop the stage: they are counted per reason in ``bad_frames`` (``truncated``,
``bad_sync``, ``bad_length``, ``bad_checksum`` from validation; ``bad_geometry`` and
``unknown_product`` from assembly) and in the device's error count.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections import Counter
from typing import Any

import numpy as np

from radlogger.device import Device
from radlogger.options import Option

from .assembler import ASSEMBLY_OPTIONS, Assembler, LagSet
from .frames import decode, frame_bytes, reason_counts
from .recording import RotatingRecorder

__all__ = ["LagSetDevice", "WidarDevice"]

log = logging.getLogger(__name__)


class LagSetDevice(Device):
    """Common part of the live and replay devices: batches of datagrams in, lag sets out."""

    quantities = ("lagset",)
    options: tuple[Option, ...] = ASSEMBLY_OPTIONS + (
        Option("batch", int, 256, "datagrams handled per batch", min=1, max=65536),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.bad_frames: Counter[str] = Counter()  # decode and assembly rejections
        self.assembler = Assembler.from_settings(s, rejected=self.bad_frames)
        self.frame_bytes = frame_bytes(s.lags_per_frame)
        self._bad_total = 0
        self.datagrams = 0
        self.lagsets = 0
        self.recorder: RotatingRecorder | None = None
        b = s.batch
        self._buf = np.zeros((b, self.frame_bytes), np.uint8)
        flat = self._buf.reshape(-1).data
        w = self.frame_bytes
        self._rows = [flat[i * w:(i + 1) * w] for i in range(b)]

    def ingest(self, n: int, lengths: list[int] | np.ndarray,
               t_ns: np.ndarray | None = None) -> None:
        """Validate, (record,) decode and assemble the first ``n`` rows of the buffer."""
        if not n:
            return
        lens = np.asarray(lengths, np.int64)
        self.datagrams += n
        if self.recorder is not None:
            self.recorder.write(self._buf[:n], lens,
                                t_ns if t_ns is not None else np.full(n, time.time_ns()))
        batch, reason = decode(self._buf[:n], lens, self.settings.lags_per_frame)
        if len(batch) < n:
            self.bad_frames.update(reason_counts(reason))
        done = self.assembler.add(batch)
        bad_total = sum(self.bad_frames.values())  # decode and assembly rejections
        if bad_total != self._bad_total:
            self.outlet.stats.errors += bad_total - self._bad_total
            self._bad_total = bad_total
        for ls in done:
            self._emit(ls)

    def expire(self) -> None:
        for ls in self.assembler.expire():
            self._emit(ls)

    def flush_sets(self) -> None:
        for ls in self.assembler.flush():
            self._emit(ls)

    def _emit(self, ls: LagSet) -> None:
        self.lagsets += 1
        self.emit("lagset", ls.lags, device_time=ls.timestamp,
                  meta=ls.meta(self.settings.config_id))

    def stats(self) -> dict[str, Any]:
        """Frame-level counters (the pipeline's stats count lag sets)."""
        return {"datagrams": self.datagrams, "lagsets": self.lagsets,
                "bad_frames": dict(self.bad_frames), **self.assembler.stats()}


class WidarDevice(LagSetDevice):
    kind = "widar"
    summary = "WIDAR correlator lag frames over UDP, assembled into lag sets"
    options = LagSetDevice.options + (
        Option("bind", str, "127.0.0.1", "address to receive on (0.0.0.0 = all interfaces)"),
        Option("port", int, 50000, "UDP port (0 = any free port, see bound_port)",
               min=0, max=65535),
        Option("rcvbuf", int, 64 << 20, "socket receive buffer to request, bytes "
               "(the kernel caps it at net.core.rmem_max)", min=0),
        Option("record", str, "", "record every received datagram to this pcap path, "
               "rotated as PATH.NNNNNN.pcap (empty = no recording)"),
        Option("record_max_mb", float, 1024.0, "size of one recording file, MiB", min=0.01),
        Option("record_keep", int, 0, "recording files kept (0 = all)", min=0),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.sock: socket.socket | None = None
        self.bound_port = 0
        self.rcvbuf_granted = 0

    def open(self) -> None:
        s = self.settings
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if s.rcvbuf:
                self.rcvbuf_granted = _request_rcvbuf(sock, s.rcvbuf)
                if self.rcvbuf_granted < s.rcvbuf:
                    log.warning("widar %s: receive buffer %d KiB granted of %d KiB requested;"
                                " raise it with sysctl -w net.core.rmem_max=%d", self.name,
                                self.rcvbuf_granted >> 10, s.rcvbuf >> 10, s.rcvbuf)
            sock.bind((s.bind, s.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot receive on {s.bind}:{s.port}: {exc.strerror or exc} "
                          "(is another program using the port? set port = ...)") from None
        sock.setblocking(False)
        self.sock = sock
        self.bound_port = sock.getsockname()[1]
        if s.record and self.recorder is None:
            self.recorder = RotatingRecorder(s.record, int(s.record_max_mb * (1 << 20)),
                                             s.record_keep)
        log.info("widar %s: receiving on %s:%d (rcvbuf %d KiB)", self.name, s.bind,
                 self.bound_port, self.rcvbuf_granted >> 10)

    def poll(self) -> None:
        sock = self.sock
        assert sock is not None
        recv = sock.recv_into
        rows = self._rows
        width = self.frame_bytes
        flags = socket.MSG_TRUNC
        lengths: list[int] = []
        append = lengths.append
        stamps: list[int] | None = [] if self.recorder is not None else None
        n = 0
        limit = len(rows)
        try:
            if stamps is None:
                while n < limit:
                    append(recv(rows[n], width, flags))
                    n += 1
            else:
                clock = time.time_ns
                while n < limit:
                    append(recv(rows[n], width, flags))
                    stamps.append(clock())
                    n += 1
        except BlockingIOError:
            pass
        if n:
            self.ingest(n, lengths, None if stamps is None else np.array(stamps, np.int64))
        self.expire()
        if n < limit:
            deadline = self.assembler.next_deadline()
            wait = 0.1 if deadline is None else min(0.1, max(0.0005, deadline -
                                                             time.monotonic()))
            select.select([sock], [], [], wait)

    def close(self) -> None:
        self.flush_sets()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on our socket (receive buffer full), or -1."""
        if not self.bound_port:
            return -1
        port = f":{self.bound_port:04X}"
        try:
            with open("/proc/net/udp") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(port):
                        return int(parts[-1])
        except (OSError, StopIteration, ValueError, IndexError):
            pass
        return -1

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "port": self.bound_port, "rcvbuf": self.rcvbuf_granted,
                "kernel_drops": self.kernel_drops()}


def _request_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes (forced if we may), return what the kernel granted."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:  # no CAP_NET_ADMIN: capped at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the bookkeeping size it reserved; half is the data capacity it gave
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
