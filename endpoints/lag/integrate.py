"""Integrate K consecutive lag sets or spectra, or T seconds of them, per product (step 4).

Per product (topic plus the product metadata: stations, baseband, sub-band, polarization,
phase bin) the arrays are summed in complex128/float64 (K can be large) and published as their
mean (or sum) when K inputs were added, or when an input arrives T seconds (device time, or
wall-clock time with ``clock = wall``) after the first one of the integration; that input
starts the next integration.  With both set, whichever comes first closes it.

The output keeps the first input's timestamps and adds ``integrated`` (inputs summed),
``t_end`` (the last input's time, ns), ``incomplete`` (inputs that had missing or flagged
frames) and ``closed_by`` (count, time, flush).

Control: a measurement on a topic ending in ``.control`` with value ``flush`` publishes every
partial integration; ``reset`` discards them.  At stop the pipeline flushes processing
endpoints while its queue is still open, so partial integrations are published then
(``closed_by = flush``), also from an ``isolated`` pipeline process (its endpoint waits for the
flushed results to come back); only what is left after that (a missed deadline) is counted in
``partial_discarded``.

Batched: each product's inputs in a batch are stacked and summed with one numpy reduction per
integration segment.  Lazy (``radlogger.processing``): inputs whose output nothing uses are
only counted in ``skipped``; control measurements are always acted on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError
from radlogger.processing import ProcessingEndpoint

from .common import group_by, product_of

__all__ = ["IntegrateEndpoint"]


class _Acc:
    __slots__ = ("first", "sum", "n", "t0", "t_end", "incomplete")

    def __init__(self, first: Measurement, shape: tuple[int, ...], dtype: np.dtype,
                 t0: int) -> None:
        self.first = first
        self.sum = np.zeros(shape, np.complex128 if dtype.kind == "c" else np.float64)
        self.n = 0
        self.t0 = t0
        self.t_end = t0
        self.incomplete = 0


def _incomplete(m: Measurement) -> bool:
    meta = m.meta or {}
    return meta.get("complete") is False or bool(meta.get("flagged"))


class IntegrateEndpoint(ProcessingEndpoint):
    kind = "integrate"
    summary = "integrates K lag sets/spectra or T seconds of them per product"
    output_default = "{quantity}_int"  # widar.spectrum -> widar.spectrum_int
    accepts = ("spectrum*", "lagset*")
    options = (
        Option("count", int, 0, "K: inputs per integration (0 = by time only)", min=0),
        Option("seconds", float, 0.0, "T: seconds per integration (0 = by count only)",
               min=0.0),
        Option("clock", str, "device", "time base of seconds: the device's timestamps, or "
               "wall-clock", choices=("device", "wall")),
        Option("average", bool, True, "publish the mean (no: the sum)"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        if not s.count and not s.seconds:
            raise OptionError("count", "integrate needs count = K or seconds = T (or both)")
        self._acc: dict[tuple[Any, ...], _Acc] = {}
        self.integrations = 0
        self.partial_discarded = 0

    def _time(self, m: Measurement) -> int:
        if self.settings.clock == "device" and isinstance(m.device_time, (int, float)):
            return int(m.device_time)
        return m.t_ns

    def wants(self, topic: str) -> bool:
        """Control topics are commands, always worth sending; data as for any processor."""
        return topic.endswith(".control") or super().wants(topic)

    def handle_batch(self, batch: list[Measurement]) -> None:
        data = []
        for m in batch:
            if m.topic.endswith(".control"):
                self._control(str(m.value))
            else:
                data.append(m)
        good = []
        for m in self.demanded(data):
            if not isinstance(m.value, np.ndarray) or m.value.dtype.kind not in "biufc":
                self.item_failed(m, ValueError(f"{m.topic}: integrate needs numeric arrays, "
                                               f"got {type(m.value).__name__}"))
            else:
                good.append(m)
        for key, items in group_by(good, product_of).items():
            out_topic = self.out_topic(items[0].topic)
            for shape, run in group_by(items, lambda m: m.value.shape).items():
                self._add(key + (shape,), out_topic, run)

    def _add(self, key: tuple[Any, ...], out_topic: str, items: list[Measurement]) -> None:
        s = self.settings
        k, span = s.count, int(s.seconds * 1e9)
        values = np.concatenate([m.value.reshape(-1) for m in items]).reshape(
            len(items), *items[0].value.shape)
        if s.clock == "device":
            times = np.array([int(m.device_time) if isinstance(m.device_time, (int, float))
                              else m.t_ns for m in items], np.int64)
        else:
            times = np.array([m.t_ns for m in items], np.int64)
        bad = np.array([_incomplete(m) for m in items])
        i, n = 0, len(items)
        while i < n:
            acc = self._acc.get(key)
            if acc is None:
                acc = self._acc[key] = _Acc(items[i], values.shape[1:], values.dtype,
                                            int(times[i]))
            j = n if not k else min(n, i + k - acc.n)
            if span:
                over = np.flatnonzero(times[i:j] >= acc.t0 + span)
                if len(over):
                    j = i + int(over[0])
                    if j == i:  # this input starts the next integration
                        self._close(key, out_topic, "time")
                        continue
            acc.sum += values[i:j].sum(axis=0)
            acc.n += j - i
            acc.t_end = int(times[j - 1])
            acc.incomplete += int(bad[i:j].sum())
            i = j
            if k and acc.n >= k:
                self._close(key, out_topic, "count")

    def _close(self, key: tuple[Any, ...], out_topic: str, why: str) -> None:
        acc = self._acc.pop(key)
        first = acc.first
        value = acc.sum / acc.n if self.settings.average else acc.sum
        value = value.astype(np.complex64 if value.dtype.kind == "c" else np.float32)
        self.integrations += 1
        self.publish(first.derive(self.name, out_topic, value, first.unit, {
            "integrated": acc.n, "t_end": acc.t_end, "incomplete": acc.incomplete,
            "closed_by": why}))

    def _control(self, command: str) -> None:
        if command == "flush":
            for key in list(self._acc):
                self._close(key, self.out_topic(self._acc[key].first.topic), "flush")
        elif command == "reset":
            self.partial_discarded += len(self._acc)
            self._acc.clear()

    def on_control(self, command: str, arg: int = 0) -> None:
        """Control events in a pipeline process (radlogger.workers): flush or reset."""
        self._control(command)

    def counters(self) -> dict[str, int | float]:
        return {**super().counters(), "integrations": self.integrations,
                "partial": len(self._acc), "partial_discarded": self.partial_discarded}

    def partial(self) -> int:
        """Integrations in progress."""
        return len(self._acc)

    def flush(self) -> None:
        """Publish the partial integrations (called by the pipeline at stop)."""
        self._control("flush")

    def close(self) -> None:
        self.partial_discarded += len(self._acc)
        self._acc.clear()
