"""The input stage's side of a pipeline process: spawn, feed, listen, supervise, restart.

Sockets (``AF_UNIX``/``SOCK_DGRAM``, in a private temporary directory): ``in.sock``, bound by
the child, fed by :class:`.downstream.Feeder` (never blocking the caller; what it cannot hand
over is counted by reason); ``up.sock``, bound here, the child's text messages
(:mod:`.messages`); ``ret.sock``, bound here, the results the child forwards, published into
this process's pipeline through ``publish``.
Two shared-memory slot rings (one per direction) carry what exceeds ``max_datagram``.

Supervision (one thread per pipeline process): the child is dead when its process exits
(counted in ``crashes``) or hung when no heartbeat came for ``hang_timeout`` seconds (killed,
counted in ``hangs``); either way it is restarted after a backoff.  Accounting: ``sent`` counts
measurements handed to the kernel; the child's heartbeats report how many it processed
(``confirmed``); what was sent to an incarnation that died and never confirmed is ``lost``.
So ``offered == sent + sum(undelivered)`` and ``sent == confirmed + lost + in_flight``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..backoff import Backoff
from ..measurement import Measurement
from . import messages
from .downstream import Feeder
from .shm import SlotRing

__all__ = ["PipelineProcess", "StageSpec", "IsolationError", "broadcast_control"]

log = logging.getLogger("radlogger.isolation")
_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")



class IsolationError(RuntimeError):
    """A pipeline process could not be started (the message says why, in one line)."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pipeline process: endpoint kind or ``module:Class``, name, settings."""

    target: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "name": self.name,
                "settings": {k: v if isinstance(v, (str, int, float, bool, list)) else str(v)
                             for k, v in self.settings.items()}}


def broadcast_control(name: str | int, arg: int = 0) -> int:
    """Send a control event to every running pipeline process; returns how many took it."""
    return sum(p.control(name, arg) for p in list(PipelineProcess.live))


