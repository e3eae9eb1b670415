"""VITA-49 encoder and streaming parser: round trips, chunking, garbage, lies, never raising."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radlogger.devices.wsa4000.hostile import HOSTILE, hostile
from radlogger.devices.wsa4000.vrt import (
    CONTEXT,
    DATA,
    DIGITIZER_STREAM,
    EXT_CONTEXT,
    EXT_STREAM,
    HEALTHY_TRAILER,
    IQ_STREAM,
    RECEIVER_STREAM,
    VRTPacket,
    data_header,
    encode_context,
    encode_data,
    header_word,
    trailer_flags,
    trailer_word,
)
from radlogger.devices.wsa4000.vrtparser import VRTParser

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def iq14(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(-8192, 8192, size=(n, 2), dtype=np.int16)


def sig(p: VRTPacket) -> tuple:
    """A comparable summary of a parsed packet."""
    samples = None if p.samples is None else p.samples.tobytes()
    return (p.ptype, p.count, p.size, p.stream_id, p.ts_sec, p.ts_ps, samples, p.trailer,
            repr(p.fields))


def feed_all(parser: VRTParser, chunks: list[bytes]) -> list[VRTPacket]:
    out = []
    for c in chunks:
        out += parser.feed(c)
    return out


# ------------------------------------------------------------------ the documented words
def test_header_words_match_the_protocol_document() -> None:
    assert header_word(DATA, 0, 1024 + 6) == 0x14600406
    assert header_word(CONTEXT, 0, 8) == 0x40600008
    assert header_word(CONTEXT, 1, 7) == 0x40610007
    assert struct.unpack(">I", data_header(0, 1024, 0, 0)[:4])[0] == 0x14600406
    ctx = encode_context(RECEIVER_STREAM, {"rf_freq": 2.4e9}, 0, 0, 0)
    assert struct.unpack(">I", ctx[:4])[0] == 0x40600008
    gain = encode_context(RECEIVER_STREAM, {"gain": (20.0, 0.0)}, 1, 0, 0)
    assert struct.unpack(">I", gain[:4])[0] == 0x40610007
    ref = encode_context(DIGITIZER_STREAM, {"reflevel": -10.0}, 0, 0, 0)
    assert ref[-4:] == bytes.fromhex("0000FB00")
    assert trailer_word() == HEALTHY_TRAILER == 0x60060000


def test_trailer_flags_need_their_enable_bits() -> None:
    assert trailer_flags(HEALTHY_TRAILER) == {"valid": True, "ref_lock": True,
                                              "spectral_inversion": False,
                                              "over_range": False, "sample_loss": False}
    t = trailer_word(spectral_inversion=True, over_range=True, sample_loss=True)
    assert all(trailer_flags(t).values())
    assert not trailer_flags(1 << 14)["spectral_inversion"]  # indicator without enable


# ------------------------------------------------------------------ round trips
def test_data_packet_round_trip() -> None:
    rng = np.random.default_rng(1)
    iq = iq14(rng, 256)
    raw = encode_data(iq, 5, 1_700_000_000, 123_456_789_000, trailer_word(over_range=True))
    assert len(raw) == 4 * (256 + 6)
    [p] = VRTParser().feed(raw)
    assert (p.ptype, p.count, p.stream_id, p.spp) == (DATA, 5, IQ_STREAM, 256)
    assert (p.ts_sec, p.ts_ps) == (1_700_000_000, 123_456_789_000)
    assert p.time_ns == 1_700_000_000_123_456_789
    np.testing.assert_array_equal(p.samples, iq)
    assert p.flags()["over_range"] and p.flags()["valid"]


def test_complex_input_is_rounded_and_clipped_to_14_bits() -> None:
    z = np.array([1.4 + 2.6j, 9000 - 9000j], dtype=np.complex64)
    [p] = VRTParser().feed(encode_data(z, 0, 0, 0))
    assert p.samples.tolist() == [[1, 3], [8191, -8192]]


@pytest.mark.parametrize("stream,fields", [
    (RECEIVER_STREAM, {"rf_freq": 2_412_345_678.5}),
    (RECEIVER_STREAM, {"gain": (20.0, -7.5)}),
    (RECEIVER_STREAM, {"reference_point": 0x12345678}),
    (RECEIVER_STREAM, {"temperature": 41.25}),
    (DIGITIZER_STREAM, {"bandwidth": 125e6 / 7}),
    (DIGITIZER_STREAM, {"rf_offset": -1.25e6}),
    (DIGITIZER_STREAM, {"reflevel": -27.5}),
    (EXT_STREAM, {"sweep_id": 7}),
    (EXT_STREAM, {"stream_start_id": 0xDEADBEEF}),
    (DIGITIZER_STREAM, {"bandwidth": 31.25e6, "rf_offset": 1e3, "reflevel": -10.0}),
])
def test_every_context_field_round_trips(stream: int, fields: dict) -> None:
    raw = encode_context(stream, fields, 3, 42, 7_000)
    [p] = VRTParser().feed(raw)
    assert p.ptype == (EXT_CONTEXT if stream == EXT_STREAM else CONTEXT)
    assert (p.stream_id, p.count, p.ts_sec, p.ts_ps) == (stream, 3, 42, 7_000)
    assert p.fields.keys() == fields.keys()
    for k, v in fields.items():
        if isinstance(v, tuple):
            assert p.fields[k] == pytest.approx(v)
        else:
            assert p.fields[k] == pytest.approx(v, abs=1e-6)


# ------------------------------------------------------------------ streams and chunking
def make_stream(seed: int, n: int = 12, garbage: bool = False) -> tuple[bytes, list, int]:
    """Mixed packets (and optional garbage between them): bytes, expected sigs, garbage size."""
    rng = np.random.default_rng(seed)
    parts: list[bytes] = []
    junk = 0
    expected = []
    for i in range(n):
        if i % 3 == 0:
            raw = encode_context(RECEIVER_STREAM, {"rf_freq": 1e8 * (i + 1)}, i, i, i)
        else:
            raw = encode_data(iq14(rng, int(rng.integers(1, 40))), i, 1000 + i, 8000 * i)
        expected.append(sig(VRTParser().feed(raw)[0]))
        parts.append(raw)
        if garbage and i % 2:
            g = rng.integers(0, 256, int(rng.integers(1, 50)), dtype=np.uint8).tobytes()
            g = g.replace(b"\x90", b"\x91")  # no accidental stream-id prefix
            junk += len(g)
            parts.append(g)
    return b"".join(parts), expected, junk


@pytest.mark.parametrize("garbage", [False, True])
def test_one_byte_chunks_give_identical_results(garbage: bool) -> None:
    stream, expected, junk = make_stream(3, garbage=garbage)
    whole = VRTParser()
    a = whole.feed(stream)
    bytewise = VRTParser()
    b = feed_all(bytewise, [stream[i:i + 1] for i in range(len(stream))])
    assert [sig(p) for p in a] == [sig(p) for p in b] == expected
    for parser in (whole, bytewise):
        assert parser.counts["skipped_bytes"] + parser.pending == junk


@SETTINGS
@given(seed=st.integers(0, 10_000), garbage=st.booleans(), data=st.data())
def test_random_chunking_gives_identical_results(seed: int, garbage: bool,
                                                 data: st.DataObject) -> None:
    stream, expected, junk = make_stream(seed, n=8, garbage=garbage)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    bounds = [0, *cuts, len(stream)]
    parser = VRTParser()
    got = feed_all(parser, [stream[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    assert [sig(p) for p in got] == expected
    assert parser.counts["skipped_bytes"] + parser.pending == junk
    assert parser.counts["data"] + parser.counts["context"] == len(expected)
    assert parser.counts["bad_size"] == 0


def test_garbage_between_packets_resyncs_and_is_counted() -> None:
    rng = np.random.default_rng(0)
    a = encode_data(iq14(rng, 64), 0, 1, 0)
    b = encode_data(iq14(rng, 64), 1, 1, 512_000)
    junk1 = b"\x00\x01garbage!\xff" * 3
    junk2 = b"\x14\x60\x00\x46xx"  # a data header word without the stream id after it
    parser = VRTParser()
    got = parser.feed(junk1 + a + junk2 + b)
    assert [p.count for p in got] == [0, 1]
    assert parser.counts["skipped_bytes"] == len(junk1) + len(junk2)
    assert parser.counts["resyncs"] == 2


def test_truncated_packet_waits_then_completes() -> None:
    raw = encode_data(np.ones((128, 2), np.int16), 0, 0, 0)
    parser = VRTParser()
    assert parser.feed(raw[:-10]) == []
    assert parser.pending == len(raw) - 10
    [p] = parser.feed(raw[-10:])
    assert p.spp == 128 and parser.pending == 0
    assert parser.feed(raw[:100]) == [] and parser.reset() == 100
    assert parser.counts["discarded_bytes"] == 100


def test_size_field_too_large_is_detected_and_next_packets_survive() -> None:
    rng = np.random.default_rng(2)
    liar = bytearray(encode_data(iq14(rng, 32), 0, 0, 0))
    struct.pack_into(">I", liar, 0, header_word(DATA, 0, 32 + 6 + 20))  # claims 20 more words
    good = [encode_data(iq14(rng, 32), i, 0, 0) for i in (1, 2, 3)]
    parser = VRTParser()
    got = parser.feed(bytes(liar) + b"".join(good))
    assert [p.count for p in got] == [1, 2, 3]
    assert parser.counts["bad_size"] == 1
    assert parser.counts["skipped_bytes"] == len(liar)


def test_size_field_too_small_is_detected_and_next_packets_survive() -> None:
    rng = np.random.default_rng(3)
    liar = bytearray(encode_data(iq14(rng, 32), 0, 0, 0))
    struct.pack_into(">I", liar, 0, header_word(DATA, 0, 16 + 6))  # claims only 16 samples
    good = [encode_data(iq14(rng, 32), i, 0, 0) for i in (1, 2)]
    parser = VRTParser()
    got = parser.feed(bytes(liar) + b"".join(good))
    assert [p.count for p in got] == [1, 2]
    assert parser.counts["bad_size"] == 1
    assert parser.counts["skipped_bytes"] == len(liar)


def test_wrong_packet_types_and_stream_ids_are_skipped() -> None:
    rng = np.random.default_rng(4)
    good = encode_data(iq14(rng, 16), 7, 0, 0)
    wrong_type = bytearray(good)
    wrong_type[0] = 0x24  # type 2 is not a WSA packet type
    wrong_sid = bytearray(good)
    struct.pack_into(">I", wrong_sid, 4, 0x90000009)
    no_trailer_bit = bytearray(good)
    no_trailer_bit[0] = 0x10
    parser = VRTParser()
    got = parser.feed(bytes(wrong_type) + bytes(wrong_sid) + bytes(no_trailer_bit) + good)
    assert [p.count for p in got] == [7]
    assert parser.counts["skipped_bytes"] == 3 * len(good)


@SETTINGS
@given(blob=st.binary(max_size=3000), chunk=st.integers(1, 700))
def test_random_bytes_never_raise_and_every_byte_is_accounted_for(blob: bytes,
                                                                  chunk: int) -> None:
    parser = VRTParser()
    out = []
    for i in range(0, len(blob), chunk):
        out += parser.feed(blob[i:i + chunk])
    consumed = sum(4 * p.size for p in out)
    assert consumed + parser.counts["skipped_bytes"] + parser.pending == len(blob)
    assert parser.counts["parser_errors"] == 0


@SETTINGS
@given(seed=st.integers(0, 10_000), n_mutations=st.integers(1, 12))
def test_corrupted_streams_never_raise_and_account_for_bytes(seed: int,
                                                             n_mutations: int) -> None:
    """Flip, cut and overwrite bytes (including size fields) of a valid stream."""
    stream, expected, _ = make_stream(seed, n=10)
    rnd = random.Random(seed)
    buf = bytearray(stream)
    for _ in range(n_mutations):
        op = rnd.randrange(4)
        pos = rnd.randrange(len(buf))
        if op == 0:
            buf[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del buf[pos:pos + rnd.randrange(1, 64)]
        elif op == 2:
            buf[pos:pos] = rnd.randbytes(rnd.randrange(1, 64))
        else:  # rewrite a size field at a packet-aligned-looking spot
            at = pos - pos % 4
            if at + 4 <= len(buf):
                word = struct.unpack_from(">I", buf, at)[0]
                struct.pack_into(">I", buf, at, (word & 0xFFFF0000) | rnd.randrange(6, 300))
    parser = VRTParser()
    out = []
    for i in range(0, len(buf), 37):
        out += parser.feed(bytes(buf[i:i + 37]))
    consumed = sum(4 * p.size for p in out)
    assert consumed + parser.counts["skipped_bytes"] + parser.pending == len(buf)
    assert len(out) <= len(expected) + n_mutations


# ------------------------------------------------------------------ hostile input (issue 14.6)
@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("chunk", [1 << 20, 4093, 61])
def test_every_valid_packet_is_found_after_hostile_garbage(name: str, chunk: int) -> None:
    rng = np.random.default_rng(11)
    good = [encode_data(iq14(rng, 1024), i, 1, 0) for i in range(6)]
    junk = hostile(name, 50_000)
    stream = b"".join(junk + g for g in good)
    parser = VRTParser()
    got = feed_all(parser, [stream[i:i + chunk] for i in range(0, len(stream), chunk)])
    assert [p.count for p in got] == list(range(6))
    assert all(p.spp == 1024 for p in got)
    assert parser.counts["skipped_bytes"] + parser.pending == 6 * len(junk)
    assert parser.counts["data"] == 6 and parser.counts["context"] == 0
