"""The options every store shares: where, when to flush, when to rotate, what a failing disk
does (their meaning is argued in :mod:`.base`)."""

from __future__ import annotations

from radlogger.options import Option

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
    Option("on_disk_error", str, "retry", "on disk full / permission errors: keep data in "
           "memory and retry with backoff, or mark the endpoint failed",
           choices=("retry", "fail")),
    Option("retry_initial", float, 1.0, "first retry delay after a disk error, seconds", min=0),
    Option("retry_max", float, 30.0, "longest retry delay after disk errors, seconds", min=0),
    Option("buffer_max", int, 100_000, "measurements kept in memory while the disk fails; "
           "newer ones are refused and counted", min=1),
)
