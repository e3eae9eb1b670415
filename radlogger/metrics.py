"""Prometheus / OpenMetrics ``GET /metrics`` on the control port, with prometheus_client.

A custom collector reads, at each scrape, the pipeline's snapshot and the status tracker (the
same data as ``/status``), so nothing is counted twice and nothing new runs between scrapes.
Names follow the Prometheus conventions: ``radlogger_`` prefix, ``_total`` on counters, one
label per component (``device="wsa1"``, ``endpoint="store"``) and ``reason`` where a count is
split by reason.

* pipeline counters: ``radlogger_device_{produced,published,unrouted,errors}_total``,
  ``radlogger_device_dropped_total{reason}``, ``radlogger_endpoint_{received,handled,errors,
  restarts}_total``, ``radlogger_endpoint_dropped_total{reason}``;
* depths: ``radlogger_queue_{depth,capacity,high_water,waiting_producers}``,
  ``radlogger_queue_dropped_total``, ``radlogger_endpoint_inbox_{depth,high_water}``;
* states: ``radlogger_{device,endpoint}_state{state}`` (1 for the current state, 0 for the
  others), ``_state_seconds`` (time in it), ``_ok`` (0 when status reports a problem),
  ``_info{kind}``;
* rates over the last seconds: ``radlogger_{device,endpoint}_rate_per_second{counter}``;
* each plugin's own ``counters()``: every number as the untyped ``radlogger_<role>_<name>``
  (plugins mix counts and levels such as ``queued``), so its series never changes name; a
  count by reason (``bad_frames`` with ``bad_frames.<reason>``, see
  :func:`radlogger.options.by_reason`) also as the counter
  ``radlogger_<role>_<name>_by_reason_total{reason}``.

The route is guarded by the control API's bearer token like every other route.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .device import DeviceState
from .endpoint import EndpointState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["PipelineCollector", "add_metrics_route", "metric_name"]

log = logging.getLogger(__name__)

_PRODUCER = ("produced", "published", "unrouted", "errors")
_ENDPOINT = ("received", "handled", "errors", "restarts")
_TAKEN = (*_PRODUCER, *_ENDPOINT, "dropped", "inbox_depth", "inbox_high_water", "state",
          "state_seconds", "ok", "info", "rate_per_second")
_STATES = {"device": [s.value for s in DeviceState], "endpoint": [s.value for s in EndpointState]}


def metric_name(text: str) -> str:
    """``text`` as a metric name segment: ``[a-zA-Z0-9_]`` only, no leading digit."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text).strip("_") or "value"
    return f"_{name}" if name[0].isdigit() else name


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


