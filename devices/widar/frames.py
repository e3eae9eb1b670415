"""radloggerd's WIDAR lag frame: encode, validate and decode, vectorised over batches.

The public WIDAR record fixes the fields of a lag frame but not their bit layout on the wire;
this module is the one home of radloggerd's own layout (``shared/protocols/widar.md``): one
frame per UDP datagram, big-endian 32-bit words, a 10-word header then the lags as int32
in-phase / quadrature pairs::

    0  sync 0xF83E0F83
    1  bbY(31-29) sbY(28-24) stationY(23-16) bbX(15-13) sbX(12-8) stationX(7-0)
    2  start block(31-24) number of blocks(23-16) log2 lags(15-8) chip(7-4) cell(3-1) valid(0)
    3  status(31-24; bits 31-30 polarization product) frame count(23-16) recircY(15-8) recircX(7-0)
    4-5 timestamp, u64 ns since the Unix epoch, word 4 high
    6  data-valid count at the centre lag     7  data-valid count at the edge lags
    8  board serial(31-16) phase bin(15-0)
    9  checksum: the 32-bit wrap-around sum of all words of the frame is 0

Why batches: at 42,000-117,000 frames/s a per-frame Python parse (struct.unpack, a dict of
fields) would eat the whole budget.  The driver receives a batch of datagrams into one
preallocated ``(batch, frame_bytes)`` uint8 array and everything here works on that array at
numpy speed: one validation pass, one checksum reduction, one lag conversion per batch.

Bad frames are classified, in this order, as ``truncated`` (shorter than the header or than the
header declares), ``bad_sync``, ``bad_length`` (longer than declared, an impossible lag count,
or a lag count other than the configured one), ``bad_checksum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radlogger.errors import ProtocolError

__all__ = [
    "SYNC", "HEADER_WORDS", "HEADER_BYTES", "MAX_LOG2_LAGS", "REASONS", "OK", "TRUNCATED",
    "BAD_SYNC", "BAD_LENGTH", "BAD_CHECKSUM", "FIELDS", "FIELD_NAMES", "POLARIZATIONS", "BadFrame",
    "FrameBatch", "frame_bytes", "pack_words", "unpack_words", "encode", "encode_frame",
    "fix_checksums", "validate", "decode", "decode_frame", "to_complex", "reason_counts",
]

SYNC = 0xF83E0F83
HEADER_WORDS = 10
HEADER_BYTES = 4 * HEADER_WORDS
#: 2**12 lags = 32,808-byte frame; 2**13 would not fit a UDP datagram
MAX_LOG2_LAGS = 12
POLARIZATIONS = ("AA", "AB", "BA", "BB")

OK, TRUNCATED, BAD_SYNC, BAD_LENGTH, BAD_CHECKSUM = range(5)
#: reason names by code (code 0 is a good frame)
REASONS = ("ok", "truncated", "bad_sync", "bad_length", "bad_checksum")

#: decoded header fields (native byte order), one record per frame
FIELDS = np.dtype([
    ("station_x", "u1"), ("subband_x", "u1"), ("baseband_x", "u1"),
    ("station_y", "u1"), ("subband_y", "u1"), ("baseband_y", "u1"),
    ("start_block", "u1"), ("n_blocks", "u1"), ("log2_lags", "u1"),
    ("chip", "u1"), ("cell", "u1"), ("cell_valid", "u1"),
    ("polarization", "u1"), ("flags", "u1"), ("frame_count", "u1"),
    ("recirc_y", "u1"), ("recirc_x", "u1"),
    ("timestamp", "u8"), ("dv_centre", "u4"), ("dv_edge", "u4"),
    ("board", "u2"), ("phase_bin", "u2"),
])
FIELD_NAMES: tuple[str, ...] = FIELDS.names or ()


class BadFrame(ProtocolError, ValueError):
    """A frame that failed validation; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


def frame_bytes(lags_per_frame: int) -> int:
    """Datagram size of a frame carrying ``lags_per_frame`` lags."""
    return HEADER_BYTES + 8 * lags_per_frame


def _log2(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} = {n}: must be a power of two")
    return n.bit_length() - 1


