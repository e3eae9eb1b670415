"""Replay a raw frame recording: as a device in the pipeline, or to a UDP destination.

The replay device runs the recorded datagrams through exactly the validation and assembly of
the live driver (``LagSetDevice``), so a recording reproduces the live lag sets, bad frame
counts included.  ``speed`` paces it as the ``replay`` device does: 1 = the recorded timing
(the pcap arrival times), 10 = ten times faster, 0 = as fast as the pipeline takes them
(``rate``, frames per second, is the deprecated older spelling).  ``restamp`` rewrites the
frames' timestamps to wall-clock time (all shifted by the same offset, so the frames of a lag
set still agree) and their checksums; only frames that were
valid are rewritten, so a corrupt frame stays corrupt.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from radlogger.device import DeviceDone
from radlogger.options import Option

from .frames import HEADER_BYTES, MAX_LOG2_LAGS, OK, fix_checksums, validate
from .lagdevice import LagSetDevice
from .recording import read_frames, recording_files
from .udpsend import sender_socket

__all__ = ["WidarReplayDevice", "Restamper", "replay_udp"]

log = logging.getLogger(__name__)


class Restamper:
    """Shifts frame timestamps so the first good frame lands at the wall-clock start time."""

    def __init__(self) -> None:
        self.offset: int | None = None

    def rewrite(self, rows: np.ndarray, lengths: np.ndarray) -> None:
        """Rewrite timestamps and checksums of the valid frames in ``rows`` (B, W), in place."""
        lengths = np.asarray(lengths, np.int64)
        for length in np.unique(lengths).tolist():
            lags = (length - HEADER_BYTES) // 8
            if lags < 1 or lags & (lags - 1) or lags > 1 << MAX_LOG2_LAGS \
                    or length > rows.shape[1]:
                continue  # cannot be a valid frame: leave it as it is
            sel = np.flatnonzero(lengths == length)
            block = rows[sel, :length]
            good = sel[validate(block, lengths[sel], lags) == OK]
            if not len(good):
                continue
            frames = np.ascontiguousarray(rows[good, :length])
            words = frames.view(">u4")
            ts = words[:, 4].astype(np.int64) << 32 | words[:, 5].astype(np.int64)
            if self.offset is None:
                self.offset = time.time_ns() - int(ts.min())
            ts += self.offset
            words[:, 4] = ts >> 32
            words[:, 5] = ts & 0xFFFFFFFF
            rows[good, :length] = fix_checksums(frames)


_Batch = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _batches(paths: list[str], width: int, batch: int) -> Iterator[_Batch]:
    """Recorded datagrams as (rows (B, width) uint8, true lengths, arrival ns, count)."""
    rows = np.zeros((batch, width), np.uint8)
    lengths = np.zeros(batch, np.int64)
    arrivals = np.zeros(batch, np.int64)
    n = 0
    for arrival, orig, data in read_frames(paths):
        arrivals[n] = arrival
        k = min(len(data), width)
        rows[n, :k] = np.frombuffer(data, np.uint8, k)
        lengths[n] = orig
        n += 1
        if n == batch:
            yield rows, lengths, arrivals, n
            n = 0
    if n:
        yield rows, lengths, arrivals, n


class WidarReplayDevice(LagSetDevice):
    kind = "widar_replay"
    summary = "replays a WIDAR frame recording (pcap) through lag-set assembly"
    options = LagSetDevice.options + (
        Option("path", str, None, "recording: a pcap file, a glob, or the record = base name "
               "of a rotated recording", required=True),
        Option("speed", float, 1.0, "1 = recorded timing (pcap arrival times), 10 = ten times "
               "faster, 0 = as fast as the pipeline takes it (as replay's speed)", min=0.0),
        Option("rate", float, None, "deprecated, use speed: frames per second (0 = as fast "
               "as possible)", min=0.0),
        Option("restamp", bool, False, "rewrite timestamps (and checksums) to wall-clock time"),
        Option("loop", bool, False, "start again at the end (use with restamp, or the repeated"
               " lag sets are counted as late)"),
    )

    finite_when = "unless loop = yes"

    @property
    def finite(self) -> bool:
        return not self.settings.loop

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self._files: list[str] = []
        self._it: Iterator[_Batch] | None = None
        self._current: _Batch | None = None
        self._first_ns: int | None = None  # arrival of the first frame played (speed)
        if self.settings.rate is not None:
            log.warning("device %s: widar_replay option rate is deprecated: use speed (1 = "
                        "recorded timing, 0 = as fast as possible)%s", name,
                        "; rate = 0 is speed = 0" if not self.settings.rate else "")
        self._cursor = 0
        self._sent = 0
        self._t0 = 0.0
        self._restamp = Restamper()

    def open(self) -> None:
        self._files = recording_files(self.settings.path)
        if not self._files:
            raise FileNotFoundError(f"no recording matches path = {self.settings.path}")
        self._start()

    def _start(self) -> None:
        self._it = _batches(self._files, self.frame_bytes, len(self._rows))
        self._current = None
        self._restamp = Restamper()
        rate = self.settings.rate
        self._t0 = time.monotonic() - (self._sent / rate if rate else 0.0)
        self._first_ns = None

    def _due(self, arrivals: np.ndarray, lo: int, n: int) -> tuple[int, float]:
        """Frames of the current batch due now, and else how long to wait for the next."""
        s, now = self.settings, time.monotonic()
        if s.rate is not None:  # deprecated: frames per second
            if not s.rate:
                return n - lo, 0.0
            due = int((now - self._t0) * s.rate) - self._sent
            return min(due, n - lo), (1 - due) / s.rate
        if not s.speed:
            return n - lo, 0.0
        if self._first_ns is None:
            self._first_ns, self._t0 = int(arrivals[lo]), now
        limit = self._first_ns + (now - self._t0) * s.speed * 1e9
        due = int(np.searchsorted(arrivals[lo:n], limit, side="right"))
        if not due and arrivals[lo] <= limit:  # arrival times out of order: play on
            due = 1
        return due, (float(arrivals[lo]) - limit) / s.speed / 1e9

    def poll(self) -> None:
        if self._current is None or self._cursor >= self._current[3]:
            assert self._it is not None
            try:
                self._current = next(self._it)
            except StopIteration:
                if self.settings.loop:
                    self._start()
                    return
                self.flush_sets()
                raise DeviceDone from None
            self._cursor = 0
        rows, lengths, arrivals, n = self._current
        lo = self._cursor
        due, wait = self._due(arrivals, lo, n)
        if due <= 0:
            self.wait(min(0.1, max(0.0005, wait)))
            self.expire()
            return
        k = min(due, n - lo)
        self._cursor = lo + k
        self._buf[:k] = rows[lo:lo + k]
        lens = lengths[lo:lo + k].copy()
        if self.settings.restamp:
            self._restamp.rewrite(self._buf[:k], lens)
        self.ingest(k, lens)
        self._sent += k
        self.expire()

    def close(self) -> None:
        self.flush_sets()
        self._it = None
        self._current = None


def replay_udp(path: str, dest: tuple[str, int], rate: float = 0.0, restamp: bool = False,
               stop: threading.Event | None = None, frames: int = 0, loop: bool = False,
               burst: int = 64, source: str | None = None) -> int:
    """Send a recording's datagrams to ``dest`` at ``rate`` frames/s; returns frames sent.

    The socket is bound to ``source`` (default: the address the route to ``dest`` uses)."""
    files = recording_files(path)
    if not files:
        raise FileNotFoundError(f"no recording matches {path}")
    stop = stop or threading.Event()
    sent = 0
    t0 = time.monotonic()
    with sender_socket(dest, source) as sock:
        while True:
            stamper = Restamper()
            chunk: list[tuple[int, bytes]] = []
            for _, orig, data in read_frames(files):
                chunk.append((orig, data))
                if len(chunk) < burst:
                    continue
                sent = _send_chunk(sock, dest, chunk, stamper if restamp else None, sent,
                                   rate, t0, stop, frames)
                chunk = []
                if stop.is_set() or (frames and sent >= frames):
                    return sent
            if chunk:
                sent = _send_chunk(sock, dest, chunk, stamper if restamp else None, sent,
                                   rate, t0, stop, frames)
            if not loop or stop.is_set() or (frames and sent >= frames):
                return sent


def _send_chunk(sock: socket.socket, dest: tuple[str, int], chunk: list[tuple[int, bytes]],
                stamper: Restamper | None, sent: int, rate: float, t0: float,
                stop: threading.Event, frames: int) -> int:
    if rate:
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0 and stop.wait(ahead):
            return sent
    datagrams = [data for _, data in chunk]
    if stamper is not None:
        width = max(len(d) for d in datagrams)
        rows = np.zeros((len(chunk), width), np.uint8)
        for i, d in enumerate(datagrams):
            rows[i, :len(d)] = np.frombuffer(d, np.uint8)
        # a capture cut short (orig > captured) is not a whole frame: never rewritten
        lens = np.array([len(d) if orig == len(d) else 0 for orig, d in chunk], np.int64)
        stamper.rewrite(rows, lens)
        datagrams = [rows[i, :len(d)].tobytes() for i, d in enumerate(datagrams)]
    for data in datagrams:
        if frames and sent >= frames:
            break
        sock.sendto(data, dest)
        sent += 1
    return sent
