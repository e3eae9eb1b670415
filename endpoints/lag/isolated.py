"""Run a group of endpoints (a lag processing pipeline) in its own process.

::

    [endpoint:lagproc]
    type = isolated
    subscribe = widar.lagset
    stages = lag_normalize, lag_fft, integrate
    stage_options = integrate.count = 10
    forward = last

This endpoint is the input stage's end of the boundary (``radlogger.workers``): it hands
every lag set it receives to the pipeline process and publishes what the process forwards
back (by default the last stage's output, e.g. ``widar.spectrum_int``) into this pipeline as
if the stages ran here.  The input stage itself never waits on the process: this endpoint's
runner does.  When the process's queue is full (``net.unix.max_dgram_qlen`` datagrams) the
runner keeps the batch and waits for room, so this endpoint's inbox fills and the inbox's
policy applies as for any slow endpoint (``drop_newest``/``drop_oldest`` count
``inbox_full``; with backpressure the broker waits).  Only at a stop deadline is what is left
counted as ``would_block``.  A crash or hang of the process is detected, counted and
restarted; what it had taken and not finished is dropped as ``child_crashed`` (moved out of
``handled``), what could not be handed over meanwhile is dropped with its reason
(``peer_dead``, ``restarting``, ``no_slot``, ...).

Several ``isolated`` endpoints are several worker processes; each endpoint owns its own
(``worker_processes()``), and control events sent with
:func:`radlogger.workers.broadcast_control` over a pipeline's endpoints reach all of them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from radlogger.endpoint import NEVER_INLINE
from radlogger.measurement import Measurement
from radlogger.options import Option, OptionError, by_reason
from radlogger.processing import PublishingEndpoint
from radlogger.workers import StageSpec, WorkerProcess, load_stage

__all__ = ["IsolatedEndpoint", "parse_stages", "chain_produces"]

_DEV, _QTY = "\x00device\x00", "\x00quantity\x00"


def parse_stages(stages: list[str], stage_options: list[str]) -> list[StageSpec]:
    """``["norm=lag_normalize", "lag_fft"]`` + ``["lag_fft.window=hann"]`` -> specs.

    Loads each stage class here (not only in the child) so a typo or a bad option is a
    one-line configuration error at start, not a process that dies and restarts forever.
    """
    if not stages:
        raise OptionError("stages", "stages: name at least one endpoint kind or module:Class, "
                          "e.g. stages = lag_normalize, lag_fft")
    named: list[tuple[str, str]] = []
    for item in stages:
        name, eq, target = item.partition("=")
        name, target = (name.strip(), target.strip()) if eq else ("", item.strip())
        if not name:
            name = target.rpartition(":")[2].rpartition(".")[2]
            base, k = name, 2
            while any(n == name for n, _ in named):
                name, k = f"{base}{k}", k + 1
        if any(n == name for n, _ in named):
            raise OptionError("stages", f"stages: two stages are named {name!r}; name them "
                              "NAME=KIND")
        named.append((name, target))
    settings: dict[str, dict[str, str]] = {n: {} for n, _ in named}
    for item in stage_options:
        key, eq, value = item.partition("=")
        stage, dot, opt = key.strip().partition(".")
        if not eq or not dot or not opt.strip():
            raise OptionError("stage_options", f"stage_options: {item!r} is not "
                              "STAGE.KEY=VALUE (e.g. integrate.count=8)")
        if stage not in settings:
            raise OptionError("stage_options", f"stage_options: {item!r}: no stage named "
                              f"{stage!r}; stages are {', '.join(settings)}")
        settings[stage][opt.strip()] = value.strip()
    specs = []
    for name, target in named:
        try:
            load_stage(target)(name, settings[name])  # its options and own checks
        except OptionError as exc:
            raise OptionError("stage_options", f"stage {name} ({target}): {exc}") from None
        except (LookupError, TypeError, ValueError) as exc:
            raise OptionError("stages", f"stage {name}: cannot load {target!r}: {exc}") \
                from None
        specs.append(StageSpec(target, name, settings[name]))
    return specs


def chain_produces(specs: list[StageSpec], forward: list[str]) -> tuple[str, ...]:
    """``produces`` templates of what comes back: the stages' templates composed in order.

    lag_normalize, lag_fft, integrate forwarding ``last`` -> ``{device}.spectrum_int``; with
    topic patterns in ``forward`` every stage's output is listed (the graph matches them).
    """
    per_stage: list[list[str]] = []
    current = [f"{_DEV}.{_QTY}"]
    for spec in specs:
        stage = load_stage(spec.target)(spec.name, spec.settings)
        outs = []
        for topic in current:
            device, _, quantity = topic.partition(".")
            for template in stage.produces:
                try:
                    outs.append(template.format(topic=topic, source=device, device=device,
                                                quantity=quantity, name=spec.name))
                except (KeyError, IndexError, ValueError):
                    pass
        per_stage.append(outs)
        current = outs
    chosen = list(per_stage[-1]) if "last" in forward else []
    if any(f not in ("last", "none") for f in forward):
        chosen = [t for outs in per_stage for t in outs]
    return tuple(dict.fromkeys(t.replace(_DEV, "{device}").replace(_QTY, "{quantity}")
                               for t in chosen))


class IsolatedEndpoint(PublishingEndpoint):
    kind = "isolated"
    summary = "runs a chain of endpoints (e.g. lag_normalize, lag_fft, integrate) in a " \
              "supervised child process"
    options = (
        NEVER_INLINE,  # it waits for room in its worker processes' queues
        Option("stages", list, [], "endpoint kinds or module:Class paths, in chain order; "
               "NAME=KIND names one", required=True),
        Option("stage_options", list, [], "stage settings as STAGE.KEY=VALUE, e.g. "
               "integrate.count=8"),
        Option("forward", list, ["last"], "outputs published back here: last (the last "
               "stage's), none, or topic patterns"),
        Option("heartbeat", float, 0.2, "seconds between the process's heartbeats", min=0.01),
        Option("hang_timeout", float, 5.0, "silence (no heartbeat) after which the process is "
               "killed and restarted, seconds", min=0.05),
        Option("start_timeout", float, 30.0, "seconds the process may take to start", min=0.1),
        Option("stop_timeout", float, 5.0, "seconds the process may take to drain at stop",
               min=0.0),
        Option("max_datagram", int, 65536, "largest datagram; bigger measurements go through "
               "shared memory", min=1024, max=200_000),
        Option("shm_slots", int, 8, "shared-memory slots per direction", min=1, max=1024),
        Option("shm_slot_mb", float, 4.0, "size of one shared-memory slot, MiB", min=0.01),
        Option("send_wait", float, 0.05, "longest wait for room when the process's queue is "
               "full, seconds (0 = never wait)", min=0.0, max=1.0),
        Option("child_batch", int, 256, "measurements the process takes per batch", min=1),
        Option("child_linger", float, 0.01, "seconds the process waits for more when it "
               "has fewer than child_batch (its stages then work on bigger batches)",
               min=0.0, max=1.0),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.stage_specs = parse_stages(s.stages, s.stage_options)
        self.produces = chain_produces(self.stage_specs, s.forward)
        self.process: WorkerProcess | None = None
        self._stop_at: float | None = None  # give up waiting for room by then (a stop)
        self._lost_lock = threading.Lock()
        self._lost_counted = 0  # of the process's ``lost``, moved from handled to dropped

    def open(self) -> None:
        s = self.settings
        self.process = WorkerProcess(
            self.name, self.stage_specs, s.forward, self._returned, heartbeat=s.heartbeat,
            hang_timeout=s.hang_timeout, start_timeout=s.start_timeout,
            max_datagram=s.max_datagram, shm_slots=s.shm_slots,
            shm_slot_bytes=int(s.shm_slot_mb * (1 << 20)), send_wait=s.send_wait,
            batch_max=s.child_batch, linger=s.child_linger, on_death=self._died)
        self._lost_counted = 0
        self.process.start()

    def _returned(self, m: Measurement) -> None:
        """A result from the process: publish it as this endpoint's (supervisor thread)."""
        m.source = self.name
        self.publish(m)

    def handle_batch(self, batch: list[Measurement]) -> None:
        proc = self.process
        if proc is None:
            raise RuntimeError(f"isolated endpoint {self.name} is not open")
        failed = proc.send_batch(batch, self._keep_trying)
        if failed:
            # Not endpoint errors (no error policy, no restart): dropped, with the reason.
            for reason, n in failed.items():
                self.count_dropped(reason, n)

    def _keep_trying(self) -> bool:
        """Wait on for room in the process's queue: while it runs, until a stop's deadline."""
        proc, at = self.process, self._stop_at
        return proc is not None and proc.state == "running" and not self.inbox.abandoned \
            and (at is None or time.monotonic() < at)

    def deadline(self, at: float | None) -> None:
        """A flush or stop must be done by ``at``: stop waiting for room a little before, so
        what is left is counted (``would_block``) and the process has time to stop."""
        self._stop_at = None if at is None else \
            at - min(0.5, max(0.0, at - time.monotonic()) / 4)

    def _died(self, why: str) -> None:
        """Supervisor thread: the process died; what it had not confirmed is lost."""
        self._settle_lost("child_crashed")

    def _settle_lost(self, reason: str) -> None:
        """Move what the process lost since the last call from handled to dropped: it was
        counted handled when handed over, but it never came out."""
        proc = self.process
        if proc is None:
            return
        with self._lost_lock:
            n, self._lost_counted = proc.lost - self._lost_counted, proc.lost
        self.count_lost(reason, n)

    @property
    def idle(self) -> bool:
        """Idle only when the process has also confirmed everything it was sent."""
        proc = self.process
        return super().idle and (proc is None or proc.in_flight == 0)

    def flush(self) -> None:
        """Ask the pipeline process to flush its stages (partial integrations) and wait for
        the results to come back, so that at stop they travel on while the queue is open."""
        if self.process is not None:
            self.process.control_and_wait("flush", timeout=self.settings.stop_timeout)

    def control(self, name: str | int, arg: int = 0) -> bool:
        """Send a control event (flush, reset, mark, or a code >= 100) to this process."""
        return self.process.control(name, arg) if self.process is not None else False

    def worker_processes(self) -> list[WorkerProcess]:
        """This endpoint's live worker process (the live set belongs to its owner)."""
        return [self.process] if self.process is not None else []

    def isolation_stats(self) -> dict[str, Any]:
        return self.process.snapshot() if self.process is not None else {}

    def counters(self) -> dict[str, int | float]:
        """The child process's accounting, flat: numbers as they are (``restarts``,
        ``crashes``, ``hangs``, ``lost``, ``would_block``, ...), counts by reason
        (``undelivered``, the child's ``child``) as ``name.reason``."""
        proc = self.process
        out: dict[str, int | float] = {
            "would_block": proc.undelivered["would_block"] if proc is not None else 0}
        for key, value in self.isolation_stats().items():
            if isinstance(value, dict):
                out.update(by_reason(key, {k: v for k, v in value.items()
                                           if isinstance(v, (int, float))}))
            elif isinstance(value, (int, float)):
                out[key] = value
        return out

    def close(self) -> None:
        if self.process is not None:
            self.process.stop(self.settings.stop_timeout)
            self._settle_lost("shutdown")  # not confirmed by the end of stop_timeout