# --------------------------------------------------------------------------- header words
def pack_words(fields: np.ndarray) -> np.ndarray:
    """Header words (M, 10) uint32, native order, checksum word 0, from :data:`FIELDS` records."""
    f = fields
    u = np.uint32
    w = np.zeros((len(f), HEADER_WORDS), np.uint32)
    w[:, 0] = SYNC
    w[:, 1] = ((f["baseband_y"].astype(u) & 7) << 29 | (f["subband_y"].astype(u) & 31) << 24
               | f["station_y"].astype(u) << 16 | (f["baseband_x"].astype(u) & 7) << 13
               | (f["subband_x"].astype(u) & 31) << 8 | f["station_x"].astype(u))
    w[:, 2] = (f["start_block"].astype(u) << 24 | f["n_blocks"].astype(u) << 16
               | f["log2_lags"].astype(u) << 8 | (f["chip"].astype(u) & 15) << 4
               | (f["cell"].astype(u) & 7) << 1 | (f["cell_valid"].astype(u) & 1))
    w[:, 3] = ((f["polarization"].astype(u) & 3) << 30 | (f["flags"].astype(u) & 63) << 24
               | f["frame_count"].astype(u) << 16 | f["recirc_y"].astype(u) << 8
               | f["recirc_x"].astype(u))
    ts = f["timestamp"].astype(np.uint64)
    w[:, 4] = (ts >> np.uint64(32)).astype(u)
    w[:, 5] = (ts & np.uint64(0xFFFFFFFF)).astype(u)
    w[:, 6] = f["dv_centre"]
    w[:, 7] = f["dv_edge"]
    w[:, 8] = f["board"].astype(u) << 16 | f["phase_bin"].astype(u)
    return w


def unpack_words(words: np.ndarray) -> np.ndarray:
    """:data:`FIELDS` records from header words (M, >=10), any integer byte order."""
    w = np.asarray(words[:, :HEADER_WORDS], dtype=np.uint32)
    out = np.empty(len(w), FIELDS)
    w1, w2, w3 = w[:, 1], w[:, 2], w[:, 3]
    out["baseband_y"] = w1 >> 29
    out["subband_y"] = (w1 >> 24) & 31
    out["station_y"] = (w1 >> 16) & 0xFF
    out["baseband_x"] = (w1 >> 13) & 7
    out["subband_x"] = (w1 >> 8) & 31
    out["station_x"] = w1 & 0xFF
    out["start_block"] = w2 >> 24
    out["n_blocks"] = (w2 >> 16) & 0xFF
    out["log2_lags"] = (w2 >> 8) & 0xFF
    out["chip"] = (w2 >> 4) & 15
    out["cell"] = (w2 >> 1) & 7
    out["cell_valid"] = w2 & 1
    out["polarization"] = w3 >> 30
    out["flags"] = (w3 >> 24) & 63
    out["frame_count"] = (w3 >> 16) & 0xFF
    out["recirc_y"] = (w3 >> 8) & 0xFF
    out["recirc_x"] = w3 & 0xFF
    out["timestamp"] = w[:, 4].astype(np.uint64) << np.uint64(32) | w[:, 5]
    out["dv_centre"] = w[:, 6]
    out["dv_edge"] = w[:, 7]
    out["board"] = w[:, 8] >> 16
    out["phase_bin"] = w[:, 8] & 0xFFFF
    return out


