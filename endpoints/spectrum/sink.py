"""The ``spectrum`` sink: keeps the latest spectra with their frequency axis, stores, renders.

Per input topic it keeps a ring of the last ``history`` spectra (the waterfall) and the latest
one with its frequency axis; it appends every spectrum to a store in ``directory`` (``npy``:
one growing record file per topic and FFT size; ``npz``: one compressed file per flush; see
``store.py``) and renders ``<topic>.png`` (latest spectrum + waterfall) every
``render_interval`` seconds, at stop, and on demand through :meth:`SpectrumSink.render`.

Frequency axis: centre ``meta["rf_freq"]``; span ``meta["bandwidth"]`` (the digitizer
bandwidth context) or, with ``span_from = decimation``, ``full_bw / meta["decimation"]``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement
from radlogger.options import Option

from .plot import render_png
from .store import NpyAppender, frequency_axis, record_dtype, write_npz

__all__ = ["SpectrumSink", "Track"]

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Track:
    """What the sink holds for one topic (and one FFT size)."""

    def __init__(self, topic: str, n: int, history: int) -> None:
        self.topic = topic
        self.n = n
        self.history = np.full((history, n), np.nan, dtype=np.float32)
        self.times = np.zeros(history, dtype=np.int64)
        self.count = 0
        self.latest: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self.unit = ""
        self.rf_freq = 0.0
        self.span = 1.0
        self.freqs = frequency_axis(0.0, 1.0, n)
        #: records not yet written: the first ``pending_rows`` of a re-used buffer
        self.pending: np.ndarray | None = None
        self.pending_rows = 0

    def extend(self, rows: np.ndarray, times: np.ndarray, last: Measurement, rf_freq: float,
               span: float) -> None:
        """Add consecutive spectra ``rows`` (k, n) to the ring; ``last`` is the newest one."""
        h = len(self.history)
        k = len(rows)
        if k > h:  # only the newest h fit
            rows, times = rows[-h:], times[-h:]
            self.count += k - h
            k = h
        start = self.count % h
        first = min(k, h - start)
        self.history[start:start + first] = rows[:first]
        self.times[start:start + first] = times[:first]
        if first < k:
            self.history[:k - first] = rows[first:]
            self.times[:k - first] = times[first:]
        self.count += k
        self.latest = self.history[(self.count - 1) % h]
        self.meta = last.meta or {}
        self.unit = last.unit
        if rf_freq != self.rf_freq or span != self.span:
            self.rf_freq, self.span = rf_freq, span
            self.freqs = frequency_axis(rf_freq, span, self.n)

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """History rows oldest first and their host times."""
        h = len(self.history)
        if self.count <= h:
            return self.history[:self.count], self.times[:self.count]
        start = self.count % h
        order = np.r_[start:h, 0:start]
        return self.history[order], self.times[order]


def _block_rows(run: list[Measurement], axes: list[tuple[float, float]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, host times, rf_freq, span and device times of a run holding (k, n) blocks (the
    driver's ``group = read``): per-measurement fields repeated over its rows; a block's
    ``meta["device_times"]`` gives each row its own instrument time."""
    n = run[0].value.shape[-1]
    rows = np.concatenate([m.value.reshape(-1, n) for m in run]).astype(np.float32, copy=False)
    ks = [1 if m.value.ndim == 1 else len(m.value) for m in run]
    times = np.repeat(np.fromiter((m.t_ns for m in run), np.int64, len(run)), ks)
    parts = []
    for m, k in zip(run, ks, strict=True):
        own = m.meta.get("device_times") if m.meta else None
        if own is not None and len(own) == k:
            parts.append(np.asarray(own, np.int64))
        else:
            parts.append(np.full(k, -1 if m.device_time is None else int(m.device_time),
                                 np.int64))
    rf_freq = np.repeat(np.array([a[0] for a in axes]), ks)
    span = np.repeat(np.array([a[1] for a in axes]), ks)
    return rows, times, rf_freq, span, np.concatenate(parts)


