"""Process workers of an endpoint pool: the child program and the parent's handle on it.

Why not ``multiprocessing``: its start methods pickle the target and its queues pickle every
item, and the project never unpickles data crossing a process boundary.  A worker is a plain
``python -m radlogger.poolproc`` child with one end of a socketpair; everything on that socket
is a length-prefixed JSON control header plus :mod:`radlogger.wire` frames.  The child loads
the endpoint class by entry-point name or ``module:Class`` path, so nothing but text and
numbers crosses.

Messages (parent -> child): ``batch`` (seq, routes, items), ``flush``, ``close``.
Child -> parent: ``ready`` | ``error`` (startup failed), ``result`` (seq, failed, error,
crashed, asked, outputs), ``flushed``.

``routes`` answers ``has_subscribers`` for the child: the child does not know the pipeline, so
it assumes "yes" for a topic it has not asked about yet, names it in ``asked``, and from the
next batch on the parent sends the real answer (lazy connection, one batch late at worst).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from .measurement import Measurement
from .wire import decode_frames, encode_frames

__all__ = ["load_endpoint_class", "ProcessWorker", "send_message", "recv_message"]

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
MAX_MESSAGE = 1 << 30


def load_endpoint_class(spec: str) -> Any:
    """An endpoint class from an entry-point name (``fft``) or a path (``pkg.mod:Class``)."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise LookupError(f"endpoint class {spec!r}: cannot import {module_name}: {exc}") \
                from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise LookupError(f"endpoint class {spec!r}: {module_name} has no {attr}") from None
    from .plugins import load_endpoint

    return load_endpoint(spec)


# ---------------------------------------------------------------------------- framing
def send_message(sock: socket.socket, ctrl: dict[str, Any],
                 items: list[Measurement] | None = None) -> None:
    head = json.dumps(ctrl, separators=(",", ":")).encode()
    body = encode_frames(items) if items else b""
    sock.sendall(b"".join((_LEN.pack(len(head)), head, _LEN.pack(len(body)), body)))


def _read_exact(f: BinaryIO, n: int) -> bytes | None:
    data = f.read(n)
    if data is None or len(data) < n:
        return None
    return data


def recv_message(f: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """One message, or None at end of stream (the other side is gone)."""
    raw = _read_exact(f, _LEN.size)
    if raw is None:
        return None
    (n,) = _LEN.unpack(raw)
    if n > MAX_MESSAGE:
        raise ValueError(f"control header of {n} bytes")
    head = _read_exact(f, n)
    raw = _read_exact(f, _LEN.size) if head is not None else None
    if head is None or raw is None:
        return None
    (m,) = _LEN.unpack(raw)
    if m > MAX_MESSAGE:
        raise ValueError(f"body of {m} bytes")
    body = _read_exact(f, m) if m else b""
    if body is None:
        return None
    ctrl = json.loads(head)
    if not isinstance(ctrl, dict):
        raise ValueError("control header is not a JSON object")
    return ctrl, body


# ---------------------------------------------------------------------------- parent side
class ProcessWorker:
    """The parent's handle on one child process: submit chunks, get results by callback.

    ``post(worker, seq, outputs, failed, error, crashed)`` is called from the reader thread
    for every finished chunk, and for every outstanding chunk when the child dies.
    """

    mode = "process"

    def __init__(self, index: int, spec: str, name: str, options: dict[str, Any],
                 post: Callable[..., None], routes: Callable[[set[str]], dict[str, bool]],
                 startup_timeout: float = 30.0) -> None:
        self.index = index
        self.spec = spec
        self.name = name
        self.options = options
        self._post = post
        self._routes = routes
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._flushed = threading.Event()
        self.outstanding: dict[int, int] = {}  # seq -> items; guarded by the pool's lock
        self.asked: set[str] = set()
        self._asked_lock = threading.Lock()
        self.alive = False
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        cmd = [sys.executable, "-m", "radlogger.poolproc", "--fd", str(child.fileno()),
               "--endpoint", self.spec, "--name", self.name,
               "--options", json.dumps(self.options), "--index", str(self.index)]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=env,
                                         stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.sock = parent
        self._file = parent.makefile("rb")
        parent.settimeout(self.startup_timeout)
        try:
            first = recv_message(self._file)
        except (OSError, ValueError) as exc:
            first = None
            why = str(exc)
        else:
            why = "it exited"
        if first is None or first[0].get("op") != "ready":
            message = first[0].get("message", why) if first else why
            self._kill()
            raise RuntimeError(f"pool worker {self.name}#{self.index} ({self.spec}) did not "
                               f"start: {message}")
        parent.settimeout(None)
        self.alive = True
        self.stopping = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"pool:{self.name}#{self.index}")
        self._reader.start()

    def submit(self, seq: int, items: list[Measurement]) -> None:
        with self._asked_lock:
            asked = set(self.asked)
        ctrl = {"op": "batch", "seq": seq, "routes": self._routes(asked)}
        try:
            with self._send_lock:
                if self.sock is None:
                    raise OSError("worker not running")
                send_message(self.sock, ctrl, items)
        except OSError:
            self._died("cannot send to it")

    def _read_loop(self) -> None:
        f = self._file
        assert f is not None
        why = "its process ended"
        while True:
            try:
                msg = recv_message(f)
            except (OSError, ValueError) as exc:
                why = f"protocol error: {exc}"
                break
            if msg is None:
                break
            ctrl, body = msg
            op = ctrl.get("op")
            if op == "result":
                if ctrl.get("asked"):
                    with self._asked_lock:
                        self.asked.update(ctrl["asked"])
                try:
                    outputs = decode_frames(body) if body else []
                except ValueError as exc:
                    outputs = []
                    ctrl["crashed"] = f"undecodable outputs: {exc}"
                self._post(self, int(ctrl["seq"]), outputs, int(ctrl.get("failed", 0)),
                           ctrl.get("error"), ctrl.get("crashed"))
            elif op == "flushed":
                self._flushed.set()
        self._died(why)

    def _died(self, why: str) -> None:
        if not self.alive:
            return
        self.alive = False
        if self.stopping:
            return  # asked to exit: not a crash
        code = self.proc.poll() if self.proc else None
        log.error("pool worker %s#%d (pid %s) died: %s%s", self.name, self.index, self.pid,
                  why, f" (exit code {code})" if code is not None else "")
        self._post(self, -1, [], 0, None, f"worker process died: {why}")

    def flush(self, timeout: float = 10.0) -> bool:
        if not self.alive:
            return True
        self._flushed.clear()
        try:
            with self._send_lock:
                if self.sock is not None:
                    send_message(self.sock, {"op": "flush"})
        except OSError:
            return False
        return self._flushed.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        try:
            with self._send_lock:
                if self.sock is not None:
                    send_message(self.sock, {"op": "close"})
        except OSError:
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("pool worker %s#%d did not exit in %.1f s: killed", self.name,
                          self.index, timeout)
        self._kill()
        if self._reader is not None:
            self._reader.join(timeout)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None


