"""A WSA4000 simulator: the real SCPI subset on TCP 37001 and the VRT stream on TCP 37000.

Threaded (blocking sockets, one thread per control client, one streamer): block captures and
line-rate streaming are ``sendall`` loops, which threads express plainly and which release the
GIL while the kernel copies.  What the instrument *does* (settings, errors, packets) is in
``instrument.py``; this module is its transport.  Any client that follows
``shared/protocols/wsa4000.md`` works against it: control first then data, queries answer
one line, set commands answer nothing, blank lines and unknown commands are tolerated (errors
queue for ``:SYSTEM:ERROR?``), block captures send the four context packets (one field each)
then PPB data packets.

Use from tests::

    with WSA4000Simulator(control_port=0, data_port=0, tones=[Tone(1e6, 0.5)]) as sim:
        ... connect to sim.control_port / sim.data_port ...

``stop()`` kills every connection at once, as a power cut would; ``start()`` again serves on
the same ports.  Everything received is recorded in :attr:`WSA4000Simulator.commands`.
The command line (``radloggerd simulate wsa4000``) is in ``simcli.py``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from .instrument import (
    REFLEVELS,
    RF_GAIN_DB,
    Instrument,
    InstrumentError,
    InstrumentState,
    Received,
)
from .scpi import DEFAULT_CONTROL_PORT, DEFAULT_DATA_PORT, parse_line
from .waveform import Tone

__all__ = ["WSA4000Simulator", "InstrumentState", "Received", "DEFAULT_CONTROL_PORT",
           "DEFAULT_DATA_PORT", "REFLEVELS", "RF_GAIN_DB"]

log = logging.getLogger(__name__)

_SEND_CHUNK = 1 << 20
_STREAM_CHUNK = 1 << 18  # smaller: at most this much is still delivered after a stop


class WSA4000Simulator(Instrument):
    """The simulated instrument; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", control_port: int = DEFAULT_CONTROL_PORT,
                 data_port: int = DEFAULT_DATA_PORT, tones: Iterable[Tone | str] = (),
                 noise: float = 1e-3, seed: int = 0, spectral_inversion: bool = False,
                 reflevel: float | None = None, stream_rate: float = 0.0, drop_every: int = 0,
                 ring_samples: int = 1 << 18, serial: str = "SIM00001",
                 firmware: str = "3.2.0-sim", data_wait: float = 2.0) -> None:
        super().__init__(tones, noise, seed, spectral_inversion, reflevel, drop_every,
                         ring_samples, serial, firmware)
        self.host = host
        self.control_port = control_port
        self.data_port = data_port
        self.stream_rate = stream_rate
        self.data_wait = data_wait
        self.connections = 0
        self.data_connections = 0
        self.bytes_sent = 0
        self._send_lock = threading.Lock()  # one writer on the data socket at a time
        self._data_cond = threading.Condition(threading.Lock())
        self._data_sock: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._stopping = threading.Event()
        self._stream_stop = threading.Event()  # of the current stream; a new one per stream
        self._stream_active = False  # what :TRACE:STREAM:STATUS? reports
        self._stream_gen = 0
        self._streamers: list[threading.Thread] = []
        self._stream_owner: int | None = None
        self.running = False

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> WSA4000Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen and serve; ports of 0 pick free ones, kept for a later restart."""
        if self.running:
            return
        self._stopping.clear()
        ctl = self._listen(self.control_port)
        try:
            data = self._listen(self.data_port)
        except OSError:
            ctl.close()
            raise
        self.control_port = ctl.getsockname()[1]
        self.data_port = data.getsockname()[1]
        self._listeners = [ctl, data]
        self._threads = [
            threading.Thread(target=self._accept_loop, args=(ctl, self._serve_control),
                             name="wsa-sim-control", daemon=True),
            threading.Thread(target=self._accept_loop, args=(data, self._register_data),
                             name="wsa-sim-data", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.running = True
        log.info("WSA4000 simulator on %s: control %d, data %d", self.host, self.control_port,
                 self.data_port)

    def stop(self, timeout: float = 5.0) -> None:
        """Drop every connection at once (like a power cut) and stop listening."""
        if not self.running:
            return
        self._stopping.set()
        self._stop_stream()
        for s in self._listeners:
            _kill(s)
        with self._lock:
            clients = list(self._clients)
        for s in clients:
            _kill(s)
        with self._data_cond:
            self._data_sock = None
            self._data_cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads + self._streamers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self._streamers = []
        with self._lock:
            self._lock_owner = None
            self._stream_owner = None
            self._stream_active = False
            self._clients.clear()
        self.running = False

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, port))
            s.listen(8)
        except OSError:
            s.close()
            raise
        return s

    def _accept_loop(self, listener: socket.socket, serve: Any) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was shut down by stop()
            if self._stopping.is_set():
                _kill(conn)
                return
            with self._lock:
                self._clients.add(conn)
            serve(conn)

    # ---------------------------------------------------------------- data port
    def _register_data(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(10.0)  # a client that stops reading for this long is dropped
        with self._data_cond:
            old, self._data_sock = self._data_sock, conn
            self.data_connections += 1
            self._data_cond.notify_all()
        if old is not None:
            self._stop_stream()
            _kill(old)

    def _take_data_sock(self) -> socket.socket | None:
        with self._data_cond:
            self._data_cond.wait_for(lambda: self._data_sock is not None or
                                     self._stopping.is_set(), self.data_wait)
            return self._data_sock

    def _drop_data_sock(self, sock: socket.socket) -> None:
        with self._data_cond:
            if self._data_sock is sock:
                self._data_sock = None
        _kill(sock)

    # ---------------------------------------------------------------- control port
    def _serve_control(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            cid = self.connections
        threading.Thread(target=self._control_main, args=(conn, cid),
                         name=f"wsa-sim-client{cid}", daemon=True).start()

    def _control_main(self, conn: socket.socket, cid: int) -> None:
        buf = b""
        try:
            while not self._stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    raw, _, buf = buf.partition(b"\n")
                    for parsed in parse_line(raw.decode("ascii", "replace")):
                        reply = self.execute(cid, parsed)
                        if reply is not None:
                            conn.sendall(reply.encode("ascii", "replace") + b"\n")
                if len(buf) > 65536:
                    self._error(-112, "Program mnemonic too long")
                    buf = b""
        except OSError:
            pass
        finally:
            self.release(cid)
            with self._lock:
                self._clients.discard(conn)
                stop_stream = self._stream_owner == cid
            if stop_stream:
                self._stop_stream()
            _kill(conn)

    def _send(self, sock: socket.socket, pieces: Iterable[bytes | memoryview]) -> None:
        batch: list[bytes | memoryview] = []
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= _SEND_CHUNK:
                sock.sendall(b"".join(batch))
                self.bytes_sent += size
                batch, size = [], 0
        if batch:
            sock.sendall(b"".join(batch))
            self.bytes_sent += size

    def inject_data(self, raw: bytes) -> bool:
        """Test hook: write raw bytes (e.g. garbage) to the data connection between packets.

        Not an instrument feature; it lets tests prove that a client survives a corrupted
        stream.  False when no data client is connected or a stream owns the connection.
        """
        with self._data_cond:
            sock = self._data_sock
        if sock is None:
            return False
        if not self._send_lock.acquire(timeout=5.0):  # a stream owns the socket
            return False
        try:
            sock.sendall(raw)
        except OSError:
            return False
        finally:
            self._send_lock.release()
        return True

    def _capture(self, cid: int) -> None:
        """``:TRACE:BLOCK:DATA?``: four context packets, then PPB data packets."""
        with self._lock:
            if self._lock_owner not in (None, cid):
                raise InstrumentError(-200, "Execution error; acquisition lock held by another "
                                      "client")
            if self._streaming():
                raise InstrumentError(-221, "Settings conflict; capture while streaming")
            s = self.state
        sock = self._take_data_sock()
        if sock is None:
            raise InstrumentError(-200, "Execution error; no data connection on the data port")
        with self._send_lock:
            with self._lock:
                ring = self.ring(s)
                t0 = time.time_ns() * 1000
                pieces = self._contexts(s, t0) + list(self._data_packets(s, ring, s.ppb, t0, 0,
                                                                         lossy=False))
                self.captures += 1
            try:
                self._send(sock, pieces)
            except OSError as exc:
                self._drop_data_sock(sock)
                raise InstrumentError(-200, f"Execution error; data connection lost: "
                                      f"{exc}") from None

    # ---------------------------------------------------------------- streaming
    def _streaming(self) -> bool:
        return self._stream_active

    def _start_stream(self, cid: int, raw_id: str) -> None:
        try:
            stream_id = int(float(raw_id)) & 0xFFFFFFFF
        except ValueError:
            raise InstrumentError(-222, f"Data out of range; stream id '{raw_id}'") from None
        with self._lock:
            if self._lock_owner not in (None, cid):
                raise InstrumentError(-200, "Execution error; acquisition lock held by another "
                                      "client")
            if self._streaming():
                raise InstrumentError(-221, "Settings conflict; already streaming")
        sock = self._take_data_sock()
        if sock is None:
            raise InstrumentError(-200, "Execution error; no data connection on the data port")
        stop = threading.Event()
        with self._lock:
            self._stream_gen += 1
            self._stream_stop = stop
            self._stream_active = True
            self._stream_owner = cid
            t = threading.Thread(target=self._stream_main,
                                 args=(sock, self.state, stream_id, stop, self._stream_gen),
                                 name="wsa-sim-stream", daemon=True)
            self._streamers = [x for x in self._streamers if x.is_alive()] + [t]
            t.start()

    def _stop_stream(self) -> None:
        """Stop producing at once.  Like the instrument, whatever was already produced is
        still delivered as the client reads it (at most one batch); nothing waits for that."""
        with self._lock:
            self._stream_stop.set()
            self._stream_active = False
            self._stream_owner = None

    def _stream_main(self, sock: socket.socket, s: InstrumentState, stream_id: int,
                     stop: threading.Event, gen: int) -> None:
        rate = self.stream_rate
        per_batch = max(1, min(256, _STREAM_CHUNK // (4 * s.spp)))
        # paced: send when about 1 ms of packets is due (at least one), not whenever one is.
        # Chasing the clock packet by packet cost 8,000 sends/s and ~0.2 cores at 28,400/s.
        burst = max(1, min(per_batch, int(rate * 0.001)))
        try:
            with self._send_lock:  # a previous stream may still be delivering its last batch
                with self._lock:
                    ring = self.ring(s)
                    t0 = time.time_ns() * 1000
                    head = self._contexts(s, t0, {"stream_start_id": stream_id})
                self._send(sock, head)
                sent = 0
                start = time.monotonic()
                while not stop.is_set():
                    n = per_batch
                    if rate > 0:
                        due = int((time.monotonic() - start) * rate) + 1 - sent
                        if due < burst:
                            stop.wait((sent + burst - (time.monotonic() - start) * rate) / rate)
                            continue
                        n = min(n, due)
                    with self._lock:
                        if self.drop_every:
                            pieces = list(self._data_packets(s, ring, n, t0, sent, lossy=True))
                        else:  # one pre-built buffer (instrument._data_block)
                            block = self._data_block(s, ring, n, t0, sent)
                    if self.drop_every:
                        self._send(sock, pieces)
                    else:
                        sock.sendall(block)
                        self.bytes_sent += block.nbytes
                    sent += n
        except OSError as exc:
            if not self._stopping.is_set() and not stop.is_set():
                self._error(-200, f"Execution error; stream ended, data connection lost: {exc}")
            self._drop_data_sock(sock)
        finally:
            with self._lock:
                if self._stream_gen == gen:
                    self._stream_active = False


def _kill(sock: socket.socket) -> None:
    for op in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            op()
        except OSError:
            pass