class PipelineCollector:
    """A prometheus_client collector over one pipeline and its status tracker."""

    def __init__(self, pipeline: Any, tracker: Any) -> None:
        self.pipeline = pipeline
        self.tracker = tracker

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily as C
        from prometheus_client.core import GaugeMetricFamily as G

        status = self.tracker.update(self.pipeline)
        snap = self.pipeline.snapshot()
        q = snap["queue"]
        for key in ("depth", "capacity", "high_water", "waiting_producers"):
            yield G(f"radlogger_queue_{key}", f"central queue {key.replace('_', ' ')}",
                    value=float(q.get(key, 0)))
        yield C("radlogger_queue_dropped", "measurements the central queue dropped",
                value=float(q.get("dropped", 0)))
        broker = snap.get("broker", {})
        yield C("radlogger_broker_batches", "batches the broker took from the queue",
                value=float(broker.get("batches", 0)))
        yield C("radlogger_broker_messages", "measurements the broker routed",
                value=float(broker.get("messages", 0)))
        yield from self._pipeline_counters(snap)
        yield from self._status(status)
        yield from self._own(snap)

    def _pipeline_counters(self, snap: Mapping[str, Any]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily as C
        from prometheus_client.core import GaugeMetricFamily as G

        for role, table, keys in (("device", snap["producers"], _PRODUCER),
                                  ("endpoint", snap["endpoints"], _ENDPOINT)):
            families = {k: C(f"radlogger_{role}_{k}", f"{k} per {role}", labels=[role])
                        for k in keys}
            dropped = C(f"radlogger_{role}_dropped", f"measurements dropped per {role}, by "
                        "reason", labels=[role, "reason"])
            for name, c in sorted(table.items()):
                for k in keys:
                    families[k].add_metric([name], float(c.get(k, 0)))
                for reason, n in sorted(c.get("dropped_by_reason", {}).items()):
                    dropped.add_metric([name, str(reason)], float(n))
            yield from families.values()
            yield dropped
            if role == "endpoint":
                for k in ("inbox_depth", "inbox_high_water"):
                    g = G(f"radlogger_endpoint_{k}", f"endpoint {k.replace('_', ' ')}",
                          labels=["endpoint"])
                    for name, c in sorted(table.items()):
                        g.add_metric([name], float(c.get(k, 0)))
                    yield g

    def _status(self, status: Any) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily as G

        for role in ("device", "endpoint"):
            comps = [c for c in status.components if c.role == role]
            state = G(f"radlogger_{role}_state", f"1 for the {role}'s current state",
                      labels=[role, "state"])
            seconds = G(f"radlogger_{role}_state_seconds", "seconds in the current state",
                        labels=[role])
            ok = G(f"radlogger_{role}_ok", "1 unless status reports a problem (stuck, "
                   "stalled, down, failed)", labels=[role])
            info = G(f"radlogger_{role}_info", f"the {role}'s plugin kind", labels=[role, "kind"])
            rate = G(f"radlogger_{role}_rate_per_second", "per second over the last seconds",
                     labels=[role, "counter"])
            for c in comps:
                states = _STATES[role] + ([] if c.state in _STATES[role] else [c.state])
                for s in states:
                    state.add_metric([c.name, s], 1.0 if s == c.state else 0.0)
                seconds.add_metric([c.name], float(c.in_state_s))
                ok.add_metric([c.name], 0.0 if c.problem else 1.0)
                info.add_metric([c.name, str(c.kind)], 1.0)
                for k, v in sorted(c.rates.items()):
                    rate.add_metric([c.name, k], float(v))
            yield from (state, seconds, ok, info, rate)

    def _own(self, snap: Mapping[str, Any]) -> Iterator[Metric]:
        """Each plugin's own ``counters()``, one family per name across components."""
        from prometheus_client.core import CounterMetricFamily, UnknownMetricFamily

        for role, table in (("device", snap["producers"]), ("endpoint", snap["endpoints"])):
            counted: dict[str, Any] = {}
            plain: dict[str, Any] = {}
            for name, c in sorted(table.items()):
                own = {k: v for k, v in c.get("own", {}).items() if _number(v) is not None}
                for key, value in own.items():
                    base, _, reason = key.rpartition(".")
                    if base and base in own:  # "bad_frames.crc" beside "bad_frames"
                        continue
                    reasons = {k.rpartition(".")[2]: _number(v) for k, v in own.items()
                               if k.startswith(f"{key}.") and "." not in k[len(key) + 1:]}
                    mname = f"radlogger_{role}_{metric_name(key)}"
                    if metric_name(key) in _TAKEN:  # clashes with the pipeline's own
                        mname = f"radlogger_{role}_own_{metric_name(key)}"
                    fam = plain.get(mname)
                    if fam is None:
                        fam = plain[mname] = UnknownMetricFamily(
                            mname, f"{key} ({role}'s own counters())", labels=[role])
                    fam.add_metric([name], _number(value) or 0.0)
                    if reasons:
                        cname = f"{mname}_by_reason"
                        fam = counted.get(cname)
                        if fam is None:
                            fam = counted[cname] = CounterMetricFamily(
                                cname, f"{key} ({role}'s own count), by reason",
                                labels=[role, "reason"])
                        for r, n in sorted(reasons.items()):
                            fam.add_metric([name, r], n or 0.0)
            yield from plain.values()
            yield from counted.values()


def add_metrics_route(app: Any, pipeline: Any, tracker: Any) -> None:
    """``GET /metrics`` on an aiohttp application: Prometheus text, or OpenMetrics when the
    scraper asks for it (``Accept: application/openmetrics-text``)."""
    from aiohttp import web

    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder
    except ImportError:
        log.warning("/metrics is off: prometheus_client is not installed (pip install "
                    "'radloggerd[web]')")

        async def missing(request: web.Request) -> web.Response:
            return web.Response(status=501, text="prometheus_client is not installed: pip "
                                "install 'radloggerd[web]'\n")

        app.router.add_get("/metrics", missing)
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipeline, tracker))

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/metrics", metrics)
