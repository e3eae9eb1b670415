"""``group = read``: one (k, spp) block per read, through fft, calibrate and the spectrum sink.

Every block must carry exactly the packets the per-packet path would have published (same
samples, counts, device times, gaps and flags), and every stage must count its work in packets
(rows) so that packets lost = the driver's packets - the store's rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import Collector, wait_for
from radlogger.dashboard.tap import summarize
from radlogger.devices.wsa4000.driver import WSA4000Device
from radlogger.devices.wsa4000.simulator import WSA4000Simulator
from radlogger.endpoints.spectrum.calibrate import REFLEVEL_ERROR, CalibrateEndpoint
from radlogger.endpoints.spectrum.fft import FFTEndpoint, power_db
from radlogger.endpoints.spectrum.sink import SpectrumSink
from radlogger.endpoints.spectrum.store import NpyAppender, record_dtype
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

FAST = dict(backoff_initial=0.05, backoff_max=0.2, backoff_jitter=0.0, timeout=2.0)


def device(sim: WSA4000Simulator, **kw: Any) -> WSA4000Device:
    opts: dict[str, Any] = dict(host="127.0.0.1", control_port=sim.control_port,
                                data_port=sim.data_port, spp=128, mode="stream", group="read",
                                **FAST)
    opts.update(kw)
    return WSA4000Device("wsa1", **opts)


def rows_of(items: list[Measurement]) -> int:
    return sum(len(m.value) for m in items)


def test_stream_blocks_hold_every_packet_in_order(pipeline: Pipeline) -> None:
    with WSA4000Simulator(control_port=0, data_port=0, tones=["1e6:0.5"], stream_rate=4000,
                          ring_samples=4096) as sim:
        dev = pipeline.add_device(device(sim))
        sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
        pipeline.start()
        wait_for(lambda: rows_of(list(sink.items)) >= 400, 10, message="400 packets")
        assert pipeline.stop(5.0)
    items = sink.items
    assert rows_of(items) == dev.packets and len(items) == dev.blocks
    assert pipeline.balanced() and dev.gaps == 0
    assert dev.blocks < dev.packets  # several packets per measurement
    expect = items[0].meta["packet_count"]
    times: list[int] = []
    for m in items:
        k = m.meta["packets"]
        assert m.value.shape == (k, 128) and m.value.dtype == np.complex64
        assert m.meta["packet_count"] == expect and m.meta["gap"] == 0
        assert len(m.meta["device_times"]) == k and m.device_time == m.meta["device_times"][0]
        assert m.meta["spp"] == 128 and m.meta["valid"] and not m.meta["sample_loss"]
        expect = (expect + k) % 16
        times.extend(m.meta["device_times"].tolist())
    assert np.all(np.diff(times) == 128 * 8)  # ns: 128 samples at 125 MSa/s, no row missing


def test_int16_blocks_and_gaps_cut_blocks_and_are_counted(pipeline: Pipeline) -> None:
    with WSA4000Simulator(control_port=0, data_port=0, stream_rate=3000, drop_every=5,
                          ring_samples=1024) as sim:
        dev = pipeline.add_device(device(sim, iq_format="int16"))
        sink = pipeline.add_endpoint(Collector("collect"), subscribe=["wsa1.iq"])
        pipeline.start()
        wait_for(lambda: rows_of(list(sink.items)) >= 60, 10, message="60 packets")
        assert pipeline.stop(5.0)
    items = sink.items
    assert items[0].value.dtype == np.int16 and items[0].value.shape[1:] == (128, 2)
    gapped = [m for m in items if m.meta["gap"]]
    assert gapped and all(m.meta["gap"] == 1 for m in gapped)
    assert dev.gaps == len(gapped) == dev.bad_packets["count_gap"] == dev.missing_packets
    # every 5th packet lost: a block never spans a gap, so none holds more than 4 packets,
    # and the packet before each gap carried the sample-loss flag (a block of its own)
    assert all(m.meta["packets"] <= 4 for m in items)
    for before, after in zip(items, items[1:], strict=False):
        if after.meta["gap"]:
            assert before.meta["sample_loss"]
    assert rows_of(items) == dev.packets


def _push(p: Pipeline, topic: str, values: list[Any], meta: dict[str, Any]) -> None:
    out = p.outlet(topic.split(".")[0])
    for i, v in enumerate(values):
        out.push(Measurement(topic.split(".")[0], topic, v, t_ns=10**9 * (i + 1),
                             device_time=1000 * i, meta=dict(meta)))


def test_fft_and_calibrate_give_per_packet_results_for_blocks() -> None:
    rng = np.random.default_rng(3)
    n, k = 256, 5
    block = ((rng.normal(size=(k, n)) + 1j * rng.normal(size=(k, n))) * 800).astype(np.complex64)
    pairs = np.stack([np.rint(block.real), np.rint(block.imag)], axis=-1).astype(np.int16)
    original = block.copy()
    p = Pipeline()
    fft = p.add_endpoint(FFTEndpoint("fft"), subscribe=["w.iq"])
    cal = p.add_endpoint(CalibrateEndpoint("cal"), subscribe=["w.spectrum"])
    raw = p.add_endpoint(Collector("raw"), subscribe=["w.spectrum"])
    out = p.add_endpoint(Collector("out"), subscribe=["w.spectrum_dbm"])
    _push(p, "w.iq", [block, pairs, np.zeros((2, 3, 4), np.int16)],
          {"reflevel": -10.0, "packets": k})
    p.start()
    try:
        wait_for(lambda: len(out.items) == 2 and fft.stats.errors == 1, 10,
                 message="two blocks through, one rejected")
    finally:
        assert p.stop(5.0)
    assert p.balanced()
    np.testing.assert_array_equal(block, original)  # the driver's block is shared: untouched
    expected = power_db(block.astype(np.complex128) / 8192)
    assert fft.spectra == 2 * k and fft.fft_calls == 2 and cal.calibrated == 2 * k
    for m in raw.items:
        assert m.value.shape == (k, n) and m.meta["fft_size"] == n
    np.testing.assert_allclose(raw.items[0].value, expected, atol=2e-3)
    rounded = (pairs[..., 0] + 1j * pairs[..., 1].astype(np.float64)) / 8192
    for m, x in zip(out.items, (block.astype(np.complex128) / 8192, rounded), strict=True):
        dbm = power_db(x) - 10.0 + REFLEVEL_ERROR
        dbm[:, n // 2] = 0.5 * (dbm[:, n // 2 - 1] + dbm[:, n // 2 + 1])
        np.testing.assert_allclose(m.value, dbm, atol=2e-3)
    assert out.items[0].meta["packets"] == k


def test_sink_stores_a_row_per_packet_with_its_device_time(tmp_path: Path) -> None:
    sink = SpectrumSink("s", directory=str(tmp_path), flush_rows=4, render_on_stop=False)
    p = Pipeline()
    p.add_endpoint(sink, subscribe=["a.spectrum_dbm"])
    p.start()
    meta = {"rf_freq": 1e9, "bandwidth": 1e6}
    block = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    out = p.outlet("a")
    out.push(Measurement("a", "a.spectrum_dbm", block, t_ns=7, device_time=100,
                         meta={**meta, "device_times": np.array([100, 110, 120])}))
    out.push(Measurement("a", "a.spectrum_dbm", np.full(8, 50, np.float32), t_ns=8,
                         device_time=130, meta=meta))
    out.push(Measurement("a", "a.spectrum_dbm", block[:2] + 60, t_ns=9, device_time=140,
                         meta=meta))  # no device_times: the block's time for each row
    wait_for(lambda: sink.stats.handled == 3, 10, message="three measurements")
    assert p.stop(5.0)
    assert sink.spectra == sink.stored == 6
    [path] = tmp_path.glob("*.npy")
    a = np.load(path)
    assert a["dbm"][:, 0].tolist() == [0, 8, 16, 50, 60, 68]
    assert a["device_time"].tolist() == [100, 110, 120, 130, 140, 140]
    assert a["t_ns"].tolist() == [7, 7, 7, 8, 9, 9]
    rows, _ = sink.waterfall("a.spectrum_dbm")  # type: ignore[misc]
    assert len(rows) == 6


def test_write_behind_keeps_every_record(tmp_path: Path) -> None:
    dtype = record_dtype(64)
    app = NpyAppender(tmp_path / "x.npy", dtype, write_behind=16 << 10)
    assert app.behind is not None
    for i in range(40):
        r = np.zeros(10, dtype)
        r["t_ns"] = np.arange(10) + 10 * i
        app.append(r)
    assert app.behind.dropped > 0  # pages behind the front were handed back
    a = np.load(tmp_path / "x.npy")
    assert a["t_ns"].tolist() == list(range(400))


@pytest.mark.parametrize("iq_correction", [False, True])
def test_chain_on_simulator_stores_every_packet(tmp_path: Path, iq_correction: bool) -> None:
    p = Pipeline()
    with WSA4000Simulator(control_port=0, data_port=0, tones=["3e6:0.3"], stream_rate=5000,
                          ring_samples=4096) as sim:
        dev = p.add_device(device(sim, spp=256))
        p.add_endpoint(FFTEndpoint("fft", iq_correction=iq_correction), subscribe=["wsa1.iq"])
        p.add_endpoint(CalibrateEndpoint("cal"), subscribe=["wsa1.spectrum"])
        store = p.add_endpoint(SpectrumSink("spectra", directory=str(tmp_path), flush_rows=64,
                                            render_on_stop=False),
                               subscribe=["wsa1.spectrum_dbm"])
        p.start()
        wait_for(lambda: store.spectra >= 500, 20, message="500 spectra")
        assert p.stop(10.0)
    assert p.balanced() and dev.gaps == 0
    assert store.stored == store.spectra == dev.packets
    [path] = tmp_path.glob("*.npy")
    a = np.load(path)
    assert len(a) == dev.packets
    assert np.all(np.diff(a["device_time"]) == 256 * 8)
    peak = np.argmax(a["dbm"], axis=1)
    assert np.all(peak == 128 + round(3e6 / (125e6 / 256)))


def test_dashboard_shows_the_newest_row_of_a_block() -> None:
    block = np.zeros((3, 64), np.float32)
    block[-1, 10] = 5.0
    summary = summarize(Measurement("w", "w.spectrum_dbm", block, meta={"packets": 3}))
    assert summary["shape"] == [3, 64] and len(summary["array"]) == 64
    assert summary["array"][10] == 5.0


def test_waiting_blocks_are_joined_into_one_transform() -> None:
    rng = np.random.default_rng(5)
    blocks = [((rng.normal(size=(k, 128)) + 1j * rng.normal(size=(k, 128))) * 500).astype(
        np.complex64) for k in (3, 1, 4)]
    p = Pipeline()
    fft = p.add_endpoint(FFTEndpoint("fft"), subscribe=["w.iq"])
    out = p.add_endpoint(Collector("out"), subscribe=["w.spectrum"])
    _push(p, "w.iq", blocks, {"packets": 0})  # queued before start: one batch
    p.start()
    try:
        wait_for(lambda: len(out.items) == 3, 10, message="three blocks")
    finally:
        assert p.stop(5.0)
    assert fft.fft_calls == 1 and fft.spectra == 8
    for m, b in zip(out.items, blocks, strict=True):
        assert m.value.shape == b.shape
        np.testing.assert_allclose(m.value, power_db(b.astype(np.complex128) / 8192), atol=2e-3)
