"""The wire encoding: exact round trips, compact arrays, and garbage rejected with WireError."""

from __future__ import annotations

import json
import math
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radlogger.measurement import Measurement
from radlogger.wire import (
    MAGIC,
    WireError,
    decode,
    decode_frames,
    encode,
    encode_binary,
    encode_frames,
    join,
    split,
    split_typed,
)


def _m(value: object, **kw: object) -> Measurement:
    base: dict[str, object] = dict(t_ns=1_700_000_000_123_456_789, unit="dBm",
                                   device_time=123456789012, meta={"f0": 2.4e9, "ch": [1, 2]},
                                   seq=42)
    base.update(kw)
    return Measurement("wsa1", "wsa1.iq", value, **base)  # type: ignore[arg-type]


def _all_forms(m: Measurement) -> list[Measurement]:
    return [decode(encode(m)), decode(encode_binary(m)), join(*split(m)),
            decode_frames(encode_frames([m, m]))[1]]


def _same_fields(a: Measurement, b: Measurement) -> None:
    assert (a.source, a.topic, a.t_ns, a.unit, a.device_time, a.meta, a.seq) == \
        (b.source, b.topic, b.t_ns, b.unit, b.device_time, b.meta, b.seq)


@pytest.mark.parametrize("value", [0, -7, 2**70, 1.5, -0.0, 1e-300, "text ✓", True, False, None,
                                   [1, 2.5, "x"], {"a": [1, {"b": None}]}])
def test_scalar_round_trip_is_exact(value: object) -> None:
    m = _m(value)
    for got in _all_forms(m):
        _same_fields(got, m)
        assert got.value == value and type(got.value) is type(value)


def test_non_finite_floats_survive() -> None:
    for got in _all_forms(_m(float("nan"))):
        assert math.isnan(got.value)
    assert decode(encode(_m(float("-inf")))).value == float("-inf")


def test_scalars_are_plain_json_for_other_tools() -> None:
    doc = json.loads(encode(_m(23.5)))
    assert doc["value"] == 23.5 and doc["topic"] == "wsa1.iq" and doc["unit"] == "dBm"
    assert doc["t_ns"] == 1_700_000_000_123_456_789 and doc["meta"]["f0"] == 2.4e9
    minimal = json.loads(encode(Measurement("s", "s.v", 1, t_ns=5)))
    assert set(minimal) == {"v", "source", "topic", "t_ns", "seq", "value"}


@pytest.mark.parametrize("arr", [
    np.arange(1024, dtype=np.float32),
    (np.arange(512) + 1j * np.arange(512)).astype(np.complex64),
    np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    np.arange(10, dtype=">f8"),  # big-endian data keeps its byte order
    np.array([True, False, True]),
    np.zeros((0, 5), dtype=np.uint64),
    np.arange(100, dtype=np.int32)[::3],  # not contiguous
    np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4)),
])
def test_array_round_trip_is_exact(arr: np.ndarray) -> None:
    m = _m(arr)
    for got in _all_forms(m):
        _same_fields(got, m)
        assert got.value.dtype == arr.dtype and got.value.shape == arr.shape
        assert np.array_equal(got.value, arr)


def test_arrays_are_compact_binary() -> None:
    arr = np.ones(4096, dtype=np.complex64)
    data = encode(_m(arr))
    assert data[:4] == MAGIC
    assert len(data) - arr.nbytes < 300  # header overhead only
    header, body, kind = split_typed(_m(arr))
    assert kind == "complex64[4096]" and bytes(body) == arr.tobytes()
    h = json.loads(header)
    assert h["dtype"] == "<c8" and h["shape"] == [4096] and h["type"] == "array"


def test_other_values() -> None:
    got = decode(encode(_m(b"\x00\xffraw packet")))
    assert got.value == b"\x00\xffraw packet"
    c = decode(encode(_m(np.complex64(1 - 2j))))
    assert c.value == np.complex64(1 - 2j) and c.value.dtype == np.complex64
    assert decode(encode(_m(3 + 4j))).value == 3 + 4j
    f = decode(encode(_m(np.float32(0.25))))
    assert f.value == 0.25  # numpy real scalars travel as JSON numbers
    assert decode(encode(_m(np.array(7, dtype=np.int8)))).value == 7
    meta = decode(encode(_m(1, meta={"n": np.int64(3), "g": np.float32(0.5)}))).meta
    assert meta == {"n": 3, "g": 0.5}
    assert decode(encode(Measurement("s", "s.v", 1, t_ns=1))).meta is None


