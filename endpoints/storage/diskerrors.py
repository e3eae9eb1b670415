"""Disk errors: what a store does about them, and how users read them.

Disk errors (disk full, permission denied, read-only file system, a vanished directory) never
escape into the pipeline.  Each is counted in ``disk_errors`` (by errno) and ``stats.errors``
and logged as one line naming the file, the cause and the fix.  Then, per ``on_disk_error``:

* ``retry``: the pending buffer is kept and writing is retried with exponential backoff; new
  measurements are still accepted up to ``buffer_max`` pending, after which new ones are refused
  and counted (drop reason ``disk_backlog_full``).  When the disk recovers, everything kept is
  written.  At stop, whatever still cannot be written is counted (``disk_error``).
* ``fail``: the endpoint is marked failed; its pending measurements are counted as dropped
  (``disk_error``) and everything after is dropped by the endpoint base.

Messages: a short reason for counters and a one-line message with the fix (the file, what the
system said, what to do about it).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from typing import Any

from radlogger.backoff import Backoff
from radlogger.endpoint import EndpointState
from radlogger.errors import OperationError
from radlogger.options import Option

__all__ = ["StorageError", "DiskErrorPolicy", "DISK_ERROR_OPTIONS", "describe"]

log = logging.getLogger(__name__)

DISK_ERROR_OPTIONS = (
    Option("on_disk_error", str, "retry", "on disk full / permission errors: keep data in "
           "memory and retry with backoff, or mark the endpoint failed",
           choices=("retry", "fail")),
    Option("retry_initial", float, 1.0, "first retry delay after a disk error, seconds", min=0),
    Option("retry_max", float, 30.0, "longest retry delay after disk errors, seconds", min=0),
    Option("buffer_max", int, 100_000, "measurements kept in memory while the disk fails; "
           "newer ones are refused and counted", min=1),
)

_FIXES = {
    errno.ENOSPC: "free disk space or point path at a larger disk",
    errno.EDQUOT: "raise the disk quota or point path elsewhere",
    errno.EACCES: "check the permissions of the file and its directory, or change path",
    errno.EPERM: "check the permissions of the file and its directory, or change path",
    errno.EROFS: "the file system is read-only: remount it or change path",
    errno.ENOENT: "the directory vanished: recreate it or change path",
    errno.ENOTDIR: "a part of path is a file, not a directory: change path",
    errno.EEXIST: "a file is where the directory of path should be: move it or change path",
    errno.EIO: "the disk reports I/O errors: check it",
}


class StorageError(OperationError):
    """A store could not keep what it was given (raised only by :meth:`write_all`)."""


def describe(exc: BaseException) -> tuple[str, str]:
    """``(short reason for counters, one-line message with the fix)``."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        name = errno.errorcode[code]
        detail = (getattr(exc, "strerror", None) or os.strerror(code)).splitlines()[0][:200]
        text = f"{detail} [{name}]"
        fix = _FIXES.get(code, "")
        return name, f"{text}; {fix}" if fix else text
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    text = (str(exc) or type(exc).__name__).splitlines()[0][:200]
    if name in ("SQLITE_FULL",):
        return name, f"{text} [{name}]; free disk space or raise max_bytes"
    if name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"):
        return name, f"{text} [{name}]; check permissions of the file and its directory"
    return name, f"{type(exc).__name__}: {text}"


class DiskErrorPolicy:
    """The ``on_disk_error`` policy of :class:`~.base.StorageEndpoint` (mixed into it): count and
    log each error, then retry with backoff or fail the endpoint.  Runs under the store's I/O
    lock; the state it keeps is created by ``StorageEndpoint.__init__``."""

    name: str
    kind: str
    settings: Any
    disk_errors: Counter[str]
    last_error: str
    lost: int
    _fatal: BaseException | None
    _broken: bool
    _retry_at: float
    _retry: Backoff
    _errors_unreported: int
    _pending: int
    _flusher: Any
    storage_exceptions: tuple[type[BaseException], ...]

    def _write_failed(self, exc: BaseException) -> None:
        if isinstance(exc, self.storage_exceptions):
            self._storage_error(exc)
        else:
            self._write_bug(exc)

    def _storage_error(self, exc: BaseException) -> None:
        reason, text = describe(exc)
        self.disk_errors[reason] += 1
        self._errors_unreported += 1
        where = self.current_path if self._is_open and self.current_path else self.path
        self.last_error = f"cannot write {where}: {text}"
        if self.settings.on_disk_error == "fail":
            self._fatal = exc
            log.error("endpoint %s (%s): %s; on_disk_error = fail: the endpoint stops",
                      self.name, self.kind, self.last_error)
            return
        delay = self._retry.next_delay()
        self._broken = True
        self._retry_at = time.monotonic() + delay
        if self._flusher is not None:
            self._flusher.arm(self._retry_at)
        log.error("endpoint %s (%s): %s; %d measurements kept in memory (at most "
                  "buffer_max = %d), retrying in %.1f s", self.name, self.kind, self.last_error,
                  self._pending, self.settings.buffer_max, delay)

    def _write_bug(self, exc: BaseException) -> None:
        """Not a disk error: retrying cannot help, so fail loudly (with the traceback)."""
        self._errors_unreported += 1
        self.disk_errors[type(exc).__name__] += 1
        self.last_error = f"writing {self.current_path or self.path} failed: " \
                          f"{type(exc).__name__}: {exc} (a bug: please report it)"
        self._fatal = exc
        log.error("endpoint %s (%s): %s", self.name, self.kind, self.last_error, exc_info=exc)

    def _fail_now(self, refused: int) -> None:
        """on_disk_error = fail: count what is lost, close, mark failed (worker/stop thread)."""
        lost = self._pending
        if lost:
            self._discard_pending()
            self._reset_pending()
        self._lose(lost + refused, "disk_error")
        self._close_quietly()
        if self._flusher is not None:  # the base skips close() for a failed endpoint
            self._flusher.stop(join=False)
            self._flusher = None
        if self.state is not EndpointState.FAILED:
            log.error("endpoint %s (%s) failed: %s; %d measurements lost", self.name,
                      self.kind, self.last_error, lost + refused)
            self._set_state(EndpointState.FAILED)

    def _lose(self, n: int, reason: str) -> None:
        """Re-classify ``n`` accepted measurements from handled to dropped (see module doc)."""
        if n <= 0:
            return
        self.count_lost(reason, n)
        self.lost += n

    def _report_errors(self) -> None:
        if self._errors_unreported:
            self.stats.errors += self._errors_unreported
            self._errors_unreported = 0
