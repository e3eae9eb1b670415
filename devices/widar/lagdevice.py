"""What the live WIDAR device and the replay device share: batches of datagrams in, lag sets out.

Both run received (or recorded) datagrams through the same validation, decoding and assembly,
so a recording reproduces the live lag sets, bad frame counts included.  Its own module so that
driver.py (which starts the simulator), simulator.py (which can replay a recording) and
replay.py all import it without importing each other in a circle.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from radlogger.device import Device
from radlogger.measurement import Measurement, now_ns
from radlogger.options import Option, by_reason

from .assembler import ASSEMBLY_OPTIONS, Assembler, LagSet
from .frames import decode, frame_bytes, reason_counts
from .recording import RotatingRecorder

__all__ = ["LagSetDevice"]


class LagSetDevice(Device):
    """Common part of the live and replay devices: batches of datagrams in, lag sets out."""

    quantities = ("lagset",)
    options: tuple[Option, ...] = ASSEMBLY_OPTIONS + (
        Option("batch", int, 256, "datagrams handled per batch", min=1, max=65536),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.bad_frames: Counter[str] = Counter()  # decode and assembly rejections
        self.assembler = Assembler.from_settings(s, rejected=self.bad_frames)
        self.frame_bytes = frame_bytes(s.lags_per_frame)
        self._topic = f"{name}.lagset"
        self._bad_total = 0
        self.datagrams = 0
        self.lagsets = 0
        self.recorder: RotatingRecorder | None = None
        b = s.batch
        self._buf = np.zeros((b, self.frame_bytes), np.uint8)
        flat = self._buf.reshape(-1).data
        w = self.frame_bytes
        self._rows = [flat[i * w:(i + 1) * w] for i in range(b)]

    def ingest(self, n: int, lengths: list[int] | np.ndarray,
               t_ns: np.ndarray | None = None) -> None:
        """Validate, (record,) decode and assemble the first ``n`` rows of the buffer."""
        if not n:
            return
        lens = np.asarray(lengths, np.int64)
        self.datagrams += n
        if self.recorder is not None:
            self.recorder.write(self._buf[:n], lens,
                                t_ns if t_ns is not None else np.full(n, time.time_ns()))
        batch, reason = decode(self._buf[:n], lens, self.settings.lags_per_frame)
        if len(batch) < n:
            self.bad_frames.update(reason_counts(reason))
        done = self.assembler.add(batch)
        bad_total = sum(self.bad_frames.values())  # decode and assembly rejections
        if bad_total != self._bad_total:
            self.count_errors(bad_total - self._bad_total)
            self._bad_total = bad_total
        self._emit(done)

    def expire(self) -> None:
        self._emit(self.assembler.expire())

    def flush_sets(self) -> None:
        self._emit(self.assembler.flush())

    def _emit(self, sets: list[LagSet]) -> None:
        """The finished lag sets, pushed with one queue operation (14,600 lag sets/s at one
        board's line rate: a queue operation per set cost the receiving thread ~3 us/frame)."""
        if not sets:
            return
        self.lagsets += len(sets)
        name, topic, cid, now = self.name, self._topic, self.settings.config_id, now_ns()
        self.push_many([Measurement(name, topic, ls.lags, now, "", ls.timestamp, ls.meta(cid))
                        for ls in sets])

    def counters(self) -> dict[str, int | float]:
        """Frame-level counters (the pipeline's stats count lag sets)."""
        return {**super().counters(), "datagrams": self.datagrams, "lagsets": self.lagsets,
                **by_reason("bad_frames", self.bad_frames), **self.assembler.counters()}
