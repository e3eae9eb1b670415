"""Applying a new configuration to a running pipeline (SIGHUP) without losing queued data.

The unit of change is a section: a device or endpoint whose plugin and resolved settings are
unchanged keeps running untouched; a removed one is stopped (a device's queued measurements
are still delivered, an endpoint drains its inbox, flushes and closes); a changed one is
stopped and a new instance started; a new one is started.  The final stats of every endpoint
taken out are kept (:attr:`Reconfigurer.retired`) so the accounting stays whole.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .config import Config, PluginSection
from .pipeline import Pipeline

__all__ = ["Reconfigurer"]

log = logging.getLogger("radlogger.daemon")


class Reconfigurer:
    """Which configuration sections run in ``pipeline``, and the code that changes them."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.running: dict[str, PluginSection] = {}  # "device:x" / "endpoint:y" -> section
        self.retired: list[dict[str, Any]] = []  # final stats of endpoints taken out

    def build(self, config: Config) -> None:
        """The initial graph (before the pipeline starts): the loader's instances."""
        for spec in config.endpoints.values():
            self.pipeline.add_endpoint(spec.instance)
            self.running[spec.section] = spec
        for spec in config.devices.values():
            self.pipeline.add_device(spec.instance)
            self.running[spec.section] = spec

    def apply(self, new: Config, deadline_s: float) -> str:
        """Bring the running pipeline to ``new``; a one-line summary of what changed."""
        pipeline = self.pipeline
        wanted = {spec.section: spec for spec in [*new.devices.values(), *new.endpoints.values()]}
        gone = [k for k, s in self.running.items() if k not in wanted or not s.same_as(wanted[k])]
        fresh = [k for k, s in wanted.items() if k not in self.running or k in gone]
        changed = {k for k in gone if k in wanted}

        # Devices first: a stopped device's queued measurements stay queued and are delivered.
        for key in gone:
            spec = self.running[key]
            if spec.role == "device":
                device = pipeline.devices[spec.name]
                pipeline.remove_device(spec.name, deadline_s)
                if device.alive:
                    log.error("reload: device %s did not stop within %.1f s", spec.name,
                              deadline_s)
                del self.running[key]
        # Endpoints: rewired between two broker batches.  A restarted endpoint's old instance
        # drains and closes before the new one opens (they may share a file).
        leaving = []
        with pipeline.broker.paused():
            for key in gone:
                leaving_spec = self.running.get(key)
                if leaving_spec is None or leaving_spec.role != "endpoint":
                    continue
                endpoint = pipeline.endpoints.pop(leaving_spec.name)
                pipeline.broker.unsubscribe_owner(endpoint)
                del self.running[key]
                if key in changed:
                    self._retire(endpoint, deadline_s)
                else:
                    leaving.append(endpoint)
            failed = [key for key in fresh
                      if wanted[key].role == "endpoint" and not self._start_endpoint(wanted[key])]
        for endpoint in leaving:
            self._retire(endpoint, deadline_s)
        for key in fresh:
            spec = wanted[key]
            if spec.role == "device":
                pipeline.add_device(spec.instance)
                self.running[key] = spec
        for key, spec in wanted.items():  # unchanged: adopt the new section (its file may differ)
            if key in self.running and key not in fresh:
                # ... but keep the running instance: the loader's new one only validated the
                # section and was never started (nor attached: it registered nowhere)
                spec.instance = self.running[key].instance
                self.running[key] = spec

        done = (("added", set(fresh) - changed - set(failed)), ("removed", set(gone) - changed),
                ("restarted", changed - set(failed)))
        text = ", ".join(f"{verb} {', '.join(sorted(keys))}" for verb, keys in done if keys)
        if failed:
            text += f"{'; ' if text else ''}failed to start {', '.join(sorted(failed))}"
        return text or "no change"

    def _start_endpoint(self, spec: PluginSection) -> bool:
        try:
            self.pipeline.add_endpoint(spec.instance)
        except Exception as exc:  # noqa: BLE001 - one endpoint failing must not end the daemon
            endpoint = self.pipeline.endpoints.pop(spec.name, None)
            if endpoint is not None:
                self.pipeline.broker.unsubscribe_owner(endpoint)
                self.pipeline.detach(endpoint)
            log.error("reload: endpoint %s cannot start (%s: %s); it is not running, fix it and "
                      "reload again", spec.name, type(exc).__name__, exc)
            return False
        self.running[spec.section] = spec
        return True

    def _retire(self, endpoint: Any, deadline_s: float) -> None:
        endpoint.stop(time.monotonic() + deadline_s)
        self.pipeline.detach(endpoint)
        snap = endpoint.stats.snapshot()
        snap["kind"] = endpoint.kind
        self.retired.append(snap)
