"""The streaming VITA-49 (VRT) parser for the WSA4000's data port (format in :mod:`.vrt`).

The data port is a raw stream of big-endian 32-bit words with no framing beyond each packet's
size field, so the parser must (a) cope with a TCP stream cut at arbitrary byte boundaries and
(b) find its way back after garbage.  Why hand-written rather than a library: the Python VRT
packages (pyrf's ``vrt.py``, vita49 readers) parse with ``struct`` per sample or assume whole
packets per read; neither resynchronises nor yields numpy views.

Design of the parser (:class:`VRTParser`):

* Chunks are collected until enough bytes exist to make progress (a header, or the rest of a
  packet whose size is known), then joined once: feeding 1-byte chunks costs O(n), not O(n^2).
* Samples are ``np.frombuffer(..., ">i2")`` views on the immutable joined ``bytes``: no per-sample
  Python, no copy until the consumer converts them.
* A header is *plausible* when its fixed bits match what a WSA sends for that packet type
  (type, class-id, trailer, TSI=UTC, TSF=picoseconds) AND the next word is a stream id of that
  type AND the size fits the type.  That is 44 fixed bits, so random bytes pass by chance about
  once in 2**44 positions.  On anything else the parser scans forward (``bytes.find`` for the
  stream-id prefix ``90 00 00``, C speed) to the next plausible header, counting skipped bytes.
* A size field that lies: when the bytes right after a packet are present and are not a
  plausible header, the packet body is searched for an embedded plausible header.  In valid
  14-bit I/Q data that is impossible (``0x9000`` and a ``0x6X`` high byte are outside
  -8192..8191 at every alignment), so finding one proves the size was too large: the packet
  is dropped (``bad_size``) and parsing resumes at the embedded header.  A size too small
  shows as a data packet whose "trailer" lacks the valid-data enable bit every WSA trailer
  has, followed by garbage: dropped (``bad_size``) and resynchronised past.
* Chunking never changes the result of a well-formed stream, with or without garbage between
  packets; the size checks above look ahead only at bytes already received, so for a stream
  with lying sizes the outcome can depend on where a read ended (it is counted either way).
* ``feed`` never raises on input; every problem is a count in :attr:`VRTParser.counts`.
"""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np

from .vrt import (
    CONTEXT,
    CONTEXT_FIELDS,
    CONTEXT_FIXED,
    DATA,
    DATA_FIXED,
    DIGITIZER_STREAM,
    EXT_CONTEXT,
    EXT_FIELDS,
    EXT_FIXED,
    EXT_STREAM,
    FIXED_MASK,
    IQ_STREAM,
    RECEIVER_STREAM,
    VALID_ENABLE,
    VRTPacket,
    decode_fields,
)

__all__ = ["VRTParser"]

#: type fixed bits -> (packet type, allowed stream ids, min size words, max size words)
_PLAUSIBLE: dict[int, tuple[int, frozenset[int], int, int]] = {
    DATA_FIXED: (DATA, frozenset({IQ_STREAM}), 7, 0xFFFF),
    CONTEXT_FIXED: (CONTEXT, frozenset({RECEIVER_STREAM, DIGITIZER_STREAM}), 6, 64),
    EXT_FIXED: (EXT_CONTEXT, frozenset({EXT_STREAM}), 6, 64),
}
_SID_PREFIX = b"\x90\x00\x00"  # every WSA stream id starts with these bytes
_HDR = struct.Struct(">II")
_U32 = struct.Struct(">I")


