"""Where a pico driver gets its bitstreams: files on disk, or a queue fed by the control plane.

A source hands out :class:`Job` objects one at a time.  Files are read lazily (a directory of
thousands of bitstreams is not held in memory).  The queue is the farm's channel into one
board's driver: the HTTP thread puts batches, the driver thread takes them, and each job's
``done`` callback carries the :class:`Result` back to whoever queued it.  Generated test
bitstreams are what a simulated board (``simulate = yes``) evaluates when no files are given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from radlogger.options import OptionError

from .protocol import BITSTREAM_SIZE

__all__ = ["Job", "Result", "Source", "BitstreamQueue", "FileSource", "GeneratedSource",
           "sim_bitstream", "source_for"]

log = logging.getLogger(__name__)


@dataclass
class Result:
    """The outcome of one evaluation: ``value`` is pulses or fitness; ``reason`` when failed."""

    eval_id: str
    ok: bool
    value: float | int | None = None
    reason: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    eval_id: str
    data: bytes
    done: Callable[[Result], None] | None = None
    tag: Any = None  # opaque to the driver (the farm keeps its reservation id here)
    meta: dict[str, Any] = field(default_factory=dict)  # merged into the published meta


class Source(Protocol):
    def get(self, timeout: float) -> Job | None: ...

    @property
    def exhausted(self) -> bool: ...


class BitstreamQueue:
    """Thread-safe FIFO of jobs for one board (many producers, one driver thread)."""

    def __init__(self, on_put: Callable[[], None] | None = None) -> None:
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self.on_put = on_put  # wakes a consumer that waits elsewhere (the driver's read)

    def put(self, jobs: Iterable[Job]) -> int:
        with self._cond:
            self._jobs.extend(jobs)
            n = len(self._jobs)
            self._cond.notify()
        if self.on_put is not None:
            self.on_put()
        return n

    def get(self, timeout: float) -> Job | None:
        with self._cond:
            if not self._jobs and timeout > 0:
                self._cond.wait(timeout)
            return self._jobs.popleft() if self._jobs else None

    def clear(self, tag: Any = None) -> list[Job]:
        """Remove queued jobs (only those with ``tag`` when given); returns them."""
        with self._cond:
            if tag is None:
                removed = list(self._jobs)
                self._jobs.clear()
            else:
                removed = [j for j in self._jobs if j.tag == tag]
                self._jobs = deque(j for j in self._jobs if j.tag != tag)
            return removed

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def exhausted(self) -> bool:
        return False  # the control plane may always queue more


class FileSource:
    """Bitstreams from a directory of ``*.bin`` files (sorted) or one file, ``repeat`` times.

    ``repeat = 0`` cycles forever: the usual radiation-test setup evaluates the same known
    bitstream over and over and watches the count drift.  Evaluation ids are
    ``<file stem>#<cycle>`` so stored results say which file and which pass they came from.

    A file of the wrong size is handed out once (the driver rejects and reports it) and then
    skipped until it changes; an unreadable file is logged once and skipped.  So a directory of
    bad files cannot make the driver spin reporting the same failure.
    """

    def __init__(self, path: str | Path, repeat: int = 0) -> None:
        p = Path(path).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.glob("*.bin") if f.is_file())
            if not files:
                raise FileNotFoundError(f"bitstreams = {path}: no *.bin files in that directory")
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"bitstreams = {path}: no such file or directory")
        self.files = files
        self.repeat = repeat
        self.skipped = 0
        self._next = 0
        self._bad: dict[Path, Any] = {}  # file -> (size, mtime) already reported, or the error

    @property
    def exhausted(self) -> bool:
        return bool(self.repeat) and self._next >= self.repeat * len(self.files)

    def get(self, timeout: float) -> Job | None:
        for _ in range(len(self.files)):
            if self.exhausted:
                return None
            cycle, i = divmod(self._next, len(self.files))
            self._next += 1
            f = self.files[i]
            try:
                st = f.stat()
                key = (st.st_size, st.st_mtime_ns)
                if self._bad.get(f) == key:
                    self.skipped += 1
                    continue
                data = f.read_bytes()
            except OSError as exc:
                self.skipped += 1
                if self._bad.get(f) != exc.errno:
                    log.warning("bitstream %s skipped: %s", f, exc.strerror)
                    self._bad[f] = exc.errno
                continue
            if len(data) != BITSTREAM_SIZE:
                self._bad[f] = key
            else:
                self._bad.pop(f, None)
            return Job(f"{f.stem}#{cycle}", data)
        time.sleep(timeout)  # a whole pass without a usable file: do not spin
        return None


def sim_bitstream(i: int) -> bytes:
    """Generated test bitstream ``i``: ``default_rng(i).bytes(104_090)``, the same every run."""
    return np.random.default_rng(i).bytes(BITSTREAM_SIZE)


class GeneratedSource:
    """``n`` deterministic test bitstreams, ``repeat`` passes (0 = forever), made on demand.

    For ``simulate = yes`` without files: a new user sees evaluations at once, and since the
    simulated count is a documented function of the bytes (``simboard.expected_pulses``),
    every published count can be checked.  Made per evaluation (about 0.1 ms each) rather than
    held: a long list costs no memory.  Evaluation ids are ``sim<i>#<cycle>``.
    """

    def __init__(self, n: int, repeat: int = 0) -> None:
        if n < 1:
            raise ValueError(f"{n} generated bitstreams: need at least 1")
        self.n = n
        self.repeat = repeat
        self._next = 0

    @property
    def exhausted(self) -> bool:
        return bool(self.repeat) and self._next >= self.repeat * self.n

    def get(self, timeout: float) -> Job | None:
        if self.exhausted:
            return None
        cycle, i = divmod(self._next, self.n)
        self._next += 1
        return Job(f"sim{i}#{cycle}", sim_bitstream(i))


def source_for(s: Any) -> Source | None:
    """The bitstreams a driver's settings name, unless a farm queues them: ``bitstreams``
    files, else with ``simulate`` generated ones, else none."""
    if s.bitstreams:
        try:
            return FileSource(s.bitstreams, s.repeat)
        except OSError as exc:
            raise OptionError("bitstreams", str(exc)) from None
    if s.simulate and not s.farm:
        return GeneratedSource(s.sim_bitstreams, s.repeat)
    return None
