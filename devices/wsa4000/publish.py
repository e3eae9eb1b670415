"""From parsed VRT packets to measurements on ``<name>.iq`` (the driver's publishing half).

Two shapes (option ``group``): one measurement per data packet, value (spp,); or, for SPP 1024
at line rate, one per run of packets of one read, value (k, spp) (:meth:`_publish_blocks`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from radlogger.measurement import Measurement, now_ns

from .vrt import DATA, IQ_STREAM, TRAILER_BITS, VRTPacket

__all__ = ["PacketPublisher"]

_FLAG_MASKS = [(name, (1 << e) | (1 << i)) for name, (e, i) in TRAILER_BITS.items()]


class PacketPublisher:
    """Mixin of :class:`~radlogger.devices.wsa4000.driver.WSA4000Device`: the state it
    reads and writes is the driver's own (declared here for the type checker)."""

    name: str
    settings: Any
    outlet: Any
    context: dict[str, Any]
    bad_packets: Counter[str]
    packets: int
    blocks: int
    gaps: int
    missing_packets: int
    _expect: int | None
    _pending_gap: int
    _remaining: int
    _topic: str
    _per_read: bool
    _static_meta: dict[str, Any]
    _flag_cache: dict[int, dict[str, bool]]

    def _handle(self, packets: list[VRTPacket]) -> None:
        """Publish the data packets of one read, one measurement each.  Why in runs of
        equal-size data packets: one numpy conversion per run (each value a row of the block),
        one arrival time and one merged context per run (SPP 1024, 128 packets per read: 6.2
        -> 2.2 us per packet).  A context packet ends a run: later packets carry it."""
        ctx = self.context
        run: list[VRTPacket] = []
        for p in packets:
            if p.ptype != DATA:
                if p.fields:
                    if run:
                        self._publish_run(run)
                        run = []
                    ctx.update(p.fields)
                continue
            if p.stream_id != IQ_STREAM:
                self.bad_packets["unknown_stream"] += 1
                continue
            if run and p.size != run[0].size:
                self._publish_run(run)
                run = []
            run.append(p)
        if run:
            self._publish_run(run)

    def _publish_run(self, run: list[VRTPacket]) -> None:
        out: list[Measurement] = []
        name, topic = self.name, self._topic
        samples = [p.samples for p in run]
        if self.settings.iq_format == "int16":
            values: Any = np.array(samples, dtype=np.int16)  # (n, spp, 2), native order
        else:
            values = np.array(samples, dtype=np.float32).view(np.complex64)[..., 0]
        base = dict(self.context)
        base.update(self._static_meta)
        if self._per_read:
            self._publish_blocks(run, values, base)
            return
        flag_cache = self._flag_cache
        bad = self.bad_packets
        t_ns = now_ns()  # one read, one arrival time
        for k, p in enumerate(run):
            count = p.count
            expect = self._expect
            if expect is not None and count != expect:
                gap = (count - expect) & 0xF
                self.gaps += 1
                self.missing_packets += gap
                bad["count_gap"] += 1
                self._pending_gap += gap
                # the lost packets belonged to the block in flight: without this a block that
                # lost one never "completes", no capture is requested and the driver idles
                # until the data timeout forces a reconnect
                if self._remaining > 0:
                    self._remaining = max(0, self._remaining - gap)
            self._expect = (count + 1) & 0xF
            trailer = p.trailer
            flags = flag_cache.get(trailer)
            if flags is None:
                flags = flag_cache[trailer] = {flag: trailer & mask == mask
                                               for flag, mask in _FLAG_MASKS}
            meta = base.copy()
            meta["packet_count"] = count
            meta.update(flags)
            if flags["sample_loss"]:
                bad["sample_loss"] += 1
            meta["gap"] = self._pending_gap
            self._pending_gap = 0
            self.packets += 1
            out.append(Measurement(name, topic, values[k], t_ns, "counts",
                                   p.ts_sec * 1_000_000_000 + p.ts_ps // 1000, meta))
            if self._remaining > 0:
                self._remaining -= 1
        self.outlet.push_many(out)  # one queue operation per run; drops counted there

    def _publish_blocks(self, run: list[VRTPacket], values: np.ndarray,
                        base: dict[str, Any]) -> None:
        """``group = read``: the run as few measurements as possible, each a (k, spp) block.

        Why: at SPP 1024 line rate (28,400 packets/s) the per-packet Python of every hop
        (driver, queue, broker, inboxes, fft, calibrate, store) was the whole budget of the
        GIL; a read of 1 MB is ~127 packets, so one measurement per read divides that cost by
        ~100 (bench_wsa4000 ``stream_line_rate_long``).  A block is cut where a packet-count
        gap or a change of trailer flags falls, so ``gap`` and the flags in ``meta`` hold for
        every row of it: ``gap`` counts the packets lost just before its first row.
        ``meta["packets"]`` is k and ``meta["device_times"]`` the VRT time of each row (int64
        ns); ``device_time`` is the first row's.  Queue and inbox drops count blocks: the
        packets a block held are counted by the consumers (``packets`` in their counters) and
        by :attr:`packets` here, so packets lost = packets here - packets at the store."""
        k = len(run)
        info = np.array([(p.count, p.trailer, p.ts_sec, p.ts_ps) for p in run], dtype=np.int64)
        counts = info[:, 0]
        trailers = info[:, 1]
        times = info[:, 2] * 1_000_000_000 + info[:, 3] // 1000
        expect = self._expect
        prev = np.empty(k, np.int64)
        prev[0] = counts[0] if expect is None else expect
        prev[1:] = (counts[:-1] + 1) & 0xF
        gaps = (counts - prev) & 0xF
        self._expect = int(counts[-1] + 1) & 0xF
        cuts = np.flatnonzero(gaps[1:] | (trailers[1:] != trailers[:-1])) + 1
        n_gaps = int(np.count_nonzero(gaps))
        bad = self.bad_packets
        if n_gaps:
            lost = int(gaps.sum())
            self.gaps += n_gaps
            self.missing_packets += lost
            bad["count_gap"] += n_gaps
        else:
            lost = 0
        if self._remaining > 0:  # block mode: lost packets belonged to the block in flight
            self._remaining = max(0, self._remaining - k - lost)
        name, topic, t_ns = self.name, self._topic, now_ns()
        out: list[Measurement] = []
        edges = [0, *cuts.tolist(), k]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            trailer = int(trailers[a])
            flags = self._flag_cache.get(trailer)
            if flags is None:
                flags = self._flag_cache[trailer] = {flag: trailer & mask == mask
                                                     for flag, mask in _FLAG_MASKS}
            if flags["sample_loss"]:
                bad["sample_loss"] += b - a
            meta = base.copy()
            meta["packet_count"] = int(counts[a])
            meta.update(flags)
            meta["gap"] = self._pending_gap + int(gaps[a])
            self._pending_gap = 0
            meta["packets"] = b - a
            meta["device_times"] = times[a:b]
            out.append(Measurement(name, topic, values[a:b], t_ns, "counts", int(times[a]),
                                   meta))
        self.packets += k
        self.blocks += len(out)
        self.outlet.push_many(out)
