"""WIDAR frame layout: encode/decode round trip, checksum rule, bad-frame classification."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radlogger.devices.widar import frames as F


def _fields(**kw: int) -> np.ndarray:
    rec = np.zeros(1, F.FIELDS)
    for k, v in kw.items():
        rec[k] = v
    return rec


FIELD_LIMITS = {
    "station_x": 255, "subband_x": 31, "baseband_x": 7, "station_y": 255, "subband_y": 31,
    "baseband_y": 7, "start_block": 255, "n_blocks": 255, "chip": 15, "cell": 7,
    "cell_valid": 1, "polarization": 3, "flags": 63, "frame_count": 255, "recirc_y": 255,
    "recirc_x": 255, "timestamp": 2**64 - 1, "dv_centre": 2**32 - 1, "dv_edge": 2**32 - 1,
    "board": 2**16 - 1, "phase_bin": 2**16 - 1,
}


@settings(max_examples=50, deadline=None)
@given(fields=st.fixed_dictionaries({k: st.integers(0, v) for k, v in FIELD_LIMITS.items()}),
       log2=st.integers(0, 7), seed=st.integers(0, 2**32 - 1))
def test_round_trip_every_field_and_lag(fields: dict[str, int], log2: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1 << log2
    pairs = rng.integers(-2**23, 2**23, (n, 2), dtype=np.int32)  # exact in complex64
    data = F.encode_frame(pairs, **fields)
    assert len(data) == F.frame_bytes(n) == 40 + 8 * n
    words = struct.unpack(f">{len(data) // 4}I", data)
    assert words[0] == F.SYNC
    assert sum(words) % 2**32 == 0, "checksum rule: the wrap-around sum of all words is 0"
    got, lags = F.decode_frame(data)
    assert got == {**fields, "log2_lags": log2}
    np.testing.assert_array_equal(lags.real, pairs[:, 0])
    np.testing.assert_array_equal(lags.imag, pairs[:, 1])


def test_word_layout_matches_the_protocol_table() -> None:
    data = F.encode_frame(np.array([[1, -1]], np.int32), baseband_y=5, subband_y=17,
                          station_y=0xAB, baseband_x=3, subband_x=9, station_x=0xCD,
                          start_block=2, n_blocks=4, chip=0xE, cell=5, cell_valid=1,
                          polarization=2, flags=0x15, frame_count=0x77, recirc_y=0x12,
                          recirc_x=0x34, timestamp=0x0102030405060708, dv_centre=1000,
                          dv_edge=900, board=0xBEEF, phase_bin=0x0042)
    w = struct.unpack(">12I", data)
    assert w[1] == (5 << 29 | 17 << 24 | 0xAB << 16 | 3 << 13 | 9 << 8 | 0xCD)
    assert w[2] == (2 << 24 | 4 << 16 | 0 << 8 | 0xE << 4 | 5 << 1 | 1)
    assert w[3] == (2 << 30 | 0x15 << 24 | 0x77 << 16 | 0x12 << 8 | 0x34)
    assert (w[4], w[5]) == (0x01020304, 0x05060708)
    assert (w[6], w[7], w[8]) == (1000, 900, 0xBEEF0042)
    assert struct.unpack(">2i", data[40:]) == (1, -1)


def _batch(datagrams: list[bytes], lpf: int) -> tuple[np.ndarray, np.ndarray]:
    width = F.frame_bytes(lpf)
    buf = np.zeros((len(datagrams), width), np.uint8)
    for i, d in enumerate(datagrams):
        k = min(len(d), width)
        buf[i, :k] = np.frombuffer(d, np.uint8, k)
    return buf, np.array([len(d) for d in datagrams])


def test_each_bad_reason_is_classified() -> None:
    lpf = 4
    good = F.encode_frame(np.arange(8, dtype=np.int32).reshape(4, 2), station_x=1, n_blocks=1)
    bad_sync = b"\x00" + good[1:]
    flipped = bytearray(good)
    flipped[45] ^= 0x10
    other_lags = F.encode_frame(np.zeros((8, 2), np.int32))  # valid, but 8 lags, not 4
    huge_log2 = bytearray(good)
    huge_log2[10] = 13  # 2**13 lags cannot fit a datagram
    cases = {
        "ok": good, "bad_sync": bad_sync, "bad_checksum": bytes(flipped),
        "truncated": good[:-8], "short": good[:12], "bad_length": good + b"\0" * 8,
        "other_lags": other_lags, "huge": bytes(huge_log2),
    }
    expect = {"ok": "ok", "bad_sync": "bad_sync", "bad_checksum": "bad_checksum",
              "truncated": "truncated", "short": "truncated", "bad_length": "bad_length",
              "other_lags": "bad_length", "huge": "bad_length"}
    buf, lengths = _batch(list(cases.values()), lpf)
    reasons = F.validate(buf, lengths, lpf)
    assert {k: F.REASONS[r] for k, r in zip(cases, reasons, strict=True)} == expect
    batch, reasons = F.decode(buf, lengths, lpf)
    assert len(batch) == 1
    assert batch.fields()["station_x"][0] == 1
    assert F.reason_counts(reasons) == {"bad_sync": 1, "bad_checksum": 1, "truncated": 2,
                                        "bad_length": 3}


def test_decode_frame_raises_with_the_reason() -> None:
    good = F.encode_frame(np.ones((2, 2), np.int32))
    with pytest.raises(F.BadFrame) as exc:
        F.decode_frame(good[:30])
    assert exc.value.reason == "truncated"
    with pytest.raises(F.BadFrame) as exc:
        F.decode_frame(good[:-1] + bytes([good[-1] ^ 1]))
    assert exc.value.reason == "bad_checksum"


def test_fix_checksums_after_rewriting_a_field() -> None:
    frames = F.encode(np.zeros(3, F.FIELDS), np.ones((3, 4, 2), np.int32))
    frames.view(">u4")[:, 5] = 12345  # a new timestamp
    buf = frames.copy()
    assert (F.validate(buf, np.full(3, buf.shape[1]), 4) == F.BAD_CHECKSUM).all()
    F.fix_checksums(frames)
    assert (F.validate(frames, np.full(3, frames.shape[1]), 4) == F.OK).all()
