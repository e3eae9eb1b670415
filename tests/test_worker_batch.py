"""Many measurements per worker message (radlogger.workers.batch) and what the feeder does
with it: order kept, accounting per measurement, a full slot ring waited out."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import Collector, wait_for
from radlogger.endpoints.lag.isolated import IsolatedEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline
from radlogger.workers import messages
from radlogger.workers.batch import batch_parts, decode_batch, runs


def _lagset(i: int, n: int = 16, **meta: object) -> Measurement:
    return Measurement("w", "w.lagset", np.arange(n, dtype=np.complex64) * (i + 1),
                       t_ns=10**18 + i, device_time=None if i % 3 == 0 else 5 * i,
                       seq=i, meta={"station_x": i % 4, "polarization": "AB", "missing": [i],
                                    "complete": bool(i % 2), "dv_centre": np.full(4, i, np.uint32),
                                    "ragged": np.arange(i % 3 + 1), **meta})


def _join(parts: list[object]) -> bytes:
    return b"".join(bytes(p) for p in parts)  # type: ignore[call-overload]


def test_a_batch_round_trips_every_field_in_order() -> None:
    items = [_lagset(i) for i in range(7)]
    parts, size = batch_parts(items)
    data = _join(parts)
    assert len(data) == size and messages.kind_of(data) == messages.BATCH
    got = messages.read_measurements(data, None)
    assert len(got) == 7
    for a, b in zip(items, got, strict=True):
        assert (b.source, b.topic, b.t_ns, b.seq, b.device_time, b.unit) == \
            (a.source, a.topic, a.t_ns, a.seq, a.device_time, a.unit)
        assert b.value.dtype == np.complex64 and np.array_equal(a.value, b.value)
        assert not b.value.flags.writeable  # a view of the received buffer, as wire gives
        assert b.meta is not None and a.meta is not None and b.meta.keys() == a.meta.keys()
        assert np.array_equal(b.meta["dv_centre"], a.meta["dv_centre"])  # stacked: an array
        assert b.meta["ragged"] == a.meta["ragged"].tolist()  # shapes differ: JSON, as wire
        assert [b.meta[k] for k in ("station_x", "polarization", "missing", "complete")] == \
            [a.meta[k] for k in ("station_x", "polarization", "missing", "complete")]
    assert decode_batch(_join(batch_parts([Measurement("a", "a.b", np.zeros(2))] * 2)[0]))[
        0].meta is None


def test_runs_group_only_what_lines_up_and_keep_the_order() -> None:
    a = [_lagset(i) for i in range(5)]
    other_shape = _lagset(5, n=8)
    scalar = Measurement("w", "w.lagset", 3.5)
    more_meta = _lagset(6, extra=1)
    batch = a[:3] + [other_shape, scalar] + a[3:] + [more_meta]
    pieces = list(runs(batch, max_items=2, max_bytes=1 << 20))
    assert [m for _, piece in pieces for m in piece] == batch  # nothing lost, order kept
    assert [(together, len(p)) for together, p in pieces] == \
        [(True, 2), (False, 1), (False, 1), (False, 1), (True, 2), (False, 1)]
    # max_bytes bounds a piece by its values' size (with room for the metadata)
    assert all(len(p) == 1 for _, p in runs(a, 100, a[0].value.nbytes + 10))


@pytest.mark.parametrize("damage", ["truncate", "header", "column", "dtype", "extra"])
def test_damaged_batches_are_wire_errors(damage: str) -> None:
    data = bytearray(_join(batch_parts([_lagset(i) for i in range(3)])[0]))
    hlen = int.from_bytes(data[4:8], "little")
    header = bytes(data[8:8 + hlen])
    if damage == "truncate":
        data = data[:-5]
    elif damage == "header":
        data[8] = ord("[")
    elif damage == "column":
        data[8:8 + hlen] = header.replace(b'"seq":[0,1,2]', b'"seq":[0,1]  ')  # 2 of 3
    elif damage == "dtype":
        data[8:8 + hlen] = header.replace(b'"<c8"', b'"|O8"')
    else:
        data += b"\x00" * 8
    with pytest.raises(messages.WireError):
        decode_batch(bytes(data))


def test_random_bytes_after_the_magic_never_crash_the_decoder() -> None:
    rng = np.random.default_rng(7)
    good = _join(batch_parts([_lagset(i) for i in range(3)])[0])
    for _ in range(300):
        data = bytearray(good)
        for pos in rng.integers(4, len(data), 3):
            data[pos] = int(rng.integers(0, 256))
        try:
            decode_batch(bytes(data))
        except messages.WireError:
            pass


def test_batches_through_a_small_slot_ring_are_waited_out_not_dropped() -> None:
    """2 slots of 50 KiB, 4 KiB lag sets: the ring is full most of the time; the runner
    waits for a free slot (no_slot is waited out as a full queue is), nothing is dropped."""
    p = Pipeline(queue_size=4096, overflow="block")
    try:
        iso = p.add_endpoint(IsolatedEndpoint(
            "iso", stages=["lag_normalize", "lag_fft"], max_datagram=1024, shm_slots=2,
            shm_slot_mb=0.05, heartbeat=0.05, inbox_size=4096,
            send_wait=0.0), subscribe=["w.lagset"])
        sink = p.add_endpoint(Collector("sink"), subscribe=["w.spectrum"])
        assert isinstance(iso, IsolatedEndpoint) and isinstance(sink, Collector)
        p.start()
        out = p.outlet("w")
        n = 1500
        for i in range(n):
            m = _lagset(i, n=512)
            assert m.meta is not None
            m.meta.pop("ragged")
            m.meta["dv_edge"] = m.meta["dv_centre"] = np.full(4, 100, np.uint32)
            assert out.push(m)
        wait_for(lambda: len(sink.items) == n, 30, message="every lag set came back")
        assert p.stop(10) and p.balanced()
    finally:
        if p.running:
            p.stop(5)
    counters = iso.counters()
    assert counters["undelivered"] == 0 and counters["sent"] == n == counters["shm_sent"]
    assert counters["lost"] == 0 and iso.stats.dropped == 0 and counters["full_waits"] > 0
    assert [m.seq for m in sink.items] == list(range(n))  # in order, each once
