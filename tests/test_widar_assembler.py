"""Lag-set assembly: any order, loss, duplicates, corruption, timeouts, late frames."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radlogger.devices.widar import frames as F
from radlogger.devices.widar.assembler import Assembler, Products
from radlogger.options import OptionError

LPF = 4


def make_sets(n_sets: int, nf: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n_sets * nf, L) of distinct lag sets, and their int lags (n_sets, nf*LPF, 2)."""
    rng = np.random.default_rng(seed)
    fields = np.zeros(n_sets * nf, F.FIELDS)
    s = np.repeat(np.arange(n_sets), nf)
    fields["station_x"] = 1 + s % 3
    fields["station_y"] = 5
    fields["polarization"] = s % 4
    fields["timestamp"] = 10**18 + (s // 3) * 10_000_000
    fields["start_block"] = np.tile(np.arange(nf), n_sets)
    fields["n_blocks"] = nf
    fields["dv_centre"] = 1000 + np.arange(n_sets * nf)
    fields["dv_edge"] = 900
    lags = rng.integers(-10**6, 10**6, (n_sets, nf * LPF, 2), dtype=np.int32)
    return F.encode(fields, lags.reshape(n_sets * nf, LPF, 2)), lags


def to_batch(datagrams: list[bytes]) -> tuple[F.FrameBatch, np.ndarray]:
    width = F.frame_bytes(LPF)
    buf = np.zeros((max(1, len(datagrams)), width), np.uint8)
    for i, d in enumerate(datagrams):
        k = min(len(d), width)
        buf[i, :k] = np.frombuffer(d, np.uint8, k)
    return F.decode(buf[:len(datagrams)], np.array([len(d) for d in datagrams], np.int64), LPF)


def corrupt(frame: bytes, kind: int) -> bytes:
    b = bytearray(frame)
    if kind == 0:
        b[1] ^= 0x40  # bad sync
    elif kind == 1:
        b[-3] ^= 0x01  # bad checksum
    elif kind == 2:
        del b[-8:]  # truncated
    else:
        b += bytes(8)  # bad length
    return bytes(b)


KEEP, LOSE, DUP, CORRUPT, CORRUPT_AND_KEEP = range(5)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n_sets=st.integers(1, 6), nf=st.sampled_from([1, 2, 4, 8]))
def test_assembly_under_disorder_loss_duplication_and_corruption(
        data: st.DataObject, n_sets: int, nf: int) -> None:
    frames, lags = make_sets(n_sets, nf, seed=n_sets * 10 + nf)
    n = len(frames)
    ops = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n), label="ops")
    kinds = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label="kinds")
    datagrams: list[bytes] = []
    intact = np.zeros(n, int)
    bad_expected = 0
    for k, (op, kind) in enumerate(zip(ops, kinds, strict=True)):
        raw = frames[k].tobytes()
        if op in (KEEP, DUP, CORRUPT_AND_KEEP):
            datagrams.append(raw)
            intact[k] += 1
        if op == DUP:
            datagrams.append(raw)
            intact[k] += 1
        if op in (CORRUPT, CORRUPT_AND_KEEP):
            datagrams.append(corrupt(raw, kind))
            bad_expected += 1
    order = data.draw(st.permutations(range(len(datagrams))), label="order")
    datagrams = [datagrams[i] for i in order]
    chunk = data.draw(st.integers(1, max(1, len(datagrams))), label="chunk")

    asm = Assembler(nf * LPF, LPF, timeout=0.1)
    emitted = []
    bad = 0
    for lo in range(0, len(datagrams), chunk):
        batch, reasons = to_batch(datagrams[lo:lo + chunk])
        bad += int((reasons != F.OK).sum())
        emitted += asm.add(batch, now=0.0)
    assert all(ls.complete and ls.reason == "complete" for ls in emitted)
    assert asm.expire(now=0.05) == []  # not yet timed out
    emitted += asm.expire(now=0.2)

    assert bad == bad_expected
    have = (intact > 0).reshape(n_sets, nf)
    expected_sets = {s for s in range(n_sets) if have[s].any()}
    assert len(emitted) == len(expected_sets) == asm.emitted
    by_station_pol = {}
    for ls in emitted:
        meta = ls.meta()
        by_station_pol[(meta["station_x"], meta["polarization"], ls.timestamp)] = ls
    for s in expected_sets:
        ls = by_station_pol[(1 + s % 3, F.POLARIZATIONS[s % 4], 10**18 + (s // 3) * 10**7)]
        want = (lags[s, :, 0] + 1j * lags[s, :, 1]).astype(np.complex64).reshape(nf, LPF)
        want[~have[s]] = 0  # zero-filled
        np.testing.assert_array_equal(ls.lags, want.ravel())
        assert ls.missing == np.flatnonzero(~have[s]).tolist()
        assert ls.complete == have[s].all()
        assert ls.reason == ("complete" if have[s].all() else "timeout")
        dv = 1000 + s * nf + np.arange(nf)
        np.testing.assert_array_equal(ls.dv_centre, np.where(have[s], dv, 0))
    extra = int((intact - 1).clip(min=0).sum())
    # a copy arriving after its lag set completed is late; before, a duplicate
    assert asm.duplicates + asm.late == extra
    assert asm.frames == asm.placed + asm.duplicates + asm.late + sum(asm.rejected.values())
    assert asm.missing_frames == int((~have[sorted(expected_sets)]).sum())


def test_timeout_zero_fills_and_records_missing_frames() -> None:
    frames, lags = make_sets(1, 4)
    clock = [100.0]
    asm = Assembler(16, LPF, timeout=0.5, clock=lambda: clock[0])
    batch, _ = to_batch([frames[0].tobytes(), frames[2].tobytes()])
    assert asm.add(batch) == []
    assert asm.next_deadline() == pytest.approx(100.5)
    clock[0] = 100.49
    assert asm.expire() == []
    clock[0] = 100.5
    (ls,) = asm.expire()
    meta = ls.meta()
    assert meta["missing"] == [1, 3] and not meta["complete"] and meta["emitted"] == "timeout"
    assert meta["frames_received"] == 2 and meta["frames_expected"] == 4
    got = ls.lags.reshape(4, LPF)
    assert not got[[1, 3]].any()
    np.testing.assert_array_equal(got[0].real, lags[0, :LPF, 0])
    assert (asm.incomplete, asm.missing_frames) == (1, 2)


def test_late_frames_are_counted_not_reassembled() -> None:
    frames, _ = make_sets(1, 2)
    asm = Assembler(8, LPF, timeout=0.1, late_memory=5.0)
    batch, _ = to_batch([frames[0].tobytes()])
    asm.add(batch, now=0.0)
    assert len(asm.expire(now=1.0)) == 1
    late, _ = to_batch([frames[1].tobytes(), frames[0].tobytes()])
    assert asm.add(late, now=2.0) == []
    assert asm.late == 2 and not asm.pending
    asm.expire(now=7.0)  # the key is forgotten after late_memory
    again, _ = to_batch([frames[1].tobytes()])
    asm.add(again, now=7.5)
    assert len(asm.pending) == 1


def test_wrong_geometry_and_unknown_products_are_rejected() -> None:
    frames, _ = make_sets(3, 2)  # stations 1, 2, 3 against 5
    words = frames.view(">u4")
    bad_blocks = frames[:1].copy()
    bad_blocks.view(">u4")[0, 2] = (words[0, 2] & ~np.uint32(0xFF0000)) | (3 << 16)
    F.fix_checksums(bad_blocks)
    asm = Assembler(8, LPF, timeout=0.1, products=Products(baselines=["1-5", "2-5"]))
    batch, _ = to_batch([f.tobytes() for f in frames] + [bad_blocks[0].tobytes()])
    done = asm.add(batch, now=0.0)
    assert asm.rejected == {"unknown_product": 2, "bad_geometry": 1}
    assert sorted(ls.meta()["baseline"] for ls in done) == ["1-5", "2-5"]


def test_max_pending_evicts_the_oldest() -> None:
    frames, _ = make_sets(5, 2)
    asm = Assembler(8, LPF, timeout=10.0, max_pending=2)
    batch, _ = to_batch([frames[2 * s].tobytes() for s in range(5)])  # first frame of each
    out = asm.add(batch, now=0.0)
    assert [ls.reason for ls in out] == ["evicted"] * 3 and asm.evicted == 3
    assert len(asm.pending) == 2
    assert len(asm.flush()) == 2 and not asm.pending


@pytest.mark.parametrize(("lags", "lpf", "key"), [(100, 4, "lags"), (16, 32, "lags_per_frame"),
                                                  (4096, 8, "lags_per_frame")])
def test_impossible_geometry_is_a_one_line_option_error(lags: int, lpf: int, key: str) -> None:
    with pytest.raises(OptionError) as exc:
        Assembler(lags, lpf)
    assert exc.value.key == key and "\n" not in str(exc.value)


def test_product_filter_option_errors() -> None:
    with pytest.raises(OptionError, match="station pair"):
        Products(baselines=["1_2"])
    with pytest.raises(OptionError, match="AA, AB, BA, BB"):
        Products(polarizations=["XY"])


def test_pending_lag_sets_are_bounded_by_memory_not_only_by_count() -> None:
    """Each pending set holds all its lags from its first frame, so with big lag sets the
    default max_pending (100,000) bounded nothing: 64 single frames with distinct keys held
    256 MiB at 2**19 lags.  max_pending_mb caps the memory; the excess is evicted, counted."""
    lags, lpf, n = 1 << 16, 1024, 40  # 512 KiB per pending lag set
    asm = Assembler(lags, lpf, timeout=10.0, max_pending_mb=4.0)
    assert asm.max_pending < 8  # 4 MiB holds fewer than 8 sets of 512 KiB
    w = np.zeros((n, F.HEADER_WORDS), np.uint32)
    w[:, 2] = (lags // lpf) << 16  # start block 0 of a full lag set
    w[:, 5] = np.arange(n)  # n distinct timestamps: n distinct lag sets
    out = asm.add(F.FrameBatch(w, np.zeros((n, lpf), np.complex64)), now=0.0)
    assert len(asm.pending) == asm.max_pending
    assert asm.evicted == len(out) == n - asm.max_pending
    assert all(ls.reason == "evicted" for ls in out)
    # the default budget keeps the default count for ordinary lag sets
    assert Assembler().max_pending == 100_000


def test_emitted_keys_stay_bounded_without_expire() -> None:
    frames, _ = make_sets(50, 2)
    asm = Assembler(8, LPF, timeout=10.0, max_pending=2)
    batch, _ = to_batch([frames[2 * s].tobytes() for s in range(50)])
    asm.add(batch, now=0.0)
    assert asm.evicted == 48 and len(asm._emitted) <= 4 * asm.max_pending
