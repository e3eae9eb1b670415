"""Spectrum files: an appendable ``.npy`` of records, or one ``.npz`` per flush.

Each record holds ``t_ns`` (host clock), ``device_time`` (instrument clock, ns; -1 when
unknown), ``rf_freq`` and ``span`` (Hz; the frequency axis is
``rf_freq + (arange(N) - N//2) * span / N``) and ``dbm`` (the N-point spectrum, float32).

Why hand-rolled appending: numpy cannot append to a ``.npy``, and the ``npy-append-array``
package is not a dependency.  The format (NEP 1) is a magic string, a header length and a
Python-literal header; the header here is written with room for any row count, so appending
is "write rows at the end, rewrite the fixed-size header".  ``np.load`` reads the result, also
with ``mmap_mode="r"`` while the logger is still writing.  An existing file with the same
record layout is appended to after a restart; a different layout gets a new file name.
"""

from __future__ import annotations

import ast
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from radlogger.libc import libc

__all__ = ["record_dtype", "NpyAppender", "WriteBehind", "write_npz", "frequency_axis"]

_MAGIC = b"\x93NUMPY\x01\x00"


def record_dtype(n: int) -> np.dtype:
    return np.dtype([("t_ns", "<i8"), ("device_time", "<i8"), ("rf_freq", "<f8"),
                     ("span", "<f8"), ("dbm", "<f4", (n,))])


def frequency_axis(rf_freq: float, span: float, n: int) -> np.ndarray:
    """Bin centre frequencies (Hz) of an fftshifted N-point spectrum."""
    return rf_freq + (np.arange(n) - n // 2) * (span / n)


def _header(dtype: np.dtype, rows: int, size: int | None = None) -> bytes:
    descr = np.lib.format.dtype_to_descr(dtype)
    text = repr({"descr": descr, "fortran_order": False, "shape": (rows,)})
    if size is None:  # room for 10**15 rows, aligned to 64 bytes like numpy's own writer
        longest = len(repr({"descr": descr, "fortran_order": False, "shape": (10 ** 15,)}))
        size = -(-(len(_MAGIC) + 2 + longest + 1) // 64) * 64
    pad = size - len(_MAGIC) - 2 - len(text) - 1
    if pad < 0:
        raise ValueError("npy header does not fit")
    return _MAGIC + struct.pack("<H", size - len(_MAGIC) - 2) + text.encode("latin1") + \
        b" " * pad + b"\n"


def _read_header(path: Path) -> tuple[np.dtype, int, int] | None:
    """(dtype, rows, header size) of an .npy we can append to, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(10)
            if len(head) < 10 or head[:8] != _MAGIC:
                return None
            hlen = struct.unpack("<H", head[8:10])[0]
            meta = ast.literal_eval(f.read(hlen).decode("latin1"))
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
        rows = int(meta["shape"][0])
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None
    size = 10 + hlen
    if os.path.getsize(path) < size + rows * dtype.itemsize:
        return None
    return dtype, rows, size


def _libc_sync_file_range() -> Any:
    """``sync_file_range(2)`` through ctypes (Linux; ``os`` has no binding), else None."""
    import ctypes

    lib = libc()
    if lib is None:
        return None
    try:
        func = lib.sync_file_range
    except AttributeError:  # a C library without the call
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_SYNC_FILE_RANGE = _libc_sync_file_range()
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* (linux/fs.h)
_PAGE = 4096


class WriteBehind:
    """Keeps a streaming file's dirty and cached pages bounded, as streaming writers do.

    Why: at SPP 1024 line rate the spectrum store writes ~117 MB/s.  Left to the kernel, the
    page cache fills with the file (7 GB a minute), dirty pages pile up to the background
    threshold, and copying each write into fresh page-cache pages got dearer over the minute
    (``copy_folio_from_iter_atomic`` + ``clear_page_erms``: the store thread's kernel time
    grew from 9 % to 29 % of a core, bench_wsa4000 ``stream_line_rate_long``, perf).  Here each
    write's range is handed to writeback at once (``SYNC_FILE_RANGE_WRITE``, asynchronous), and
    whatever lies more than ``lag`` bytes behind the write front is waited for (normally long
    done) and dropped from the cache (``POSIX_FADV_DONTNEED``): the cache holds ~2 x ``lag``
    of the file, and its pages are recycled while still warm.  Without ``sync_file_range``
    (not Linux) only the DONTNEED half runs, which starts writeback itself.
    """

    def __init__(self, lag: int, start: int) -> None:
        self.lag = max(_PAGE, lag // _PAGE * _PAGE)
        self.started = start  # handed to writeback up to here
        self.dropped = -(-start // _PAGE) * _PAGE  # dropped from the cache up to here

    def written(self, fd: int, end: int) -> None:
        """``[started, end)`` was just written through ``fd``."""
        sfr = _SYNC_FILE_RANGE
        if sfr is not None and end > self.started:
            sfr(fd, self.started, end - self.started, _WRITE)
        self.started = end
        stop = (end - self.lag) // _PAGE * _PAGE
        if stop - self.dropped < self.lag:
            return
        if sfr is not None:
            sfr(fd, self.dropped, stop - self.dropped, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, self.dropped, stop - self.dropped, os.POSIX_FADV_DONTNEED)
        self.dropped = stop


class NpyAppender:
    """Appends records to ``path`` (see the module docstring); with ``write_behind`` (bytes)
    the file's pages are written out and dropped from the cache behind the write front
    (:class:`WriteBehind`)."""

    def __init__(self, path: Path, dtype: np.dtype, write_behind: int = 0) -> None:
        self.dtype = dtype
        existing = _read_header(path) if path.exists() else None
        if path.exists() and (existing is None or existing[0] != dtype):
            stem, k = path.stem, 1
            while path.exists():
                path = path.with_name(f"{stem}.{k}.npy")
                k += 1
            existing = None
        self.path = path
        if existing is None:
            self.rows = 0
            self._hsize = len(_header(dtype, 0))
            with open(path, "wb") as f:
                f.write(_header(dtype, 0, self._hsize))
        else:
            _, self.rows, self._hsize = existing
            with open(path, "r+b") as f:  # drop a partial row left by a crash
                f.truncate(self._hsize + self.rows * dtype.itemsize)

        end = self._hsize + self.rows * dtype.itemsize
        self.behind = WriteBehind(write_behind, end) if write_behind > 0 else None

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        # straight from the array's buffer: no bytes copy (1 MB per 256 spectra at N=1024);
        # os.pwrite releases the GIL while the kernel copies
        data = np.ascontiguousarray(records, dtype=self.dtype).view(np.uint8)
        at = self._hsize + self.rows * self.dtype.itemsize
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view = memoryview(data).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], at + done)
            self.rows += len(records)
            os.pwrite(fd, _header(self.dtype, self.rows, self._hsize), 0)
            if self.behind is not None:
                self.behind.written(fd, at + done)
        finally:
            os.close(fd)


def write_npz(path: Path, records: np.ndarray) -> Path:
    """One compressed ``.npz`` with one array per record field."""
    arrays: dict[str, Any] = {name: records[name] for name in records.dtype.names or ()}
    np.savez_compressed(path, **arrays)
    return path