# --------------------------------------------------------------------------- encode
def fix_checksums(frames: np.ndarray) -> np.ndarray:
    """Recompute word 9 of every frame in ``frames`` (M, L) uint8, in place; returns it.

    Replay uses this after rewriting timestamps; tests use it to build frames that are
    corrupt in one chosen way only.
    """
    words = frames.view(">u4")
    words[:, 9] = 0
    total = np.add.reduce(words, axis=1, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    words[:, 9] = ((np.uint64(1 << 32) - total) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return frames


def encode(fields: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Frames (M, L) uint8 from header records and lags.

    ``lags`` is (M, F) complex (rounded to the nearest integer) or (M, F, 2) int32 I/Q pairs;
    F must be a power of two and is written into the header (``log2_lags``).
    """
    fields = np.asarray(fields, FIELDS).reshape(-1)
    lags = np.asarray(lags)
    if np.iscomplexobj(lags):
        pairs = np.empty(lags.shape + (2,), np.int32)
        pairs[..., 0] = np.rint(lags.real)
        pairs[..., 1] = np.rint(lags.imag)
    else:
        pairs = lags.astype(np.int32, copy=False)
    shape: tuple[int, ...] = tuple(pairs.shape)
    if len(shape) != 3 or shape[2] != 2 or shape[0] != len(fields):
        raise ValueError(f"lags of shape {lags.shape} do not match {len(fields)} frames")
    n = int(shape[1])
    fields = fields.copy()
    fields["log2_lags"] = _log2(n, "lags per frame")
    out = np.empty((len(fields), HEADER_WORDS + 2 * n), ">u4")
    out[:, :HEADER_WORDS] = pack_words(fields)
    out.view(">i4")[:, HEADER_WORDS:] = pairs.reshape(len(fields), 2 * n)
    return fix_checksums(out.view(np.uint8))


def encode_frame(lags: np.ndarray, **fields: Any) -> bytes:
    """One frame as bytes; ``fields`` are :data:`FIELDS` names (missing ones are 0)."""
    rec = np.zeros(1, FIELDS)
    for key, value in fields.items():
        if key not in FIELD_NAMES:
            raise KeyError(f"unknown frame field {key!r}; known: {', '.join(FIELD_NAMES)}")
        rec[key] = value
    return encode(rec, np.asarray(lags)[None, ...]).tobytes()


# --------------------------------------------------------------------------- validate / decode
def validate(buf: np.ndarray, lengths: np.ndarray, lags_per_frame: int) -> np.ndarray:
    """Reason code per datagram (0 = good) for rows of ``buf`` (B, W) uint8.

    ``lengths`` are the true datagram lengths (the driver receives with ``MSG_TRUNC``, so a
    datagram longer than a row still reports its full size).  Only frames of
    ``lags_per_frame`` lags can be good: W must hold at least one such frame.
    """
    expected = frame_bytes(lags_per_frame)
    b = len(lengths)
    if buf.shape[1] < expected:
        raise ValueError(f"rows of {buf.shape[1]} bytes cannot hold a {expected}-byte frame")
    lengths = np.asarray(lengths, np.int64)
    head = buf[:b, :HEADER_BYTES].view(">u4")
    log2 = (head[:, 2] >> 8) & 0xFF
    impossible = log2 > MAX_LOG2_LAGS
    declared = HEADER_BYTES + (8 << np.minimum(log2, MAX_LOG2_LAGS).astype(np.int64))
    reason = np.select(
        [lengths < HEADER_BYTES, head[:, 0] != SYNC, impossible, lengths < declared,
         lengths > declared, declared != expected],
        [TRUNCATED, BAD_SYNC, BAD_LENGTH, TRUNCATED, BAD_LENGTH, BAD_LENGTH],
        OK).astype(np.uint8)
    words = buf[:b, :expected].view(">u4")
    total = np.add.reduce(words, axis=1, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    reason[(reason == OK) & (total != 0)] = BAD_CHECKSUM
    return reason


def to_complex(pairs_be: np.ndarray) -> np.ndarray:
    """complex64 (M, F) from big-endian int32 I/Q pairs (M, 2F) (exact below 2**24)."""
    m = pairs_be.shape[0]
    return pairs_be.astype("<f4").view(np.complex64).reshape(m, pairs_be.shape[1] // 2)


@dataclass(frozen=True)
class FrameBatch:
    """The good frames of one received batch: header words and lags, ready to assemble."""

    #: (M, 10) uint32 header words, native byte order
    words: np.ndarray
    #: (M, F) complex64 lags
    lags: np.ndarray

    def __len__(self) -> int:
        return len(self.words)

    def fields(self) -> np.ndarray:
        return unpack_words(self.words)


def decode(buf: np.ndarray, lengths: np.ndarray, lags_per_frame: int
           ) -> tuple[FrameBatch, np.ndarray]:
    """Validate and decode a received batch: (good frames, reason code per datagram)."""
    reason = validate(buf, lengths, lags_per_frame)
    good = np.flatnonzero(reason == OK)
    expected = frame_bytes(lags_per_frame)
    if len(good) == len(reason):
        rows = buf[:len(reason), :expected]
    else:
        rows = buf[good, :expected]
    words = rows.view(">u4")
    return FrameBatch(words[:, :HEADER_WORDS].astype(np.uint32),
                      to_complex(words[:, HEADER_WORDS:].view(">i4"))), reason


def reason_counts(reason: np.ndarray) -> dict[str, int]:
    """``{reason name: count}`` of the bad frames in a reason array."""
    counts = np.bincount(reason, minlength=len(REASONS))
    return {REASONS[i]: int(c) for i, c in enumerate(counts) if i and c}


def decode_frame(data: bytes | bytearray | memoryview) -> tuple[dict[str, int], np.ndarray]:
    """One datagram: (header fields as a dict, complex64 lags); raises :class:`BadFrame`."""
    raw = np.frombuffer(bytes(data), np.uint8)
    n = len(raw)
    log2 = int(raw[10]) if n >= HEADER_BYTES else 0
    lpf = 1 << min(log2, MAX_LOG2_LAGS)
    width = max(n, frame_bytes(lpf))
    row = np.zeros((1, width), np.uint8)
    row[0, :n] = raw
    reason = int(validate(row, np.array([n]), lpf)[0])
    if reason:
        raise BadFrame(REASONS[reason], f"{REASONS[reason]} frame of {n} bytes")
    batch, _ = decode(row, np.array([n]), lpf)
    rec = batch.fields()[0]
    return {name: int(rec[name]) for name in FIELD_NAMES}, batch.lags[0]
