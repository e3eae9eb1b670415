"""Board states: what a reserved board does, and the methods a client may call on it.

A state is chosen by the reservation's kind and lives as long as the reservation.  Methods are
declared the way web frameworks declare routes::

    class PulseCountState(EvaluateState):
        kind = "pulsecount"

        @state_method("evaluate")
        def evaluate(self, params): ...

and the API serves them at ``POST /api/boards/<serial>/<method>``.  ``evaluate`` queues a batch
of bitstreams keyed by evaluation id on the board's driver; the driver calls back with each
result, and the state sends them to the client as ``results`` events, batched: flushed every
``flush_interval`` seconds, or as soon as ``flush_remaining`` or fewer bitstreams remain queued
(so the client can refill before the board runs dry), and when the reservation ends.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from ..protocol import BITSTREAM_SIZE
from ..sources import Job, Result
from .errors import BadRequest, Conflict, NotFound

__all__ = ["state_method", "State", "EvaluateState", "PulseCountState", "VarianceState",
           "STATES"]

Emit = Callable[..., Any]


def state_method(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a state method callable through the API as ``name`` (default: its own name)."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__state_method__ = name or fn.__name__  # type: ignore[attr-defined]
        return fn
    return mark


class State:
    """Base of board states.  ``board`` is the board's driver (a :class:`PicoDevice`)."""

    kind: ClassVar[str] = ""
    methods: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        methods: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                name = getattr(value, "__state_method__", None)
                if name is not None:
                    methods[name] = attr
        cls.methods = methods

    def __init__(self, board: Any, reservation: dict[str, Any], emit: Emit,
                 settings: Any) -> None:
        self.board = board
        self.reservation = reservation
        self.serial: str = reservation["serial"]
        self.client: str = reservation["client"]
        self.emit = emit
        self.settings = settings
        self.closed = False

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        attr = self.methods.get(method)
        if attr is None:
            raise NotFound(f"state {self.kind} has no method '{method}'; known: "
                           f"{', '.join(sorted(self.methods))}")
        return dict(getattr(self, attr)(params))

    def tick(self, now: float) -> None:
        """Periodic work (the farm's tick thread)."""

    def close(self, reason: str) -> dict[str, Any]:
        """The reservation ended; returns facts for the ``reservation_end`` event."""
        self.closed = True
        return {}

    @state_method("status")
    def status(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"serial": self.serial, "kind": self.kind, "client": self.client,
                "expires": self.reservation["expires"]}