def test_decoded_arrays_are_read_only_views() -> None:
    got = decode(encode(_m(np.arange(8, dtype=np.float64))))
    with pytest.raises(ValueError):
        got.value[0] = 1.0


@pytest.mark.parametrize("value", [np.array(["a", "b"]), np.array([object()]),
                                   np.zeros(2, dtype=[("a", "<f4")]), object(), {1, 2}])
def test_unencodable_values_raise_wire_error(value: object) -> None:
    with pytest.raises(WireError):
        encode(_m(value))


def test_unencodable_meta_raises_wire_error() -> None:
    with pytest.raises(WireError, match="JSON-serialisable"):
        encode(_m(1.0, meta={"x": object()}))


def _binary(header: dict[str, object], body: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(h)) + h + body


_GOOD = {"v": 1, "source": "s", "topic": "s.v", "t_ns": 1, "seq": 0, "type": "array",
         "dtype": "<f4", "shape": [2]}


@pytest.mark.parametrize("data,why", [
    (b"", "not a radlogger measurement"),
    (b"\x00\x01garbage", "not a radlogger measurement"),
    (pickle.dumps({"value": 1}), "not a radlogger measurement"),
    (MAGIC + b"\x01", "truncated"),
    (MAGIC + struct.pack("<I", 1000) + b"{}", "does not fit"),
    (MAGIC + struct.pack("<I", 3) + b"abc", "not JSON"),
    (_binary([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
    (_binary({**_GOOD, "dtype": "|O8"}), "invalid dtype"),
    (_binary({**_GOOD, "dtype": "<U4"}), "invalid dtype"),
    (_binary({**_GOOD, "dtype": "|V8"}), "invalid dtype"),
    (_binary({**_GOOD, "dtype": 5}), "invalid dtype"),
    (_binary({**_GOOD}, b"\x00" * 7), "needs 8"),
    (_binary({**_GOOD, "shape": [-1]}, b"\x00" * 8), "invalid shape"),
    (_binary({**_GOOD, "shape": [2**40, 2**40]}, b"\x00" * 8), "needs"),
    (_binary({**_GOOD, "shape": "2"}, b"\x00" * 8), "invalid shape"),
    (_binary({**_GOOD, "type": "pickle"}), "unknown value type"),
    (_binary({k: v for k, v in _GOOD.items() if k != "topic"}, b"\x00" * 8), "lacks 'topic'"),
    (_binary({**_GOOD, "topic": "bad topic!"}, b"\x00" * 8), "invalid topic"),
    (_binary({**_GOOD, "t_ns": "now"}, b"\x00" * 8), "'t_ns'"),
    (_binary({**_GOOD, "t_ns": True}, b"\x00" * 8), "'t_ns'"),
    (_binary({**_GOOD, "meta": [1]}, b"\x00" * 8), "'meta'"),
    (_binary({**_GOOD, "v": 99}, b"\x00" * 8), "version 99"),
    (b'{"topic": "a.b", "source": "s", "t_ns": 1}', "lacks 'value'"),
    (b'{"topic": "a.b", "value": 1, "source": "s", "t_ns": 1', "not JSON"),
])
def test_garbage_is_rejected_clearly(data: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode(data)


def test_truncated_frames_are_rejected() -> None:
    frames = encode_frames([_m(np.arange(4)), _m(1.0)])
    assert len(decode_frames(frames)) == 2
    for cut in (1, 5, len(frames) - 1):
        with pytest.raises(WireError):
            decode_frames(frames[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_encodings_are_rejected_or_decoded(pos: int, byte: int) -> None:
    data = bytearray(encode(_m(np.arange(16, dtype=np.int32))))
    data[pos % len(data)] = byte
    try:
        got = decode(bytes(data))
    except WireError:
        return
    assert isinstance(got, Measurement)
