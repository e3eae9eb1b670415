"""The options every store shares: where, when to flush, when to rotate, and what a failing
disk does (:mod:`.diskerrors`); their meaning is argued in :mod:`.base`."""

from __future__ import annotations

from radlogger.options import Option

from .diskerrors import DISK_ERROR_OPTIONS

__all__ = ["STORAGE_OPTIONS"]

STORAGE_OPTIONS = (
    Option("path", str, None, "file to write; rotated files are named "
           "<stem>-<index>-<UTC time of first measurement><ext> next to it", required=True),
    Option("flush_every", int, 1000, "flush after this many measurements (0 = not by count)",
           min=0),
    Option("flush_interval", float, 1.0, "flush at most this many seconds after the first "
           "unflushed measurement (0 = not by time)", min=0),
    Option("flush_bytes", int, 8 << 20, "flush when this many bytes are buffered", min=1),
    Option("fsync", bool, False, "fsync at every flush: survive power loss, not only a crash "
           "(slower)"),
    Option("rotate_bytes", int, 0, "start a new file after this many bytes of data "
           "(0 = never)", min=0),
    Option("rotate_interval", float, 0.0, "start a new file every this many seconds of "
           "measurement time, aligned on the epoch: 3600 = hourly, 86400 = daily at 00:00 UTC "
           "(0 = never)", min=0),
) + DISK_ERROR_OPTIONS
