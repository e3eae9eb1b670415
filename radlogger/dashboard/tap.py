"""The viewer tap: a lightweight endpoint on ``*`` that keeps what a live view shows.

It keeps the latest value of every topic, a short history of scalar topics, the latest array
of each product (spectra, lag spectra) reduced to at most ``points`` values, and nothing else.
It is built so that watching a run costs the pipeline little and never changes it:

* **decimated on the broker thread** (:meth:`ViewerTap.offer`): of each topic's batch it keeps
  the last measurement, and at most ``per_topic_hz`` per topic; the rest is counted as dropped
  with reason ``viewer_decimated`` at once, a dictionary look-up and a clock read per batch;
* **never waits**: backpressure does not apply to it (a finite source is never slowed, and
  never made lossy, by a viewer); its small inbox drops the oldest, counted under the same
  reason;
* **never creates demand**: :meth:`wants` says no, so lazy processing endpoints stay idle when
  only the viewer would see their output;
* **drops by design**: ``viewer_decimated`` is in :data:`radlogger.losses.BY_DESIGN`, so it is
  counted (``received == handled + dropped + pending`` holds) but not reported as a loss of
  the run's data.

Readers (the dashboard's event stream, ``radloggerd watch``) call :meth:`ViewerTap.view` from
other threads; it copies under a lock held only for the copy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..endpoint import Endpoint
from ..inbox import Inbox
from ..losses import VIEWER_DECIMATED
from ..measurement import Measurement
from ..products import PRODUCT_FIELDS
from ..stats import EndpointStats

__all__ = ["ViewerTap", "VARIANT_FIELDS", "summarize"]

#: metadata that tells products of one topic apart (WIDAR baselines and polarizations); an
#: array topic keeps one latest array per combination present
VARIANT_FIELDS = PRODUCT_FIELDS


class _ViewerStats(EndpointStats):
    """An inbox overflow here is decimation, not a loss: counted under ``viewer_decimated``."""

    def drop(self, reason: str, n: int = 1) -> None:
        super().drop(VIEWER_DECIMATED if str(getattr(reason, "value", reason)) == "inbox_full"
                     else reason, n)


def _scalar_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    if not meta:
        return {}
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in meta.items()
            if isinstance(v, (int, float, str, bool, np.generic)) and not isinstance(v, bytes)}


def _reduce(a: np.ndarray, points: int) -> list[float]:
    """At most ``points`` values; peaks survive (max of each group), as on a spectrum analyser."""
    if a.dtype.kind == "c":
        a = np.abs(a)
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size > points:
        k = -(-a.size // points)
        pad = (-a.size) % k
        if pad:
            a = np.concatenate([a, np.full(pad, a[-1])])
        a = a.reshape(-1, k).max(axis=1)
    return [round(float(x), 4) if np.isfinite(x) else 0.0 for x in a]


def summarize(m: Measurement, points: int = 512) -> dict[str, Any]:
    """A JSON-ready summary of one measurement: what a viewer needs, never the bulk."""
    v = m.value
    out: dict[str, Any] = {"t": m.t_ns / 1e9, "unit": m.unit, "meta": _scalar_meta(m.meta)}
    if isinstance(v, np.ndarray):
        out["shape"] = list(v.shape)
        out["dtype"] = str(v.dtype)
        if v.ndim == 1 and v.dtype.kind in "fiuc":
            out["array"] = _reduce(v, points)
        elif v.ndim == 2 and len(v) and v.dtype.kind in "fc" and m.meta and "packets" in m.meta:
            out["array"] = _reduce(v[-1], points)  # a block of packets: its newest row
    elif isinstance(v, (bool, np.bool_)):
        out["value"] = bool(v)
    elif isinstance(v, (int, float, np.integer, np.floating)):
        out["value"] = float(v) if np.isfinite(float(v)) else None
    elif isinstance(v, (bytes, bytearray, memoryview)):
        out["shape"] = [len(v)]
        out["dtype"] = "bytes"
    else:
        out["value"] = str(v)[:200]
    return out


def _variant(m: Measurement) -> tuple[Any, ...]:
    meta = m.meta
    return tuple(meta.get(f) for f in VARIANT_FIELDS) if meta else ()


def _last_per_variant(batch: list[Measurement], scan: int = 32) -> list[Measurement]:
    """The last measurement of each product among the batch's last ``scan`` (a topic carrying
    several products, WIDAR baselines, shows all of them, not only the one sent last)."""
    seen: dict[tuple[Any, ...], Measurement] = {}
    for m in batch[: -scan - 1: -1]:
        seen.setdefault(_variant(m), m)
    return list(reversed(seen.values()))


class ViewerTap(Endpoint):
    """Latest value per topic, short scalar histories, latest arrays per product."""

    kind = "viewer"
    summary = "live view tap (dashboard, watch): latest values, decimated"

    def __init__(self, name: str = "viewer", per_topic_hz: float = 10.0, history: int = 300,
                 points: int = 512, recent: int = 10, inbox_size: int = 256) -> None:
        super().__init__(name, {"subscribe": ["*"], "mode": "thread", "inbox_size": inbox_size,
                                "inbox_policy": "drop_oldest", "batch_max": inbox_size})
        self.stats = _ViewerStats(name)
        self.inbox = Inbox(inbox_size, self.stats, drop_oldest=True)
        self.min_gap = 1.0 / per_topic_hz if per_topic_hz > 0 else 0.0
        self.history = history
        self.points = points
        self.recent_n = recent
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._arrays: dict[str, dict[str, dict[str, Any]]] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._counts: dict[str, int] = {}
        self._seq = 0

    # ---------------------------------------------------------------- the broker's side
    def wants(self, topic: str) -> bool:
        return False  # a viewer never wakes a lazy processing chain

    def offer(self, batch: list[Measurement], wait: bool = False) -> None:
        """Keep the batch's last measurement, at most ``per_topic_hz`` per topic; never wait."""
        if batch is self._last_batch:
            return
        self._last_batch = batch
        n = len(batch)
        stats = self.stats
        stats.received += n
        last = batch[-1]
        topic = last.topic
        counts = self._counts
        counts[topic] = counts.get(topic, 0) + n  # broker thread only: exact per-topic totals
        now = time.monotonic()
        if now < self._next.get(topic, 0.0):
            stats.drop(VIEWER_DECIMATED, n)
            return
        self._next[topic] = now + self.min_gap
        keep = _last_per_variant(batch) if n > 1 else batch
        if n > len(keep):
            stats.drop(VIEWER_DECIMATED, n - len(keep))
        self.inbox.put(keep, None)

    # ---------------------------------------------------------------- the tap's own thread
    def handle_batch(self, batch: list[Measurement]) -> None:
        summaries = [(m, summarize(m, self.points)) for m in batch]
        with self._lock:
            self._seq += 1
            for m, s in summaries:
                topic = m.topic
                s["source"] = m.source
                self._latest[topic] = s
                if "array" in s:
                    meta = s["meta"]
                    variant = "/".join(str(meta[f]) for f in VARIANT_FIELDS if f in meta)
                    self._arrays.setdefault(topic, {})[variant] = s
                elif isinstance(s.get("value"), float):
                    series = self._series.get(topic)
                    if series is None:
                        series = self._series[topic] = deque(maxlen=self.history)
                    series.append((s["t"], s["value"]))
                if "array" not in s:
                    recent = self._recent.get(topic)
                    if recent is None:
                        recent = self._recent[topic] = deque(maxlen=self.recent_n)
                    recent.append({k: s[k] for k in ("t", "value", "meta") if k in s})

    def counters(self) -> dict[str, int | float]:
        return {"topics": len(self._latest), "updates": self._seq}

    # ---------------------------------------------------------------- readers
    def view(self, since: float = 0.0, arrays: bool = True) -> dict[str, Any]:
        """What viewers show, JSON-ready: per topic the count seen, the latest summary (arrays
        only when newer than ``since``), scalar histories and recent values."""
        counts = dict(self._counts)
        with self._lock:
            topics = {}
            for topic, s in self._latest.items():
                entry = {k: v for k, v in s.items() if k != "array"}
                entry["count"] = counts.get(topic, 0)
                topics[topic] = entry
            series = {t: [p for p in d if p[0] > since] for t, d in self._series.items()}
            recent = {t: list(d) for t, d in self._recent.items()}
            products = {}
            if arrays:
                products = {t: {v: s for v, s in d.items() if s["t"] > since}
                            for t, d in self._arrays.items()}
        return {"topics": topics, "series": series, "recent": recent,
                "arrays": {t: d for t, d in products.items() if d}}
