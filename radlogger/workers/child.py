"""The worker process: runs a :class:`.chain.Chain` of stages on measurements from its parent.

Started by :class:`radlogger.workers.supervisor.WorkerProcess` as ``python -c ...`` with a JSON
spec on stdin (no pickle, no inherited state: the stage classes are named by entry-point kind
or ``module:Class`` and imported here).  One thread does everything, in order:

* reads datagrams from its bound input socket (measurements, batches of them,
  shared-memory references, control events), up to ``batch_max`` measurements at a time,
  waiting up to ``linger`` seconds for more when fewer came: the stages' cost per batch (a
  numpy call per product and step) then spreads over many (an isolated WIDAR chain fed
  ~30 lag sets at a time spent ~50 us a lag set);
* runs the batch through the chain (each stage through the endpoint base, so its error
  isolation and counters apply; see :mod:`.chain`);
* forwards the chosen outputs back to the parent (binary datagrams, or shared memory);
* sends heartbeats (text) carrying its counters, at least every ``heartbeat`` seconds and
  after every batch (before it takes the next), so a hang is visible as silence and the
  parent knows exactly what was processed when the process dies.

Because the same thread beats and works, a stage stuck in an endless loop stops the beats.
A control event splits the batches: what came before it is processed first, and its
acknowledgement (``ctl``) is sent after the results that processing forwarded.  A pool marks
the end of each work item with control ``item SEQ``; its acknowledgement carries the item's
failed count and crash text.  The process exits when told (control ``stop``: drain, flush,
close, final ``bye``), or when its parent is gone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import sys
import time
from typing import Any

from ..errors import ConnectionFailure
from ..measurement import Measurement
from . import messages
from .batch import batch_parts, runs
from .chain import Chain, StageSpec
from .shm import SlotRing

__all__ = ["main", "ChildWorker"]

log = logging.getLogger("radlogger.workers.child")


class _ParentGone(ConnectionFailure):
    pass


class _UpstreamLog(logging.Handler):
    def __init__(self, child: ChildWorker) -> None:
        super().__init__()
        self.child = child

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname} {record.name}: {record.getMessage()}"
            self.child.say("log", text[:4000])
        except _ParentGone:
            pass
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class ChildWorker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.inc = int(spec["incarnation"])
        self.heartbeat = float(spec.get("heartbeat", 0.2))
        self.batch_max = int(spec.get("batch_max", 256))
        #: seconds a short batch waits for more before the chain runs it (0: at once)
        self.linger = float(spec.get("linger", 0.0))
        self.max_datagram = int(spec.get("max_datagram", 65536))
        self.return_wait = float(spec.get("return_wait", 1.0))
        self.up = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.up.connect(spec["up"])
        self.up.setblocking(False)
        self.ppid = os.getppid()
        self.rx = self.done = self.fwd = self.fwd_drop = self.bad = self.controls = 0
        self.says_dropped = 0
        self.forward = [str(f) for f in spec.get("forward") or [] if f != "none"]
        self.chain = Chain([StageSpec.from_json(st) for st in spec["stages"]], self.forward,
                           self._emit)
        self._down: SlotRing | None = None
        self._up_ring: SlotRing | None = None
        self.inp: socket.socket | None = None
        self.ret: socket.socket | None = None
        self._last_hb = 0.0
        self._fwd_mark = 0

    # ---------------------------------------------------------------- upstream text
    def say(self, kind: str, text: str = "", must: bool = False) -> None:
        """Send one text message; a full socket drops logs and heartbeats (counted), but never
        what the parent waits for (acknowledgements, ready, error, bye, ``must``): those wait
        for room."""
        data = messages.format_message(kind, self.inc, text)
        while True:
            try:
                self.up.send(data)
                return
            except BlockingIOError:
                if kind in ("log", "hb", "hello") and not must:
                    self.says_dropped += 1
                    return
                select.select([], [self.up], [], 0.5)
                if os.getppid() != self.ppid:
                    raise _ParentGone from None
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPIPE):
                    raise _ParentGone from None
                raise

    def counters(self) -> str:
        errors = self.chain.errors
        return (f"rx={self.rx} done={self.done} fwd={self.fwd} fwd_drop={self.fwd_drop} "
                f"bad={self.bad} err={errors} ctl={self.controls} "
                f"msg_drop={self.says_dropped}")

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        spec = self.spec
        self.chain.open()
        inp = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inp.bind(spec["in"])
        inp.setblocking(False)
        self.inp = inp
        if spec.get("ret") and self.forward:
            ret = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            ret.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            ret.connect(spec["ret"])
            ret.setblocking(False)
            self.ret = ret
        for key in ("down_ring", "up_ring"):
            ring = spec.get(key)
            if ring:
                attached = SlotRing(ring["slots"], ring["slot_bytes"], ring["name"])
                if key == "down_ring":
                    self._down = attached
                else:
                    self._up_ring = attached

    def _emit(self, items: list[Measurement]) -> None:
        """Send what the chain forwards back to the parent (datagrams, or shared memory);
        consecutive results that line up travel as one message (:mod:`.batch`)."""
        if self.ret is None:
            return
        ring = self._up_ring
        limit = max(self.max_datagram, ring.slot_bytes if ring is not None else 0)
        for together, piece in runs(items, self.batch_max, limit):
            if together:
                try:
                    parts, size = batch_parts(piece)
                except messages.WireError:
                    size = limit + 1  # one cannot be encoded: each alone says which
                if size <= limit:
                    self._forward_one(parts, size, len(piece))
                    continue
            for m in piece:
                try:
                    parts, size = messages.measurement_parts(m)
                except messages.WireError as exc:
                    self.fwd_drop += 1
                    log.warning("cannot forward %s: %s", m.topic, exc)
                    continue
                self._forward_one(parts, size, 1)

    def _forward_one(self, parts: list[Any], size: int, n: int) -> None:
        slot = None
        if size > self.max_datagram:
            if self._up_ring is None or size > self._up_ring.slot_bytes:
                self.fwd_drop += n
                return
            ref = self._up_ring.write(parts, size, self.return_wait)
            if ref is None:
                self.fwd_drop += n
                return
            slot = ref[0]
            parts = [messages.encode_ref(ref[0], size, ref[1])]
        if self._send_ret(parts):
            self.fwd += n
        else:
            self.fwd_drop += n
            if slot is not None and self._up_ring is not None:
                self._up_ring.heads["state"][slot] = 0

    def _send_ret(self, parts: list[Any]) -> bool:
        assert self.ret is not None
        for attempt in range(2):
            try:
                self.ret.sendmsg(parts)
                return True
            except BlockingIOError:
                if attempt == 0:
                    select.select([], [self.ret], [], self.return_wait)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    return False
                raise _ParentGone from None
        return False

    def on_control(self, code: int, arg: int) -> bool:
        """Apply a control event; False when it is ``stop``.  Acknowledged after the results
        it caused were sent: the parent, on the ack, finds them already queued on its result
        socket (a pool's item results and a flush at stop rely on this)."""
        self.controls += 1
        name = messages.control_name(code)
        if name == "stop":
            self.say("ctl", f"{name} {arg} {self._forwarded()}")
            return False
        if name == "item":
            failed, crash, recreated = self.chain.take_result()
            self.say("ctl", f"{name} {arg} {self._forwarded()} {failed} {recreated} {crash}"
                     .rstrip())
            return True
        self.chain.control(name, arg)
        self.say("ctl", f"{name} {arg} {self._forwarded()}")
        return True

    def _forwarded(self) -> int:
        """Results sent since the last acknowledgement: the parent takes exactly these."""
        n, self._fwd_mark = self.fwd - self._fwd_mark, self.fwd
        return n

    # ---------------------------------------------------------------- main loop
    def _decode(self, data: bytes) -> list[Measurement] | tuple[int, int] | None:
        try:
            kind = messages.kind_of(data)
            if kind in (messages.MEASUREMENT, messages.SHMREF, messages.BATCH):
                return messages.read_measurements(data, self._down)
            if kind == messages.CONTROL:
                code, arg, _ = messages.decode_control(data)
                return code, arg
            raise messages.WireError(f"unknown datagram kind {kind}")
        except messages.WireError as exc:
            self.bad += 1
            if self.bad <= 10:
                log.warning("bad datagram from the input stage: %s", exc)
            return None

    def loop(self) -> None:
        inp = self.inp
        assert inp is not None
        recv = inp.recv
        size = max(self.max_datagram, 1024)
        while True:
            wait = max(0.0, self._last_hb + self.heartbeat - time.monotonic())
            select.select([inp], [], [], wait)
            batch: list[Measurement] = []
            until = 0.0
            while len(batch) < self.batch_max:  # measurements, however many per datagram
                try:
                    data = recv(size)
                except BlockingIOError:
                    left = until - time.monotonic()
                    if batch and left > 0 and select.select([inp], [], [], left)[0]:
                        continue  # more came while lingering
                    break
                item = self._decode(data)
                if isinstance(item, list):
                    if not batch:
                        until = time.monotonic() + self.linger
                    batch.extend(item)
                elif item is not None:
                    self._run(batch)
                    batch = []
                    if not self.on_control(*item):
                        return
            self._run(batch)
            now = time.monotonic()
            if now - self._last_hb >= self.heartbeat:
                self._beat(now)

    def _run(self, batch: list[Measurement]) -> None:
        if batch:
            self.rx += len(batch)
            self.chain.run(batch)
            self.done += len(batch)
            # Report it before taking more (never dropped): if this process dies in the next
            # batch, the parent knows exactly what was done (its results are already sent)
            # and what was lost with it (``child_crashed``).
            self._beat(time.monotonic(), must=True)

    def _beat(self, now: float, must: bool = False) -> None:
        if os.getppid() != self.ppid:
            raise _ParentGone
        self._last_hb = now
        self.say("hb", self.counters(), must)

    def finish(self) -> None:
        """Flush the stages in order (their output runs down the chain), close, say bye."""
        self.chain.finish()
        self.say("bye", self.counters())

    def cleanup(self) -> None:
        for sock in (self.inp, self.ret, self.up):
            if sock is not None:
                sock.close()
        for ring in (self._down, self._up_ring):
            if ring is not None:
                ring.close()


def main() -> None:
    """Entry point of the pipeline process (``python -c 'from ... import main; main()'``)."""
    spec = json.loads(sys.stdin.buffer.read() or b"{}")
    child = ChildWorker(spec)
    root = logging.getLogger()
    root.setLevel(spec.get("log_level", "INFO"))
    root.addHandler(_UpstreamLog(child))
    code = 0
    try:
        child.say("hello", str(os.getpid()))
        try:
            child.setup()
        except Exception as exc:  # noqa: BLE001 - reported upstream as one line
            child.say("error", f"{type(exc).__name__}: {exc}")
            code = 2
            return
        from ..pipeline import tune_gc

        tune_gc()  # as the daemon does: many short-lived measurements, no cycles
        child.say("ready", str(os.getpid()))
        child._beat(time.monotonic())
        child.loop()
        child.finish()
    except _ParentGone:
        code = 3
    except Exception as exc:  # noqa: BLE001 - a bug here: report it, exit non-zero
        code = 1
        try:
            child.say("error", f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            pass
        import traceback

        traceback.print_exc()
    finally:
        child.cleanup()
        sys.stdout.flush()
        os._exit(code)  # no interpreter teardown: nothing left to flush, exit at once
