"""The C library through ctypes, loaded once, for the Linux calls ``os`` and ``socket`` lack
(``recvmmsg``/``sendmmsg`` in :mod:`radlogger.mmsg`, ``sync_file_range`` in the spectrum store).
ctypes calls release the GIL, so a call that waits (the disk, the network) never stops the
other threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["libc"]


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library with ``errno`` kept (``ctypes.get_errno``), or None off Linux or when it
    cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
