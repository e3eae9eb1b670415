"""The counting endpoint: takes everything, counts it, checks order; for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement, now_ns
from radlogger.options import Option


class NullEndpoint(Endpoint):
    kind = "null"
    summary = "counts measurements and checks per-source order; stores nothing"
    options = (
        Option("check_order", bool, True, "count measurements that arrive out of per-source order"),
        Option("latency", bool, False, "record push-to-endpoint latency of every measurement"),
        Option("latency_samples", int, 1_000_000, "most latency samples kept", min=1),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.count = 0
        self.out_of_order = 0
        self.last_seq: dict[str, int] = {}
        self.latencies_ns: list[int] = []

    def counters(self) -> dict[str, int | float]:
        return {"count": self.count, "out_of_order": self.out_of_order}

    def handle_batch(self, batch: list[Measurement]) -> None:
        # the settings are read once per batch, as locals: each ``Settings`` attribute goes
        # through a Python ``__getattr__`` (~0.4 us), and a low-rate batch holds 1-2 items
        s = self.settings
        if s["check_order"]:
            last = self.last_seq
            for m in batch:
                if m.seq <= last.get(m.source, -1):
                    self.out_of_order += 1
                last[m.source] = m.seq
        if s["latency"]:
            lat = self.latencies_ns
            if len(lat) < s["latency_samples"]:
                now = now_ns()
                lat.extend(now - m.t_ns for m in batch)
        self.count += len(batch)
