"""VITA-49 (VRT) packets as the WSA4000 sends them: the format, its encoder, the parsed packet.

Packet types, stream ids, the header bits a WSA always sends, the trailer flags and the context
field tables with their fixed-point codecs, both ways: the simulator encodes with them, the
streaming parser (:mod:`.vrtparser`) decodes with them.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DATA", "CONTEXT", "EXT_CONTEXT", "RECEIVER_STREAM", "DIGITIZER_STREAM", "IQ_STREAM",
    "EXT_STREAM", "HEALTHY_TRAILER", "TRAILER_BITS", "VRTPacket", "header_word",
    "data_header", "encode_data", "encode_context", "trailer_word", "trailer_flags",
    "CONTEXT_FIELDS", "EXT_FIELDS", "decode_fields", "FIXED_MASK", "DATA_FIXED", "CONTEXT_FIXED",
    "EXT_FIXED", "VALID_ENABLE",
]

# packet types (header bits 31-28)
DATA = 1
CONTEXT = 4
EXT_CONTEXT = 5

RECEIVER_STREAM = 0x90000001
DIGITIZER_STREAM = 0x90000002
IQ_STREAM = 0x90000003
EXT_STREAM = 0x90000004

# header bits 27-20 that a WSA always sends: C=0, T (data only), TSI=01 (UTC), TSF=10 (ps)
FIXED_MASK = 0xFFF00000
DATA_FIXED = 0x14600000
CONTEXT_FIXED = 0x40600000
EXT_FIXED = 0x50600000
_TSI_TSF = 0x00600000


#: trailer flag -> (enable bit, indicator bit); an indicator counts only when enabled
TRAILER_BITS: dict[str, tuple[int, int]] = {
    "valid": (30, 18),
    "ref_lock": (29, 17),
    "spectral_inversion": (26, 14),
    "over_range": (25, 13),
    "sample_loss": (24, 12),
}
HEALTHY_TRAILER = 0x60060000
VALID_ENABLE = 1 << 30  # a WSA enables the valid-data indicator in every trailer

# Context fields in VITA-49 indicator-bit order (highest bit first, the order on the wire):
# bit -> (name, words, codec).  Receiver and digitizer packets share the standard table.
CONTEXT_FIELDS: dict[int, tuple[str, int, str]] = {
    30: ("reference_point", 1, "u32"),
    29: ("bandwidth", 2, "fix20"),
    28: ("if_freq", 2, "fix20"),
    27: ("rf_freq", 2, "fix20"),
    26: ("rf_offset", 2, "fix20"),
    25: ("if_offset", 2, "fix20"),
    24: ("reflevel", 1, "lo16_7"),
    23: ("gain", 1, "gain"),
    22: ("over_range_count", 1, "u32"),
    21: ("sample_rate", 2, "fix20"),
    20: ("ts_adjustment", 2, "i64"),
    19: ("ts_calibration", 1, "u32"),
    18: ("temperature", 1, "lo16_6"),
    17: ("device_id", 2, "i64"),
    16: ("state_event", 1, "u32"),
    15: ("payload_format", 2, "i64"),
}
#: the WSA's extension (custom) context fields
EXT_FIELDS: dict[int, tuple[str, int, str]] = {
    1: ("stream_start_id", 1, "u32"),
    0: ("sweep_id", 1, "u32"),
}
_FIELD_BY_NAME = {name: (bit, words, codec) for table in (CONTEXT_FIELDS, EXT_FIELDS)
                  for bit, (name, words, codec) in table.items()}

_DATA_PREFIX = struct.Struct(">IIIQ")
_CTX_PREFIX = struct.Struct(">IIIQI")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_GAIN = struct.Struct(">hh")
_LO16 = struct.Struct(">xxh")


def header_word(ptype: int, count: int, size_words: int) -> int:
    """Header word 0 of a WSA packet of ``ptype`` (data packets carry a trailer)."""
    fixed = {DATA: DATA_FIXED, CONTEXT: CONTEXT_FIXED, EXT_CONTEXT: EXT_FIXED}[ptype]
    return fixed | ((count & 0xF) << 16) | (size_words & 0xFFFF)


def data_header(count: int, spp: int, ts_sec: int, ts_ps: int,
                stream_id: int = IQ_STREAM) -> bytes:
    """The 20 bytes before the samples of a data packet (the simulator's hot path)."""
    return _DATA_PREFIX.pack(DATA_FIXED | ((count & 0xF) << 16) | (spp + 6), stream_id,
                             ts_sec, ts_ps)


def trailer_word(valid: bool = True, ref_lock: bool = True, spectral_inversion: bool = False,
                 over_range: bool = False, sample_loss: bool = False) -> int:
    """A trailer with valid/ref-lock always enabled and the other bits enabled when set."""
    word = 0
    for name, on in (("valid", valid), ("ref_lock", ref_lock),
                     ("spectral_inversion", spectral_inversion), ("over_range", over_range),
                     ("sample_loss", sample_loss)):
        enable, indicator = TRAILER_BITS[name]
        if name in ("valid", "ref_lock") or on:
            word |= 1 << enable
        if on:
            word |= 1 << indicator
    return word


def trailer_flags(trailer: int) -> dict[str, bool]:
    return {name: bool((trailer >> e) & (trailer >> i) & 1)
            for name, (e, i) in TRAILER_BITS.items()}


def _iq_int16(iq: Any) -> np.ndarray:
    a = np.asarray(iq)
    if np.iscomplexobj(a):
        a = np.stack([a.real, a.imag], axis=-1)
        a = np.clip(np.rint(a), -8192, 8191)
    a = a.reshape(-1, 2)
    return a.astype(">i2")


def encode_data(iq: Any, count: int, ts_sec: int, ts_ps: int, trailer: int = HEALTHY_TRAILER,
                stream_id: int = IQ_STREAM) -> bytes:
    """An IF data packet; ``iq`` is complex (rounded, clipped to 14 bits) or (n, 2) integers."""
    samples = _iq_int16(iq)
    spp = samples.shape[0]
    return data_header(count, spp, ts_sec, ts_ps, stream_id) + samples.tobytes() + \
        _U32.pack(trailer & 0xFFFFFFFF)


def _encode_field(codec: str, value: Any) -> bytes:
    if codec == "u32":
        return _U32.pack(int(value) & 0xFFFFFFFF)
    if codec == "fix20":
        return _I64.pack(int(round(float(value) * (1 << 20))))
    if codec == "i64":
        return _I64.pack(int(value))
    if codec == "lo16_7":
        return _LO16.pack(int(round(float(value) * 128)))
    if codec == "lo16_6":
        return _LO16.pack(int(round(float(value) * 64)))
    if codec == "gain":
        g1, g2 = value if isinstance(value, (tuple, list)) else (value, 0.0)
        return _GAIN.pack(int(round(g1 * 128)), int(round(g2 * 128)))
    raise ValueError(f"unknown codec {codec}")


def encode_context(stream_id: int, fields: Mapping[str, Any], count: int, ts_sec: int,
                   ts_ps: int) -> bytes:
    """A context packet carrying ``fields`` (a WSA sends exactly one per packet).

    The packet type follows from the stream id (extension context for ``EXT_STREAM``).
    """
    ptype = EXT_CONTEXT if stream_id == EXT_STREAM else CONTEXT
    order = sorted(((_FIELD_BY_NAME[k][0], k) for k in fields), reverse=True)
    indicators = 0
    body = b""
    for bit, name in order:
        _, _, codec = _FIELD_BY_NAME[name]
        indicators |= 1 << bit
        body += _encode_field(codec, fields[name])
    size = 6 + len(body) // 4
    return _CTX_PREFIX.pack(header_word(ptype, count, size), stream_id, ts_sec, ts_ps,
                            indicators) + body


class VRTPacket:
    """One parsed packet.  ``samples`` is an (spp, 2) big-endian int16 view (data packets);
    ``fields`` the decoded context fields (context packets)."""

    __slots__ = ("ptype", "count", "size", "stream_id", "ts_sec", "ts_ps", "samples",
                 "trailer", "indicators", "fields")

    def __init__(self, ptype: int, count: int, size: int, stream_id: int, ts_sec: int,
                 ts_ps: int, samples: np.ndarray | None = None, trailer: int = 0,
                 indicators: int = 0, fields: dict[str, Any] | None = None) -> None:
        self.ptype = ptype
        self.count = count
        self.size = size
        self.stream_id = stream_id
        self.ts_sec = ts_sec
        self.ts_ps = ts_ps
        self.samples = samples
        self.trailer = trailer
        self.indicators = indicators
        self.fields = fields

    @property
    def is_data(self) -> bool:
        return self.ptype == DATA

    @property
    def spp(self) -> int:
        return self.size - 6 if self.ptype == DATA else 0

    @property
    def time_ns(self) -> int:
        """Device time in ns since the epoch (integer seconds + picoseconds // 1000)."""
        return self.ts_sec * 1_000_000_000 + self.ts_ps // 1000

    def flags(self) -> dict[str, bool]:
        return trailer_flags(self.trailer)

    def __repr__(self) -> str:
        what = f"spp={self.spp}" if self.is_data else f"fields={self.fields}"
        return (f"VRTPacket(type={self.ptype}, count={self.count}, sid=0x{self.stream_id:08x}, "
                f"t={self.ts_sec}.{self.ts_ps:012d}, {what})")


def decode_fields(table: dict[int, tuple[str, int, str]], indicators: int, buf: bytes,
                   pos: int, end: int, counts: Counter[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for bit in sorted(table, reverse=True):
        if not indicators & (1 << bit):
            continue
        name, words, codec = table[bit]
        if pos + 4 * words > end:
            counts["short_context"] += 1
            break
        if codec == "u32":
            value: Any = _U32.unpack_from(buf, pos)[0]
        elif codec == "fix20":
            value = _I64.unpack_from(buf, pos)[0] / 1048576.0
        elif codec == "i64":
            value = _I64.unpack_from(buf, pos)[0]
        elif codec == "lo16_7":
            value = _LO16.unpack_from(buf, pos)[0] / 128.0
        elif codec == "lo16_6":
            value = _LO16.unpack_from(buf, pos)[0] / 64.0
        else:  # gain
            g1, g2 = _GAIN.unpack_from(buf, pos)
            value = (g1 / 128.0, g2 / 128.0)
        fields[name] = value
        pos += 4 * words
    unknown = indicators & ~sum(1 << b for b in table) & 0x7FFFFFFF
    if unknown and not fields:
        counts["unknown_context_field"] += 1
    return fields
