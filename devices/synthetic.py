"""A synthetic device: measurements at a configured rate and pattern, no hardware.

It stands in for an instrument in tests and benchmarks, and its ``fail_connects`` option
simulates an instrument that is unreachable (the first N connects fail, or all with -1) so
the reconnect lifecycle can be exercised without a network.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from radlogger.device import Device, DeviceDone
from radlogger.measurement import Measurement, now_ns
from radlogger.options import Option

PATTERNS = ("counter", "sine", "ramp", "random", "constant")
#: scalar values computed at once for a stream polled one measurement at a time
_AHEAD = 256


class SyntheticDevice(Device):
    kind = "synthetic"
    summary = "measurements at a set rate and pattern (scalars or arrays), for tests and demos"
    options = (
        Option("rate", float, 10.0, "measurements per second (0 = as fast as possible)", min=0),
        Option("count", int, 0, "stop after this many measurements (0 = run forever)", min=0),
        Option("pattern", str, "sine", "value pattern", choices=PATTERNS),
        Option("quantity", str, "value", "quantity name: the topic is <device>.<quantity>"),
        Option("unit", str, "", "unit of the values"),
        Option("amplitude", float, 1.0, "amplitude of sine/ramp/random values"),
        Option("period", float, 10.0, "period of sine/ramp in seconds of device time", min=1e-9),
        Option("array_size", int, 0, "0 for scalars, else float32 arrays of this length", min=0),
        Option("chunk", int, 1000, "most measurements emitted per wake-up", min=1),
        Option("seed", int, 0, "seed of the random pattern"),
        Option("fail_connects", int, 0, "simulate an unreachable instrument: the first N "
               "connects fail (-1 = every connect)", min=-1),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.quantities = (s.quantity,)
        self.topic = f"{name}.{s.quantity}"
        self.emitted = 0
        self.connects = 0
        self._rng = np.random.default_rng(s.seed)
        self._t0 = 0.0
        #: scalar values computed ahead (one numpy call per ``_AHEAD``), first index ``_buf_at``
        self._buf: list[Any] = []
        self._buf_at = 0

    finite_when = "with count"

    @property
    def finite(self) -> bool:
        return bool(self.settings.count)

    def counters(self) -> dict[str, int | float]:
        return {"emitted": self.emitted, "connects": self.connects}

    def open(self) -> None:
        self.connects += 1
        fail = self.settings.fail_connects
        if fail == -1 or self.connects <= fail:
            raise ConnectionRefusedError(f"simulated unreachable instrument (connect "
                                         f"{self.connects})")
        self._t0 = time.monotonic() - (self.emitted / self.settings.rate
                                       if self.settings.rate else 0.0)

    def _values(self, start: int, n: int) -> list[Any]:
        """Values ``start .. start+n-1`` of the pattern, computed as one numpy expression."""
        s = self.settings
        size = s.array_size
        if s.pattern == "counter":
            if not size:
                return list(range(start, start + n))
            return [np.arange(i, i + size, dtype=np.float32) for i in range(start, start + n)]
        if s.pattern == "random":
            if not size:
                return self._rng.normal(0.0, s.amplitude, n).tolist()
            return list(self._rng.normal(0.0, s.amplitude, (n, size)).astype(np.float32))
        if s.pattern == "constant":
            v = np.full(n, s.amplitude)
        else:
            idx = np.arange(start, start + n, dtype=np.float64)
            phase = (idx / s.rate if s.rate else idx) / s.period
            if s.pattern == "ramp":
                v = s.amplitude * (phase - np.floor(phase))
            else:
                v = s.amplitude * np.sin(2 * np.pi * phase)
        if not size:
            return v.tolist()
        return list(np.repeat(v.astype(np.float32)[:, None], size, axis=1))

    def _scalars(self, start: int, n: int) -> list[Any]:
        """Scalar values ``start .. start+n-1`` from values computed ahead, at least ``_AHEAD``
        at a time, in index order (so a seeded random stream is the same however it is
        polled): a slow stream costs no numpy call per measurement."""
        k = start - self._buf_at
        buf = self._buf
        if k < 0 or k > len(buf):  # not the continuation of the buffer (a test's restart)
            buf, k = [], 0
            self._buf_at = start
        if k + n > len(buf):
            end = self._buf_at + len(buf)
            buf = buf[k:] + self._values(end, max(_AHEAD, start + n - end))
            self._buf_at, k = start, 0
            self._buf = buf
        return buf[k:k + n]

    def poll(self) -> None:
        # the settings are read as locals: ``Settings`` attributes go through a Python
        # ``__getattr__`` (~0.4 us each), and a stream at 1,000/s polls once per measurement
        s = self.settings
        n = s["chunk"]
        count = s["count"]
        start = self.emitted
        if count:
            n = min(n, count - start)
            if n <= 0:
                raise DeviceDone
        rate = s["rate"]
        if rate:
            # the schedule: measurement k is due at t0 + k / rate; sleep until the next one
            left = self._t0 + (start + 1) / rate - time.monotonic()
            if left > 0 and self.wait(left):
                return
            n = min(n, max(1, int((time.monotonic() - self._t0) * rate) - start))
        name, topic, unit = self.name, self.topic, s["unit"]
        if n == 1 and not s["array_size"]:
            value = self._scalars(start, 1)[0]
            self.outlet.push(Measurement(name, topic, value, now_ns(), unit))
            self.emitted = start + 1
            return
        values = self._values(start, n) if s["array_size"] else self._scalars(start, n)
        if n == 1:
            self.outlet.push(Measurement(name, topic, values[0], now_ns(), unit))
        else:
            self.outlet.push_many([Measurement(name, topic, v, now_ns(), unit) for v in values])
        self.emitted = start + n
