"""The parent's sending end to one worker process.

A non-blocking ``AF_UNIX``/``SOCK_DGRAM`` socket *connected* to the child's input socket (so a
full child queue is ``EAGAIN`` and ``poll`` can wait for room, and a dead child is
``ECONNREFUSED``), replaced at every restart.  One measurement per datagram; one above
``max_datagram`` goes into a shared-memory slot and a reference travels instead.  Without
``keep_trying`` nothing waits for long: at most ``send_wait`` once to ride out a burst, and not
again until a send succeeds, so a hung child costs one wait, not one per measurement.  Every
measurement not handed over is counted in ``undelivered`` by reason: ``peer_dead``,
``restarting`` (no child to send to), ``stopped``, ``would_block``, ``no_slot``,
``too_large``, ``encode_error``.

A caller that may wait (an endpoint's runner: its inbox then fills and the inbox's own policy
applies, e.g. the broker waits in block mode) passes ``keep_trying`` to :meth:`send_batch`: a
full queue (``EAGAIN``) is then waited out -- the measurement is kept and sent again once
``poll`` says there is room -- for as long as ``keep_trying()`` is true, and only what is left
when it turns false is counted as ``would_block``.  The kernel's queue of a Unix datagram
socket is ``net.unix.max_dgram_qlen`` datagrams long (512 on most Linux systems; a container
may have less).
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..measurement import Measurement
from . import messages
from .shm import SlotRing

__all__ = ["Feeder"]

_DEAD_PEER = {errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPIPE, errno.EBADF,
              errno.ECONNRESET}


class Feeder:
    """Sends measurements and control events; ``lock`` also guards the owner's hand-overs."""

    def __init__(self, max_datagram: int, send_wait: float, ring: SlotRing | None) -> None:
        self.max_datagram = max_datagram
        self.send_wait = send_wait
        self.ring = ring
        self.lock = threading.Lock()
        self.closed_reason = "stopped"
        self.sent = 0
        self.shm_sent = 0
        self.undelivered: Counter[str] = Counter()
        self.control_sent = 0
        self.control_failed = 0
        #: waits for room in the child's full queue, and their total seconds
        self.full_waits = 0
        self.waited_s = 0.0
        self._out: socket.socket | None = None
        self._congested = False

    # ---------------------------------------------------------------- hand-over (lock held)
    def attach(self, sock: socket.socket) -> int:
        """Start sending to a new child (caller holds ``lock``); returns ``sent`` so far."""
        self._out = sock
        self._congested = False
        return self.sent

    def detach(self, reason: str) -> tuple[socket.socket | None, int]:
        """Stop sending (caller holds ``lock``); returns the old socket and ``sent``."""
        out, self._out = self._out, None
        self.closed_reason = reason
        return out, self.sent

    # ---------------------------------------------------------------- measurements
    def send(self, m: Measurement) -> str | None:
        """Hand ``m`` over; None when done, else the reason it was not (not counted here)."""
        try:
            parts, size = messages.measurement_parts(m)
        except messages.WireError:
            return "encode_error"
        with self.lock:
            out = self._out
            if out is None:
                return self.closed_reason
            slot = None
            if size > self.max_datagram:
                ring = self.ring
                if ring is None or size > ring.slot_bytes:
                    return "too_large"
                ref = ring.write(parts, size, 0.0 if self._congested else self.send_wait)
                if ref is None:
                    self._congested = True
                    return "no_slot"
                self.shm_sent += 1
                slot = ref[0]
                parts = [messages.encode_ref(ref[0], size, ref[1])]
            reason = self._sendmsg(out, parts)
            if reason is None:
                self.sent += 1
            elif slot is not None and self.ring is not None:
                self.ring.heads["state"][slot] = 0  # the reference never left
            return reason

    def _sendmsg(self, out: socket.socket, parts: list[Any]) -> str | None:
        for attempt in range(2):
            try:
                out.sendmsg(parts)
                self._congested = False
                return None
            except BlockingIOError:
                if attempt or not self.send_wait or self._congested:
                    self._congested = True
                    return "would_block"
                t0 = time.monotonic()
                _, writable, _ = select.select([], [out], [], self.send_wait)
                self.full_waits += 1
                self.waited_s += time.monotonic() - t0
                if not writable:
                    self._congested = True
                    return "would_block"
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    return "too_large"
                if exc.errno in _DEAD_PEER:
                    return "peer_dead"
                raise
        return "would_block"

    def wait_for_room(self, timeout: float) -> None:
        """Wait up to ``timeout`` until the child's queue has room (or it is gone)."""
        t0 = time.monotonic()
        with self.lock:  # the owner's hand-over (detach, close) waits for this short poll
            out = self._out
            if out is not None:
                try:
                    select.select([], [out], [], timeout)
                except (OSError, ValueError):
                    pass  # closed meanwhile: the next send says why
        self.full_waits += 1
        self.waited_s += time.monotonic() - t0

    def send_batch(self, batch: Iterable[Measurement],
                   keep_trying: Callable[[], bool] | None = None) -> Counter[str]:
        """Send each; returns the reasons of those not handed over (also counted).  With
        ``keep_trying``, a full queue is waited out while it returns True (nothing dropped)."""
        failed: Counter[str] = Counter()
        send = self.send
        for m in batch:
            reason = send(m)
            if reason == "would_block" and keep_trying is not None:
                while keep_trying():
                    self.wait_for_room(0.05)
                    reason = send(m)
                    if reason != "would_block":
                        break
                else:  # once more: the child may be gone (the true reason), or have room
                    reason = send(m)
            if reason is not None:
                failed[reason] += 1
        if failed:
            self.undelivered.update(failed)
        return failed

    # ---------------------------------------------------------------- control events
    def control(self, code: int, arg: int, wait: float) -> bool:
        """Send a control event, waiting up to ``wait`` for room: events must not be lost."""
        data = messages.encode_control(code, arg, time.time_ns())
        deadline = time.monotonic() + wait
        with self.lock:
            out = self._out
            while out is not None:
                try:
                    out.send(data)
                    self.control_sent += 1
                    return True
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    select.select([], [out], [], min(left, 0.05))
                except OSError:
                    break
        self.control_failed += 1
        return False
