"""Pipeline status as data: state, time in state, counters, and stuck-state detection.

Each device and endpoint has a state machine (``radlogger.device.DeviceState``,
``radlogger.endpoint.EndpointState``).  :class:`StatusTracker` samples the pipeline and turns
that into :class:`ComponentStatus` records: the state, how long it has been in it, its counters
(the pipeline's, plus the plugin's own per-reason ``counters()``), and a ``problem``
when something looks wrong:

* **stuck**: in a transitional state (``connecting``, ``restarting``, ``stopping``, ...)
  longer than its timeout (``DEFAULT_TIMEOUTS``, configurable per state);
* **stalled**: an endpoint with work pending whose handled+dropped count has not moved for
  ``stall_s`` seconds (its handler hangs);
* **silent**: a running device that produced nothing for ``silent_s`` seconds (off by
  default: many instruments are bursty);
* **failed**: gave up (device out of retries, endpoint marked failed);
* **down**: a device that has not been running for ``down_s`` seconds: it never connected, or
  keeps cycling through connecting and backoff (each state alone never looks stuck).

Rates are per second over the last few seconds (``RATE_WINDOW_S``), from the tracker's own
samples; the control API samples every second so a ``status`` always has them.

Time in state is measured by the tracker from the first sample that saw the state, so it is
exact to one sampling interval.

Status is available dynamically (:class:`StatusPublisher` publishes it periodically as
measurements on ``radlogger.status.<component>`` through a pipeline outlet, so any endpoint,
MQTT included, can subscribe) and statically (:func:`add_routes` serves ``/status`` and
``/graph`` on a :class:`radlogger.web.WebServer`).  The graph itself is :mod:`radlogger.graph`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .graph import build_graph, graph_dot, graph_text, render_graph
from .measurement import Measurement
from .topics import safe_segment

__all__ = ["DEFAULT_TIMEOUTS", "ComponentStatus", "PipelineStatus", "StatusTracker",
           "StatusPublisher", "format_status", "add_routes", "build_graph", "graph_text",
           "graph_dot", "render_graph"]

log = logging.getLogger(__name__)

#: seconds a component may stay in a transitional state before it is reported stuck
DEFAULT_TIMEOUTS: dict[str, float] = {
    "connecting": 60.0, "restarting": 30.0, "stopping": 30.0, "error": 30.0,
}
_FAILED = ("failed",)


@dataclass
class ComponentStatus:
    role: str  # device | endpoint
    name: str
    kind: str
    state: str
    in_state_s: float
    problem: str = ""
    counters: dict[str, Any] = field(default_factory=dict)
    #: the plugin's own counters (``Configurable.counters()``), also merged into ``counters``
    own: dict[str, Any] = field(default_factory=dict)
    #: per second over the last few seconds: produced, published, received, handled, dropped
    rates: dict[str, float] = field(default_factory=dict)
    last_error: str = ""
    #: when the last error happened, ISO 8601 UTC (empty before the first)
    last_error_at: str = ""

    @property
    def stuck(self) -> bool:
        return bool(self.problem)


@dataclass
class PipelineStatus:
    t_ns: int
    components: list[ComponentStatus]
    queue: dict[str, Any]

    @property
    def problems(self) -> list[ComponentStatus]:
        return [c for c in self.components if c.problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def get(self, name: str) -> ComponentStatus:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"t_ns": self.t_ns, "ok": self.ok, "queue": self.queue,
                "components": [asdict(c) for c in self.components]}


@dataclass
class _Seen:
    state: str
    since: float
    progress: int
    progress_since: float
    #: since when the component is not running (devices): reset whenever it runs
    down_since: float = 0.0
    ran: bool = False
    samples: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)


#: seconds of samples rates are computed over
RATE_WINDOW_S = 5.0
_RATED = ("produced", "published", "received", "handled", "dropped")
_RUNNING = ("running", "finished")


class StatusTracker:
    """Samples a pipeline; remembers since when each component is in its state."""

    def __init__(self, timeouts: Mapping[str, float] | None = None, stall_s: float = 60.0,
                 silent_s: float | None = None, down_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeouts = dict(DEFAULT_TIMEOUTS)
        if timeouts:
            self.timeouts.update(timeouts)
        self.stall_s = stall_s
        self.silent_s = silent_s
        self.down_s = down_s
        self._lock = threading.Lock()  # the control API's sampler and requests share it
        self.clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}

    def _track(self, key: tuple[str, str], state: str, progress: int, now: float) -> _Seen:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(state, now, progress, now)
        if seen.state != state:
            seen.state, seen.since = state, now
        if seen.progress != progress:
            seen.progress, seen.progress_since = progress, now
        if state in _RUNNING:
            seen.ran, seen.down_since = True, 0.0
        elif not seen.down_since:
            seen.down_since = now
        return seen

    @staticmethod
    def _rates(seen: _Seen, counters: Mapping[str, Any], now: float) -> dict[str, float]:
        """Per second since the oldest sample of the window (at least 0.5 s back)."""
        current = {k: float(counters[k]) for k in _RATED if k in counters}
        samples = seen.samples
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        rates: dict[str, float] = {}
        if samples and now - samples[0][0] >= 0.5:
            t0, old = samples[0]
            rates = {k: round((v - old.get(k, v)) / (now - t0), 3) for k, v in current.items()}
        if not samples or now - samples[-1][0] >= 0.5:
            samples.append((now, current))
        return rates

    def _problem(self, role: str, state: str, seen: _Seen, now: float, pending: int,
                 last_error: str) -> str:
        in_state = now - seen.since
        if state in _FAILED:
            return "failed" + (f": {last_error}" if last_error else "")
        limit = self.timeouts.get(state)
        if limit is not None and in_state > limit:
            return (f"stuck in {state} for {in_state:.0f} s (limit {limit:g} s)"
                    + (f": {last_error}" if last_error else ""))
        idle_for = now - seen.progress_since
        if role == "endpoint" and pending and idle_for > self.stall_s:
            return f"stalled: {pending} measurements waiting, no progress for {idle_for:.0f} s"
        if (role == "device" and state == "running" and self.silent_s is not None
                and idle_for > self.silent_s):
            return f"silent: nothing produced for {idle_for:.0f} s"
        if role == "device" and seen.down_since and now - seen.down_since > self.down_s \
                and state not in ("stopped", "stopping"):
            what = "reconnecting" if seen.ran else "never connected"
            return (f"{what} for {now - seen.down_since:.0f} s (limit {self.down_s:g} s)"
                    + (f": {last_error}" if last_error else ""))
        return ""

    def update(self, pipeline: Any, now: float | None = None) -> PipelineStatus:
        with self._lock:
            return self._update(pipeline, self.clock() if now is None else now)

    def _update(self, pipeline: Any, now: float) -> PipelineStatus:
        snap = pipeline.snapshot()
        components: list[ComponentStatus] = []
        live: set[tuple[str, str]] = set()
        producers = snap["producers"]
        for role, names, table in (("device", list(pipeline.devices), producers),
                                   ("endpoint", list(pipeline.endpoints), snap["endpoints"])):
            for name in names:
                c = table.get(name, {})
                component = (pipeline.devices if role == "device" else pipeline.endpoints)[name]
                state = component.state.value
                key = (role, name)
                live.add(key)
                progress = int(c.get("produced", 0)) if role == "device" else \
                    int(c.get("handled", 0)) + int(c.get("dropped", 0))
                seen = self._track(key, state, progress, now)
                own = dict(c.get("own", {}))
                counters = {**own, **{k: v for k, v in c.items() if k not in _NOT_COUNTERS}}
                error = str(c.get("last_error", ""))
                pending = component.pending if role == "endpoint" else 0
                components.append(ComponentStatus(
                    role, name, component.kind, state, round(now - seen.since, 3),
                    self._problem(role, state, seen, now, pending, error), counters, own,
                    self._rates(seen, c, now), error, _iso(int(c.get("last_error_ns", 0)))))
        for key in set(self._seen) - live:
            del self._seen[key]  # removed on reload
        return PipelineStatus(time.time_ns(), components, snap["queue"])


def _iso(t_ns: int) -> str:
    if not t_ns:
        return ""
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


_NOT_COUNTERS = ("name", "state", "kind", "own", "last_error", "last_error_ns")


def _num(c: ComponentStatus, name: str) -> str:
    rate = c.rates.get(name)
    return f"{name}={c.counters.get(name, 0)}" + (f" ({rate:,.1f}/s)" if rate else "")


def format_status(status: PipelineStatus) -> str:
    """A table for humans (``radloggerd status``)."""
    q = status.queue
    lines = [f"queue {q.get('depth')}/{q.get('capacity')} high-water {q.get('high_water')} "
             f"dropped {q.get('dropped')}"]
    width = max((len(c.name) for c in status.components), default=4)
    for c in status.components:
        k = c.counters
        if c.role == "device":
            nums = f"{_num(c, 'produced')} {_num(c, 'dropped')} errors={k.get('errors', 0)}"
        else:
            nums = f"{_num(c, 'received')} {_num(c, 'handled')} {_num(c, 'dropped')} " \
                   f"inbox={k.get('inbox_depth', 0)}"
        line = f"{c.role:8} {c.name:{width}} {c.kind:12} {c.state:11} {c.in_state_s:8.1f}s {nums}"
        if c.problem:
            line += f"  !! {c.problem}"
        lines.append(line)
        if c.own:
            lines.append(f"{'':8} {'':{width}} " + " ".join(f"{k}={_short(v)}"
                                                             for k, v in c.own.items()))
        if c.last_error:
            lines.append(f"{'':8} {'':{width}} last error {c.last_error_at}: {c.last_error}")
    lines.append("ok" if status.ok else f"{len(status.problems)} problem(s)")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class StatusPublisher:
    """Publishes the status every ``interval`` seconds as measurements.

    One measurement per component on ``<topic>.<name>`` (value: the state, meta: time in
    state, problem, counters) and one on ``<topic>.pipeline`` (value: number of problems).
    They enter the pipeline through the outlet of producer ``source``, like any device's.
    """

    def __init__(self, pipeline: Any, interval: float = 10.0, topic: str = "radlogger.status",
                 tracker: StatusTracker | None = None, source: str = "radlogger") -> None:
        self.pipeline = pipeline
        self.interval = interval
        self.topic = topic
        self.tracker = tracker or StatusTracker()
        self.source = source
        self.outlet = pipeline.outlet(source)
        self.published = 0
        self.last: PipelineStatus | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def measurements(self, status: PipelineStatus) -> list[Measurement]:
        out: list[Measurement] = []
        for c in status.components:
            segment = safe_segment(c.name) or "_"
            meta = {"role": c.role, "kind": c.kind, "in_state_s": c.in_state_s,
                    "problem": c.problem, "counters": c.counters}
            out.append(Measurement(self.source, f"{self.topic}.{segment}", c.state,
                                   status.t_ns, meta=meta))
        out.append(Measurement(self.source, f"{self.topic}.pipeline", len(status.problems),
                               status.t_ns, meta={"queue": status.queue,
                                                  "problems": [c.name for c in status.problems]}))
        return out

    def publish_once(self) -> PipelineStatus:
        status = self.tracker.update(self.pipeline)
        self.last = status
        push = self.outlet.push
        for m in self.measurements(status):
            if push(m):
                self.published += 1
        for c in status.problems:
            log.warning("status: %s %s: %s", c.role, c.name, c.problem)
        return status

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish_once()
            except Exception:  # noqa: BLE001 - keep reporting
                log.exception("status: publishing failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def add_routes(app: Any, pipeline: Any, tracker: StatusTracker) -> None:
    """``GET /status`` (JSON), ``/status.txt``, ``/graph`` (text) and ``/graph.dot`` on an
    aiohttp application (e.g. ``WebServer.app``): how ``radloggerd status`` asks a daemon."""
    from aiohttp import web

    lock = threading.Lock()  # the tracker is not thread-safe; requests may overlap

    def current() -> PipelineStatus:
        with lock:
            return tracker.update(pipeline)

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(current().to_dict(), dumps=_dumps)

    async def status_text(request: web.Request) -> web.Response:
        return web.Response(text=format_status(current()))

    async def graph(request: web.Request) -> web.Response:
        return web.Response(text=graph_text(build_graph(pipeline, current())))

    async def dot(request: web.Request) -> web.Response:
        return web.Response(text=graph_dot(build_graph(pipeline, current())),
                            content_type="text/vnd.graphviz")

    app.router.add_get("/status", status_json)
    app.router.add_get("/status.txt", status_text)
    app.router.add_get("/graph", graph)
    app.router.add_get("/graph.dot", dot)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)