# ---------------------------------------------------------------------------- child side
class Collector:
    """The outlet of a pooled endpoint (thread worker, or inside a worker process): collects
    what it publishes per work item, so results can be put back in input order."""

    def __init__(self) -> None:
        self.items: list[Measurement] = []

    def push(self, m: Measurement) -> bool:
        self.items.append(m)
        return True


def _child(fd: int, spec: str, name: str, options: dict[str, Any], index: int) -> int:
    sock = socket.socket(fileno=fd)
    f = sock.makefile("rb")
    collector = Collector()
    routes: dict[str, bool] = {}
    asked: set[str] = set()

    def has_subscribers(topic: str) -> bool:
        known = routes.get(topic)
        if known is None:
            asked.add(topic)
            return True
        return known

    def make() -> Any:
        inner = load_endpoint_class(spec)(name, options)
        inner.bind(collector, has_subscribers, None)
        inner.open()
        return inner

    try:
        inner = make()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        send_message(sock, {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 2
    send_message(sock, {"op": "ready", "pid": os.getpid()})
    while True:
        msg = recv_message(f)
        if msg is None:
            break
        ctrl, body = msg
        op = ctrl.get("op")
        if op == "batch":
            routes.update(ctrl.get("routes") or {})
            items = decode_frames(body)
            collector.items = []
            before = inner.stats.dropped
            error = crashed = None
            try:
                inner.handle_batch(items)
            except Exception as exc:  # noqa: BLE001 - counted by the parent as a crash
                crashed = f"{type(exc).__name__}: {exc}"
            failed = inner.stats.dropped - before
            outputs = collector.items
            if crashed:
                failed, outputs = len(items), []
                try:
                    inner.close()
                except Exception:  # noqa: BLE001
                    log.exception("close after a crash failed")
                inner = make()
            elif failed:
                error = f"{failed} item(s) failed (see this worker's log)"
            send_message(sock, {"op": "result", "seq": ctrl["seq"], "failed": failed,
                                "error": error, "crashed": crashed, "asked": sorted(asked)},
                         outputs)
            asked.clear()
        elif op == "flush":
            inner.flush()
            send_message(sock, {"op": "flushed"})
        elif op == "close":
            break
    try:
        inner.flush()
    finally:
        inner.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="radloggerd pool worker (started by the pool)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s pool worker {args.name}"
                        f"#{args.index} %(levelname)s %(name)s: %(message)s")
    return _child(args.fd, args.endpoint, args.name, json.loads(args.options), args.index)


if __name__ == "__main__":
    sys.exit(main())