class PipelineProcess:
    """A chain of endpoint stages running in a child process, fed from this process."""

    live: ClassVar[weakref.WeakSet[PipelineProcess]] = weakref.WeakSet()

    def __init__(self, name: str, stages: Iterable[StageSpec], forward: Iterable[str] = ("last",),
                 publish: Callable[[Measurement], Any] | None = None, *,
                 heartbeat: float = 0.2, hang_timeout: float = 5.0, start_timeout: float = 30.0,
                 max_datagram: int = 65536, shm_slots: int = 8, shm_slot_bytes: int = 4 << 20,
                 send_wait: float = 0.05, batch_max: int = 256, log_level: str = "INFO",
                 backoff: Backoff | None = None) -> None:
        self.name = name
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("a pipeline process needs at least one stage")
        self.forward = [f for f in forward if f != "none"]
        self.publish = publish
        self.heartbeat = heartbeat
        self.hang_timeout = max(hang_timeout, 3 * heartbeat)
        self.start_timeout = start_timeout
        self.max_datagram = max_datagram
        self.shm_slots, self.shm_slot_bytes = shm_slots, shm_slot_bytes
        self.send_wait = send_wait
        self.batch_max = batch_max
        self.log_level = log_level
        self.backoff = backoff or Backoff(0.1, 10.0, 2.0, 0.1)
        self.feeder = Feeder(max_datagram, send_wait, None)
        # counters
        self.crashes = self.hangs = self.restarts = 0
        self.lost = 0
        self.returned = 0
        self.return_errors = 0
        self.control_acks = 0
        self._acked = threading.Condition()
        self.messages: deque[str] = deque(maxlen=200)
        self.child_stats: dict[str, int] = {}
        self.last_error = ""
        self.state = "stopped"
        self.incarnation = 0
        # internals
        self._confirmed_before = 0
        self._inc_done = 0
        self._sent_at_ready = 0
        self._ready_at = 0.0
        self._ready = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""
        self._up: socket.socket | None = None
        self._ret: socket.socket | None = None
        self._down_ring: SlotRing | None = None
        self._up_ring: SlotRing | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._restart_at = 0.0
        self._spawned_at = 0.0
        self._last_hb = 0.0
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
        """Spawn the child and wait until it is ready; raises :class:`IsolationError`."""
        self._dir = tempfile.mkdtemp(prefix="radlogger-iso-")
        self._up = self._bind("up.sock")
        self._ret = self._bind("ret.sock")
        self._down_ring = SlotRing(self.shm_slots, self.shm_slot_bytes, create=True)
        self.feeder.ring = self._down_ring
        self._up_ring = SlotRing(self.shm_slots, self.shm_slot_bytes, create=True)
        self._stop = False
        self.state = "starting"
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, daemon=True,
                                        name=f"isolation:{self.name}")
        self._thread.start()
        PipelineProcess.live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.05):
            if self.state == "failed" or time.monotonic() > deadline:
                why = self.last_error or "did not become ready within " \
                    f"{self.start_timeout:g} s"
                self.stop(2.0)
                raise IsolationError(f"pipeline {self.name}: {why}")

    def _bind(self, name: str) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(os.path.join(self._dir, name))
        s.setblocking(False)
        return s

    def _spec(self) -> dict[str, Any]:
        assert self._down_ring is not None and self._up_ring is not None
        ring = {"slots": self.shm_slots, "slot_bytes": self.shm_slot_bytes}
        return {
            "name": self.name, "incarnation": self.incarnation,
            "in": os.path.join(self._dir, "in.sock"), "up": os.path.join(self._dir, "up.sock"),
            "ret": os.path.join(self._dir, "ret.sock"),
            "down_ring": {**ring, "name": self._down_ring.name},
            "up_ring": {**ring, "name": self._up_ring.name},
            "stages": [s.as_json() for s in self.stages], "forward": self.forward,
            "heartbeat": self.heartbeat, "max_datagram": self.max_datagram,
            "batch_max": self.batch_max, "log_level": self.log_level,
        }

    def _spawn(self) -> None:
        self.incarnation += 1
        path = os.path.join(self._dir, "in.sock")
        if os.path.exists(path):
            os.unlink(path)
        assert self._down_ring is not None and self._up_ring is not None
        self._down_ring.reset()
        self._up_ring.reset()
        env = dict(os.environ)
        # the child imports the stages by name: give it the import path we have
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._inc_done = 0
        self._child_error = ""
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from radlogger.isolation.child import main; main()"],
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
        PipelineProcess.live.discard(self)
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
                log.error("pipeline %s: did not stop within %.1f s, killed", self.name, timeout)
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
            log.error("pipeline %s: %d measurements sent were not confirmed processed at stop",
                      self.name, unconfirmed)
        for sock in (out, self._up, self._ret):
            if sock is not None:
                sock.close()
        self._up = self._ret = None
        for ring in (self._down_ring, self._up_ring):
            if ring is not None:
                ring.close(unlink=True)
        self._down_ring = self._up_ring = self.feeder.ring = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""
        self.state = "stopped"
        self._ready.clear()
        return clean

    # ---------------------------------------------------------------- downstream
    def send(self, m: Measurement) -> str | None:
        """Hand ``m`` to the child; None when handed over, else the reason (not counted)."""
        return self.feeder.send(m)

    def send_batch(self, batch: Iterable[Measurement]) -> Counter[str]:
        """Send each measurement; returns the reasons of those not handed over (counted)."""
        return self.feeder.send_batch(batch)

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
        socks = [s for s in (self._ret, self._up) if s is not None]
        while not self._stop:
            try:
                select.select(socks, [], [], tick)
                self._drain_ret()
                self._drain_up()
                self._check()
            except Exception:  # noqa: BLE001 - supervision must survive its own bugs
                log.exception("pipeline %s: supervisor error", self.name)
                time.sleep(tick)

    def _check(self) -> None:
        proc, now, state = self._proc, time.monotonic(), self.state
        if state in ("starting", "running") and proc is not None:
            code = proc.poll()
            if code is not None:
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
        elif state == "restarting" and now >= self._restart_at:
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
        log.error("pipeline %s (pid %s) %s; %d unconfirmed measurements lost; restarting in "
                  "%.2f s", self.name, self.pid, detail, lost, delay)
        self._restart_at = time.monotonic() + delay

    def _drain_up(self) -> None:
        up = self._up
        while up is not None:
            try:
                data = up.recv(65536)
            except OSError:  # BlockingIOError: drained
                return
            parsed = messages.parse_message(data)
            if parsed is not None and parsed[1] == self.incarnation:  # else from a dead one
                self._message(parsed[0], parsed[2])

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
            log.log(number, "pipeline %s: %s", self.name, line)
        elif kind == "error":
            self.messages.append(body)
            self._child_error = body
            log.error("pipeline %s: %s", self.name, body)
        elif kind == "ctl":
            self._drain_ret()  # results sent before the ack are queued there: publish first
            with self._acked:
                self.control_acks += 1
                self._acked.notify_all()
        elif kind != "hello":
            self.messages.append(f"{kind} {body}")

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        try:
            s.connect(os.path.join(self._dir, "in.sock"))
        except OSError as exc:
            s.close()
            log.error("pipeline %s: cannot connect to the child: %s", self.name, exc)
            return
        s.setblocking(False)
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
        ret = self._ret
        while ret is not None:
            try:
                data = ret.recv(max(self.max_datagram, 1024))
            except OSError:  # BlockingIOError: drained
                return
            try:
                m = messages.read_measurement(data, self._up_ring)
            except messages.WireError as exc:
                self.return_errors += 1
                log.warning("pipeline %s: bad result datagram: %s", self.name, exc)
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
            "child": dict(self.child_stats), "last_error": self.last_error,
        }