class EvaluateState(State):
    """Evaluate bitstreams on the board; results go back to the client in batches."""

    unit = ""

    def __init__(self, board: Any, reservation: dict[str, Any], emit: Emit,
                 settings: Any) -> None:
        super().__init__(board, reservation, emit, settings)
        if board.queue is None:  # a PicoDevice; its queue is set when farm = NAME
            raise Conflict(f"board {self.serial} is not attached to a farm queue")
        self._lock = threading.Lock()
        self._results: list[list[Any]] = []
        self._failed: list[list[Any]] = []
        self._last_flush = time.monotonic()
        self.queued = 0
        self.done = 0
        self.late = 0  # results that arrived after the reservation ended
        self._batches: dict[str, str] = {}  # evaluation id -> iCEFARM batch id
        args = reservation.get("args") or {}
        # iCEFARM's per-reservation arguments override the farm's defaults
        self.flush_interval = _number(args, "flush_interval_seconds", settings.flush_interval)
        self.flush_remaining = int(_number(args, "flush_at_bitstreams_remaining",
                                           settings.flush_remaining))

    @state_method("evaluate")
    def evaluate(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{"bitstreams": {"<evaluation id>": "<base64>", ...}}`` (or a list of pairs)."""
        raw = params.get("bitstreams")
        if isinstance(raw, dict):
            items = list(raw.items())
        elif isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 for p in raw):
            items = [(p[0], p[1]) for p in raw]
        else:
            raise BadRequest("field 'bitstreams' must be an object {evaluation id: base64 "
                             "bitstream} or a list of [id, base64] pairs")
        decoded = []
        for eval_id, b64 in items:
            if not isinstance(b64, str):
                raise BadRequest(f"bitstream {eval_id!r} must be a base64 string")
            try:
                decoded.append((eval_id, base64.b64decode(b64, validate=True)))
            except (binascii.Error, ValueError) as exc:
                raise BadRequest(f"bitstream {eval_id!r} is not valid base64: {exc}") from None
        return self.submit(decoded)

    def submit(self, items: list[tuple[Any, bytes]], batch: str | None = None) -> dict[str, Any]:
        """Queue raw bitstreams keyed by evaluation id (iCEFARM's ``evaluate`` sends bytes and
        a ``batch_id``; the batch is remembered per id and sent back with the results)."""
        if not items:
            raise BadRequest("no bitstreams given")
        jobs = []
        meta = {"state": self.kind, "client": self.client,
                "reservation": self.reservation["id"]}
        for eval_id, data in items:
            if not isinstance(eval_id, (str, int)) or isinstance(eval_id, bool):
                raise BadRequest(f"evaluation id {eval_id!r} must be a string or an integer")
            if not isinstance(data, bytes) or len(data) != BITSTREAM_SIZE:
                size = len(data) if isinstance(data, bytes) else type(data).__name__
                raise BadRequest(f"bitstream {eval_id!r} has {size} bytes; a pico2-ice "
                                 f"bitstream has {BITSTREAM_SIZE}")
            jobs.append(Job(str(eval_id), data, self._on_result, self.reservation["id"], meta))
        queue = self.board.queue
        limit = self.settings.max_queue
        if len(queue) + len(jobs) > limit:
            raise Conflict(f"board {self.serial} has {len(queue)} bitstreams queued; at most "
                           f"{limit} may wait (send fewer, wait for results)")
        if self.closed:
            raise Conflict(f"the reservation of board {self.serial} has ended")
        with self._lock:
            self.queued += len(jobs)
            if batch is not None:
                self._batches.update((job.eval_id, batch) for job in jobs)
        remaining = queue.put(jobs)
        return {"queued": len(jobs), "remaining": remaining}

    @state_method("status")
    def status(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().status(params)
        out.update(queued=self.queued, done=self.done, remaining=len(self.board.queue))
        return out

    def _on_result(self, result: Result) -> None:
        """Called on the board's driver thread for every finished evaluation."""
        with self._lock:
            if self.closed:
                self.late += 1
                return
            self.done += 1
            if result.ok:
                self._results.append([result.eval_id, result.value])
            else:
                self._failed.append([result.eval_id, result.reason])
            due = len(self.board.queue) <= self.flush_remaining
        if due:
            self.flush()

    def tick(self, now: float) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._results and not self._failed:
                return
            results, failed = self._results, self._failed
            self._results, self._failed = [], []
            batches = {str(r[0]): b for r in results + failed
                       if (b := self._batches.pop(str(r[0]), None)) is not None}
        extra = {"batches": batches} if batches else {}
        self.emit("results", self.client, serial=self.serial,
                  reservation=self.reservation["id"], kind=self.kind, results=results,
                  failed=failed, remaining=len(self.board.queue), **extra)

    def close(self, reason: str) -> dict[str, Any]:
        dropped = self.board.queue.clear(tag=self.reservation["id"])
        with self._lock:  # every queued evaluation is answered: here as failed, with why
            self._failed += [[job.eval_id, f"reservation_{reason}"] for job in dropped]
        self.flush()
        with self._lock:
            self.closed = True
        return {"dropped": len(dropped), "done": self.done}


class PulseCountState(EvaluateState):
    """Pulse-count firmware: each result is the number of rising edges in 1 s."""

    kind = "pulsecount"


class VarianceState(EvaluateState):
    """Variance firmware: each result is the fitness (mean |diff| of the ADC samples)."""

    kind = "variance"


def _number(args: dict[str, Any], key: str, default: float) -> float:
    value = args.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9:
        return float(value)
    return float(default)


STATES: dict[str, type[State]] = {s.kind: s for s in (PulseCountState, VarianceState)}