class SpectrumSink(Endpoint):
    kind = "spectrum"
    accepts = ("spectrum*",)
    summary = "keeps, stores (.npy/.npz) and renders (PNG: latest + waterfall) spectra"
    options = (
        Option("directory", str, None, "where to store spectra and PNGs (unset: keep in "
               "memory only)"),
        Option("format", str, "npy", "store format: npy (one appendable record file per "
               "topic) or npz (one compressed file per flush); none to only render",
               choices=("npy", "npz", "none")),
        Option("flush_rows", int, 256, "spectra buffered per topic before they are written",
               min=1),
        Option("history", int, 200, "spectra kept per topic for the waterfall", min=1),
        Option("write_behind", float, 8.0, "npy: MB of the file kept in the page cache "
               "behind the write front; older pages are written out and dropped (0: leave "
               "it to the kernel)", min=0),
        Option("render_interval", float, 0.0, "seconds between PNG renders (0 = only on "
               "demand and at stop)", min=0),
        Option("render_on_stop", bool, True, "render the PNGs when the sink stops"),
        Option("span_from", str, "context", "span of the frequency axis: the bandwidth "
               "context, or full_bw / decimation", choices=("context", "decimation")),
        Option("full_bw", float, 125e6, "undecimated bandwidth in Hz (span_from = "
               "decimation, or when a spectrum carries no bandwidth)", min=0),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.directory = Path(s.directory) if s.directory else None
        self._span_context = s.span_from == "context"
        self._full_bw = s.full_bw
        self.tracks: dict[str, Track] = {}
        self.stored = 0
        #: spectra taken in (rows: a (k, n) block counts k), stored or still pending
        self.spectra = 0
        self.renders = 0
        self.files: set[Path] = set()
        self._appenders: dict[tuple[str, int], NpyAppender] = {}
        self._lock = threading.RLock()  # tracks: the worker adds, render() may read
        self._next_render = 0.0
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        #: set by close(): no timer renders after it (a render still running is waited for)
        self._closed = False
        self._rendering: threading.Thread | None = None
        self._render_lock = threading.Lock()  # one render at a time (worker, timer, callers)

    def writes(self) -> list[str]:
        return [str(self.directory)] if self.directory is not None else []

    def counters(self) -> dict[str, int | float]:
        return {"stored": self.stored, "spectra": self.spectra, "renders": self.renders,
                "tracks": len(self.tracks), "files": len(self.files)}

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> None:
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(f"spectrum sink {self.name}: cannot create directory "
                              f"{self.directory}: {exc.strerror}; fix 'directory'") from None
            log.info("endpoint %s (spectrum): writing into %s", self.name, self.directory.resolve())
        self._next_render = time.monotonic() + self.settings.render_interval
        self._closed = False

    def flush(self) -> None:
        with self._lock:
            for track in self.tracks.values():
                self._write(track)

    def close(self) -> None:
        with self._timer_lock:
            timer, self._timer = self._timer, None
            self._closed = True
            running = self._rendering
        if timer is not None:
            timer.cancel()
        if running is not None:  # a periodic render must not outlive the sink (its directory
            running.join(10.0)  # may go next: the PNG's temporary file vanished under it)
        if self.settings.render_on_stop and self.directory is not None:
            self.render()

    # ---------------------------------------------------------------- data
    def _axis(self, meta: dict[str, Any]) -> tuple[float, float]:
        rf = float(meta.get("rf_freq", 0.0))
        bandwidth = meta.get("bandwidth")
        if bandwidth and self._span_context:
            return rf, float(bandwidth)
        return rf, self._full_bw / max(1, int(meta.get("decimation", 1) or 1))

    def handle_batch(self, batch: list[Measurement]) -> None:
        """Why in runs: consecutive spectra of one topic and size go into the ring and the
        pending records with a few numpy calls per run instead of a few per spectrum
        (measured at SPP 1024, 128-spectrum batches: 9.1 -> 1.7 us per spectrum)."""
        with self._lock:
            run: list[Measurement] = []
            key: tuple[str, int] = ("", 0)
            for m in batch:
                value = m.value
                if value.__class__ is not np.ndarray and (
                        getattr(value, "ndim", 0) != 1 or getattr(value, "dtype", None) is None):
                    value = None
                if value is None or not 1 <= value.ndim <= 2 or value.dtype.kind != "f" or \
                        not value.shape[0]:
                    self.item_failed(m, ValueError(f"{m.topic}: expected a 1-D real spectrum "
                                                   "or a (k, n) block of them, got "
                                                   f"{type(m.value).__name__}"))
                    continue
                k = (m.topic, value.shape[-1])
                if run and k != key:
                    self._add_run(run)
                    run = []
                key = k
                run.append(m)
            if run:
                self._add_run(run)
        if self.settings.render_interval and self.directory is not None:
            self._render_due()

    def _add_run(self, run: list[Measurement]) -> None:
        """Spectra of one topic and one size, in arrival order."""
        first = run[0]
        n = first.value.shape[-1]
        track = self.tracks.get(first.topic)
        if track is None or track.n != n:
            if track is not None:
                self._write(track)
            track = self.tracks[first.topic] = Track(first.topic, n, self.settings.history)
        k = len(run)
        axis = self._axis
        axes = [axis(m.meta or {}) for m in run]
        device_time: Any
        if all(m.value.ndim == 1 for m in run):
            rows = np.array([m.value for m in run], dtype=np.float32)
            times = np.fromiter((m.t_ns for m in run), np.int64, k)
            rf_freq: Any = [a[0] for a in axes]
            span: Any = [a[1] for a in axes]
            device_time = None
        else:
            rows, times, rf_freq, span, device_time = _block_rows(run, axes)
            k = len(rows)
        track.extend(rows, times, run[-1], *axes[-1])
        self.spectra += k
        if self.directory is None or self.settings.format == "none":
            return
        if device_time is None:
            device_time = [-1 if m.device_time is None else int(m.device_time) for m in run]
        flush_rows = self.settings.flush_rows
        if track.pending is None:  # one buffer of flush_rows records, re-used: no page faults
            track.pending = np.empty(flush_rows, dtype=record_dtype(n))
        done = 0
        while done < k:
            at = track.pending_rows
            take = min(k - done, flush_rows - at)
            dest = track.pending[at:at + take]
            dest["t_ns"] = times[done:done + take]
            dest["device_time"] = device_time[done:done + take]
            dest["rf_freq"] = rf_freq[done:done + take]
            dest["span"] = span[done:done + take]
            dest["dbm"] = rows[done:done + take]
            track.pending_rows = at + take
            done += take
            if track.pending_rows == flush_rows:  # files of exactly flush_rows, as always
                self._write(track)

    def _render_due(self) -> None:
        """Make sure a timer thread renders the data we just got once the interval has passed
        (a burst followed by silence still gets drawn).

        Why never on this thread: a render costs 0.2-0.3 s of CPU (matplotlib's figure
        machinery, whatever the data size); at SPP 1024 line rate (28,400 spectra/s into a
        4096-spectrum inbox, 0.14 s) rendering here dropped ~10,000 spectra every 10 s
        (bench_wsa4000 ``stream_line_rate_long``).  On the timer thread the inbox keeps being
        drained while it renders."""
        now = time.monotonic()
        with self._timer_lock:
            if self._timer is None and not self._closed:
                self._timer = threading.Timer(max(0.0, self._next_render - now), self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def _on_timer(self) -> None:
        with self._timer_lock:
            if self._closed:
                return
            self._timer = None
            self._rendering = threading.current_thread()
            self._next_render = time.monotonic() + self.settings.render_interval
        try:
            self.render()
        except Exception as exc:  # noqa: BLE001 - a timer thread has nobody to raise to
            self.stats.errors += 1
            log.error("spectrum sink %s: render failed: %s", self.name, exc)
        finally:
            with self._timer_lock:
                self._rendering = None

    def _write(self, track: Track) -> None:
        if not track.pending_rows or track.pending is None or self.directory is None:
            return
        rows, track.pending_rows = track.pending_rows, 0
        self._store(track, track.pending[:rows])

    def _store(self, track: Track, records: np.ndarray) -> None:
        assert self.directory is not None
        stem = _SAFE.sub("_", track.topic) + f"_N{track.n}"
        if self.settings.format == "npz":
            path = write_npz(self.directory / f"{stem}_{int(records['t_ns'][0])}.npz", records)
        else:
            key = (track.topic, track.n)
            app = self._appenders.get(key)
            if app is None:
                app = self._appenders[key] = NpyAppender(
                    self.directory / f"{stem}.npy", records.dtype,
                    int(self.settings.write_behind * (1 << 20)))
            app.append(records)
            path = app.path
        self.files.add(path)
        self.stored += len(records)

    # ---------------------------------------------------------------- queries
    def latest(self, topic: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        """(frequencies in Hz, latest spectrum, its meta) of ``topic``, or None."""
        with self._lock:
            track = self.tracks.get(topic)
            if track is None or track.latest is None:
                return None
            return track.freqs.copy(), track.latest.copy(), dict(track.meta)

    def waterfall(self, topic: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows oldest first, host times in ns) of ``topic``, or None."""
        with self._lock:
            track = self.tracks.get(topic)
            if track is None or not track.count:
                return None
            rows, times = track.ordered()
            return rows.copy(), times.copy()

    def render(self, directory: str | Path | None = None) -> list[Path]:
        """Write ``<topic>.png`` for every topic with data; returns the files written."""
        target = Path(directory) if directory is not None else self.directory
        if target is None:
            raise ValueError(f"spectrum sink {self.name}: no directory to render into; set "
                             "'directory' or pass one")
        written = []
        snapshot: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]] = []
        with self._lock:
            for t in self.tracks.values():
                if t.latest is not None:
                    rows, times = t.ordered()
                    snapshot.append((t.topic, t.freqs.copy(), t.latest.copy(), rows.copy(),
                                     times.copy(), t.unit))
        with self._render_lock:
            for item in snapshot:
                written.append(self._render_one(target, *item))
        return written

    def _render_one(self, target: Path, topic: str, freqs: np.ndarray, latest: np.ndarray,
                    rows: np.ndarray, times: np.ndarray, unit: str) -> Path:
        age = (int(times[-1]) - int(times[0])) / 1e9 if len(times) > 1 else 0.0
        path = target / f"{_SAFE.sub('_', topic)}.png"
        render_png(path, f"{topic}  ({len(rows)} spectra)", freqs, latest, rows, age,
                   unit or "dB")
        with self._timer_lock:
            self.renders += 1
        return path
