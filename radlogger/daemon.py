"""The daemon: one pipeline built from a configuration, driven by signals.

The main thread owns the lifecycle and sleeps in ``select`` on one socket: signal numbers arrive
there through :func:`signal.set_wakeup_fd` (a Python signal handler must not take locks, so the
handlers themselves do nothing), and so do the daemon's own wake-ups (``--once`` completion, a
stop requested from another thread).  Nothing polls: an idle daemon costs no CPU.

* SIGTERM / SIGINT: graceful stop within ``shutdown_deadline`` (devices stop, queue and inboxes
  drain, endpoints flush and close; what misses the deadline is counted).  Exit code 0 when
  everything drained, 1 when the deadline was missed or the pipeline could not start.
* SIGHUP: re-read the configuration and apply the difference; a configuration that does not
  validate is rejected with a logged error and the running one stays.
* SIGUSR1: log the stats line now.

Under systemd (``Type=notify``) the daemon reports READY/RELOADING/STOPPING and a status line
through ``$NOTIFY_SOCKET``; the protocol is one datagram, so no library is needed for it.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import RESTART_ONLY, Config, ConfigError, load_config
from .control import Control
from .losses import describe_losses, total_lost
from .pipeline import Pipeline, tune_gc
from .reload import Reconfigurer
from .service import configure_logging, sd_notify
from .stats import format_summary

__all__ = ["Daemon", "EXIT_LOSS"]

#: exit code of a ``--once``/``--duration`` run that dropped measurements
EXIT_LOSS = 3

log = logging.getLogger("radlogger.daemon")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
_WAKE_ONCE = 200  # wake-up codes besides signal numbers (which are < 65)
_WAKE_STOP = 201
_WAKE_RELOAD = 202


class Daemon:
    """Runs one configuration until a signal, a duration, or (``once``) the data ends."""

    def __init__(self, config: Config, config_path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, log_level: str | None = None,
                 stats_json: str | os.PathLike[str] | None = None,
                 embedded: bool = False) -> None:
        self.config = config
        # embedded (tests, another program): leave the process's logging and GC settings alone
        self.embedded = embedded
        self.config_path = config_path
        self.env = env
        self.log_level = log_level  # command-line override, kept across reloads
        self.stats_json = Path(stats_json) if stats_json else None
        self.pipeline: Pipeline | None = None
        self.reloads = 0
        self.rejected_reloads = 0
        self.reconfigurer: Reconfigurer | None = None
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self._ready = threading.Event()

    # ------------------------------------------------------------------ control from outside
    def _wake(self, code: int) -> None:
        try:
            self._wsock.send(bytes((code,)))
        except OSError:  # closed (daemon ended) or full (a wake-up is pending anyway)
            pass

    def request_stop(self) -> None:
        self._wake(_WAKE_STOP)

    def request_reload(self) -> None:
        self._wake(_WAKE_RELOAD)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the pipeline runs (for in-process users and tests)."""
        return self._ready.wait(timeout)

    # ------------------------------------------------------------------ building
    def _build(self) -> Pipeline:
        d = self.config.daemon
        pipeline = Pipeline(queue_size=d.queue_size, overflow=d.queue_policy,
                            block_timeout=d.block_timeout, batch_max=d.batch_max,
                            pool_workers=d.pool_workers, max_topics=d.max_topics)
        pipeline.broker.linger = d.linger
        self.reconfigurer = Reconfigurer(pipeline)
        self.reconfigurer.build(self.config)
        return pipeline

    def _apply_logging(self) -> None:
        """Raises ConfigError when the log file cannot be opened."""
        if self.embedded:
            return
        d = self.config.daemon
        try:
            configure_logging(self.log_level or d.log_level, d.log_file)
        except OSError as exc:
            raise ConfigError(f"log_file = {d.log_file}: cannot open ({exc.strerror}); use a "
                              "writable path, or leave it empty for standard error",
                              section="radlogger", key="log_file") from None

    # ------------------------------------------------------------------ running
    def run(self, duration: float | None = None, once: bool = False) -> int:
        """Run to the end; the exit code (0 clean, 1 runtime failure, 3 a batch run that lost
        measurements: ``--once``/``--duration`` ending by itself with any drop counted).

        Raises :class:`ConfigError` before starting anything if the log file cannot be opened.
        """
        signals = threading.current_thread() is threading.main_thread()
        previous = self._install_signals() if signals else None
        try:
            return self._run(duration, once)
        finally:
            if previous is not None:
                self._restore_signals(previous)
            self._rsock.close()
            self._wsock.close()

    def _run(self, duration: float | None, once: bool) -> int:
        self._apply_logging()
        for warning in self.config.warnings:
            log.warning("%s", warning)
        self.pipeline = pipeline = self._build()
        if not self.embedded:
            tune_gc()  # after imports and plugin construction: those objects get frozen
        try:
            pipeline.start()
        except Exception as exc:  # noqa: BLE001 - report which plugin could not start
            failed = [n for n, e in pipeline.endpoints.items() if e.stats.state == "stopped"]
            log.error("cannot start%s: %s: %s", f" endpoint {failed[0]}" if failed else "",
                      type(exc).__name__, exc)
            pipeline.stop(self.config.daemon.shutdown_deadline)
            self._final(False)
            return 1
        control = Control(pipeline, self.config.daemon)
        try:
            control.start()
        except Exception as exc:  # noqa: BLE001 - e.g. the port is taken
            log.error("cannot start the status API: %s", exc)
            control.stop()
            pipeline.stop(self.config.daemon.shutdown_deadline)
            self._final(False)
            return 1
        log.info("running %d devices, %d endpoints from %s", len(pipeline.devices),
                 len(pipeline.endpoints), ", ".join(self.config.files))
        self._ready.set()
        sd_notify("READY=1\nSTATUS=running")
        if once:
            self._watch_finite()
        reason, by_itself = self._loop(duration, once)
        log.info("stopping (%s), deadline %.1f s", reason, self.config.daemon.shutdown_deadline)
        sd_notify("STOPPING=1")
        control.stop()
        drained = pipeline.stop(self.config.daemon.shutdown_deadline)
        if not drained:
            log.error("shutdown deadline of %.1f s missed; undelivered measurements are counted "
                      "as dropped (reason shutdown)", self.config.daemon.shutdown_deadline)
        self._final(drained)
        if not drained:
            return 1
        if (once or duration is not None) and by_itself and self._batch_lost(pipeline):
            return EXIT_LOSS  # a loss the user did not choose; a signal-stopped daemon says 0
        return 0

    def _batch_lost(self, pipeline: Pipeline) -> bool:
        """A batch run (``--once``, ``--duration``) failed its promise: something was dropped,
        or a configured device never delivered a single measurement (wrong address, no
        hardware).  Logged as a WARNING either way."""
        producers = pipeline.producers
        silent = sorted(n for n in pipeline.devices
                        if n not in producers or producers[n].produced == 0)
        for name in silent:
            device = pipeline.devices[name]
            log.warning("device %s never delivered a measurement (state %s%s)", name,
                        device.state.value,
                        f", last error: {device.last_error}" if device.last_error else "")
        return bool(silent) or total_lost(pipeline.snapshot()) > 0

    def _loop(self, duration: float | None, once: bool) -> tuple[str, bool]:
        """Run until a signal, a stop request, the duration or (``--once``) the end of every
        finite device; returns why, and whether the run ended by itself."""
        end = time.monotonic() + duration if duration else None
        interval = self.config.daemon.stats_interval
        next_stats = time.monotonic() + interval if interval else None
        # losses are summarised every few seconds even with the stats lines off
        next_losses = time.monotonic() + self._losses_interval()
        while True:
            now = time.monotonic()
            deadlines = [t for t in (end, next_stats, next_losses) if t is not None]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            select.select([self._rsock], [], [], timeout)
            for code in self._take_wakeups():
                if code in (signal.SIGTERM, signal.SIGINT):
                    log.info("received %s", signal.Signals(code).name)
                    return signal.Signals(code).name, False
                if code == _WAKE_STOP:
                    return "stop requested", False
                if code in (signal.SIGHUP, _WAKE_RELOAD):
                    self.reload()
                    if self.config.daemon.stats_interval != interval:
                        interval = self.config.daemon.stats_interval
                        next_stats = time.monotonic() + interval if interval else None
                if code == signal.SIGUSR1:
                    self.log_stats()
                if code == _WAKE_ONCE:
                    if self._finite_done():
                        return "every finite device finished", True
                    self._watch_finite()
            now = time.monotonic()
            if end is not None and now >= end:
                return f"duration {duration:g} s elapsed", True
            if next_stats is not None and now >= next_stats:
                self.log_stats()
                next_stats = max(next_stats + interval, now)
            if now >= next_losses:
                if self.pipeline is not None:
                    self.pipeline.losses.poll(self.pipeline.snapshot())
                next_losses = now + self._losses_interval()

    def _losses_interval(self) -> float:
        interval: float = self.config.daemon.loss_interval
        if self.pipeline is not None:
            self.pipeline.losses.interval = interval
        return interval

    def _take_wakeups(self) -> list[int]:
        codes: list[int] = []
        while True:
            try:
                data = self._rsock.recv(64)
            except (BlockingIOError, InterruptedError):
                return codes
            if not data:
                return codes
            codes.extend(data)

    # ------------------------------------------------------------------ --once
    def _finite(self) -> list[Any]:
        """Devices ``--once`` waits for: those declaring ``finite`` (replays, counted runs)."""
        assert self.pipeline is not None
        return [d for d in self.pipeline.devices.values() if d.finite]

    def _finite_done(self) -> bool:
        return not any(d.alive for d in self._finite())

    def _watch_finite(self) -> None:
        """Wake the main loop when every finite device thread has ended (finished or failed)."""
        threads = [t for d in self._finite() if (t := d.thread) is not None]

        def watch() -> None:
            for t in threads:
                t.join()
            self._wake(_WAKE_ONCE)

        threading.Thread(target=watch, name="radlogger-once", daemon=True).start()

    # ------------------------------------------------------------------ stats
    def snapshot(self) -> dict[str, Any]:
        assert self.pipeline is not None
        snap = self.pipeline.snapshot()
        snap["retired_endpoints"] = list(self.retired)
        snap["reloads"] = {"applied": self.reloads, "rejected": self.rejected_reloads}
        return snap

    def summary(self, snap: dict[str, Any] | None = None, own: bool = False) -> str:
        """The one-line stats; endpoints appear as producers only once they published."""
        if self.pipeline is None:
            return "(not running)"
        snap = dict(snap or self.pipeline.snapshot())
        devices = self.pipeline.devices
        snap["producers"] = {n: p for n, p in snap["producers"].items()
                             if n in devices or p["produced"]}
        return format_summary(snap, own)

    def log_stats(self, final: bool = False) -> None:
        snap = self.pipeline.snapshot() if self.pipeline is not None else None
        line = self.summary(snap, own=final)
        lost = describe_losses(snap) if final and snap is not None else ""
        if lost:
            log.warning("final stats: %s; %s", lost, line)
        else:
            log.info("%s%s", "final stats: " if final else "stats: ", line)
        if self.pipeline is not None and snap is not None and not final:
            self.pipeline.losses.poll(snap)
        if not final:
            sd_notify(f"STATUS={line[:200]}")

    def _final(self, drained: bool) -> None:
        self.log_stats(final=True)
        if self.stats_json is None or self.pipeline is None:
            return
        snap = self.snapshot()
        snap["drained"] = drained
        # The invariant over the final counters (the pipeline has stopped: nothing is queued
        # or pending; an endpoint's batch abandoned at the deadline is already a counted drop).
        snap["balanced"] = snap["queue"]["depth"] == 0 and all(
            p["produced"] == p["published"] + p["dropped"]
            for p in snap["producers"].values()) and all(
            e["received"] == e["handled"] + e["dropped"]
            for e in [*snap["endpoints"].values(), *self.retired])
        try:
            self.stats_json.write_text(json.dumps(snap, indent=1, default=str) + "\n")
        except OSError as exc:
            log.error("cannot write stats to %s: %s", self.stats_json, exc.strerror)

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> tuple[int, dict[Any, Any]]:
        def ignore(signum: int, frame: Any) -> None:
            """The byte already reached the wake-up socket; the main loop acts on it."""

        handlers = {sig: signal.signal(sig, ignore) for sig in _SIGNALS}
        old_fd = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        return old_fd, handlers

    @staticmethod
    def _restore_signals(previous: tuple[int, dict[int, Any]]) -> None:
        old_fd, handlers = previous
        signal.set_wakeup_fd(old_fd)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    # ------------------------------------------------------------------ reload
    def reload(self) -> bool:
        """Re-read the configuration and apply the difference; False if it was rejected."""
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            try:
                new = load_config(self.config_path, self.env)
            except ConfigError as exc:
                self.rejected_reloads += 1
                log.error("reload rejected, the running configuration stays: %s", exc)
                return False
            for warning in new.warnings:
                log.warning("%s", warning)
            self._apply(new)
            self.reloads += 1
            return True
        finally:
            sd_notify("READY=1")

    @property
    def retired(self) -> list[dict[str, Any]]:
        """Final stats of the endpoints reloads removed or replaced."""
        return self.reconfigurer.retired if self.reconfigurer else []

    def _apply(self, new: Config) -> None:
        assert self.reconfigurer is not None
        old = self.config
        for key in RESTART_ONLY:
            if new.daemon[key] != old.daemon[key]:
                log.warning("reload: %s = %s needs a restart; keeping %s", key, new.daemon[key],
                            old.daemon[key])
                new.daemon[key] = old.daemon[key]
        self.config = new
        try:
            self._apply_logging()
        except ConfigError as exc:
            log.error("reload: %s; logging continues as before", exc)
        summary = self.reconfigurer.apply(new, new.daemon.shutdown_deadline)
        log.info("reload applied: %s", summary)
