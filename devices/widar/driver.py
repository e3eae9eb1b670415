"""The WIDAR input stage: lag frames over UDP -> validated, sorted, assembled lag sets.

Receiving is the hot path (42,000 frames/s typical, 117,000 for one board at gigabit rate).
The driver reads a whole batch of datagrams with one ``recvmmsg`` call (``radlogger.mmsg``,
ctypes: Python's socket module has none) straight into the rows of one preallocated
``(batch, frame_bytes)`` array (no bytes object per frame) with ``MSG_TRUNC`` so an oversize
datagram still reports its true length: 0.8 us a datagram against 1.5 us for one
``recv_into`` per datagram, which stays the path where ``recvmmsg`` is missing and when
recording (a timestamp per datagram).  Validation, decoding and assembly then run on the whole
batch at numpy speed (``frames.py``, ``assembler.py``).  They cost ~120 us a read whatever its
size, so after a read that found less than a batch the thread lingers (``linger``, 2 ms)
before the next: at 117,000 frames/s from a sender of 61-frame bursts, 2,000 reads of ~233
frames instead of 7,000 of ~66 (3.6 -> 3.2 us a frame, the device alone).

A large ``SO_RCVBUF`` absorbs bursts while the thread is busy; the kernel caps what a process
may ask for at ``net.core.rmem_max`` (unless we hold CAP_NET_ADMIN, when ``SO_RCVBUFFORCE``
works), so the granted size is reported in ``rcvbuf_granted`` and logged when smaller.
Frames the kernel dropped for lack of buffer are read from ``/proc/net/udp`` (the ``drops`` of
our socket's inode: ``kernel_drops``), and read once more just before the socket closes, since
the kernel forgets them with the socket.

**Exact at the edges.**  At stop the receive buffer may hold tens of thousands of datagrams
(64 MiB is ~28,000 frames of 1064 bytes; 41,895 frames once vanished uncounted after SIGTERM
at 100,000 frames/s).  ``close()`` at stop stops the in-process simulator first, then reads
and processes what is still queued (``drained_at_stop``) for up to ``stop_drain`` seconds
(and within the stop deadline the pipeline gives); what is still queued after that is read
without processing and counted (``discarded.stop_deadline``), as is a buffer left behind by a
reconnect after an error (``discarded.reconnect``).  Then the kernel's drop count is read and
the socket closed; the pending lag sets are flushed after the drain, so the drained frames
complete them.  So for every datagram that reached the socket before it closed:
``datagrams + discarded + kernel_drops`` = sent (``datagrams`` includes ``drained_at_stop``).

``simulate = yes`` binds 127.0.0.1 (a free port unless ``port`` is set) and starts an
in-process :class:`~radlogger.devices.widar.simulator.WidarSimulator` sending to it over real UDP at
``sim_rate`` frames/s, with the device's geometry and known spectral lines (``sim_lines``);
its timestamps advance in real time, so time-based integration behaves as with a correlator.
The sender starts at the first open, keeps its port across reconnects, stops with the device.

Bad frames never stop the stage: they are counted per reason in ``bad_frames`` (``truncated``,
``bad_sync``, ``bad_length``, ``bad_checksum`` from validation; ``bad_geometry`` and
``unknown_product`` from assembly) and in the device's error count.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import time
from collections import Counter
from typing import Any

import numpy as np

from radlogger import mmsg
from radlogger.devices.simhost import SimulatorHost, SimulatorOwner
from radlogger.options import Option, OptionError, by_reason

from .lagdevice import LagSetDevice
from .recording import RotatingRecorder

__all__ = ["WidarDevice"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 50000


class WidarDevice(SimulatorOwner, LagSetDevice):
    kind = "widar"
    summary = "WIDAR correlator lag frames over UDP, assembled into lag sets"
    options = LagSetDevice.options + (
        Option("bind", str, "127.0.0.1", "address to receive on (0.0.0.0 = all interfaces)"),
        Option("port", int, None, f"UDP port (unset: {DEFAULT_PORT}, or a free one with "
               "simulate = yes; 0 = any free port, see bound_port)", min=0, max=65535),
        Option("rcvbuf", int, 64 << 20, "socket receive buffer to request, bytes "
               "(the kernel caps it at net.core.rmem_max; 0 = the kernel's default)", min=0),
        Option("linger", float, 0.002, "seconds to let datagrams gather after a read that "
               "found fewer than a batch, so that reads stay large (0 = read as they come)",
               min=0.0, max=0.1),
        Option("stop_drain", float, 2.0, "seconds allowed at stop to read and process the "
               "datagrams still in the receive buffer (within the shutdown deadline); what is "
               "left then is read and counted as discarded.stop_deadline", min=0.0),
        Option("record", str, "", "record every received datagram to this pcap path, "
               "rotated as PATH.NNNNNN.pcap (empty = no recording)"),
        Option("record_max_mb", float, 1024.0, "size of one recording file, MiB", min=0.01),
        Option("record_keep", int, 0, "recording files kept (0 = all)", min=0),
        Option("simulate", bool, False, "send simulated lag frames to this device from an "
               "in-process WIDAR simulator over UDP on 127.0.0.1 (a free port unless port is "
               "set); the accepted baselines, polarizations, ... shape what it sends"),
        Option("sim_rate", float, 200.0, "simulator: frames per second", min=1.0,
               max=1_000_000.0),
        Option("sim_baselines", int, 2, "simulator: baselines sent (1-2, 1-3, 2-3, ...) when "
               "baselines is empty", min=1, max=1000),
        Option("sim_lines", list, [], "simulator: spectral lines as CHANNEL:AMPLITUDE, e.g. "
               "64:1.0, 160:0.5 (empty: lags/4 at 1.0 and 5*lags/8 at 0.5)"),
        Option("sim_noise", float, 0.01, "simulator: noise relative to a line of amplitude 1",
               min=0.0),
        Option("sim_seed", int, 0, "simulator: random seed"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.sock: socket.socket | None = None
        #: recvmmsg over self._buf for the open socket (made at its first batch)
        self._mmsg: mmsg.Receiver | None = None
        self.bound_port = 0
        self.rcvbuf_granted = 0
        #: kernel drops of the sockets closed so far, and the inode of the open one (0: none),
        #: one attribute so that counters() on another thread never sees half an update
        self._drops: tuple[int, int] = (0, 0)
        #: datagrams read and processed at stop, after the device was asked to stop
        self.drained_at_stop = 0
        #: datagrams read but not processed, by reason (stop_deadline, reconnect)
        self.discarded: Counter[str] = Counter()
        #: monotonic time by which the stop drain must end (set by stop(timeout))
        self._stop_by = math.inf
        #: the in-process sender (simulate = yes), started at the first open
        self.sim: SimulatorHost[Any] | None = None
        #: what it sends (built now so a bad geometry is a configuration error)
        self.simulator: Any = None
        if self.settings.simulate:
            self.simulator = _make_simulator(self.settings)
            self.sim = SimulatorHost(self, self._start_sender, lambda sender: sender.stop())

    def _start_sender(self) -> Any:
        from .simulator import SenderThread

        s = self.settings
        host = s.bind if s.bind not in ("", "0.0.0.0") else "127.0.0.1"
        sim = self.simulator
        # timestamps advance in real time: one integration per frames_per_integration frames
        per = sim.frames_per_integration
        sim.integration_ns = max(1, int(per / s.sim_rate * 1e9))
        sim.start_ns = time.time_ns()
        # sent from the address it sends to (loopback by default): never a socket on 0.0.0.0
        sender = SenderThread(sim, (host, self.bound_port), s.sim_rate, burst=per, source=host)
        sender.start()
        log.info("widar %s: simulated correlator sending %d products to %s:%d at %g frames/s",
                 self.name, len(sim.products), host, self.bound_port, s.sim_rate)
        return sender


    def open(self) -> None:
        s = self.settings
        port = s.port if s.port is not None else 0 if self.sim is not None else DEFAULT_PORT
        if port == 0 and self.sim is not None and self.sim.current is not None:
            port = self.bound_port  # the simulator sends there: keep it across reconnects
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.rcvbuf_granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
            if s.rcvbuf:
                self.rcvbuf_granted = _request_rcvbuf(sock, s.rcvbuf)
                if self.rcvbuf_granted < s.rcvbuf:
                    log.warning("widar %s: receive buffer %d KiB granted of %d KiB requested;"
                                " raise it with sysctl -w net.core.rmem_max=%d", self.name,
                                self.rcvbuf_granted >> 10, s.rcvbuf >> 10, s.rcvbuf)
            sock.bind((s.bind, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot receive on {s.bind}:{port}: {exc.strerror or exc} "
                          "(is another program using the port? set port = ...)") from None
        sock.setblocking(False)
        self.sock = sock
        self.bound_port = sock.getsockname()[1]
        self._drops = (self._drops[0], os.fstat(sock.fileno()).st_ino)
        if s.record and self.recorder is None:
            self.recorder = RotatingRecorder(s.record, int(s.record_max_mb * (1 << 20)),
                                             s.record_keep)
        log.info("widar %s: receiving on %s:%d (rcvbuf %d KiB)", self.name, s.bind,
                 self.bound_port, self.rcvbuf_granted >> 10)
        if self.sim is not None:
            self.sim.get()

    def start(self) -> None:
        self._stop_by = math.inf
        super().start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop; the drain of the receive buffer keeps a fifth of ``timeout`` for the rest."""
        if timeout is not None:
            self._stop_by = time.monotonic() + 0.8 * timeout
        return super().stop(timeout)

    def poll(self) -> None:
        sock = self.sock
        assert sock is not None
        n = self._receive(sock)
        self.expire()
        if n < len(self._rows):
            linger = self.settings.linger
            if n and linger:
                # more are coming: let them gather, so the next read takes a whole batch
                # (decoding and assembly cost ~120 us a read whatever its size)
                time.sleep(linger)
                return
            deadline = self.assembler.next_deadline()
            wait = 0.1 if deadline is None else min(0.1, max(0.0005, deadline -
                                                             time.monotonic()))
            select.select([sock], [], [], wait)

    def _receive(self, sock: socket.socket) -> int:
        """Read up to one batch of queued datagrams and process them; returns how many."""
        if self.recorder is None and mmsg.available():
            mm = self._mmsg
            if mm is None or mm.sock is not sock:
                mm = self._mmsg = mmsg.Receiver(sock, self._buf)
            n = mm.receive()  # one system call for the whole batch, the GIL released
            if n:
                self.ingest(n, mm.lengths[:n])
            return n
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
        return n

    def _drain(self, sock: socket.socket) -> None:
        """At stop: process what the receive buffer still holds, until it is empty or the
        drain time is up; then read (bounded) and count what is left."""
        deadline = min(time.monotonic() + self.settings.stop_drain, self._stop_by)
        before = self.datagrams
        try:
            while time.monotonic() < deadline and self._receive(sock):
                pass
        finally:
            self.drained_at_stop += self.datagrams - before
        self._discard(sock, "stop_deadline")

    def _discard(self, sock: socket.socket, reason: str) -> None:
        """Read and count, without processing, what the buffer still holds.  Bounded: at most
        what a full buffer can hold (the smallest datagram costs the kernel more than 256
        bytes of it), in case a sender keeps it full."""
        recv = sock.recv_into
        row = self._rows[0]
        limit = 2 * max(self.rcvbuf_granted, 1 << 16) // 256 + len(self._rows)
        n = 0
        try:
            while n < limit:
                recv(row, 1)
                n += 1
        except OSError:  # BlockingIOError: empty; another error: nothing more to read
            pass
        if n:
            self.discarded[reason] += n
            log.warning("widar %s: %d datagrams in the receive buffer were not processed "
                        "(%s), counted in discarded.%s", self.name, n,
                        "stop drain time up" if reason == "stop_deadline" else
                        "socket reopened after an error", reason)

    def close(self) -> None:
        stopping = self.stopping
        if self.sim is not None and stopping:
            self.sim.release()  # the sender stops first: what it sent is all in the buffer
        sock = self.sock
        try:
            if sock is not None:
                if stopping:
                    self._drain(sock)
                else:
                    self._discard(sock, "reconnect")
        finally:
            self.flush_sets()  # after the drain: the drained frames complete pending sets
            if sock is not None:
                closed, inode = self._drops
                drops = _socket_drops(inode)  # before close: the kernel forgets them with it
                self._drops = (closed + max(0, drops), 0)
                sock.close()
                self.sock = None
                self._mmsg = None
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped (receive buffer full) on every socket this device has
        had, the open one included; -1 when /proc/net/udp cannot be read."""
        closed, inode = self._drops
        if not inode:
            return closed
        drops = _socket_drops(inode)
        return -1 if drops < 0 else closed + drops

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "port": self.bound_port, "rcvbuf": self.rcvbuf_granted,
                "kernel_drops": self.kernel_drops(), "drained_at_stop": self.drained_at_stop,
                **by_reason("discarded", self.discarded)}


def _socket_drops(inode: int) -> int:
    """The ``drops`` column of /proc/net/udp for the socket with this inode, or -1."""
    if not inode:
        return -1
    key = str(inode)
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 12 and parts[9] == key:
                    return int(parts[12])
    except (OSError, StopIteration, ValueError):
        pass
    return -1


def _make_simulator(s: Any) -> Any:
    """The simulator for a device's settings: its geometry, and products it accepts."""
    from .simulator import WidarSimulator, parse_lines

    try:
        lines = parse_lines(s.sim_lines) if s.sim_lines else None
        return WidarSimulator(
            s.baselines or s.sim_baselines, [int(b) for b in s.basebands] or [0],
            [int(b) for b in s.subbands] or [0], s.polarizations or ["AA", "BB"],
            max(1, s.phase_bins), s.lags, s.lags_per_frame, lines, s.sim_noise, seed=s.sim_seed)
    except ValueError as exc:  # a line outside the lag set, a bad line, no products
        raise OptionError("sim_lines" if "line" in str(exc) else "simulate",
                          f"simulate = yes: {exc}") from None


def _request_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes (forced if we may), return what the kernel granted."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:  # no CAP_NET_ADMIN: capped at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the bookkeeping size it reserved; half is the data capacity it gave
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
