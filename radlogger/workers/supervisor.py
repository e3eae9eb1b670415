"""The parent's side of a worker process: spawn, feed, listen, supervise, restart.

Used by every worker process (a pool's workers, an isolated chain).  The child is fed through
its :class:`.channel.Channel` (a full queue is waited out only while the caller's
``keep_trying`` says so; what cannot be handed over is counted by reason); what it forwards is
published through ``publish``, acknowledged control events go to ``on_ack``.

Supervision (one thread per worker process): the child is dead when its process exits
(counted in ``crashes``) or hung when no heartbeat came for ``hang_timeout`` seconds (killed,
counted in ``hangs``); either way ``on_death`` is told and it is restarted after a backoff.
Accounting: ``sent`` counts measurements handed to the kernel; the child's heartbeats report
how many it processed (``confirmed``); what was sent to an incarnation that died and never
confirmed is ``lost``.  So ``offered == sent + sum(undelivered)`` and
``sent == confirmed + lost + in_flight``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ..backoff import Backoff
from ..errors import OperationError
from ..measurement import Measurement
from . import messages
from .chain import StageSpec
from .channel import Channel

__all__ = ["WorkerProcess", "WorkerError", "WorkerHost", "broadcast_control"]

log = logging.getLogger("radlogger.workers")
_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class WorkerError(OperationError, RuntimeError):
    """A worker process could not be started (the message says why, in one line)."""


@runtime_checkable
class WorkerHost(Protocol):
    """What owns worker processes (an endpoint): the live set is its, not a global one."""

    def worker_processes(self) -> list[WorkerProcess]: ...


def broadcast_control(owners: Iterable[object], name: str | int, arg: int = 0) -> int:
    """Send a control event to every running worker process of ``owners`` (e.g. a pipeline's
    ``endpoints.values()``); returns how many took it."""
    return sum(p.control(name, arg) for o in list(owners) if isinstance(o, WorkerHost)
               for p in o.worker_processes() if p.state == "running")


class WorkerProcess:
    """A chain of endpoint stages running in a child process, fed from this process."""

    def __init__(self, name: str, stages: Iterable[StageSpec], forward: Iterable[str] = ("last",),
                 publish: Callable[[Measurement], Any] | None = None, *,
                 on_ack: Callable[[str], Any] | None = None,
                 on_death: Callable[[str], Any] | None = None,
                 heartbeat: float = 0.2, hang_timeout: float = 5.0, start_timeout: float = 30.0,
                 max_datagram: int = 65536, shm_slots: int = 8, shm_slot_bytes: int = 4 << 20,
                 send_wait: float = 0.05, batch_max: int = 256, linger: float = 0.0,
                 log_level: str = "INFO",
                 backoff: Backoff | None = None) -> None:
        self.name = name
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("a worker process needs at least one stage")
        self.forward = [f for f in forward if f != "none"]
        self.publish = publish
        self.on_ack = on_ack
        self.on_death = on_death
        self.heartbeat = heartbeat
        self.hang_timeout = max(hang_timeout, 3 * heartbeat)
        self.start_timeout = start_timeout
        self.batch_max, self.linger = batch_max, linger  # the child's batches (.child)
        self.log_level = log_level
        self.backoff = backoff or Backoff(0.1, 10.0, 2.0, 0.1)
        self.channel = Channel(max_datagram, send_wait, shm_slots, shm_slot_bytes)
        self.feeder = self.channel.feeder
        # counters
        self.crashes = self.hangs = self.restarts = 0
        self.lost = self.returned = self.return_errors = self.control_acks = 0
        self._acked = threading.Condition()
        self.messages: deque[str] = deque(maxlen=200)
        self.child_stats: dict[str, int] = {}
        self.last_error = ""
        self.state = "stopped"
        self.incarnation = 0
        # internals
        self._confirmed_before = self._inc_done = self._sent_at_ready = 0
        self._ready_at = 0.0
        self._ready = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.restart_at = self._spawned_at = self._last_hb = 0.0
        self._child_error = ""

    # ---------------------------------------------------------------- properties
    @property
    def sent(self) -> int:
        return self.feeder.sent

    @property
    def undelivered(self) -> Counter[str]:
        return self.feeder.undelivered

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def confirmed(self) -> int:
        return self._confirmed_before + self._inc_done

    @property
    def in_flight(self) -> int:
        """Sent to the current incarnation and not yet confirmed processed."""
        if self.state not in ("running", "stopping"):
            return 0
        return max(0, self.sent - self._sent_at_ready - self._inc_done)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Spawn the child and wait until it is ready; raises :class:`WorkerError`."""
        self.channel.open()
        self._stop = False
        self.state = "starting"
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, daemon=True,
                                        name=f"worker:{self.name}")
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.05):
            if self.state == "failed" or time.monotonic() > deadline:
                why = self.last_error or "did not become ready within " \
                    f"{self.start_timeout:g} s"
                self.stop(2.0)
                raise WorkerError(f"worker {self.name}: {why}")

    def _spec(self) -> dict[str, Any]:
        return {"name": self.name, "incarnation": self.incarnation, **self.channel.child_spec(),
                "stages": [s.as_json() for s in self.stages], "forward": self.forward,
                "heartbeat": self.heartbeat, "batch_max": self.batch_max, "linger": self.linger,
                "log_level": self.log_level}

    def _spawn(self) -> None:
        self.incarnation += 1
        self.channel.renew()
        env = dict(os.environ)
        # the child imports the stages by name: give it the import path we have
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._inc_done = 0
        self._child_error = ""
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from radlogger.workers.child import main; main()"],
            stdin=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(self._spec()).encode())
            self._proc.stdin.close()
        except OSError:
            pass  # it died at once: the supervisor sees the exit
        self._spawned_at = self._last_hb = time.monotonic()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the child (drain, flush, bye) and release everything; True if it was clean."""
        deadline = time.monotonic() + timeout
        clean = True
        with self.feeder.lock:
            was = self.state
            self.state = "stopping"
        proc = self._proc
        if proc is not None:
            # a child that is not running was never sent anything of this incarnation
            if was != "running" or not self.feeder.control(messages.CONTROL_CODES["stop"], 0,
                                                           wait=timeout):
                proc.kill()
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                clean = False
                log.error("worker %s: did not stop within %.1f s, killed", self.name, timeout)
                proc.kill()
                proc.wait()
        self._stop = True
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        late = self._proc  # a restart the supervisor began just as we stopped
        if late is not None and late is not proc and late.poll() is None:
            late.kill()
            late.wait()
        self._drain_ret()
        self._drain_up()
        with self.feeder.lock:
            out, sent = self.feeder.detach("stopped")
            unconfirmed = max(0, sent - self._sent_at_ready - self._inc_done) \
                if self._ready.is_set() else 0
            self.lost += unconfirmed
            self._confirmed_before += self._inc_done
            self._inc_done = 0
            self._sent_at_ready = sent
        if unconfirmed:
            clean = False
            log.error("worker %s: %d measurements sent were not confirmed processed at stop",
                      self.name, unconfirmed)
        self.channel.close(out)
        self.state = "stopped"
        self._ready.clear()
        return clean

    # ---------------------------------------------------------------- downstream
    def kill(self) -> None:
        """End the current incarnation now (a broken hand-over): counted as a crash, restarted."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def send_batch(self, batch: Iterable[Measurement],
                   keep_trying: Callable[[], bool] | None = None) -> Counter[str]:
        """Send each measurement; returns the reasons of those not handed over (counted).
        With ``keep_trying`` a full queue is waited out while it says so (:mod:`.feeder`)."""
        return self.feeder.send_batch(batch, keep_trying)

    def control(self, name: str | int, arg: int = 0) -> bool:
        """Send a control event (``flush``, ``reset``, ``mark`` or a code >= 100)."""
        code = name if isinstance(name, int) else messages.CONTROL_CODES.get(name)
        if code is None:
            raise ValueError(f"unknown control event {name!r}; known: "
                             f"{', '.join(messages.CONTROL_CODES)} or a number >= 100")
        return self.feeder.control(int(code), arg, wait=1.0)

    def control_and_wait(self, name: str | int, arg: int = 0, timeout: float = 5.0) -> bool:
        """Send a control event and wait until the child acknowledged it, i.e. until what it
        published in response has been handed to ``publish``.  False on timeout or failure."""
        with self._acked:
            before = self.control_acks
        if self.state != "running" or not self.control(name, arg):
            return False
        with self._acked:
            return self._acked.wait_for(lambda: self.control_acks > before, timeout)

    # ---------------------------------------------------------------- supervision
    def _supervise(self) -> None:
        tick = min(0.05, self.heartbeat / 2)
        socks = self.channel.sockets
        while not self._stop:
            try:
                select.select(socks, [], [], tick)
                self._drain_ret()
                self._drain_up()
                self._check()
            except Exception:  # noqa: BLE001 - supervision must survive its own bugs
                log.exception("worker %s: supervisor error", self.name)
                time.sleep(tick)

    def _check(self) -> None:
        proc, now, state = self._proc, time.monotonic(), self.state
        if state in ("starting", "running") and proc is not None:
            code = proc.poll()
            if code is not None:
                self._drain_ret()  # what it finished before it died still counts
                self._drain_up()
                self._died("crash", f"exited with code {code}" if code >= 0
                           else f"killed by signal {-code}")
            elif state == "running" and now - self._last_hb > self.hang_timeout:
                proc.kill()
                proc.wait()
                self._died("hang", f"no heartbeat for {now - self._last_hb:.1f} s: killed")
            elif state == "starting" and now - self._spawned_at > self.start_timeout:
                proc.kill()
                proc.wait()
                self._died("crash", f"not ready after {self.start_timeout:g} s: killed")
        elif state == "restarting" and now >= self.restart_at:
            with self.feeder.lock:
                if self.state != "restarting":
                    return  # stopping meanwhile
                self.state = "starting"
            self.restarts += 1
            self._spawn()

    def _died(self, why: str, detail: str) -> None:
        with self.feeder.lock:
            if self.state not in ("starting", "running"):
                return  # stopping: its exit is expected, stop() does the accounting
            out, sent = self.feeder.detach("restarting")
            was_ready = self.state == "running"
            self.state = "restarting"
            lost = max(0, sent - self._sent_at_ready - self._inc_done) if was_ready else 0
            self.lost += lost
            self._confirmed_before += self._inc_done
            self._inc_done = 0
            self._sent_at_ready = sent
        if out is not None:
            out.close()
        if why == "hang":
            self.hangs += 1
        else:
            self.crashes += 1
        self.last_error = f"{why}: {detail}" + (f"; {self._child_error}" if self._child_error
                                                  else "")
        if not self._ready.is_set():  # never came up: a broken configuration, do not loop
            with self.feeder.lock:
                if self.state == "restarting":
                    self.state = "failed"
            return
        if was_ready and time.monotonic() - self._ready_at > 60:
            self.backoff.reset()  # it ran well for a while: restart quickly
        delay = self.backoff.next_delay()
        log.error("worker %s (pid %s) %s; %d unconfirmed measurements lost; restarting in "
                  "%.2f s", self.name, self.pid, detail, lost, delay)
        self.restart_at = time.monotonic() + delay
        if self.on_death is not None:
            self.on_death(self.last_error)

    def _drain_up(self) -> None:
        for kind, incarnation, body in self.channel.messages():
            if incarnation == self.incarnation:  # else from a dead one
                self._message(kind, body)

    def _message(self, kind: str, body: str) -> None:
        if kind in ("hb", "bye"):
            self._last_hb = time.monotonic()
            self.child_stats = messages.parse_counters(body)
            self._inc_done = self.child_stats.get("done", self._inc_done)
        elif kind == "ready":
            self._connect()
        elif kind == "log":
            self.messages.append(body)
            level, _, line = body.partition(" ")
            number = logging.getLevelName(level) if level in _LEVEL_NAMES else logging.INFO
            log.log(number, "worker %s: %s", self.name, line)
        elif kind == "error":
            self.messages.append(body)
            self._child_error = body
            log.error("worker %s: %s", self.name, body)
        elif kind == "ctl":
            self._drain_ret()  # results sent before the ack are queued there: publish first
            if self.on_ack is not None:
                self.on_ack(body)
            with self._acked:
                self.control_acks += 1
                self._acked.notify_all()
        elif kind != "hello":
            self.messages.append(f"{kind} {body}")

    def _connect(self) -> None:
        try:
            s = self.channel.connect()
        except OSError as exc:
            log.error("worker %s: cannot connect to the child: %s", self.name, exc)
            return
        with self.feeder.lock:
            if self.state != "starting":  # stopping meanwhile
                s.close()
                return
            self._sent_at_ready = self.feeder.attach(s)
            self._inc_done = 0
            self.state = "running"
        self._ready_at = self._last_hb = time.monotonic()
        self.last_error = ""
        self._ready.set()

    def _drain_ret(self) -> None:
        for m in self.channel.results():
            if isinstance(m, messages.WireError):
                self.return_errors += 1
                log.warning("worker %s: bad result datagram: %s", self.name, m)
                continue
            self.returned += 1
            if self.publish is not None:
                self.publish(m)

    # ---------------------------------------------------------------- stats
    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "pid": self.pid,
            "incarnation": self.incarnation, "sent": self.sent,
            "undelivered": dict(self.undelivered), "confirmed": self.confirmed,
            "lost": self.lost, "in_flight": self.in_flight, "crashes": self.crashes,
            "hangs": self.hangs, "restarts": self.restarts, "returned": self.returned,
            "return_errors": self.return_errors, "shm_sent": self.feeder.shm_sent,
            "control_sent": self.feeder.control_sent,
            "control_failed": self.feeder.control_failed, "control_acks": self.control_acks,
            "full_waits": self.feeder.full_waits, "waited_s": round(self.feeder.waited_s, 3),
            "child": dict(self.child_stats), "last_error": self.last_error,
        }
