"""Taking in measurements that crossed a boundary (MQTT, long-poll) as a local device's own.

A relayed measurement gets the relaying device as its ``source`` (so the pipeline's
accounting, sequence numbers and drop reasons belong to the device that pushed it), a
local topic, and keeps where it came from in ``meta`` (``origin_source``, ``origin_seq``;
the first hop's values survive further hops).  Wall-clock and device timestamps are kept:
they say when the data was measured, not when it arrived.
"""

from __future__ import annotations

from collections import deque

from .measurement import Measurement

__all__ = ["adopt", "Deduplicator"]


def adopt(m: Measurement, source: str, prefix: str = "") -> Measurement:
    """``m`` as measured by ``source``, on ``<prefix>.<topic>`` (or its own topic)."""
    meta = dict(m.meta) if m.meta else {}
    meta.setdefault("origin_source", m.source)
    meta.setdefault("origin_seq", m.seq)
    topic = f"{prefix}.{m.topic}" if prefix else m.topic
    return Measurement(source, topic, m.value, m.t_ns, m.unit, m.device_time, meta)


class Deduplicator:
    """Remembers the last ``window`` measurements by (source, seq, t_ns).

    At-least-once transports (MQTT QoS 1 after a reconnect) may deliver a message twice;
    a producer's sequence number plus its wall-clock stamp identify a measurement even across
    a restart of the producer (which starts its sequence numbers again at 0).
    """

    def __init__(self, window: int = 65536) -> None:
        self.window = window
        self._seen: set[tuple[str, int, int]] = set()
        self._order: deque[tuple[str, int, int]] = deque()
        self.duplicates = 0

    def seen(self, m: Measurement) -> bool:
        """True (and counted) if ``m`` was seen already; else remember it."""
        if m.seq < 0:
            return False  # no identity to compare
        key = (m.source, m.seq, m.t_ns)
        if key in self._seen:
            self.duplicates += 1
            return True
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.window:
            self._seen.discard(self._order.popleft())
        return False
