"""The unit of data that flows through radloggerd.

A `Measurement` is deliberately a plain ``__slots__`` class: it is created once per
packet (or per scalar sample) on the device threads' hot path, so it must be cheap to
build (no validation, no dataclass machinery) and small in memory.  Bulk data (I/Q,
spectra, lag sets) rides inside one measurement as a numpy array, so the queue sees one
item per packet, never one per sample.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Measurement", "now_ns"]

now_ns = time.time_ns


class Measurement:
    """One measurement from one source.

    ``t_ns`` is wall-clock time (ns since the Unix epoch) taken on the host when the
    measurement was made; ``device_time`` is the instrument's own timestamp, in whatever
    unit the device documents (VRT: ns since epoch, WIDAR: ns since epoch), or ``None``.
    The two are never mixed: see style habit 5.
    """

    __slots__ = ("source", "topic", "t_ns", "value", "unit", "device_time", "meta", "seq")

    def __init__(
        self,
        source: str,
        topic: str,
        value: Any,
        t_ns: int | None = None,
        unit: str = "",
        device_time: int | float | None = None,
        meta: dict[str, Any] | None = None,
        seq: int = -1,
    ) -> None:
        self.source = source
        self.topic = topic
        self.value = value
        self.t_ns = now_ns() if t_ns is None else t_ns
        self.unit = unit
        self.device_time = device_time
        self.meta = meta
        self.seq = seq

    def derive(self, source: str, topic: str, value: Any, unit: str = "",
               meta: dict[str, Any] | None = None) -> Measurement:
        """A new measurement computed from this one (processing endpoints).

        Keeps the original wall-clock and device timestamps so a spectrum carries the
        time of the samples it was computed from, not the time of the FFT.
        """
        merged = dict(self.meta) if self.meta else {}
        if meta:
            merged.update(meta)
        return Measurement(source, topic, value, self.t_ns, unit, self.device_time,
                           merged or None, self.seq)

    def __repr__(self) -> str:
        value = self.value
        shape = getattr(value, "shape", None)
        shown = f"array{tuple(shape)}:{value.dtype}" if shape is not None else repr(value)
        return (f"Measurement({self.source!r}, {self.topic!r}, {shown}, t_ns={self.t_ns}, "
                f"unit={self.unit!r}, seq={self.seq})")
