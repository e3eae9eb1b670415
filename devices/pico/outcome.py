"""How one pico evaluation ends: a published count, or a published failure with its reason.

A mixin of :class:`~.driver.PicoDevice` (kept apart so the driver stays one screenful per
concern).  Every job taken from a source ends in exactly one call of :meth:`_complete` or
:meth:`_fail`, which clear the job, so nothing can be published twice and no later line can be
charged to it.  A failure with reason ``shutdown`` (the daemon stopped mid-evaluation) is
published and counted in ``failures.shutdown`` like any other, but it is neither a device
error nor worth a warning: a normal stop cuts the evaluation in progress.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

from .sources import Job, Result

__all__ = ["Outcomes", "SHUTDOWN"]

log = logging.getLogger(__name__)

#: the reason of an evaluation cut off by a normal stop (not an error)
SHUTDOWN = "shutdown"


class Outcomes:
    """Publishing results and failures; expects the attributes below from the driver."""

    name: str
    settings: Any
    board_serial: str
    port_path: str
    evaluations: int
    failures: collections.Counter[str]
    bad_lines: collections.Counter[str]
    last_error: str
    _job: Job | None
    _phase: str
    _info: dict[str, Any]
    _t_up0: float
    _t_up1: float

    if TYPE_CHECKING:  # provided by Device (declared here for type checkers only)
        def emit(self, quantity: str, value: Any, unit: str = "", device_time: Any = None,
                 meta: dict[str, Any] | None = None, t_ns: int | None = None) -> bool: ...

        def count_errors(self, n: int = 1) -> None: ...

    def _bad_line(self, why: str, text: Any) -> None:
        self.bad_lines[why] += 1
        if why.startswith("leftover"):  # from before this connection: counted, not an error
            log.debug("device %s: %s line: %r", self.name, why, text)
            return
        self._count_error_quietly(f"{why} line: {text!r:.80}")

    def _count_error_quietly(self, what: str) -> None:
        self.count_errors()
        self.last_error = what
        log.debug("device %s: %s", self.name, what)

    def _meta(self, job: Job) -> dict[str, Any]:
        meta: dict[str, Any] = {"evaluation": job.eval_id, "serial": self.board_serial,
                                "state": self.settings.firmware, "port": self.port_path}
        if self._t_up1:
            meta["upload_s"] = self._t_up1 - self._t_up0
        for key in ("upload_us", "bytes_received", "watchdogs", "leftover_transfers"):
            if key in self._info:
                meta[key] = self._info[key]
        flash = self._info.get("flash")
        if flash is not None:
            meta["flash_us"] = flash.as_dict()
        meta.update(job.meta)
        return meta

    def _end(self) -> Job | None:
        """Detach the current job (None when there is none)."""
        job = self._job
        self._job = None
        self._phase = "idle"
        return job

    def _complete(self, quantity: str, value: float | int, unit: str, **extra: Any) -> None:
        job = self._job
        if job is None or self._phase != "running":
            self._bad_line("unexpected_result", f"{quantity} {value}")
            return
        flash = self._info.get("flash")
        if flash is not None and flash.failed_steps:
            self._fail("flash_failed", f"failed steps: {', '.join(flash.failed_steps)}",
                       **{quantity: value})
            return
        meta = self._meta(job)
        meta.update(extra)
        meta["ok"] = True
        self._end()
        self._info = {}
        self._t_up1 = 0.0
        self.evaluations += 1
        self.emit(quantity, value, unit=unit, meta=meta)
        self._notify(job, Result(job.eval_id, True, value, "", meta))

    def _fail(self, reason: str, detail: str = "", **extra: Any) -> None:
        job = self._job
        if job is None:
            return
        meta = self._meta(job)
        meta.update(extra)
        meta.update(ok=False, reason=reason, detail=detail)
        self._end()
        self._info = {}
        self._t_up1 = 0.0
        self.failures[reason] += 1
        what = f"evaluation {job.eval_id} failed: {reason}: {detail}"
        if reason == SHUTDOWN:
            log.debug("device %s: %s", self.name, what)
        else:
            self._count_error_quietly(what)
        self.emit("failure", reason, meta=meta)
        self._notify(job, Result(job.eval_id, False, None, reason, meta))

    def _notify(self, job: Job, result: Result) -> None:
        if job.done is None:
            return
        try:
            job.done(result)
        except Exception:  # noqa: BLE001 - a consumer's bug must not stop the board
            log.exception("device %s: result callback for %s failed", self.name, job.eval_id)