class VRTParser:
    """Streaming VRT parser: ``feed(chunk) -> [VRTPacket, ...]``; never raises on input.

    :attr:`counts` holds ``packets``, ``data``, ``context``, ``skipped_bytes``, ``resyncs``
    (garbage runs), ``bad_size`` (packets dropped because their size field lied) and
    ``short_context``/``unknown_context_field``.  :attr:`pending` is the number of bytes held
    for an incomplete packet.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._buf = b""
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 8
        self._in_garbage = False

    @property
    def pending(self) -> int:
        return self._have

    def reset(self) -> int:
        """Forget buffered bytes (a new connection); returns how many were discarded."""
        lost = self._have
        if lost:
            self.counts["discarded_bytes"] += lost
        self._buf = b""
        self._chunks = []
        self._have = 0
        self._need = 8
        self._in_garbage = False
        return lost

    def feed(self, data: bytes | bytearray | memoryview) -> list[VRTPacket]:
        if not data:
            return []
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer; our views must stay valid
        self._chunks.append(data)
        self._have += len(data)
        if self._have < self._need:
            return []
        if self._buf:
            self._chunks.insert(0, self._buf)
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        try:
            packets, pos, need = self._parse(buf)
        except Exception:  # noqa: BLE001 - a parser bug must not kill the driver: drop, count
            self.counts["parser_errors"] += 1
            self.counts["skipped_bytes"] += len(buf)
            packets, pos, need = [], len(buf), 8
        self._buf = buf[pos:] if pos < len(buf) else b""
        self._have = len(self._buf)
        self._need = self._have + need
        return packets

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _plausible(hdr: int, sid: int) -> tuple[int, int] | None:
        """(type, size in words) when ``hdr``/``sid`` look like a WSA packet start."""
        spec = _PLAUSIBLE.get(hdr & FIXED_MASK)
        if spec is None:
            return None
        ptype, sids, lo, hi = spec
        size = hdr & 0xFFFF
        if sid not in sids or not lo <= size <= hi:
            return None
        return ptype, size

    def _find_header(self, buf: bytes, start: int, stop: int) -> int:
        """First offset p in [start, stop - 8] holding a plausible header, or -1."""
        find = buf.find
        plausible = self._plausible
        q = start + 4
        while True:
            q = find(_SID_PREFIX, q, stop)
            if q < 0 or q + 4 > stop:
                return -1
            p = q - 4
            if p >= start:
                hdr, sid = _HDR.unpack_from(buf, p)
                if plausible(hdr, sid) is not None:
                    return p
            q += 1

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if not self._in_garbage:
            self._in_garbage = True
            self.counts["resyncs"] += 1
        self.counts["skipped_bytes"] += n

    def _parse(self, buf: bytes) -> tuple[list[VRTPacket], int, int]:
        """Parse whole packets from ``buf``; returns (packets, bytes consumed, bytes needed)."""
        out: list[VRTPacket] = []
        counts = self.counts
        n = len(buf)
        pos = 0
        unpack_hdr = _HDR.unpack_from
        plausible = self._plausible
        while True:
            left = n - pos
            if left < 8:
                return out, pos, 8 - left
            hdr, sid = unpack_hdr(buf, pos)
            kind = plausible(hdr, sid)
            if kind is not None:
                ptype, size = kind
                nbytes = size << 2
                if left < nbytes:
                    return out, pos, nbytes - left
                end = pos + nbytes
                if end + 8 <= n and plausible(*unpack_hdr(buf, end)) is None:
                    inner = self._find_header(buf, pos + 8, end)
                    if inner >= 0:  # the size lied: the next packet starts inside this one
                        counts["bad_size"] += 1
                        self._skip(inner - pos)
                        pos = inner
                        continue
                    if ptype == DATA and not _U32.unpack_from(buf, end - 4)[0] & VALID_ENABLE:
                        # garbage follows and the "trailer" is not one a WSA sends: the size
                        # was short and we are looking at samples.  Resync past it.
                        counts["bad_size"] += 1
                        kind = None
            if kind is None:
                nxt = self._find_header(buf, pos + 1, n)
                if nxt < 0:
                    keep = max(pos, n - 7)  # a header may begin in the last 7 bytes
                    self._skip(keep - pos)
                    pos = keep
                    return out, pos, 8 - (n - pos)
                self._skip(nxt - pos)
                pos = nxt
                continue
            self._in_garbage = False
            if ptype == DATA:
                ts_sec, ts_ps = struct.unpack_from(">IQ", buf, pos + 8)
                samples = np.frombuffer(buf, ">i2", (size - 6) * 2, pos + 20).reshape(-1, 2)
                trailer = _U32.unpack_from(buf, end - 4)[0]
                out.append(VRTPacket(DATA, (hdr >> 16) & 0xF, size, sid, ts_sec, ts_ps,
                                     samples, trailer))
                counts["data"] += 1
            else:
                ts_sec, ts_ps, indicators = struct.unpack_from(">IQI", buf, pos + 8)
                table = EXT_FIELDS if ptype == EXT_CONTEXT else CONTEXT_FIELDS
                fields = decode_fields(table, indicators, buf, pos + 24, end, counts)
                out.append(VRTPacket(ptype, (hdr >> 16) & 0xF, size, sid, ts_sec, ts_ps,
                                     indicators=indicators, fields=fields))
                counts["context"] += 1
            counts["packets"] += 1
            pos = end
