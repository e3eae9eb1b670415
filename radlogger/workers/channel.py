"""The parent's end of the channel to a worker process: datagram sockets and shared memory.

In a private temporary directory, ``AF_UNIX``/``SOCK_DGRAM`` sockets: ``in.sock``, bound by
the child and fed through :class:`.feeder.Feeder` (connected anew for every incarnation);
``up.sock``, bound here, the child's text messages (:mod:`.messages`); ``ret.sock``, bound
here, the measurements the child forwards.  Two shared-memory slot rings (:mod:`.shm`), one
per direction, carry what exceeds ``max_datagram``; only a reference travels on the socket,
so order is kept.  Nothing is pickled: measurements are :mod:`radlogger.wire` frames.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

from ..measurement import Measurement
from ..wire import WireError
from . import messages
from .feeder import Feeder
from .shm import SlotRing

__all__ = ["Channel"]


class Channel:
    """Sockets, rings and the feeder of one worker; survives the worker's restarts."""

    def __init__(self, max_datagram: int, send_wait: float, shm_slots: int,
                 shm_slot_bytes: int) -> None:
        self.max_datagram = max_datagram
        self.shm_slots, self.shm_slot_bytes = shm_slots, shm_slot_bytes
        self.feeder = Feeder(max_datagram, send_wait, None)
        self.dir = ""
        self.up: socket.socket | None = None
        self.ret: socket.socket | None = None
        self.down_ring: SlotRing | None = None
        self.up_ring: SlotRing | None = None

    def open(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="radlogger-worker-")
        self.up = self._bind("up.sock")
        self.ret = self._bind("ret.sock")
        self.down_ring = SlotRing(self.shm_slots, self.shm_slot_bytes, create=True)
        self.feeder.ring = self.down_ring
        self.up_ring = SlotRing(self.shm_slots, self.shm_slot_bytes, create=True)

    def _bind(self, name: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(os.path.join(self.dir, name))
        s.setblocking(False)
        return s

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.ret, self.up) if s is not None]

    def child_spec(self) -> dict[str, Any]:
        """The child's half: socket paths and ring names (plain values, sent as JSON)."""
        assert self.down_ring is not None and self.up_ring is not None
        ring = {"slots": self.shm_slots, "slot_bytes": self.shm_slot_bytes}
        return {"in": os.path.join(self.dir, "in.sock"), "up": os.path.join(self.dir, "up.sock"),
                "ret": os.path.join(self.dir, "ret.sock"),
                "down_ring": {**ring, "name": self.down_ring.name},
                "up_ring": {**ring, "name": self.up_ring.name},
                "max_datagram": self.max_datagram}

    def renew(self) -> None:
        """Before a new incarnation: no stale input socket, every slot free."""
        path = os.path.join(self.dir, "in.sock")
        if os.path.exists(path):
            os.unlink(path)
        assert self.down_ring is not None and self.up_ring is not None
        self.down_ring.reset()
        self.up_ring.reset()

    def connect(self) -> socket.socket:
        """A non-blocking socket connected to the child's ``in.sock`` (raises OSError)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        try:
            s.connect(os.path.join(self.dir, "in.sock"))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def messages(self) -> Iterator[tuple[str, int, str]]:
        """The child's text messages waiting now: (kind, incarnation, body)."""
        while self.up is not None:
            try:
                data = self.up.recv(65536)
            except OSError:  # BlockingIOError: drained
                return
            parsed = messages.parse_message(data)
            if parsed is not None:
                yield parsed

    def results(self) -> Iterator[Measurement | WireError]:
        """The measurements the child forwarded, waiting now (a bad datagram as its error;
        a batch is many)."""
        while self.ret is not None:
            try:
                data = self.ret.recv(max(self.max_datagram, 1024))
            except OSError:  # BlockingIOError: drained
                return
            try:
                yield from messages.read_measurements(data, self.up_ring)
            except WireError as exc:
                yield exc

    def close(self, out: socket.socket | None = None) -> None:
        """Close every socket (and ``out``, the last input connection), unlink the rings."""
        for sock in (out, self.up, self.ret):
            if sock is not None:
                sock.close()
        self.up = self.ret = None
        for ring in (self.down_ring, self.up_ring):
            if ring is not None:
                ring.close(unlink=True)
        self.down_ring = self.up_ring = self.feeder.ring = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""
