"""The replay device: plays a recorded store back into the pipeline, so a session recorded
with the csv, jsonl, sqlite or hdf5 endpoint can be re-processed (new FFT settings, another
calibration, a fixed bug) exactly as if the instrument were live.

Timing: ``speed = 1`` keeps the recorded spacing of ``t_ns``, ``speed = 10`` plays ten times
faster, ``speed = 0`` as fast as the pipeline takes it.  For ``speed = 0`` into a pipeline with
``overflow = drop_newest`` the queue may overflow (every drop is counted); use ``overflow =
block`` to re-process a recording losslessly.

Topics: measurements are published under their recorded topics, or renamed (``rename =
wsa1=wsa9`` moves the ``wsa1`` subtree to ``wsa9``), or put under a prefix (``prefix = replay``
publishes ``replay.wsa1.iq``).  The ``source`` of a replayed measurement is this device (the
pipeline's accounting is per producer) and ``seq`` is renumbered by the pipeline; value, unit,
device time and meta are the recorded ones, and ``t_ns`` too unless ``timestamps = now``.

Progress: with ``progress = auto`` (the default) a tqdm bar on stderr counts the replayed
measurements when stderr is a terminal (``radloggerd run`` by hand), and nothing is shown under
systemd or in a pipe; ``yes``/``no`` force it.

Reading goes through ``radlogger.store.reader``: the store formats are defined once, in the
core, where the storage endpoints' writers import them too (endpoints/storage/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from radlogger.device import Device, DeviceDone
from radlogger.measurement import Measurement, now_ns
from radlogger.options import Option, OptionError
from radlogger.store.progress import Progress
from radlogger.store.reader import Store, StoreError, parse_time

__all__ = ["ReplayDevice"]


class ReplayDevice(Device):
    kind = "replay"

    finite_when = "always (it ends with the store)"

    @property
    def finite(self) -> bool:
        return True  # ends with the file: run --once waits for it
    summary = ("plays a recorded store (csv, jsonl, sqlite, hdf5, spectrum .npy/.npz) back into "
               "the pipeline")
    options = (
        Option("path", str, None, "the store to play: a file, the path of a rotating store "
               "(its numbered files are included), or a glob", required=True),
        Option("speed", float, 1.0, "1 = recorded timing, 10 = ten times faster, 0 = as fast "
               "as possible", min=0),
        Option("topics", list, [], "only these topics (exact, subtree prefix, or glob)"),
        Option("since", str, "", "start at this recorded time (ISO 8601, epoch seconds)"),
        Option("until", str, "", "stop before this recorded time"),
        Option("rename", list, [], "rename topic subtrees, old=new (e.g. wsa1=wsa9)"),
        Option("prefix", str, "", "publish under <prefix>.<topic>"),
        Option("timestamps", str, "original", "t_ns of the replayed measurements",
               choices=("original", "now")),
        Option("chunk", int, 1000, "most measurements published per wake-up", min=1),
        Option("progress", str, "auto", "progress bar on stderr: auto = when it is a terminal",
               choices=("auto", "yes", "no")),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self._since = self._time(s.since, "since")
        self._until = self._time(s.until, "until")
        self._renames: list[tuple[str, str]] = []
        for item in s.rename:
            old, sep, new = item.partition("=")
            if not sep or not old.strip() or not new.strip():
                raise OptionError("rename", f"rename = {item!r}: expected old=new, e.g. "
                                  "wsa1=wsa9")
            self._renames.append((old.strip(), new.strip()))
        self._topic_map: dict[str, str] = {}
        self._it: Iterator[Measurement] | None = None
        self._next: Measurement | None = None
        self._t0 = 0.0  # monotonic time the first measurement was published
        self._first_t_ns: int | None = None
        self.emitted = 0
        self._progress: Progress | None = None

    @staticmethod
    def _time(text: str, key: str) -> int | None:
        if not text:
            return None
        try:
            return parse_time(text)
        except ValueError as exc:
            raise OptionError(key, f"{key} = {text!r}: {exc}") from None

    def map_topic(self, topic: str) -> str:
        mapped = self._topic_map.get(topic)
        if mapped is None:
            mapped = topic
            for old, new in self._renames:
                if topic == old or topic.startswith(old + "."):
                    mapped = new + topic[len(old):]
                    break
            if self.settings.prefix:
                mapped = f"{self.settings.prefix}.{mapped}"
            self._topic_map[topic] = mapped
        return mapped

    def topics(self) -> list[str]:
        """For ``radloggerd check``/``graph``: what the recording holds (a CSV/JSONL recording
        is only scanned for its first 10,000 rows, to keep checks fast)."""
        try:
            recorded = Store(self.settings.path).topics(limit=10_000)
        except (StoreError, OSError, ValueError):
            return []
        return sorted({self.map_topic(t) for t in recorded})

    def counters(self) -> dict[str, int | float]:
        return {"emitted": self.emitted}

    def open(self) -> None:
        if self._it is not None:
            return
        s = self.settings
        it = Store(s.path).read(s.topics, self._since, self._until)
        for _ in range(self.emitted):  # resume after a read error without repeating
            next(it, None)
        self._it = it
        wanted = {"auto": None, "yes": True, "no": False}[s.progress]
        self._progress = Progress(f"replay {self.name}", wanted, initial=self.emitted)

    def close(self) -> None:
        it, self._it = self._it, None
        self._next = None
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.close()
        if it is not None:
            it.close()  # type: ignore[attr-defined]

    def poll(self) -> None:
        before = self.emitted
        try:
            self._poll()
        finally:
            if self._progress is not None and self.emitted > before:
                self._progress.update(self.emitted - before)

    def _poll(self) -> None:
        assert self._it is not None
        speed = self.settings.speed
        original = self.settings.timestamps == "original"
        for _ in range(self.settings.chunk):
            m = self._next
            if m is None:
                m = next(self._it, None)
                if m is None:
                    raise DeviceDone
                self._next = m
            if speed:
                now = time.monotonic()
                if self._first_t_ns is None:
                    self._first_t_ns, self._t0 = m.t_ns, now
                due = self._t0 + (m.t_ns - self._first_t_ns) / 1e9 / speed
                if due > now:
                    self.wait(min(due - now, 0.2))
                    return
            self._next = None
            self.push(Measurement(self.name, self.map_topic(m.topic), m.value,
                                  m.t_ns if original else now_ns(), m.unit, m.device_time,
                                  m.meta))
            self.emitted += 1
