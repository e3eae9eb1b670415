"""Hostile data-port input for the VRT parser: the worst garbage we know how to construct.

Shared by the parser's tests (every valid packet after such garbage is still found) and its
benchmark (``benchmarks/bench_wsa4000.py::test_vrt_parse_hostile``, target >= 100 MB/s).
"""

from __future__ import annotations

import struct

from .vrt import CONTEXT_FIXED, DATA_FIXED, IQ_STREAM, RECEIVER_STREAM

__all__ = ["HOSTILE", "hostile"]


def _header(fixed: int, size: int) -> bytes:
    return struct.pack(">II", fixed | size, IQ_STREAM if fixed == DATA_FIXED else RECEIVER_STREAM)


#: name -> one period of the pattern, repeated to any length
HOSTILE: dict[str, bytes] = {
    # a stream-id prefix every 3 bytes: bytes.find stops at every one
    "sid_prefix_every_3_bytes": b"\x90\x00\x00",
    # a valid stream id every 8 bytes behind a zero header word
    "stream_id_every_8_bytes": b"\x00\x00\x00\x00" + struct.pack(">I", IQ_STREAM),
    # a plausible data header every 8 bytes whose size (7 words) always lies
    "lying_data_headers": _header(DATA_FIXED, 7),
    # the same with the largest size: every header claims 256 kB
    "lying_huge_data_headers": _header(DATA_FIXED, 0xFFFF),
    # plausible context headers every 8 bytes, sizes lying by half a packet
    "lying_context_headers": _header(CONTEXT_FIXED, 9),
}


def hostile(name: str, nbytes: int) -> bytes:
    """``nbytes`` (rounded down to whole periods) of the named pattern."""
    period = HOSTILE[name]
    return period * max(1, nbytes // len(period))
