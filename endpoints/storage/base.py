"""What every store shares: the flush policy, rotation, and surviving a failing disk.

A store keeps what it accepted in memory (its *pending* buffer: encoded lines, SQLite rows,
HDF5 columns) and writes it out at a *flush*, in one go: after ``flush_every`` measurements,
when ``flush_bytes`` are buffered, ``flush_interval`` seconds after the first unflushed
measurement (a small timer thread sees to that even when no more data arrives), and at stop.
Between flushes nothing touches the file, so a ``kill -9`` finds it exactly as the last flush
left it: the loss window of a crash is bounded by the flush policy (README.md).

Rotation (``rotate_bytes``, ``rotate_interval``) starts a new numbered file.  Time rotation
follows the measurements' wall-clock ``t_ns`` (bucketed on the epoch: 3600 = on the hour), so a
file holds exactly its interval's data, replays included.  A file is opened lazily at the first
flush that needs it (so its name can carry the time of its first measurement), except the
single, unrotated file, which is opened at start so a bad path shows at once.

Disk errors never escape into the pipeline: see diskerrors.py (``DiskErrorPolicy``).

Accounting: the endpoint base counts a measurement *handled* once ``handle_batch`` returns.  A
store that later loses an accepted measurement moves it from handled to dropped, only ever on
the endpoint's own worker thread or after it has stopped, so ``received == handled + dropped``
stays exact and no counter has two concurrent writers.  The timer thread only writes files
and records errors; it never touches the counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from radlogger.backoff import Backoff
from radlogger.endpoint import Endpoint, EndpointState
from radlogger.measurement import Measurement
from radlogger.options import by_reason
from radlogger.store.rotation import next_index, rotated_path

from .diskerrors import DiskErrorPolicy, StorageError
from .flusher import Flusher
from .options import STORAGE_OPTIONS

__all__ = ["StorageEndpoint", "StorageError", "STORAGE_OPTIONS"]

log = logging.getLogger(__name__)



class StorageEndpoint(DiskErrorPolicy, Endpoint):
    """Base of the file stores.  Subclasses implement the ``_``-prefixed file methods."""

    base_options = Endpoint.base_options + STORAGE_OPTIONS  # type: ignore[assignment]
    #: what a failing disk raises through this format's library (retried); anything else
    #: raised while writing is a bug and fails the endpoint loudly instead of looping
    storage_exceptions: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.path = self.target_path(Path(s.path).expanduser())
        self.disk_errors: Counter[str] = Counter()  # by errno / SQLite error name
        self.last_error = ""
        self.flushes = 0
        self.rows = 0  # measurements written to files (flushed)
        self.bytes_written = 0  # their encoded size before the format's own overhead
        self.lost = 0  # accepted measurements that could not be written (also counted as drops)
        self.files: list[Path] = []  # every file this endpoint wrote, in order
        self.current_path: Path | None = None
        self._io = threading.Lock()
        self._is_open = False
        self._pending = 0
        self._buffered = 0
        self._first_pending = 0.0
        self._first_t_ns = 0
        self._file_bytes = 0
        self._bucket: int | None = None
        self._rotate_ns = int(s.rotate_interval * 1e9)
        self._rotating = bool(s.rotate_bytes or self._rotate_ns)
        self._next_index: int | None = None
        self._broken = False
        self._rotate_due = False  # a rotation waits for the failing disk (see _rotate)
        self._retry_at = 0.0
        self._fatal: BaseException | None = None
        self._errors_unreported = 0
        self._retry = Backoff(s.retry_initial, max(s.retry_max, s.retry_initial), 2.0, 0.1)
        self._flusher: Flusher | None = None

    def counters(self) -> dict[str, int | float]:
        return {"rows": self.rows, "bytes": self.bytes_written, "flushes": self.flushes,
                "lost": self.lost, "files": len(self.files),
                "pending": self._pending, **by_reason("disk_errors", self.disk_errors)}

    # ---------------------------------------------------------------- for subclasses
    def target_path(self, path: Path) -> Path:
        """The file name actually written (gzip stores add ``.gz``)."""
        return path

    def _open_file(self, path: Path) -> None:
        """Open or create ``path`` for appending; raise on failure."""
        raise NotImplementedError

    def _can_append(self, path: Path) -> bool:
        """Whether an existing, non-empty ``path`` may be appended to (else a new file)."""
        return True

    def _encode(self, m: Measurement) -> int:
        """Add ``m`` to the pending buffer (all or nothing); return its size in bytes.

        Raise TypeError/ValueError for a value the format cannot hold (counted per item)."""
        raise NotImplementedError

    def _write_pending(self) -> None:
        """Write the pending buffer and clear it; on failure leave it intact and raise.

        May close the file (``self._close_quietly()``) if the handle cannot be trusted."""
        raise NotImplementedError

    def _discard_pending(self) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        """fsync what was written (``fsync = yes``)."""

    def _close_file(self) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- endpoint lifecycle
    def writes(self) -> list[str]:
        return [str(self.path)]

    def open(self) -> None:
        with self._io:
            self._fatal = None
            self._flusher = Flusher(self)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self._rotating and not self._is_open:
                    self._open_for_write()
            except Exception as exc:  # noqa: BLE001 - reported and retried, never raised
                if isinstance(exc, self.storage_exceptions):
                    self._storage_error(exc)
                else:
                    self._write_bug(exc)
            if self._pending:  # kept across a restart
                self._flusher.arm(time.monotonic())

    def handle_batch(self, batch: list[Measurement]) -> None:
        failures: list[tuple[Measurement, Exception]] = []
        with self._io:
            self._report_errors()
            if self._fatal is not None:
                self._fail_now(len(batch))
                return
            self._encode_batch(batch, failures)
            if self._fatal is not None:
                self._fail_now(0)
            elif self._pending and not self._broken:
                interval = self.settings.flush_interval
                if interval and time.monotonic() - self._first_pending >= interval:
                    self._flush_pending()
            elif self._broken and self._pending and time.monotonic() >= self._retry_at:
                self._flush_pending()
            if self._fatal is not None:
                self._fail_now(0)
            self._report_errors()
        # Outside the lock: the base may react to these errors by restarting the endpoint
        # (close + open), which takes the lock and stops the timer thread.
        for m, exc in failures:
            self.item_failed(m, exc)

    def _encode_batch(self, batch: list[Measurement],
                      failures: list[tuple[Measurement, Exception]]) -> None:
        s = self.settings
        encode = self._encode
        rot_ns = self._rotate_ns
        rot_bytes = s.rotate_bytes
        every = s.flush_every or -1
        flush_bytes = s.flush_bytes
        buffer_max = s.buffer_max
        n = len(batch)
        for i, m in enumerate(batch):
            if rot_ns:
                bucket = m.t_ns // rot_ns
                if self._bucket is None:
                    self._bucket = bucket
                elif bucket > self._bucket:
                    self._bucket = bucket
                    self._rotate()
            if self._broken and self._pending >= buffer_max:
                self._lose(n - i, "disk_backlog_full")
                return
            try:
                size = encode(m)
            except Exception as exc:  # noqa: BLE001 - a value the format cannot hold
                failures.append((m, exc))
                continue
            if not self._pending:
                self._first_pending = time.monotonic()
                self._first_t_ns = m.t_ns
                if self._flusher is not None and s.flush_interval:
                    self._flusher.arm(self._first_pending + s.flush_interval)
            self._pending += 1
            self._buffered += size
            self._file_bytes += size
            if rot_bytes and self._file_bytes >= rot_bytes:
                self._rotate()
            elif (self._pending == every or self._buffered >= flush_bytes) and not self._broken:
                self._flush_pending()
            if self._fatal is not None:
                self._lose(n - i - 1, "disk_error")
                return

    def flush(self) -> None:
        """Write everything pending now (the pipeline calls this at stop)."""
        with self._io:
            self._report_errors()
            if self._fatal is not None:
                self._fail_now(0)
            elif self._pending:
                self._flush_pending(force=True)
                if self._fatal is not None:
                    self._fail_now(0)
            self._report_errors()

    def close(self) -> None:
        final = self.state is not EndpointState.RESTARTING
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        with self._io:
            if final and self._pending:
                if self._fatal is None:
                    self._flush_pending(force=True)
                if self._pending:
                    log.error("endpoint %s (%s): %d measurements could not be written to %s "
                              "and are lost: %s", self.name, self.kind, self._pending,
                              self.current_path or self.path, self.last_error)
                    self._discard_pending()
                    self._lose(self._pending, "disk_error")
                    self._reset_pending()
            self._close_quietly()
            self._report_errors()

    # ---------------------------------------------------------------- standalone use
    def write_all(self, measurements: Iterable[Measurement], batch_size: int = 4096) -> int:
        """Write without a pipeline (export, tests): open, write, flush, close.

        Returns how many were stored; raises :class:`StorageError` if any were not."""
        self.open()
        count = 0
        try:
            batch: list[Measurement] = []
            for m in measurements:
                batch.append(m)
                if len(batch) >= batch_size:
                    count += self._standalone_batch(batch)
                    batch = []
            if batch:
                count += self._standalone_batch(batch)
            self.flush()
        finally:
            self.close()
        problems = self.stats.dropped
        if problems or self.state is EndpointState.FAILED:
            raise StorageError(f"{problems} of {count} measurements were not stored in "
                               f"{self.current_path or self.path}: "
                               f"{self.last_error or 'see the log'}")
        return count

    def _standalone_batch(self, batch: list[Measurement]) -> int:
        """What the endpoint worker does with a batch, accounting included."""
        self.stats.received += len(batch)
        self.process_batch(batch)
        return len(batch)

    # ---------------------------------------------------------------- internals
    def _reset_pending(self) -> None:
        self._pending = 0
        self._buffered = 0

    def _rotate(self) -> None:
        """Finish the current file: flush into it, close it; the next flush opens a new one."""
        if self._pending:
            self._flush_pending()
            if self._pending:
                # Disk failing: keep collecting.  What is kept goes into the file still open
                # (closing a file whose write failed is unsafe for HDF5), which is closed right
                # after that write; without an open file it lands in the next file that opens.
                self._rotate_due = self._is_open
                return
        self._close_quietly()
        self._file_bytes = 0

    def _open_for_write(self) -> None:
        if self._rotating:
            path = self._next_rotated_path()
        else:
            path = self.path
            try:
                existing = path.stat().st_size > 0 and path.is_file()
            except FileNotFoundError:
                existing = False
            if existing and not self._can_append(path):
                path = self._next_rotated_path()
                log.warning("endpoint %s: %s cannot be appended to (a crash or compression "
                            "left it complete as is); continuing in %s", self.name, self.path,
                            path.name)
        self._open_file(path)
        self._is_open = True
        log.info("endpoint %s (%s): writing %s", self.name, self.kind, path.resolve())
        self.current_path = path
        if path not in self.files:
            self.files.append(path)

    def _next_rotated_path(self) -> Path:
        if self._next_index is None:
            self._next_index = next_index(self.path)
        t_ns = self._first_t_ns if self._pending else time.time_ns()
        path = rotated_path(self.path, self._next_index, t_ns)
        self._next_index += 1
        return path

    def _flush_pending(self, force: bool = False) -> bool:
        """Write the pending buffer; False if it stays pending (disk error, backing off)."""
        if not self._pending:
            return True
        if self._fatal is not None:
            return False
        if self._broken and not force and time.monotonic() < self._retry_at:
            return False
        try:
            if not self._is_open:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open_for_write()
            self._write_pending()
        except Exception as exc:  # noqa: BLE001 - counted, logged, retried or failed
            self._write_failed(exc)
            return False
        # Written (the buffer is empty now): whatever fsync says, these rows are in the file
        # and must neither stay counted as pending nor be counted lost at stop.
        self.rows += self._pending
        self.bytes_written += self._buffered
        self._reset_pending()
        self.flushes += 1
        synced = True
        if self.settings.fsync:
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - counted, logged, retried or failed
                self._write_failed(exc)
                synced = False
        if self._rotate_due:  # the rotation the failing disk held up
            self._close_quietly()
            self._file_bytes = 0
        if not synced:
            return False
        if self._broken:
            self._broken = False
            self._retry.reset()
            log.warning("endpoint %s (%s): writing to %s again after %d disk errors",
                        self.name, self.kind, self.current_path, sum(self.disk_errors.values()))
        return True

    def _close_quietly(self) -> None:
        self._rotate_due = False
        if not self._is_open:
            return
        self._is_open = False
        try:
            self._close_file()
        except Exception as exc:  # noqa: BLE001 - the file is given up either way
            log.warning("endpoint %s: closing %s failed: %s", self.name, self.current_path, exc)

    def on_timer(self) -> None:
        """Timer thread: flush data older than flush_interval, retry after disk errors."""
        with self._io:
            if self._fatal is not None or not self._pending:
                return
            now = time.monotonic()
            if self._broken:
                if now < self._retry_at:
                    if self._flusher is not None:
                        self._flusher.arm(self._retry_at)
                    return
                self._flush_pending()
                return
            interval = self.settings.flush_interval
            due = self._first_pending + interval
            if interval and now < due:
                if self._flusher is not None:
                    self._flusher.arm(due)
                return
            self._flush_pending()
