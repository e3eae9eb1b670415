"""The producer-side linger: at low rates the device thread publishes its small batches itself.

At 1,000 measurements/s the device thread is awake once per measurement anyway; the broker
woke ~0.6 times per measurement on top (its linger ticks) at 55-80 us of CPU each.  While the
broker *watches* (it drained a small batch last time), every push calls :meth:`on_put` on the
producer's thread, after the append (the queue's cold path: ``_sleeping`` is set, so the hot
path of a high-rate queue is unchanged).  The batch is due when waiting for the next push
would make its oldest item older than ``linger``: ``age(oldest) + gap >= linger``, ``gap``
being the time since the previous push (any producer's).  Then the producer drains and
publishes it under the broker's gate (one consumer at a time, drain and publish atomic, so
order is kept), and the inline endpoint batches run right there (radlogger.runners, same
budget guard): at 1,000/s batches of 2 with no broker and no endpoint wake-up; a slower
stream (gap >= linger) is published at once, as batches of one.

Guards ("no device can take the others down"):

* only small batches (fewer than ``LINGER_ITEMS``): a producer that finds more queued hands
  the queue back to the broker (rings it and stops watching); high rates stay with the broker;
* with backpressure (``wait_for_room``: a publish may wait for room in an inbox) only a
  producer that waits for room itself (a finite source) publishes; a live one rings the broker;
  never while stopping;
* the gate is only tried, never waited for: a producer finding another consumer publishing
  goes back to its read at once (the other, or the next push, or the broker, takes the item).

The deadline when producers go quiet (a device blocked on a slow read): the watching broker
sleeps ``WATCH`` lingers at a time, never rung by a push, and publishes whatever is older
than ``linger`` when it wakes; so an item waits at most about ``(WATCH + 1) * linger``.  A
watch tick that finds the queue empty and no push for a whole tick goes back to sleeping on
the queue (an idle pipeline costs no CPU).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["ProducerLinger", "WATCH"]

log = logging.getLogger(__name__)

#: the watching broker's tick, in lingers (the quiet-producer deadline is about WATCH + 1)
WATCH = 4


class ProducerLinger:
    """The watch state of one broker and the hook its queue calls on producers' pushes."""

    def __init__(self, broker: Broker, limit: int) -> None:
        self.broker = broker
        self.limit = limit  # LINGER_ITEMS: more than this queued goes to the broker
        self.watching = False
        #: monotonic time of the previous push, and of the oldest queued item (approximate
        #: with several producers racing: it only decides when a batch is due)
        self.last_push = 0.0
        self.oldest_at = 0.0
        #: batches the producers published themselves
        self.batches = 0
        # the broker's watch sleep: an acquire with a timeout (the cheapest timed sleep), released
        # to ring it (a hand-over, a stop)
        self._bell = threading.Lock()
        self._bell.acquire()

    # ------------------------------------------------------------------ broker side
    def watch(self) -> None:
        """The broker stops sleeping on the queue and lets producers publish."""
        now = time.monotonic()
        self.oldest_at = now
        self.watching = True
        q = self.broker.queue
        q.on_put = self.on_put
        q._sleeping = True  # noqa: SLF001 - the queue's "tell me about puts" flag

    def unwatch(self) -> None:
        self.watching = False
        q = self.broker.queue
        q._sleeping = False  # noqa: SLF001 - before on_put: a racing put sets the event at worst
        q.on_put = None

    def nap(self, seconds: float) -> bool:
        """The broker's watch sleep; True if it was rung."""
        return self._bell.acquire(True, seconds)

    def ring(self) -> None:
        try:
            self._bell.release()
        except RuntimeError:
            pass  # rung already

    def overdue(self, linger: float) -> bool:
        """Whether the queue's oldest item waited ``linger`` or more (a producer went quiet)."""
        return bool(len(self.broker.queue)) and time.monotonic() - self.oldest_at >= linger

    def quiet_for(self, seconds: float) -> bool:
        return time.monotonic() - self.last_push >= seconds

    # ------------------------------------------------------------------ producer side
    def on_put(self, waits: bool) -> None:
        """On a producer's thread, after its item was appended (see the module docstring);
        ``waits``: the producer waits for room (a finite source)."""
        now = time.monotonic()
        gap = now - self.last_push
        self.last_push = now
        broker = self.broker
        n = len(broker.queue)
        if n <= 1:
            self.oldest_at = now
        if n >= self.limit:
            self.unwatch()  # a batch forms by itself: back to the broker
            self.ring()
            return
        if broker.wait_for_room and not waits:
            if n == 1:
                self.ring()  # a live producer never waits in a publish: the broker takes it
            return
        if now - self.oldest_at + gap < broker.linger:
            return
        broker.publish_here(self.limit)

