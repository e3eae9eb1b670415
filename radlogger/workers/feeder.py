"""The parent's sending end to one worker process.

A non-blocking ``AF_UNIX``/``SOCK_DGRAM`` socket *connected* to the child's input socket (so a
full child queue is ``EAGAIN`` and ``poll`` can wait for room, and a dead child is
``ECONNREFUSED``), replaced at every restart.  One message per run of consecutive
measurements that line up (:mod:`.batch`: one lag set per datagram cost the input stage
~27 us), else one per measurement; a message above ``max_datagram`` goes into a
shared-memory slot and a reference travels instead.  Without
``keep_trying`` nothing waits for long: at most ``send_wait`` once to ride out a burst, and not
again until a send succeeds, so a hung child costs one wait, not one per measurement.  Every
measurement not handed over is counted in ``undelivered`` by reason: ``peer_dead``,
``restarting`` (no child to send to), ``stopped``, ``would_block``, ``no_slot``,
``too_large``, ``encode_error``.

A caller that may wait (an endpoint's runner: its inbox then fills and the inbox's own policy
applies, e.g. the broker waits in block mode) passes ``keep_trying`` to :meth:`send_batch`: a
full queue (``EAGAIN``) or slot ring (``no_slot``) is then waited out -- the message is kept
and sent again once there is room -- for as long as ``keep_trying()`` is true, and only what is left
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
from .batch import batch_parts, runs
from .shm import SlotRing

__all__ = ["Feeder"]

_DEAD_PEER = {errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPIPE, errno.EBADF,
              errno.ECONNRESET}
#: a full queue or slot ring: worth waiting for when the caller may wait
_FULL = ("would_block", "no_slot")


class Feeder:
    """Sends measurements and control events; ``lock`` also guards the owner's hand-overs."""

    def __init__(self, max_datagram: int, send_wait: float, ring: SlotRing | None,
                 batch_items: int = 256) -> None:
        self.max_datagram = max_datagram
        #: most measurements in one message (see :mod:`.batch`)
        self.batch_items = batch_items
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
        return self._send_parts(parts, size, 1)

    def _send_parts(self, parts: list[Any], size: int, n: int) -> str | None:
        """Hand over one message of ``n`` measurements (a datagram, or a shared-memory slot
        and its reference); None when done, else the reason it was not."""
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
                slot = ref[0]
                parts = [messages.encode_ref(ref[0], size, ref[1])]
            reason = self._sendmsg(out, parts)
            if reason is None:
                self.sent += n
                if slot is not None:
                    self.shm_sent += n
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

    def wait_for_room(self, timeout: float, slot: bool = False) -> None:
        """Wait up to ``timeout`` until the child's queue has room (or it is gone); with
        ``slot``, until a shared-memory slot is free (the child frees them without a word,
        so that is polled every 0.5 ms, outside the lock)."""
        t0 = time.monotonic()
        ring = self.ring
        if slot and ring is not None:
            deadline = t0 + timeout
            while not ring.has_free() and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:
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
        ``keep_trying``, a full queue (or slot ring) is waited out while it returns True
        (nothing dropped).  Consecutive measurements that line up travel as one message
        (:mod:`.batch`), in order with those sent alone."""
        failed: Counter[str] = Counter()
        items = batch if isinstance(batch, list) else list(batch)
        limit = max(self.max_datagram, self.ring.slot_bytes if self.ring is not None else 0)
        for together, piece in runs(items, self.batch_items, limit):
            if together:
                try:
                    parts, size = batch_parts(piece)
                except messages.WireError:
                    size = limit + 1  # one of them cannot be encoded: each alone says which
                if size <= limit:
                    reason = self._deliver(parts, size, len(piece), keep_trying)
                    if reason is not None:
                        failed[reason] += len(piece)
                    continue
            for m in piece:
                try:
                    parts, size = messages.measurement_parts(m)
                except messages.WireError:
                    failed["encode_error"] += 1
                    continue
                reason = self._deliver(parts, size, 1, keep_trying)
                if reason is not None:
                    failed[reason] += 1
        if failed:
            self.undelivered.update(failed)
        return failed

    def _deliver(self, parts: list[Any], size: int, n: int,
                 keep_trying: Callable[[], bool] | None) -> str | None:
        reason = self._send_parts(parts, size, n)
        if reason in _FULL and keep_trying is not None:
            while keep_trying():
                self.wait_for_room(0.05, slot=reason == "no_slot")
                reason = self._send_parts(parts, size, n)
                if reason not in _FULL:
                    break
            else:  # once more: the child may be gone (the true reason), or have room
                reason = self._send_parts(parts, size, n)
        return reason

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
